// SPDX-License-Identifier: GPL-3.0-or-later
// The training forward computes the same model as the inference engine: its logits match the
// naive double reference backend (parallel form) and the float CPU backend, on a random fla model
// and on the bundled default model loaded through load_model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "retnet/forward.h"
#include "retnet/model.h"
#include "retnet/tokenizer.h"
#include "retnet/train.h"

using namespace retnet;
using namespace retnet::train;

namespace {

double max_abs_diff(const std::vector<double>& a, const Tensor& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - static_cast<double>(b.data[i])));
    return m;
}

ModelConfig small_config(bool tied) {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 50;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.key_dim = 32;
    c.value_dim = 64;
    c.ffn_dim = 48;
    c.tie_embeddings = tied;
    return c;
}

}  // namespace

TEST(TrainConsistency, LogitsMatchTheReferenceBackend) {
    for (bool tied : {false, true}) {
        Model model = make_random_model(small_config(tied), 11);
        // Scale the 0.02 init up so that every layer changes the logits visibly.
        for (LayerWeights& l : model.weights.layers)
            for (Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
                for (float& x : t->data) x *= 10.0f;
        const ParamLayout layout = make_param_layout(model.config);
        const std::vector<float> flat = flatten_weights(model, layout);
        const std::vector<double> flat_d(flat.begin(), flat.end());
        const std::vector<int32_t> tokens = {3, 17, 42, 0, 9, 9, 31, 25, 49, 5, 12};
        std::vector<int32_t> targets(tokens.size(), 0);
        const BatchView batch{tokens.data(), targets.data(), 1, static_cast<int>(tokens.size())};
        std::vector<double> logits;
        loss_and_gradient<double>(model.config, layout, flat_d.data(), batch, nullptr, {}, &logits);
        LossOptions chunked;
        chunked.chunk = 4;
        std::vector<double> logits_chunked;
        loss_and_gradient<double>(model.config, layout, flat_d.data(), batch, nullptr, chunked, &logits_chunked);

        auto shared = std::make_shared<const Model>(std::move(model));
        auto reference = make_reference_backend(shared);
        const Tensor ref = reference->forward(tokens, ForwardOptions{});
        ASSERT_EQ(ref.numel(), static_cast<int64_t>(logits.size()));
        double scale = 0;
        for (float x : ref.data) scale = std::max(scale, std::abs(static_cast<double>(x)));
        const double err = max_abs_diff(logits, ref);
        const double err_chunked = max_abs_diff(logits_chunked, ref);
        std::printf("  training forward vs reference (%s): max |Δlogit| %.2e (parallel), %.2e (chunk 4), max |logit| %.2f\n",
                    tied ? "tied" : "untied", err, err_chunked, scale);
        // Both are double computations on the same float weights; the reference returns float
        // logits, so the difference is the float rounding of the logits: ≤ 2^-24 relative.
        EXPECT_LT(err, 1e-6 * std::max(1.0, scale));
        EXPECT_LT(err_chunked, 1e-6 * std::max(1.0, scale));
        EXPECT_GT(scale, 0.1);  // the comparison is not between near-zero logits

        // The float training forward against the float CPU backend.
        std::vector<float> logits_f;
        loss_and_gradient<float>(shared->config, layout, flat.data(), batch, nullptr, {}, &logits_f);
        auto cpu = make_cpu_backend(shared);
        const Tensor cpu_logits = cpu->forward(tokens, ForwardOptions{});
        double err_f = 0;
        for (size_t i = 0; i < logits_f.size(); ++i)
            err_f = std::max(err_f, std::abs(static_cast<double>(logits_f[i]) - cpu_logits.data[i]));
        // Two float computations in different orders: a few hundred roundings of 2^-24.
        EXPECT_LT(err_f, 1e-4 * std::max(1.0, scale));
    }
}

TEST(TrainConsistency, DefaultModelLoadsAndMatchesTheCpuBackend) {
    const std::string dir = std::string(RETNET_TEST_DATA_DIR) + "/../../resources/models/default";
    if (!std::filesystem::exists(dir + "/model.safetensors")) GTEST_SKIP() << "no default model";
    auto model = std::make_shared<const Model>(load_model(dir));
    const ParamLayout layout = make_param_layout(model->config);
    const std::vector<float> flat = flatten_weights(*model, layout);
    // Text through the model's own tokenizer, so the ids are valid for any vocabulary.
    std::vector<int32_t> tokens = {model->config.bos_token_id};
    for (int32_t id : Tokenizer::load(dir + "/tokenizer.model").encode("ROMEO:\nBut soft, what light through yonder window breaks?"))
        tokens.push_back(id);
    const std::vector<int32_t> targets(tokens.size(), 0);
    const BatchView batch{tokens.data(), targets.data(), 1, static_cast<int>(tokens.size())};
    std::vector<float> logits;
    loss_and_gradient<float>(model->config, layout, flat.data(), batch, nullptr, {}, &logits);
    const Tensor cpu = make_cpu_backend(model)->forward(tokens, ForwardOptions{});
    double err = 0, scale = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(logits[i]) - cpu.data[i]));
        scale = std::max(scale, std::abs(static_cast<double>(cpu.data[i])));
    }
    std::printf("  default model: training forward vs CPU backend max |Δlogit| %.2e (max |logit| %.1f)\n", err, scale);
    EXPECT_LT(err, 1e-4 * scale);
}
