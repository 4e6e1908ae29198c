// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Text generation on a Backend: prefill the prompt in any form, then decode recurrently with
// O(1) work per token. The Generator owns the sequence (prompt + generated tokens) and keeps
// state checkpoints, so a caller can stop, continue, regenerate or fork from any position.
//
// Threading: a Generator and its Backend are used from one thread at a time (the app's engine
// worker). Only the stop flag is shared: set it from any thread to end generation after the
// current token, or a prefill (prompt or replay) before its next layer: the call then returns
// what it has with StopReason::Cancelled.
//
// Positions: token i of the sequence sits at position i (the prompt first). The state "at
// position p" has consumed tokens [0, p) and its logits give the distribution of token p.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "retnet/forward.h"
#include "retnet/sampler.h"
#include "retnet/tokenizer.h"

namespace retnet {

struct GenerationParams {
    int max_new_tokens = 128;               // >= 0; 0 only prefills
    Form prefill_form = Form::Parallel;     // how multi-token inputs run (prompt, replays)
    int chunk_size = 0;                     // chunkwise prefill; 0 = the model config's
    SamplerParams sampler;
    std::vector<std::string> stop_strings;  // stop once the generated text contains one
    bool stop_at_eos = true;
    int max_prompt_tokens = 4096;
    int n_top = 10;                         // candidates listed per token (0 = none)
    // Keep a state checkpoint every this many positions, so rewinding replays at most this many
    // tokens. Memory: one RecurrentState + V logits per checkpoint. 0 = prompt end only.
    int checkpoint_interval = 64;
    // Upper bound on the checkpoints' memory. Past it every other checkpoint is dropped (the
    // prompt end and the newest stay), so long generations keep bounded memory and rewinding
    // replays more tokens instead.
    int64_t checkpoint_budget_bytes = int64_t(256) << 20;

    void validate() const;  // throws retnet::Error naming the bad field
};

enum class StopReason { None, MaxTokens, Eos, StopString, Cancelled };
const char* stop_reason_name(StopReason reason);  // "max-tokens", "eos", "stop-string", "cancelled"

struct TokenEvent {
    int64_t position = 0;  // index in the sequence
    int32_t id = 0;
    // The complete UTF-8 text this token finishes: "" while a character split over byte tokens
    // is unfinished, then the whole character. Never a broken sequence.
    std::string text;
    // What to append to a plain text stream now: `text`, minus anything that might still turn
    // out to be (or is) a stop string; held-back text is released with a later event or in
    // GenerationResult::text.
    std::string stream_text;
    std::vector<TokenProb> top;           // model distribution (softmax of raw logits), best first
    std::vector<TokenProb> top_filtered;  // distribution after the sampler's filters; empty if forced
    bool forced = false;                  // chosen by the caller (fork), not sampled
    double step_ms = 0.0;                 // forward of the previous token + sampling of this one
};

struct GenerationStats {
    Form prefill_form = Form::Parallel;
    int64_t prefill_tokens = 0;    // tokens run before the first sampled token (prompt or replay)
    double prefill_ms = 0.0;
    int64_t generated_tokens = 0;  // events emitted, forced ones included
    double decode_ms = 0.0;        // sum of the events' step_ms
    StopReason stop_reason = StopReason::None;
    std::string stop_string;       // the stop string that matched

    double prefill_tokens_per_s() const { return prefill_ms > 0 ? prefill_tokens * 1000.0 / prefill_ms : 0.0; }
    double tokens_per_s() const { return decode_ms > 0 ? generated_tokens * 1000.0 / decode_ms : 0.0; }
};

struct GenerationResult {
    std::vector<int32_t> tokens;  // produced by this call (EOS included when it ended the call)
    std::string text;             // their text, cut before a matched stop string
    GenerationStats stats;
};

// A saved point of the sequence: restore() it later to continue or fork from there.
struct GenerationCheckpoint {
    std::vector<int32_t> tokens;     // the sequence up to the checkpoint
    int64_t prompt_length = 0;
    RecurrentState state;            // after consuming `tokens`
    std::vector<float> next_logits;  // (V) distribution of the token after `tokens`
};

using TokenCallback = std::function<void(const TokenEvent&)>;

class Generator {
public:
    // The tokenizer may be null (token ids only: events carry no text). Both must outlive this.
    Generator(Backend& backend, const Tokenizer* tokenizer);

    int bos_id() const { return bos_id_; }  // model config's, else the tokenizer's; -1 if none
    int eos_id() const { return eos_id_; }

    // BOS (when `add_bos` and the model has one) + the encoded text. Throws retnet::Error for
    // invalid UTF-8 (naming the byte offset), no tokenizer, an empty prompt with no BOS to start
    // from, or more than `max_prompt_tokens` tokens.
    std::vector<int32_t> encode_prompt(std::string_view text, int max_prompt_tokens, bool add_bos = true) const;

    // Starts a new sequence from `prompt`: resets the state, prefills in params.prefill_form,
    // then samples with a sampler seeded from params.sampler.seed.
    GenerationResult generate(std::span<const int32_t> prompt, const GenerationParams& params,
                              const TokenCallback& on_token = {}, const std::atomic<bool>* stop = nullptr);

    // Generates up to params.max_new_tokens more tokens after the current sequence. When the
    // sampler params are unchanged and nothing was rewound, the random stream carries on, so
    // generate(n) followed by continue_generation(m) equals generate(n + m) (without stops).
    GenerationResult continue_generation(const GenerationParams& params, const TokenCallback& on_token = {},
                                         const std::atomic<bool>* stop = nullptr);

    // Appends `tokens` to the sequence (a conversation's next turn), then generates after them. The
    // backend runs only the new tokens (and the last generated one, not yet run) from the state it
    // holds; the sequence before is never run again. The sampler starts afresh from
    // params.sampler.seed, so the tokens equal those of generate() over the whole sequence with the
    // same params. With an empty sequence it is generate(tokens). Throws retnet::Error for no
    // tokens, ids outside the vocabulary or more than params.max_prompt_tokens of them.
    GenerationResult extend(std::span<const int32_t> tokens, const GenerationParams& params,
                            const TokenCallback& on_token = {}, const std::atomic<bool>* stop = nullptr);

    // Truncates the sequence to its first `position` tokens (1 <= position <= length), then
    // generates: the token at `position` is `forced_token` when given (regenerate = without),
    // sampled with a sampler seeded from params.sampler.seed.
    GenerationResult fork(int64_t position, std::optional<int32_t> forced_token, const GenerationParams& params,
                          const TokenCallback& on_token = {}, const std::atomic<bool>* stop = nullptr);

    // Saved point after the first `position` tokens (1 <= position <= length). Costs at most
    // checkpoint_interval replayed tokens.
    GenerationCheckpoint checkpoint(int64_t position);
    GenerationCheckpoint checkpoint() { return checkpoint(length()); }
    // Replaces the sequence and the state with the checkpoint's (any Generator on the same model).
    void restore(const GenerationCheckpoint& checkpoint);
    // The state after the first `position` tokens (0 <= position <= length).
    RecurrentState state_at(int64_t position);
    size_t checkpoint_count() const { return saved_.size(); }

    const std::vector<int32_t>& tokens() const { return tokens_; }
    int64_t length() const { return static_cast<int64_t>(tokens_.size()); }
    int64_t prompt_length() const { return prompt_length_; }
    // The text of tokens [from, length), decoded as a stream (complete characters only).
    std::string text(int64_t from) const;

    // Call after anything else ran the backend without restoring its state: the next call then
    // rebuilds the state from the generator's own checkpoints instead of trusting the backend.
    void backend_state_changed() {
        backend_position_ = -1;
        logits_.clear();
    }

private:
    struct Saved {
        RecurrentState state;
        std::vector<float> logits;  // (V)
    };

    // Brings the backend to position `position` (consumed tokens [0, position)) with its logits.
    // A set `stop` ends a prefill of several tokens between layers with retnet::Cancelled.
    void sync_to(int64_t position, const std::atomic<bool>* stop = nullptr);
    // forward from backend_position_
    void run_tokens(std::span<const int32_t> tokens, const std::atomic<bool>* stop = nullptr);
    void truncate(int64_t position);
    // Throws retnet::Error for bad params, an empty input, too many tokens or ids outside the vocabulary.
    void check_input(std::span<const int32_t> prompt, const GenerationParams& params) const;
    GenerationResult run(const GenerationParams& params, std::optional<int32_t> forced_token,
                         const TokenCallback& on_token, const std::atomic<bool>* stop);

    Backend* backend_;
    const Tokenizer* tokenizer_;
    int vocab_size_ = 0;
    int bos_id_ = -1, eos_id_ = -1;

    std::vector<int32_t> tokens_;  // the whole sequence
    int64_t prompt_length_ = 0;
    int64_t backend_position_ = 0;  // tokens consumed by the backend (a prefix of tokens_)
    std::vector<float> logits_;     // (V) at backend_position_; empty when unknown
    int64_t tokens_run_ = 0;        // tokens the backend has run in total (for prefill stats)
    std::map<int64_t, Saved> saved_;  // checkpoints by position
    void thin_checkpoints();         // keeps saved_ within checkpoint_budget_bytes

    GenerationParams replay_params_;  // form and chunk size of multi-token runs
    std::unique_ptr<Sampler> sampler_;  // kept across continue_generation
};

}  // namespace retnet
