// SPDX-License-Identifier: GPL-3.0-or-later
// Equivalence metrics: exact values on a scripted backend whose forms differ by known amounts,
// and the real reference backend, whose three forms must agree for fla and (with eps = 0) for
// torchscale (docs/spec.md §2.7).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "retnet/equivalence.h"
#include "retnet/error.h"

namespace {

using namespace retnet;

ModelConfig tiny_config(Family family) {
    ModelConfig c;
    c.family = family;
    c.vocab_size = 32;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 16;
    c.value_dim = 16;
    c.ffn_dim = 32;
    c.chunk_size = 4;
    if (family == Family::TorchScale) {
        c.head_norm_affine = false;
        c.ffn_activation = Activation::Gelu;
    }
    return c;
}

// Logits and layer outputs are a fixed function of (position, index); each form adds a scripted
// error at one position so every metric has a value known in advance.
class ScriptedBackend : public Backend {
public:
    explicit ScriptedBackend(std::shared_ptr<const Model> model) : m_model(std::move(model)) {}

    struct ScriptedError {
        int64_t position = -1;  // −1 = no error
        float amount = 0.0f;    // added to logit 0 and to layer 1's output 0 at `position`
    };
    ScriptedError recurrent_error, chunkwise_error;
    std::vector<ForwardOptions> calls;
    int resets = 0;

    std::string name() const override { return "scripted"; }
    const Model& model() const override { return *m_model; }

    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* probe) override {
        const std::span<const int32_t> tokens = batch[0].tokens;
        calls.push_back(options);
        const auto T = static_cast<int64_t>(tokens.size());
        const int64_t V = m_model->config.vocab_size, d = m_model->config.d_model;
        const ScriptedError e = options.form == Form::Recurrent   ? recurrent_error
                        : options.form == Form::Chunkwise ? chunkwise_error
                                                          : ScriptedError{};
        Tensor logits({T, V});
        for (int64_t t = 0; t < T; ++t)
            for (int64_t v = 0; v < V; ++v)
                logits.data[static_cast<size_t>(t * V + v)] = static_cast<float>(t + 1) * (v % 5 - 2);
        if (e.position >= 0) logits.data[static_cast<size_t>(e.position * V)] += e.amount;
        if (probe && probe->want_layer_outputs) {
            probe->layer_outputs.assign(static_cast<size_t>(m_model->config.n_layers), Tensor({T, d}, 0.5f));
            if (e.position >= 0) probe->layer_outputs[1].data[static_cast<size_t>(e.position * d)] += e.amount;
        }
        m_state.position += T;
        return {logits};
    }
    int slot_count() const override { return 1; }
    void set_slot_count(int) override {}
    void reset(int) override {
        ++resets;
        m_state = make_empty_state(m_model->config);
    }
    RecurrentState snapshot(int) const override { return m_state; }
    void restore(const RecurrentState& s, int) override { m_state = s; }

private:
    std::shared_ptr<const Model> m_model;
    RecurrentState m_state;
};

std::shared_ptr<const Model> tiny_model(Family family, uint64_t seed = 7) {
    return std::make_shared<const Model>(make_random_model(tiny_config(family), seed));
}

TEST(DiffStats, MaxAbsNmseAndReference) {
    const std::vector<float> a = {1.0f, -2.0f, 3.0f, 0.0f};
    const std::vector<float> b = {1.0f, -2.5f, 3.0f, 0.25f};
    const DiffStats s = diff_stats(a, b);
    EXPECT_DOUBLE_EQ(s.max_abs, 0.5);
    EXPECT_DOUBLE_EQ(s.max_ref, 3.0);
    EXPECT_DOUBLE_EQ(s.nmse, (0.25 + 0.0625) / 14.0);
}

TEST(DiffStats, NanIsNeverAgreement) {
    const std::vector<float> a = {1.0f, 2.0f};
    const std::vector<float> b = {1.0f, std::numeric_limits<float>::quiet_NaN()};
    const DiffStats s = diff_stats(a, b);
    EXPECT_TRUE(std::isinf(s.max_abs));
    EXPECT_TRUE(std::isinf(s.nmse));
}

TEST(DiffStats, SizeMismatchThrows) {
    const std::vector<float> a = {1.0f, 2.0f}, b = {1.0f};
    EXPECT_THROW(diff_stats(a, b), retnet::Error);
}

TEST(Equivalence, ScriptedErrorsGiveExactMetrics) {
    ScriptedBackend backend(tiny_model(Family::Fla));
    backend.recurrent_error = {3, 0.0078125f};  // 2^-7, above 1e-4 × max|logit|; exact in float
    backend.chunkwise_error = {5, 0x1p-20f};  // one ulp of the logit 12: below it
    const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
    EquivalenceOptions options;
    options.chunk_size = 3;
    options.head_norm_eps = 0.0;
    const EquivalenceReport report = compare_forms(backend, tokens, options);

    // Every form ran from an empty state with the requested options.
    ASSERT_EQ(backend.calls.size(), 3u);
    EXPECT_EQ(backend.resets, 3);
    EXPECT_EQ(backend.calls[0].form, Form::Parallel);
    EXPECT_EQ(backend.calls[1].form, Form::Recurrent);
    EXPECT_EQ(backend.calls[2].form, Form::Chunkwise);
    EXPECT_EQ(backend.calls[2].chunk_size, 3);
    ASSERT_TRUE(backend.calls[1].head_norm_eps.has_value());
    EXPECT_EQ(*backend.calls[1].head_norm_eps, 0.0);
    EXPECT_EQ(report.chunk_size, 3);
    EXPECT_EQ(report.head_norm_eps, 0.0);

    ASSERT_EQ(report.pairs.size(), 3u);
    const double max_logit = 8.0 * 2.0;  // (t + 1) · |v % 5 − 2| at t = 7
    const PairReport& pr = report.pairs[0];  // parallel–recurrent
    EXPECT_EQ(pr.a, Form::Parallel);
    EXPECT_EQ(pr.b, Form::Recurrent);
    EXPECT_EQ(pr.max_abs, 0.0078125);
    EXPECT_DOUBLE_EQ(pr.rel, 0.0078125 / max_logit);
    EXPECT_NEAR(pr.tolerance_abs, 1e-4 * max_logit, 1e-12);
    EXPECT_EQ(pr.first_bad_position, 3);
    EXPECT_FALSE(pr.passed());
    ASSERT_EQ(pr.per_layer_max_abs.size(), 2u);
    EXPECT_EQ(pr.per_layer_max_abs[0], 0.0);
    EXPECT_EQ(pr.per_layer_max_abs[1], 0.0078125);
    ASSERT_EQ(pr.heat.shape, (std::vector<int64_t>{8, 3}));
    EXPECT_EQ(pr.heat.data[3 * 3 + 1], 0.0078125f);  // (t = 3, layer 1)
    EXPECT_EQ(pr.heat.data[3 * 3 + 2], 0.0078125f);  // (t = 3, logits)
    EXPECT_EQ(pr.heat.data[2 * 3 + 2], 0.0f);

    // Σ(a−b)² / Σa²: Σa² = Σ_t (t+1)² · Σ_v (v%5−2)² over V = 32.
    double sum_v = 0.0;
    for (int v = 0; v < 32; ++v) sum_v += (v % 5 - 2) * (v % 5 - 2);
    double sum_t = 0.0;
    for (int t = 1; t <= 8; ++t) sum_t += t * t;
    EXPECT_DOUBLE_EQ(pr.nmse, 0.0078125 * 0.0078125 / (sum_t * sum_v));

    const PairReport& pc = report.pairs[1];  // parallel–chunkwise: below tolerance
    EXPECT_EQ(pc.b, Form::Chunkwise);
    EXPECT_TRUE(pc.passed());
    EXPECT_EQ(pc.first_bad_position, -1);
    EXPECT_EQ(pc.max_abs, 0x1p-20);

    const PairReport& rc = report.pairs[2];  // recurrent–chunkwise sees the recurrent error
    EXPECT_EQ(rc.a, Form::Recurrent);
    EXPECT_EQ(rc.first_bad_position, 3);
    EXPECT_FALSE(report.passed());
}

TEST(Equivalence, LayerOutputsAreOptional) {
    ScriptedBackend backend(tiny_model(Family::Fla));
    const std::vector<int32_t> tokens = {1, 2, 3};
    EquivalenceOptions options;
    options.want_layer_outputs = false;
    const EquivalenceReport report = compare_forms(backend, tokens, options);
    EXPECT_TRUE(report.passed());
    EXPECT_TRUE(report.pairs[0].per_layer_max_abs.empty());
    EXPECT_EQ(report.pairs[0].heat.shape, (std::vector<int64_t>{3, 1}));
    EXPECT_EQ(report.chunk_size, 4);  // the config's
}

TEST(Equivalence, RejectsEmptyInputAndBadChunkSize) {
    ScriptedBackend backend(tiny_model(Family::Fla));
    EXPECT_THROW(compare_forms(backend, std::vector<int32_t>{}), retnet::Error);
    const std::vector<int32_t> tokens = {1, 2};
    const std::vector<int> sizes = {2, 0};
    EXPECT_THROW(chunk_size_sweep(backend, tokens, sizes), retnet::Error);
}

TEST(Equivalence, ChunkSweepComparesAgainstParallel) {
    ScriptedBackend backend(tiny_model(Family::Fla));
    backend.chunkwise_error = {1, 0.5f};
    const std::vector<int32_t> tokens = {1, 2, 3, 4};
    const std::vector<int> sizes = {1, 2, 4};
    const auto points = chunk_size_sweep(backend, tokens, sizes);
    ASSERT_EQ(points.size(), 3u);
    for (size_t i = 0; i < points.size(); ++i) {
        EXPECT_EQ(points[i].chunk_size, sizes[i]);
        EXPECT_NEAR(points[i].max_abs, 0.5, 1e-7);
        EXPECT_NEAR(points[i].rel, 0.5 / 8.0, 1e-7);
    }
    EXPECT_EQ(backend.calls.back().chunk_size, 4);
}

// ---- the real reference backend ----------------------------------------------------------------

std::vector<int32_t> some_tokens(int n) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back((i * 7 + 3) % 32);
    return t;
}

TEST(EquivalenceReference, FlaFormsAgree) {
    auto backend = make_reference_backend(tiny_model(Family::Fla));
    const auto tokens = some_tokens(11);  // not a multiple of the chunk size 4
    const EquivalenceReport report = compare_forms(*backend, tokens);
    // The reference accumulates in double and fla's forms are algebraically identical, so only
    // float32 rounding of the stored logits remains: ~1e-7 relative, far below 1e-4.
    for (const PairReport& p : report.pairs) {
        EXPECT_TRUE(p.passed()) << form_name(p.a) << "-" << form_name(p.b) << " rel " << p.rel;
        EXPECT_LT(p.rel, 1e-5);
        EXPECT_LT(p.state_max_abs, 1e-4);
    }
}

// `retnet compare`'s Ctrl-C: the three forms ask `cancelled` before each of their layers (2 × 3
// polls); true at the second form's second layer ends the comparison with Cancelled, and the
// backend then compares exactly as a fresh one (the cancelled form left no state behind).
TEST(EquivalenceReference, CancelledIsAskedBeforeEachLayerOfEachForm) {
    auto backend = make_cpu_backend(tiny_model(Family::Fla));
    const auto tokens = some_tokens(11);
    EquivalenceOptions options;
    int asked = 0;
    options.cancelled = [&asked] { return ++asked == 4; };
    EXPECT_THROW(compare_forms(*backend, tokens, options), Cancelled);
    EXPECT_EQ(asked, 4);
    asked = 0;
    options.cancelled = [&asked] { return ++asked < 0; };  // asked, never true
    const EquivalenceReport after = compare_forms(*backend, tokens, options);
    EXPECT_EQ(asked, 3 * 2);
    const EquivalenceReport fresh = compare_forms(*make_cpu_backend(tiny_model(Family::Fla)), tokens);
    for (size_t f = 0; f < 3; ++f) EXPECT_EQ(after.runs[f].logits.data, fresh.runs[f].logits.data) << f;
}

TEST(EquivalenceReference, TorchscaleFormsAgreeWithZeroEps) {
    auto backend = make_reference_backend(tiny_model(Family::TorchScale));
    const auto tokens = some_tokens(11);
    EquivalenceOptions options;
    options.head_norm_eps = 0.0;
    const EquivalenceReport report = compare_forms(*backend, tokens, options);
    EXPECT_EQ(report.head_norm_eps, 0.0);
    // docs/spec.md §2.7: with eps = 0 the per-row scalars cancel in the head RMSNorm.
    for (const PairReport& p : report.pairs)
        EXPECT_LT(p.rel, 1e-5) << form_name(p.a) << "-" << form_name(p.b);
}

// The torchscale fixture whose head-norm eps is comparable to mean(R²/r) (docs/spec.md §2.7): the forms
// differ visibly with its eps and agree once eps = 0, which the equivalence view demonstrates.
TEST(EquivalenceReference, TorchscaleEpsSensitiveFixture) {
    auto model = std::make_shared<const Model>(
        load_model(std::string(RETNET_TEST_DATA_DIR) + "/reference/ts_eps_sensitive"));
    auto backend = make_cpu_backend(model);
    std::vector<int32_t> tokens;
    for (int t = 3; t <= 50; ++t) tokens.push_back(t);
    EquivalenceOptions options;
    options.chunk_size = 4;
    const EquivalenceReport with_eps = compare_forms(*backend, tokens, options);
    EXPECT_FALSE(with_eps.passed());
    EXPECT_GT(with_eps.pairs[1].rel, 1e-2);  // parallel–chunkwise
    EXPECT_GE(with_eps.pairs[1].first_bad_position, 0);
    options.head_norm_eps = 0.0;
    const EquivalenceReport without = compare_forms(*backend, tokens, options);
    EXPECT_TRUE(without.passed());
    // float32 CPU backend: rounding of ~1e-7 relative per op, a few thousand ops deep.
    for (const PairReport& p : without.pairs) EXPECT_LT(p.rel, 1e-5);
}

}  // namespace
