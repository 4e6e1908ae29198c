// SPDX-License-Identifier: GPL-3.0-or-later
// The family rules against their definitions (docs/spec.md §2.3–2.6, §3.3, §4).
#include <gtest/gtest.h>

#include <cmath>

#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "retnet/forward.h"
#include "retnet/model.h"
#include "test_models.h"

namespace retnet {
namespace {

TEST(FamilyRules, ScalesSitWhereEachFamilyPutsThem) {
    ModelConfig ts = test::small_config(Family::TorchScale), fla = test::small_config(Family::Fla);
    const float inv = 1.0f / std::sqrt(8.0f);  // Dk = 8
    EXPECT_EQ(qk_scale(ts).q, 1.0f);
    EXPECT_EQ(qk_scale(ts).k, inv);
    EXPECT_EQ(qk_scale(fla).q, inv);
    EXPECT_EQ(qk_scale(fla).k, 1.0f);
    EXPECT_FLOAT_EQ(embedding_scale(ts), std::sqrt(32.0f));
    EXPECT_EQ(embedding_scale(fla), 1.0f);
}

TEST(FamilyRules, RotaryPairsOfEachFamily) {
    EXPECT_EQ(rotary_pairs(Family::TorchScale), RotaryPairs::Interleaved);
    EXPECT_EQ(rotary_pairs(Family::Fla), RotaryPairs::HalfSplit);
    EXPECT_EQ(rotary_angle(3, 0.5f), 1.5f);
}

TEST(FamilyRules, RowSumsAreTheGeometricSeries) {
    const double gamma = 0.96875;
    EXPECT_DOUBLE_EQ(next_row_sum(0.0, gamma), 1.0);
    for (int n : {1, 7, 64, 1000})
        EXPECT_NEAR(advance_row_sum(0.0, gamma, n), (1.0 - std::pow(gamma, n)) / (1.0 - gamma), 1e-12 * n);
    EXPECT_DOUBLE_EQ(advance_row_sum(3.5, gamma, 0), 3.5);
}

// torchscale keeps S/√r_n: stepping with its coefficients equals the raw recurrence scaled.
TEST(FamilyRules, TorchscaleStepsKeepTheRawStateOverRootRowSum) {
    const double gamma = 0.9;
    double r = 0, raw = 0, scaled = 0;
    for (int t = 0; t < 50; ++t) {
        const double kv = std::sin(t + 1.0);
        raw = gamma * raw + kv;
        const StepCoefficients step = recurrent_step(Family::TorchScale, gamma, r);
        scaled = step.decay * scaled + step.inject * kv;
        EXPECT_NEAR(scaled, raw / std::sqrt(r), 1e-6 * (1 + std::abs(raw)));
    }
    EXPECT_NEAR(r, advance_row_sum(0.0, gamma, 50), 1e-12);
    double unused = 5;
    const StepCoefficients fla = recurrent_step(Family::Fla, gamma, unused);
    EXPECT_FLOAT_EQ(fla.decay, 0.9f);
    EXPECT_EQ(fla.inject, 1.0f);
    EXPECT_EQ(unused, 5);
}

TEST(FamilyRules, TorchscaleParallelFormStartsFromAnEmptyState) {
    const ModelConfig ts = test::small_config(Family::TorchScale), fla = test::small_config(Family::Fla);
    EXPECT_NO_THROW(check_form_start(ts, Form::Parallel, 0));
    EXPECT_NO_THROW(check_form_start(ts, Form::Chunkwise, 5));
    EXPECT_NO_THROW(check_form_start(fla, Form::Parallel, 5));
    EXPECT_THROW(check_form_start(ts, Form::Parallel, 5), Error);
}

TEST(FamilyRules, DecayPowersAreRoundedOnce) {
    const std::vector<float> p = decay_powers(0.5, 3);
    EXPECT_EQ(p, (std::vector<float>{1.0f, 0.5f, 0.25f, 0.125f}));
    const std::vector<double> gamma = head_decays(default_log_decay(2));
    EXPECT_NEAR(gamma[0], 1.0 - std::pow(2.0, -5), 1e-7);
    EXPECT_NEAR(gamma[1], 1.0 - std::pow(2.0, -6), 1e-7);
}

}  // namespace
}  // namespace retnet
