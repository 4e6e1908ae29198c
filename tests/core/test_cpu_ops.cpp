// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU op library's float forwards against the fast CPU backend's own inline formulas, bit for
// bit: the backend can call the shared op (one RMSNorm, one rotary, one gate, one GLU for
// inference and training) without changing a logit. Gradients are checked in test_train_grad.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "retnet/cpu_ops.h"
#include "retnet/model.h"

using namespace retnet;

namespace {

std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// The backend's row RMSNorm: the sum in double, the factor rounded to float once.
void backend_rms_norm(float* x, int cols, const float* w, double eps) {
    double mean_sq = 0;
    for (int j = 0; j < cols; ++j) mean_sq += static_cast<double>(x[j]) * x[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(mean_sq / cols + eps));
    for (int j = 0; j < cols; ++j) x[j] = x[j] * inv * (w ? w[j] : 1.0f);
}

float backend_silu(float x) { return x / (1.0f + std::exp(-x)); }
float backend_gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

}  // namespace

TEST(CpuOps, RmsNormIsTheBackendsRowNormBitForBit) {
    const int rows = 130, cols = 37;  // > 64 rows: split over threads
    const std::vector<float> x = random_floats(static_cast<size_t>(rows * cols), 1, 3.0f);
    const std::vector<float> w = random_floats(static_cast<size_t>(cols), 2);
    for (const float* wp : {w.data(), static_cast<const float*>(nullptr)}) {
        std::vector<float> expected = x, in_place = x;
        for (int r = 0; r < rows; ++r) backend_rms_norm(expected.data() + r * cols, cols, wp, 1e-6);
        cpu::rmsnorm_forward<float>(in_place.data(), wp, rows, cols, 1e-6, in_place.data(), nullptr);
        EXPECT_EQ(in_place, expected);
    }
}

// fla's output as the backend writes it: each head's RMSNorm (own eps), then ⊙ silu(g).
TEST(CpuOps, HeadNormGateIsTheBackendsNormThenGateBitForBit) {
    const int rows = 9, H = 3, Dv = 8;
    const std::vector<float> o = random_floats(static_cast<size_t>(rows * H * Dv), 3, 2.0f);
    const std::vector<float> g = random_floats(o.size(), 4, 2.0f);
    const std::vector<float> w = random_floats(static_cast<size_t>(Dv), 5);
    std::vector<float> expected = o, y = o;
    for (int r = 0; r < rows * H; ++r) backend_rms_norm(expected.data() + r * Dv, Dv, w.data(), 1e-5);
    for (size_t i = 0; i < expected.size(); ++i) expected[i] *= backend_silu(g[i]);
    cpu::head_norm_gate_forward<float>(y.data(), g.data(), w.data(), rows, H, Dv, 1e-5, y.data(), nullptr);
    EXPECT_EQ(y, expected);
}

TEST(CpuOps, GluIsTheBackendsActivationTimesUpBitForBit) {
    const std::vector<float> a = random_floats(40000, 6, 3.0f), b = random_floats(40000, 7);
    for (Activation act : {Activation::Swish, Activation::Gelu}) {
        std::vector<float> expected(a.size()), h = a;
        for (size_t i = 0; i < a.size(); ++i)
            expected[i] = (act == Activation::Gelu ? backend_gelu(a[i]) : backend_silu(a[i])) * b[i];
        EXPECT_EQ(cpu::silu(a[3]), backend_silu(a[3]));
        EXPECT_EQ(cpu::gelu(a[3]), backend_gelu(a[3]));
        cpu::glu_forward<float>(h.data(), b.data(), static_cast<int64_t>(a.size()), act, h.data());
        EXPECT_EQ(h, expected);
    }
}

// The batched rotary at absolute positions equals the backend's per-vector rotation (float
// angle, float sin and cos) for both families' pair layouts.
TEST(CpuOps, RotaryIsTheBackendsPerVectorRotationBitForBit) {
    const int B = 2, T = 4, H = 2, Dk = 8;
    const int64_t pos0 = 1234;
    for (Family family : {Family::TorchScale, Family::Fla}) {
        const std::vector<float> theta = default_rotary_theta(family, Dk);
        const std::vector<float> x = random_floats(static_cast<size_t>(B * T * H * Dk), 8);
        std::vector<float> expected = x, y = x;
        const bool interleaved = family == Family::TorchScale;
        for (int r = 0; r < B * T; ++r)
            for (int h = 0; h < H; ++h) {
                float* v = expected.data() + (r * H + h) * Dk;
                const int64_t pos = pos0 + r % T;
                for (int i = 0; i < Dk / 2; ++i) {
                    const float angle = static_cast<float>(pos) * theta[static_cast<size_t>(i)];
                    const float c = std::cos(angle), s = std::sin(angle);
                    const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + Dk / 2;
                    const float xa = v[a], xb = v[b];
                    v[a] = xa * c - xb * s;
                    v[b] = xb * c + xa * s;
                }
            }
        cpu::rotary_forward<float>(y.data(), {B, T, H, Dk}, theta.data(), cpu::rotary_pairs(family), 1.0, pos0);
        EXPECT_EQ(y, expected) << family_name(family);
    }
}
