// SPDX-License-Identifier: GPL-3.0-or-later
// The logit lens against the model's own logits (last layer) and against a naive double readout
// of every layer's residual stream (final RMSNorm, then the output matrix, then softmax).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/lens.h"
#include "retnet/model.h"
#include "test_models.h"

namespace {

using namespace retnet;

// softmax(W · RMSNorm(x)) in double for one row x of a layer's output.
std::vector<double> naive_readout(const Model& model, const float* x) {
    const ModelConfig& c = model.config;
    double ss = 0;
    for (int i = 0; i < c.d_model; ++i) ss += double(x[i]) * x[i];
    const double inv_rms = 1.0 / std::sqrt(ss / c.d_model + c.norm_eps);
    const Tensor& w = model.weights.output_matrix();  // (V, d)
    std::vector<double> z(static_cast<size_t>(c.vocab_size));
    double peak = -INFINITY;
    for (int v = 0; v < c.vocab_size; ++v) {
        double dot = 0;
        for (int i = 0; i < c.d_model; ++i)
            dot += double(w.data[size_t(v) * c.d_model + i]) * x[i] * inv_rms * model.weights.final_norm.data[size_t(i)];
        z[size_t(v)] = dot;
        peak = std::max(peak, dot);
    }
    double sum = 0;
    for (double& e : z) sum += (e = std::exp(e - peak));
    for (double& e : z) e /= sum;
    return z;
}

// The shared small models: fla with a tied output matrix, torchscale untied; large weights and
// final-norm weights away from 1, so every factor of the readout matters.
class Lens : public ::testing::TestWithParam<Family> {};

TEST_P(Lens, ReadsEveryLayerOutThroughTheFinalNormAndOutputMatrix) {
    const std::shared_ptr<const Model> model = test::small_model(GetParam(), 5);
    const int L = model->config.n_layers;
    const std::vector<int32_t> tokens = {1, 7, 3, 3, 28, 0, 12};
    Introspection intro;
    intro.want_layer_outputs = true;
    const Tensor logits = make_cpu_backend(model)->forward(tokens, ForwardOptions{}, &intro);  // (T, V)
    const int T = int(tokens.size()), V = model->config.vocab_size;
    const auto readings = logit_lens(*model, intro.layer_outputs, tokens, 5);
    ASSERT_EQ(readings.size(), size_t(L));
    double largest_difference_between_layers = 0;
    for (int l = 0; l < L; ++l) {
        ASSERT_EQ(readings[size_t(l)].size(), size_t(T));
        for (int t = 0; t < T; ++t) {
            const LensReading& r = readings[size_t(l)][size_t(t)];
            const std::vector<double> p = naive_readout(*model, intro.layer_outputs[size_t(l)].data.data() + size_t(t) * model->config.d_model);
            ASSERT_EQ(r.top.size(), 5u);
            for (size_t k = 0; k < r.top.size(); ++k) {
                EXPECT_NEAR(r.top[k].prob, p[size_t(r.top[k].id)], 1e-5) << "layer " << l << " position " << t;
                if (k > 0) {
                    EXPECT_GE(r.top[k - 1].prob, r.top[k].prob);
                }
            }
            EXPECT_NEAR(r.top[0].prob, *std::max_element(p.begin(), p.end()), 1e-5);
            if (t + 1 < T) {
                EXPECT_NEAR(r.next_prob, p[size_t(tokens[size_t(t + 1)])], 1e-5);
            } else {
                EXPECT_EQ(r.next_prob, -1.0);  // nothing follows the last token
            }
            if (l > 0 && t + 1 < T)  // in log space: some readings are nearly one-hot
                largest_difference_between_layers =
                    std::max(largest_difference_between_layers,
                             std::abs(std::log(r.next_prob) - std::log(readings[0][size_t(t)].next_prob)));
        }
    }
    EXPECT_GT(largest_difference_between_layers, 1e-3) << "the layers should not all read the same (rounding is ~1e-6)";
    // The last layer's reading is the model's prediction.
    for (int t = 0; t < T; ++t) {
        const std::vector<TokenProb> model_top =
            top_probabilities(std::span<const float>(logits.data.data() + size_t(t) * V, size_t(V)), 5);
        for (size_t k = 0; k < 5; ++k) {
            EXPECT_EQ(readings[size_t(L - 1)][size_t(t)].top[k].id, model_top[k].id) << "position " << t;
            EXPECT_NEAR(readings[size_t(L - 1)][size_t(t)].top[k].prob, model_top[k].prob, 1e-6);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Families, Lens, ::testing::Values(Family::Fla, Family::TorchScale),
                         [](const auto& case_info) { return std::string(family_name(case_info.param)); });

TEST(LensErrors, ShapesThatDoNotMatchTheModelAreRefused) {
    const std::shared_ptr<const Model> model = test::small_model(Family::Fla, 5);
    const ModelConfig& c = model->config;  // 2 layers, d 32, vocabulary 53
    const std::vector<int32_t> four = {1, 2, 3, 4};
    const std::vector<Tensor> one_layer(1, Tensor({4, c.d_model}));
    EXPECT_THROW(logit_lens(*model, one_layer, four, 3), Error);
    const std::vector<Tensor> wrong_width(2, Tensor({4, c.d_model - 1}));
    EXPECT_THROW(logit_lens(*model, wrong_width, four, 3), Error);
    const std::vector<Tensor> fine(2, Tensor({4, c.d_model}));
    const std::vector<int32_t> three = {1, 2, 3};
    EXPECT_THROW(logit_lens(*model, fine, three, 3), Error);
    const std::vector<int32_t> out_of_vocab = {1, 2, 3, c.vocab_size};
    EXPECT_THROW(logit_lens(*model, fine, out_of_vocab, 3), Error);
    EXPECT_EQ(logit_lens(*model, fine, four, 3).size(), 2u);
}

// `retnet inspect --lens`'s Ctrl-C: asked before each layer's readout; true before the second one
// ends the lens with Cancelled, never true gives the readings of a lens without the question.
TEST(LensCancel, AskedBeforeEachLayersReadout) {
    const std::shared_ptr<const Model> model = test::small_model(Family::Fla, 5);
    const ModelConfig& c = model->config;
    const std::vector<int32_t> four = {1, 2, 3, 4};
    Introspection probe;
    probe.want_layer_outputs = true;
    make_cpu_backend(model)->forward(four, ForwardOptions{}, &probe);
    int asked = 0;
    EXPECT_THROW(logit_lens(*model, probe.layer_outputs, four, 3, [&asked] { return ++asked == 2; }), Cancelled);
    EXPECT_EQ(asked, 2);
    asked = 0;
    const auto polled = logit_lens(*model, probe.layer_outputs, four, 3, [&asked] { return ++asked < 0; });
    EXPECT_EQ(asked, c.n_layers);
    const auto plain = logit_lens(*model, probe.layer_outputs, four, 3);
    ASSERT_EQ(polled.size(), plain.size());
    for (size_t l = 0; l < plain.size(); ++l)
        for (size_t t = 0; t < four.size(); ++t) {
            EXPECT_EQ(polled[l][t].next_prob, plain[l][t].next_prob);
            EXPECT_EQ(polled[l][t].top.front().id, plain[l][t].top.front().id);
        }
}

}  // namespace
