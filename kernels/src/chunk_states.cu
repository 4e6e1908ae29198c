// SPDX-License-Identifier: GPL-3.0-or-later
// The chunk states of the chunkwise form in one pass (see launch_chunk_states in ops.h).
//
// The unfused path writes every chunk's own contribution K_cᵀ V_c to memory (a cuBLAS batched
// GEMM), then a scan reads and rewrites all of them: three passes over (H, nC, Dk, Dv) floats,
// which at Dk 256, Dv 512 are 512 KB per head and chunk. Here a block owns one 64 × 64 tile of
// one head's state for the whole walk over the chunks: the tile stays in tensor-core
// accumulators, each chunk's K and V slabs are staged through shared memory (the next slab's
// loads in flight while the tensor cores work on the current one), and the state before each chunk
// is written once.
//
// Precision: K·row_decay and V are rounded to TF32 or bf16 (chunk_tiles.cuh) for the products,
// which accumulate in fp32; the decay of the state is applied in fp32, and the states are written
// in the inputs' storage type: fp32, or bf16 where K and V are stored in bf16 (the CUDA trainer's
// bf16 products, whose next pass rounds the states to bf16 as it stages them: the same bits at half
// the traffic). S, the walk's first and last state, stays fp32.
#include <algorithm>
#include <string>
#include <type_traits>

#include "chunk_tiles.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

using namespace chunk_tiles;

template <typename P, int Vec, typename In>
__global__ void __launch_bounds__(kThreads) chunk_states_kernel(const In* __restrict__ k, const In* __restrict__ v,
                                                                const float* __restrict__ row_decay,
                                                                const float* __restrict__ chunk_decay, float* S,
                                                                In* __restrict__ states, int nC, int C, int Dk, int Dv,
                                                                bool reverse) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using Elem = typename P::Elem;
    constexpr int ld = operand_ld<Elem>(kTile);
    // The K and V operand tiles, and the fp32 tile of the accumulators (the state's way to and from
    // global memory where it cannot go direct). TF32's operand tile has the accumulators' shape, so
    // the accumulators reuse s_k; bf16's is half the size, so they get their own. Two arrays, not one
    // byte array cut in parts: the compiler then knows the tiles apart (the cut version spilled).
    constexpr bool kTileInK = std::is_same_v<Elem, float>;
    static_assert(!kTileInK || ld == kLd);
    __shared__ __align__(32) Elem s_k[kTile * ld];  // (t, i): K·row_decay, read as Kᵀ (col-major A)
    __shared__ __align__(32) Elem s_v[kTile * ld];  // (t, j)
    __shared__ __align__(32) float s_own_tile[kTileInK ? 1 : kTile * kLd];
    float* s_tile = kTileInK ? reinterpret_cast<float*>(s_k) : s_own_tile;  // (kTile, kLd)
    const int j0 = blockIdx.x * kTile, i0 = blockIdx.y * kTile, h = blockIdx.z;
    const int valid_k = min(kTile, Dk - i0), valid_v = min(kTile, Dv - j0);  // the tile's state rows, columns
    const int64_t Tp = static_cast<int64_t>(nC) * C, state_size = static_cast<int64_t>(Dk) * Dv;
    const In* k_head = k + h * Tp * Dk;
    const In* v_head = v + h * Tp * Dv;
    const float* decay_rows = row_decay + h * Tp;
    float* S_tile = S + h * state_size + static_cast<int64_t>(i0) * Dv + j0;
    const int warp = threadIdx.x / 32, m0 = (warp / 2) * 32, n0 = (warp % 2) * 32;
    // A whole fp32 tile of 16-byte-aligned rows goes out straight from the accumulators (wmma stores
    // need 32-byte-aligned sub-tiles): no trip through shared memory and two fewer barriers per chunk.
    // Other tiles go through the fp32 tile, without the barriers where it is not s_k (bf16 products).
    constexpr bool kFloatOut = std::is_same_v<In, float>;
    const bool direct_out = kFloatOut && Vec == 4 && valid_k == kTile && valid_v == kTile && Dv % 8 == 0 &&
                            reinterpret_cast<uintptr_t>(states) % 32 == 0;
    // bf16 states of a whole tile go out from the accumulators' registers too (quarter_to_global_bf16;
    // Vec 4: Dv a multiple of 4 and the states 8-byte aligned): the fp32 round trip through shared
    // memory was ~40 % of the walk's shared-memory traffic at the 1.3B heads.
    const bool direct_bf16_out = !kFloatOut && Vec == 4 && valid_k == kTile && valid_v == kTile;

    FragC<P> acc[2][2];
    tile_from_global(s_tile, S_tile, Dv, valid_k, valid_v);
    __syncthreads();
    load_quarter(acc, s_tile, m0, n0);

    const int slabs = (C + kTile - 1) / kTile;
    SlabPart<P, Vec> next_k, next_v;
    float next_scale[SlabPart<P, Vec>::kPasses];  // the decays of next_k's rows
    auto load_next = [&](int64_t t0, int steps) {
        next_k.load(k_head, t0, steps, Dk, i0, valid_k);
        next_v.load(v_head, t0, steps, Dv, j0, valid_v);
        next_k.load_row_scales(decay_rows, t0, steps, next_scale);
    };
    // the walk's w-th chunk: c = w, or nC − 1 − w when walking backwards
    const auto chunk_at = [&](int w) { return reverse ? nC - 1 - w : w; };
    load_next(static_cast<int64_t>(chunk_at(0)) * C, min(kTile, C));
    for (int w = 0; w < nC; ++w) {
        const int c = chunk_at(w);
        // the state before chunk c goes out, then decays
        In* out = states + (static_cast<int64_t>(h) * nC + c) * state_size + static_cast<int64_t>(i0) * Dv + j0;
        if constexpr (kFloatOut) {
            if (direct_out) {
#pragma unroll
                for (int a = 0; a < 2; ++a)
#pragma unroll
                    for (int b = 0; b < 2; ++b)
                        wmma::store_matrix_sync(out + static_cast<int64_t>(m0 + 16 * a) * Dv + n0 + 16 * b, acc[a][b],
                                                Dv, wmma::mem_row_major);
            }
        }
        if (!direct_out) {
            if constexpr (!kTileInK) {  // the tile is the block's own: each warp stages its quarter alone
                if constexpr (!kFloatOut) {
                    if (direct_bf16_out) quarter_to_global_bf16(acc, out, Dv, m0, n0);
                }
                if (!direct_bf16_out) {
                    store_quarter(s_tile, acc, m0, n0);
                    __syncwarp();
                    quarter_to_global<Vec>(s_tile, out, Dv, m0, n0, valid_k, valid_v);
                }
            } else {
                __syncthreads();  // the previous slab's products are done with s_k and s_v
                store_quarter(s_tile, acc, m0, n0);
                __syncthreads();
                tile_to_global<Vec>(s_tile, out, Dv, valid_k, valid_v);
            }
        }
        const float d = chunk_decay[static_cast<int64_t>(h) * nC + c];
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int b = 0; b < 2; ++b)
#pragma unroll
                for (int e = 0; e < acc[a][b].num_elements; ++e) acc[a][b].x[e] *= d;

        for (int s = 0; s < slabs; ++s) {
            const int64_t t0 = static_cast<int64_t>(c) * C + s * kTile;
            const int steps = min(kTile, C - s * kTile);
            __syncthreads();  // s_k, s_v free (the state tile copied, or the last slab's products done)
            next_k.template store<In>(s_k, next_scale);
            next_v.template store<In>(s_v);
            __syncthreads();
            // the next slab (of this chunk or the next) loads while the tensor cores work
            const bool last_slab = s + 1 == slabs;
            if (!last_slab || w + 1 < nC)
                load_next(last_slab ? static_cast<int64_t>(chunk_at(w + 1)) * C : t0 + kTile,
                          last_slab ? min(kTile, C) : min(kTile, C - (s + 1) * kTile));
            for (int kk = 0; kk < steps; kk += P::kStep)  // rows past `steps` are zero
                // Kᵀ: (i, t) at s_k[t·ld + i]; V: (t, j) at s_v[t·ld + j]
                mma_quarter_step<P, wmma::col_major, wmma::row_major>(acc, s_k + kk * ld + m0, ld,
                                                                       s_v + kk * ld + n0, ld);
        }
    }
    __syncthreads();
    store_quarter(s_tile, acc, m0, n0);
    __syncthreads();
    tile_to_global<Vec>(s_tile, S_tile, Dv, valid_k, valid_v);
#endif
}

}  // namespace

template <typename In>
void launch_chunk_states(const In* d_k, const In* d_v, const float* d_row_decay, const float* d_chunk_decay, float* d_S,
                         In* d_states, int H, int nC, int C, int Dk, int Dv, ChunkProducts products, cudaStream_t stream,
                         ChunkWalk walk) {
    if (H == 0 || nC == 0) return;
    if (C <= 0 || Dk <= 0 || Dv <= 0 || H > 65535)
        throw Error("chunk states: unsupported shape (H " + std::to_string(H) + ", C " + std::to_string(C) + ", Dk " +
                    std::to_string(Dk) + ", Dv " + std::to_string(Dv) + ")");
    check_storage<In>(products, "chunk states");
    constexpr bool kBf16Stored = std::is_same_v<In, __nv_bfloat16>;
    const bool bf16 = products == ChunkProducts::Bf16;
    const dim3 grid(ceil_div(Dv, kTile), ceil_div(Dk, kTile), static_cast<unsigned>(H));
    const bool aligned = Dk % 4 == 0 && Dv % 4 == 0 && vec4_aligned(d_k) && vec4_aligned(d_v) && aligned16(d_S) &&
                         vec4_aligned(d_states);
    auto* kernel = aligned ? chunk_states_kernel<Bf16Products, 4, In> : chunk_states_kernel<Bf16Products, 1, In>;
    if constexpr (!kBf16Stored)
        if (!bf16) kernel = aligned ? chunk_states_kernel<Tf32Products, 4, In> : chunk_states_kernel<Tf32Products, 1, In>;
    kernel<<<grid, kThreads, 0, stream>>>(d_k, d_v, d_row_decay, d_chunk_decay, d_S, d_states, nC, C, Dk, Dv,
                                          walk == ChunkWalk::Backward);
    RETNET_CUDA_CHECK(cudaGetLastError());
}
template void launch_chunk_states(const float*, const float*, const float*, const float*, float*, float*, int, int, int,
                                  int, int, ChunkProducts, cudaStream_t, ChunkWalk);
template void launch_chunk_states(const __nv_bfloat16*, const __nv_bfloat16*, const float*, const float*, float*,
                                  __nv_bfloat16*, int, int, int, int, int, ChunkProducts, cudaStream_t, ChunkWalk);

}  // namespace retnet::cuda
