// SPDX-License-Identifier: GPL-3.0-or-later
// Pairwise comparison of the three computation forms (see equivalence.h for the metrics).
#include "retnet/equivalence.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "retnet/error.h"

namespace retnet {

DiffStats diff_stats(std::span<const float> a, std::span<const float> b) {
    if (a.size() != b.size())
        throw Error("cannot compare arrays of different sizes (" + std::to_string(a.size()) +
                    " vs " + std::to_string(b.size()) + ")");
    DiffStats s;
    double sum_sq_diff = 0.0, sum_sq_ref = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double x = a[i], y = b[i];
        const double d = std::abs(x - y);
        // NaN must never read as agreement: std::max would drop it.
        if (std::isnan(d)) s.max_abs = std::numeric_limits<double>::infinity();
        s.max_abs = std::max(s.max_abs, d);
        s.max_ref = std::max(s.max_ref, std::abs(x));
        sum_sq_diff += d * d;
        sum_sq_ref += x * x;
    }
    if (sum_sq_ref > 0.0)
        s.nmse = sum_sq_diff / sum_sq_ref;
    else
        s.nmse = sum_sq_diff > 0.0 ? std::numeric_limits<double>::infinity() : 0.0;
    if (std::isnan(sum_sq_diff)) s.nmse = std::numeric_limits<double>::infinity();
    return s;
}

namespace {

// Largest |a − b| of each row of two (T, N) tensors.
std::vector<double> row_max_abs(const Tensor& a, const Tensor& b) {
    const int64_t T = a.dim(0), N = a.numel() / std::max<int64_t>(T, 1);
    std::vector<double> out(static_cast<size_t>(T), 0.0);
    for (int64_t t = 0; t < T; ++t) {
        const float* x = a.ptr() + t * N;
        const float* y = b.ptr() + t * N;
        double m = 0.0;
        for (int64_t i = 0; i < N; ++i) {
            const double d = std::abs(static_cast<double>(x[i]) - y[i]);
            m = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(m, d);
        }
        out[static_cast<size_t>(t)] = m;
    }
    return out;
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
    if (a.shape != b.shape)
        throw Error(std::string("cannot compare ") + what + ": shapes " + a.shape_string() +
                    " and " + b.shape_string() + " differ");
    if (a.rank() != 2) throw Error(std::string(what) + " must be (T, N), got " + a.shape_string());
}

double state_max_abs(const RecurrentState& a, const RecurrentState& b) {
    if (a.layers.size() != b.layers.size()) return std::numeric_limits<double>::infinity();
    double m = 0.0;
    for (size_t l = 0; l < a.layers.size(); ++l) {
        const LayerState &x = a.layers[l], &y = b.layers[l];  // S, or the Transformer twin's K and V
        if (x.S.size() != y.S.size() || x.K.size() != y.K.size() || x.V.size() != y.V.size())
            return std::numeric_limits<double>::infinity();
        m = std::max({m, diff_stats(x.S, y.S).max_abs, diff_stats(x.K, y.K).max_abs, diff_stats(x.V, y.V).max_abs});
    }
    return m;
}

}  // namespace

FormRun run_form(Backend& backend, std::span<const int32_t> tokens, Form form,
                 const EquivalenceOptions& options) {
    ForwardOptions fo;
    fo.form = form;
    fo.chunk_size = options.chunk_size;
    fo.head_norm_eps = options.head_norm_eps;
    fo.cancelled = options.cancelled;
    check_forward_inputs(backend.model(), tokens, fo);

    Introspection probe;
    probe.want_layer_outputs = options.want_layer_outputs;
    backend.reset();
    FormRun run;
    run.form = form;
    const auto start = std::chrono::steady_clock::now();
    run.logits = backend.forward(tokens, fo, options.want_layer_outputs ? &probe : nullptr);
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    run.layer_outputs = std::move(probe.layer_outputs);
    run.final_state = backend.snapshot();
    return run;
}

PairReport compare_runs(const FormRun& a, const FormRun& b, double tolerance) {
    check_same_shape(a.logits, b.logits, "logits");
    PairReport r;
    r.a = a.form;
    r.b = b.form;
    const DiffStats s = diff_stats(a.logits.data, b.logits.data);
    r.max_abs = s.max_abs;
    r.nmse = s.nmse;
    r.rel = s.max_ref > 0.0 ? s.max_abs / s.max_ref : (s.max_abs > 0.0 ? s.max_abs : 0.0);
    // A model whose logits are all zero still needs a non-zero bound: fall back to absolute.
    r.tolerance_abs = tolerance * (s.max_ref > 0.0 ? s.max_ref : 1.0);
    r.state_max_abs = state_max_abs(a.final_state, b.final_state);

    const int64_t T = a.logits.dim(0);
    const bool have_layers =
        !a.layer_outputs.empty() && a.layer_outputs.size() == b.layer_outputs.size();
    const int64_t L = have_layers ? static_cast<int64_t>(a.layer_outputs.size()) : 0;
    r.heat = Tensor({T, L + 1});
    for (int64_t l = 0; l < L; ++l) {
        const Tensor& x = a.layer_outputs[static_cast<size_t>(l)];
        const Tensor& y = b.layer_outputs[static_cast<size_t>(l)];
        check_same_shape(x, y, "layer outputs");
        const std::vector<double> rows = row_max_abs(x, y);
        double m = 0.0;
        for (int64_t t = 0; t < T; ++t) {
            r.heat.data[static_cast<size_t>(t * (L + 1) + l)] = static_cast<float>(rows[static_cast<size_t>(t)]);
            m = std::max(m, rows[static_cast<size_t>(t)]);
        }
        r.per_layer_max_abs.push_back(m);
    }
    const std::vector<double> logit_rows = row_max_abs(a.logits, b.logits);
    for (int64_t t = 0; t < T; ++t) {
        const double e = logit_rows[static_cast<size_t>(t)];
        r.heat.data[static_cast<size_t>(t * (L + 1) + L)] = static_cast<float>(e);
        if (r.first_bad_position < 0 && !(e <= r.tolerance_abs)) r.first_bad_position = t;
    }
    return r;
}

bool EquivalenceReport::passed() const {
    return std::all_of(pairs.begin(), pairs.end(), [](const PairReport& p) { return p.passed(); });
}

EquivalenceReport compare_forms(Backend& backend, std::span<const int32_t> tokens,
                                const EquivalenceOptions& options) {
    EquivalenceReport report;
    const ModelConfig& config = backend.model().config;
    report.chunk_size = options.chunk_size > 0 ? options.chunk_size : config.chunk_size;
    report.head_norm_eps = options.head_norm_eps.value_or(config.norm_eps);
    for (Form f : {Form::Parallel, Form::Recurrent, Form::Chunkwise})
        report.runs.push_back(run_form(backend, tokens, f, options));
    const auto& r = report.runs;
    report.pairs.push_back(compare_runs(r[0], r[1], options.tolerance));
    report.pairs.push_back(compare_runs(r[0], r[2], options.tolerance));
    report.pairs.push_back(compare_runs(r[1], r[2], options.tolerance));
    return report;
}

std::vector<ChunkSweepPoint> chunk_size_sweep(Backend& backend, std::span<const int32_t> tokens,
                                              std::span<const int> chunk_sizes,
                                              const EquivalenceOptions& options) {
    EquivalenceOptions quick = options;
    quick.want_layer_outputs = false;
    const FormRun reference = run_form(backend, tokens, Form::Parallel, quick);
    std::vector<ChunkSweepPoint> out;
    for (int c : chunk_sizes) {
        if (c < 1) throw Error("chunk size must be at least 1 (got " + std::to_string(c) + ")");
        quick.chunk_size = c;
        const FormRun run = run_form(backend, tokens, Form::Chunkwise, quick);
        const DiffStats s = diff_stats(reference.logits.data, run.logits.data);
        out.push_back({c, s.max_abs, s.nmse, s.max_ref > 0.0 ? s.max_abs / s.max_ref : s.max_abs,
                       run.seconds});
    }
    return out;
}

}  // namespace retnet
