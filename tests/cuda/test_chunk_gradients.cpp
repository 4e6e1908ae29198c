// SPDX-License-Identifier: GPL-3.0-or-later
// The chunkwise backward's gradient passes (chunk_output.cu, launch_chunk_gradient) against their
// naive double twin, after the scores pass that feeds them (A from Q, K; dA from dO, V):
//   dQ_c = dA_c K_c   + diag(γ^(t+1))   dO_c S_cᵀ
//   dK_c = dA_cᵀ Q_c  + diag(γ^(C−1−t)) V_c  G_cᵀ
//   dV_c = A_cᵀ dO_c  + diag(γ^(C−1−t)) K_c  G_c
// with A_c(t, s) = (q_t·k_s)·γ^(t−s), dA_c(t, s) = (do_t·v_s)·γ^(t−s) for s ≤ t in the chunk, else 0;
// S_c and G_c are random (the pass takes them as inputs, whatever walk made them).
//
// Both precisions of the products (ops.h, ChunkProducts): TF32, u = 2^-11; bf16, u = 2^-8; bf16 also
// with the operands stored in bf16 (the data rounded before the reference sees them). As in
// the forward's test (test_chunk_states.cpp), every term is a product of rounded factors: a score
// (within 3u of its own terms' magnitudes: two rounded factors, then the score rounded) times a
// rounded y, or a rounded x times a rounded M entry (times r_t in fp32), so each errs by at most 4u of its
// magnitude.
// Beyond the roundings, each fp32 step errs by at most 2^-23 of the magnitudes: this pass's C + Dr
// additions, the scores pass's (its width), and the few products of decays before the rounding.
// A wrong decay, transpose, mask or index errs by whole terms.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "ops.h"
#include "retnet/error.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

struct ChunkGradientCase {
    int H, decay_heads, nC, C, Dk, Dv;
};

// One gradient's operands: out_c = diag(r_t) X_c M_c + Â_c Y_c, the scores made from (score_q, score_k).
struct GradientPass {
    const std::vector<float>& score_q;  // (H, Tp, score_width)
    const std::vector<float>& score_k;  // (H, Tp, score_width)
    int score_width;
    bool transposed_scores;             // Â = the scores' transpose
    const std::vector<float>& x;        // (H, Tp, Dr)
    const std::vector<float>& m;        // (H, nC, Dk, Dv): per chunk (Dr, Dout), or (Dout, Dr) when transposed_m
    bool transposed_m;
    bool tail_decay;                    // r_t = γ^(C−1−t), else γ^(t+1)
    const std::vector<float>& y;        // (H, Tp, Dout)
    int Dr, Dout;
};

class ChunkGradientTest
    : public CudaTest,
      public ::testing::WithParamInterface<std::tuple<ChunkGradientCase, ChunkGradient, ChunkPrecision>> {};

TEST_P(ChunkGradientTest, EqualsIntraChunkPlusStateTerms) {
    const auto [H, decay_heads, nC, C, Dk, Dv] = std::get<0>(GetParam());
    const ChunkGradient which = std::get<1>(GetParam());
    const ChunkPrecision precision = std::get<2>(GetParam());
    const ChunkProducts products = precision.products;
    const double u = unit_roundoff(products);
    const int Tp = nC * C;
    const auto stored = [&](std::vector<float> x) { return as_stored(precision, std::move(x)); };
    const auto q = stored(random_vector(static_cast<size_t>(H) * Tp * Dk, 91));  // (H, Tp, Dk)
    const auto k = stored(random_vector(q.size(), 92));                          // (H, Tp, Dk)
    const auto v = stored(random_vector(static_cast<size_t>(H) * Tp * Dv, 93));  // (H, Tp, Dv)
    const auto grad_o = stored(random_vector(v.size(), 94));                     // ∂loss/∂O (H, Tp, Dv)
    const auto states = stored(random_vector(static_cast<size_t>(H) * nC * Dk * Dv, 95, -4.0f, 4.0f));  // S_c
    const auto after = stored(random_vector(states.size(), 96, -4.0f, 4.0f));  // G_c (H, nC, Dk, Dv)
    const std::vector<float> log_decay = default_log_decay(decay_heads);

    const GradientPass pass = [&] {  // launch_chunk_gradient's table
        if (which == ChunkGradient::DQ) return GradientPass{grad_o, v, Dv, false, grad_o, states, true, false, k, Dv, Dk};
        if (which == ChunkGradient::DK) return GradientPass{grad_o, v, Dv, true, v, after, true, true, q, Dv, Dk};
        return GradientPass{q, k, Dk, true, k, after, false, true, grad_o, Dk, Dv};  // DV
    }();
    const int Dr = pass.Dr, Dout = pass.Dout;

    auto dlog = to_device(log_decay, stream());
    DeviceBuffer<float> dscores(static_cast<size_t>(H) * nC * C * chunk_scores_ld(C));  // (H, nC, C, ld)
    const float unwritten = std::numeric_limits<float>::quiet_NaN();  // every element must be written
    auto dout = to_device(std::vector<float>(static_cast<size_t>(H) * Tp * Dout, unwritten), stream());  // (H, Tp, Dout)
    with_storage(precision, [&](auto tag) {
        using In = decltype(tag);
        auto dscore_q = to_device_as<In>(pass.score_q, stream()), dscore_k = to_device_as<In>(pass.score_k, stream());
        auto dx = to_device_as<In>(pass.x, stream()), dm = to_device_as<In>(pass.m, stream());
        auto dy = to_device_as<In>(pass.y, stream());
        launch_chunk_scores(dscore_q.get(), dscore_k.get(), dlog.get(), decay_heads, dscores.get(), H, nC, C,
                            pass.score_width, products, stream());
        launch_chunk_gradient(which, dx.get(), dm.get(), dscores.get(), dy.get(), dlog.get(), decay_heads, dout.get(), H,
                              nC, C, Dr, Dout, products, stream());
        sync();
    });
    const std::vector<float> got = to_host(dout, stream());

    const double fp32_steps = C + Dr + pass.score_width + 4;
    const double relative_bound = 4.0 * u + fp32_steps * std::ldexp(1.0, -23);
    double worst = 0.0;  // |error| / bound
    std::vector<double> score(static_cast<size_t>(C) * C), score_size(score.size());  // (t, s) of a chunk, decayed
    for (int h = 0; h < H; ++h) {
        const double lg = log_decay[static_cast<size_t>(h % decay_heads)];
        for (int c = 0; c < nC; ++c) {
            const size_t row0 = static_cast<size_t>(h) * Tp + static_cast<size_t>(c) * C;  // the chunk's first row
            for (int t = 0; t < C; ++t)
                for (int s = 0; s < C; ++s) {
                    double dot = 0.0, dot_size = 0.0;
                    if (s <= t) {
                        const float* a = pass.score_q.data() + (row0 + t) * pass.score_width;
                        const float* b = pass.score_k.data() + (row0 + s) * pass.score_width;
                        for (int e = 0; e < pass.score_width; ++e) {
                            dot += static_cast<double>(a[e]) * b[e];
                            dot_size += std::abs(static_cast<double>(a[e]) * b[e]);
                        }
                    }
                    const double decay = std::exp((t - s) * lg);
                    score[static_cast<size_t>(t) * C + s] = dot * decay;
                    score_size[static_cast<size_t>(t) * C + s] = dot_size * decay;
                }
            const float* M = pass.m.data() + (static_cast<size_t>(h) * nC + c) * Dk * Dv;
            for (int t = 0; t < C; ++t) {
                const float* xt = pass.x.data() + (row0 + t) * Dr;
                const double r = std::exp((pass.tail_decay ? C - 1 - t : t + 1) * lg);
                for (int j = 0; j < Dout; ++j) {
                    double ref = 0.0, size = 0.0;
                    for (int s = 0; s < C; ++s) {
                        const size_t at = pass.transposed_scores ? static_cast<size_t>(s) * C + t
                                                                 : static_cast<size_t>(t) * C + s;
                        const double ys = pass.y[(row0 + s) * Dout + j];
                        ref += score[at] * ys;
                        size += score_size[at] * std::abs(ys);
                    }
                    for (int i = 0; i < Dr; ++i) {
                        const double mij = pass.transposed_m ? M[static_cast<size_t>(j) * Dr + i]
                                                             : M[static_cast<size_t>(i) * Dout + j];
                        ref += r * xt[i] * mij;
                        size += r * std::abs(xt[i] * mij);
                    }
                    const double value = got[(row0 + t) * Dout + j];
                    ASSERT_TRUE(std::isfinite(value))
                        << "head " << h << " chunk " << c << " row " << t << " column " << j << " not written";
                    worst = std::max(worst, std::abs(value - ref) / (relative_bound * size + 1e-30));
                }
            }
        }
    }
    EXPECT_LT(worst, 1.0) << "the largest error, in units of its bound";
}

// T = 1 (one chunk of one step), chunks of one step, an odd chunk length (17: not a multiple of the
// products' 8 or 16 steps) and the largest (64); one, two and five chunks; head widths off the 64
// slab and the 128-column output tile (40, 72: Dr 72 is a whole slab and 8), the 1.3B heads (256 ×
// 512: 8 slabs of Dv, 4 output tiles of Dv), several sequences sharing the decays (H 6 of 3) with
// widths off 4 (13, 131: scalar loads, a partial second output tile); with bf16 storage 12 × 20 (multiples of
// 4, not of 8) in the register-staged pass, the other widths in the pipelined one.
INSTANTIATE_TEST_SUITE_P(
    Shapes, ChunkGradientTest,
    ::testing::Combine(::testing::Values(ChunkGradientCase{3, 3, 1, 1, 40, 72}, ChunkGradientCase{3, 3, 2, 17, 40, 72},
                                         ChunkGradientCase{3, 3, 5, 64, 40, 72}, ChunkGradientCase{3, 3, 1, 64, 64, 128},
                                         ChunkGradientCase{3, 3, 5, 17, 64, 128}, ChunkGradientCase{3, 3, 2, 1, 64, 128},
                                         ChunkGradientCase{3, 3, 2, 64, 256, 512},
                                         ChunkGradientCase{3, 3, 5, 17, 256, 512},
                                         ChunkGradientCase{6, 3, 2, 33, 13, 131}, ChunkGradientCase{3, 3, 3, 40, 12, 20}),
                       ::testing::Values(ChunkGradient::DQ, ChunkGradient::DK, ChunkGradient::DV),
                       kChunkPrecisions));

// ---- host-side rules (no device needed) --------------------------------------------------------------

// Shapes the pass cannot run are refused with one line before anything is launched (so null pointers
// do here); no heads or no chunks is nothing to do.
TEST(ChunkGradientLimits, RefusesWhatItCannotRunWithOneLine) {
    const auto pass = [](int H, int decay_heads, int nC, int C, int Dr, int Dout) {
        launch_chunk_gradient<float>(ChunkGradient::DK, nullptr, nullptr, nullptr, nullptr, nullptr, decay_heads, nullptr,
                                     H, nC, C, Dr, Dout, ChunkProducts::Bf16, nullptr);
    };
    try {
        pass(3, 3, 2, 65, 64, 128);  // chunks longer than the 64-row tile
        ADD_FAILURE() << "a chunk of 65 was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
    EXPECT_THROW(pass(3, 3, 2, 0, 64, 128), Error);
    EXPECT_THROW(pass(3, 3, 65536, 64, 64, 128), Error);  // a grid dimension
    EXPECT_THROW(pass(65536, 3, 2, 64, 64, 128), Error);
    EXPECT_THROW(pass(3, 3, 2, 64, 0, 128), Error);
    EXPECT_THROW(pass(3, 3, 2, 64, 64, 0), Error);
    EXPECT_THROW(pass(3, 0, 2, 64, 64, 128), Error);
    EXPECT_NO_THROW(pass(0, 3, 2, 64, 64, 128));
    EXPECT_NO_THROW(pass(3, 3, 0, 64, 64, 128));
}

// The output pass's rows must hold the heads' chunks: whole sequences of heads_per_row heads, T within
// the last chunk; head-major output is fp32 (nothing is launched: null pointers do).
TEST(ChunkGradientLimits, RefusesOutputRowsThatDoNotFit) {
    const auto output = [](ChunkDestination o, int H, int nC, int C) {
        launch_chunk_output<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, o, H, nC, C, 8, 8,
                                   ChunkProducts::Bf16, nullptr);
    };
    float* none = nullptr;
    try {
        output(ChunkDestination::rows(none, 3, 129), 6, 2, 64);  // T past the chunks
        ADD_FAILURE() << "129 rows of 2 chunks of 64 were accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("129"), std::string::npos) << e.what();
    }
    EXPECT_THROW(output(ChunkDestination::rows(none, 3, 64), 6, 2, 64), Error);  // a whole chunk of padding
    EXPECT_THROW(output(ChunkDestination::rows(none, 4, 100), 6, 2, 64), Error);  // 6 heads are not rows of 4
    EXPECT_THROW(output(ChunkDestination::rows(none, 3, 0), 6, 1, 64), Error);
    EXPECT_THROW(output(ChunkDestination{none, true, 0, 0}, 6, 2, 64), Error);  // bf16 head-major
}

// Operands stored in bf16 are for bf16 products only (TF32 products would read 8 of their 11 bits).
TEST(ChunkGradientLimits, RefusesBf16StorageWithTf32Products) {
    using Bf16 = __nv_bfloat16;
    const auto expect_one_line = [](auto&& call) {
        try {
            call();
            ADD_FAILURE() << "bf16 operands with TF32 products were accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        }
    };
    const auto tf32 = ChunkProducts::Tf32;
    expect_one_line([&] {
        launch_chunk_gradient<Bf16>(ChunkGradient::DV, nullptr, nullptr, nullptr, nullptr, nullptr, 1, nullptr, 1, 1, 1,
                                    8, 8, tf32, nullptr);
    });
    expect_one_line([&] {
        launch_chunk_output<Bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, ChunkDestination{}, 1, 1, 1, 8, 8, tf32,
                                  nullptr);
    });
    expect_one_line([&] { launch_chunk_scores<Bf16>(nullptr, nullptr, nullptr, 1, nullptr, 1, 1, 1, 8, tf32, nullptr); });
    expect_one_line([&] {
        launch_chunk_states<Bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1, 1, 8, 8, tf32, nullptr);
    });
}

}  // namespace
}  // namespace retnet::cuda::test
