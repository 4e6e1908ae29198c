// SPDX-License-Identifier: GPL-3.0-or-later
// The batched decode loop of batch_generate.h. Invariant: an active sequence's slot has consumed
// all of its tokens but the last one sampled, which the next step() feeds.
#include "retnet/batch_generate.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "gen/generation_common.h"
#include "retnet/error.h"

namespace retnet {
namespace {

using gen::Clock;
using gen::held_back_length;
using gen::milliseconds_since;

// `params` were validated by add() before its Sequence was made.
void check_prompt(std::span<const int32_t> prompt, const GenerationParams& params, int vocab_size) {
    if (prompt.empty()) throw Error("the prompt is empty (give at least one token)");
    if (static_cast<int64_t>(prompt.size()) > params.max_prompt_tokens)
        throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the limit of " +
                    std::to_string(params.max_prompt_tokens));
    for (size_t i = 0; i < prompt.size(); ++i)
        if (prompt[i] < 0 || prompt[i] >= vocab_size)
            throw Error("prompt token " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                        " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
}

}  // namespace

struct BatchGenerator::Sequence {
    BatchRequest request;
    int slot = 0;
    std::vector<int32_t> tokens;  // prompt + generated: the repetition penalty's history
    Sampler sampler;
    std::optional<StreamDecoder> decoder;
    GenerationResult result;
    size_t released = 0;          // bytes of result.text already given out as stream_text
    Clock::time_point step_start;
    bool finished = false;

    Sequence(BatchRequest r, int s) : request(std::move(r)), slot(s), sampler(request.params.sampler) {}
    bool cancelled() const { return request.stop && request.stop->load(); }
};

BatchGenerator::BatchGenerator(Backend& backend, const Tokenizer* tokenizer, int slots)
    : backend_(&backend), tokenizer_(tokenizer), vocab_size_(backend.model().config.vocab_size) {
    if (slots < 1) throw Error("a batch needs at least 1 slot, got " + std::to_string(slots));
    eos_id_ = Generator(backend, tokenizer).eos_id();  // the same EOS rule as single generation
    backend_->set_slot_count(slots);
    slot_used_.assign(static_cast<size_t>(slots), false);
}

BatchGenerator::~BatchGenerator() = default;

void BatchGenerator::add(BatchRequest request) {
    const auto free = std::find(slot_used_.begin(), slot_used_.end(), false);
    if (free == slot_used_.end()) throw Error("no free slot: " + std::to_string(slots()) + " sequences are active");
    try {  // the Sequence's Sampler checks its params as it is made: bad ones end the request here
        request.params.validate();
    } catch (const std::exception& e) {
        if (request.on_done) request.on_done(GenerationResult{}, e.what());
        return;
    }
    auto owned = std::make_unique<Sequence>(std::move(request), static_cast<int>(free - slot_used_.begin()));
    Sequence& s = *owned;
    *free = true;
    active_.push_back(std::move(owned));
    s.step_start = Clock::now();
    try {
        check_prompt(s.request.prompt, s.request.params, vocab_size_);
        s.tokens = s.request.prompt;
        if (tokenizer_) {
            s.decoder.emplace(*tokenizer_);
            for (int32_t id : s.tokens) s.decoder->push(id);  // only the unfinished tail matters
        }
        s.result.stats.prefill_form = s.request.params.prefill_form;
        if (s.cancelled()) {
            finish(s, StopReason::Cancelled);
        } else {
            prefill(s);
        }
    } catch (const Cancelled&) {  // the stop flag, seen between two layers of the prefill
        finish(s, StopReason::Cancelled);
    } catch (const std::exception& e) {
        finish(s, StopReason::None, e.what());
    }
    drop_finished();
}

// Runs the prompt on the sequence's fresh slot, then samples its first token.
void BatchGenerator::prefill(Sequence& s) {
    backend_->reset(s.slot);
    ForwardOptions options;
    options.form = s.tokens.size() == 1 ? Form::Recurrent : s.request.params.prefill_form;
    options.chunk_size = s.request.params.chunk_size;
    if (const std::atomic<bool>* stop = s.request.stop) options.cancelled = [stop] { return stop->load(); };
    const int best_count = Sampler::best_logits_needed(s.sampler.params());
    BestLogits best;
    const SequenceRequest request{s.tokens, s.slot, best_count > 0 ? LogitRows::LastBest : LogitRows::Last, best_count,
                                  best_count > 0 ? &best : nullptr};
    const Tensor logits = std::move(backend_->forward_batch({&request, 1}, options).front());  // (1, V) or (0, V)
    s.result.stats.prefill_tokens = static_cast<int64_t>(s.tokens.size());
    s.result.stats.prefill_ms = milliseconds_since(s.step_start);
    if (s.request.params.max_new_tokens == 0) finish(s, StopReason::MaxTokens);
    else emit(s, best_count > 0 ? s.sampler.sample(best) : sample_row(s, logits.data));
}

void BatchGenerator::step() {
    for (auto& s : active_)
        if (s->cancelled()) finish(*s, StopReason::Cancelled);
    drop_finished();
    if (active_.empty()) return;
    // Where every sampler needs only the best logits of its row, only those come back (a GPU
    // selects them): the most any of them needs.
    int best_count = 0;
    bool every_row_best = true;
    for (auto& s : active_) {
        const int needed = Sampler::best_logits_needed(s->sampler.params());
        every_row_best = every_row_best && needed > 0;
        best_count = std::max(best_count, needed);
    }
    if (!every_row_best) best_count = 0;
    std::vector<BestLogits> best(best_count > 0 ? active_.size() : 0);
    std::vector<SequenceRequest> batch;  // one token per sequence: its last sampled one
    for (size_t i = 0; i < active_.size(); ++i) {
        Sequence& s = *active_[i];
        s.step_start = Clock::now();
        batch.push_back({std::span(s.tokens).last(1), s.slot, best_count > 0 ? LogitRows::LastBest : LogitRows::Last,
                         best_count, best_count > 0 ? &best[i] : nullptr});
    }
    ForwardOptions options;
    options.form = Form::Recurrent;
    try {
        const std::vector<Tensor> logits = backend_->forward_batch(batch, options);  // each (1, V), or (0, V)
        for (size_t i = 0; i < active_.size(); ++i) {
            Sequence& s = *active_[i];
            emit(s, best_count > 0 ? s.sampler.sample(best[i]) : sample_row(s, logits[i].data));
        }
    } catch (const std::exception& e) {
        for (auto& s : active_)
            if (!s->finished) finish(*s, StopReason::None, e.what());
    }
    drop_finished();
}

int32_t BatchGenerator::sample_row(Sequence& s, std::span<const float> logits) {
    if (logits.size() != static_cast<size_t>(vocab_size_))
        throw Error("backend " + backend_->name() + " returned " + std::to_string(logits.size()) +
                    " logits, expected " + std::to_string(vocab_size_));
    return s.sampler.sample(logits, s.tokens, nullptr, 0);
}

// Streams the sequence's next token; finishes on a stop.
void BatchGenerator::emit(Sequence& s, int32_t id) {
    const GenerationParams& params = s.request.params;
    GenerationResult& result = s.result;
    TokenEvent event;
    event.position = static_cast<int64_t>(s.tokens.size());
    event.id = id;
    s.tokens.push_back(event.id);
    result.tokens.push_back(event.id);
    if (s.decoder) event.text = s.decoder->push(event.id);

    std::string& text = result.text;
    const size_t searched_from = text.size();
    text += event.text;
    std::optional<size_t> match;
    for (const std::string& stop_string : params.stop_strings) {
        const size_t from = searched_from >= stop_string.size() - 1 ? searched_from - (stop_string.size() - 1) : 0;
        const size_t found = text.find(stop_string, from);
        if (found != std::string::npos && (!match || found < *match)) {
            match = found;
            result.stats.stop_string = stop_string;
        }
    }
    const size_t visible_end = match ? *match : text.size() - held_back_length(text, params.stop_strings);
    if (visible_end > s.released) {
        event.stream_text = text.substr(s.released, visible_end - s.released);
        s.released = visible_end;
    }
    event.step_ms = milliseconds_since(s.step_start);
    result.stats.decode_ms += event.step_ms;
    ++result.stats.generated_tokens;
    if (s.request.on_token) s.request.on_token(event);

    if (match) {
        text.resize(*match);
        finish(s, StopReason::StopString);
    } else if (params.stop_at_eos && event.id == eos_id_) {
        finish(s, StopReason::Eos);
    } else if (static_cast<int>(result.tokens.size()) >= params.max_new_tokens) {
        finish(s, StopReason::MaxTokens);
    }
}

void BatchGenerator::finish(Sequence& s, StopReason reason, const std::string& error) {
    s.finished = true;
    s.result.stats.stop_reason = reason;
    slot_used_[static_cast<size_t>(s.slot)] = false;
    // A twin's KV cache is freed now, not when the slot is next used: the server counts the caches
    // of the running requests only. (A RetNet state keeps its size; the next prefill resets it.)
    if (backend_->model().config.is_transformer()) {
        try {
            backend_->reset(s.slot);
        } catch (const std::exception&) {
            // A backend that cannot reset now (a failed device) says so at the slot's next prefill.
        }
    }
    if (s.request.on_done) s.request.on_done(s.result, error);
}

void BatchGenerator::drop_finished() {
    std::erase_if(active_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
}

}  // namespace retnet
