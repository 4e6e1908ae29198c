// SPDX-License-Identifier: GPL-3.0-or-later
// retention_reach: hand-computed values, the invariances it relies on (row scaling, signs), the
// decay-only limit, and the scores of real models' heads.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/retention_reach.h"
#include "test_models.h"

using namespace retnet;

TEST(RetentionReach, HandComputedExample) {
    // gamma 1/2; entries above the diagonal (99) are not scores and must be ignored.
    const std::vector<float> s{1, 99, 99,  //
                               1, 1, 99,   //
                               0, 2, -2};
    const HeadReach r = retention_reach(s, 3, 0.5);
    // Rows: 0, (1·1)/2, (2·1)/4 → mean 1/3. Decay alone: 0, 0.5/1.5, (0.5 + 2·0.25)/1.75 → 19/63.
    EXPECT_EQ(r.queries, 3);
    EXPECT_NEAR(r.mean_distance, 1.0 / 3.0, 1e-15);
    EXPECT_NEAR(r.decay_only_distance, 19.0 / 63.0, 1e-15);
}

TEST(RetentionReach, ConstantContentGivesTheDecayOnlyValueWhateverTheRowScaleAndSigns) {
    const int T = 50;
    const double gamma = 0.9;
    std::vector<float> s(size_t(T) * T, 0.0f);
    for (int n = 0; n < T; ++n)
        for (int m = 0; m <= n; ++m)  // torchscale-like positive row factor, alternating signs
            s[size_t(n) * T + m] = float((m % 2 ? -1.0 : 1.0) * std::pow(gamma, n - m) * (1.0 + 0.1 * n));
    const HeadReach r = retention_reach(s, T, gamma);
    EXPECT_EQ(r.queries, T);
    EXPECT_NEAR(r.mean_distance, r.decay_only_distance, 1e-6 * r.decay_only_distance);
    // Far from the start each row tends to γ/(1 − γ) = 9; the average over rows 0…49 is below it.
    EXPECT_GT(r.decay_only_distance, 5.0);
    EXPECT_LT(r.decay_only_distance, 9.0);
}

TEST(RetentionReach, DiagonalOnlyReadsNothingBackAndEmptyRowsAreSkipped) {
    const int T = 4;
    std::vector<float> s(size_t(T) * T, 0.0f);
    for (int n = 0; n < T; ++n) s[size_t(n) * T + n] = 0.5f;
    s[size_t(2) * T + 2] = 0.0f;  // row 2 has no mass
    const HeadReach r = retention_reach(s, T, 0.8);
    EXPECT_EQ(r.queries, 3);
    EXPECT_EQ(r.mean_distance, 0.0);
    EXPECT_GT(r.decay_only_distance, 0.0);
    EXPECT_EQ(retention_reach({}, 0, 0.5).queries, 0);
}

TEST(RetentionReach, RejectsBadShapesAndDecays) {
    const std::vector<float> s(6, 1.0f);
    EXPECT_THROW(retention_reach(s, 2, 0.5), Error);
    const std::vector<float> ok(4, 1.0f);
    EXPECT_THROW(retention_reach(ok, 2, 0.0), Error);
    EXPECT_THROW(retention_reach(ok, 2, 1.5), Error);
    EXPECT_THROW(retention_reach(ok, 2, std::nan("")), Error);
    const std::vector<float> log_decay{-0.1f, -0.2f};
    EXPECT_THROW(retention_reach(Tensor({3, 2, 2}), log_decay), Error);  // 3 heads of scores, 2 decays
    EXPECT_THROW(retention_reach(Tensor({2, 2, 3}), log_decay), Error);  // not square
    EXPECT_THROW(retention_reach(Tensor({4, 4}), log_decay), Error);
}

// On real heads the measured reach lies in [0, T − 1] and the decay-only reach grows with γ
// (heads are ordered by increasing γ in both families).
TEST(RetentionReach, RealModelsHeads) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        auto model = test::small_model(family, 3);
        auto backend = make_cpu_backend(model);
        std::vector<int32_t> tokens;
        for (int t = 0; t < 40; ++t) tokens.push_back((7 * t + 3) % model->config.vocab_size);
        const int T = int(tokens.size()), H = model->config.n_heads;
        Introspection probe;
        probe.score_layer = 1;
        probe.score_head = 0;
        probe.want_all_head_scores = true;
        backend->forward(tokens, {}, &probe);
        const std::vector<HeadReach> heads = retention_reach(probe.scores, model->weights.log_decay);
        ASSERT_EQ(heads.size(), size_t(H));
        double previous = -1;
        for (int h = 0; h < H; ++h) {
            const HeadReach& r = heads[size_t(h)];
            // The per-layer form is the single-head function on head h's block and γ.
            const HeadReach single = retention_reach(
                std::span<const float>(probe.scores.data).subspan(size_t(h) * T * T, size_t(T) * T), T,
                std::exp(double(model->weights.log_decay[size_t(h)])));
            EXPECT_EQ(r.mean_distance, single.mean_distance);
            EXPECT_EQ(r.decay_only_distance, single.decay_only_distance);
            EXPECT_EQ(r.queries, T) << family_name(family) << " head " << h;
            EXPECT_GE(r.mean_distance, 0.0);
            EXPECT_LE(r.mean_distance, T - 1.0);
            EXPECT_GT(r.decay_only_distance, previous) << family_name(family) << " head " << h;
            previous = r.decay_only_distance;
        }
    }
}
