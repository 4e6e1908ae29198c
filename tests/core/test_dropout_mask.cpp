// SPDX-License-Identifier: GPL-3.0-or-later
// The dropout mask function shared by the CPU trainer and the CUDA kernels (retnet/dropout_mask.h):
// pinned to values computed independently (Python, 64-bit wrap-around arithmetic), so a change
// that would make checkpoints resume with other masks, or the two trainers disagree, fails here.
#include <gtest/gtest.h>

#include <string>

#include "retnet/dropout_mask.h"

using namespace retnet::train;

TEST(DropoutMask, SplitMix64IsThePublishedGenerator) {
    // The first two outputs of SplitMix64 seeded with 0 (Steele, Lea & Flood; Vigna's reference code).
    EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFULL);
    EXPECT_EQ(splitmix64(0x9E3779B97F4A7C15ULL), 0x6E789E6AA1B965F4ULL);
}

TEST(DropoutMask, MasksMatchAnIndependentComputation) {
    const uint64_t base = dropout_site_base(12345, 3);
    EXPECT_EQ(base, 0xAEECE0E0CBB13311ULL);
    std::string pattern;
    for (int64_t i = 0; i < 64; ++i) pattern += dropout_drops(base, i, 0.3) ? '1' : '0';
    EXPECT_EQ(pattern, "0000001000010010100010010001001110111000001001001101000001100000");
    // The trainer's seed of step 5 with --seed 1 (trainer.cpp: seed·φ64 + step), embedding site.
    const uint64_t step_seed = 1ULL * 0x9E3779B97F4A7C15ULL + 5;
    const uint64_t embed = dropout_site_base(step_seed, dropout_site_embedding);
    EXPECT_EQ(embed, 0x03AB01E6E737AD05ULL);
    pattern.clear();
    for (int64_t i = 0; i < 64; ++i) pattern += dropout_drops(embed, i, 0.1) ? '1' : '0';
    EXPECT_EQ(pattern, "0000000000001010000000110000100000001010000000000010001000100000");
}

TEST(DropoutMask, SitesAreDistinctAndTheRateIsP) {
    EXPECT_EQ(dropout_site_embedding, 0u);
    EXPECT_EQ(dropout_site_retention(0), 1u);
    EXPECT_EQ(dropout_site_ffn(0), 2u);
    EXPECT_EQ(dropout_site_retention(4), 9u);
    EXPECT_EQ(dropout_site_ffn(4), 10u);
    const int64_t n = 1000000;
    for (double p : {0.1, 0.5}) {
        const uint64_t a = dropout_site_base(99, dropout_site_retention(2)), b = dropout_site_base(99, dropout_site_ffn(2));
        int64_t dropped = 0, differ = 0;
        for (int64_t i = 0; i < n; ++i) {
            dropped += dropout_drops(a, i, p);
            differ += dropout_drops(a, i, p) != dropout_drops(b, i, p);
        }
        // Binomial: σ = √(p(1−p)/n) ≤ 5e-4; 3e-3 is six of them.
        EXPECT_NEAR(static_cast<double>(dropped) / n, p, 3e-3) << p;
        // Independent sites disagree on a fraction 2p(1−p) of the elements.
        EXPECT_NEAR(static_cast<double>(differ) / n, 2 * p * (1 - p), 3e-3) << p;
    }
    // p = 0 drops nothing (u ≥ 0 always).
    for (int64_t i = 0; i < 1000; ++i) EXPECT_FALSE(dropout_drops(dropout_site_base(1, 1), i, 0.0));
}
