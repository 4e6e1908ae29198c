// SPDX-License-Identifier: GPL-3.0-or-later
// The layer kernels shared by inference and training (kernels/src/layer_kernels.h) in the forms
// the trainer uses — batches of sequences, saved factors, backwards — against the CPU op library
// run in double (retnet/cpu_ops.h, itself checked against finite differences in
// tests/core/test_train_grad.cpp). Shapes are awkward on purpose: row counts that are not
// multiples of the kernels' rows per block, widths that are not multiples of a warp.
// fp32 kernels must agree within 1e-5 of the data's scale (float rounding of short sums).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "cuda_test_util.h"
#include "layer_kernels.h"
#include "retnet/cpu_ops.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

namespace lk = layer_kernels;
constexpr double kF32Tol = 1e-5;

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

class LayerKernelTest : public CudaTest {};

TEST_F(LayerKernelTest, RmsNormForwardKeepsRstdAndBackwardMatchesTheCpuOp) {
    for (const int dim : {37, 384, 2048}) {  // a block a row; a warp a row, 3 and 16 runs of four floats a lane
        SCOPED_TRACE("dim " + std::to_string(dim));
        const int64_t rows = 70;  // 9 backward blocks of 8 rows, the last one partial
        const auto x = random_vector(static_cast<size_t>(rows * dim), 11, -2.0f, 2.0f);
        const auto w = random_vector(static_cast<size_t>(dim), 12, 0.5f, 1.5f);
        const auto dy = random_vector(x.size(), 13);
        const auto dx0 = random_vector(x.size(), 14);  // the backward accumulates into dx
        for (bool weighted : {true, false}) {
            auto d_x = to_device(x, stream());
            auto d_w = to_device(w, stream());
            auto d_dy = to_device(dy, stream());
            auto d_dx = to_device(dx0, stream());
            auto d_dw = to_device(std::vector<float>(static_cast<size_t>(dim), 0.25f), stream());
            DeviceBuffer<float> d_y(x.size()), d_rstd(static_cast<size_t>(rows)),
                partials(static_cast<size_t>(lk::rmsnorm_backward_parts(rows) * dim));
            const float* wp = weighted ? d_w.get() : nullptr;
            lk::rmsnorm_forward(d_x.get(), wp, rows, dim, 1e-6f, d_y.get(), d_rstd.get(), stream());
            lk::rmsnorm_backward(d_x.get(), wp, d_rstd.get(), d_dy.get(), rows, dim, d_dx.get(),
                                 weighted ? d_dw.get() : nullptr, partials.get(), stream());

            const std::vector<double> xd = widen(x), wd = widen(w), dyd = widen(dy);
            std::vector<double> y(x.size()), rstd(static_cast<size_t>(rows)), dx = widen(dx0),
                dw(static_cast<size_t>(dim), 0.25);
            const double* wpd = weighted ? wd.data() : nullptr;
            cpu::rmsnorm_forward(xd.data(), wpd, rows, dim, 1e-6, y.data(), rstd.data());
            cpu::rmsnorm_backward(xd.data(), wpd, rstd.data(), dyd.data(), rows, dim, dx.data(), weighted ? dw.data() : nullptr);
            EXPECT_LT(rel_max_error(to_host(d_y, stream()), y), kF32Tol) << weighted;
            EXPECT_LT(rel_max_error(to_host(d_rstd, stream()), rstd), kF32Tol) << weighted;
            EXPECT_LT(rel_max_error(to_host(d_dx, stream()), dx), kF32Tol) << weighted;
            if (weighted) {
                EXPECT_LT(rel_max_error(to_host(d_dw, stream()), dw), kF32Tol);
            }
        }
    }
}

// The gate reads o in rows (training) or head-major (inference) with the same bits; its backward
// against the CPU op. Dv = 40 spans more than a warp's 32 lanes and takes the backward's two-pass
// loop; 64 and 512 its register-held pairs; 67 rows × 3 heads leave the last backward block of 64
// pairs partial.
TEST_F(LayerKernelTest, HeadNormGateInBothLayoutsAndItsBackward) {
    for (const int Dv : {40, 64, 512}) {
        SCOPED_TRACE("Dv " + std::to_string(Dv));
        const int B = 1, T = 67, Tp = 72, H = 3;
        const int64_t rows = int64_t(B) * T, n = rows * H * Dv;
        const auto o = random_vector(static_cast<size_t>(n), 21, -2.0f, 2.0f);
        const auto g = random_vector(o.size(), 22, -3.0f, 3.0f);
        const auto w = random_vector(static_cast<size_t>(Dv), 23, 0.5f, 1.5f);
        const auto dy = random_vector(o.size(), 24);
        std::vector<float> o_heads(static_cast<size_t>(H) * Tp * Dv, 7.0f);  // padding rows hold garbage
        for (int t = 0; t < T; ++t)
            for (int h = 0; h < H; ++h)
                for (int i = 0; i < Dv; ++i)
                    o_heads[(static_cast<size_t>(h) * Tp + t) * Dv + i] = o[(static_cast<size_t>(t) * H + h) * Dv + i];
        auto d_o = to_device(o, stream());
        auto d_oh = to_device(o_heads, stream());
        auto d_g = to_device(g, stream());
        auto d_w = to_device(w, stream());
        auto d_dy = to_device(dy, stream());
        DeviceBuffer<float> d_y(o.size()), d_y2(o.size()), d_rstd(static_cast<size_t>(rows * H)), d_do(o.size()),
            d_dg(o.size()), partials(static_cast<size_t>(lk::head_norm_gate_backward_parts(rows, H) * Dv));
        auto d_dw = to_device(std::vector<float>(static_cast<size_t>(Dv), 0.0f), stream());
        lk::head_norm_gate_forward({d_o.get()}, d_g.get(), d_w.get(), rows, H, Dv, 1e-6f, d_y.get(), d_rstd.get(),
                                   stream());
        lk::head_norm_gate_forward({d_oh.get(), T, Tp}, d_g.get(), d_w.get(), rows, H, Dv, 1e-6f, d_y2.get(), nullptr,
                                   stream());
        lk::head_norm_gate_backward(d_o.get(), d_g.get(), d_w.get(), d_rstd.get(), d_dy.get(), rows, H, Dv, d_do.get(),
                                    d_dg.get(), d_dw.get(), partials.get(), stream());
        const std::vector<float> y = to_host(d_y, stream());
        EXPECT_EQ(std::memcmp(y.data(), to_host(d_y2, stream()).data(), y.size() * sizeof(float)), 0);

        const std::vector<double> od = widen(o), gd = widen(g), wd = widen(w), dyd = widen(dy);
        std::vector<double> yr(o.size()), rstd(static_cast<size_t>(rows * H)), dor(o.size()), dgr(o.size()),
            dwr(static_cast<size_t>(Dv), 0.0);
        cpu::head_norm_gate_forward(od.data(), gd.data(), wd.data(), rows, H, Dv, 1e-6, yr.data(), rstd.data());
        cpu::head_norm_gate_backward(od.data(), gd.data(), wd.data(), rstd.data(), dyd.data(), rows, H, Dv, dor.data(),
                                     dgr.data(), dwr.data());
        EXPECT_LT(rel_max_error(y, yr), kF32Tol);
        EXPECT_LT(rel_max_error(to_host(d_rstd, stream()), rstd), kF32Tol);
        EXPECT_LT(rel_max_error(to_host(d_do, stream()), dor), kF32Tol);
        EXPECT_LT(rel_max_error(to_host(d_dg, stream()), dgr), kF32Tol);
        EXPECT_LT(rel_max_error(to_host(d_dw, stream()), dwr), kF32Tol);
    }
}

// A batch of sequences in rows → head-major with padding, both pair layouts, at position 0 and
// at a later one; the backward against the CPU op's transpose.
TEST_F(LayerKernelTest, RotaryOfABatchAndItsTransposeMatchTheCpuOp) {
    const int B = 2, T = 5, Tp = 8, H = 3, Dk = 6;
    const std::vector<float> theta = default_rotary_theta(Family::Fla, Dk);
    auto d_theta = to_device(theta, stream());
    const auto src = random_vector(static_cast<size_t>(B) * T * H * Dk, 31);
    const auto grad_heads = random_vector(static_cast<size_t>(B) * H * Tp * Dk, 32);
    auto d_src = to_device(src, stream());
    auto d_gh = to_device(grad_heads, stream());
    const cpu::RotaryShape shape{B, T, H, Dk};
    for (bool interleaved : {false, true})
        for (int64_t pos0 : {int64_t{0}, int64_t{1234}}) {
            const lk::RotaryArgs args{d_theta.get(), pos0, 0.5f, interleaved};
            const cpu::RotaryPairs pairs = interleaved ? cpu::RotaryPairs::Interleaved : cpu::RotaryPairs::HalfSplit;
            DeviceBuffer<float> d_heads(grad_heads.size()), d_rows(src.size());
            lk::rotary_forward(d_src.get(), d_heads.get(), B, T, Tp, H, Dk, args, stream());
            lk::rotary_backward(d_gh.get(), d_rows.get(), B, T, Tp, H, Dk, args, stream());

            std::vector<double> rows = widen(src);
            cpu::rotary_forward(rows.data(), shape, theta.data(), pairs, 0.5, pos0);
            std::vector<double> heads(grad_heads.size(), 0.0), grad_rows(src.size());
            for (int b = 0; b < B; ++b)
                for (int t = 0; t < T; ++t)
                    for (int h = 0; h < H; ++h)
                        for (int i = 0; i < Dk; ++i) {
                            const size_t r = ((static_cast<size_t>(b) * T + t) * H + h) * Dk + i;
                            const size_t m = ((static_cast<size_t>(b) * H + h) * Tp + t) * Dk + i;
                            heads[m] = rows[r];
                            grad_rows[r] = grad_heads[m];
                        }
            cpu::rotary_backward(grad_rows.data(), shape, theta.data(), pairs, 0.5, pos0);
            EXPECT_LT(rel_max_error(to_host(d_heads, stream()), heads), kF32Tol) << interleaved << " " << pos0;
            EXPECT_LT(rel_max_error(to_host(d_rows, stream()), grad_rows), kF32Tol) << interleaved << " " << pos0;
        }
}

// D = 7 moves single floats, D = 12 four at a time.
TEST_F(LayerKernelTest, LayoutChangesOfABatchRoundTripAndPad) {
    for (const int D : {7, 12}) {
        SCOPED_TRACE("D " + std::to_string(D));
        const int B = 3, T = 5, Tp = 8, H = 2;
        const auto src = random_vector(static_cast<size_t>(B) * T * H * D, 41);
        auto d_src = to_device(src, stream());
        DeviceBuffer<float> d_heads(static_cast<size_t>(B) * H * Tp * D), d_back(src.size());
        lk::rows_to_heads(d_src.get(), d_heads.get(), B, T, Tp, H, D, stream());
        lk::heads_to_rows(d_heads.get(), d_back.get(), B, T, Tp, H, D, stream());
        const auto heads = to_host(d_heads, stream());
        EXPECT_EQ(to_host(d_back, stream()), src);
        for (int b = 0; b < B; ++b)
            for (int h = 0; h < H; ++h)
                for (int t = 0; t < Tp; ++t)
                    for (int i = 0; i < D; ++i) {
                        const float got = heads[((static_cast<size_t>(b) * H + h) * Tp + t) * D + i];
                        const float want = t < T ? src[((static_cast<size_t>(b) * T + t) * H + h) * D + i] : 0.0f;
                        ASSERT_EQ(got, want) << b << " " << h << " " << t << " " << i;
                    }
    }
}

// The trainer's bf16 projections take the backward's rows in bf16 straight from these kernels:
// they must be the float rows rounded to nearest even, bit for bit (what a conversion after the
// float kernel gave before).
TEST_F(LayerKernelTest, BackwardRowsInBf16AreTheFloatRowsRounded) {
    const auto expect_rounded = [&](const DeviceBuffer<float>& f, const DeviceBuffer<__nv_bfloat16>& b16, size_t n,
                                    const std::string& what) {
        const std::vector<float> wide = to_host(f, stream());
        std::vector<__nv_bfloat16> narrow(n);
        b16.download(narrow.data(), n, stream());
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream()));
        int rounded_away = 0;
        for (size_t i = 0; i < n; ++i) {
            const float want = __bfloat162float(__float2bfloat16_rn(wide[i]));
            ASSERT_EQ(__bfloat162float(narrow[i]), want) << what << " element " << i;
            rounded_away += want != wide[i];
        }
        EXPECT_GT(rounded_away, 0) << what << ": the data must need rounding for the check to mean anything";
    };
    for (const int Dk : {6, 8}) {  // the layout change moves single values at 6, four at a time at 8
        const int B = 2, T = 5, Tp = 8, H = 3;
        const std::vector<float> theta = default_rotary_theta(Family::Fla, Dk);
        auto d_theta = to_device(theta, stream());
        const auto grad_heads = random_vector(static_cast<size_t>(B) * H * Tp * Dk, 33, -3.0f, 3.0f);
        auto d_gh = to_device(grad_heads, stream());
        const size_t n_rows = static_cast<size_t>(B) * T * H * Dk;
        const std::string at = " at Dk " + std::to_string(Dk);
        for (bool interleaved : {false, true}) {
            const lk::RotaryArgs args{d_theta.get(), 7, 0.5f, interleaved};
            DeviceBuffer<float> d_rows(n_rows);
            DeviceBuffer<__nv_bfloat16> d_rows16(n_rows);
            lk::rotary_backward(d_gh.get(), d_rows.get(), B, T, Tp, H, Dk, args, stream());
            lk::rotary_backward(d_gh.get(), d_rows16.get(), B, T, Tp, H, Dk, args, stream());
            expect_rounded(d_rows, d_rows16, n_rows, (interleaved ? "rotary, interleaved" : "rotary, half split") + at);
        }
        DeviceBuffer<float> d_rows(n_rows);
        DeviceBuffer<__nv_bfloat16> d_rows16(n_rows);
        lk::heads_to_rows(d_gh.get(), d_rows.get(), B, T, Tp, H, Dk, stream());
        lk::heads_to_rows(d_gh.get(), d_rows16.get(), B, T, Tp, H, Dk, stream());
        expect_rounded(d_rows, d_rows16, n_rows, "layout" + at);
    }
}

TEST_F(LayerKernelTest, GluBackwardMatchesTheCpuOpForBothActivations) {
    const int64_t n = 1001;  // not a multiple of the block
    const auto a = random_vector(static_cast<size_t>(n), 51, -4.0f, 4.0f);
    const auto b = random_vector(a.size(), 52);
    const auto dh = random_vector(a.size(), 53);
    auto d_a = to_device(a, stream());
    auto d_b = to_device(b, stream());
    auto d_dh = to_device(dh, stream());
    for (bool gelu : {false, true}) {
        DeviceBuffer<float> d_da(a.size()), d_db(a.size());
        lk::glu_backward(d_a.get(), d_b.get(), d_dh.get(), n, gelu, d_da.get(), d_db.get(), stream());
        const std::vector<double> ad = widen(a), bd = widen(b), dhd = widen(dh);
        std::vector<double> da(a.size()), db(a.size());
        cpu::glu_backward(ad.data(), bd.data(), dhd.data(), n, gelu ? Activation::Gelu : Activation::Swish, da.data(),
                          db.data());
        EXPECT_LT(rel_max_error(to_host(d_da, stream()), da), kF32Tol) << gelu;
        EXPECT_LT(rel_max_error(to_host(d_db, stream()), db), kF32Tol) << gelu;
    }
}

// The cuda-bf16 trainer keeps the gate g, the retention output o and the FFN's a and b in bf16. From
// bf16 the gate's and the GLU's kernels must give, bit for bit, what their float kernels give on the
// same values widened (the arithmetic stays float); where they also write bf16 (y, dg, h, da, db: the
// projections' operands), the float results rounded to nearest even. Dv 40 takes the backward's
// two-pass loop, 64 and 512 its register-held pairs.
TEST_F(LayerKernelTest, GateAndGluFromBf16AreTheFloatKernelsOnTheWidenedValues) {
    const auto narrow = [](const std::vector<float>& v) {
        std::vector<__nv_bfloat16> out(v.size());
        for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
        return out;
    };
    const auto widen16 = [](const std::vector<__nv_bfloat16>& v) {
        std::vector<float> out(v.size());
        for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
        return out;
    };
    const auto expect_same_bits = [&](const DeviceBuffer<float>& a, const DeviceBuffer<float>& b, const char* what) {
        const std::vector<float> ha = to_host(a, stream()), hb = to_host(b, stream());
        ASSERT_EQ(ha.size(), hb.size());
        EXPECT_EQ(std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(float)), 0) << what;
    };
    // b16 holds a's floats rounded
    const auto expect_rounded = [&](const DeviceBuffer<float>& a, const DeviceBuffer<__nv_bfloat16>& b16,
                                    const char* what) {
        const std::vector<__nv_bfloat16> want = narrow(to_host(a, stream())), got = to_host(b16, stream());
        ASSERT_EQ(want.size(), got.size());
        EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(__nv_bfloat16)), 0) << what;
    };
    for (const int Dv : {40, 64, 512}) {
        SCOPED_TRACE("Dv " + std::to_string(Dv));
        const int64_t rows = 67, H = 3, n = rows * H * Dv;
        const auto o16 = narrow(random_vector(static_cast<size_t>(n), 71, -2.0f, 2.0f));
        const auto g16 = narrow(random_vector(static_cast<size_t>(n), 72, -3.0f, 3.0f));
        const auto w = random_vector(static_cast<size_t>(Dv), 73, 0.5f, 1.5f);
        const auto dy = random_vector(static_cast<size_t>(n), 74);
        auto d_o16 = to_device(o16, stream()), d_g16 = to_device(g16, stream());
        auto d_o = to_device(widen16(o16), stream()), d_g = to_device(widen16(g16), stream());
        auto d_w = to_device(w, stream()), d_dy = to_device(dy, stream());
        const size_t parts = static_cast<size_t>(lk::head_norm_gate_backward_parts(rows, H) * Dv);
        DeviceBuffer<float> y[2], rstd[2], d_o_grad[2], dg[2], partials[2];
        DeviceBuffer<float> dw[2] = {to_device(std::vector<float>(static_cast<size_t>(Dv), 0.0f), stream()),
                                     to_device(std::vector<float>(static_cast<size_t>(Dv), 0.0f), stream())};
        for (int k = 0; k < 2; ++k) {
            for (DeviceBuffer<float>* b : {&y[k], &d_o_grad[k], &dg[k]}) b->resize(static_cast<size_t>(n));
            rstd[k].resize(static_cast<size_t>(rows * H));
            partials[k].resize(parts);
        }
        lk::head_norm_gate_forward({d_o.get()}, d_g.get(), d_w.get(), rows, H, Dv, 1e-6f, y[0].get(), rstd[0].get(),
                                   stream());
        lk::head_norm_gate_forward(d_o16.get(), d_g16.get(), d_w.get(), rows, H, Dv, 1e-6f, y[1].get(), rstd[1].get(),
                                   stream());
        lk::head_norm_gate_backward(d_o.get(), d_g.get(), d_w.get(), rstd[0].get(), d_dy.get(), rows, H, Dv,
                                    d_o_grad[0].get(), dg[0].get(), dw[0].get(), partials[0].get(), stream());
        lk::head_norm_gate_backward(d_o16.get(), d_g16.get(), d_w.get(), rstd[0].get(), d_dy.get(), rows, H, Dv,
                                    d_o_grad[1].get(), dg[1].get(), dw[1].get(), partials[1].get(), stream());
        expect_same_bits(y[0], y[1], "gate y");
        expect_same_bits(rstd[0], rstd[1], "gate rstd");
        expect_same_bits(d_o_grad[0], d_o_grad[1], "gate d_o");
        expect_same_bits(dg[0], dg[1], "gate dg");
        expect_same_bits(dw[0], dw[1], "gate dw");

        DeviceBuffer<__nv_bfloat16> y16(static_cast<size_t>(n)), dg16(static_cast<size_t>(n));
        DeviceBuffer<float> rstd16(static_cast<size_t>(rows * H)), d_o_grad16(static_cast<size_t>(n));
        DeviceBuffer<float> dw16 = to_device(std::vector<float>(static_cast<size_t>(Dv), 0.0f), stream());
        lk::head_norm_gate_forward(d_o16.get(), d_g16.get(), d_w.get(), rows, H, Dv, 1e-6f, y16.get(), rstd16.get(),
                                   stream());
        lk::head_norm_gate_backward(d_o16.get(), d_g16.get(), d_w.get(), rstd[0].get(), d_dy.get(), rows, H, Dv,
                                    d_o_grad16.get(), dg16.get(), dw16.get(), partials[1].get(), stream());
        expect_rounded(y[0], y16, "gate y in bf16");
        expect_same_bits(rstd[0], rstd16, "gate rstd beside a bf16 y");
        expect_rounded(dg[0], dg16, "gate dg in bf16");
        expect_same_bits(d_o_grad[0], d_o_grad16, "gate d_o beside a bf16 dg");
        expect_same_bits(dw[0], dw16, "gate dw beside a bf16 dg");
    }
    // n not a multiple of 8 (one element a thread), and a multiple (eight a thread)
    for (const int64_t n : {int64_t{1001}, int64_t{4096}}) {
        SCOPED_TRACE("n " + std::to_string(n));
        const auto a16 = narrow(random_vector(static_cast<size_t>(n), 75, -4.0f, 4.0f));
        const auto b16 = narrow(random_vector(static_cast<size_t>(n), 76));
        auto d_a16 = to_device(a16, stream()), d_b16 = to_device(b16, stream());
        auto d_a = to_device(widen16(a16), stream()), d_b = to_device(widen16(b16), stream());
        auto d_dh = to_device(random_vector(static_cast<size_t>(n), 77), stream());
        for (bool gelu : {false, true}) {
            DeviceBuffer<float> h[2], da[2], db[2];
            for (int k = 0; k < 2; ++k)
                for (DeviceBuffer<float>* b : {&h[k], &da[k], &db[k]}) b->resize(static_cast<size_t>(n));
            lk::glu_forward(d_a.get(), d_b.get(), n, gelu, h[0].get(), stream());
            lk::glu_forward(d_a16.get(), d_b16.get(), n, gelu, h[1].get(), stream());
            lk::glu_backward(d_a.get(), d_b.get(), d_dh.get(), n, gelu, da[0].get(), db[0].get(), stream());
            lk::glu_backward(d_a16.get(), d_b16.get(), d_dh.get(), n, gelu, da[1].get(), db[1].get(), stream());
            expect_same_bits(h[0], h[1], gelu ? "gelu h" : "swish h");
            expect_same_bits(da[0], da[1], gelu ? "gelu da" : "swish da");
            expect_same_bits(db[0], db[1], gelu ? "gelu db" : "swish db");
            DeviceBuffer<__nv_bfloat16> h16(static_cast<size_t>(n)), da16(static_cast<size_t>(n)), db16(static_cast<size_t>(n));
            lk::glu_forward(d_a16.get(), d_b16.get(), n, gelu, h16.get(), stream());
            lk::glu_backward(d_a16.get(), d_b16.get(), d_dh.get(), n, gelu, da16.get(), db16.get(), stream());
            expect_rounded(h[0], h16, gelu ? "gelu h in bf16" : "swish h in bf16");
            expect_rounded(da[0], da16, gelu ? "gelu da in bf16" : "swish da in bf16");
            expect_rounded(db[0], db16, gelu ? "gelu db in bf16" : "swish db in bf16");
        }
    }
}

// Many (row, head) pairs of bf16 o and g take the gate's forward in runs of eight elements per lane:
// against the CPU op in double on the widened values, and its bf16 y the float y rounded.
TEST_F(LayerKernelTest, GateForwardOfManyBf16PairsMatchesTheCpuOp) {
    const auto narrow = [](const std::vector<float>& v) {
        std::vector<__nv_bfloat16> out(v.size());
        for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
        return out;
    };
    for (const int Dv : {40, 64, 512}) {
        SCOPED_TRACE("Dv " + std::to_string(Dv));
        const int64_t rows = 411, H = 3, n = rows * H * Dv;  // 1233 pairs: one warp each
        const auto o16 = narrow(random_vector(static_cast<size_t>(n), 91, -2.0f, 2.0f));
        const auto g16 = narrow(random_vector(static_cast<size_t>(n), 92, -3.0f, 3.0f));
        const auto w = random_vector(static_cast<size_t>(Dv), 93, 0.5f, 1.5f);
        auto d_o16 = to_device(o16, stream()), d_g16 = to_device(g16, stream());
        auto d_w = to_device(w, stream());
        DeviceBuffer<float> y(static_cast<size_t>(n)), rstd(static_cast<size_t>(rows * H)),
            rstd16(static_cast<size_t>(rows * H));
        DeviceBuffer<__nv_bfloat16> y16(static_cast<size_t>(n));
        lk::head_norm_gate_forward(d_o16.get(), d_g16.get(), d_w.get(), rows, H, Dv, 1e-6f, y.get(), rstd.get(), stream());
        lk::head_norm_gate_forward(d_o16.get(), d_g16.get(), d_w.get(), rows, H, Dv, 1e-6f, y16.get(), rstd16.get(),
                                   stream());
        std::vector<double> od(o16.size()), gd(g16.size());
        for (size_t i = 0; i < o16.size(); ++i) od[i] = __bfloat162float(o16[i]), gd[i] = __bfloat162float(g16[i]);
        const std::vector<double> wd = widen(w);
        std::vector<double> yr(static_cast<size_t>(n)), rstd_ref(static_cast<size_t>(rows * H));
        cpu::head_norm_gate_forward(od.data(), gd.data(), wd.data(), rows, H, Dv, 1e-6, yr.data(), rstd_ref.data());
        const std::vector<float> yf = to_host(y, stream());
        EXPECT_LT(rel_max_error(yf, yr), kF32Tol);
        EXPECT_LT(rel_max_error(to_host(rstd, stream()), rstd_ref), kF32Tol);
        const std::vector<__nv_bfloat16> want = narrow(yf), got = to_host(y16, stream());
        EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(__nv_bfloat16)), 0);
    }
}

// The cuda-bf16 trainer's norms write their output in bf16 for the projections: the float output
// rounded to nearest even, and the same rstd.
TEST_F(LayerKernelTest, RmsNormInBf16IsTheFloatOutputRounded) {
    for (const int dim : {37, 384, 2048}) {  // one block a row; one warp a row, 3 and 16 runs a lane
        SCOPED_TRACE("dim " + std::to_string(dim));
        const int64_t rows = 19;
        const auto x = random_vector(static_cast<size_t>(rows * dim), 81, -3.0f, 3.0f);
        const auto w = random_vector(static_cast<size_t>(dim), 82, 0.5f, 1.5f);
        auto d_x = to_device(x, stream()), d_w = to_device(w, stream());
        DeviceBuffer<float> y(x.size()), rstd(static_cast<size_t>(rows)), rstd16(static_cast<size_t>(rows));
        DeviceBuffer<__nv_bfloat16> y16(x.size());
        lk::rmsnorm_forward(d_x.get(), d_w.get(), rows, dim, 1e-6f, y.get(), rstd.get(), stream());
        lk::rmsnorm_forward(d_x.get(), d_w.get(), rows, dim, 1e-6f, y16.get(), rstd16.get(), stream());
        const std::vector<float> yf = to_host(y, stream());
        const std::vector<__nv_bfloat16> got = to_host(y16, stream());
        size_t differ = 0;
        for (size_t i = 0; i < yf.size(); ++i) {
            const __nv_bfloat16 want = __float2bfloat16_rn(yf[i]);
            differ += std::memcmp(&want, &got[i], sizeof want) != 0;
        }
        EXPECT_EQ(differ, 0u);
        const std::vector<float> r = to_host(rstd, stream()), r16 = to_host(rstd16, stream());
        EXPECT_EQ(std::memcmp(r.data(), r16.data(), r.size() * sizeof(float)), 0);
    }
}

TEST_F(LayerKernelTest, EmbeddingOfABatchGathersRowsUnscaled) {
    const int V = 9, d = 45;
    const std::vector<int32_t> tokens = {8, 0, 3, 3, 8, 1, 0};  // two sequences' rows, repeats
    const auto E = random_vector(static_cast<size_t>(V) * d, 61);
    auto d_E = to_device(E, stream());
    auto d_tok = to_device(tokens, stream());
    DeviceBuffer<float> d_x(tokens.size() * d);
    lk::embedding_forward(d_tok.get(), d_E.get(), d_x.get(), static_cast<int64_t>(tokens.size()), d, 1.0f, stream());
    const auto x = to_host(d_x, stream());
    for (size_t r = 0; r < tokens.size(); ++r)
        for (int i = 0; i < d; ++i) ASSERT_EQ(x[r * d + i], E[static_cast<size_t>(tokens[r]) * d + i]);
}

}  // namespace
}  // namespace retnet::cuda::test
