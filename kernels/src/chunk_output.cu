// SPDX-License-Identifier: GPL-3.0-or-later
// fla's chunkwise output in one pass (see launch_chunk_output_tf32 in ops.h).
//
// The unfused path writes the chunk scores Q_c K_cᵀ, masks them in place, writes the inner
// product A_c V_c and the cross product Q_c S_c as two (H, Tp, Dv) buffers and adds them in a
// fourth kernel. Here a block owns 64 columns of one chunk's output: it accumulates Q_c K_cᵀ and
// Q_c S_c together over Dk slabs (the state slab is read once, straight from the chunk states),
// decays both in shared memory, and adds A_c V_c to the cross term in the same accumulators.
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

constexpr int kTiles = 3;  // shared tiles: the Q, K and S slabs; then the scores, the cross term and V
constexpr size_t kSharedBytes = kTiles * kTile * kLd * sizeof(float) + (2 * kTile + 1) * sizeof(float);

// Block (column tile, chunk, head); chunk length C ≤ 64.
template <int Vec>
__global__ void __launch_bounds__(kThreads) chunk_output_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                                const float* __restrict__ v,
                                                                const float* __restrict__ states,
                                                                const float* __restrict__ log_decay, int decay_heads,
                                                                float* __restrict__ o, int nC, int C, int Dk, int Dv) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    extern __shared__ __align__(32) float smem[];
    float* s_a = smem;                 // Q slab (t, i); then the masked scores (t, s)
    float* s_b = s_a + kTile * kLd;    // K slab (s, i); then the cross term (t, j), then the output
    float* s_c = s_b + kTile * kLd;    // S slab (i, j); then V (s, j)
    float* s_pow = s_c + kTile * kLd;  // γ^n, n = 0 … 2·kTile
    const int j0 = blockIdx.x * kTile, c = blockIdx.y, h = blockIdx.z;
    const int valid_v = min(kTile, Dv - j0);
    const int64_t Tp = static_cast<int64_t>(nC) * C, t0 = static_cast<int64_t>(c) * C;
    const float* q_head = q + h * Tp * Dk;
    const float* k_head = k + h * Tp * Dk;
    const float* S = states + (static_cast<int64_t>(h) * nC + c) * Dk * Dv;
    const int warp = threadIdx.x / 32, m0 = (warp / 2) * 32, n0 = (warp % 2) * 32;
    const float lg = log_decay[h % decay_heads];
    for (int n = threadIdx.x; n <= 2 * kTile; n += kThreads) s_pow[n] = decay_pow(lg, n);

    FragC scores[2][2], out[2][2];
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) wmma::fill_fragment(scores[a][b], 0.0f), wmma::fill_fragment(out[a][b], 0.0f);
    SlabPart<Vec> part;
    for (int i0 = 0; i0 < Dk; i0 += kTile) {
        const int width = min(kTile, Dk - i0);
        __syncthreads();  // the previous slab's products are done
        part.load(q_head, t0, C, Dk, i0, width);
        part.store(s_a, nullptr);
        part.load(k_head, t0, C, Dk, i0, width);
        part.store(s_b, nullptr);
        part.load(S, i0, width, Dv, j0, valid_v);
        part.store(s_c, nullptr);
        __syncthreads();
        for (int kk = 0; kk < width; kk += kStep) {
            Frag<wmma::matrix_a, wmma::row_major> fq[2];  // Q: (t, i) at s_a[t·kLd + i]
            Frag<wmma::matrix_b, wmma::col_major> fk[2];  // Kᵀ: (i, s) at s_b[s·kLd + i]
            Frag<wmma::matrix_b, wmma::row_major> fs[2];  // S: (i, j) at s_c[i·kLd + j]
#pragma unroll
            for (int a = 0; a < 2; ++a) load_tf32(fq[a], s_a + (m0 + 16 * a) * kLd + kk);
#pragma unroll
            for (int b = 0; b < 2; ++b) {
                load_tf32(fk[b], s_b + (n0 + 16 * b) * kLd + kk);
                load_tf32(fs[b], s_c + kk * kLd + n0 + 16 * b);
            }
#pragma unroll
            for (int a = 0; a < 2; ++a)
#pragma unroll
                for (int b = 0; b < 2; ++b) {
                    wmma::mma_sync(scores[a][b], fq[a], fk[b], scores[a][b]);
                    wmma::mma_sync(out[a][b], fq[a], fs[b], out[a][b]);
                }
        }
    }
    // the decay: scores (t, s) · γ^(t−s) below the diagonal, the cross term (t, j) · γ^(t+1)
    __syncthreads();
    store_quarter(s_a, scores, m0, n0);
    store_quarter(s_b, out, m0, n0);
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
        const int t = e / kTile, x = e % kTile;
        s_a[t * kLd + x] *= x <= t && t < C ? s_pow[t - x] : 0.0f;
        s_b[t * kLd + x] *= s_pow[t + 1];
    }
    part.load(v, static_cast<int64_t>(h) * Tp + t0, C, Dv, j0, valid_v);
    part.store(s_c, nullptr);
    __syncthreads();
    load_quarter(out, s_b, m0, n0);
    for (int kk = 0; kk < C; kk += kStep) {
        Frag<wmma::matrix_a, wmma::row_major> fa[2];  // A: (t, s) at s_a[t·kLd + s]
        Frag<wmma::matrix_b, wmma::row_major> fv[2];  // V: (s, j) at s_c[s·kLd + j]
#pragma unroll
        for (int a = 0; a < 2; ++a) load_tf32(fa[a], s_a + (m0 + 16 * a) * kLd + kk);
#pragma unroll
        for (int b = 0; b < 2; ++b) load_tf32(fv[b], s_c + kk * kLd + n0 + 16 * b);
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int b = 0; b < 2; ++b) wmma::mma_sync(out[a][b], fa[a], fv[b], out[a][b]);
    }
    __syncthreads();  // every warp is done reading the cross term from s_b
    store_quarter(s_b, out, m0, n0);
    __syncthreads();
    tile_to_global<Vec>(s_b, o + (static_cast<int64_t>(h) * Tp + t0) * Dv + j0, Dv, C, valid_v);
#endif
}

}  // namespace

void launch_chunk_output_tf32(const float* d_q, const float* d_k, const float* d_v, const float* d_states,
                              const float* d_log_decay, int decay_heads, float* d_o, int H, int nC, int C, int Dk,
                              int Dv, cudaStream_t stream) {
    if (H == 0 || nC == 0) return;
    if (!chunk_output_supports(C, nC) || Dk <= 0 || Dv <= 0 || decay_heads <= 0 || H > 65535)
        throw Error("chunk output: unsupported shape (H " + std::to_string(H) + ", chunks " + std::to_string(nC) +
                    ", C " + std::to_string(C) + ", Dk " + std::to_string(Dk) + ", Dv " + std::to_string(Dv) + ")");
    const dim3 grid(ceil_div(Dv, kTile), static_cast<unsigned>(nC), static_cast<unsigned>(H));
    auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    const bool aligned = Dk % 4 == 0 && Dv % 4 == 0 && aligned16(d_q) && aligned16(d_k) && aligned16(d_v) &&
                         aligned16(d_states) && aligned16(d_o);
    auto* kernel = aligned ? chunk_output_kernel<4> : chunk_output_kernel<1>;
    RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(kSharedBytes)));
    kernel<<<grid, kThreads, kSharedBytes, stream>>>(d_q, d_k, d_v, d_states, d_log_decay, decay_heads, d_o, nC, C, Dk,
                                                     Dv);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

bool chunk_output_supports(int C, int n_chunks) { return C >= 1 && C <= kTile && n_chunks <= 65535; }

}  // namespace retnet::cuda
