// SPDX-License-Identifier: GPL-3.0-or-later
// fla's chunkwise output in two passes (see launch_chunk_output_tf32 in ops.h).
//
// The unfused path writes the chunk scores Q_c K_cᵀ, masks them in place, writes the inner
// product A_c V_c and the cross product Q_c S_c as two (H, Tp, Dv) buffers and adds them in a
// fourth kernel. Here the scores pass forms each chunk's masked, decayed scores A_c once (C × C,
// 16 KB at C = 64); then a block of the output pass owns 128 columns of one chunk's output: it
// accumulates (diag(γ^(i+1)) Q_c) S_c over Dk slabs (the state slab read once, straight from the
// chunk states) and adds A_c V_c in the same accumulators. An earlier version formed Q_c K_cᵀ in
// every column tile's block (8 times per chunk at Dv 512), half of its products.
// Products are TF32 with fp32 accumulation, as in chunk_states.cu.
#include <string>

#include "chunk_tiles.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

using namespace chunk_tiles;

// Block (chunk, head): A_c = (Q_c K_cᵀ) ⊙ D, D(t, s) = γ^(t−s) for s ≤ t < C, else 0, rounded to TF32
// (it is the output pass's operand), padding columns C … ld zero. Chunk length C ≤ 64.
template <int Vec>
__global__ void __launch_bounds__(kThreads) chunk_scores_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                const float* __restrict__ log_decay, int decay_heads,
                                                                float* __restrict__ scores, int nC, int C, int ld, int Dk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    __shared__ __align__(32) float s_q[kTile * kLd];  // Q slab (t, i); then the scores (t, s)
    __shared__ __align__(32) float s_k[kTile * kLd];  // K slab (s, i)
    __shared__ float s_pow[kTile];                    // γ^n, n < kTile
    const int c = blockIdx.x, h = blockIdx.y;
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const float* q_head = q + h * Tp * Dk;
    const float* k_head = k + h * Tp * Dk;
    const int warp = threadIdx.x / 32, m0 = (warp / 2) * 32, n0 = (warp % 2) * 32;
    const float lg = log_decay[h % decay_heads];
    for (int n = threadIdx.x; n < kTile; n += kThreads) s_pow[n] = decay_pow(lg, n);

    FragC acc[2][2];
    zero_quarter(acc);
    SlabPart<Vec> next_q, next_k;  // the next Dk slab loads while the tensor cores work
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
        for (int kk = 0; kk < min(kTile, Dk - i0); kk += kStep) {
            Frag<wmma::matrix_a, wmma::row_major> fq[2];  // Q: (t, i) at s_q[t·kLd + i]
            Frag<wmma::matrix_b, wmma::col_major> fk[2];  // Kᵀ: (i, s) at s_k[s·kLd + i]
#pragma unroll
            for (int a = 0; a < 2; ++a) load_operand(fq[a], s_q + (m0 + 16 * a) * kLd + kk);
#pragma unroll
            for (int b = 0; b < 2; ++b) load_operand(fk[b], s_k + (n0 + 16 * b) * kLd + kk);
            mma_quarter(acc, fq, fk);
        }
    }
    __syncthreads();
    store_quarter(s_q, acc, m0, n0);
    __syncthreads();
    float* out = scores + (static_cast<int64_t>(h) * nC + c) * C * ld;
    for (int e = threadIdx.x; e < C * ld; e += kThreads) {
        const int t = e / ld, x = e % ld;
        out[e] = x <= t ? to_tf32(s_q[t * kLd + x] * s_pow[t - x]) : 0.0f;
    }
#endif
}

// The output pass's blocks are 64 rows × 128 columns, eight warps of 32 × 32 in a 2 × 4 grid: each
// chunk's Q slabs are read by Dv / 128 blocks rather than Dv / 64 (the pass is bound by what the
// multiprocessors pull from L2, and Q was half of it at Dv 512).
constexpr int kOutCols = 2 * kTile, kOutThreads = 2 * kThreads, kLdOut = kOutCols + 4;
constexpr size_t kOutSharedBytes = (kTile * kLd + kTile * kLdOut + kTile) * sizeof(float);  // above the static 48 KB

// Block (column tile, chunk, head); chunk length C ≤ 64.
template <int Vec>
__global__ void __launch_bounds__(kOutThreads) chunk_output_kernel(const float* __restrict__ q,
                                                                   const float* __restrict__ scores, int ld,
                                                                   const float* __restrict__ v,
                                                                   const float* __restrict__ states,
                                                                   const float* __restrict__ log_decay, int decay_heads,
                                                                   float* __restrict__ o, int nC, int C, int Dk, int Dv) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(32) float smem[];
    float* s_a = smem;                            // Q slab (t, i) · γ^(t+1); then the scores A (t, s)
    float* s_b = s_a + kTile * kLd;               // S slab (i, j); then V (s, j); then the output
    float* s_cross_decay = s_b + kTile * kLdOut;  // γ^(t+1): Q's rows carry the cross term's decay
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

    FragC out[2][2];
    zero_quarter(out);
    SlabPart<Vec, kTile, kOutThreads> next_q;     // Q, then A: the next slab loads while the tensor cores work
    SlabPart<Vec, kOutCols, kOutThreads> next_s;  // S, then V
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
        for (int kk = 0; kk < width; kk += kStep) {
            Frag<wmma::matrix_a, wmma::row_major> fq[2];  // Q: (t, i) at s_a[t·kLd + i]
            Frag<wmma::matrix_b, wmma::row_major> fs[2];  // S: (i, j) at s_b[i·kLdOut + j]
#pragma unroll
            for (int a = 0; a < 2; ++a) load_operand(fq[a], s_a + (m0 + 16 * a) * kLd + kk);
#pragma unroll
            for (int b = 0; b < 2; ++b) load_operand(fs[b], s_b + kk * kLdOut + n0 + 16 * b, kLdOut);
            mma_quarter(out, fq, fs);
        }
    }
    // the cross term is in the accumulators; A_c V_c adds to it
    __syncthreads();
    next_q.store(s_a);  // A is TF32 already: rounding again keeps it
    next_s.store(s_b);
    __syncthreads();
    for (int kk = 0; kk < C; kk += kStep) {
        Frag<wmma::matrix_a, wmma::row_major> fa[2];  // A: (t, s) at s_a[t·kLd + s]
        Frag<wmma::matrix_b, wmma::row_major> fv[2];  // V: (s, j) at s_b[s·kLdOut + j]
#pragma unroll
        for (int a = 0; a < 2; ++a) load_operand(fa[a], s_a + (m0 + 16 * a) * kLd + kk);
#pragma unroll
        for (int b = 0; b < 2; ++b) load_operand(fv[b], s_b + kk * kLdOut + n0 + 16 * b, kLdOut);
        mma_quarter(out, fa, fv);
    }
    __syncthreads();  // every warp is done reading V from s_b
    store_quarter(s_b, out, m0, n0, kLdOut);
    __syncthreads();
    tile_to_global<Vec, kOutCols, kOutThreads>(s_b, o + (static_cast<int64_t>(h) * Tp + t0) * Dv + j0, Dv, C, valid_v);
#endif
}

}  // namespace

int chunk_scores_ld(int C) { return (C + 3) / 4 * 4; }

void launch_chunk_scores_tf32(const float* d_q, const float* d_k, const float* d_log_decay, int decay_heads,
                              float* d_scores, int H, int nC, int C, int Dk, cudaStream_t stream) {
    if (H == 0 || nC == 0) return;
    if (!chunk_output_supports(C, nC) || Dk <= 0 || decay_heads <= 0 || H > 65535)
        throw Error("chunk scores: unsupported shape (H " + std::to_string(H) + ", chunks " + std::to_string(nC) +
                    ", C " + std::to_string(C) + ", Dk " + std::to_string(Dk) + ")");
    const dim3 grid(static_cast<unsigned>(nC), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && aligned16(d_q) && aligned16(d_k);
    auto* kernel = aligned ? chunk_scores_kernel<4> : chunk_scores_kernel<1>;
    kernel<<<grid, kThreads, 0, stream>>>(d_q, d_k, d_log_decay, decay_heads, d_scores, nC, C, chunk_scores_ld(C), Dk);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

void launch_chunk_output_tf32(const float* d_q, const float* d_scores, const float* d_v, const float* d_states,
                              const float* d_log_decay, int decay_heads, float* d_o, int H, int nC, int C, int Dk,
                              int Dv, cudaStream_t stream) {
    if (H == 0 || nC == 0) return;
    if (!chunk_output_supports(C, nC) || Dk <= 0 || Dv <= 0 || decay_heads <= 0 || H > 65535)
        throw Error("chunk output: unsupported shape (H " + std::to_string(H) + ", chunks " + std::to_string(nC) +
                    ", C " + std::to_string(C) + ", Dk " + std::to_string(Dk) + ", Dv " + std::to_string(Dv) + ")");
    const dim3 grid(ceil_div(Dv, kOutCols), static_cast<unsigned>(nC), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && Dv % 4 == 0 && aligned16(d_q) && aligned16(d_scores) && aligned16(d_v) &&
                         aligned16(d_states) && aligned16(d_o);
    auto* kernel = aligned ? chunk_output_kernel<4> : chunk_output_kernel<1>;
    RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(kOutSharedBytes)));
    kernel<<<grid, kOutThreads, kOutSharedBytes, stream>>>(d_q, d_scores, chunk_scores_ld(C), d_v, d_states,
                                                           d_log_decay, decay_heads, d_o, nC, C, Dk, Dv);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

bool chunk_output_supports(int C, int n_chunks) { return C >= 1 && C <= kTile && n_chunks <= 65535; }

}  // namespace retnet::cuda
