// SPDX-License-Identifier: GPL-3.0-or-later
// The decoding fast path: the few-row GEMV, the tensor-core projections of up to 64 rows and the
// batched decode step against naive double twins on awkward shapes, the decode step bit for bit
// against the general recurrent path it replaces, and whole models decoding through captured CUDA
// graphs bit for bit against the same steps launched one by one (and within the model tolerance of
// the double reference).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <random>
#include <tuple>

#include "cuda_test_util.h"
#include "decode_scenario.h"
#include "backend_cuda_internal.h"
#include "decode_retention.h"
#include "gemv.h"
#include "l2_prefetch.h"
#include "naive_ops.h"
#include "ops.h"
#include "retnet/forward.h"
#include "retnet/model.h"
#include "skinny_gemm.h"

namespace retnet::cuda::test {
namespace {

// fp32 sums of K ≤ 2052 products of O(1) values: ~K·2⁻²⁴ relative in the worst case, far below.
constexpr double kF32Tol = 1e-5;

struct GemvCase {
    int M, K;
    std::vector<int> N;  // one job per entry
    bool bf16;
};

class GemvTest : public CudaTest, public ::testing::WithParamInterface<GemvCase> {};

TEST_P(GemvTest, MatchesNaiveLinearForEveryJob) {
    const GemvCase& c = GetParam();
    ASSERT_TRUE(gemv_supports(c.M, c.K, c.bf16));
    const auto x = random_vector(static_cast<size_t>(c.M) * c.K, 1);
    auto dx = to_device(x, stream());
    std::vector<GemvJob> jobs;
    std::vector<DeviceBuffer<float>> w32, y;
    std::vector<DeviceBuffer<__nv_bfloat16>> w16;
    std::vector<std::vector<float>> weights, y0;
    for (size_t j = 0; j < c.N.size(); ++j) {
        const int N = c.N[j];
        std::vector<float> w = random_vector(static_cast<size_t>(N) * c.K, 10 + j);
        if (c.bf16)
            for (float& v : w) v = round_to_bf16(v);
        weights.push_back(w);
        y0.push_back(random_vector(static_cast<size_t>(c.M) * N, 20 + j));
        y.push_back(to_device(y0.back(), stream()));
        if (c.bf16) {
            std::vector<__nv_bfloat16> h(w.size());
            for (size_t i = 0; i < w.size(); ++i) h[i] = __float2bfloat16_rn(w[i]);
            w16.push_back(to_device(h, stream()));
        } else {
            w32.push_back(to_device(w, stream()));
        }
    }
    for (size_t j = 0; j < c.N.size(); ++j) {
        const void* w = c.bf16 ? static_cast<const void*>(w16[j].get()) : w32[j].get();
        jobs.push_back({w, y[j].get(), c.N[j], j % 2 == 1});  // odd jobs accumulate
    }
    launch_gemv(dx.get(), c.M, c.K, jobs.data(), static_cast<int>(jobs.size()), c.bf16, stream());
    for (size_t j = 0; j < c.N.size(); ++j) {
        naive::Vec ref = naive::linear(x, weights[j], c.M, c.N[j], c.K);
        if (j % 2 == 1)
            for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[j][i];
        EXPECT_LT(rel_max_error(to_host(y[j], stream()), ref), kF32Tol) << "job " << j;
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemvTest,
                         ::testing::Values(GemvCase{1, 8, {1}, true}, GemvCase{1, 4, {3}, false},
                                           GemvCase{3, 40, {7, 33, 5}, false}, GemvCase{8, 136, {9, 64}, true},
                                           GemvCase{1, 2048, {257, 31, 100, 3}, true},
                                           GemvCase{5, 2052, {65, 2}, false}, GemvCase{2, 4096, {40}, true}));

// The fused norm and GLU against the ops they replace, written naively in double. K 96: one round
// per row; 1544 and 2056: rows of several rounds, which few rows split among warps (uneven parts).
TEST_F(CudaTest, GemvFusedNormAndGluMatchNaive) {
    for (int K : {96, 1544, 2056})
    for (bool bf16 : {false, true})
        for (int M : {1, 3, 4}) {
            const int N = 37;
            const auto x = random_vector(static_cast<size_t>(M) * K, 1);
            const auto norm_w = random_vector(static_cast<size_t>(K), 3, 0.5f, 1.5f);
            auto w_act = random_vector(static_cast<size_t>(N) * K, 4), w_lin = random_vector(w_act.size(), 5);
            if (bf16)
                for (auto* w : {&w_act, &w_lin})
                    for (float& v : *w) v = round_to_bf16(v);
            auto upload_weight = [&](const std::vector<float>& w) {
                std::vector<__nv_bfloat16> h(w.size());
                for (size_t i = 0; i < w.size(); ++i) h[i] = __float2bfloat16_rn(w[i]);
                return std::make_pair(to_device(w, stream()), to_device(h, stream()));
            };
            auto [act32, act16] = upload_weight(w_act);
            auto [lin32, lin16] = upload_weight(w_lin);
            const void* act = bf16 ? static_cast<const void*>(act16.get()) : act32.get();
            const void* lin = bf16 ? static_cast<const void*>(lin16.get()) : lin32.get();
            auto dx = to_device(x, stream()), dw = to_device(norm_w, stream());
            DeviceBuffer<float> y(static_cast<size_t>(M) * N);
            const std::string what = std::string(bf16 ? "bf16" : "fp32") + " M=" + std::to_string(M) + " K=" + std::to_string(K);

            // RMSNorm → GLU: y = silu(x̂·W_actᵀ) ⊙ (x̂·W_linᵀ)
            GemvInputTransform norm{GemvInput::RmsNorm, dw.get(), 1e-5f};
            const GemvJob pair[2] = {{act, y.get(), N, false}, {lin, nullptr, N, false}};
            launch_gemv(dx.get(), M, K, pair, 2, bf16, stream(), norm, GemvGlu::Swish);
            const naive::Vec xn = naive::rmsnorm(x, norm_w, M, K, 1e-5);
            const std::vector<float> xn_f(xn.begin(), xn.end());
            const naive::Vec a = naive::linear(xn_f, w_act, M, N, K), b = naive::linear(xn_f, w_lin, M, N, K);
            naive::Vec ref(a.size());
            for (size_t i = 0; i < a.size(); ++i) ref[i] = naive::silu(a[i]) * b[i];
            EXPECT_LT(rel_max_error(to_host(y, stream()), ref), kF32Tol) << what << " norm + glu";

            // RMSNorm → one projection (the q, k, v, g launch)
            const GemvJob single[1] = {{act, y.get(), N, false}};
            launch_gemv(dx.get(), M, K, single, 1, bf16, stream(), norm);
            EXPECT_LT(rel_max_error(to_host(y, stream()), a), kF32Tol) << what << " norm";

        }
}

TEST(GemvLimits, RefusesShapesItCannotRead) {
    EXPECT_FALSE(gemv_supports(9, 64, false));
    EXPECT_FALSE(gemv_supports(0, 64, false));
    EXPECT_FALSE(gemv_supports(1, 6, true));
    EXPECT_FALSE(gemv_supports(1, 6, false));
    EXPECT_TRUE(gemv_supports(8, 8, true));
    EXPECT_TRUE(gemv_supports_fusion(4, 2048, true));
    EXPECT_FALSE(gemv_supports_fusion(5, 64, true));
    EXPECT_FALSE(gemv_supports_fusion(4, 4096, true));  // 64 KiB of x̂: over the shared-memory budget
}

struct SkinnyCase {
    int M, K;
    std::vector<int> N;  // one job per entry
};

std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
    std::vector<__nv_bfloat16> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = __float2bfloat16_rn(v[i]);
    return h;
}

std::vector<float> rounded_to_bf16(std::vector<float> v) {
    for (float& x : v) x = round_to_bf16(x);
    return v;
}

class SkinnyGemmTest : public CudaTest, public ::testing::WithParamInterface<SkinnyCase> {};

// Against the product in double of the same bf16-rounded operands: bf16 products are exact in
// fp32, so only the fp32 sums differ (kF32Tol). Each job's y has one guard row past M that must
// stay as it was: rows past M are padding of the 16-row tile, never written.
TEST_P(SkinnyGemmTest, MatchesNaiveLinearForEveryJob) {
    const SkinnyCase& c = GetParam();
    ASSERT_TRUE(skinny_gemm_supports(c.M, c.K));
    const auto x = rounded_to_bf16(random_vector(static_cast<size_t>(c.M) * c.K, 1));
    auto dx = to_device(to_bf16(x), stream());
    std::vector<GemvJob> jobs;
    std::vector<DeviceBuffer<float>> y;
    std::vector<DeviceBuffer<__nv_bfloat16>> w16;
    std::vector<std::vector<float>> weights, y0;
    for (size_t j = 0; j < c.N.size(); ++j) {
        const int N = c.N[j];
        weights.push_back(rounded_to_bf16(random_vector(static_cast<size_t>(N) * c.K, 10 + j)));
        w16.push_back(to_device(to_bf16(weights.back()), stream()));
        y0.push_back(random_vector(static_cast<size_t>(c.M + 1) * N, 20 + j));
        y.push_back(to_device(y0.back(), stream()));
        jobs.push_back({w16.back().get(), y.back().get(), N, j % 2 == 1});  // odd jobs accumulate
    }
    launch_skinny_gemm(dx.get(), c.M, c.K, jobs.data(), static_cast<int>(jobs.size()), stream());
    for (size_t j = 0; j < c.N.size(); ++j) {
        const size_t rows = static_cast<size_t>(c.M) * c.N[j];
        naive::Vec ref = naive::linear(x, weights[j], c.M, c.N[j], c.K);
        if (j % 2 == 1)
            for (size_t i = 0; i < ref.size(); ++i) ref[i] += y0[j][i];
        const std::vector<float> got = to_host(y[j], stream());
        EXPECT_LT(rel_max_error(std::vector<float>(got.begin(), got.begin() + rows), ref), kF32Tol) << "job " << j;
        EXPECT_TRUE(std::equal(got.begin() + rows, got.end(), y0[j].begin() + rows)) << "job " << j << " guard row";
    }
}

// M: one row, 9 (one past the GEMV), a whole tile; K: one partial chunk of 32, off 32, 4096 and
// 2816 (split between warps, parts of uneven length); N: off the 8-row tiles. The last three have
// 16-row tiles enough for every resident block (the weights-as-A shape; 1,000 and more of them,
// past what any GPU holds at once), N off 16 and M on either side of one n-tile of X.
INSTANTIATE_TEST_SUITE_P(Shapes, SkinnyGemmTest,
                         ::testing::Values(SkinnyCase{1, 8, {1}}, SkinnyCase{9, 40, {7, 33, 5}},
                                           SkinnyCase{16, 136, {9, 64}}, SkinnyCase{13, 2056, {257, 31, 100, 3}},
                                           SkinnyCase{11, 4096, {40}}, SkinnyCase{16, 2816, {24, 17}},
                                           SkinnyCase{16, 2048, {130, 1}}, SkinnyCase{16, 4096, {2048}},
                                           SkinnyCase{10, 8, {33}}, SkinnyCase{16, 72, {16000, 387}},
                                           SkinnyCase{5, 40, {9000, 7000, 13}}, SkinnyCase{12, 1032, {16392}}));

// bf16 values as their bits (compared exactly).
std::vector<uint16_t> bf16_bits(const std::vector<__nv_bfloat16>& values) {
    std::vector<uint16_t> bits(values.size());
    std::memcpy(bits.data(), values.data(), values.size() * sizeof(uint16_t));
    return bits;
}

// The GLU of two weights in one launch against the act and lin products in double; with a bf16
// output, bit for bit the fp32 output's conversion.
TEST_F(CudaTest, SkinnyGemmGluMatchesNaive) {
    for (int K : {40, 2048, 4104})
        for (int M : {9, 12, 16})
            for (GemvGlu kind : {GemvGlu::Swish, GemvGlu::Gelu}) {
                const int N = K == 40 ? 16390 : 37;  // 16-row tiles for every resident block, or 8-row ones
                const auto x = rounded_to_bf16(random_vector(static_cast<size_t>(M) * K, 1));
                const auto w_act = rounded_to_bf16(random_vector(static_cast<size_t>(N) * K, 4));
                const auto w_lin = rounded_to_bf16(random_vector(w_act.size(), 5));
                auto dx = to_device(to_bf16(x), stream());
                auto act = to_device(to_bf16(w_act), stream()), lin = to_device(to_bf16(w_lin), stream());
                DeviceBuffer<float> y(static_cast<size_t>(M) * N);
                const GemvJob pair[2] = {{act.get(), y.get(), N, false}, {lin.get(), nullptr, N, false}};
                launch_skinny_gemm(dx.get(), M, K, pair, 2, stream(), kind);
                const naive::Vec a = naive::linear(x, w_act, M, N, K), b = naive::linear(x, w_lin, M, N, K);
                naive::Vec ref(a.size());
                for (size_t i = 0; i < a.size(); ++i)
                    ref[i] = (kind == GemvGlu::Gelu ? naive::gelu(a[i]) : naive::silu(a[i])) * b[i];
                const std::string what = "M=" + std::to_string(M) + " K=" + std::to_string(K) +
                                         (kind == GemvGlu::Gelu ? " gelu" : " swish");
                EXPECT_LT(rel_max_error(to_host(y, stream()), ref), kF32Tol) << what;
                // The same in bf16 alone (y untouched): the fp32 result rounded as the conversion rounds it.
                DeviceBuffer<__nv_bfloat16> y16(y.size()), converted(y.size());
                DeviceBuffer<float> untouched(y.size());
                RETNET_CUDA_CHECK(cudaMemsetAsync(untouched.get(), 0x7f, untouched.bytes(), stream()));
                const GemvJob pair16[2] = {{act.get(), untouched.get(), N, false}, {lin.get(), nullptr, N, false}};
                launch_skinny_gemm(dx.get(), M, K, pair16, 2, stream(), kind, y16.get());
                launch_float_to_bf16(y.get(), converted.get(), static_cast<int64_t>(y.size()), stream());
                EXPECT_EQ(bf16_bits(to_host(y16, stream())), bf16_bits(to_host(converted, stream()))) << what;
                std::vector<float> filled(y.size());
                std::memset(filled.data(), 0x7f, filled.size() * sizeof(float));
                EXPECT_EQ(to_host(untouched, stream()), filled) << what;
            }
}

// The norm formed inside the skinny GEMM's launch (x̂ staged in shared memory) against the norm's own
// launch writing bf16 rows and the GEMM reading them: the same x̂ bits, the same tiles and split, so
// the same sums, bit for bit. Rows of different sizes (each its own scale), a norm weight or none,
// several jobs (one accumulating), the GLU in fp32 and in bf16 alone, 8- and 16-row tiles (N 16390
// gives 16-row tiles to every resident block), M from 1 to 16, K from one vector to the most it takes (2048)
// and off 256 (a thread's last column past the row).
TEST_F(CudaTest, SkinnyGemmWithItsNormEqualsTheNormThenTheGemm) {
    struct Case {
        int M, K;
        std::vector<int> N;
        GemvGlu glu;
        bool bf16_glu, weighted;
    };
    const Case cases[] = {{1, 8, {3}, GemvGlu::None, false, true},           {2, 40, {7, 33, 5}, GemvGlu::None, false, false},
                          {9, 2048, {130, 1}, GemvGlu::None, false, true},   {16, 2048, {16390}, GemvGlu::None, false, true},
                          {16, 2040, {37, 37}, GemvGlu::Swish, false, true}, {12, 1544, {40, 40}, GemvGlu::Gelu, true, true},
                          {16, 2048, {16390, 16390}, GemvGlu::Swish, true, false}, {5, 1032, {2048}, GemvGlu::None, false, true}};
    for (const Case& c : cases) {
        const std::string what = "M=" + std::to_string(c.M) + " K=" + std::to_string(c.K) + " jobs " +
                                 std::to_string(c.N.size()) + (c.glu != GemvGlu::None ? " glu" : "");
        ASSERT_TRUE(skinny_gemm_fuses_norm(c.M, c.K)) << what;
        std::vector<float> x = random_vector(static_cast<size_t>(c.M) * c.K, 1);
        for (int m = 0; m < c.M; ++m)  // rows from 1e-3 to 1e3 in size: each its own scale
            for (int k = 0; k < c.K; ++k) x[static_cast<size_t>(m) * c.K + k] *= std::pow(10.0f, static_cast<float>(m % 7 - 3));
        const auto norm_w = random_vector(static_cast<size_t>(c.K), 3, 0.5f, 1.5f);
        auto dx = to_device(x, stream()), dnorm = to_device(norm_w, stream());
        const float* weight = c.weighted ? dnorm.get() : nullptr;
        std::vector<DeviceBuffer<__nv_bfloat16>> w16;
        std::vector<std::vector<float>> y0;
        for (size_t j = 0; j < c.N.size(); ++j) {
            w16.push_back(to_device(to_bf16(random_vector(static_cast<size_t>(c.N[j]) * c.K, 10 + j)), stream()));
            y0.push_back(random_vector(static_cast<size_t>(c.M) * c.N[j], 20 + j));
        }
        // one run: its outputs (fp32 y of each job, then the GLU's bf16 rows) as floats
        const auto run = [&](bool fused) {
            std::vector<DeviceBuffer<float>> y;
            std::vector<GemvJob> jobs;
            for (size_t j = 0; j < c.N.size(); ++j) {
                y.push_back(to_device(y0[j], stream()));
                const bool accumulate = c.glu == GemvGlu::None && j % 2 == 1;
                jobs.push_back({w16[j].get(), c.glu != GemvGlu::None && j == 1 ? nullptr : y.back().get(), c.N[j], accumulate});
            }
            DeviceBuffer<__nv_bfloat16> glu16(c.bf16_glu ? static_cast<size_t>(c.M) * c.N[0] : 1);
            __nv_bfloat16* glu_out = c.bf16_glu ? glu16.get() : nullptr;
            if (fused) {
                launch_skinny_gemm_normed({dx.get(), weight, 1e-6f}, c.M, c.K, jobs.data(), static_cast<int>(jobs.size()),
                                          stream(), c.glu, glu_out);
            } else {
                DeviceBuffer<__nv_bfloat16> rows(static_cast<size_t>(c.M) * c.K);
                launch_rmsnorm_bf16(dx.get(), weight, rows.get(), c.M, c.K, 1e-6f, stream());
                launch_skinny_gemm(rows.get(), c.M, c.K, jobs.data(), static_cast<int>(jobs.size()), stream(), c.glu,
                                   glu_out);
                sync();  // before rows go
            }
            std::vector<float> all;
            for (const auto& out : y) {
                const std::vector<float> h = to_host(out, stream());
                all.insert(all.end(), h.begin(), h.end());
            }
            if (c.bf16_glu) {
                const std::vector<uint16_t> bits = bf16_bits(to_host(glu16, stream()));
                all.insert(all.end(), bits.begin(), bits.end());
            }
            return all;
        };
        const std::vector<float> separate = run(false), fused = run(true);
        ASSERT_EQ(separate.size(), fused.size()) << what;
        EXPECT_EQ(0, std::memcmp(separate.data(), fused.data(), separate.size() * sizeof(float))) << what;
        EXPECT_NE(separate, std::vector<float>(separate.size(), 0.0f)) << what;
    }
    EXPECT_TRUE(skinny_gemm_fuses_norm(16, 2048));
    EXPECT_FALSE(skinny_gemm_fuses_norm(16, 2056));  // a thread's columns of a row held in registers: up to 2048
    EXPECT_FALSE(skinny_gemm_fuses_norm(17, 64));
    EXPECT_FALSE(skinny_gemm_fuses_norm(2, 12));
}

TEST(SkinnyGemmLimits, RefusesShapesItCannotRead) {
    EXPECT_FALSE(skinny_gemm_supports(17, 64));
    EXPECT_FALSE(skinny_gemm_supports(0, 64));
    EXPECT_FALSE(skinny_gemm_supports(16, 12));
    EXPECT_TRUE(skinny_gemm_supports(16, 8));
}

struct DecodeCase {
    int N, H, Dk, Dv;
    bool interleaved, per_sequence;
};

class DecodeRetentionTest : public CudaTest, public ::testing::WithParamInterface<DecodeCase> {
protected:
    std::vector<int64_t> positions() const {
        std::vector<int64_t> p;
        for (int n = 0; n < GetParam().N; ++n) p.push_back(n == 0 ? 0 : 17 * n + (n == 2 ? 100000 : 0));
        return p;
    }
    // What a decoding step forms once for all its layers' retention launches.
    DeviceBuffer<double2> rotary_angles(const DeviceBuffer<int64_t>& positions, const DeviceBuffer<float>& theta) {
        const DecodeCase& c = GetParam();
        DeviceBuffer<double2> angles(static_cast<size_t>(c.N) * (c.Dk / 2));
        launch_rotary_angles(positions.get(), theta.get(), c.N, c.Dk / 2, angles.get(), stream());
        return angles;
    }
};

// Against the math in double: rotate, S ← aS + b k vᵀ, o = qᵀ S, per sequence and head.
TEST_P(DecodeRetentionTest, MatchesNaiveStepFromNonZeroStates) {
    const DecodeCase& c = GetParam();
    const size_t qk = static_cast<size_t>(c.N) * c.H * c.Dk, vv = static_cast<size_t>(c.N) * c.H * c.Dv;
    const size_t state = static_cast<size_t>(c.H) * c.Dk * c.Dv;
    const auto q = random_vector(qk, 1), k = random_vector(qk, 2), v = random_vector(vv, 3);
    const auto theta = random_vector(static_cast<size_t>(c.Dk / 2), 4, 0.0f, 1.0f);
    const size_t n_coef = c.per_sequence ? static_cast<size_t>(c.N) * c.H : static_cast<size_t>(c.H);
    const auto coef_a = random_vector(n_coef, 5, 0.5f, 1.0f), coef_b = random_vector(n_coef, 6, 0.5f, 2.0f);
    std::vector<std::vector<float>> S0;
    std::vector<DeviceBuffer<float>> dS;
    std::vector<float*> state_ptrs;
    for (int n = 0; n < c.N; ++n) {
        S0.push_back(random_vector(state, 30 + n));
        dS.push_back(to_device(S0.back(), stream()));
        state_ptrs.push_back(dS.back().get());
    }
    auto dq = to_device(q, stream()), dk = to_device(k, stream()), dv = to_device(v, stream());
    auto dtheta = to_device(theta, stream()), da = to_device(coef_a, stream()), db = to_device(coef_b, stream());
    auto dpos = to_device(positions(), stream());
    auto dangles = rotary_angles(dpos, dtheta);
    auto dptr = to_device(state_ptrs, stream());
    DeviceBuffer<float> d_o(static_cast<size_t>(c.H) * c.N * c.Dv), dnorm(static_cast<size_t>(c.N) * c.H);
    dnorm.zero(stream());
    DecodeRetentionArgs args;
    args.q = dq.get(), args.k = dk.get(), args.v = dv.get(), args.states = dptr.get(), args.angles = dangles.get();
    args.q_scale = 0.5f, args.k_scale = 1.25f, args.interleaved = c.interleaved;
    args.coef_a = da.get(), args.coef_b = db.get(), args.coef_per_sequence = c.per_sequence;
    args.o = d_o.get(), args.norms_sq = dnorm.get(), args.N = c.N, args.H = c.H, args.Dk = c.Dk, args.Dv = c.Dv;
    launch_decode_retention(args, stream());
    const auto got_o = to_host(d_o, stream()), got_norm = to_host(dnorm, stream());

    std::vector<double> ref_o(got_o.size()), ref_norm(got_norm.size());
    for (int n = 0; n < c.N; ++n) {
        const std::vector<float> q_n(q.begin() + n * c.H * c.Dk, q.begin() + (n + 1) * c.H * c.Dk);
        const std::vector<float> k_n(k.begin() + n * c.H * c.Dk, k.begin() + (n + 1) * c.H * c.Dk);
        const int64_t pos = positions()[static_cast<size_t>(n)];
        const naive::Vec qr = naive::rotary(q_n, theta, 1, 1, c.H, c.Dk, pos, 0.5, c.interleaved);
        const naive::Vec kr = naive::rotary(k_n, theta, 1, 1, c.H, c.Dk, pos, 1.25, c.interleaved);
        naive::Vec S(S0[static_cast<size_t>(n)].begin(), S0[static_cast<size_t>(n)].end());
        for (int h = 0; h < c.H; ++h) {
            const size_t ci = c.per_sequence ? static_cast<size_t>(n) * c.H + h : static_cast<size_t>(h);
            double nsq = 0;
            for (int i = 0; i < c.Dk; ++i)
                for (int j = 0; j < c.Dv; ++j) {
                    double& s = S[(static_cast<size_t>(h) * c.Dk + i) * c.Dv + j];
                    s = coef_a[ci] * s + coef_b[ci] * kr[static_cast<size_t>(h) * c.Dk + i] *
                                             v[(static_cast<size_t>(n) * c.H + h) * c.Dv + j];
                    nsq += s * s;
                }
            for (int j = 0; j < c.Dv; ++j) {
                double acc = 0;
                for (int i = 0; i < c.Dk; ++i)
                    acc += qr[static_cast<size_t>(h) * c.Dk + i] * S[(static_cast<size_t>(h) * c.Dk + i) * c.Dv + j];
                ref_o[(static_cast<size_t>(h) * c.N + n) * c.Dv + j] = acc;
            }
            ref_norm[static_cast<size_t>(n) * c.H + h] = nsq;
        }
        EXPECT_LT(rel_max_error(to_host(dS[static_cast<size_t>(n)], stream()), S), kF32Tol) << "state of " << n;
    }
    EXPECT_LT(rel_max_error(got_o, ref_o), kF32Tol);
    EXPECT_LT(rel_max_error(got_norm, ref_norm), kF32Tol);
}

// The step it replaces: rotary into head-major, then the recurrent scan at T = 1 — bit for bit.
TEST_P(DecodeRetentionTest, BitIdenticalToRotaryThenRecurrentScan) {
    const DecodeCase& c = GetParam();
    const size_t qk = static_cast<size_t>(c.N) * c.H * c.Dk, vv = static_cast<size_t>(c.N) * c.H * c.Dv;
    const size_t state = static_cast<size_t>(c.H) * c.Dk * c.Dv;
    const auto q = random_vector(qk, 7), k = random_vector(qk, 8), v = random_vector(vv, 9);
    const auto theta = random_vector(static_cast<size_t>(c.Dk / 2), 10, 0.0f, 1.0f);
    const auto coef = random_vector(2 * static_cast<size_t>(c.N) * c.H, 11, 0.5f, 1.0f);  // (2, N, H)
    auto dq = to_device(q, stream()), dk = to_device(k, stream()), dv = to_device(v, stream());
    auto dtheta = to_device(theta, stream()), dcoef = to_device(coef, stream());
    auto dpos = to_device(positions(), stream());
    auto dangles = rotary_angles(dpos, dtheta);
    std::vector<DeviceBuffer<float>> fused, scanned;
    std::vector<float*> ptrs;
    for (int n = 0; n < c.N; ++n) {
        const auto S0 = random_vector(state, 40 + n);
        fused.push_back(to_device(S0, stream()));
        scanned.push_back(to_device(S0, stream()));
        ptrs.push_back(fused.back().get());
    }
    auto dptr = to_device(ptrs, stream());
    DeviceBuffer<float> d_o(static_cast<size_t>(c.H) * c.N * c.Dv);
    DecodeRetentionArgs args;
    args.q = dq.get(), args.k = dk.get(), args.v = dv.get(), args.states = dptr.get(), args.angles = dangles.get();
    args.q_scale = 0.5f, args.k_scale = 1.25f, args.interleaved = c.interleaved;
    args.coef_a = dcoef.get(), args.coef_b = dcoef.get() + c.N * c.H, args.coef_per_sequence = true;
    args.o = d_o.get(), args.N = c.N, args.H = c.H, args.Dk = c.Dk, args.Dv = c.Dv;
    launch_decode_retention(args, stream());
    const auto got_o = to_host(d_o, stream());

    DeviceBuffer<float> qh(static_cast<size_t>(c.H) * c.Dk), kh(qh.size()), vh(static_cast<size_t>(c.H) * c.Dv),
        oh(vh.size()), a(static_cast<size_t>(c.H)), b(static_cast<size_t>(c.H));
    for (int n = 0; n < c.N; ++n) {
        const int64_t pos = positions()[static_cast<size_t>(n)];
        launch_rotary_to_head_major(dq.get() + n * c.H * c.Dk, dtheta.get(), qh.get(), 1, 1, c.H, c.Dk, pos, 0.5f,
                                    c.interleaved, stream());
        launch_rotary_to_head_major(dk.get() + n * c.H * c.Dk, dtheta.get(), kh.get(), 1, 1, c.H, c.Dk, pos, 1.25f,
                                    c.interleaved, stream());
        launch_to_head_major(dv.get() + n * c.H * c.Dv, vh.get(), 1, 1, c.H, c.Dv, stream());
        const std::vector<float> a_n(coef.begin() + n * c.H, coef.begin() + (n + 1) * c.H);
        const std::vector<float> b_n(coef.begin() + (c.N + n) * c.H, coef.begin() + (c.N + n + 1) * c.H);
        a.upload(a_n, stream());
        b.upload(b_n, stream());
        launch_recurrent_scan(qh.get(), kh.get(), vh.get(), scanned[static_cast<size_t>(n)].get(), a.get(), b.get(),
                              oh.get(), nullptr, c.H, 1, 1, c.Dk, c.Dv, stream());
        const auto o_n = to_host(oh, stream());
        for (int h = 0; h < c.H; ++h)
            for (int j = 0; j < c.Dv; ++j)
                ASSERT_EQ(got_o[(static_cast<size_t>(h) * c.N + n) * c.Dv + j], o_n[static_cast<size_t>(h) * c.Dv + j])
                    << "sequence " << n << " head " << h << " column " << j;
        EXPECT_EQ(to_host(fused[static_cast<size_t>(n)], stream()), to_host(scanned[static_cast<size_t>(n)], stream()))
            << "state of " << n;
    }
}

// The head norm and gate fused into the step against the same step followed by the separate
// launch it replaces, bit for bit, over three steps, the last writing y in bf16 (the arrival
// counters must be back at zero after each); the fused step reads q, k, v, g as strided rows.
TEST_P(DecodeRetentionTest, FusedHeadNormGateEqualsSeparateLaunch) {
    const DecodeCase& c = GetParam();
    const size_t qk = static_cast<size_t>(c.N) * c.H * c.Dk, vv = static_cast<size_t>(c.N) * c.H * c.Dv;
    const size_t state = static_cast<size_t>(c.H) * c.Dk * c.Dv;
    const auto q = random_vector(qk, 12), k = random_vector(qk, 13), v = random_vector(vv, 14);
    const auto g = random_vector(vv, 15), w = random_vector(static_cast<size_t>(c.Dv), 16, 0.5f, 1.5f);
    const auto theta = random_vector(static_cast<size_t>(c.Dk / 2), 17, 0.0f, 1.0f);
    const auto coef = random_vector(2 * static_cast<size_t>(c.H), 18, 0.5f, 1.0f);
    auto dq = to_device(q, stream()), dk = to_device(k, stream()), dv = to_device(v, stream());
    auto dg = to_device(g, stream()), dw = to_device(w, stream());
    auto dtheta = to_device(theta, stream()), dcoef = to_device(coef, stream());
    auto dpos = to_device(positions(), stream());
    auto dangles = rotary_angles(dpos, dtheta);
    std::vector<DeviceBuffer<float>> fused_states, separate_states;
    std::vector<float*> fused_ptrs, separate_ptrs;
    for (int n = 0; n < c.N; ++n) {
        const auto S0 = random_vector(state, 50 + n);
        fused_states.push_back(to_device(S0, stream()));
        separate_states.push_back(to_device(S0, stream()));
        fused_ptrs.push_back(fused_states.back().get());
        separate_ptrs.push_back(separate_states.back().get());
    }
    auto d_fused_ptrs = to_device(fused_ptrs, stream()), d_separate_ptrs = to_device(separate_ptrs, stream());
    // The fused launch reads q, k, v, g in place from rows of one buffer (N, 2·H·Dk + 2·H·Dv), as
    // one GEMM's output of all four lies; the separate one from packed rows.
    const size_t HDk = static_cast<size_t>(c.H) * c.Dk, HDv = static_cast<size_t>(c.H) * c.Dv, row = 2 * HDk + 2 * HDv;
    std::vector<float> joined(row * static_cast<size_t>(c.N));
    for (size_t n = 0; n < static_cast<size_t>(c.N); ++n) {
        std::copy_n(q.begin() + n * HDk, HDk, joined.begin() + n * row);
        std::copy_n(k.begin() + n * HDk, HDk, joined.begin() + n * row + HDk);
        std::copy_n(v.begin() + n * HDv, HDv, joined.begin() + n * row + 2 * HDk);
        std::copy_n(g.begin() + n * HDv, HDv, joined.begin() + n * row + 2 * HDk + HDv);
    }
    auto djoined = to_device(joined, stream());
    DeviceBuffer<float> o_fused(static_cast<size_t>(c.H) * c.N * c.Dv), o_separate(o_fused.size());
    DeviceBuffer<float> y_fused(vv), y_separate(vv);
    DeviceBuffer<unsigned> arrivals(static_cast<size_t>(c.N) * c.H);
    arrivals.zero(stream());
    DecodeRetentionArgs args;
    args.q = dq.get(), args.k = dk.get(), args.v = dv.get(), args.angles = dangles.get();
    args.q_scale = 0.5f, args.k_scale = 1.25f, args.interleaved = c.interleaved;
    args.coef_a = dcoef.get(), args.coef_b = dcoef.get() + c.H;
    args.N = c.N, args.H = c.H, args.Dk = c.Dk, args.Dv = c.Dv;
    DeviceBuffer<__nv_bfloat16> y16_fused(vv), y16_separate(vv);
    for (int step = 0; step < 3; ++step)  // the third step writes y in bf16 alone, as the batched step does
        for (const float* weight : {static_cast<const float*>(dw.get()), static_cast<const float*>(nullptr)}) {
            const bool in_bf16 = step == 2;
            DecodeRetentionArgs fused = args, separate = args;
            fused.states = d_fused_ptrs.get(), fused.o = o_fused.get();
            fused.q = djoined.get(), fused.k = djoined.get() + HDk, fused.v = djoined.get() + 2 * HDk;
            fused.g = djoined.get() + 2 * HDk + HDv;
            fused.q_stride = fused.k_stride = fused.v_stride = fused.g_stride = static_cast<int64_t>(row);
            fused.head_norm_weight = weight, fused.head_norm_eps = 1e-6f;
            if (in_bf16) fused.y_bf16 = y16_fused.get();
            else fused.y = y_fused.get();
            fused.arrivals = arrivals.get();
            launch_decode_retention(fused, stream());
            separate.states = d_separate_ptrs.get(), separate.o = o_separate.get();
            launch_decode_retention(separate, stream());
            launch_head_norm_gate(o_separate.get(), dg.get(), weight, y_separate.get(), c.N, c.N, c.H, c.Dv, 1e-6f,
                                  stream());
            const std::string what = "step " + std::to_string(step) + (weight ? " with" : " without") + " weight";
            if (in_bf16) {  // rounded as the conversion launch it replaces rounds
                launch_float_to_bf16(y_separate.get(), y16_separate.get(), static_cast<int64_t>(vv), stream());
                ASSERT_EQ(bf16_bits(to_host(y16_fused, stream())), bf16_bits(to_host(y16_separate, stream()))) << what;
            } else {
                ASSERT_EQ(to_host(y_fused, stream()), to_host(y_separate, stream())) << what;
            }
            EXPECT_EQ(to_host(arrivals, stream()), std::vector<unsigned>(arrivals.size(), 0u)) << what;
        }
}

// The step's angles against the math: the angle positions[n]·θ_i in float32 (as the references form
// it), its sine and cosine in double. CUDA's double sin and cos are within 2 ulp (< 4.5e-16 here).
TEST_P(DecodeRetentionTest, RotaryAnglesMatchDoubleSinCos) {
    const DecodeCase& c = GetParam();
    const auto theta = random_vector(static_cast<size_t>(c.Dk / 2), 21, 0.0f, 1.0f);
    auto dtheta = to_device(theta, stream());
    auto dpos = to_device(positions(), stream());
    const DeviceBuffer<double2> dangles = rotary_angles(dpos, dtheta);
    const std::vector<double2> got = to_host(dangles, stream());
    for (int n = 0; n < c.N; ++n)
        for (int i = 0; i < c.Dk / 2; ++i) {
            const float angle = static_cast<float>(positions()[static_cast<size_t>(n)]) * theta[static_cast<size_t>(i)];
            const double2 g = got[static_cast<size_t>(n) * (c.Dk / 2) + i];
            EXPECT_NEAR(g.x, std::sin(static_cast<double>(angle)), 1e-15) << "n " << n << " i " << i;
            EXPECT_NEAR(g.y, std::cos(static_cast<double>(angle)), 1e-15) << "n " << n << " i " << i;
        }
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeRetentionTest,
                         ::testing::Values(DecodeCase{1, 1, 6, 5, true, false}, DecodeCase{3, 2, 64, 100, false, true},
                                           DecodeCase{4, 3, 100, 40, true, true},
                                           DecodeCase{2, 2, 256, 512, false, false},
                                           DecodeCase{5, 1, 128, 33, false, true},
                                           DecodeCase{2, 2, 32, 600, true, false},
                                           DecodeCase{1, 1, 1026, 40, true, false},  // pairs past one per thread
                                           DecodeCase{40, 2, 64, 512, false, true}));  // more blocks than one wave


// ---- whole models: graph replay against launches one by one ----------------------------------------

class GraphDecodeTest : public CudaTest, public ::testing::WithParamInterface<std::tuple<Family, bool>> {};

// Three sequences decode together for eight steps. The logit rows asked for change at step 3 and a
// long prefill of one slot grows every buffer at step 5, so graphs are captured, replayed, and
// dropped for stale addresses. Graph replay must equal launching the same kernels one by one bit
// for bit, and both must match the double reference within the model tolerance.
TEST_P(GraphDecodeTest, ReplayEqualsEagerBitForBitAndMatchesReference) {
    const auto [family, bf16] = GetParam();
    auto model = std::make_shared<const Model>(make_random_model(small_decode_config(family), 7));
    EagerGraphsReference backends(model, bf16);
    const double worst = backends.run(DecodeScenario{});
    if (!bf16) {
        EXPECT_LT(worst, 2e-5);
    }
    for (int s = 0; s < 3; ++s) {
        const RecurrentState a = backends.eager().snapshot(s), b = backends.graphs().snapshot(s);
        EXPECT_EQ(a.position, b.position);
        for (size_t l = 0; l < a.layers.size(); ++l) EXPECT_EQ(a.layers[l].S, b.layers[l].S) << "slot " << s;
    }
}

// Many sequences decode together with bf16 weights after prompts of two tokens each, prefilled one
// at a time: the steps' projections read bf16 rows (3 and 12 rows: the tensor-core skinny GEMM, which
// takes every batch of 2 rows or more from the GEMV; 20: cuBLAS),
// the decode retention and the GLU write the next projection's rows in bf16 alone, the norms before
// the skinny GEMM are formed inside its launch (bit for bit their own launches, RETNET_SKINNY_NORM=0), and the
// vocabulary (500) is wider than any other row, so the buffers the first capture needs are sized
// before it (a buffer that grew during a capture is refused as an internal error). Replay equals
// eager launches bit for bit, and each sequence's logits match the same sequence decoded alone (a
// row through the fp32-input GEMV) within the rounding of the batch's bf16 activations.
// A second model has projections whose sizes are not multiples of 8 values (d_model 6), so that in
// the backend's bf16 weight storage each starts on a 16-byte boundary only by padding: its GEMVs
// read aligned weights, and its q, k, v, g are not adjacent (four GEMMs) while act and lin are.
TEST_P(GraphDecodeTest, ManyBf16SequencesReplayEqualsEagerAndMatchSequencesAlone) {
    const auto [family, bf16] = GetParam();
    if (!bf16) GTEST_SKIP() << "the bf16-weight path";
    ModelConfig unaligned = small_decode_config(family);
    unaligned.d_model = 6, unaligned.n_heads = 1, unaligned.key_dim = unaligned.value_dim = 6, unaligned.ffn_dim = 8;
    for (ModelConfig config : {small_decode_config(family), unaligned}) {
        SCOPED_TRACE("d_model " + std::to_string(config.d_model));
        config.vocab_size = 500;
        auto model = std::make_shared<const Model>(make_random_model(config, 11));
        // Groups one GEMM makes past 16 rows: q, k, v, g where they lie back to back, act and lin too.
        const auto whole_vectors = [&](int out) { return static_cast<int64_t>(out) * config.d_model % 8 == 0; };
        const int one_gemm_groups = (whole_vectors(config.key_dim) && whole_vectors(config.value_dim) ? 1 : 0) +
                                    (whole_vectors(config.ffn_dim) && config.ffn_dim % 8 == 0 ? 1 : 0);
        CudaOptions eager_options, graph_options;
        eager_options.cuda_graphs = false;
        eager_options.bf16_weights = graph_options.bf16_weights = true;
        for (const int slots : {3, 12, 20}) {
            auto eager = make_cuda_backend(model, eager_options), graphs = make_cuda_backend(model, graph_options);
            auto alone = make_cuda_backend(model, eager_options);
            setenv("RETNET_SKINNY_NORM", "0", 1);  // the norms as their own launches
            auto separate_norms = make_cuda_backend(model, eager_options);
            unsetenv("RETNET_SKINNY_NORM");
            constexpr int kSteps = 4;
            ForwardOptions chunkwise, recurrent;
            chunkwise.form = Form::Chunkwise;
            recurrent.form = Form::Recurrent;
            const std::initializer_list<Backend*> all = {eager.get(), graphs.get(), alone.get(), separate_norms.get()};
            for (Backend* b : all) b->set_slot_count(slots);
            for (int s = 0; s < slots; ++s) {
                const std::vector<int32_t> history = tokens_of(2, 300 + s);
                const SequenceRequest prompt{history, s, LogitRows::Last};
                for (Backend* b : all) b->forward_batch({&prompt, 1}, chunkwise);
            }
            double worst = 0.0;
            const uint64_t handoffs_before = cuda_bf16_handoffs(*eager), one_gemm_before = cuda_one_gemm_projections(*eager);
            const uint64_t fused_before = cuda_fused_norms(*eager);
            for (int step = 0; step < kSteps; ++step) {
                std::vector<std::vector<int32_t>> next(static_cast<size_t>(slots));
                std::vector<SequenceRequest> batch;
                for (int s = 0; s < slots; ++s) {
                    next[static_cast<size_t>(s)] = tokens_of(1, 1000 + 100 * step + s);
                    batch.push_back({next[static_cast<size_t>(s)], s, LogitRows::Last});
                }
                const std::vector<Tensor> a = eager->forward_batch(batch, recurrent);
                const std::vector<Tensor> b = graphs->forward_batch(batch, recurrent);
                const std::vector<Tensor> c = separate_norms->forward_batch(batch, recurrent);
                for (int s = 0; s < slots; ++s) {
                    const std::string what = std::to_string(slots) + " slots, step " + std::to_string(step) + " slot " +
                                             std::to_string(s);
                    ASSERT_EQ(a[static_cast<size_t>(s)].data.size(), static_cast<size_t>(config.vocab_size));
                    ASSERT_EQ(a[static_cast<size_t>(s)].data, b[static_cast<size_t>(s)].data) << what;
                    ASSERT_EQ(a[static_cast<size_t>(s)].data, c[static_cast<size_t>(s)].data) << what << ": norms fused or not";
                    const std::vector<Tensor> one = alone->forward_batch({&batch[static_cast<size_t>(s)], 1}, recurrent);
                    worst = std::max(worst, rel_l2_error(a[static_cast<size_t>(s)].data, one[0].data));
                }
            }
            // The batch rounds the input rows of each of the 9 projections a step passes through (4 a
            // layer, 2 layers, the vocabulary) to bf16, relative 2^-9 at most, where the sequence alone
            // keeps them fp32: to first order at most their sum, and the state carries the earlier
            // steps' error into the next at most as much again. (Measured on an H100: up to 1.1e-2.) A
            // row read from the wrong place would be off by order one.
            const double bound = 2.0 * 9 * std::ldexp(1.0, -9);
            EXPECT_LT(worst, bound) << slots << " slots";
            // At least the output projection of every layer in every step read the decode retention's bf16
            // rows (the FFN's down projection too where the FFN has a GLU).
            EXPECT_GE(cuda_bf16_handoffs(*eager) - handoffs_before, static_cast<uint64_t>(kSteps * config.n_layers))
                << slots << " slots: the bf16 hand-off did not run";
            EXPECT_GT(worst, 0.0) << slots << " slots: the batch should round its rows, the sequence alone not";
            // Past the skinny GEMM's 16 rows, every layer's q, k, v, g come from one GEMM and are read
            // in place by the decode retention (strided rows), and so do its FFN's act and lin for the
            // GLU; below, never.
            const uint64_t one_gemm = cuda_one_gemm_projections(*eager) - one_gemm_before;
            if (slots > kSkinnyMaxRows) {
                EXPECT_EQ(one_gemm, static_cast<uint64_t>(one_gemm_groups * kSteps * config.n_layers))
                    << slots << " slots";
            } else {
                EXPECT_EQ(one_gemm, 0u) << slots << " slots";
            }
            // Up to 4 rows, both norms of every layer (before q, k, v, g and before the FFN) inside the
            // skinny GEMM's launch where the rows are whole vectors; never with RETNET_SKINNY_NORM=0.
            const bool fusable = slots <= kSkinnyFusedNormMaxRows && skinny_gemm_fuses_norm(slots, config.d_model);
            EXPECT_EQ(cuda_fused_norms(*eager) - fused_before, fusable ? static_cast<uint64_t>(2 * kSteps * config.n_layers) : 0u)
                << slots << " slots";
            EXPECT_EQ(cuda_fused_norms(*separate_norms), 0u);
        }
    }
}

// One sequence's decoding steps with the L2 prefetch of the next kernel's weights (the default with
// bf16 weights: the retention requests the output projection's, the output projection the FFN's
// act and lin) and with none: the prefetch is a hint, the logits equal bit for bit. The model whose
// projections are not multiples of 16 bytes has regions that end between two vectors; a request
// past its allocation's end would fail the launch.
TEST_P(GraphDecodeTest, L2PrefetchOfTheNextWeightsChangesNoBit) {
    const auto [family, bf16] = GetParam();
    ModelConfig unaligned = small_decode_config(family);
    unaligned.d_model = 6, unaligned.n_heads = 1, unaligned.key_dim = unaligned.value_dim = 6, unaligned.ffn_dim = 10;
    for (const ModelConfig& config : {small_decode_config(family), unaligned}) {
        SCOPED_TRACE("d_model " + std::to_string(config.d_model));
        auto model = std::make_shared<const Model>(make_random_model(config, 13));
        std::vector<std::vector<float>> logits[2];
        for (const int prefetch : {0, 1}) {
            CudaOptions options;
            options.bf16_weights = bf16;
            if (!prefetch) setenv("RETNET_L2_PREFETCH", "0", 1);
            auto backend = make_cuda_backend(model, options);
            unsetenv("RETNET_L2_PREFETCH");
            ForwardOptions chunkwise, recurrent;
            chunkwise.form = Form::Chunkwise;
            recurrent.form = Form::Recurrent;
            backend->set_slot_count(1);
            const std::vector<int32_t> prompt = tokens_of(5, 21);
            const SequenceRequest prefill{prompt, 0, LogitRows::Last};
            logits[prefetch].push_back(backend->forward_batch({&prefill, 1}, chunkwise)[0].data);
            for (int step = 0; step < 6; ++step) {
                const std::vector<int32_t> next = tokens_of(1, 40 + step);
                const SequenceRequest request{next, 0, LogitRows::Last};
                logits[prefetch].push_back(backend->forward_batch({&request, 1}, recurrent)[0].data);
            }
        }
        ASSERT_EQ(logits[0].size(), logits[1].size());
        for (size_t t = 0; t < logits[0].size(); ++t) {
            ASSERT_EQ(logits[0][t].size(), static_cast<size_t>(config.vocab_size));
            EXPECT_EQ(logits[0][t], logits[1][t]) << "call " << t;
        }
    }
}

// Each block's share of the regions: together they cover every byte once, in 16-byte multiples.
TEST(L2PrefetchShares, TileTheBytesOnceIn16ByteSteps) {
    for (const uint64_t total : {uint64_t{16}, uint64_t{4096}, uint64_t{16} * 1000003, uint64_t{25} << 20})
        for (const uint64_t blocks : {uint64_t{1}, uint64_t{7}, uint64_t{128}, uint64_t{1056}, uint64_t{100000}}) {
            uint64_t covered = 0;
            for (uint64_t b = 0; b < blocks; ++b) {
                const PrefetchShare share = prefetch_share(total, blocks, b);
                ASSERT_EQ(share.begin, covered) << total << " bytes, block " << b << " of " << blocks;
                ASSERT_LE(share.begin, share.end);
                ASSERT_EQ(share.begin % 16, 0u);
                ASSERT_TRUE(share.end % 16 == 0 || share.end == total);
                covered = share.end;
            }
            EXPECT_EQ(covered, total) << total << " bytes over " << blocks << " blocks";
        }
}

INSTANTIATE_TEST_SUITE_P(FamiliesAndWeights, GraphDecodeTest,
                         ::testing::Combine(::testing::Values(Family::Fla, Family::TorchScale),
                                            ::testing::Bool()));

}  // namespace
}  // namespace retnet::cuda::test
