// SPDX-License-Identifier: GPL-3.0-or-later
// Interventions: parsing, and their effect on real forwards checked independently — every head
// muted leaves an FFN-only network (recomputed here in double), one muted head changes nothing
// before its layer, and a decay override rescales a first-layer head's scores by (γ'/γ)^(n−m).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/intervention.h"
#include "test_models.h"

using namespace retnet;

TEST(Interventions, ParseAndDescribe) {
    const Interventions iv = parse_interventions(" 2.3, 0.1,2.3 ", "5=0.999, 0=0.9");
    ASSERT_EQ(iv.muted.size(), 2u);  // the repeated 2.3 counts once
    EXPECT_EQ(iv.muted[0], std::make_pair(2, 3));
    EXPECT_EQ(iv.muted[1], std::make_pair(0, 1));
    EXPECT_EQ(iv.gamma.at(0), 0.9);
    EXPECT_EQ(iv.gamma.at(5), 0.999);
    EXPECT_EQ(describe(iv), "mute 2.3,0.1; gamma 0=0.9,5=0.999");
    EXPECT_TRUE(parse_interventions("", "").empty());
    EXPECT_EQ(describe(parse_interventions("", "1=1")), "gamma 1=1");

    for (const char* bad : {"2", "a.1", "1.-1", "1.2.3", "1.", ".2"})
        EXPECT_THROW(parse_interventions(bad, ""), Error) << bad;
    for (const char* bad : {"0", "0=0", "0=1.5", "0=x", "x=0.5", "0=0.5x", "-1=0.5", "0=nan"})
        EXPECT_THROW(parse_interventions("", bad), Error) << bad;
}

TEST(Interventions, HeadsTheModelDoesNotHaveAreErrors) {
    const auto model = test::small_model(Family::Fla, 1);  // 2 layers × 4 heads
    EXPECT_THROW(apply_interventions(*model, parse_interventions("2.0", "")), Error);
    EXPECT_THROW(apply_interventions(*model, parse_interventions("0.4", "")), Error);
    EXPECT_THROW(apply_interventions(*model, parse_interventions("", "4=0.5")), Error);
    EXPECT_NO_THROW(apply_interventions(*model, parse_interventions("1.3", "3=0.5")));
}

namespace {

std::vector<double> rms_normed(const std::vector<double>& x, const Tensor& w, double eps) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double s = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w.data[i];
    return y;
}

std::vector<double> matvec(const Tensor& W, const std::vector<double>& x) {  // W (out, in)
    const size_t out = static_cast<size_t>(W.dim(0)), in = static_cast<size_t>(W.dim(1));
    std::vector<double> y(out, 0.0);
    for (size_t r = 0; r < out; ++r)
        for (size_t c = 0; c < in; ++c) y[r] += static_cast<double>(W.data[r * in + c]) * x[c];
    return y;
}

}  // namespace

TEST(Interventions, MutingEveryHeadLeavesTheFfnOnlyNetwork) {
    const auto model = test::small_model(Family::Fla, 2);
    const ModelConfig& c = model->config;
    Interventions all;
    for (int l = 0; l < c.n_layers; ++l)
        for (int h = 0; h < c.n_heads; ++h) all.muted.emplace_back(l, h);
    auto muted = std::make_shared<const Model>(apply_interventions(*model, all));
    const std::vector<int32_t> tokens = test::random_tokens(9, c.vocab_size, 3);
    const Tensor logits = make_cpu_backend(muted)->forward(tokens, {});

    const ModelWeights& w = model->weights;
    double err = 0, scale = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
        const size_t d = static_cast<size_t>(c.d_model);
        std::vector<double> x(w.embed.data.begin() + static_cast<std::ptrdiff_t>(tokens[t] * d),
                              w.embed.data.begin() + static_cast<std::ptrdiff_t>((tokens[t] + 1) * d));
        for (const LayerWeights& L : w.layers) {
            const std::vector<double> xn = rms_normed(x, L.ffn_norm, c.norm_eps);
            const std::vector<double> a = matvec(L.ffn_act, xn), b = matvec(L.ffn_lin, xn);
            std::vector<double> hidden(a.size());
            for (size_t i = 0; i < a.size(); ++i) hidden[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
            const std::vector<double> out = matvec(L.ffn_out, hidden);
            for (size_t i = 0; i < d; ++i) x[i] += out[i];
        }
        const std::vector<double> expected = matvec(w.output_matrix(), rms_normed(x, w.final_norm, c.norm_eps));
        for (size_t v = 0; v < expected.size(); ++v) {
            err = std::max(err, std::abs(expected[v] - logits.data[t * expected.size() + v]));
            scale = std::max(scale, std::abs(expected[v]));
        }
    }
    // float32 forward against double: a few hundred roundings of 6e-8 relative.
    EXPECT_LT(err, 1e-5 * scale) << "max |logit| " << scale;
    // And the retention branch mattered: the unmuted model's logits are far from these.
    const Tensor plain = make_cpu_backend(model)->forward(tokens, {});
    EXPECT_GT(test::max_abs_diff(plain, logits), 1e-2 * scale);
}

TEST(Interventions, OneMutedHeadChangesNothingBeforeItsLayer) {
    const auto model = test::small_model(Family::TorchScale, 4);
    auto muted = std::make_shared<const Model>(apply_interventions(*model, parse_interventions("1.2", "")));
    const std::vector<int32_t> tokens = test::random_tokens(12, model->config.vocab_size, 5);
    auto run = [&](std::shared_ptr<const Model> m, Introspection& probe) {
        probe.want_layer_outputs = true;
        probe.score_layer = 1;
        probe.score_head = 2;
        return make_cpu_backend(std::move(m))->forward(tokens, {}, &probe);
    };
    Introspection a, b;
    const Tensor plain = run(model, a), edited = run(muted, b);
    EXPECT_EQ(a.layer_outputs[0].data, b.layer_outputs[0].data);
    EXPECT_EQ(a.scores.data, b.scores.data);  // the muted head still computes its scores
    EXPECT_GT(test::max_abs_diff(a.layer_outputs[1], b.layer_outputs[1]), 1e-3);
    EXPECT_GT(test::max_abs_diff(plain, edited), 1e-4);
}

TEST(Interventions, DecayOverrideRescalesTheScoresByThePowerOfTheRatio) {
    const auto model = test::small_model(Family::Fla, 6);
    const double gamma = std::exp(static_cast<double>(model->weights.log_decay[1])), changed = 0.5;
    auto edited = std::make_shared<const Model>(apply_interventions(*model, parse_interventions("", "1=0.5")));
    EXPECT_FLOAT_EQ(edited->weights.log_decay[1], static_cast<float>(std::log(0.5)));
    const std::vector<int32_t> tokens = test::random_tokens(10, model->config.vocab_size, 7);
    auto scores = [&](std::shared_ptr<const Model> m) {
        Introspection probe;
        probe.score_layer = 0;  // layer 0: q and k do not depend on any decay
        probe.score_head = 1;
        make_cpu_backend(std::move(m))->forward(tokens, {}, &probe);
        return probe.scores;
    };
    const Tensor before = scores(model), after = scores(edited);
    const int T = 10;
    double err = 0, peak = 0;
    for (int n = 0; n < T; ++n)
        for (int m = 0; m <= n; ++m) {
            const double expected = before.data[size_t(n * T + m)] * std::pow(changed / gamma, n - m);
            err = std::max(err, std::abs(after.data[size_t(n * T + m)] - expected));
            peak = std::max(peak, std::abs(expected));
        }
    EXPECT_LT(err, 1e-5 * peak);
    EXPECT_GT(test::max_abs_diff(before, after), 0.1 * peak);  // 0.5 is far from that head's γ
}
