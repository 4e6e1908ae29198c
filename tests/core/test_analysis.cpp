// SPDX-License-Identifier: GPL-3.0-or-later
// core/analysis: the engine-side work of the app's views (score downsampling, prompt-token
// candidates, the watching backend decorator), the recurrent state size, and the sampling preset
// shared by the CLI and the app.
#include <gtest/gtest.h>

#include <cmath>

#include "retnet/analysis.h"
#include "retnet/analysis_tap.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "retnet/model_stats.h"
#include "retnet/sampler.h"
#include "forwarding_backend.h"
#include "test_models.h"

namespace retnet {
namespace {

TEST(Analysis, DownsampleKeepsTheLargestMagnitudeWithItsSign) {
    // Two heads, T = 5, at most 2 cells per side: stride 3, cells cover [0, 2] and [3, 4].
    Tensor s({2, 5, 5});
    for (size_t i = 0; i < s.data.size(); ++i) s.data[i] = 0.01f * float(i % 7);
    s.data[1 * 5 + 2] = -3.0f;                 // head 0, (1, 2): cell (0, 0)
    s.data[25 + 4 * 5 + 3] = 2.5f;             // head 1, (4, 3): cell (1, 1)
    const DownsampledScores d = downsample_scores(s, 2);
    EXPECT_EQ(d.heads, 2);
    EXPECT_EQ(d.tokens, 5);
    EXPECT_EQ(d.stride, 3);
    EXPECT_EQ(d.size, 2);
    ASSERT_EQ(d.data.size(), 8u);
    EXPECT_EQ(d.data[0], -3.0f);
    EXPECT_EQ(d.data[4 + 3], 2.5f);
    EXPECT_EQ(d.first_position(1), 3);
    EXPECT_EQ(d.last_position(1), 4);
    // Cell (0, 1) of head 0 covers rows 0–2, columns 3–4: its largest value.
    float expected = 0.0f;
    for (int i = 0; i < 3; ++i)
        for (int j = 3; j < 5; ++j) expected = std::max(expected, s.data[size_t(i * 5 + j)]);
    EXPECT_EQ(d.data[1], expected);

    const DownsampledScores same = downsample_scores(s, 8);  // fits: nothing merged
    EXPECT_EQ(same.stride, 1);
    EXPECT_EQ(same.data, s.data);
    EXPECT_THROW(downsample_scores(Tensor({2, 5, 4}), 2), Error);
    EXPECT_THROW(downsample_scores(s, 0), Error);
}

TEST(Analysis, CandidatesIncludeTheActualToken) {
    const std::vector<float> row = {2.0f, 1.0f, 0.5f, -1.0f, -4.0f};
    const std::vector<TokenProb> top = token_candidates(row, 4, 2);
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0].id, 0);
    EXPECT_EQ(top[1].id, 1);
    EXPECT_EQ(top[2].id, 4);
    double sum = 0.0;
    for (float v : row) sum += std::exp(double(v));
    EXPECT_NEAR(top[2].prob, std::exp(-4.0) / sum, 1e-12);
    EXPECT_EQ(token_candidates(row, 1, 2).size(), 2u);  // already among the top: not repeated
}

TEST(Analysis, PromptCandidatesFollowTheRows) {
    // Rows from position 2 of a 5-token prompt: row 0 predicts position 3, row 1 position 4,
    // row 2 would predict past the end.
    Tensor logits({3, 4});
    for (size_t i = 0; i < logits.data.size(); ++i) logits.data[i] = float(i % 4) * (i < 4 ? 1.0f : -1.0f);
    const std::vector<int32_t> tokens = {0, 1, 2, 3, 1};
    const auto c = prompt_candidates(logits, 2, tokens, 1);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(c[0].front().id, 3);  // row 0 rises with the id
    EXPECT_EQ(c[0].size(), 1u);     // token 3 is the best
    EXPECT_EQ(c[1].front().id, 0);  // row 1 falls with the id
    ASSERT_EQ(c[1].size(), 2u);
    EXPECT_EQ(c[1][1].id, 1);  // the prompt's token appended
}

// The tap reports every forward call with the position it started at, and the norms it reports
// are the backend's own introspection of the same sequence.
TEST(Analysis, TapBackendReportsPositionsLogitsAndNorms) {
    auto model = test::small_model(Family::Fla, 5);
    auto inner = make_backend("cpu", model);
    std::vector<int64_t> starts;
    std::vector<float> norms;
    int64_t logitRows = 0;
    TapBackend tap(*inner, [&](int64_t first, const Tensor& logits, const Tensor& n) {
        starts.push_back(first);
        logitRows += logits.dim(0);
        norms.insert(norms.end(), n.data.begin(), n.data.end());
    });
    const std::vector<int32_t> tokens = test::random_tokens(7, 53, 3);
    tap.forward(std::span(tokens).first(4), {}, nullptr);
    const RecurrentState after4 = tap.snapshot();
    tap.forward(std::span(tokens).subspan(4), {}, nullptr);
    EXPECT_EQ(starts, (std::vector<int64_t>{0, 4}));
    EXPECT_EQ(logitRows, 7);

    Introspection probe;
    probe.want_state_norms = true;
    make_backend("cpu", model)->forward(tokens, {}, &probe);  // (T, L, H)
    ASSERT_EQ(norms.size(), probe.state_norms.data.size());
    for (size_t i = 0; i < norms.size(); ++i)
        EXPECT_NEAR(norms[i], probe.state_norms.data[i], 1e-4f * (1.0f + std::abs(norms[i]))) << i;

    tap.restore(after4);  // resumes counting from the snapshot's position
    tap.forward(std::span(tokens).subspan(4, 1), {}, nullptr);
    EXPECT_EQ(starts.back(), 4);
    tap.reset();
    tap.forward(std::span(tokens).first(1), {}, nullptr);
    EXPECT_EQ(starts.back(), 0);

    // Asked for the last row only, the caller gets one row while the observer sees them all.
    tap.reset();
    logitRows = 0;
    const SequenceRequest last{std::span(tokens), 0, LogitRows::Last};
    const std::vector<Tensor> out = tap.forward_batch({&last, 1}, {}, nullptr);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].dim(0), 1);
    EXPECT_EQ(logitRows, 7);
}

// Told that nobody wants the norms, the tap does not ask for them and still passes the logits.
TEST(Analysis, TapBackendSkipsTheNormsWhenNotWanted) {
    auto model = test::small_model(Family::Fla, 5);
    auto inner = make_backend("cpu", model);
    bool want = false;
    std::vector<int> ranks;
    int64_t logitRows = 0;
    TapBackend tap(
        *inner,
        [&](int64_t, const Tensor& logits, const Tensor& n) {
            ranks.push_back(int(n.rank()));
            logitRows += logits.dim(0);
        },
        [&] { return want; });
    const std::vector<int32_t> tokens = test::random_tokens(5, 53, 3);
    tap.forward(std::span(tokens).first(3), {}, nullptr);
    want = true;
    tap.forward(std::span(tokens).subspan(3), {}, nullptr);
    EXPECT_EQ(ranks, (std::vector<int>{0, 3}));
    EXPECT_EQ(logitRows, 5);
}

// A CPU backend that answers as a GPU backend with bf16 weights would: where it runs, its precision,
// its KV-cache elements and the device memory it reports.
class DeviceLikeBackend : public test::ForwardingBackend {
public:
    explicit DeviceLikeBackend(std::shared_ptr<const Model> model) : ForwardingBackend(make_cpu_backend(std::move(model))) {}
    std::string name() const override { return "device-like"; }
    int kv_cache_element_bytes() const override { return 2; }
    int64_t device_memory_in_use() const override { return 12345; }
    bool on_device() const override { return true; }
    std::string weights_precision() const override { return "bf16"; }
};

// The app watches its backend through the tap, and the cost view and the memory checks ask the
// tap where the backend runs and in what precision: it answers as the backend it wraps.
TEST(Analysis, TapBackendAnswersAsTheBackendItWraps) {
    auto model = test::small_model(Family::Fla, 5);
    DeviceLikeBackend inner(model);
    TapBackend tap(inner, [](int64_t, const Tensor&, const Tensor&) {});
    EXPECT_TRUE(tap.on_device());
    EXPECT_EQ(tap.weights_precision(), "bf16");
    EXPECT_EQ(tap.kv_cache_element_bytes(), 2);
    EXPECT_EQ(tap.device_memory_in_use(), 12345);
    auto cpu = make_cpu_backend(model);
    TapBackend on_host(*cpu, [](int64_t, const Tensor&, const Tensor&) {});
    EXPECT_FALSE(on_host.on_device());
    EXPECT_EQ(on_host.weights_precision(), "fp32");
    EXPECT_EQ(on_host.kv_cache_element_bytes(), 4);
    EXPECT_EQ(on_host.device_memory_in_use(), -1);
}

// torchscale keeps a float64 normalizer r_n per layer and head beside S; fla does not.
// q·k of the retention inputs, with the decay, gives the reference's parallel scores of every
// head (fla: exactly those; torchscale: those up to its per-row normalization).
double raw_score(const RetentionInputs& in, int64_t h, int64_t n, int64_t m, double gamma) {
    const int64_t Dk = in.q.dim(2), H = in.q.dim(1);
    double dot = 0.0;
    for (int64_t d = 0; d < Dk; ++d)
        dot += double(in.q.data[size_t((n * H + h) * Dk + d)]) * double(in.k.data[size_t((m * H + h) * Dk + d)]);
    return dot * std::pow(gamma, double(n - m));
}

TEST(Analysis, RetentionInputsGiveTheReferenceScores) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        SCOPED_TRACE(family_name(family));
        auto model = test::small_model(family, 8);
        const std::vector<int32_t> tokens = test::random_tokens(9, 53, 4);
        const int layer = 1, T = 9, H = model->config.n_heads;
        Introspection ref;
        ref.score_layer = layer;
        ref.want_all_head_scores = true;
        make_backend("reference", model)->forward(tokens, {}, &ref);  // scores (H, T, T)
        Introspection probe;
        probe.qkv_layer = layer;
        make_backend("cpu", model)->forward(tokens, {}, &probe);
        const RetentionInputs in = retention_inputs(*model, probe, 0);
        ASSERT_EQ(in.q.shape, (std::vector<int64_t>{T, H, model->config.head_dim_k()}));
        ASSERT_EQ(in.v.shape, (std::vector<int64_t>{T, H, model->config.head_dim_v()}));
        const std::vector<double> gamma = head_decays(model->weights.log_decay);
        for (int h = 0; h < H; ++h)
            for (int n = 0; n < T; ++n) {
                // torchscale divides row n by one positive factor; fla does not normalize.
                const double raw0 = raw_score(in, h, n, 0, gamma[size_t(h)]);
                const double ref0 = ref.scores.data[size_t((h * T + n) * T)];
                const double factor = family == Family::Fla ? 1.0 : ref0 / raw0;
                if (family == Family::TorchScale) {
                    EXPECT_GT(factor, 0.0);
                }
                for (int m = 0; m <= n; ++m) {
                    const double expected = ref.scores.data[size_t((h * T + n) * T + m)];
                    const double got = factor * raw_score(in, h, n, m, gamma[size_t(h)]);
                    EXPECT_NEAR(got, expected, 1e-3 * (1.0 + std::abs(expected))) << "head " << h << " (" << n << ", " << m << ")";
                }
            }
        // v is the value projection of the normed residual stream entering the layer.
        Introspection outputs;
        outputs.want_layer_outputs = true;
        make_backend("reference", model)->forward(tokens, {}, &outputs);
        const Tensor& x = outputs.layer_outputs[size_t(layer - 1)];  // (T, d)
        const LayerWeights& w = model->weights.layers[size_t(layer)];
        const int64_t d = model->config.d_model, width = in.v.dim(1) * in.v.dim(2);
        for (int64_t t = 0; t < T; ++t) {
            double ms = 0.0;
            for (int64_t i = 0; i < d; ++i) ms += double(x.data[size_t(t * d + i)]) * x.data[size_t(t * d + i)];
            const double inv = 1.0 / std::sqrt(ms / double(d) + model->config.norm_eps);
            for (int64_t j = 0; j < width; ++j) {
                double dot = 0.0;
                for (int64_t i = 0; i < d; ++i)
                    dot += double(x.data[size_t(t * d + i)]) * inv * w.attn_norm.data[size_t(i)] * w.v_proj.data[size_t(j * d + i)];
                EXPECT_NEAR(in.v.data[size_t(t * width + j)], dot, 1e-3 * (1.0 + std::abs(dot))) << t << ", " << j;
            }
        }
    }
}

// A continued call rotates its rows to their absolute positions: the same q and k as one call
// over the whole text.
TEST(Analysis, RetentionInputsOfAContinuedCallUseAbsolutePositions) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        SCOPED_TRACE(family_name(family));
        auto model = test::small_model(family, 9);
        const std::vector<int32_t> tokens = test::random_tokens(10, 53, 6);
        Introspection whole;
        whole.qkv_layer = 0;
        make_backend("cpu", model)->forward(tokens, {}, &whole);
        const RetentionInputs all = retention_inputs(*model, whole, 0);
        auto backend = make_backend("cpu", model);
        backend->forward(std::span(tokens).first(6), {}, nullptr);
        Introspection tail;
        tail.qkv_layer = 0;
        ForwardOptions recurrent;
        recurrent.form = Form::Recurrent;
        backend->forward(std::span(tokens).subspan(6), recurrent, &tail);
        const RetentionInputs rest = retention_inputs(*model, tail, 6);
        const size_t row = all.q.data.size() / 10;
        for (size_t i = 0; i < rest.q.data.size(); ++i) {
            EXPECT_NEAR(rest.q.data[i], all.q.data[6 * row + i], 1e-4 * (1.0 + std::abs(all.q.data[6 * row + i])));
            EXPECT_NEAR(rest.k.data[i], all.k.data[6 * row + i], 1e-4 * (1.0 + std::abs(all.k.data[6 * row + i])));
        }
        Introspection none;
        EXPECT_THROW(retention_inputs(*model, none, 0), Error);
        Introspection beyond;
        beyond.qkv_layer = model->config.n_layers;
        EXPECT_THROW(make_backend("cpu", model)->forward(tokens, {}, &beyond), Error);
    }
}

TEST(Analysis, StateSizeCountsTorchscalesNormalizer) {
    const ModelConfig fla = test::small_config(Family::Fla);
    const ModelConfig ts = test::small_config(Family::TorchScale);
    EXPECT_EQ(recurrent_state_bytes(fla), 2 * 4 * 8 * 12 * 4);
    EXPECT_EQ(recurrent_state_bytes(ts), 2 * 4 * 8 * 12 * 4 + 2 * 4 * 8);
    const auto model = test::small_model(Family::TorchScale, 1);
    EXPECT_EQ(model_stats(*model, 16).state_bytes_fp32, recurrent_state_bytes(ts));
    // The bytes a backend's snapshot actually holds.
    auto backend = make_backend("cpu", model);
    const std::vector<int32_t> one = {3};
    backend->forward(one, {});
    const RecurrentState state = backend->snapshot();
    int64_t held = 0;
    for (const LayerState& l : state.layers)
        held += int64_t(l.S.size() * sizeof(float) + l.scale.size() * sizeof(double));
    EXPECT_EQ(held, recurrent_state_bytes(ts));
}

TEST(Analysis, DefaultSamplingIsTheDocumentedPreset) {
    const SamplerParams p = default_sampling();
    EXPECT_EQ(p.temperature, 0.8);
    EXPECT_EQ(p.top_k, 40);
    EXPECT_EQ(p.top_p, 0.95);
    EXPECT_EQ(p.min_p, 0.05);
    EXPECT_EQ(p.repeat_penalty, 1.0);
    EXPECT_EQ(p.seed, 0u);
    EXPECT_NO_THROW(p.validate());
}

}  // namespace
}  // namespace retnet
