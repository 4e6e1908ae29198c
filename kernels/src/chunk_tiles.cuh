// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the fused chunkwise kernels (chunk_states.cu, chunk_output.cu) share: 64 × 64 tiles of
// head-major fp32 or bf16 matrices staged through shared memory for tensor-core products with fp32
// accumulation (wmma's fragments; bf16 operands by ldmatrix and mma.sync, mma_quarter_step) by blocks of four
// warps, each warp a 32 × 32 quarter. The operands are
// rounded as they are staged, to one of two precisions (ops.h, ChunkProducts):
//   Tf32Products  11 significant bits, m16 n16 k8, fp32 tiles (the fp32-weight backends' TF32 option);
//   Bf16Products  8 significant bits, m16 n16 k16, bf16 tiles: twice the products per instruction and
//                 half the shared-memory traffic per operand (the bf16-weight backends, whose
//                 projections already round their inputs to bf16).
#include <cuda_bf16.h>
#include <mma.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda::chunk_tiles {

using namespace nvcuda;

constexpr int kTile = 64;      // state rows (Dk) and columns (Dv) per block; time steps per slab
constexpr int kThreads = 128;  // 4 warps, each a 32 × 32 quarter of the tile
constexpr int kFrag = 16;      // wmma m16 n16

// The launchers' rule for operand storage In: bf16 only with bf16 products (it is their operands'
// precision; TF32 products would read 8 of their 11 bits).
template <typename In>
void check_storage(ChunkProducts products, const char* what) {
    if (std::is_same_v<In, __nv_bfloat16> && products != ChunkProducts::Bf16)
        throw Error(std::string(what) + ": bf16 inputs are for bf16 products");
}

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

// The warp's quarter: acc (2 × 2 fragments) = 0.
template <typename Acc>
__device__ __forceinline__ void zero_quarter(Acc (&acc)[2][2]) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc[a][b], 0.0f);
}

// How bf16 operands reach the tensor cores: by ldmatrix, four 8 × 8 matrices an instruction, and
// mma.sync m16n8k16 into the wmma accumulators (the layout described above quarter_to_global_bf16). wmma's
// load_matrix_sync compiles to narrow shared loads (nvcc 13.0, sm_90: the bf16 walk's step 28 LDS beside its
// 8 HMMA). H100, retention kernels at the 1.3B heads (retnet_cuda_bench 1 kernels): the forward 0.92 → 0.80 ms
// at 8 × 2048, 1.89 → 1.65 at 1 × 32768; forward + backward 3.23 → 2.94 and 6.62 → 6.03. 0 (-DRETNET_CHUNK_LDMATRIX=0):
// wmma's loads and products, kept to measure the two against each other. TF32 operands (32-bit elements) always
// take wmma's: ldmatrix.trans moves 16-bit elements only.
#ifndef RETNET_CHUNK_LDMATRIX
#define RETNET_CHUNK_LDMATRIX 1
#endif
constexpr bool kLdmatrixOperands = RETNET_CHUNK_LDMATRIX != 0;

// Lane l's four registers of the 8 × 8 bf16 matrices whose rows lanes 8m … 8m+7 address (16-byte rows),
// transposed (.trans) or not.
template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&m)[4], const __nv_bfloat16* row) {
    const auto at = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if constexpr (kTrans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(m[0]), "=r"(m[1]), "=r"(m[2]), "=r"(m[3])
                     : "r"(at)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(m[0]), "=r"(m[1]), "=r"(m[2]), "=r"(m[3])
                     : "r"(at)
                     : "memory");
}

// acc += the warp's quarter over one k-step: A's rows m0 … m0+31, B's columns n0 … n0+31, kStep steps from kk.
// a_at is A's element (m0, kk), at a[m·lda + k] (row_major) or a[k·lda + m] (col_major); b_at is B's
// element (kk, n0), at b[k·ldb + n] (row_major) or b[n·ldb + k] (col_major) — wmma's layouts of the same
// shared tiles. Rows 16-byte aligned for bf16 (operand_ld).
template <typename P, typename LayoutA, typename LayoutB>
__device__ __forceinline__ void mma_quarter_step(FragC<P> (&acc)[2][2], const typename P::Elem* a_at, int lda,
                                                 const typename P::Elem* b_at, int ldb) {
    constexpr bool kARowMajor = std::is_same_v<LayoutA, wmma::row_major>;
    constexpr bool kBRowMajor = std::is_same_v<LayoutB, wmma::row_major>;
    if constexpr (std::is_same_v<P, Bf16Products> && kLdmatrixOperands) {
        static_assert(FragC<P>::num_elements == 8);
        const int lane = threadIdx.x % 32, q = lane / 8, r = lane % 8;
        // A's m16 k16 fragment: registers (m +0, k +0), (m +8, k +0), (m +0, k +8), (m +8, k +8): matrix q at
        // m + 8·(q % 2), k + 8·(q / 2); stored with k along the row (row_major) it is loaded as it lies.
        uint32_t a[2][4];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int m = 16 * i + 8 * (q % 2), k = 8 * (q / 2);
            ldmatrix_x4<!kARowMajor>(a[i], kARowMajor ? a_at + (m + r) * lda + k : a_at + (k + r) * lda + m);
        }
        // B's two n8 k16 fragments: registers (n +0, k +0), (n +0, k +8), (n +8, k +0), (n +8, k +8): matrix q
        // at n + 8·(q / 2), k + 8·(q % 2); stored with k along the row (col_major) it is loaded as it lies.
        uint32_t b[2][4];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int n = 16 * j + 8 * (q / 2), k = 8 * (q % 2);
            ldmatrix_x4<kBRowMajor>(b[j], kBRowMajor ? b_at + (k + r) * ldb + n : b_at + (n + r) * ldb + k);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int h = 0; h < 2; ++h) {  // the accumulators' columns +0 … +7, then +8 … +15
                    float(&c)[4] = *reinterpret_cast<float(*)[4]>(acc[i][j].x + 4 * h);
                    mma_bf16(c, a[i][0], a[i][1], a[i][2], a[i][3], b[j][2 * h], b[j][2 * h + 1]);
                }
    } else {
        // Operand tiles were rounded when they were staged (SlabPart::store), once per element rather than
        // in every fragment load (each element is read by two warps).
        Frag<P, wmma::matrix_a, LayoutA> fa[2];
        Frag<P, wmma::matrix_b, LayoutB> fb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], kARowMajor ? a_at + 16 * i * lda : a_at + 16 * i, lda);
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], kBRowMajor ? b_at + 16 * j : b_at + 16 * j * ldb, ldb);
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
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
__device__ __forceinline__ void load_quarter(Acc (&acc)[2][2], const float* tile, int m0, int n0, int ld = kLd) {
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
            wmma::load_matrix_sync(acc[a][b], tile + (m0 + 16 * a) * ld + n0 + 16 * b, ld, wmma::mem_row_major);
}
// acc's rows times row_scale (shared, by the tile's row), through the warp's own quarter of a shared
// fp32 tile (ld floats a row) that no other warp touches meanwhile: the accumulators' layout is opaque.
template <typename Acc>
__device__ __forceinline__ void scale_quarter_rows(Acc (&acc)[2][2], float* tile, int m0, int n0, int ld,
                                                   const float* row_scale) {
    store_quarter(tile, acc, m0, n0, ld);
    __syncwarp();
    const int lane = threadIdx.x % 32;
    for (int r = m0; r < m0 + 32; ++r) tile[r * ld + n0 + lane] *= row_scale[r];
    __syncwarp();
    load_quarter(acc, tile, m0, n0, ld);
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

// One thread's share of a 64-row slab of a head-major matrix stored in fp32 or bf16 (Src), Cols
// columns: Vec elements at a time, rows tid / per_row + r · rows_per_pass; staged into a shared
// operand tile of P's elements. The registers hold the bits as loaded (fp32 words, or bf16 pairs),
// converted only when they are staged: a conversion at the load would wait for it there, where the
// loads of the next slab are meant to stay in flight while the tensor cores work. A bf16 slab staged
// unscaled for bf16 products is copied as it is.
// The same registers also hold a slab of twice the rows and half the columns ("stacked": column c
// of row r is row r + 64·⌊c / (Cols/2)⌋, column c mod (Cols/2)), such as a transposed operand's
// 128 × 64 slab where the other operand of the pass is 64 × 128: one set of registers for both.
// The stores name the type of the last load (Src).
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
    static_assert(Vec == 1 || Vec == 4);
    uint32_t bits[kPasses][Vec];  // fp32: Vec words; bf16: Vec 4 in two words of pairs, Vec 1 in the low half

    // rows [row0, row0 + rows) of src (ld elements apart), columns [col0, col0 + cols), zero outside
    template <typename Src>
    __device__ void load(const Src* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        load_placed<false>(src, row0, rows, ld, col0, cols);
    }
    // the same of a stacked slab: rows ≤ 2·64, cols ≤ Cols/2
    template <typename Src>
    __device__ void load_stacked(const Src* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
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
    template <typename Src>
    __device__ void store(Elem* dst, const float (&scale)[kPasses]) const {
        store_scaled<false, false, Src>(dst, [&](int p) { return scale[p]; });
    }
    // into shared (kTile, kLdShared), rounded
    template <typename Src>
    __device__ void store(Elem* dst) const {
        store_scaled<false, true, Src>(dst, [](int) { return 1.0f; });
    }
    // a stacked slab into shared (2·kTile, kLdStacked), rounded
    template <typename Src>
    __device__ void store_stacked(Elem* dst) const {
        store_scaled<true, true, Src>(dst, [](int) { return 1.0f; });
    }

private:
    // The matrix column of this thread's values, and how far below the slab's row r they sit: 0,
    // or 64 for a stacked slab's right half.
    template <bool kStacked>
    static __device__ __forceinline__ int placed_col(int c) { return kStacked ? c % kHalf : c; }
    template <bool kStacked>
    static __device__ __forceinline__ int placed_row_offset(int c) { return kStacked ? kTile * (c / kHalf) : 0; }

    template <bool kStacked, typename Src>
    __device__ __forceinline__ void load_placed(const Src* src, int64_t row0, int rows, int64_t ld, int col0, int cols) {
        static_assert(std::is_same_v<Src, float> || std::is_same_v<Src, __nv_bfloat16>);
        const int c = (threadIdx.x % kPerRow) * Vec;
        const int col = placed_col<kStacked>(c), row_offset = placed_row_offset<kStacked>(c);
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass + row_offset;
            const bool inside = r < rows && col < cols;
            const Src* at = src + (row0 + r) * ld + col0 + col;
            if constexpr (std::is_same_v<Src, float> && Vec == 4) {
                const float4 x = inside ? __ldg(reinterpret_cast<const float4*>(at)) : make_float4(0.f, 0.f, 0.f, 0.f);
                bits[p][0] = __float_as_uint(x.x), bits[p][1] = __float_as_uint(x.y);
                bits[p][2] = __float_as_uint(x.z), bits[p][3] = __float_as_uint(x.w);
            } else if constexpr (std::is_same_v<Src, float>) {
                bits[p][0] = inside ? __float_as_uint(__ldg(at)) : 0u;
            } else if constexpr (Vec == 4) {
                const uint2 x = inside ? __ldg(reinterpret_cast<const uint2*>(at)) : make_uint2(0u, 0u);
                bits[p][0] = x.x, bits[p][1] = x.y;
            } else {
                bits[p][0] = inside ? __ldg(reinterpret_cast<const unsigned short*>(at)) : 0u;
            }
        }
    }
    // The values of pass p as floats (bf16 widens exactly: its bits are a float's upper half).
    template <typename Src>
    __device__ __forceinline__ void decode(int p, float (&v)[Vec]) const {
        if constexpr (std::is_same_v<Src, float>) {
#pragma unroll
            for (int e = 0; e < Vec; ++e) v[e] = __uint_as_float(bits[p][e]);
        } else if constexpr (Vec == 4) {
            v[0] = __uint_as_float(bits[p][0] << 16), v[1] = __uint_as_float(bits[p][0] & 0xffff0000u);
            v[2] = __uint_as_float(bits[p][1] << 16), v[3] = __uint_as_float(bits[p][1] & 0xffff0000u);
        } else {
            v[0] = __uint_as_float(bits[p][0] << 16);
        }
    }
    // the values of pass p multiplied by scale_of(p), where load_placed read them from
    template <bool kStacked, bool kUnscaled, typename Src, typename Scale>
    __device__ __forceinline__ void store_scaled(Elem* dst, Scale scale_of) const {
        constexpr int ld = kStacked ? kLdStacked : kLdShared;
        constexpr bool kCopy = kUnscaled && std::is_same_v<Src, __nv_bfloat16> && std::is_same_v<Elem, __nv_bfloat16>;
        const int c = (threadIdx.x % kPerRow) * Vec;
        const int col = placed_col<kStacked>(c), row_offset = placed_row_offset<kStacked>(c);
#pragma unroll
        for (int p = 0; p < kPasses; ++p) {
            const int r = threadIdx.x / kPerRow + p * kRowsPerPass;
            Elem* at = dst + (r + row_offset) * ld + col;
            if constexpr (kCopy) {  // bf16 as loaded: rounding a bf16 to bf16 keeps it
                if constexpr (Vec == 4)
                    *reinterpret_cast<uint2*>(at) = make_uint2(bits[p][0], bits[p][1]);
                else
                    *reinterpret_cast<unsigned short*>(at) = static_cast<unsigned short>(bits[p][0]);
            } else {
                float v[Vec];
                decode<Src>(p, v);
                const float scale = scale_of(p);  // x · 1 is x: the same bits
                if constexpr (Vec == 4)
                    store4(at, P::round(v[0] * scale), P::round(v[1] * scale), P::round(v[2] * scale),
                           P::round(v[3] * scale));
                else
                    at[0] = P::round(v[0] * scale);
            }
        }
    }
};

// Vec consecutive floats of a shared fp32 tile (16-byte aligned for Vec 4) to global memory, fp32 or
// rounded to bf16 (store_vec).
template <int Vec, typename Dst>
__device__ __forceinline__ void tile_vec_to_global(const float* from, Dst* to) {
    float v[Vec];
    if constexpr (Vec == 4) {
        const float4 x = *reinterpret_cast<const float4*>(from);
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    } else {
        v[0] = *from;
    }
    store_vec<Vec>(to, v);
}
// The block's accumulators through a shared fp32 tile (kTile, Cols + 4) to/from global rows ld
// elements apart, fp32 or rounded to bf16 (Vec elements at a time: rows and columns are then
// multiples of Vec and the destination vec4_aligned).
template <int Vec, int Cols = kTile, int Threads = kThreads, typename Dst>
__device__ void tile_to_global(const float* tile, Dst* dst, int64_t ld, int rows, int cols) {
    constexpr int kLdTile = operand_ld<float>(Cols);
    for (int e = threadIdx.x * Vec; e < kTile * Cols; e += Threads * Vec) {
        const int r = e / Cols, c = e % Cols;
        if (r < rows && c < cols) tile_vec_to_global<Vec>(tile + r * kLdTile + c, dst + r * ld + c);
    }
}
// A warp's 32 × 32 quarter (rows m0, columns n0) of such a tile (kTile, kLd) to global rows ld
// elements apart, fp32 or rounded to bf16 (vec4_aligned for Vec 4), by that warp alone (after a
// __syncwarp that follows its store_quarter).
template <int Vec, typename Dst>
__device__ void quarter_to_global(const float* tile, Dst* dst, int64_t ld, int m0, int n0, int rows, int cols) {
    constexpr int kLanesPerRow = 32 / Vec, kRowsPerStep = 32 / kLanesPerRow;
    const int lane = threadIdx.x % 32, c = n0 + (lane % kLanesPerRow) * Vec;
    if (c >= cols) return;
    for (int r = m0 + lane / kLanesPerRow; r < min(m0 + 32, rows); r += kRowsPerStep)
        tile_vec_to_global<Vec>(tile + r * kLd + c, dst + r * ld + c);
}

// The accumulator layout of a 16 × 16 fp32 wmma fragment on sm_80 and later, which wmma calls
// opaque: two m16n8 tiles of mma.sync, element e of lane (g = lane / 4, t = lane % 4) at row
// g + 8·((e / 2) % 2), column 2t + e % 2 + 8·(e / 4). The bf16 chunk states' full-tile cases of
// test_chunk_states fail if it is not.
// A warp's 32 × 32 quarter of accumulators (rows m0, columns n0) straight to global bf16 rows ld
// elements apart (ld a multiple of 4, dst 8-byte aligned, the whole quarter inside): no trip
// through shared memory. Lanes t and t ^ 1 swap one pair of columns, so that each lane holds
// four adjacent columns and a warp's store fills whole 32-byte sectors.
template <typename Acc>
__device__ __forceinline__ void quarter_to_global_bf16(const Acc (&acc)[2][2], __nv_bfloat16* dst, int64_t ld,
                                                       int m0, int n0) {
    static_assert(Acc::num_elements == 8);
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const bool even = t % 2 == 0;
    const int col = even ? 2 * t : 2 * t + 6;  // even lanes: columns 2t … 2t+3; odd: 2t+6 … 2t+9
    const auto pack = [](float a, float b) {
        const __nv_bfloat162 p = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<const uint32_t*>(&p);
    };
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
#pragma unroll
            for (int half = 0; half < 2; ++half) {  // rows g, g + 8
                const uint32_t lo = pack(acc[a][b].x[2 * half], acc[a][b].x[2 * half + 1]);      // columns 2t, 2t+1
                const uint32_t hi = pack(acc[a][b].x[4 + 2 * half], acc[a][b].x[5 + 2 * half]);  // 2t+8, 2t+9
                const uint32_t swapped = __shfl_xor_sync(0xffffffffu, even ? hi : lo, 1);
                const uint2 four = even ? make_uint2(lo, swapped) : make_uint2(swapped, hi);
                *reinterpret_cast<uint2*>(dst + static_cast<int64_t>(m0 + 16 * a + g + 8 * half) * ld + n0 + 16 * b +
                                          col) = four;
            }
}

// acc's rows times row_scale (shared, by the tile's row) in the registers, on the sm_80+ accumulator
// layout above: for the pipelined pass, whose operand stages lie where a staging tile would.
template <typename Acc>
__device__ __forceinline__ void scale_quarter_rows_in_registers(Acc (&acc)[2][2], int m0, const float* row_scale) {
    static_assert(Acc::num_elements == 8);
    const int g = threadIdx.x % 32 / 4;
#pragma unroll
    for (int a = 0; a < 2; ++a)
#pragma unroll
        for (int b = 0; b < 2; ++b)
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[a][b].x[e] *= row_scale[m0 + 16 * a + g + 8 * (e / 2 % 2)];
}

// cp.async (sm_80+): 16 bytes from global to shared memory without passing through registers, so that
// several slabs can be in flight at once; a source size of 0 writes zeros.
__device__ __forceinline__ void copy16_async(void* dst_shared, const void* src, bool inside) {
    const auto dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_shared));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(inside ? 16 : 0));
}
__device__ __forceinline__ void commit_async_copies() { asm volatile("cp.async.commit_group;\n" ::); }
// until at most Pending of this thread's committed groups are still in flight
template <int Pending>
__device__ __forceinline__ void wait_async_copies() { asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending)); }

// Rows [row0, row0 + rows) and columns [col0, col0 + cols) of a row-major matrix (ld elements a row) into
// a shared tile of Rows × Cols elements (ld_shared a row) as they are stored, zero outside, by Threads
// threads in 16-byte pieces: src, ld, col0 and cols whole pieces (16-byte aligned), ld_shared too.
template <int Rows, int Cols, int Threads, typename E>
__device__ __forceinline__ void tile_to_shared_async(E* dst, int ld_shared, const E* src, int64_t row0, int rows,
                                                     int64_t ld, int col0, int cols) {
    constexpr int kPerPiece = 16 / static_cast<int>(sizeof(E)), kPiecesPerRow = Cols / kPerPiece;
    static_assert(Cols % kPerPiece == 0 && Rows * kPiecesPerRow % Threads == 0);
#pragma unroll
    for (int n = 0; n < Rows * kPiecesPerRow / Threads; ++n) {
        const int piece = static_cast<int>(threadIdx.x) + n * Threads;
        const int r = piece / kPiecesPerRow, c = piece % kPiecesPerRow * kPerPiece;
        const bool inside = r < rows && c < cols;
        copy16_async(dst + r * ld_shared + c, inside ? src + (row0 + r) * ld + col0 + c : src, inside);
    }
}

__device__ inline void tile_from_global(float* tile, const float* src, int64_t ld, int rows, int cols) {
    for (int e = threadIdx.x; e < kTile * kTile; e += kThreads) {
        const int r = e / kTile, c = e % kTile;
        tile[r * kLd + c] = r < rows && c < cols ? src[r * ld + c] : 0.0f;
    }
}

}  // namespace retnet::cuda::chunk_tiles
