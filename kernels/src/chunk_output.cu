// SPDX-License-Identifier: GPL-3.0-or-later
// fla's chunkwise output in two passes (see launch_chunk_scores and launch_chunk_output in ops.h).
//
// The unfused path writes the chunk scores Q_c K_cᵀ, masks them in place, writes the inner
// product A_c V_c and the cross product Q_c S_c as two (H, Tp, Dv) buffers and adds them in a
// fourth kernel. Here the scores pass forms each chunk's masked, decayed scores A_c once (C × C,
// 16 KB at C = 64); then a block of the output pass owns 128 columns of one chunk's output: it
// accumulates (diag(γ^(i+1)) Q_c) S_c over Dk slabs (the state slab read once, straight from the
// chunk states) and adds A_c V_c in the same accumulators. An earlier version formed Q_c K_cᵀ in
// every column tile's block (8 times per chunk at Dv 512), half of its products.
// Products are TF32 or bf16 with fp32 accumulation, as in chunk_states.cu.
#include <algorithm>
#include <string>

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
template <typename P, int Vec>
__global__ void __launch_bounds__(kThreads) chunk_scores_kernel(const float* __restrict__ q, const float* __restrict__ k,
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
    const float* q_head = q + h * Tp * Dk;
    const float* k_head = k + h * Tp * Dk;
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
        next_q.store(s_q);
        next_k.store(s_k);
        __syncthreads();
        if (i0 + kTile < Dk) {
            next_q.load(q_head, t0, C, Dk, i0 + kTile, min(kTile, Dk - i0 - kTile));
            next_k.load(k_head, t0, C, Dk, i0 + kTile, min(kTile, Dk - i0 - kTile));
        }
        for (int kk = 0; kk < min(kTile, Dk - i0); kk += P::kStep) {  // columns past Dk are zero
            Frag<P, wmma::matrix_a, wmma::row_major> fq[2];  // Q: (t, i) at s_q[t·ld_op + i]
            Frag<P, wmma::matrix_b, wmma::col_major> fk[2];  // Kᵀ: (i, s) at s_k[s·ld_op + i]
#pragma unroll
            for (int a = 0; a < 2; ++a) load_operand<P>(fq[a], s_q + (m0 + 16 * a) * ld_op + kk, ld_op);
#pragma unroll
            for (int b = 0; b < 2; ++b) load_operand<P>(fk[b], s_k + (n0 + 16 * b) * ld_op + kk, ld_op);
            mma_quarter<P>(acc, fq, fk);
        }
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

// Dynamic shared memory: the operand tiles A (Q, then the scores) and B (S, then V); over both, once
// the products are done, the fp32 output tile; then the cross decays.
template <typename P>
struct OutputShared {
    using Elem = typename P::Elem;
    static constexpr int kLdA = operand_ld<Elem>(kTile), kLdB = operand_ld<Elem>(kOutCols);
    static constexpr int kBOffset = kTile * kLdA * static_cast<int>(sizeof(Elem));
    static constexpr int kDecayOffset =
        std::max(kBOffset + kTile * kLdB * static_cast<int>(sizeof(Elem)), kTile * kLdOut * static_cast<int>(sizeof(float)));
    static constexpr size_t kBytes = kDecayOffset + kTile * sizeof(float);  // above the static 48 KB for TF32
};

// Block (column tile, chunk, head); chunk length C ≤ 64.
template <typename P, int Vec>
__global__ void __launch_bounds__(kOutThreads) chunk_output_kernel(const float* __restrict__ q,
                                                                   const float* __restrict__ scores, int ld,
                                                                   const float* __restrict__ v,
                                                                   const float* __restrict__ states,
                                                                   const float* __restrict__ log_decay, int decay_heads,
                                                                   float* __restrict__ o, int nC, int C, int Dk, int Dv) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using Shared = OutputShared<P>;
    using Elem = typename P::Elem;
    constexpr int ld_a = Shared::kLdA, ld_b = Shared::kLdB;
    extern __shared__ __align__(32) unsigned char smem[];
    Elem* s_a = reinterpret_cast<Elem*>(smem);                    // Q slab (t, i) · γ^(t+1); then the scores A (t, s)
    Elem* s_b = reinterpret_cast<Elem*>(smem + Shared::kBOffset);  // S slab (i, j); then V (s, j)
    float* s_out = reinterpret_cast<float*>(smem);                // (kTile, kLdOut) the output, over both
    float* s_cross_decay = reinterpret_cast<float*>(smem + Shared::kDecayOffset);  // γ^(t+1): carried by Q's rows
    const int j0 = blockIdx.x * kOutCols, c = blockIdx.y, h = blockIdx.z;
    const int valid_v = min(kOutCols, Dv - j0);
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const float* q_head = q + h * Tp * Dk;
    const float* S = states + (static_cast<int64_t>(h) * nC + c) * Dk * Dv;
    const int warp = threadIdx.x / 32, m0 = (warp / 4) * 32, n0 = (warp % 4) * 32;
    {
        const float lg = log_decay[h % decay_heads];
        for (int t = threadIdx.x; t < kTile; t += kOutThreads) s_cross_decay[t] = decay_pow(lg, t + 1);
    }

    FragC<P> out[2][2];
    zero_quarter(out);
    SlabPart<P, Vec, kTile, kOutThreads> next_q;     // Q, then A: the next slab loads while the tensor cores work
    SlabPart<P, Vec, kOutCols, kOutThreads> next_s;  // S, then V
    next_q.load(q_head, t0, C, Dk, 0, min(kTile, Dk));
    next_s.load(S, 0, min(kTile, Dk), Dv, j0, valid_v);
    for (int i0 = 0; i0 < Dk; i0 += kTile) {
        const int width = min(kTile, Dk - i0);
        __syncthreads();  // the previous slab's products are done
        next_q.store_row_scaled(s_a, s_cross_decay);
        next_s.store(s_b);
        __syncthreads();
        if (i0 + kTile < Dk) {
            next_q.load(q_head, t0, C, Dk, i0 + kTile, min(kTile, Dk - i0 - kTile));
            next_s.load(S, i0 + kTile, min(kTile, Dk - i0 - kTile), Dv, j0, valid_v);
        } else {  // the chunk's scores and V
            next_q.load(scores + (static_cast<int64_t>(h) * nC + c) * C * ld, 0, C, ld, 0, C);
            next_s.load(v, static_cast<int64_t>(h) * Tp + t0, C, Dv, j0, valid_v);
        }
        for (int kk = 0; kk < width; kk += P::kStep) {  // rows and columns past Dk are zero
            Frag<P, wmma::matrix_a, wmma::row_major> fq[2];  // Q: (t, i) at s_a[t·ld_a + i]
            Frag<P, wmma::matrix_b, wmma::row_major> fs[2];  // S: (i, j) at s_b[i·ld_b + j]
#pragma unroll
            for (int a = 0; a < 2; ++a) load_operand<P>(fq[a], s_a + (m0 + 16 * a) * ld_a + kk, ld_a);
#pragma unroll
            for (int b = 0; b < 2; ++b) load_operand<P>(fs[b], s_b + kk * ld_b + n0 + 16 * b, ld_b);
            mma_quarter<P>(out, fq, fs);
        }
    }
    // the cross term is in the accumulators; A_c V_c adds to it
    __syncthreads();
    next_q.store(s_a);  // A is rounded already: rounding again keeps it
    next_s.store(s_b);
    __syncthreads();
    for (int kk = 0; kk < C; kk += P::kStep) {  // A's columns and V's rows past C are zero
        Frag<P, wmma::matrix_a, wmma::row_major> fa[2];  // A: (t, s) at s_a[t·ld_a + s]
        Frag<P, wmma::matrix_b, wmma::row_major> fv[2];  // V: (s, j) at s_b[s·ld_b + j]
#pragma unroll
        for (int a = 0; a < 2; ++a) load_operand<P>(fa[a], s_a + (m0 + 16 * a) * ld_a + kk, ld_a);
#pragma unroll
        for (int b = 0; b < 2; ++b) load_operand<P>(fv[b], s_b + kk * ld_b + n0 + 16 * b, ld_b);
        mma_quarter<P>(out, fa, fv);
    }
    __syncthreads();  // every warp is done reading A and V
    store_quarter(s_out, out, m0, n0, kLdOut);
    __syncthreads();
    tile_to_global<Vec, kOutCols, kOutThreads>(s_out, o + (static_cast<int64_t>(h) * Tp + t0) * Dv + j0, Dv, C, valid_v);
#endif
}

}  // namespace

int chunk_scores_ld(int C) { return (C + 3) / 4 * 4; }

void launch_chunk_scores(const float* d_q, const float* d_k, const float* d_log_decay, int decay_heads, float* d_scores,
                         int H, int nC, int C, int Dk, ChunkProducts products, cudaStream_t stream) {
    if (H == 0 || nC == 0) return;
    if (!chunk_output_supports(C, nC) || Dk <= 0 || decay_heads <= 0 || H > 65535)
        throw Error("chunk scores: unsupported shape (H " + std::to_string(H) + ", chunks " + std::to_string(nC) +
                    ", C " + std::to_string(C) + ", Dk " + std::to_string(Dk) + ")");
    const dim3 grid(static_cast<unsigned>(nC), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && aligned16(d_q) && aligned16(d_k);
    const bool bf16 = products == ChunkProducts::Bf16;
    auto* kernel = bf16 ? (aligned ? chunk_scores_kernel<Bf16Products, 4> : chunk_scores_kernel<Bf16Products, 1>)
                        : (aligned ? chunk_scores_kernel<Tf32Products, 4> : chunk_scores_kernel<Tf32Products, 1>);
    kernel<<<grid, kThreads, 0, stream>>>(d_q, d_k, d_log_decay, decay_heads, d_scores, nC, C, chunk_scores_ld(C), Dk);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

namespace {

template <typename P>
void launch_output_pass(bool aligned, dim3 grid, const float* d_q, const float* d_scores, int ld, const float* d_v,
                        const float* d_states, const float* d_log_decay, int decay_heads, float* d_o, int nC, int C,
                        int Dk, int Dv, cudaStream_t stream) {
    auto* kernel = aligned ? chunk_output_kernel<P, 4> : chunk_output_kernel<P, 1>;
    constexpr size_t bytes = OutputShared<P>::kBytes;
    RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    kernel<<<grid, kOutThreads, bytes, stream>>>(d_q, d_scores, ld, d_v, d_states, d_log_decay, decay_heads, d_o, nC, C,
                                                 Dk, Dv);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void launch_chunk_output(const float* d_q, const float* d_scores, const float* d_v, const float* d_states,
                         const float* d_log_decay, int decay_heads, float* d_o, int H, int nC, int C, int Dk, int Dv,
                         ChunkProducts products, cudaStream_t stream) {
    if (H == 0 || nC == 0) return;
    if (!chunk_output_supports(C, nC) || Dk <= 0 || Dv <= 0 || decay_heads <= 0 || H > 65535)
        throw Error("chunk output: unsupported shape (H " + std::to_string(H) + ", chunks " + std::to_string(nC) +
                    ", C " + std::to_string(C) + ", Dk " + std::to_string(Dk) + ", Dv " + std::to_string(Dv) + ")");
    const dim3 grid(ceil_div(Dv, kOutCols), static_cast<unsigned>(nC), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && Dv % 4 == 0 && aligned16(d_q) && aligned16(d_scores) && aligned16(d_v) &&
                         aligned16(d_states) && aligned16(d_o);
    if (products == ChunkProducts::Bf16)
        launch_output_pass<Bf16Products>(aligned, grid, d_q, d_scores, chunk_scores_ld(C), d_v, d_states, d_log_decay,
                                         decay_heads, d_o, nC, C, Dk, Dv, stream);
    else
        launch_output_pass<Tf32Products>(aligned, grid, d_q, d_scores, chunk_scores_ld(C), d_v, d_states, d_log_decay,
                                         decay_heads, d_o, nC, C, Dk, Dv, stream);
}

bool chunk_output_supports(int C, int n_chunks) { return C >= 1 && C <= kTile && n_chunks <= 65535; }

}  // namespace retnet::cuda
