// SPDX-License-Identifier: GPL-3.0-or-later
// Every CUDA kernel against its naive double twin (naive_ops.h). fp32 kernels must agree within
// 1e-5 of the data's scale (float32 rounding of sums of at most a few hundred terms is ~1e-6);
// bf16 GEMMs within 1e-2 (bf16 keeps 8 significant bits: rounding to nearest is off by at most 2^-8 ≈
// 3.9e-3 per operand).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "cuda_test_util.h"
#include "gemm.h"
#include "naive_ops.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda::test {
namespace {

constexpr double kF32Tol = 1e-5;

class KernelTest : public CudaTest {};

TEST_F(KernelTest, EmbeddingScalesRows) {
    const int V = 11, d = 37, T = 5;
    const auto E = random_vector(static_cast<size_t>(V) * d, 1);
    const std::vector<int32_t> tokens = {3, 0, 10, 3, 7};
    auto dE = to_device(E, stream());
    auto dtok = to_device(tokens, stream());
    DeviceBuffer<float> dx(static_cast<size_t>(T) * d);
    launch_embedding(dtok.get(), dE.get(), dx.get(), T, d, 2.5f, stream());
    const auto x = to_host(dx, stream());
    for (int t = 0; t < T; ++t)
        for (int i = 0; i < d; ++i) EXPECT_FLOAT_EQ(x[t * d + i], 2.5f * E[tokens[t] * d + i]);
}

TEST_F(KernelTest, RmsNormWithAndWithoutWeight) {
    const int rows = 5, cols = 257;
    const auto x = random_vector(static_cast<size_t>(rows) * cols, 2, -3.0f, 3.0f);
    const auto w = random_vector(cols, 3);
    auto dx = to_device(x, stream());
    auto dw = to_device(w, stream());
    DeviceBuffer<float> dy(x.size());
    for (bool weighted : {true, false}) {
        launch_rmsnorm(dx.get(), weighted ? dw.get() : nullptr, dy.get(), rows, cols, 1e-6f, stream());
        const auto ref = naive::rmsnorm(x, weighted ? w : std::vector<float>{}, rows, cols, 1e-6);
        EXPECT_LT(rel_max_error(to_host(dy, stream()), ref), kF32Tol) << "weighted=" << weighted;
    }
}

struct RotaryCase {
    int Dk;
    bool interleaved;
};

void PrintTo(const RotaryCase& c, std::ostream* os) { *os << "Dk=" << c.Dk << (c.interleaved ? " interleaved" : " half-split"); }

class RotaryTest : public CudaTest, public ::testing::WithParamInterface<RotaryCase> {};

TEST_P(RotaryTest, MatchesTwinAndZeroesPadding) {
    const auto [Dk, interleaved] = GetParam();
    const int T = 5, Tp = 8, H = 3;
    const int64_t pos0 = 1234;  // large positions: the float32 angle must be formed as the twin does
    const auto src = random_vector(static_cast<size_t>(T) * H * Dk, 4);
    std::vector<float> theta(Dk / 2);
    for (int i = 0; i < Dk / 2; ++i) theta[i] = 1.0f / std::pow(10000.0f, 2.0f * i / Dk);
    auto dsrc = to_device(src, stream());
    auto dtheta = to_device(theta, stream());
    DeviceBuffer<float> ddst(static_cast<size_t>(H) * Tp * Dk);
    std::vector<float> poison(ddst.size(), 7.0f);
    ddst.upload(poison, stream());
    const float scale = 1.0f / std::sqrt(static_cast<float>(Dk));
    launch_rotary_to_head_major(dsrc.get(), dtheta.get(), ddst.get(), T, Tp, H, Dk, pos0, scale, interleaved,
                                stream());
    const auto got = to_host(ddst, stream());
    const auto ref = naive::rotary(src, theta, T, Tp, H, Dk, pos0, scale, interleaved);
    EXPECT_LT(rel_max_error(got, ref), kF32Tol);
    for (int h = 0; h < H; ++h)
        for (int t = T; t < Tp; ++t)
            for (int i = 0; i < Dk; ++i) ASSERT_EQ(got[(static_cast<size_t>(h) * Tp + t) * Dk + i], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, RotaryTest,
                         ::testing::Values(RotaryCase{64, true}, RotaryCase{64, false}, RotaryCase{100, true},
                                           RotaryCase{100, false}, RotaryCase{128, true}, RotaryCase{256, false}));

TEST_F(KernelTest, ToHeadMajorTransposesAndPads) {
    const int T = 3, Tp = 4, H = 2, D = 5;
    const auto src = random_vector(static_cast<size_t>(T) * H * D, 5);
    auto dsrc = to_device(src, stream());
    DeviceBuffer<float> ddst(static_cast<size_t>(H) * Tp * D);
    launch_to_head_major(dsrc.get(), ddst.get(), T, Tp, H, D, stream());
    const auto got = to_host(ddst, stream());
    for (int h = 0; h < H; ++h)
        for (int t = 0; t < Tp; ++t)
            for (int i = 0; i < D; ++i)
                EXPECT_EQ(got[(h * Tp + t) * D + i], t < T ? src[(t * H + h) * D + i] : 0.0f);
}

// The bf16 GEMMs' inputs: rounded to nearest even as the host rounds them, at odd lengths (the
// vector loop's tail), from unaligned buffers (one value a thread), and the RMSNorm that writes
// bf16 itself bit for bit the float RMSNorm rounded.
uint16_t bf16_bits(float x) {  // round to nearest, ties to even
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
std::vector<uint16_t> bits_of(const DeviceBuffer<__nv_bfloat16>& d, size_t n, cudaStream_t stream) {
    std::vector<uint16_t> host(n);
    RETNET_CUDA_CHECK(cudaMemcpyAsync(host.data(), d.get(), n * sizeof(uint16_t), cudaMemcpyDeviceToHost, stream));
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
}

TEST_F(KernelTest, FloatToBf16RoundsToNearestEvenAtAnyLengthAndAlignment) {
    const auto x = random_vector(1031, 4, -5.0f, 5.0f);
    auto dx = to_device(x, stream());
    DeviceBuffer<__nv_bfloat16> dy(x.size());
    for (const size_t offset : {size_t{0}, size_t{1}}) {
        const size_t n = x.size() - offset;
        launch_float_to_bf16(dx.get() + offset, dy.get(), static_cast<int64_t>(n), stream());
        const std::vector<uint16_t> got = bits_of(dy, n, stream());
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], bf16_bits(x[i + offset])) << "offset " << offset << " i " << i;
    }
}

TEST_F(KernelTest, RmsNormToBf16IsTheFloatNormRounded) {
    // 3 rows of 2049: a block per row; 1030 rows of 256 (a prefill's): a warp per row, 16-byte loads
    for (const auto& [rows, cols] : {std::pair{3, 2049}, std::pair{1030, 256}}) {
        const auto x = random_vector(static_cast<size_t>(rows) * cols, 5, -3.0f, 3.0f);
        const auto w = random_vector(cols, 6);
        auto dx = to_device(x, stream()), dw = to_device(w, stream());
        DeviceBuffer<float> dy(x.size());
        DeviceBuffer<__nv_bfloat16> dy_bf16(x.size()), dy_rounded(x.size());
        launch_rmsnorm(dx.get(), dw.get(), dy.get(), rows, cols, 1e-6f, stream());
        EXPECT_LT(rel_max_error(to_host(dy, stream()), naive::rmsnorm(x, w, rows, cols, 1e-6)), kF32Tol) << rows;
        launch_float_to_bf16(dy.get(), dy_rounded.get(), static_cast<int64_t>(x.size()), stream());
        launch_rmsnorm_bf16(dx.get(), dw.get(), dy_bf16.get(), rows, cols, 1e-6f, stream());
        EXPECT_EQ(bits_of(dy_bf16, x.size(), stream()), bits_of(dy_rounded, x.size(), stream())) << rows;
    }
}

TEST_F(KernelTest, HeadNormGateWithSharedWeightAndWithout) {
    const int T = 3, Tp = 4, H = 2, Dv = 100;
    const auto o = random_vector(static_cast<size_t>(H) * Tp * Dv, 6, -0.01f, 0.01f);  // near eps
    const auto g = random_vector(static_cast<size_t>(T) * H * Dv, 7, -4.0f, 4.0f);
    const auto w = random_vector(Dv, 8);
    auto d_o = to_device(o, stream());
    auto dg = to_device(g, stream());
    auto dw = to_device(w, stream());
    DeviceBuffer<float> dy(g.size());
    for (bool weighted : {true, false}) {
        launch_head_norm_gate(d_o.get(), dg.get(), weighted ? dw.get() : nullptr, dy.get(), T, Tp, H, Dv, 1e-6f,
                              stream());
        const auto ref = naive::head_norm_gate(o, g, weighted ? w : std::vector<float>{}, T, Tp, H, Dv, 1e-6);
        EXPECT_LT(rel_max_error(to_host(dy, stream()), ref), kF32Tol) << "weighted=" << weighted;
    }
}

TEST_F(KernelTest, GluGeluAndSwish) {
    const int n = 1001;
    const auto a = random_vector(n, 9, -5.0f, 5.0f), b = random_vector(n, 10);
    auto da = to_device(a, stream());
    auto db = to_device(b, stream());
    DeviceBuffer<float> dh(n);
    for (bool gelu : {true, false}) {
        launch_glu(da.get(), db.get(), dh.get(), n, gelu, stream());
        std::vector<double> ref(n);
        for (int i = 0; i < n; ++i) ref[i] = (gelu ? naive::gelu(a[i]) : naive::silu(a[i])) * b[i];
        EXPECT_LT(rel_max_error(to_host(dh, stream()), ref), kF32Tol) << "gelu=" << gelu;
    }
}

// The bf16 outputs that the prefill's output and FFN-down projections read directly (no conversion
// launch between): bit for bit the float results rounded, by each head-norm kernel (a block per pair;
// a warp per pair, one element or eight at a time) and by the scalar and the 8-wide GLU (odd
// length, unaligned). The float results of the kernels that few-pair tests do not reach are checked
// against the naive twin too.
TEST_F(KernelTest, HeadNormGateToBf16IsTheFloatResultRounded) {
    const int H = 2;
    for (const auto& [T, Dv] : {std::pair{3, 100}, std::pair{600, 100}, std::pair{600, 128}}) {
        const int Tp = T + 1;  // 6 pairs: a block each; 1200 pairs: a warp each (Dv 128: eight elements a lane)
        const auto o = random_vector(static_cast<size_t>(H) * Tp * Dv, 11, -2.0f, 2.0f);
        const auto g = random_vector(static_cast<size_t>(T) * H * Dv, 12, -4.0f, 4.0f);
        const auto w = random_vector(Dv, 13);
        auto d_o = to_device(o, stream()), dg = to_device(g, stream()), dw = to_device(w, stream());
        DeviceBuffer<float> dy(g.size());
        DeviceBuffer<__nv_bfloat16> dy_bf16(g.size()), dy_rounded(g.size());
        launch_head_norm_gate(d_o.get(), dg.get(), dw.get(), dy.get(), T, Tp, H, Dv, 1e-6f, stream());
        EXPECT_LT(rel_max_error(to_host(dy, stream()), naive::head_norm_gate(o, g, w, T, Tp, H, Dv, 1e-6)), kF32Tol)
            << "T " << T << " Dv " << Dv;
        launch_float_to_bf16(dy.get(), dy_rounded.get(), static_cast<int64_t>(g.size()), stream());
        launch_head_norm_gate(d_o.get(), dg.get(), dw.get(), dy_bf16.get(), T, Tp, H, Dv, 1e-6f, stream());
        EXPECT_EQ(bits_of(dy_bf16, g.size(), stream()), bits_of(dy_rounded, g.size(), stream()))
            << "T " << T << " Dv " << Dv;
    }
}

TEST_F(KernelTest, GluToBf16IsTheFloatResultRounded) {
    const auto a = random_vector(1032, 14, -5.0f, 5.0f), b = random_vector(1032, 15);
    auto da = to_device(a, stream()), db = to_device(b, stream());
    DeviceBuffer<float> dh(a.size());
    DeviceBuffer<__nv_bfloat16> dh_bf16(a.size()), dh_rounded(a.size());
    for (const auto& [n, offset] : {std::pair{1032, 0}, std::pair{1001, 0}, std::pair{1024, 1}})
        for (bool gelu : {true, false}) {
            launch_glu(da.get() + offset, db.get() + offset, dh.get(), n, gelu, stream());
            launch_float_to_bf16(dh.get(), dh_rounded.get(), n, stream());
            launch_glu(da.get() + offset, db.get() + offset, dh_bf16.get(), n, gelu, stream());
            EXPECT_EQ(bits_of(dh_bf16, n, stream()), bits_of(dh_rounded, n, stream()))
                << "n " << n << " offset " << offset << " gelu " << gelu;
        }
}

// The GLU of one GEMM's rows (act and lin side by side, rows `stride` apart) against the GLU of
// the same values as separate arrays, bit for bit: one row, odd rows, a stride past 2 · width.
TEST_F(KernelTest, GluRowsEqualGluOfSeparateHalves) {
    for (const auto& [rows, width, stride] : {std::tuple{1, 8, 16}, std::tuple{3, 2816, 5632}, std::tuple{5, 24, 52}})
        for (bool gelu : {true, false}) {
            const auto ab = random_vector(static_cast<size_t>(rows) * stride, 16, -5.0f, 5.0f);
            std::vector<float> a, b;
            for (int r = 0; r < rows; ++r) {
                a.insert(a.end(), ab.begin() + r * stride, ab.begin() + r * stride + width);
                b.insert(b.end(), ab.begin() + r * stride + width, ab.begin() + r * stride + 2 * width);
            }
            auto dab = to_device(ab, stream()), da = to_device(a, stream()), db = to_device(b, stream());
            const size_t n = a.size();
            DeviceBuffer<__nv_bfloat16> from_rows(n), from_halves(n);
            ASSERT_TRUE(glu_rows_supports(width, stride, dab.get(), from_rows.get()));
            launch_glu_rows(dab.get(), rows, width, stride, from_rows.get(), gelu, stream());
            launch_glu(da.get(), db.get(), from_halves.get(), static_cast<int64_t>(n), gelu, stream());
            EXPECT_EQ(bits_of(from_rows, n, stream()), bits_of(from_halves, n, stream()))
                << rows << " rows of " << width << ", stride " << stride << ", gelu " << gelu;
        }
    EXPECT_FALSE(glu_rows_supports(12, 24, nullptr, nullptr));  // not a multiple of 8
    EXPECT_FALSE(glu_rows_supports(8, 12, nullptr, nullptr));   // the halves overlap the next row
}

class GemmTest : public CudaTest {
protected:
    void SetUp() override {
        CudaTest::SetUp();
        if (IsSkipped()) return;
        handle_ = std::make_unique<CublasHandle>();
        RETNET_CUBLAS_CHECK(cublasSetStream(handle_->get(), stream()));
        RETNET_CUBLAS_CHECK(cublasSetMathMode(handle_->get(), CUBLAS_PEDANTIC_MATH));
    }
    std::unique_ptr<CublasHandle> handle_;
};

TEST_F(GemmTest, LinearF32WithAccumulate) {
    const int M = 7, N = 33, K = 100;
    const auto X = random_vector(static_cast<size_t>(M) * K, 11), W = random_vector(static_cast<size_t>(N) * K, 12);
    const auto Y0 = random_vector(static_cast<size_t>(M) * N, 13);
    auto dX = to_device(X, stream());
    auto dW = to_device(W, stream());
    auto dY = to_device(Y0, stream());
    linear_f32(handle_->get(), dX.get(), dW.get(), dY.get(), M, N, K, 1.0f);
    auto ref = naive::linear(X, W, M, N, K);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += Y0[i];
    EXPECT_LT(rel_max_error(to_host(dY, stream()), ref), kF32Tol);
}

TEST_F(GemmTest, LinearBf16WithinBf16Rounding) {
    const int M = 9, N = 64, K = 256;
    const auto X = random_vector(static_cast<size_t>(M) * K, 14), W = random_vector(static_cast<size_t>(N) * K, 15);
    auto dX = to_device(X, stream());
    auto dW = to_device(W, stream());
    DeviceBuffer<__nv_bfloat16> dXb(X.size()), dWb(W.size());
    launch_float_to_bf16(dX.get(), dXb.get(), static_cast<int64_t>(X.size()), stream());
    launch_float_to_bf16(dW.get(), dWb.get(), static_cast<int64_t>(W.size()), stream());
    DeviceBuffer<float> dY(static_cast<size_t>(M) * N);
    linear_bf16(handle_->get(), dXb.get(), dWb.get(), dY.get(), M, N, K, 0.0f);
    const auto ref = naive::linear(X, W, M, N, K);
    const double err = rel_l2_error(to_host(dY, stream()), ref);
    EXPECT_LT(err, 1e-2);
    EXPECT_GT(err, 0.0);  // it really ran in bf16
}

// The v projection of a prefill written head-major by one batched GEMM: each head's columns of
// linear_bf16's result (the same bf16 operands, fp32 sums in cuBLAS's order: within fp32 rounding of
// the sum of |products|), the rows past M untouched; and a width that does not split into the heads
// refused.
TEST_F(GemmTest, LinearBf16HeadMajorIsLinearBf16PerHead) {
    const int M = 37, H = 3, D = 40, N = H * D, K = 96, Tp = 40;
    const auto X = random_vector(static_cast<size_t>(M) * K, 18), W = random_vector(static_cast<size_t>(N) * K, 19);
    auto dX = to_device(X, stream()), dW = to_device(W, stream());
    DeviceBuffer<__nv_bfloat16> dXb(X.size()), dWb(W.size());
    launch_float_to_bf16(dX.get(), dXb.get(), static_cast<int64_t>(X.size()), stream());
    launch_float_to_bf16(dW.get(), dWb.get(), static_cast<int64_t>(W.size()), stream());
    DeviceBuffer<float> rows(static_cast<size_t>(M) * N);
    const std::vector<float> sentinel(static_cast<size_t>(H) * Tp * D, -7.0f);
    auto heads = to_device(sentinel, stream());
    linear_bf16(handle_->get(), dXb.get(), dWb.get(), rows.get(), M, N, K, 0.0f);
    linear_bf16_head_major(handle_->get(), dXb.get(), dWb.get(), heads.get(), M, N, K, H, static_cast<int64_t>(Tp) * D);
    const std::vector<float> by_rows = to_host(rows, stream()), by_heads = to_host(heads, stream());
    for (int h = 0; h < H; ++h)
        for (int t = 0; t < Tp; ++t)
            for (int d = 0; d < D; ++d) {
                const float got = by_heads[(static_cast<size_t>(h) * Tp + t) * D + d];
                if (t >= M) {
                    ASSERT_EQ(got, -7.0f) << "padding row " << t << " of head " << h;
                    continue;
                }
                const float want = by_rows[static_cast<size_t>(t) * N + h * D + d];
                double magnitude = 0.0;  // Σ_k |x_k w_k|: two fp32 sums of K terms differ by ≤ 2K·2⁻²⁴ of it
                for (int k = 0; k < K; ++k)
                    magnitude += std::fabs(static_cast<double>(X[static_cast<size_t>(t) * K + k]) *
                                           W[static_cast<size_t>(h * D + d) * K + k]);
                ASSERT_NEAR(got, want, 2.0 * K * std::ldexp(1.0, -24) * magnitude) << "h " << h << " t " << t << " d " << d;
            }
    EXPECT_THROW(linear_bf16_head_major(handle_->get(), dXb.get(), dWb.get(), heads.get(), M, N, K, 7, 0), Error);
}

TEST_F(GemmTest, StridedBatchedTransposes) {
    const int M = 5, N = 6, K = 7, batch = 3;
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            const auto A = random_vector(static_cast<size_t>(batch) * M * K, 16), B = random_vector(static_cast<size_t>(batch) * K * N, 17);
            auto dA = to_device(A, stream());
            auto dB = to_device(B, stream());
            DeviceBuffer<float> dC(static_cast<size_t>(batch) * M * N);
            gemm_strided_batched(handle_->get(), ta, tb, M, N, K, 1.0f, dA.get(), ta ? M : K, M * K, dB.get(),
                                 tb ? K : N, K * N, 0.0f, dC.get(), N, M * N, batch);
            std::vector<double> ref(static_cast<size_t>(batch) * M * N, 0.0);
            for (int b = 0; b < batch; ++b)
                for (int m = 0; m < M; ++m)
                    for (int n = 0; n < N; ++n)
                        for (int k = 0; k < K; ++k) {
                            const double a = ta ? A[b * M * K + k * M + m] : A[b * M * K + m * K + k];
                            const double bb = tb ? B[b * K * N + n * K + k] : B[b * K * N + k * N + n];
                            ref[(b * M + m) * N + n] += a * bb;
                        }
            EXPECT_LT(rel_max_error(to_host(dC, stream()), ref), kF32Tol) << ta << tb;
        }
}

// ---- retention --------------------------------------------------------------------------------

struct ScanCase {
    int Dk, Dv, T;
};

void PrintTo(const ScanCase& c, std::ostream* os) { *os << "Dk=" << c.Dk << " Dv=" << c.Dv << " T=" << c.T; }

class RecurrentScanTest : public CudaTest, public ::testing::WithParamInterface<ScanCase> {};

TEST_P(RecurrentScanTest, OutputsFinalStateAndNorms) {
    const auto [Dk, Dv, T] = GetParam();
    const int H = 2, Tp = T + 3;
    const auto q = random_vector(static_cast<size_t>(H) * Tp * Dk, 20), k = random_vector(q.size(), 21);
    const auto v = random_vector(static_cast<size_t>(H) * Tp * Dv, 22);
    const auto S0 = random_vector(static_cast<size_t>(H) * Dk * Dv, 23);  // non-zero initial state
    std::vector<float> a(static_cast<size_t>(T) * H), b(a.size());
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
            a[t * H + h] = h ? 0.96875f : 0.5f + 0.01f * t;
            b[t * H + h] = h ? 1.0f : 1.0f / std::sqrt(1.0f + t);
        }
    auto dq = to_device(q, stream()), dk = to_device(k, stream()), dv = to_device(v, stream());
    auto dS = to_device(S0, stream()), da = to_device(a, stream()), db = to_device(b, stream());
    DeviceBuffer<float> d_o(static_cast<size_t>(H) * Tp * Dv), dn(static_cast<size_t>(T) * H);
    dn.zero(stream());
    launch_recurrent_scan(dq.get(), dk.get(), dv.get(), dS.get(), da.get(), db.get(), d_o.get(), dn.get(), H, T, Tp,
                          Dk, Dv, stream());
    std::vector<double> S(S0.begin(), S0.end()), norms;
    const auto ref_o = naive::recurrent(q, k, v, S, a, b, H, T, Tp, Dk, Dv, &norms);
    auto got_o = to_host(d_o, stream());
    // only rows < T are outputs
    std::vector<float> got_rows;
    std::vector<double> ref_rows;
    for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t)
            for (int j = 0; j < Dv; ++j) {
                got_rows.push_back(got_o[(static_cast<size_t>(h) * Tp + t) * Dv + j]);
                ref_rows.push_back(ref_o[(static_cast<size_t>(h) * Tp + t) * Dv + j]);
            }
    EXPECT_LT(rel_max_error(got_rows, ref_rows), kF32Tol);
    EXPECT_LT(rel_max_error(to_host(dS, stream()), S), kF32Tol);
    EXPECT_LT(rel_max_error(to_host(dn, stream()), norms), kF32Tol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RecurrentScanTest,
                         ::testing::Values(ScanCase{64, 64, 1}, ScanCase{100, 100, 37}, ScanCase{128, 256, 9},
                                           ScanCase{256, 128, 17}, ScanCase{256, 100, 1}, ScanCase{64, 33, 64}));

TEST_F(KernelTest, ParallelDecayNormalizeBothFamilies) {
    const int H = 2, T = 37;
    const auto scores0 = random_vector(static_cast<size_t>(H) * T * T, 30, -2.0f, 2.0f);
    const std::vector<float> log_decay = {std::log(0.96875f), std::log(0.5f)};
    const auto row_scale = random_vector(static_cast<size_t>(H) * T, 31, 0.1f, 1.0f);
    auto dld = to_device(log_decay, stream()), drs = to_device(row_scale, stream());
    DeviceBuffer<float> drf(static_cast<size_t>(H) * T);
    for (float cap : {0.0f, 5e4f, 3.0f}) {
        auto ds = to_device(scores0, stream());
        launch_parallel_decay_normalize(ds.get(), dld.get(), drs.get(), drf.get(), H, T, cap, stream());
        std::vector<double> ref(scores0.size(), 0.0), ref_factor(static_cast<size_t>(H) * T);
        for (int h = 0; h < H; ++h)
            for (int n = 0; n < T; ++n) {
                double abs_sum = 0;
                for (int m = 0; m <= n; ++m) {
                    const double a = scores0[(h * T + n) * T + m] * naive::decay_pow(log_decay[h], n - m) *
                                     row_scale[h * T + n];
                    ref[(h * T + n) * T + m] = a;
                    abs_sum += std::abs(a);
                }
                double c = cap > 0 ? std::clamp(abs_sum, 1.0, double(cap)) : 1.0;
                for (int m = 0; m <= n; ++m) ref[(h * T + n) * T + m] /= c;
                ref_factor[h * T + n] = row_scale[h * T + n] / c;
            }
        EXPECT_LT(rel_max_error(to_host(ds, stream()), ref), kF32Tol) << "cap=" << cap;
        EXPECT_LT(rel_max_error(to_host(drf, stream()), ref_factor), kF32Tol) << "cap=" << cap;
    }
}

// ρ_i = Σ_{j≤i} γ^j
double rho(float log_decay, int i) {
    double s = 0;
    for (int j = 0; j <= i; ++j) s += naive::decay_pow(log_decay, j);
    return s;
}

TEST_F(KernelTest, ChunkDecayMaskBothFamilies) {
    const int H = 2, nC = 3, C = 16;
    const auto scores0 = random_vector(static_cast<size_t>(H) * nC * C * C, 40, -2.0f, 2.0f);
    const std::vector<float> log_decay = {std::log(0.96875f), std::log(0.75f)};
    auto dld = to_device(log_decay, stream());
    DeviceBuffer<float> dabs(static_cast<size_t>(H) * nC * C);
    for (bool ts : {false, true}) {
        auto ds = to_device(scores0, stream());
        launch_chunk_decay_mask(ds.get(), dld.get(), dabs.get(), H, nC, C, ts, stream());
        std::vector<double> ref(scores0.size(), 0.0), ref_abs(static_cast<size_t>(H) * nC * C);
        for (int h = 0; h < H; ++h)
            for (int c = 0; c < nC; ++c)
                for (int i = 0; i < C; ++i) {
                    double abs_sum = 0;
                    const size_t row = ((static_cast<size_t>(h) * nC + c) * C + i) * C;
                    for (int j = 0; j <= i; ++j) {
                        double a = scores0[row + j] * naive::decay_pow(log_decay[h], i - j);
                        if (ts) a /= std::sqrt(rho(log_decay[h], i));
                        ref[row + j] = a;
                        abs_sum += std::abs(a);
                    }
                    ref_abs[(static_cast<size_t>(h) * nC + c) * C + i] = std::max(abs_sum, 1.0);
                }
        EXPECT_LT(rel_max_error(to_host(ds, stream()), ref), kF32Tol) << "ts=" << ts;
        if (ts) {
            EXPECT_LT(rel_max_error(to_host(dabs, stream()), ref_abs), kF32Tol);
        }
    }
}

// The scan's shapes: chunk counts below, at and past its load group of 8 (1, 4, 11, 17) and
// state sizes that take float4 loads (300) or single floats (7, 301).
struct ChunkScanCase {
    int nC;
    int64_t DkDv;
};

class ChunkStateScanTest : public KernelTest, public ::testing::WithParamInterface<ChunkScanCase> {};

std::vector<float> scan_decays(int H, int nC) {  // (H, nC) in (0.2, 0.95]
    std::vector<float> decay(static_cast<size_t>(H) * nC);
    for (size_t i = 0; i < decay.size(); ++i) decay[i] = 0.95f - 0.75f * static_cast<float>(i % 13) / 13.0f;
    return decay;
}

TEST_P(ChunkStateScanTest, KeepsStatesBeforeEachChunk) {
    const int H = 2, nC = GetParam().nC;
    const int64_t DkDv = GetParam().DkDv;
    const auto U0 = random_vector(static_cast<size_t>(H) * nC * DkDv, 50), S0 = random_vector(static_cast<size_t>(H) * DkDv, 51);
    const std::vector<float> decay = scan_decays(H, nC);
    auto dU = to_device(U0, stream()), dS = to_device(S0, stream()), dd = to_device(decay, stream());
    launch_chunk_state_scan(dU.get(), dS.get(), dd.get(), H, nC, DkDv, stream());
    std::vector<double> refU(U0.size()), refS(S0.begin(), S0.end());
    for (int h = 0; h < H; ++h)
        for (int c = 0; c < nC; ++c)
            for (int64_t e = 0; e < DkDv; ++e) {
                double& s = refS[h * DkDv + e];
                refU[(h * nC + c) * DkDv + e] = s;
                s = decay[h * nC + c] * s + U0[(h * nC + c) * DkDv + e];
            }
    EXPECT_LT(rel_max_error(to_host(dU, stream()), refU), kF32Tol);
    EXPECT_LT(rel_max_error(to_host(dS, stream()), refS), kF32Tol);
}

// The CUDA trainer's backward through the scan: the transpose of the recurrence above, in place.
TEST_P(ChunkStateScanTest, BackwardCarriesGradientsToEarlierChunks) {
    const int H = 2, nC = GetParam().nC;
    const int64_t DkDv = GetParam().DkDv;
    const auto G = random_vector(static_cast<size_t>(H) * nC * DkDv, 52);
    const std::vector<float> decay = scan_decays(H, nC);
    auto dG = to_device(G, stream()), dd = to_device(decay, stream());
    launch_chunk_state_scan_backward(dG.get(), dd.get(), H, nC, DkDv, stream());  // G's buffer becomes after's
    std::vector<double> ref(G.size(), 0.0);
    for (int h = 0; h < H; ++h)
        for (int64_t e = 0; e < DkDv; ++e)
            for (int c = nC - 1; c >= 1; --c)
                ref[(h * nC + c - 1) * DkDv + e] =
                    G[(h * nC + c) * DkDv + e] + decay[h * nC + c] * ref[(h * nC + c) * DkDv + e];
    EXPECT_LT(rel_max_error(to_host(dG, stream()), ref), kF32Tol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChunkStateScanTest,
                         ::testing::Values(ChunkScanCase{4, 300}, ChunkScanCase{1, 7}, ChunkScanCase{11, 300}, ChunkScanCase{17, 301},
                                           ChunkScanCase{8, 4}));

// The trainer's batch of sequences: every sequence's heads take the decays of the head index.
TEST_F(KernelTest, ChunkDecayMaskOfSeveralSequencesSharesTheHeadDecays) {
    const int n_seqs = 3, H = 2, nC = 2, C = 8;
    const auto scores0 = random_vector(static_cast<size_t>(n_seqs) * H * nC * C * C, 41, -2.0f, 2.0f);
    const std::vector<float> log_decay = {std::log(0.96875f), std::log(0.5f)};
    auto dld = to_device(log_decay, stream()), ds = to_device(scores0, stream());
    launch_chunk_decay_mask(ds.get(), dld.get(), nullptr, H, nC, C, false, stream(), n_seqs);
    std::vector<double> ref(scores0.size(), 0.0);
    for (int m = 0; m < n_seqs * H * nC; ++m)
        for (int i = 0; i < C; ++i)
            for (int j = 0; j <= i; ++j) {
                const size_t at = (static_cast<size_t>(m) * C + i) * C + j;
                ref[at] = scores0[at] * naive::decay_pow(log_decay[(m / nC) % H], i - j);
            }
    EXPECT_LT(rel_max_error(to_host(ds, stream()), ref), kF32Tol);
}

TEST_F(KernelTest, ChunkStateAbsMaxIsLargestColumnSum) {
    const int H = 2, nC = 3, Dk = 64, Dv = 100;
    const auto S = random_vector(static_cast<size_t>(H) * nC * Dk * Dv, 60, -0.2f, 0.2f);
    auto dS = to_device(S, stream());
    DeviceBuffer<float> dout(static_cast<size_t>(H) * nC);
    const float inv_SB = 0.25f;
    launch_chunk_state_abs_max(dS.get(), dout.get(), H, nC, Dk, Dv, inv_SB, stream());
    std::vector<double> ref(static_cast<size_t>(H) * nC);
    for (int b = 0; b < H * nC; ++b) {
        double best = 0;
        for (int v = 0; v < Dv; ++v) {
            double col = 0;
            for (int k = 0; k < Dk; ++k) col += std::abs(S[(static_cast<size_t>(b) * Dk + k) * Dv + v]);
            best = std::max(best, col);
        }
        ref[b] = std::max(best * inv_SB, 1.0);
    }
    EXPECT_LT(rel_max_error(to_host(dout, stream()), ref), kF32Tol);
}

TEST_F(KernelTest, ChunkCombineBothFamilies) {
    const int H = 2, C = 8, nC = 3, Tp = C * nC, Dv = 20;
    const auto inner = random_vector(static_cast<size_t>(H) * Tp * Dv, 70), cross = random_vector(inner.size(), 71);
    const auto row_abs = random_vector(static_cast<size_t>(H) * Tp, 72, 1.0f, 3.0f);
    const auto state_abs = random_vector(static_cast<size_t>(H) * nC, 73, 1.0f, 3.0f);
    const std::vector<float> log_decay = {std::log(0.96875f), std::log(0.75f)};
    auto di = to_device(inner, stream()), dc = to_device(cross, stream()), dra = to_device(row_abs, stream());
    auto dsa = to_device(state_abs, stream()), dld = to_device(log_decay, stream());
    DeviceBuffer<float> d_o(inner.size()), drf(static_cast<size_t>(H) * Tp);
    for (bool ts : {false, true}) {
        launch_chunk_combine(di.get(), dc.get(), dld.get(), dra.get(), dsa.get(), d_o.get(), drf.get(), H, Tp, C, Dv,
                             ts, stream());
        std::vector<double> ref(inner.size()), ref_factor(static_cast<size_t>(H) * Tp);
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < Tp; ++t) {
                const int i = t % C, c = t / C;
                const double g = naive::decay_pow(log_decay[h], i + 1);
                double ci = 1, cc = g, f = 1;
                if (ts) {
                    const double all = std::max<double>(row_abs[h * Tp + t], state_abs[h * nC + c]);
                    const double sr = std::sqrt(rho(log_decay[h], i));
                    ci = 1 / all;
                    cc = g / (sr * all);
                    f = 1 / (sr * all);
                }
                for (int j = 0; j < Dv; ++j) {
                    const size_t idx = (static_cast<size_t>(h) * Tp + t) * Dv + j;
                    ref[idx] = ci * inner[idx] + cc * cross[idx];
                }
                ref_factor[h * Tp + t] = f;
            }
        EXPECT_LT(rel_max_error(to_host(d_o, stream()), ref), kF32Tol) << "ts=" << ts;
        EXPECT_LT(rel_max_error(to_host(drf, stream()), ref_factor), kF32Tol) << "ts=" << ts;
    }
}

TEST_F(KernelTest, ScaleRowsPerHeadAndAddScaledRows) {
    const int H = 2, Tp = 5, D = 7;
    const auto x = random_vector(static_cast<size_t>(H) * Tp * D, 80), f = random_vector(static_cast<size_t>(H) * Tp, 81);
    const auto y = random_vector(x.size(), 82);
    auto dx = to_device(x, stream()), df = to_device(f, stream()), dy = to_device(y, stream());
    DeviceBuffer<float> dz(x.size());
    launch_scale_rows(dx.get(), df.get(), dz.get(), H, Tp, D, stream());
    launch_add_scaled_rows(dy.get(), dx.get(), df.get(), H, Tp, D, stream());
    const auto z = to_host(dz, stream()), y2 = to_host(dy, stream());
    for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_FLOAT_EQ(z[i], x[i] * f[i / D]);
        EXPECT_NEAR(y2[i], y[i] + f[i / D] * x[i], 1e-6);
    }
    const std::vector<float> hf = {2.0f, -0.5f};
    auto dhf = to_device(hf, stream());
    launch_scale_per_head(dx.get(), dhf.get(), H, static_cast<int64_t>(Tp) * D, stream());
    const auto xs = to_host(dx, stream());
    for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(xs[i], x[i] * hf[i / (Tp * D)]);
}

TEST_F(KernelTest, StateNormSquared) {
    const int H = 3;
    const int64_t n = 64 * 100;
    const auto S = random_vector(static_cast<size_t>(H) * n, 90);
    auto dS = to_device(S, stream());
    DeviceBuffer<float> dout(H);
    launch_state_norm_sq(dS.get(), dout.get(), H, n, stream());
    std::vector<double> ref(H, 0.0);
    for (int h = 0; h < H; ++h)
        for (int64_t i = 0; i < n; ++i) ref[h] += double(S[h * n + i]) * S[h * n + i];
    EXPECT_LT(rel_max_error(to_host(dout, stream()), ref), kF32Tol);
}

TEST_F(KernelTest, RetentionScoresOfSelectedHeads) {
    const int H = 3, T = 9, Tp = 12, Dk = 100;
    const auto q = random_vector(static_cast<size_t>(H) * Tp * Dk, 100), k = random_vector(q.size(), 101);
    const auto rf = random_vector(static_cast<size_t>(H) * Tp, 102, 0.1f, 1.0f);
    const std::vector<float> log_decay = {std::log(0.9f), std::log(0.8f), 0.0f};
    auto dq = to_device(q, stream()), dk = to_device(k, stream()), drf = to_device(rf, stream());
    auto dld = to_device(log_decay, stream());
    DeviceBuffer<float> dout(static_cast<size_t>(2) * T * T);
    launch_retention_scores(dq.get(), dk.get(), dld.get(), drf.get(), dout.get(), 1, 2, T, Tp, Dk, stream());
    std::vector<double> ref(dout.size(), 0.0);
    for (int hi = 0; hi < 2; ++hi)
        for (int n = 0; n < T; ++n)
            for (int m = 0; m <= n; ++m) {
                const int h = 1 + hi;
                double dot = 0;
                for (int i = 0; i < Dk; ++i) dot += double(q[(h * Tp + n) * Dk + i]) * k[(h * Tp + m) * Dk + i];
                ref[(hi * T + n) * T + m] = dot * naive::decay_pow(log_decay[h], n - m) * rf[h * Tp + n];
            }
    EXPECT_LT(rel_max_error(to_host(dout, stream()), ref), kF32Tol);
}

}  // namespace
}  // namespace retnet::cuda::test
