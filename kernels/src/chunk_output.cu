// SPDX-License-Identifier: GPL-3.0-or-later
// fla's chunkwise output in two passes (see launch_chunk_scores and launch_chunk_output in ops.h).
//
// The unfused path writes the chunk scores Q_c K_cᵀ, masks them in place, writes the inner
// product A_c V_c and the cross product Q_c S_c as two (H, Tp, Dv) buffers and adds them in a
// fourth kernel. Here the scores pass forms each chunk's masked, decayed scores A_c once (C × C,
// 16 KB at C = 64); then a block of the output pass owns 128 columns of one chunk's output: it
// accumulates Q_c S_c over Dk slabs (the state slab read once, straight from the chunk states),
// scales its rows by γ^(i+1) and adds A_c V_c in the same accumulators. An earlier version formed Q_c K_cᵀ in
// every column tile's block (8 times per chunk at Dv 512), half of its products.
// The trainer's backward forms dQ, dK and dV by the same pass (launch_chunk_gradient): each is an
// intra-chunk product of scores (dA or A, maybe transposed) plus a row-decayed product with a
// chunk state (S or G, maybe transposed), written once, where the unfused backward writes the
// intra-chunk term and adds the state term in a second GEMM after scaling its rows in a third kernel.
// Products are TF32 or bf16 with fp32 accumulation, as in chunk_states.cu; with bf16 products the
// operand matrices (not the scores) may be stored in bf16 (In), as the CUDA trainer keeps them.
#include <algorithm>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "chunk_tiles.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

using namespace chunk_tiles;

// Block (chunk, head): A_c = (Q_c K_cᵀ) ⊙ D, D(t, s) = γ^(t−s) for s ≤ t < C, else 0, rounded to P's
// precision (it is the output pass's operand), padding columns C … ld zero. Chunk length C ≤ 64.
template <typename P, int Vec, typename In>
__global__ void __launch_bounds__(kThreads) chunk_scores_kernel(const In* __restrict__ q, const In* __restrict__ k,
                                                                const float* __restrict__ log_decay, int decay_heads,
                                                                float* __restrict__ scores, int nC, int C, int ld, int Dk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using Elem = typename P::Elem;
    constexpr int ld_op = operand_ld<Elem>(kTile);
    constexpr int kOperandBytes = kTile * ld_op * static_cast<int>(sizeof(Elem));
    __shared__ __align__(32) unsigned char smem[std::max(2 * kOperandBytes, kTile * kLd * static_cast<int>(sizeof(float)))];
    Elem* s_q = reinterpret_cast<Elem*>(smem);                  // Q slab (t, i)
    Elem* s_k = reinterpret_cast<Elem*>(smem + kOperandBytes);  // K slab (s, i)
    float* s_scores = reinterpret_cast<float*>(smem);           // (t, s), over both once the products are done
    __shared__ float s_pow[kTile];                              // γ^n, n < kTile
    const int c = blockIdx.x, h = blockIdx.y;
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const In* q_head = q + h * Tp * Dk;
    const In* k_head = k + h * Tp * Dk;
    const int warp = threadIdx.x / 32, m0 = (warp / 2) * 32, n0 = (warp % 2) * 32;
    const float lg = log_decay[h % decay_heads];
    for (int n = threadIdx.x; n < kTile; n += kThreads) s_pow[n] = decay_pow(lg, n);

    FragC<P> acc[2][2];
    zero_quarter(acc);
    SlabPart<P, Vec> next_q, next_k;  // the next Dk slab loads while the tensor cores work
    next_q.load(q_head, t0, C, Dk, 0, min(kTile, Dk));
    next_k.load(k_head, t0, C, Dk, 0, min(kTile, Dk));
    for (int i0 = 0; i0 < Dk; i0 += kTile) {
        __syncthreads();  // the previous slab's products are done
        next_q.template store<In>(s_q);
        next_k.template store<In>(s_k);
        __syncthreads();
        if (i0 + kTile < Dk) {
            next_q.load(q_head, t0, C, Dk, i0 + kTile, min(kTile, Dk - i0 - kTile));
            next_k.load(k_head, t0, C, Dk, i0 + kTile, min(kTile, Dk - i0 - kTile));
        }
        for (int kk = 0; kk < min(kTile, Dk - i0); kk += P::kStep)  // columns past Dk are zero
            // Q: (t, i) at s_q[t·ld_op + i]; Kᵀ: (i, s) at s_k[s·ld_op + i]
            mma_quarter_step<P, wmma::row_major, wmma::col_major>(acc, s_q + m0 * ld_op + kk, ld_op,
                                                                   s_k + n0 * ld_op + kk, ld_op);
    }
    __syncthreads();
    store_quarter(s_scores, acc, m0, n0);
    __syncthreads();
    float* out = scores + (static_cast<int64_t>(h) * nC + c) * C * ld;
    for (int e = threadIdx.x; e < C * ld; e += kThreads) {
        const int t = e / ld, x = e % ld;
        out[e] = x <= t ? P::rounded(s_scores[t * kLd + x] * s_pow[t - x]) : 0.0f;
    }
#endif
}

// The output pass's blocks are 64 rows × 128 columns, eight warps of 32 × 32 in a 2 × 4 grid: each
// chunk's Q slabs are read by Dv / 128 blocks rather than Dv / 64 (the pass is bound by what the
// multiprocessors pull from L2, and Q was half of it at Dv 512).
constexpr int kOutCols = 2 * kTile, kOutThreads = 2 * kThreads, kLdOut = operand_ld<float>(kOutCols);

// The output pass and the backward's three gradient passes are one shape (launch_chunk_gradient in
// ops.h): Out_c = diag(r_t) X_c M_c + Â_c Y_c, with
//   kTailDecay        r_t = γ^(C−1−t) (the states' row decay), else γ^(t+1) (the cross decay);
//   kTransposedM      M_c stored (Dout, Dr) row-major (Sᵀ, Gᵀ), else (Dr, Dout);
//   kTransposedScores Â_c the stored scores' transpose (Aᵀ, dAᵀ): the same shared tile read as a
//                     column-major operand, no copy.
// Dynamic shared memory: the operand tiles A (X, then the scores) and B (M, then Y); over both, once
// the products are done, the fp32 output tile; then the row decays. A transposed M slab is 128 rows
// (j) of 64 columns (i), a little larger than the plain slab's 64 rows of 128.
template <typename P, bool kTransposedM>
struct PassShared {
    using Elem = typename P::Elem;
    static constexpr int kLdA = operand_ld<Elem>(kTile), kLdB = operand_ld<Elem>(kOutCols);
    static constexpr int kLdM = kTransposedM ? kLdA : kLdB;  // the M slab's row stride
    static constexpr int kBOffset = kTile * kLdA * static_cast<int>(sizeof(Elem));
    static constexpr int kBBytes =
        std::max(kTile * kLdB, kTransposedM ? kOutCols * kLdA : 0) * static_cast<int>(sizeof(Elem));
    static constexpr int kDecayOffset = std::max(kBOffset + kBBytes, kTile * kLdOut * static_cast<int>(sizeof(float)));
    static constexpr size_t kBytes = kDecayOffset + kTile * sizeof(float);  // above the static 48 KB for TF32
};

// acc += the warp's quarter of X M over one Dr slab: X (t, i) at s_a[t·ld_a + i], M (i, j) at
// s_b[i·ld_m + j], or transposed at s_b[j·ld_m + i]; rows and columns past `width` are zero.
template <typename P, bool kTransposedM>
__device__ __forceinline__ void accumulate_x_m(FragC<P> (&acc)[2][2], const typename P::Elem* s_a, int ld_a,
                                               const typename P::Elem* s_b, int ld_m, int width, int m0, int n0) {
    using LayoutM = std::conditional_t<kTransposedM, wmma::col_major, wmma::row_major>;
    for (int kk = 0; kk < width; kk += P::kStep)
        mma_quarter_step<P, wmma::row_major, LayoutM>(acc, s_a + m0 * ld_a + kk, ld_a,
                                                      kTransposedM ? s_b + n0 * ld_m + kk : s_b + kk * ld_m + n0, ld_m);
}

// acc += the warp's quarter of Â Y: Â (t, s) at s_a[t·ld_a + s], or its transpose at s_a[s·ld_a + t];
// Y (s, j) at s_b[s·ld_b + j]; the scores' rows and columns and Y's rows past C are zero.
template <typename P, bool kTransposedScores>
__device__ __forceinline__ void accumulate_scores_y(FragC<P> (&acc)[2][2], const typename P::Elem* s_a, int ld_a,
                                                    const typename P::Elem* s_b, int ld_b, int C, int m0, int n0) {
    using LayoutScores = std::conditional_t<kTransposedScores, wmma::col_major, wmma::row_major>;
    for (int kk = 0; kk < C; kk += P::kStep)
        mma_quarter_step<P, LayoutScores, wmma::row_major>(
            acc, kTransposedScores ? s_a + kk * ld_a + m0 : s_a + m0 * ld_a + kk, ld_a, s_b + kk * ld_b + n0, ld_b);
}

// The finished tile (s_out, kTile × kLdOut fp32) to its place: o's rows (sequence, t, head, j) where the
// output pass writes rows, else head-major fp32 (the gradient passes have no rows code).
template <int Vec, bool kRowsAllowed>
__device__ __forceinline__ void write_pass_tile(const float* s_out, const ChunkDestination& out, int h, int64_t t0,
                                                int64_t Tp, int C, int Dout, int j0, int valid_out) {
    if constexpr (kRowsAllowed) {
        if (out.heads_per_row > 0) {  // rows (sequence, t, head, j): head h is head h mod heads_per_row of sequence h / heads_per_row
            const int per_row = out.heads_per_row, rows = min(C, out.T - static_cast<int>(t0));
            const int64_t row_ld = static_cast<int64_t>(per_row) * Dout;
            const int64_t at = ((static_cast<int64_t>(h / per_row) * out.T + t0) * per_row + h % per_row) * Dout + j0;
            if (out.bf16)
                tile_to_global<Vec, kOutCols, kOutThreads>(s_out, static_cast<__nv_bfloat16*>(out.data) + at, row_ld,
                                                            rows, valid_out);
            else
                tile_to_global<Vec, kOutCols, kOutThreads>(s_out, static_cast<float*>(out.data) + at, row_ld, rows,
                                                            valid_out);
            return;
        }
    }
    float* dst = static_cast<float*>(out.data) + (static_cast<int64_t>(h) * Tp + t0) * Dout + j0;
    tile_to_global<Vec, kOutCols, kOutThreads>(s_out, dst, Dout, C, valid_out);
}

// Block (column tile, chunk, head); chunk length C ≤ 64.
// Two blocks a multiprocessor (128 registers) for the vector kernels: left to itself the compiler
// gives some 140–160 and one block; capped, the bf16-storage dQ and dK passes spill 168 bytes, the
// others none (nvcc 13.0, sm_90; the cap is not timed against an uncapped build of this version).
// The scalar kernels (widths off 4: small shapes) keep their 160–250 registers.
template <int Vec>
constexpr int kPassBlocksPerSm = Vec == 4 ? 2 : 1;
template <typename P, int Vec, bool kTailDecay, bool kTransposedM, bool kTransposedScores, typename In>
__global__ void __launch_bounds__(kOutThreads, kPassBlocksPerSm<Vec>) chunk_pass_kernel(const In* __restrict__ x,
                                                                 const float* __restrict__ scores, int ld,
                                                                 const In* __restrict__ y,
                                                                 const In* __restrict__ m,
                                                                 const float* __restrict__ log_decay, int decay_heads,
                                                                 ChunkDestination out, int nC, int C, int Dr, int Dout) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using Shared = PassShared<P, kTransposedM>;
    using Elem = typename P::Elem;
    using XPart = SlabPart<P, Vec, kTile, kOutThreads>;     // X slabs (t, i), then the scores (t, s)
    using BPart = SlabPart<P, Vec, kOutCols, kOutThreads>;  // M slabs (i, j), or stacked (j, i); then Y (s, j)
    constexpr int ld_a = Shared::kLdA, ld_b = Shared::kLdB, ld_m = Shared::kLdM;
    static_assert(XPart::kLdShared == ld_a && BPart::kLdShared == ld_b &&
                  (kTransposedM ? BPart::kLdStacked : BPart::kLdShared) == ld_m);
    extern __shared__ __align__(128) unsigned char smem[];
    Elem* s_a = reinterpret_cast<Elem*>(smem);                    // X slab (t, i); then the scores (t, s)
    Elem* s_b = reinterpret_cast<Elem*>(smem + Shared::kBOffset);  // M slab (i, j), or (j, i) transposed; then Y (s, j)
    float* s_out = reinterpret_cast<float*>(smem);                // (kTile, kLdOut) the output, over both
    float* s_row_decay = reinterpret_cast<float*>(smem + Shared::kDecayOffset);  // r_t of X M's rows
    const int j0 = blockIdx.x * kOutCols, c = blockIdx.y, h = blockIdx.z;
    const int valid_out = min(kOutCols, Dout - j0);
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const In* x_head = x + h * Tp * Dr;
    const In* M = m + (static_cast<int64_t>(h) * nC + c) * Dr * Dout;
    const int warp = threadIdx.x / 32, m0 = (warp / 4) * 32, n0 = (warp % 4) * 32;
    {
        const float lg = log_decay[h % decay_heads];
        for (int t = threadIdx.x; t < kTile; t += kOutThreads)  // the tail's rows past C are zero, not γ^(−n)
            s_row_decay[t] = kTailDecay ? (t < C ? decay_pow(lg, C - 1 - t) : 0.0f) : decay_pow(lg, t + 1);
    }

    FragC<P> acc[2][2];
    zero_quarter(acc);
    XPart next_x;  // X, then the scores: the next slab loads while the tensor cores work
    // M, then Y: one set of registers even where M's slab is transposed (SlabPart's stacked form);
    // with a part of each shape, the compiler kept both alive over the last slab (173 registers, not 128)
    BPart next_b;
    // M's slab of Dr rows [i0, i0 + width), 128 columns from j0; outside the matrix zero
    auto load_m = [&](int i0, int width) {
        if constexpr (kTransposedM)
            next_b.load_stacked(M, j0, valid_out, Dr, i0, width);  // stored rows j, columns i
        else
            next_b.load(M, i0, width, Dout, j0, valid_out);
    };
    next_x.load(x_head, t0, C, Dr, 0, min(kTile, Dr));
    load_m(0, min(kTile, Dr));
    for (int i0 = 0; i0 < Dr; i0 += kTile) {
        const int width = min(kTile, Dr - i0);
        __syncthreads();  // the previous slab's products are done
        next_x.template store<In>(s_a);
        if constexpr (kTransposedM)
            next_b.template store_stacked<In>(s_b);
        else
            next_b.template store<In>(s_b);
        __syncthreads();
        if (i0 + kTile < Dr) {
            next_x.load(x_head, t0, C, Dr, i0 + kTile, min(kTile, Dr - i0 - kTile));
            load_m(i0 + kTile, min(kTile, Dr - i0 - kTile));
        } else {  // the chunk's scores and Y
            next_x.load(scores + (static_cast<int64_t>(h) * nC + c) * C * ld, 0, C, ld, 0, C);
            next_b.load(y, static_cast<int64_t>(h) * Tp + t0, C, Dout, j0, valid_out);
        }
        accumulate_x_m<P, kTransposedM>(acc, s_a, ld_a, s_b, ld_m, width, m0, n0);
    }
    // X M is in the accumulators: times r_t by rows (after the products, not on X's staged rows, so that
    // X is rounded once, as stored), then Â_c Y_c adds to it
    __syncthreads();  // every warp is done with the operand tiles that its quarter of s_out covers
    scale_quarter_rows(acc, s_out, m0, n0, kLdOut, s_row_decay);
    __syncthreads();  // every warp is done with s_out
    next_x.template store<float>(s_a);  // the scores are rounded already: rounding again keeps them
    next_b.template store<In>(s_b);
    __syncthreads();
    accumulate_scores_y<P, kTransposedScores>(acc, s_a, ld_a, s_b, ld_b, C, m0, n0);
    __syncthreads();  // every warp is done reading the scores and Y
    store_quarter(s_out, acc, m0, n0, kLdOut);
    __syncthreads();
    write_pass_tile<Vec, !kTailDecay && !kTransposedM && !kTransposedScores>(s_out, out, h, t0, Tp, C, Dout, j0,
                                                                          valid_out);
#endif
}

// The same pass for bf16 storage with its operands copied into shared memory as they are stored (cp.async,
// no registers between), kStages steps in flight: Dr / 64 slabs of X and M, then the scores and Y. The
// register-staged kernel above keeps one slab in flight behind 64 × 128 × 64 products, short beside a
// load's latency: under ncu at the 1.3B heads it pulled 2.0–2.4 TB/s from DRAM and L2, neither saturated.
// H100, against it: the forward 5 % faster, forward + backward 10 %. A TF32 version (fp32 storage: two
// stages in two blocks' shared memory, the fragments rounded as loaded) spilled and did not speed up the
// prefill, which keeps the kernel above. Whole 16-byte pieces (Dr, Dout multiples of 8), 16-byte aligned.
template <bool kTransposedM>
struct PipelinedShared {
    using Elem = __nv_bfloat16;
    static constexpr int kStages = 3;  // two blocks a multiprocessor
    static constexpr int kLdA = operand_ld<Elem>(kTile), kLdB = operand_ld<Elem>(kOutCols);
    static constexpr int kLdM = kTransposedM ? kLdA : kLdB;
    static constexpr int kABytes = kTile * kLdA * static_cast<int>(sizeof(Elem));
    static constexpr int kBBytes =
        std::max(kTile * kLdB, kTransposedM ? kOutCols * kLdA : 0) * static_cast<int>(sizeof(Elem));
    static constexpr int kStageBytes = kABytes + kBBytes;
    static constexpr int kScoresOffset = kStages * kStageBytes;  // the fp32 scores, converted into the last stage's A
    static constexpr int kDecayOffset = kScoresOffset + kTile * kLd * static_cast<int>(sizeof(float));
    static constexpr size_t kBytes = kDecayOffset + kTile * sizeof(float);
    static_assert(kABytes % 128 == 0 && kStageBytes % 128 == 0 &&
                  kTile * kLdOut * static_cast<int>(sizeof(float)) <= kScoresOffset);  // s_out over the stages
};

template <bool kTailDecay, bool kTransposedM, bool kTransposedScores>
__global__ void __launch_bounds__(kOutThreads, 2) chunk_pass_pipelined_kernel(
    const __nv_bfloat16* __restrict__ x, const float* __restrict__ scores, int ld, const __nv_bfloat16* __restrict__ y,
    const __nv_bfloat16* __restrict__ m, const float* __restrict__ log_decay, int decay_heads, ChunkDestination out,
    int nC, int C, int Dr, int Dout) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using P = Bf16Products;
    using Shared = PipelinedShared<kTransposedM>;
    using Elem = __nv_bfloat16;
    constexpr int kStages = Shared::kStages, ld_a = Shared::kLdA, ld_b = Shared::kLdB, ld_m = Shared::kLdM;
    extern __shared__ __align__(128) unsigned char smem[];
    // stage s: A = an X slab (t, i), or the scores (t, s) last; B = an M slab (i, j), or (j, i) transposed; Y (s, j) last
    const auto stage_a = [&](int s) { return reinterpret_cast<Elem*>(smem + s * Shared::kStageBytes); };
    const auto stage_b = [&](int s) { return reinterpret_cast<Elem*>(smem + s * Shared::kStageBytes + Shared::kABytes); };
    float* s_scores = reinterpret_cast<float*>(smem + Shared::kScoresOffset);  // (kTile, kLd)
    float* s_out = reinterpret_cast<float*>(smem);                              // (kTile, kLdOut), once drained
    float* s_row_decay = reinterpret_cast<float*>(smem + Shared::kDecayOffset);
    const int j0 = blockIdx.x * kOutCols, c = blockIdx.y, h = blockIdx.z;
    const int valid_out = min(kOutCols, Dout - j0);
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const Elem* x_head = x + h * Tp * Dr;
    const Elem* M = m + (static_cast<int64_t>(h) * nC + c) * Dr * Dout;
    const float* chunk_scores = scores + (static_cast<int64_t>(h) * nC + c) * C * ld;
    const int warp = threadIdx.x / 32, m0 = (warp / 4) * 32, n0 = (warp % 4) * 32;
    {
        const float lg = log_decay[h % decay_heads];
        for (int t = threadIdx.x; t < kTile; t += kOutThreads)  // the tail's rows past C are zero, not γ^(−n)
            s_row_decay[t] = kTailDecay ? (t < C ? decay_pow(lg, C - 1 - t) : 0.0f) : decay_pow(lg, t + 1);
    }
    const int slabs = (Dr + kTile - 1) / kTile, steps = slabs + 1;
    // step's copies into its stage, then one group per step (empty past the last: wait_group counts groups)
    const auto issue = [&](int step) {
        if (step < slabs) {
            const int s = step % kStages, i0 = step * kTile, width = min(kTile, Dr - i0);
            tile_to_shared_async<kTile, kTile, kOutThreads>(stage_a(s), ld_a, x_head, t0, C, Dr, i0, width);
            if constexpr (kTransposedM)  // stored rows j, columns i
                tile_to_shared_async<kOutCols, kTile, kOutThreads>(stage_b(s), ld_m, M, j0, valid_out, Dr, i0, width);
            else
                tile_to_shared_async<kTile, kOutCols, kOutThreads>(stage_b(s), ld_m, M, i0, width, Dout, j0, valid_out);
        } else if (step == slabs) {
            const int s = step % kStages;
            tile_to_shared_async<kTile, kTile, kOutThreads>(s_scores, kLd, chunk_scores, 0, C, ld, 0, ld);
            tile_to_shared_async<kTile, kOutCols, kOutThreads>(stage_b(s), ld_b, y, static_cast<int64_t>(h) * Tp + t0, C,
                                                               Dout, j0, valid_out);
        }
        commit_async_copies();
    };
    for (int step = 0; step < kStages - 1; ++step) issue(step);

    FragC<P> acc[2][2];
    zero_quarter(acc);
    for (int step = 0; step < steps; ++step) {
        wait_async_copies<kStages - 2>();
        __syncthreads();  // every thread's copies of this step have landed; every warp is done with the last step's stage
        issue(step + kStages - 1);  // into the stage the last step used
        const int s = step % kStages;
        if (step < slabs) {
            const int width = min(kTile, Dr - step * kTile);
            accumulate_x_m<P, kTransposedM>(acc, stage_a(s), ld_a, stage_b(s), ld_m, width, m0, n0);
            continue;
        }
        // the scores are bf16 values already: converting keeps them
        for (int e = threadIdx.x; e < kTile * kTile; e += kOutThreads)
            stage_a(s)[e / kTile * ld_a + e % kTile] = __float2bfloat16_rn(s_scores[e / kTile * kLd + e % kTile]);
        __syncthreads();
        // X M is in the accumulators: times r_t by rows, then Â_c Y_c adds to it (as the kernel above)
        scale_quarter_rows_in_registers(acc, m0, s_row_decay);
        accumulate_scores_y<P, kTransposedScores>(acc, stage_a(s), ld_a, stage_b(s), ld_b, C, m0, n0);
    }
    __syncthreads();  // every warp is done with the stages, which s_out covers
    store_quarter(s_out, acc, m0, n0, kLdOut);
    __syncthreads();
    write_pass_tile<4, !kTailDecay && !kTransposedM && !kTransposedScores>(s_out, out, h, t0, Tp, C, Dout, j0,
                                                                        valid_out);
#endif
}

}  // namespace

int chunk_scores_ld(int C) { return (C + 3) / 4 * 4; }

namespace {

// Whether a pass has work (heads and chunks), after refusing with one line what it cannot run: chunks
// longer than the 64-row tile or more than a grid dimension, empty widths, no decays, bf16 storage
// with other than bf16 products (it is their operands' precision).
template <typename In>
bool pass_has_work(const char* what, ChunkProducts products, int H, int decay_heads, int nC, int C,
                   std::initializer_list<std::pair<const char*, int>> widths) {
    if (H == 0 || nC == 0) return false;
    bool bad = !chunk_output_supports(C, nC) || decay_heads <= 0 || H > 65535;
    std::string shape = "H " + std::to_string(H) + ", chunks " + std::to_string(nC) + ", C " + std::to_string(C);
    for (const auto& [name, width] : widths) {
        bad = bad || width <= 0;
        shape += std::string(", ") + name + " " + std::to_string(width);
    }
    if (bad) throw Error(std::string(what) + ": unsupported shape (" + shape + ")");
    check_storage<In>(products, what);
    return true;
}

}  // namespace

template <typename In>
void launch_chunk_scores(const In* d_q, const In* d_k, const float* d_log_decay, int decay_heads, float* d_scores, int H,
                         int nC, int C, int Dk, ChunkProducts products, cudaStream_t stream) {
    if (!pass_has_work<In>("chunk scores", products, H, decay_heads, nC, C, {{"Dk", Dk}})) return;
    const dim3 grid(static_cast<unsigned>(nC), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && vec4_aligned(d_q) && vec4_aligned(d_k);
    auto* kernel = aligned ? chunk_scores_kernel<Bf16Products, 4, In> : chunk_scores_kernel<Bf16Products, 1, In>;
    if constexpr (std::is_same_v<In, float>)
        if (products != ChunkProducts::Bf16)
            kernel = aligned ? chunk_scores_kernel<Tf32Products, 4, In> : chunk_scores_kernel<Tf32Products, 1, In>;
    kernel<<<grid, kThreads, 0, stream>>>(d_q, d_k, d_log_decay, decay_heads, d_scores, nC, C, chunk_scores_ld(C), Dk);
    RETNET_CUDA_CHECK(cudaGetLastError());
}
template void launch_chunk_scores(const float*, const float*, const float*, int, float*, int, int, int, int,
                                  ChunkProducts, cudaStream_t);
template void launch_chunk_scores(const __nv_bfloat16*, const __nv_bfloat16*, const float*, int, float*, int, int, int,
                                  int, ChunkProducts, cudaStream_t);

namespace {

// One pass: Out_c = diag(r_t) X_c M_c + Â_c Y_c for every (column tile, chunk, head).
template <typename P, bool kTailDecay, bool kTransposedM, bool kTransposedScores, typename In>
void launch_pass(bool aligned, const In* d_x, const float* d_scores, const In* d_y, const In* d_m,
                 const float* d_log_decay, int decay_heads, ChunkDestination d_out, int H, int nC, int C, int Dr,
                 int Dout, cudaStream_t stream) {
    const dim3 grid(ceil_div(Dout, kOutCols), static_cast<unsigned>(nC), static_cast<unsigned>(H));
    if constexpr (std::is_same_v<In, __nv_bfloat16>) {  // bf16 storage: bf16 products (check_storage)
        if (aligned && Dr % 8 == 0 && Dout % 8 == 0 && aligned16(d_x) && aligned16(d_y) && aligned16(d_m)) {
            auto* kernel = chunk_pass_pipelined_kernel<kTailDecay, kTransposedM, kTransposedScores>;
            constexpr size_t bytes = PipelinedShared<kTransposedM>::kBytes;
            RETNET_CUDA_CHECK(
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
            kernel<<<grid, kOutThreads, bytes, stream>>>(d_x, d_scores, chunk_scores_ld(C), d_y, d_m, d_log_decay,
                                                         decay_heads, d_out, nC, C, Dr, Dout);
            RETNET_CUDA_CHECK(cudaGetLastError());
            return;
        }
    }
    auto* kernel = aligned ? chunk_pass_kernel<P, 4, kTailDecay, kTransposedM, kTransposedScores, In>
                           : chunk_pass_kernel<P, 1, kTailDecay, kTransposedM, kTransposedScores, In>;
    constexpr size_t bytes = PassShared<P, kTransposedM>::kBytes;
    RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    kernel<<<grid, kOutThreads, bytes, stream>>>(d_x, d_scores, chunk_scores_ld(C), d_y, d_m, d_log_decay, decay_heads,
                                                 d_out, nC, C, Dr, Dout);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

template <bool kTailDecay, bool kTransposedM, bool kTransposedScores, typename In>
void launch_pass(ChunkProducts products, const In* d_x, const float* d_scores, const In* d_y, const In* d_m,
                 const float* d_log_decay, int decay_heads, ChunkDestination d_out, int H, int nC, int C, int Dr,
                 int Dout, cudaStream_t stream) {
    const bool out_aligned = d_out.bf16 ? vec4_aligned(static_cast<const __nv_bfloat16*>(d_out.data))
                                        : vec4_aligned(static_cast<const float*>(d_out.data));
    const bool aligned = Dr % 4 == 0 && Dout % 4 == 0 && vec4_aligned(d_x) && aligned16(d_scores) &&
                         vec4_aligned(d_y) && vec4_aligned(d_m) && out_aligned;
    if constexpr (std::is_same_v<In, float>) {
        if (products != ChunkProducts::Bf16) {
            launch_pass<Tf32Products, kTailDecay, kTransposedM, kTransposedScores>(
                aligned, d_x, d_scores, d_y, d_m, d_log_decay, decay_heads, d_out, H, nC, C, Dr, Dout, stream);
            return;
        }
    }
    launch_pass<Bf16Products, kTailDecay, kTransposedM, kTransposedScores>(
        aligned, d_x, d_scores, d_y, d_m, d_log_decay, decay_heads, d_out, H, nC, C, Dr, Dout, stream);
}

}  // namespace

template <typename In>
void launch_chunk_output(const In* d_q, const float* d_scores, const In* d_v, const In* d_states,
                         const float* d_log_decay, int decay_heads, ChunkDestination d_o, int H, int nC, int C, int Dk,
                         int Dv, ChunkProducts products, cudaStream_t stream) {
    if (!pass_has_work<In>("chunk output", products, H, decay_heads, nC, C, {{"Dk", Dk}, {"Dv", Dv}})) return;
    const int Tp = nC * C;
    if (d_o.heads_per_row == 0 && d_o.bf16) throw Error("chunk output: head-major output is fp32 (internal error)");
    if (d_o.heads_per_row < 0 || (d_o.heads_per_row > 0 && (H % d_o.heads_per_row != 0 || d_o.T <= Tp - C || d_o.T > Tp)))
        throw Error("chunk output: rows of " + std::to_string(d_o.heads_per_row) + " heads and " +
                    std::to_string(d_o.T) + " tokens do not fit " + std::to_string(H) + " heads of " +
                    std::to_string(nC) + " chunks of " + std::to_string(C));
    // O_c = A_c V_c + diag(γ^(t+1)) Q_c S_c
    launch_pass<false, false, false>(products, d_q, d_scores, d_v, d_states, d_log_decay, decay_heads, d_o, H, nC, C,
                                     Dk, Dv, stream);
}
template void launch_chunk_output(const float*, const float*, const float*, const float*, const float*, int,
                                  ChunkDestination, int, int, int, int, int, ChunkProducts, cudaStream_t);
template void launch_chunk_output(const __nv_bfloat16*, const float*, const __nv_bfloat16*, const __nv_bfloat16*,
                                  const float*, int, ChunkDestination, int, int, int, int, int, ChunkProducts, cudaStream_t);

template <typename In>
void launch_chunk_gradient(ChunkGradient which, const In* d_x, const In* d_m, const float* d_scores, const In* d_y,
                           const float* d_log_decay, int decay_heads, float* d_grad, int H, int nC, int C, int Dr,
                           int Dout, ChunkProducts products, cudaStream_t stream) {
    if (!pass_has_work<In>("chunk gradient", products, H, decay_heads, nC, C, {{"Dr", Dr}, {"Dout", Dout}})) return;
    const ChunkDestination d_out = ChunkDestination::head_major(d_grad);
    switch (which) {
    case ChunkGradient::DQ:  // dA_c K_c + diag(γ^(t+1)) dO_c S_cᵀ
        launch_pass<false, true, false>(products, d_x, d_scores, d_y, d_m, d_log_decay, decay_heads, d_out, H, nC, C,
                                        Dr, Dout, stream);
        break;
    case ChunkGradient::DK:  // dA_cᵀ Q_c + diag(γ^(C−1−t)) V_c G_cᵀ
        launch_pass<true, true, true>(products, d_x, d_scores, d_y, d_m, d_log_decay, decay_heads, d_out, H, nC, C, Dr,
                                      Dout, stream);
        break;
    case ChunkGradient::DV:  // A_cᵀ dO_c + diag(γ^(C−1−t)) K_c G_c
        launch_pass<true, false, true>(products, d_x, d_scores, d_y, d_m, d_log_decay, decay_heads, d_out, H, nC, C, Dr,
                                       Dout, stream);
        break;
    }
}
template void launch_chunk_gradient(ChunkGradient, const float*, const float*, const float*, const float*, const float*,
                                    int, float*, int, int, int, int, int, ChunkProducts, cudaStream_t);
template void launch_chunk_gradient(ChunkGradient, const __nv_bfloat16*, const __nv_bfloat16*, const float*,
                                    const __nv_bfloat16*, const float*, int, float*, int, int, int, int, int,
                                    ChunkProducts, cudaStream_t);

bool chunk_output_supports(int C, int n_chunks) { return C >= 1 && C <= kTile && n_chunks <= 65535; }

}  // namespace retnet::cuda
