// SPDX-License-Identifier: GPL-3.0-or-later
// The generation loop of generate.h. Invariant: the backend has consumed tokens_[0,
// backend_position_) and logits_ is the distribution after them (or empty when unknown);
// backend_position_ = -1 means the backend holds a state that is no longer a prefix of tokens_.
#include "retnet/generate.h"

#include <algorithm>
#include <chrono>
#include <iterator>

#include "gen/generation_common.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"

namespace retnet {
namespace {

using gen::Clock;
using gen::held_back_length;
using gen::milliseconds_since;

// SentencePiece holds ~240 bytes per byte of text while it encodes (60 MiB of text: 14.5 GB).
constexpr uint64_t kEncodeBytesPerTextByte = 256;

}  // namespace

const char* stop_reason_name(StopReason reason) {
    switch (reason) {
        case StopReason::None: return "none";
        case StopReason::MaxTokens: return "max-tokens";
        case StopReason::Eos: return "eos";
        case StopReason::StopString: return "stop-string";
        case StopReason::Cancelled: return "cancelled";
    }
    return "?";
}

void GenerationParams::validate() const {
    if (max_new_tokens < 0) throw Error("max new tokens must be >= 0, got " + std::to_string(max_new_tokens));
    if (chunk_size < 0) throw Error("chunk size must be >= 1 (0 = the model's), got " + std::to_string(chunk_size));
    if (max_prompt_tokens < 1) throw Error("max prompt tokens must be >= 1, got " + std::to_string(max_prompt_tokens));
    if (n_top < 0) throw Error("top candidates to list must be >= 0, got " + std::to_string(n_top));
    if (checkpoint_interval < 0) throw Error("checkpoint interval must be >= 0");
    if (checkpoint_budget_bytes < 0) throw Error("checkpoint budget must be >= 0");
    for (const std::string& stop : stop_strings) {
        if (stop.empty()) throw Error("a stop string is empty");
        check_utf8(stop, "stop string");
    }
    sampler.validate();
}

Generator::Generator(Backend& backend, const Tokenizer* tokenizer) : backend_(&backend), tokenizer_(tokenizer) {
    const ModelConfig& config = backend.model().config;
    vocab_size_ = config.vocab_size;
    bos_id_ = config.bos_token_id;
    eos_id_ = config.eos_token_id;
    if (tokenizer) {
        if (tokenizer->vocab_size() > vocab_size_)
            throw Error("tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                        " pieces but the model's vocabulary has only " + std::to_string(vocab_size_));
        if (bos_id_ < 0) bos_id_ = tokenizer->bos_id();
        if (eos_id_ < 0) eos_id_ = tokenizer->eos_id();
    }
    if (bos_id_ >= vocab_size_) bos_id_ = -1;
    if (eos_id_ >= vocab_size_) eos_id_ = -1;
}

std::vector<int32_t> Generator::encode_prompt(std::string_view text, int max_prompt_tokens, bool add_bos) const {
    check_utf8(text, "prompt");
    std::vector<int32_t> ids;
    if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
    if (!text.empty()) {
        if (!tokenizer_) throw Error("this model has no tokenizer.model; give the prompt as token ids (--tokens)");
        // asked for before the token count can be compared with the limit
        check_memory_room(saturating_product({static_cast<uint64_t>(text.size()), kEncodeBytesPerTextByte}),
                          "encoding a prompt of " + format_bytes(text.size()));
        const std::vector<int32_t> encoded = tokenizer_->encode(text);
        ids.insert(ids.end(), encoded.begin(), encoded.end());
    }
    if (ids.empty())
        throw Error(text.empty() ? "the prompt is empty and the model has no BOS token to start from"
                                 : "the prompt encodes to no tokens");
    if (static_cast<int64_t>(ids.size()) > max_prompt_tokens)
        throw Error("the prompt has " + std::to_string(ids.size()) + " tokens, more than the limit of " +
                    std::to_string(max_prompt_tokens) + " (raise --max-prompt-tokens)");
    return ids;
}

void Generator::run_tokens(std::span<const int32_t> tokens, const std::atomic<bool>* stop) {
    ForwardOptions options;
    // A decoding step stays whole (it ends within a token anyway); a prefill may be cut.
    if (stop && tokens.size() > 1) options.cancelled = [stop] { return stop->load(); };
    options.form = tokens.size() == 1 ? Form::Recurrent : replay_params_.prefill_form;
    // The parallel form cannot start from a state (torchscale's row normalization needs whole
    // rows); from one, the chunkwise form computes the same thing.
    if (options.form == Form::Parallel && backend_position_ > 0) options.form = Form::Chunkwise;
    options.chunk_size = replay_params_.chunk_size;
    // Sampling needs only the last row: the backend projects no other.
    const SequenceRequest request{tokens, 0, LogitRows::Last};
    Tensor logits;  // (1, V)
    try {
        logits = std::move(backend_->forward_batch({&request, 1}, options).front());
    } catch (const Cancelled&) {
        backend_position_ = -1;  // the backend emptied the slot: rebuild from the checkpoints
        logits_.clear();
        throw;
    }
    if (logits.rank() != 2 || logits.dim(0) != 1 || logits.dim(1) != vocab_size_)
        throw Error("backend " + backend_->name() + " returned logits of shape " + logits.shape_string());
    logits_ = std::move(logits.data);
    backend_position_ += static_cast<int64_t>(tokens.size());
    tokens_run_ += static_cast<int64_t>(tokens.size());
    const int interval = replay_params_.checkpoint_interval;
    const bool keep = backend_position_ == prompt_length_ || (interval > 0 && backend_position_ % interval == 0);
    if (keep && !saved_.count(backend_position_)) {
        saved_[backend_position_] = {backend_->snapshot(), logits_};
        thin_checkpoints();
    }
}

void Generator::thin_checkpoints() {
    // The newest checkpoint is the largest (a Transformer twin's KV cache grows with the position).
    const Saved& any = saved_.rbegin()->second;
    const int64_t bytes = static_cast<int64_t>(any.logits.size() * sizeof(float)) + any.state.bytes();
    const int64_t budget = std::max<int64_t>(replay_params_.checkpoint_budget_bytes, 3 * bytes);
    if (static_cast<int64_t>(saved_.size()) * bytes <= budget) return;
    bool drop = false;  // every other one, from the oldest; never the prompt end or the newest
    const int64_t newest = saved_.rbegin()->first;
    for (auto it = saved_.begin(); it != saved_.end();) {
        const bool protected_position = it->first == prompt_length_ || it->first == newest;
        if (!protected_position && drop) it = saved_.erase(it);
        else ++it;
        if (!protected_position) drop = !drop;
    }
}

void Generator::sync_to(int64_t position, const std::atomic<bool>* stop) {
    if (backend_position_ == position && !logits_.empty()) return;
    auto it = saved_.upper_bound(position);  // first checkpoint after `position`
    const int64_t nearest_saved = it == saved_.begin() ? 0 : std::prev(it)->first;
    if (backend_position_ < 0 || backend_position_ >= position || nearest_saved > backend_position_) {
        if (it == saved_.begin()) {
            backend_->reset();
            backend_position_ = 0;
            logits_.clear();
        } else {
            --it;
            backend_->restore(it->second.state);
            backend_position_ = it->first;
            logits_ = it->second.logits;
        }
    }
    if (backend_position_ < position)
        run_tokens(std::span(tokens_).subspan(static_cast<size_t>(backend_position_),
                                              static_cast<size_t>(position - backend_position_)),
                   stop);
}

void Generator::truncate(int64_t position) {
    tokens_.resize(static_cast<size_t>(position));
    prompt_length_ = std::min(prompt_length_, position);
    saved_.erase(saved_.upper_bound(position), saved_.end());
    if (backend_position_ > position) {
        backend_position_ = -1;
        logits_.clear();
    }
    sampler_.reset();
}

void Generator::check_input(std::span<const int32_t> prompt, const GenerationParams& params) const {
    params.validate();
    if (prompt.empty()) throw Error("the prompt is empty (give at least one token)");
    if (static_cast<int64_t>(prompt.size()) > params.max_prompt_tokens)
        throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the limit of " +
                    std::to_string(params.max_prompt_tokens) + " (raise --max-prompt-tokens)");
    for (size_t i = 0; i < prompt.size(); ++i)
        if (prompt[i] < 0 || prompt[i] >= vocab_size_)
            throw Error("prompt token " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                        " is outside the vocabulary [0, " + std::to_string(vocab_size_) + ")");
}

GenerationResult Generator::generate(std::span<const int32_t> prompt, const GenerationParams& params,
                                     const TokenCallback& on_token, const std::atomic<bool>* stop) {
    check_input(prompt, params);
    tokens_.assign(prompt.begin(), prompt.end());
    prompt_length_ = length();
    saved_.clear();
    backend_position_ = -1;
    logits_.clear();
    sampler_.reset();
    return run(params, std::nullopt, on_token, stop);
}

GenerationResult Generator::continue_generation(const GenerationParams& params, const TokenCallback& on_token,
                                                const std::atomic<bool>* stop) {
    params.validate();
    if (tokens_.empty()) throw Error("nothing to continue: generate from a prompt first");
    return run(params, std::nullopt, on_token, stop);
}

GenerationResult Generator::extend(std::span<const int32_t> tokens, const GenerationParams& params,
                                   const TokenCallback& on_token, const std::atomic<bool>* stop) {
    if (tokens_.empty()) return generate(tokens, params, on_token, stop);
    check_input(tokens, params);
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    sampler_.reset();
    return run(params, std::nullopt, on_token, stop);
}

GenerationResult Generator::fork(int64_t position, std::optional<int32_t> forced_token,
                                 const GenerationParams& params, const TokenCallback& on_token,
                                 const std::atomic<bool>* stop) {
    params.validate();
    if (position < 1 || position > length())
        throw Error("cannot fork at position " + std::to_string(position) + ": the sequence has positions 1.." +
                    std::to_string(length()));
    if (forced_token && (*forced_token < 0 || *forced_token >= vocab_size_))
        throw Error("forced token " + std::to_string(*forced_token) + " is outside the vocabulary [0, " +
                    std::to_string(vocab_size_) + ")");
    truncate(position);
    return run(params, forced_token, on_token, stop);
}

GenerationCheckpoint Generator::checkpoint(int64_t position) {
    if (position < 1 || position > length())
        throw Error("no checkpoint at position " + std::to_string(position) + ": the sequence has positions 1.." +
                    std::to_string(length()));
    sync_to(position);
    GenerationCheckpoint out;
    out.tokens.assign(tokens_.begin(), tokens_.begin() + position);
    out.prompt_length = std::min(prompt_length_, position);
    out.state = backend_->snapshot();
    out.next_logits = logits_;
    return out;
}

void Generator::restore(const GenerationCheckpoint& checkpoint) {
    const auto length = static_cast<int64_t>(checkpoint.tokens.size());
    if (length < 1 || checkpoint.state.position != length ||
        checkpoint.next_logits.size() != static_cast<size_t>(vocab_size_))
        throw Error("checkpoint does not fit this model (state at position " +
                    std::to_string(checkpoint.state.position) + ", " + std::to_string(length) + " tokens, " +
                    std::to_string(checkpoint.next_logits.size()) + " logits)");
    for (int32_t id : checkpoint.tokens)
        if (id < 0 || id >= vocab_size_) throw Error("checkpoint holds token " + std::to_string(id) + " outside the vocabulary");
    backend_->restore(checkpoint.state);
    tokens_ = checkpoint.tokens;
    prompt_length_ = std::clamp<int64_t>(checkpoint.prompt_length, 0, length);
    backend_position_ = length;
    logits_ = checkpoint.next_logits;
    saved_.clear();
    saved_[length] = {checkpoint.state, logits_};
    sampler_.reset();
}

RecurrentState Generator::state_at(int64_t position) {
    if (position < 0 || position > length())
        throw Error("no state at position " + std::to_string(position) + ": the sequence has positions 0.." +
                    std::to_string(length()));
    sync_to(position);
    return backend_->snapshot();
}

std::string Generator::text(int64_t from) const {
    if (!tokenizer_) return {};
    StreamDecoder decoder(*tokenizer_);
    std::string out;
    for (int64_t i = 0; i < length(); ++i) {
        std::string piece = decoder.push(tokens_[static_cast<size_t>(i)]);
        if (i >= from) out += piece;
    }
    return out;
}

GenerationResult Generator::run(const GenerationParams& params, std::optional<int32_t> forced_token,
                                const TokenCallback& on_token, const std::atomic<bool>* stop) {
    replay_params_ = params;
    GenerationResult result;
    GenerationStats& stats = result.stats;
    stats.prefill_form = params.prefill_form;
    if (!sampler_ || sampler_->params() != params.sampler) sampler_ = std::make_unique<Sampler>(params.sampler);

    std::optional<StreamDecoder> decoder;
    if (tokenizer_) {
        decoder.emplace(*tokenizer_);
        for (int32_t id : tokens_) decoder->push(id);  // only the unfinished tail matters
    }

    if (stop && stop->load()) {
        stats.stop_reason = StopReason::Cancelled;
        return result;
    }
    // Anything beyond the one pending token of a previous call is a prefill (prompt or replay).
    const bool in_sync = backend_position_ == length() && !logits_.empty();
    if (!in_sync && backend_position_ != length() - 1) {
        const auto start = Clock::now();
        const int64_t run_before = tokens_run_;
        try {
            sync_to(length(), stop);
        } catch (const Cancelled&) {
            stats.stop_reason = StopReason::Cancelled;
        }
        stats.prefill_ms = milliseconds_since(start);
        stats.prefill_tokens = tokens_run_ - run_before;
        if (stats.stop_reason == StopReason::Cancelled) return result;
    }

    std::string call_text;  // text of this call's tokens
    size_t released = 0;    // bytes of call_text already given out as stream_text
    stats.stop_reason = StopReason::MaxTokens;
    for (int i = 0; i < params.max_new_tokens; ++i) {
        if (stop && stop->load()) {
            stats.stop_reason = StopReason::Cancelled;
            break;
        }
        const auto start = Clock::now();
        sync_to(length());
        TokenEvent event;
        event.position = length();
        if (i == 0 && forced_token) {
            event.id = *forced_token;
            event.forced = true;
            if (params.n_top > 0) event.top = top_probabilities(logits_, params.n_top);
        } else {
            SampleDetails details;
            event.id = sampler_->sample(logits_, tokens_, params.n_top > 0 ? &details : nullptr, params.n_top);
            event.top = std::move(details.top);
            event.top_filtered = std::move(details.top_filtered);
        }
        tokens_.push_back(event.id);
        result.tokens.push_back(event.id);
        if (decoder) event.text = decoder->push(event.id);

        const size_t searched_from = call_text.size();
        call_text += event.text;
        size_t visible_end = call_text.size();
        std::optional<size_t> match;
        for (const std::string& stop_string : params.stop_strings) {
            const size_t from = searched_from >= stop_string.size() - 1 ? searched_from - (stop_string.size() - 1) : 0;
            const size_t found = call_text.find(stop_string, from);
            if (found != std::string::npos && (!match || found < *match)) {
                match = found;
                stats.stop_string = stop_string;
            }
        }
        if (match) visible_end = *match;
        else visible_end -= held_back_length(call_text, params.stop_strings);
        if (visible_end > released) {
            event.stream_text = call_text.substr(released, visible_end - released);
            released = visible_end;
        }
        event.step_ms = milliseconds_since(start);
        stats.decode_ms += event.step_ms;
        ++stats.generated_tokens;
        if (on_token) on_token(event);

        if (match) {
            call_text.resize(*match);
            stats.stop_reason = StopReason::StopString;
            break;
        }
        if (params.stop_at_eos && event.id == eos_id_) {
            stats.stop_reason = StopReason::Eos;
            break;
        }
    }
    result.text = std::move(call_text);
    return result;
}

}  // namespace retnet
