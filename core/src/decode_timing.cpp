// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/decode_timing.h"

#include <algorithm>

#include "retnet/cost.h"
#include "retnet/model.h"

namespace retnet {

double median(std::vector<double> values) {
    if (values.empty()) return 0.0;
    std::sort(values.begin(), values.end());
    const size_t m = values.size() / 2;
    return values.size() % 2 ? values[m] : 0.5 * (values[m - 1] + values[m]);
}

double ms_since(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

std::vector<int32_t> random_tokens(int count, int vocab_size, std::mt19937_64& rng) {
    std::uniform_int_distribution<int32_t> pick(0, vocab_size - 1);
    std::vector<int32_t> tokens(static_cast<size_t>(count));
    for (int32_t& t : tokens) t = pick(rng);
    return tokens;
}

double prefill_and_fork(Backend& backend, std::span<const int32_t> prompt, int batch, int chunk_size,
                        std::function<bool()> cancelled) {
    ForwardOptions prefill;
    prefill.form = Form::Chunkwise;  // a Transformer twin attends to the whole prompt at once in every form but recurrent
    prefill.chunk_size = chunk_size;
    prefill.cancelled = std::move(cancelled);
    backend.set_slot_count(batch);
    backend.reset(0);
    const SequenceRequest request{prompt, 0, LogitRows::Last};
    const auto t0 = std::chrono::steady_clock::now();
    backend.forward_batch({&request, 1}, prefill);
    const double ms = ms_since(t0);
    for (int s = 1; s < batch; ++s) backend.copy_slot(0, s);
    return ms;
}

DecodeTimes time_decode_steps(Backend& backend, int batch, int untimed, int timed, int best_count, std::mt19937_64& rng,
                              const std::function<void()>& after_step) {
    const int vocab_size = backend.model().config.vocab_size;
    ForwardOptions step;
    step.form = Form::Recurrent;
    std::vector<int32_t> next;                                    // (batch): one token a sequence
    std::vector<SequenceRequest> requests(static_cast<size_t>(batch));
    std::vector<BestLogits> best(best_count > 0 ? static_cast<size_t>(batch) : 0);
    DecodeTimes times;
    for (int i = 0; i < untimed + timed; ++i) {
        next = random_tokens(batch, vocab_size, rng);
        for (size_t s = 0; s < static_cast<size_t>(batch); ++s)
            requests[s] = {std::span(&next[s], 1), static_cast<int>(s),
                           best_count > 0 ? LogitRows::LastBest : LogitRows::Last, best_count,
                           best_count > 0 ? &best[s] : nullptr};
        const auto t0 = std::chrono::steady_clock::now();
        backend.forward_batch(requests, step);
        if (i >= untimed) {
            times.wall_ms.push_back(ms_since(t0));
            if (const double device_ms = backend.last_forward_device_ms(); device_ms >= 0.0)
                times.device_ms.push_back(device_ms);
        }
        if (after_step) after_step();
    }
    return times;
}

DecodeStepBytes decode_step_bytes(const Model& model, const std::string& precision, int batch, int64_t tokens,
                                  int kv_element_bytes) {
    const ModelWeights& w = model.weights;
    const auto bytes_read = [&](const Tensor& t) -> uint64_t {
        if (t.empty()) return 0;
        const bool as_stored_bf16 = t.storage() == Storage::BF16;
        const uint64_t element = t.rank() != 2          ? 4
                                 : precision == "bf16" ? 2
                                 : precision == "fp32" ? 4
                                                       : (as_stored_bf16 ? 2 : 4);
        const auto values = static_cast<uint64_t>(t.numel());
        if (&t == &w.embed && !w.lm_head.empty() && t.rank() == 2) {  // a lookup: the batch's rows only
            const auto rows = static_cast<uint64_t>(std::max<int64_t>(t.dim(0), 1));
            return std::min<uint64_t>(rows, static_cast<uint64_t>(batch)) * (values / rows) * element;
        }
        return values * element;
    };
    DecodeStepBytes step;
    for (const Tensor* t : weight_tensors(model)) step.weights += bytes_read(*t);
    // each state read whole; written whole (RetNet) or by the new token's row (a KV cache)
    const ModelConfig& c = model.config;
    const int64_t read = sequence_state_bytes(c, tokens, kv_element_bytes);
    const int64_t written = sequence_state_bytes(c, c.is_transformer() ? 1 : tokens, kv_element_bytes);
    step.states = static_cast<uint64_t>(batch) * static_cast<uint64_t>(read + written);
    return step;
}

}  // namespace retnet
