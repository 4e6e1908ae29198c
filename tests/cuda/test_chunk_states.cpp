// SPDX-License-Identifier: GPL-3.0-or-later
// The fused chunkwise kernels against their naive double twins.
//
// Each in both precisions of their products (ops.h, ChunkProducts): TF32, 11 significant bits rounded
// to nearest with ties away from zero (cvt.rna), unit roundoff u = 2^-11; bf16, 8 significant bits
// rounded to nearest even, u = 2^-8. With bf16 products also with the operands stored in bf16 (the
// CUDA trainer's storage): the data are rounded to bf16 before the reference sees them, so the bounds
// are the same; states written in bf16 add one rounding (u of each state) to theirs.
//
// The chunk states (chunk_states.cu): the same recurrence
// over chunks (first to last, or last to first for the trainer's backward), S ← chunk_decay·S + Σ_t row_decay_t·k_t v_tᵀ, with K·row_decay and V rounded
// as the kernel rounds them, so that what is left is fp32 accumulation. Each fp32 operation
// errs by at most 2^-23 of its result (round to nearest, or truncation in the tensor cores'
// accumulators); an element takes nC·(C + 1) of them, so the bound is that many times 2^-23 times
// the largest partial sum, relative to the largest state. A missed rounding (2^-11 or 2^-8), a wrong
// decay or index are orders above it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "cuda_test_util.h"
#include "ops.h"

namespace retnet::cuda::test {
namespace {

struct ChunkStatesCase {
    int H, nC, C, Dk, Dv;
};

class ChunkStatesTest : public CudaTest,
                        public ::testing::WithParamInterface<std::tuple<ChunkStatesCase, ChunkPrecision>> {
protected:
    void expect_matches_reference(ChunkWalk walk) {
        const auto [H, nC, C, Dk, Dv] = std::get<0>(GetParam());
        const ChunkPrecision precision = std::get<1>(GetParam());
        const ChunkProducts products = precision.products;
        const int Tp = nC * C;
        const auto k = as_stored(precision, random_vector(static_cast<size_t>(H) * Tp * Dk, 61));  // (H, Tp, Dk)
        const auto v = as_stored(precision, random_vector(static_cast<size_t>(H) * Tp * Dv, 62));  // (H, Tp, Dv)
        const auto S0 = random_vector(static_cast<size_t>(H) * Dk * Dv, 63);  // (H, Dk, Dv) non-zero start
        std::vector<float> row_decay(static_cast<size_t>(H) * Tp), chunk_decay(static_cast<size_t>(H) * nC);
        for (int h = 0; h < H; ++h) {
            const double gamma = 1.0 - std::pow(2.0, -5.0 - h);
            for (int t = 0; t < Tp; ++t)  // the last chunk padded: its rows past T weigh 0
                row_decay[static_cast<size_t>(h) * Tp + t] =
                    (nC > 1 && t >= Tp - 2) ? 0.0f : static_cast<float>(std::pow(gamma, C - 1 - t % C));
            for (int c = 0; c < nC; ++c)  // a different decay per chunk, so that the order of the walk shows
                chunk_decay[static_cast<size_t>(h) * nC + c] = static_cast<float>(std::pow(gamma, C + c));
        }
        auto dS = to_device(S0, stream());
        auto drow = to_device(row_decay, stream()), dchunk = to_device(chunk_decay, stream());
        std::vector<float> got_states;  // (H, nC, Dk, Dv)
        with_storage(precision, [&](auto stored) {
            using In = decltype(stored);
            auto dk = to_device_as<In>(k, stream()), dv = to_device_as<In>(v, stream());
            DeviceBuffer<In> dstates(static_cast<size_t>(H) * nC * Dk * Dv);
            launch_chunk_states(dk.get(), dv.get(), drow.get(), dchunk.get(), dS.get(), dstates.get(), H, nC, C, Dk,
                                Dv, products, stream(), walk);
            got_states = to_host_floats(dstates, stream());
        });

        const int64_t DkDv = static_cast<int64_t>(Dk) * Dv;
        std::vector<double> ref_states(static_cast<size_t>(H) * nC * DkDv), ref_S(S0.begin(), S0.end());
        double largest_partial = 0.0;
        for (int h = 0; h < H; ++h)
            for (int w = 0; w < nC; ++w) {
                const int c = walk == ChunkWalk::Backward ? nC - 1 - w : w;
                double* S = ref_S.data() + h * DkDv;
                std::copy(S, S + DkDv, ref_states.begin() + (static_cast<int64_t>(h) * nC + c) * DkDv);
                for (int64_t e = 0; e < DkDv; ++e) S[e] *= chunk_decay[static_cast<size_t>(h) * nC + c];
                for (int t = c * C; t < (c + 1) * C; ++t) {
                    const float decay = row_decay[static_cast<size_t>(h) * Tp + t];
                    for (int i = 0; i < Dk; ++i) {
                        const double ki = round_for(products, k[(static_cast<size_t>(h) * Tp + t) * Dk + i] * decay);
                        for (int j = 0; j < Dv; ++j) {
                            double& s = S[static_cast<int64_t>(i) * Dv + j];
                            s += ki * round_for(products, v[(static_cast<size_t>(h) * Tp + t) * Dv + j]);
                            largest_partial = std::max(largest_partial, std::abs(s));
                        }
                    }
                }
            }
        double largest_state = 0.0;
        for (double s : ref_S) largest_state = std::max(largest_state, std::abs(s));
        for (double s : ref_states) largest_state = std::max(largest_state, std::abs(s));
        const double tol = nC * (C + 1.0) * std::ldexp(1.0, -23) * largest_partial / largest_state;
        const double stored_rounding = precision.bf16_storage ? unit_roundoff(products) : 0.0;
        EXPECT_LT(rel_max_error(got_states, ref_states), tol + stored_rounding);
        EXPECT_LT(rel_max_error(to_host(dS, stream()), ref_S), tol);
    }
};

TEST_P(ChunkStatesTest, EqualTheScannedChunkContributions) { expect_matches_reference(ChunkWalk::Forward); }

// The trainer's backward walk: the same recurrence from the last chunk to the first, states[c]
// holding S after chunk c (as the walk reaches it)
TEST_P(ChunkStatesTest, WalkedBackwardsEqualTheReverseScan) { expect_matches_reference(ChunkWalk::Backward); }

// T = 1 (one chunk of one step), odd chunk lengths, chunks longer than the 64-step slab (100,
// 130: a partial second and third slab), head widths that are not a multiple of the 64 tile (72,
// 40) or of 4 (7, 13: scalar loads), the 1.3B head shape (256 × 512), and widths with a partial tile
// after whole ones (200 = 3 · 64 + 8, 131), and widths that are multiples of 4 but not of 8 (12 × 20).
INSTANTIATE_TEST_SUITE_P(Shapes, ChunkStatesTest,
                         ::testing::Combine(::testing::Values(ChunkStatesCase{1, 1, 1, 8, 8}, ChunkStatesCase{2, 3, 7, 16, 24},
                                                              ChunkStatesCase{2, 5, 64, 72, 40}, ChunkStatesCase{1, 2, 100, 64, 64},
                                                              ChunkStatesCase{1, 3, 130, 7, 13}, ChunkStatesCase{3, 4, 33, 13, 7},
                                                              ChunkStatesCase{2, 3, 64, 256, 512}, ChunkStatesCase{2, 3, 64, 72, 200},
                                                              ChunkStatesCase{1, 2, 17, 13, 131}, ChunkStatesCase{2, 3, 40, 12, 20}),
                                            kChunkPrecisions));

// The chunks' masked scores (chunk_output.cu's first pass) against the double definition
//   A_c(t, s) = (q_t·k_s)·γ^(t−s) for s ≤ t in the chunk, else 0,
// q and k rounded (≤ u each) and the result rounded again: each score may err by 3u of
// Σ |q_e k_e| γ^(t−s). The padding columns of each row (up to chunk_scores_ld) hold 0.
struct ChunkScoresCase {
    int H, decay_heads, nC, C, Dk;
};

class ChunkScoresTest : public CudaTest,
                        public ::testing::WithParamInterface<std::tuple<ChunkScoresCase, ChunkPrecision>> {};

TEST_P(ChunkScoresTest, EqualTheMaskedDecayedProducts) {
    const auto [H, decay_heads, nC, C, Dk] = std::get<0>(GetParam());
    const ChunkPrecision precision = std::get<1>(GetParam());
    const ChunkProducts products = precision.products;
    const double u = unit_roundoff(products);
    const int Tp = nC * C, ld = chunk_scores_ld(C);
    ASSERT_GE(ld, C);
    ASSERT_EQ(ld % 4, 0);
    const auto q = as_stored(precision, random_vector(static_cast<size_t>(H) * Tp * Dk, 81));
    const auto k = as_stored(precision, random_vector(q.size(), 82));
    std::vector<float> log_decay(static_cast<size_t>(decay_heads));
    for (int h = 0; h < decay_heads; ++h) log_decay[static_cast<size_t>(h)] = static_cast<float>(std::log(1.0 - std::pow(2.0, -1.0 - h)));
    auto dlog = to_device(log_decay, stream());
    const size_t n = static_cast<size_t>(H) * nC * C * ld;
    auto dscores = to_device(std::vector<float>(n, 7.0f), stream());  // padding must be written, not left
    with_storage(precision, [&](auto stored) {
        using In = decltype(stored);
        auto dq = to_device_as<In>(q, stream()), dk = to_device_as<In>(k, stream());
        launch_chunk_scores(dq.get(), dk.get(), dlog.get(), decay_heads, dscores.get(), H, nC, C, Dk, products,
                            stream());
        sync();  // before dq and dk go
    });
    const std::vector<float> got = to_host(dscores, stream());

    double worst = 0.0;  // |error| / bound
    for (int h = 0; h < H; ++h)
        for (int c = 0; c < nC; ++c)
            for (int t = 0; t < C; ++t)
                for (int x = 0; x < ld; ++x) {
                    const float value = got[((static_cast<size_t>(h) * nC + c) * C + t) * ld + x];
                    if (x > t || x >= C) {
                        ASSERT_EQ(value, 0.0f) << "head " << h << " chunk " << c << " row " << t << " column " << x;
                        continue;
                    }
                    const float* qt = q.data() + (static_cast<size_t>(h) * Tp + c * C + t) * Dk;
                    const float* ks = k.data() + (static_cast<size_t>(h) * Tp + c * C + x) * Dk;
                    double dot = 0.0, size = 0.0;
                    for (int e = 0; e < Dk; ++e) {
                        dot += static_cast<double>(qt[e]) * ks[e];
                        size += std::abs(static_cast<double>(qt[e]) * ks[e]);
                    }
                    const double decay = std::exp((t - x) * static_cast<double>(log_decay[static_cast<size_t>(h % decay_heads)]));
                    worst = std::max(worst, std::abs(value - dot * decay) / (3.0 * u * size * decay + 1e-30));
                    ASSERT_EQ(value, round_for(products, value)) << "a score not rounded for the output pass";
                }
    EXPECT_LT(worst, 1.0) << "the largest error, in units of its bound";
}

INSTANTIATE_TEST_SUITE_P(Shapes, ChunkScoresTest,
                         ::testing::Combine(::testing::Values(ChunkScoresCase{1, 1, 1, 1, 8}, ChunkScoresCase{2, 2, 3, 7, 16},
                                                              ChunkScoresCase{2, 1, 2, 64, 72}, ChunkScoresCase{6, 3, 2, 33, 13},
                                                              ChunkScoresCase{1, 1, 2, 64, 256}),
                                            kChunkPrecisions));

// fla's chunk output (chunk_output.cu: the scores pass, then the output pass) against the double
// definition
//   o_t = Σ_{s ≤ t in t's chunk} (q_t·k_s)·γ^(t−s)·v_s + γ^(i+1)·q_t S_c,   i = t mod C.
// The products round q, k, S, v and the masked score (≤ u each; the cross decay scales q S in fp32), so a product
// of three rounded factors errs by ≤ 4u of its size (plus fp32 accumulation, far below): each
// output may err by 4u times the sum of its terms' magnitudes, which the reference computes beside
// it. A wrong decay, mask or index errs by whole terms. The output goes head-major (fp32), as the
// inference backends read it, or into the trainer's rows (sequence, t, head, j) in fp32 or bf16 (one
// more rounding of the output, u = 2⁻⁸ of it), with the padding rows past T left out: a sentinel
// after the rows must survive.
struct ChunkOutputCase {
    int H, decay_heads, nC, C, Dk, Dv;
};
enum class OutputLayout { HeadMajor, Rows, Bf16Rows };

class ChunkOutputTest
    : public CudaTest,
      public ::testing::WithParamInterface<std::tuple<ChunkOutputCase, ChunkPrecision, OutputLayout>> {};

TEST_P(ChunkOutputTest, EqualsIntraChunkPlusStateTerms) {
    const auto [H, decay_heads, nC, C, Dk, Dv] = std::get<0>(GetParam());
    const ChunkPrecision precision = std::get<1>(GetParam());
    const OutputLayout layout = std::get<2>(GetParam());
    const ChunkProducts products = precision.products;
    const double u = unit_roundoff(products);
    const int Tp = nC * C;
    const auto q = as_stored(precision, random_vector(static_cast<size_t>(H) * Tp * Dk, 71));
    const auto k = as_stored(precision, random_vector(q.size(), 72));
    const auto v = as_stored(precision, random_vector(static_cast<size_t>(H) * Tp * Dv, 73));
    const auto states = as_stored(precision, random_vector(static_cast<size_t>(H) * nC * Dk * Dv, 74, -4.0f, 4.0f));
    std::vector<float> log_decay(static_cast<size_t>(decay_heads));
    for (int h = 0; h < decay_heads; ++h) log_decay[static_cast<size_t>(h)] = static_cast<float>(std::log(1.0 - std::pow(2.0, -1.0 - h)));
    auto dlog = to_device(log_decay, stream());
    DeviceBuffer<float> dscores(static_cast<size_t>(H) * nC * C * chunk_scores_ld(C));
    // rows: the heads are H / decay_heads sequences of decay_heads heads (as the trainer's B sequences
    // share the H decays), each T tokens long, the last chunk partial
    const bool rows = layout != OutputLayout::HeadMajor;
    const int T = rows ? Tp - (C - 1) / 2 : Tp, per_row = decay_heads;
    const auto index = [&](int h, int t, int j) -> int64_t {  // where o(h, t, j) is, -1 where not written
        if (!rows) return (static_cast<int64_t>(h) * Tp + t) * Dv + j;
        if (t >= T) return -1;
        return ((static_cast<int64_t>(h / per_row) * T + t) * per_row + h % per_row) * Dv + j;
    };
    const size_t written = static_cast<size_t>(H) * T * Dv, guard = 64;
    constexpr float kSentinel = 12288.0f;  // exact in bf16
    const std::vector<float> sentinel(written + guard, kSentinel);
    std::vector<float> got;
    with_storage(precision, [&](auto stored) {
        using In = decltype(stored);
        auto dq = to_device_as<In>(q, stream()), dk = to_device_as<In>(k, stream()), dv = to_device_as<In>(v, stream());
        auto dstates = to_device_as<In>(states, stream());
        launch_chunk_scores(dq.get(), dk.get(), dlog.get(), decay_heads, dscores.get(), H, nC, C, Dk, products,
                            stream());
        const auto run = [&](const auto& out, ChunkDestination destination) {
            launch_chunk_output(dq.get(), dscores.get(), dv.get(), dstates.get(), dlog.get(), decay_heads, destination,
                                H, nC, C, Dk, Dv, products, stream());
            sync();
            got = to_host_floats(out, stream());
        };
        if (layout == OutputLayout::Bf16Rows) {
            auto out = to_device_as<__nv_bfloat16>(sentinel, stream());
            run(out, ChunkDestination::rows(out.get(), per_row, T));
        } else {
            auto out = to_device(sentinel, stream());
            run(out, rows ? ChunkDestination::rows(out.get(), per_row, T) : ChunkDestination::head_major(out.get()));
        }
    });
    for (size_t e = written; e < got.size(); ++e) ASSERT_EQ(got[e], kSentinel) << "written past the output, at " << e;
    const double u_out = layout == OutputLayout::Bf16Rows ? std::ldexp(1.0, -8) : 0.0;

    double worst = 0.0;  // |error| / bound
    for (int h = 0; h < H; ++h) {
        const double lg = log_decay[static_cast<size_t>(h % decay_heads)];
        for (int t = 0; t < Tp; ++t) {
            const int c = t / C, i = t % C;
            const float* qt = q.data() + (static_cast<size_t>(h) * Tp + t) * Dk;
            const float* S = states.data() + (static_cast<size_t>(h) * nC + c) * Dk * Dv;
            std::vector<double> score(static_cast<size_t>(C)), score_size(score.size());  // decayed
            for (int s = c * C; s <= t; ++s) {
                const float* ks = k.data() + (static_cast<size_t>(h) * Tp + s) * Dk;
                double dot = 0.0, dot_size = 0.0;
                for (int e = 0; e < Dk; ++e) {
                    dot += static_cast<double>(qt[e]) * ks[e];
                    dot_size += std::abs(static_cast<double>(qt[e]) * ks[e]);
                }
                score[static_cast<size_t>(s - c * C)] = dot * std::exp((t - s) * lg);
                score_size[static_cast<size_t>(s - c * C)] = dot_size * std::exp((t - s) * lg);
            }
            for (int j = 0; j < Dv; ++j) {
                double ref = 0.0, size = 0.0;
                for (int s = c * C; s <= t; ++s) {
                    const double vj = v[(static_cast<size_t>(h) * Tp + s) * Dv + j];
                    ref += score[static_cast<size_t>(s - c * C)] * vj;
                    size += score_size[static_cast<size_t>(s - c * C)] * std::abs(vj);
                }
                const double cross_coef = std::exp((i + 1) * lg);
                for (int e = 0; e < Dk; ++e) {
                    ref += cross_coef * qt[e] * S[static_cast<size_t>(e) * Dv + j];
                    size += cross_coef * std::abs(static_cast<double>(qt[e]) * S[static_cast<size_t>(e) * Dv + j]);
                }
                const int64_t at = index(h, t, j);
                if (at < 0) continue;
                const double error = std::abs(got[static_cast<size_t>(at)] - ref);
                worst = std::max(worst, error / (4.0 * u * size + u_out * std::abs(ref) + 1e-30));
            }
        }
    }
    EXPECT_LT(worst, 1.0) << "the largest error, in units of its bound";
}

// T = 1, odd chunk lengths, the largest chunk (64), head widths off the 64 tile (72, 40) and off
// 4 (7, 13: scalar loads), several sequences sharing the decays (H 6 of 3 decays), the 1.3B heads,
// value widths off the output pass's 128 columns after a whole tile (200, 131); with bf16 storage, 12 × 20
// (multiples of 4, not of 8) in the register-staged pass, the rest of the multiples of 8 in the pipelined one.
INSTANTIATE_TEST_SUITE_P(Shapes, ChunkOutputTest,
                         ::testing::Combine(::testing::Values(ChunkOutputCase{1, 1, 1, 1, 8, 8}, ChunkOutputCase{2, 2, 3, 7, 16, 24},
                                                              ChunkOutputCase{2, 2, 2, 64, 72, 40}, ChunkOutputCase{6, 3, 2, 33, 13, 7},
                                                              ChunkOutputCase{1, 1, 2, 64, 256, 512}, ChunkOutputCase{2, 1, 3, 64, 72, 200},
                                                              ChunkOutputCase{1, 1, 2, 17, 13, 131}, ChunkOutputCase{2, 2, 3, 40, 12, 20}),
                                            kChunkPrecisions,
                                            ::testing::Values(OutputLayout::HeadMajor, OutputLayout::Rows,
                                                              OutputLayout::Bf16Rows)));

}  // namespace
}  // namespace retnet::cuda::test
