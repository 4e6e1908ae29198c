// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The paper's inference-cost comparison on the user's own device: a RetNet against its
// Transformer twin (docs/transformer.md) of the same size, at each context length × batch size:
// prefill time, decode latency per step and throughput, and the memory each keeps per sequence
// (RetNet's constant recurrent state against the twin's KV cache, which grows with the text).
// Used by `retnet cost` and the app's Cost view.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "retnet/forward.h"

namespace retnet {

struct CostOptions {
    std::vector<int> lengths{1024, 4096, 16384, 32768};  // context tokens before the timed steps
    std::vector<int> batches{1, 8, 16, 64};              // sequences decoded together
    int decode_steps = 16;                               // timed steps (after 2 untimed)
    uint64_t seed = 1;                                   // of the random token streams
};

// One measurement of one model at one (length, batch).
struct CostPoint {
    std::string model;        // "RetNet" or "Transformer"
    int length = 0;           // context tokens in each sequence's state / cache
    int batch = 0;
    double prefill_ms = 0;    // one sequence's prompt of `length` tokens (RetNet: chunkwise form), one run
                              // (the model's first point after a short untimed warm-up prefill)
    double ms_per_step = 0;   // median wall time of one decoding step of the whole batch
    double tokens_per_s = 0;  // batch · 1000 / ms_per_step
    // The batch's recurrent states or KV caches at the end, computed from the tokens they hold at
    // the backend's element size (not measured: a cache's allocation may hold more).
    int64_t state_bytes = 0;
    // Measured: the GPU's memory in use after the steps (Backend::device_memory_in_use(): the whole
    // device's, other processes' included); −1 on the CPU, whose backends report none.
    int64_t device_bytes = -1;
    bool out_of_memory = false;  // the point did not fit: `note` says what
    std::string note;
};

// A point's decoding rate, from its step time: batch · 1000 / ms_per_step (0 when not measured).
inline double tokens_per_second(int batch, double ms_per_step) {
    return ms_per_step > 0 ? batch * 1000.0 / ms_per_step : 0.0;
}

struct CostReport {
    std::string device;
    std::string weights;  // the precision both models compute with (weights_precision: "fp32", "bf16" or "mixed")
    int64_t retnet_parameters = 0, transformer_parameters = 0;
    // The options the points were measured with (a KV cache holds length + untimed + timed tokens);
    // 0 and -1 where a report does not record them (saved before 2026-12-06, or cancelled before
    // its first point).
    int decode_steps = 0;
    int64_t seed = -1;
    std::vector<CostPoint> points;  // RetNet's, then the twin's, each by length then batch
    bool cancelled = false;  // the measurement stopped early: `points` are those measured before (set by the caller)
};

// Progress in [0, 1] with a line saying what runs; returning false cancels (throws retnet::Cancelled).
// It is also asked between the layers of a prefill, so a cancel is seen within one layer's time.
using CostProgress = std::function<bool(double fraction, const std::string& what)>;
// Called after each point (measured or out of memory) with the report so far, the new point last:
// a caller shows the points as they come, and still has them when the measurement is cancelled.
using CostPointDone = std::function<void(const CostReport& so_far)>;

// Measures both backends (a RetNet and a Transformer twin of the same vocabulary) at every
// (length, batch). A point whose states would pass the memory limit (retnet/memory_limit.h), or
// whose device runs out of memory, is reported out_of_memory and the larger ones of that model
// are skipped as such; nothing crashes. Leaves each backend with one empty slot.
CostReport measure_cost(Backend& retnet, Backend& transformer, const CostOptions& options,
                        const CostProgress& progress = {}, const CostPointDone& point_done = {});

// The paper's claim is about a Transformer of the RetNet's size, so `retnet cost` warns when the
// two parameter counts differ by more than this fraction of the RetNet's. 5 %: the matching rule
// (transformer_twin_ffn_dim) keeps a twin within L·(12d + Dv) + d, 0.24 % of the bundled model
// and 0.05 % at 1.35B, and a hand-made Llama whose FFN width is rounded to a multiple of 256, as
// Llama's own configs are, moves at most 1.4 % at 1.35B; while the next size of a model family
// (1.3B, 2.7B, 6.7B) is about twice as large. Decoding time and memory grow about linearly with the weights, so a gap under 5 % moves
// the measured ratios by a few percent, against the several-fold differences being measured.
inline constexpr double kSameSizeTolerance = 0.05;

// "" when `transformer` has `retnet`'s parameter count within kSameSizeTolerance — or within the
// matching rule's own bound L·(12d + Dv) + d where a tiny RetNet makes that larger, so that its
// twin never warns — else one line naming both counts and their relative difference.
std::string size_mismatch(const Model& retnet, const Model& transformer);

// Bytes one sequence's state takes after `tokens` tokens: RetNet's constant recurrent state
// (float32 on every backend), the twin's KV cache at `kv_element_bytes` an element
// (Backend::kv_cache_element_bytes()).
int64_t sequence_state_bytes(const ModelConfig& config, int64_t tokens, int kv_element_bytes = 4);

// Host memory the states of `batch` sequences of `tokens` tokens each take at their peak on the
// CPU backend: a KV cache holds up to an eighth more than its tokens, in blocks of 256 (it is made
// and grows so), and one more sequence's worth is counted for what is freed while it grows and
// the heap keeps. RetNet's states: batch + 1 of them.
uint64_t host_state_peak_bytes(const ModelConfig& config, int batch, int64_t tokens, int kv_element_bytes = 4);

// Host memory of one prefill of `length` tokens in the chunkwise form: the activations of every
// token (the CLI's check_forward_memory counts the same) and one chunk's (the twin's 64-row query
// tile's) scores against the whole prompt. measure_cost checks it on the host before the prefill:
// a length of 10⁶ would otherwise take the machine's memory for minutes before failing.
uint64_t prefill_host_bytes(const ModelConfig& config, int length);

}  // namespace retnet
