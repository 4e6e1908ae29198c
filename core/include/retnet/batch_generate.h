// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Several independent generations decoded together on one Backend (the server's decode loop).
// Each sequence owns a state slot and a Sampler of its own. A sequence joins with add(): its
// prompt is prefilled on its slot by a forward call of its own (params.prefill_form, last logits
// row only, or only its best logits where the sampler allows it) and its first token sampled. Every step() then runs one forward_batch in the
// recurrent form with one token per active sequence and samples each sequence's next token (from
// its row's best logits alone, selected where the logits are, when every sampler allows it:
// Sampler::best_logits_needed).
// A sequence that ends (EOS, stop string, max_new_tokens, its stop flag, an error) reports
// through its done callback and frees its slot at once (a Transformer twin's slot its KV cache
// too). A stop flag set during a prefill ends it before its next layer.
//
// Per sequence, the tokens, text and stop handling are those of Generator::generate with the
// same prompt and params (the sampler is the same code, seeded the same way); top-candidate
// lists (params.n_top) are not filled. Used from one thread; only the stop flags are shared.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "retnet/generate.h"

namespace retnet {

// `error` is empty unless the sequence failed (then `result` holds what was made before).
using DoneCallback = std::function<void(const GenerationResult& result, const std::string& error)>;

struct BatchRequest {
    std::vector<int32_t> prompt;           // ≥ 1 token, each in [0, V)
    GenerationParams params;
    TokenCallback on_token;                // each token's event, as Generator's
    DoneCallback on_done;                  // called exactly once
    const std::atomic<bool>* stop = nullptr;  // set from any thread: ends with Cancelled
};

class BatchGenerator {
public:
    // Sets the backend to `slots` (≥ 1) state slots. The tokenizer may be null (no text).
    // Both must outlive this.
    BatchGenerator(Backend& backend, const Tokenizer* tokenizer, int slots);
    ~BatchGenerator();

    int slots() const { return static_cast<int>(slot_used_.size()); }
    int active() const { return static_cast<int>(active_.size()); }
    bool has_free_slot() const { return active() < slots(); }

    // Takes a free slot (throws retnet::Error when none is free), prefills the prompt and samples
    // the first token. Bad params or prompt end the sequence at once through on_done's error.
    void add(BatchRequest request);
    // One decode step for every active sequence (does nothing when none is active).
    void step();

private:
    struct Sequence;

    void prefill(Sequence& sequence);
    int32_t sample_row(Sequence& sequence, std::span<const float> logits);  // logits: (V)
    void emit(Sequence& sequence, int32_t id);
    void finish(Sequence& sequence, StopReason reason, const std::string& error = {});
    void drop_finished();

    Backend* backend_;
    const Tokenizer* tokenizer_;
    int vocab_size_ = 0;
    int eos_id_ = -1;
    std::vector<bool> slot_used_;                      // (slots)
    std::vector<std::unique_ptr<Sequence>> active_;    // in joining order
};

}  // namespace retnet
