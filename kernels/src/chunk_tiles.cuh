// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the fused chunkwise kernels (chunk_states.cu, chunk_output.cu) share: 64 × 64 tiles of
// head-major fp32 matrices staged through shared memory for TF32 tensor-core products (wmma
// m16 n16 k8, fp32 accumulation) by blocks of four warps, each warp a 32 × 32 quarter.
#include <mma.h>

#include <cstdint>

namespace retnet::cuda::chunk_tiles {

using namespace nvcuda;

constexpr int kTile = 64;            // state rows (Dk) and columns (Dv) per block; time steps per slab
constexpr int kLd = kTile + 4;       // shared row stride in floats: 16-byte rows, banks staggered
constexpr int kThreads = 128;        // 4 warps, each a 32 × 32 quarter of the tile
constexpr int kFrag = 16, kStep = 8;  // wmma tf32 shape m16 n16 k8

template <typename Use, typename Layout>
using Frag = wmma::fragment<Use, kFrag, kFrag, kStep, wmma::precision::tf32, Layout>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kStep, float>;

// An operand's fragment from shared memory. Operand tiles are rounded to TF32 when they are staged
// (SlabPart::store, to_tf32), once per element rather than in every fragment load (each element is
// read by two warps): the passes are bound by instruction issue, not by the tensor cores or memory.
template <typename Use, typename Layout>
__device__ __forceinline__ void load_operand(Frag<Use, Layout>& f, const float* at, int ld = kLd) {
    wmma::load_matrix_sync(f, at, ld);
}
__device__ __forceinline__ float to_tf32(float x) { return wmma::__float_to_tf32(x); }

// The warp's quarter: acc (2 × 2 fragments) = 0, and acc += a · b for its two row fragments of A and
// two column fragments of B.
__device__ __forceinline__ void zero_quarter(FragC (&acc)[2][2]) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc[a][b], 0.0f);
}
template <typename LayoutA, typename LayoutB>
__device__ __forceinline__ void mma_quarter(FragC (&acc)[2][2], const Frag<wmma::matrix_a, LayoutA> (&a)[2],
                                            const Frag<wmma::matrix_b, LayoutB> (&b)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
}

// The warp's 2 × 2 accumulators of its quarter (rows m0, columns n0) to/from shared (kTile, kLd).
// (A tile of other width: its row stride ld.)
__device__ __forceinline__ void store_quarter(float* tile, FragC (&acc)[2][2], int m0, int n0, int ld = kLd) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
            wmma::store_matrix_sync(tile + (m0 + 16 * a) * ld + n0 + 16 * b, acc[a][b], ld, wmma::mem_row_major);
}
__device__ __forceinline__ void load_quarter(FragC (&acc)[2][2], const float* tile, int m0, int n0) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
            wmma::load_matrix_sync(acc[a][b], tile + (m0 + 16 * a) * kLd + n0 + 16 * b, kLd, wmma::mem_row_major);
}

// One thread's share of a 64 × 64 slab of a head-major matrix: Vec floats at a time, rows
// tid / per_row + r · rows_per_pass.
template <int Vec, int Cols = kTile, int Threads = kThreads>
struct SlabPart {
    static constexpr int kLdShared = Cols + 4;  // the shared tile's row stride (kLd for 64 columns)
    static constexpr int kPerRow = Cols / Vec;
    static constexpr int kRowsPerPass = Threads / kPerRow;
    static constexpr int kPasses = kTile / kRowsPerPass;
    static_assert(Threads % kPerRow == 0 && kTile % kRowsPerPass == 0);
    float values[kPasses][Vec];

    // rows [row0, row0 + rows) of src (ld floats apart), columns [col0, col0 + cols), zero outside
    __device__ void load(const float* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        const int c = (threadIdx.x % kPerRow) * Vec;
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass;
            const float* at = src + (row0 + r) * ld + col0 + c;
            if constexpr (Vec == 4) {
                const float4 x = r < rows && c < cols ? __ldg(reinterpret_cast<const float4*>(at))
                                                       : make_float4(0.f, 0.f, 0.f, 0.f);
                values[p][0] = x.x, values[p][1] = x.y, values[p][2] = x.z, values[p][3] = x.w;
            } else {
                values[p][0] = r < rows && c < cols ? __ldg(at) : 0.0f;
            }
        }
    }
    // rows [row0, row0 + rows) of a per-row vector (the rows' decays), zero outside: the scale
    // of this thread's rows, one per pass
    __device__ void load_row_scales(const float* src, int64_t row0, int rows, float (&scale)[kPasses]) const {
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass;
            scale[p] = r < rows ? __ldg(src + row0 + r) : 0.0f;
        }
    }
    // into shared (kTile, kLdShared) as a TF32 operand, the row of pass p multiplied by scale[p]
    __device__ void store(float* dst, const float (&scale)[kPasses]) const {
        store_scaled(dst, [&](int p, int) { return scale[p]; });
    }
    // into shared (kTile, kLdShared) as a TF32 operand, row r multiplied by row_scale[r] (shared memory)
    __device__ void store_row_scaled(float* dst, const float* row_scale) const {
        store_scaled(dst, [&](int, int r) { return row_scale[r]; });
    }
    // into shared (kTile, kLdShared) as a TF32 operand
    __device__ void store(float* dst) const {
        store_scaled(dst, [](int, int) { return 1.0f; });  // x · 1 is x: the same bits
    }

private:
    // row r (of pass p) multiplied by scale_of(p, r)
    template <typename Scale>
    __device__ __forceinline__ void store_scaled(float* dst, Scale scale_of) const {
        const int c = (threadIdx.x % kPerRow) * Vec;
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass;
            const float scale = scale_of(p, r);
#pragma unroll
            for (int e = 0; e < Vec; ++e) dst[r * kLdShared + c + e] = to_tf32(values[p][e] * scale);
        }
    }
};

// The block's accumulators through shared (kTile, Cols + 4) to/from global rows ld floats apart
// (Vec floats at a time: rows and columns are then multiples of Vec and 16-byte aligned).
template <int Vec, int Cols = kTile, int Threads = kThreads>
__device__ void tile_to_global(const float* tile, float* dst, int64_t ld, int rows, int cols) {
    constexpr int kLdTile = Cols + 4;
    for (int e = threadIdx.x * Vec; e < kTile * Cols; e += Threads * Vec) {
        const int r = e / Cols, c = e % Cols;
        if (r >= rows || c >= cols) continue;
        if constexpr (Vec == 4)
            *reinterpret_cast<float4*>(dst + r * ld + c) = *reinterpret_cast<const float4*>(tile + r * kLdTile + c);
        else
            dst[r * ld + c] = tile[r * kLdTile + c];
    }
}
__device__ inline void tile_from_global(float* tile, const float* src, int64_t ld, int rows, int cols) {
    for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
        const int r = e / kTile, c = e % kTile;
        tile[r * kLd + c] = r < rows && c < cols ? src[r * ld + c] : 0.0f;
    }
}


// The launchers' test for the float4 kernels' pointers.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace retnet::cuda::chunk_tiles
