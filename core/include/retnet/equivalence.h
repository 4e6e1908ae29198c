// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Equivalence of the three computation forms: run parallel, recurrent and chunkwise on the same
// tokens with one backend and compare them pairwise. Used by `retnet compare` and by the app's
// equivalence view, so the numbers shown in both are the same.
//
// Metrics of a pair (a, b), on the logits (T, V):
//   max_abs = max |a − b|;  nmse = Σ(a − b)² / Σa²;  rel = max_abs / max|a|
// and the first position whose row max-abs exceeds the tolerance. The tolerance is relative to
// the logit scale (max|logit| of the first form), because logits of real models range from ~1 to
// ~100 and a fixed absolute bound would mean different things for each. Per-layer errors come
// from the residual stream after each layer (Introspection::layer_outputs).
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "retnet/forward.h"
#include "retnet/tensor.h"

namespace retnet {

struct EquivalenceOptions {
    int chunk_size = 0;                   // chunkwise form; 0 = the config's chunk_size
    std::optional<double> head_norm_eps;  // override (0 shows torchscale's forms agree, docs/spec.md §2.7)
    double tolerance = 1e-4;              // relative to max|logit| of the first form of a pair
    bool want_layer_outputs = true;       // per-layer errors and the heat map's layer columns
    // Polled before each layer of each form (ForwardOptions::cancelled): true ends the comparison
    // with retnet::Cancelled within one layer's time (Ctrl-C in `retnet compare`).
    std::function<bool()> cancelled;
};

// One form's output on the tokens.
struct FormRun {
    Form form = Form::Parallel;
    Tensor logits;                      // (T, V)
    std::vector<Tensor> layer_outputs;  // L × (T, d); empty unless requested
    RecurrentState final_state;         // after the last token
    double seconds = 0.0;               // wall time of forward()
};

struct PairReport {
    Form a = Form::Parallel, b = Form::Recurrent;
    double max_abs = 0.0;  // max |a − b| over the logits
    double nmse = 0.0;     // Σ(a − b)² / Σa² over the logits (0 when a is all zeros and equal)
    double rel = 0.0;      // max_abs / max|a|
    double tolerance_abs = 0.0;        // the tolerance in logit units used for the verdict
    int64_t first_bad_position = -1;   // first t with max_v |a − b|[t] > tolerance_abs; −1 = none
    double state_max_abs = 0.0;        // max |S_a − S_b| over all layers' final states
    std::vector<double> per_layer_max_abs;  // L, residual stream after each layer; empty if not run
    Tensor heat;  // (T, L+1) max-abs per position and layer; last column = logits

    bool passed() const { return first_bad_position < 0; }
};

struct EquivalenceReport {
    std::vector<FormRun> runs;      // parallel, recurrent, chunkwise (in this order)
    std::vector<PairReport> pairs;  // parallel–recurrent, parallel–chunkwise, recurrent–chunkwise
    int chunk_size = 0;             // the chunk size actually used
    double head_norm_eps = 0.0;     // the head-norm eps actually used

    bool passed() const;
};

// Runs `form` from an empty state (backend.reset() first) and keeps what the comparison needs.
// Leaves the backend's state at the end of the tokens.
FormRun run_form(Backend& backend, std::span<const int32_t> tokens, Form form,
                 const EquivalenceOptions& options);

// Compares two runs of the same tokens. Throws retnet::Error if their shapes differ.
PairReport compare_runs(const FormRun& a, const FormRun& b, double tolerance);

// All three forms and the three pairs. The backend is reset before each form and left at the end
// of the chunkwise run. Throws retnet::Error on bad input (empty tokens, bad chunk size).
EquivalenceReport compare_forms(Backend& backend, std::span<const int32_t> tokens,
                                const EquivalenceOptions& options = {});

// Error of chunkwise against parallel as a function of the chunk size (the app's curve).
struct ChunkSweepPoint {
    int chunk_size = 0;
    double max_abs = 0.0;
    double nmse = 0.0;
    double rel = 0.0;
    double seconds = 0.0;  // wall time of the chunkwise forward
};
std::vector<ChunkSweepPoint> chunk_size_sweep(Backend& backend, std::span<const int32_t> tokens,
                                              std::span<const int> chunk_sizes,
                                              const EquivalenceOptions& options = {});

// Plain metrics on two equally long arrays (exposed for other comparisons: CUDA vs CPU, tests).
struct DiffStats {
    double max_abs = 0.0;
    double nmse = 0.0;
    double max_ref = 0.0;  // max |a|
};
DiffStats diff_stats(std::span<const float> a, std::span<const float> b);

}  // namespace retnet
