// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The timing steps `retnet bench` and `retnet cost` share: a prompt prefilled once and forked
// into a batch's slots, then timed batched decoding steps, and the median of the times.
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "retnet/forward.h"

namespace retnet {

// The middle value, or the mean of the two middle ones; 0 for none.
double median(std::vector<double> values);

// Wall time since `since`, in milliseconds.
double ms_since(std::chrono::steady_clock::time_point since);

// `count` tokens drawn uniformly from the vocabulary (the content does not change a timing).
std::vector<int32_t> random_tokens(int count, int vocab_size, std::mt19937_64& rng);

// Slot 0 prefilled with `prompt` from an empty state in the chunkwise form (`chunk_size`, 0 the
// model's; the last logits row to the host), then slots 1 … batch − 1 made copies of its state: a
// fork costs a state copy, not another prefill (B prefills of a long context took minutes on the
// CPU). The backend is left with `batch` slots. `cancelled` is polled between the prefill's layers.
// Returns the prefill's wall time in ms.
double prefill_and_fork(Backend& backend, std::span<const int32_t> prompt, int batch, int chunk_size,
                        std::function<bool()> cancelled);

// The times (ms) of decoding steps: wall ones, and the device's own for each where the backend has
// a device clock (Backend::last_forward_device_ms; empty otherwise). The difference is the host's
// part of a step: uploading its tokens, launching it, and copying the logits back.
struct DecodeTimes {
    std::vector<double> wall_ms, device_ms;
};

// Slots 0 … batch − 1 decode one random token each a step in the recurrent form, with the last logits
// row of every sequence to the host, or with best_count > 0 only its best_count best logits (as
// sampling with top-k or greedy asks: LogitRows::LastBest): `untimed` steps, then `timed` ones,
// whose times are returned. `after_step` runs after every step, outside the timing (progress, a
// cancel's check).
DecodeTimes time_decode_steps(Backend& backend, int batch, int untimed, int timed, int best_count, std::mt19937_64& rng,
                              const std::function<void()>& after_step);

// The bytes one decoding step of `batch` sequences has to move through memory at the least: the floor a
// step's time is read against (a step takes at least these bytes over the memory's bandwidth). Every
// weight matrix read once at `precision` (the backend's weights_precision(); "mixed": as each is
// stored), of an untied embedding only the batch's rows, the norms' vectors in float32; each sequence's
// RetNet state read and written (float32), or a Transformer's KV cache of `tokens` tokens read and the
// new token's row written at `kv_element_bytes`. Activations, logits and launches are left out.
struct DecodeStepBytes {
    uint64_t weights = 0, states = 0;
    uint64_t total() const { return weights + states; }
};
DecodeStepBytes decode_step_bytes(const Model& model, const std::string& precision, int batch, int64_t tokens,
                                  int kv_element_bytes);

}  // namespace retnet
