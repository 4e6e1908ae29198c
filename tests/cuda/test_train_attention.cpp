// SPDX-License-Identifier: GPL-3.0-or-later
// The training attention kernels (train/train_attention.h) against the double twin of naive_ops.h,
// whose gradient is itself checked against finite differences of its forward (no GPU needed).
//
// Shapes: T = 1, odd T, T not a multiple of the tile (64 rows up to head dim 128, 32 at 256)
// and T of whole tiles, several sequences and heads, Dk ≠ Dv both ways, head dims that are not multiples of 4, the
// 1.3B head (Dk = Dv = 256), a long sequence of many tiles, and scores large enough that an
// unshifted exp would overflow. q, k, v lie head-major with padding rows (the trainer's layout)
// holding NaN, which the kernels must never read; o and d_o lie as rows.
//
// Tolerances: every value is an fp32 sum of at most T·max(Dk, Dv) ≤ 3.2e4 products, whose
// rounding grows like √n·6e-8 relative to the sum of magnitudes: ~1e-6 of the data's scale here
// (a score's error is absolute in p = exp(s − lse), ~1e-6 even for the sharp case's scores of
// std 13), with exp and the online rescaling adding a few ulps.
// 1e-4 (rel_max_error: max error over max |reference|) leaves that margin, while a wrong mask, a
// skipped or doubled tile, a mixed-up head or row misses by 1e-2 or more.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "cuda_test_util.h"
#include "naive_ops.h"
#include "retnet/error.h"
#include "train/train_attention.h"

namespace retnet::cuda::test {
namespace {

namespace tk = train_kernels;

TEST(NaiveAttention, GradientMatchesFiniteDifferences) {
    const int BH = 2, T = 5, Dk = 3, Dv = 4;
    const std::vector<float> fq = random_vector(BH * T * Dk, 1, -1.5f, 1.5f), fk = random_vector(BH * T * Dk, 2),
                             fv = random_vector(BH * T * Dv, 3), fw = random_vector(BH * T * Dv, 4);
    std::vector<double> q(fq.begin(), fq.end()), k(fk.begin(), fk.end()), v(fv.begin(), fv.end()),
        w(fw.begin(), fw.end());
    // loss = Σ o ⊙ w, so w is ∂loss/∂o.
    const auto loss = [&]() {
        naive::Vec o, lse;
        naive::attention(q, k, v, BH, T, Dk, Dv, o, lse);
        double sum = 0;
        for (size_t i = 0; i < o.size(); ++i) sum += o[i] * w[i];
        return sum;
    };
    naive::Vec dq, dk, dv;
    naive::attention_backward(q, k, v, w, BH, T, Dk, Dv, dq, dk, dv);
    const double h = 1e-6;
    for (auto [x, grad] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}})
        for (size_t i = 0; i < x->size(); ++i) {
            const double keep = (*x)[i];
            (*x)[i] = keep + h;
            const double up = loss();
            (*x)[i] = keep - h;
            const double down = loss();
            (*x)[i] = keep;
            EXPECT_NEAR((*grad)[i], (up - down) / (2 * h), 1e-8) << i;
        }
    // lse is the log of the softmax's normalizer: row 0 sees only key 0.
    naive::Vec o, lse;
    naive::attention(q, k, v, BH, T, Dk, Dv, o, lse);
    double s00 = 0;
    for (int c = 0; c < Dk; ++c) s00 += q[static_cast<size_t>(c)] * k[static_cast<size_t>(c)];
    EXPECT_NEAR(lse[0], s00, 1e-12);
}

struct AttentionCase {
    std::string name;
    int B, H, T, Dk, Dv;
    double q_scale = 2.0;  // q ~ U(−1, 1)·q_scale/√Dk, k ~ U(−1, 1): scores of std q_scale/3
    bool heads_as_rows = false;  // q, k, v as rows instead of padded head-major
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

// Dense (B·H, T, D) values placed where `l` puts them in a buffer of `total` values, the rest `fill`.
std::vector<float> place(const std::vector<float>& dense, const tk::HeadsLayout& l, int B, int H, int T, int D,
                         size_t total, float fill) {
    std::vector<float> out(total, fill);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < T; ++t)
                for (int c = 0; c < D; ++c)
                    out[static_cast<size_t>(b * l.seq + h * l.head + t * l.row + c)] =
                        dense[((static_cast<size_t>(b) * H + h) * T + t) * D + static_cast<size_t>(c)];
    return out;
}

// The inverse of place(): the dense (B·H, T, D) values of a buffer in layout `l`.
std::vector<float> gather(const std::vector<float>& buffer, const tk::HeadsLayout& l, int B, int H, int T, int D) {
    std::vector<float> dense(static_cast<size_t>(B) * H * T * D);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < T; ++t)
                for (int c = 0; c < D; ++c)
                    dense[((static_cast<size_t>(b) * H + h) * T + t) * D + static_cast<size_t>(c)] =
                        buffer[static_cast<size_t>(b * l.seq + h * l.head + t * l.row + c)];
    return dense;
}

class TrainAttentionTest : public CudaTest, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(TrainAttentionTest, ForwardAndBackwardMatchDoubleTwin) {
    const AttentionCase& c = GetParam();
    const int B = c.B, H = c.H, T = c.T, Dk = c.Dk, Dv = c.Dv, BH = B * H;
    const int Tp = T + 5;  // padding rows, as the chunkwise layout has
    const tk::AttentionShape shape{B, H, T, Dk, Dv};
    const tk::AttentionLayouts layouts{
        c.heads_as_rows ? tk::rows_layout(T, H, Dk) : tk::heads_layout(H, Tp, Dk),
        c.heads_as_rows ? tk::rows_layout(T, H, Dv) : tk::heads_layout(H, Tp, Dv), tk::rows_layout(T, H, Dv)};
    const size_t k_total = static_cast<size_t>(BH) * (c.heads_as_rows ? T : Tp) * Dk;
    const size_t v_total = static_cast<size_t>(BH) * (c.heads_as_rows ? T : Tp) * Dv;
    const size_t o_total = static_cast<size_t>(BH) * T * Dv;

    const size_t nk = static_cast<size_t>(BH) * T * Dk, nv = static_cast<size_t>(BH) * T * Dv;
    const float a = static_cast<float>(c.q_scale / std::sqrt(double(Dk)));
    const std::vector<float> q = random_vector(nk, 11, -a, a), k = random_vector(nk, 12), v = random_vector(nv, 13),
                             d_o = random_vector(nv, 14);
    naive::Vec o_ref, lse_ref, dq_ref, dk_ref, dv_ref;
    naive::attention(q, k, v, BH, T, Dk, Dv, o_ref, lse_ref);
    naive::attention_backward(q, k, v, d_o, BH, T, Dk, Dv, dq_ref, dk_ref, dv_ref);

    const float nan = std::numeric_limits<float>::quiet_NaN(), sentinel = 12345.0f;
    auto d_q = to_device(place(q, layouts.qk, B, H, T, Dk, k_total, nan), stream());
    auto d_k = to_device(place(k, layouts.qk, B, H, T, Dk, k_total, nan), stream());
    auto d_v = to_device(place(v, layouts.v, B, H, T, Dv, v_total, nan), stream());
    auto d_o_rows = to_device(place(d_o, layouts.o, B, H, T, Dv, o_total, nan), stream());
    DeviceBuffer<float> d_out(o_total), d_lse(static_cast<size_t>(B) * T * H);
    tk::attention_forward(shape, layouts, d_q.get(), d_k.get(), d_v.get(), d_out.get(), d_lse.get(), stream());
    EXPECT_LT(rel_max_error(gather(to_host(d_out, stream()), layouts.o, B, H, T, Dv), o_ref), 1e-4);
    const std::vector<float> lse = to_host(d_lse, stream());  // (B·T, H)
    naive::Vec lse_rows(lse.size());
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < T; ++t)
                lse_rows[(static_cast<size_t>(b) * T + t) * H + h] = lse_ref[(static_cast<size_t>(b) * H + h) * T + t];
    EXPECT_LT(rel_max_error(lse, lse_rows), 1e-4);

    DeviceBuffer<float> scratch(static_cast<size_t>(tk::attention_backward_scratch_floats(shape)));
    std::vector<std::vector<float>> runs;  // dq, dk, dv of two runs
    for (int run = 0; run < 2; ++run) {
        auto d_dq = to_device(std::vector<float>(k_total, sentinel), stream());
        auto d_dk = to_device(std::vector<float>(k_total, sentinel), stream());
        auto d_dv = to_device(std::vector<float>(v_total, sentinel), stream());
        tk::attention_backward(shape, layouts, d_q.get(), d_k.get(), d_v.get(), d_out.get(), d_lse.get(),
                               d_o_rows.get(), d_dq.get(), d_dk.get(), d_dv.get(), scratch.get(), stream());
        for (DeviceBuffer<float>* g : {&d_dq, &d_dk, &d_dv}) runs.push_back(to_host(*g, stream()));
    }
    EXPECT_LT(rel_max_error(gather(runs[0], layouts.qk, B, H, T, Dk), dq_ref), 1e-4) << "dq";
    EXPECT_LT(rel_max_error(gather(runs[1], layouts.qk, B, H, T, Dk), dk_ref), 1e-4) << "dk";
    EXPECT_LT(rel_max_error(gather(runs[2], layouts.v, B, H, T, Dv), dv_ref), 1e-4) << "dv";
    // Fixed summation order, no atomics: the same bits again.
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(std::memcmp(runs[static_cast<size_t>(i)].data(), runs[static_cast<size_t>(i + 3)].data(),
                              runs[static_cast<size_t>(i)].size() * sizeof(float)),
                  0)
            << i;
    // The padding rows are left as they were.
    if (!c.heads_as_rows)
        for (int bh = 0; bh < BH; ++bh)
            for (int t = T; t < Tp; ++t) {
                EXPECT_EQ(runs[0][(static_cast<size_t>(bh) * Tp + t) * Dk], sentinel);
                EXPECT_EQ(runs[1][(static_cast<size_t>(bh) * Tp + t) * Dk], sentinel);
                EXPECT_EQ(runs[2][(static_cast<size_t>(bh) * Tp + t) * Dv], sentinel);
            }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TrainAttentionTest,
    ::testing::Values(AttentionCase{"T1_SeveralSequences", 3, 2, 1, 64, 64},
                      AttentionCase{"OddT37", 1, 2, 37, 16, 16},
                      AttentionCase{"T130_NotTileMultiple", 2, 2, 130, 64, 64},
                      AttentionCase{"Dk64_Dv128", 2, 2, 130, 64, 128},
                      AttentionCase{"Dk128_Dv64_HeadsAsRows", 2, 3, 67, 128, 64, 2.0, true},
                      AttentionCase{"OddHeadDims", 2, 1, 37, 24, 41},
                      AttentionCase{"T128_WholeTiles_SmallHeads", 3, 2, 128, 8, 8},
                      AttentionCase{"Head256_1p3B", 1, 2, 70, 256, 256},
                      AttentionCase{"Head256_T33_Dv200", 2, 1, 33, 256, 200},
                      AttentionCase{"Long1000", 1, 1, 1000, 32, 32},
                      AttentionCase{"SharpScores", 2, 1, 130, 64, 64, 40.0}),
    [](const ::testing::TestParamInfo<AttentionCase>& case_info) { return case_info.param.name; });

// Checked before any device work, so it needs no GPU.
TEST(TrainAttention, RefusesHeadDimsAboveTheLimit) {
    const tk::AttentionShape shape{1, 1, 4, 264, 64};
    const tk::AttentionLayouts layouts{tk::rows_layout(4, 1, 264), tk::rows_layout(4, 1, 64), tk::rows_layout(4, 1, 64)};
    EXPECT_THROW(tk::attention_forward(shape, layouts, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace retnet::cuda::test
