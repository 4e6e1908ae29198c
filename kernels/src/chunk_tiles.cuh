// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the fused chunkwise kernels (chunk_states.cu, chunk_output.cu) share: 64 × 64 tiles of
// head-major fp32 matrices staged through shared memory for tensor-core products with fp32
// accumulation (wmma) by blocks of four warps, each warp a 32 × 32 quarter. The operands are
// rounded as they are staged, to one of two precisions (ops.h, ChunkProducts):
//   Tf32Products  11 significant bits, m16 n16 k8, fp32 tiles (the fp32-weight backends' TF32 option);
//   Bf16Products  8 significant bits, m16 n16 k16, bf16 tiles: twice the products per instruction and
//                 half the shared-memory traffic per operand (the bf16-weight backends, whose
//                 projections already round their inputs to bf16).
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>

namespace retnet::cuda::chunk_tiles {

using namespace nvcuda;

constexpr int kTile = 64;      // state rows (Dk) and columns (Dv) per block; time steps per slab
constexpr int kThreads = 128;  // 4 warps, each a 32 × 32 quarter of the tile
constexpr int kFrag = 16;      // wmma m16 n16

// A shared operand tile's row stride for `cols` columns of `Elem`: rows of a multiple of 16 bytes
// (wmma's ldm rule for both types), banks staggered by 16 bytes.
template <typename Elem>
constexpr int operand_ld(int cols) { return cols + 16 / static_cast<int>(sizeof(Elem)); }
constexpr int kLd = operand_ld<float>(kTile);  // fp32 tiles: the accumulators' staging

struct Tf32Products {
    using Elem = float;                       // shared operand tiles
    using Precision = wmma::precision::tf32;  // fragment element
    static constexpr int kStep = 8;           // wmma k
    // cvt.rna.tf32.f32: round to nearest, ties away from zero
    __device__ static __forceinline__ Elem round(float x) { return wmma::__float_to_tf32(x); }
    __device__ static __forceinline__ float rounded(float x) { return wmma::__float_to_tf32(x); }
};
struct Bf16Products {
    using Elem = __nv_bfloat16;
    using Precision = __nv_bfloat16;
    static constexpr int kStep = 16;
    // round to nearest even
    __device__ static __forceinline__ Elem round(float x) { return __float2bfloat16_rn(x); }
    __device__ static __forceinline__ float rounded(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
};

template <typename P, typename Use, typename Layout>
using Frag = wmma::fragment<Use, kFrag, kFrag, P::kStep, typename P::Precision, Layout>;
template <typename P>
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, P::kStep, float>;

// An operand's fragment from a shared tile (ld elements per row). Operand tiles are rounded when
// they are staged (SlabPart::store), once per element rather than in every fragment load (each
// element is read by two warps).
template <typename P, typename Use, typename Layout>
__device__ __forceinline__ void load_operand(Frag<P, Use, Layout>& f, const typename P::Elem* at, int ld) {
    wmma::load_matrix_sync(f, at, ld);
}

// The warp's quarter: acc (2 × 2 fragments) = 0, and acc += a · b for its two row fragments of A and
// two column fragments of B.
template <typename Acc>
__device__ __forceinline__ void zero_quarter(Acc (&acc)[2][2]) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc[a][b], 0.0f);
}
template <typename P, typename LayoutA, typename LayoutB>
__device__ __forceinline__ void mma_quarter(FragC<P> (&acc)[2][2], const Frag<P, wmma::matrix_a, LayoutA> (&a)[2],
                                            const Frag<P, wmma::matrix_b, LayoutB> (&b)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
}

// The warp's 2 × 2 accumulators of its quarter (rows m0, columns n0) to/from a shared fp32 tile
// (kTile rows of ld floats).
template <typename Acc>
__device__ __forceinline__ void store_quarter(float* tile, Acc (&acc)[2][2], int m0, int n0, int ld = kLd) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
            wmma::store_matrix_sync(tile + (m0 + 16 * a) * ld + n0 + 16 * b, acc[a][b], ld, wmma::mem_row_major);
}
template <typename Acc>
__device__ __forceinline__ void load_quarter(Acc (&acc)[2][2], const float* tile, int m0, int n0) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
            wmma::load_matrix_sync(acc[a][b], tile + (m0 + 16 * a) * kLd + n0 + 16 * b, kLd, wmma::mem_row_major);
}

// Four rounded values to a shared operand tile: one 16-byte (fp32) or 8-byte (bf16) store.
__device__ __forceinline__ void store4(float* at, float a, float b, float c, float d) {
    *reinterpret_cast<float4*>(at) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4(__nv_bfloat16* at, __nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c,
                                       __nv_bfloat16 d) {
    const __nv_bfloat162 lo{a, b}, hi{c, d};
    *reinterpret_cast<uint2*>(at) =
        make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}

// One thread's share of a 64-row slab of a head-major fp32 matrix, Cols columns: Vec floats at a
// time, rows tid / per_row + r · rows_per_pass; staged into a shared operand tile of P's elements.
// The same registers also hold a slab of twice the rows and half the columns ("stacked": column c
// of row r is row r + 64·⌊c / (Cols/2)⌋, column c mod (Cols/2)), such as a transposed operand's
// 128 × 64 slab where the other operand of the pass is 64 × 128: one set of registers for both.
template <typename P, int Vec, int Cols = kTile, int Threads = kThreads>
struct SlabPart {
    using Elem = typename P::Elem;
    static constexpr int kLdShared = operand_ld<Elem>(Cols);  // the shared tile's row stride
    static constexpr int kHalf = Cols / 2;                     // a stacked slab's columns
    static constexpr int kLdStacked = operand_ld<Elem>(kHalf);  // and its shared tile's row stride
    static constexpr int kPerRow = Cols / Vec;
    static constexpr int kRowsPerPass = Threads / kPerRow;
    static constexpr int kPasses = kTile / kRowsPerPass;
    static_assert(Threads % kPerRow == 0 && kTile % kRowsPerPass == 0 && kHalf % Vec == 0);
    float values[kPasses][Vec];

    // rows [row0, row0 + rows) of src (ld floats apart), columns [col0, col0 + cols), zero outside
    __device__ void load(const float* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        load_placed<false>(src, row0, rows, ld, col0, cols);
    }
    // the same of a stacked slab: rows ≤ 2·64, cols ≤ Cols/2
    __device__ void load_stacked(const float* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        load_placed<true>(src, row0, rows, ld, col0, cols);
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
    // into shared (kTile, kLdShared), rounded, the row of pass p multiplied by scale[p]
    __device__ void store(Elem* dst, const float (&scale)[kPasses]) const {
        store_scaled<false>(dst, [&](int p, int) { return scale[p]; });
    }
    // into shared (kTile, kLdShared), rounded, row r multiplied by row_scale[r] (shared memory)
    __device__ void store_row_scaled(Elem* dst, const float* row_scale) const {
        store_scaled<false>(dst, [&](int, int r) { return row_scale[r]; });
    }
    // into shared (kTile, kLdShared), rounded
    __device__ void store(Elem* dst) const {
        store_scaled<false>(dst, [](int, int) { return 1.0f; });  // x · 1 is x: the same bits
    }
    // a stacked slab into shared (2·kTile, kLdStacked), rounded
    __device__ void store_stacked(Elem* dst) const {
        store_scaled<true>(dst, [](int, int) { return 1.0f; });
    }

private:
    // The matrix column of this thread's values, and how far below the slab's row r they sit: 0,
    // or 64 for a stacked slab's right half.
    template <bool kStacked>
    static __device__ __forceinline__ int placed_col(int c) { return kStacked ? c % kHalf : c; }
    template <bool kStacked>
    static __device__ __forceinline__ int placed_row_offset(int c) { return kStacked ? kTile * (c / kHalf) : 0; }

    template <bool kStacked>
    __device__ __forceinline__ void load_placed(const float* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        const int c = (threadIdx.x % kPerRow) * Vec;
        const int col = placed_col<kStacked>(c), row_offset = placed_row_offset<kStacked>(c);
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass + row_offset;
            const float* at = src + (row0 + r) * ld + col0 + col;
            if constexpr (Vec == 4) {
                const float4 x = r < rows && col < cols ? __ldg(reinterpret_cast<const float4*>(at))
                                                         : make_float4(0.f, 0.f, 0.f, 0.f);
                values[p][0] = x.x, values[p][1] = x.y, values[p][2] = x.z, values[p][3] = x.w;
            } else {
                values[p][0] = r < rows && col < cols ? __ldg(at) : 0.0f;
            }
        }
    }
    // row r (of pass p) multiplied by scale_of(p, r), where load_placed read it from
    template <bool kStacked, typename Scale>
    __device__ __forceinline__ void store_scaled(Elem* dst, Scale scale_of) const {
        constexpr int ld = kStacked ? kLdStacked : kLdShared;
        const int c = (threadIdx.x % kPerRow) * Vec;
        const int col = placed_col<kStacked>(c), row_offset = placed_row_offset<kStacked>(c);
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass;
            const float scale = scale_of(p, r);
            Elem* at = dst + (r + row_offset) * ld + col;
            if constexpr (Vec == 4)
                store4(at, P::round(values[p][0] * scale), P::round(values[p][1] * scale),
                       P::round(values[p][2] * scale), P::round(values[p][3] * scale));
            else
                at[0] = P::round(values[p][0] * scale);
        }
    }
};

// The block's accumulators through a shared fp32 tile (kTile, Cols + 4) to/from global rows ld
// floats apart (Vec floats at a time: rows and columns are then multiples of Vec and 16-byte aligned).
template <int Vec, int Cols = kTile, int Threads = kThreads>
__device__ void tile_to_global(const float* tile, float* dst, int64_t ld, int rows, int cols) {
    constexpr int kLdTile = operand_ld<float>(Cols);
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

}  // namespace retnet::cuda::chunk_tiles
