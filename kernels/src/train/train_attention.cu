// SPDX-License-Identifier: GPL-3.0-or-later
// The twin's causal attention for training (train_attention.h): a forward with an online softmax
// over key tiles, and a backward of three kernels: D = rowsum(dO ⊙ O), dq per query tile and
// dk, dv per key tile, each recomputing P = exp(S − lse) for its tiles.
//
// Every tile kernel runs 256 threads as a 16×16 grid over a kTile×kTile score tile: thread
// (ty, tx) holds rows ty·kM … ty·kM+kM−1 and columns tx·kM … of it (kM = kTile/16), and of a
// product with a (kTile, kD) tile its rows times the columns g·64 + tx·4 + e (g < kD/64, e < 4).
// A score tile is Σ_c At[c][·]·Bt[c][·] over tiles kept transposed in shared memory (D, kLd),
// read as float4 (float2) rows; a product with a (kTile, kD) tile reads its left factor
// transposed the same way ((kTile, kLd): row j holds column j of the factor) and the tile row-major.
// Rows and keys past T are loaded as zeros and masked, so padding is never read.
// kD, the head-dim bucket (64, 128 or 256), sizes the register tiles; the dims themselves are
// runtime values ≤ kD, and columns past them are zeros in shared memory and never written out.
#include <algorithm>
#include <cmath>
#include <string>

#include "../common.cuh"
#include "../cuda_check.h"
#include "retnet/error.h"
#include "train_attention.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;

template <int kD>
struct Tiles {
    // 64-row tiles up to kD 128; 32 rows at 256 so the backward's tiles fit in shared memory.
    static constexpr int kTile = kD <= 128 ? 64 : 32;
    static constexpr int kM = kTile / 16;      // score rows (and columns) per thread
    static constexpr int kCols = kD / 16;      // output columns per thread
    static constexpr int kGroups = kD / 64;    // … in groups of 4 contiguous columns
    static constexpr int kLd = kTile + 4;      // transposed tiles' row stride: keeps float4 alignment
};

template <int kM>
__device__ __forceinline__ void load_vec(const float* p, float (&out)[kM]) {
    static_assert(kM == 2 || kM == 4);
    if constexpr (kM == 4) {
        const float4 x = *reinterpret_cast<const float4*>(p);
        out[0] = x.x, out[1] = x.y, out[2] = x.z, out[3] = x.w;
    } else {
        const float2 x = *reinterpret_cast<const float2*>(p);
        out[0] = x.x, out[1] = x.y;
    }
}

template <int kM>
__device__ __forceinline__ void store_vec(float* p, const float (&in)[kM]) {
    if constexpr (kM == 4)
        *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
    else
        *reinterpret_cast<float2*>(p) = make_float2(in[0], in[1]);
}

// Max and sum over the 16 threads of one tile row (the 16-lane halves of a warp, tx = lane % 16).
__device__ __forceinline__ float row_max(float v) {
    for (int offset = 8; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
__device__ __forceinline__ float row_sum(float v) {
    for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// The (b, h) matrix of a tensor: row t at result + t·layout.row.
__device__ __forceinline__ int64_t head_offset(const HeadsLayout& l, int b, int h) {
    return static_cast<int64_t>(b) * l.seq + static_cast<int64_t>(h) * l.head;
}

// dst[c·kLd + r] = src row (row0 + r), column c, for r < kTile, c < D (zero past T).
template <int kD>
__device__ void load_transposed(float* dst, const float* src, int64_t row_stride, int row0, int T, int D) {
    using C = Tiles<kD>;
    for (int e = threadIdx.x; e < C::kTile * D; e += kThreads) {
        const int r = e / D, c = e - r * D, t = row0 + r;
        dst[c * C::kLd + r] = t < T ? src[static_cast<int64_t>(t) * row_stride + c] : 0.0f;
    }
}

// dst[r·kD + c] = src row (row0 + r), column c, for r < kTile, c < kD (zero past T or D).
template <int kD>
__device__ void load_rows(float* dst, const float* src, int64_t row_stride, int row0, int T, int D) {
    using C = Tiles<kD>;
    for (int e = threadIdx.x; e < C::kTile * kD; e += kThreads) {
        const int r = e / kD, c = e % kD, t = row0 + r;
        dst[e] = t < T && c < D ? src[static_cast<int64_t>(t) * row_stride + c] : 0.0f;
    }
}

// acc[i][j] += Σ_{c<D} At[c][ty·kM + i] · Bt[c][tx·kM + j]   (At, Bt (D, kLd))
template <int kD>
__device__ __forceinline__ void score_tile(float (&acc)[Tiles<kD>::kM][Tiles<kD>::kM], const float* At,
                                           const float* Bt, int D, int ty, int tx) {
    using C = Tiles<kD>;
#pragma unroll 4
    for (int c = 0; c < D; ++c) {
        float a[C::kM], b[C::kM];
        load_vec<C::kM>(At + c * C::kLd + ty * C::kM, a);
        load_vec<C::kM>(Bt + c * C::kLd + tx * C::kM, b);
#pragma unroll
        for (int i = 0; i < C::kM; ++i)
#pragma unroll
            for (int j = 0; j < C::kM; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// acc[i][g·4 + e] += Σ_{j<kTile} Pt[j][ty·kM + i] · X[j][g·64 + tx·4 + e]   (Pt (kTile, kLd), X (kTile, kD))
template <int kD>
__device__ __forceinline__ void rows_product(float (&acc)[Tiles<kD>::kM][Tiles<kD>::kCols], const float* Pt,
                                             const float* X, int ty, int tx) {
    using C = Tiles<kD>;
#pragma unroll 2
    for (int j = 0; j < C::kTile; ++j) {
        float p[C::kM];
        load_vec<C::kM>(Pt + j * C::kLd + ty * C::kM, p);
#pragma unroll
        for (int g = 0; g < C::kGroups; ++g) {
            const float4 x = *reinterpret_cast<const float4*>(X + j * kD + g * 64 + tx * 4);
#pragma unroll
            for (int i = 0; i < C::kM; ++i) {
                acc[i][g * 4 + 0] = fmaf(p[i], x.x, acc[i][g * 4 + 0]);
                acc[i][g * 4 + 1] = fmaf(p[i], x.y, acc[i][g * 4 + 1]);
                acc[i][g * 4 + 2] = fmaf(p[i], x.z, acc[i][g * 4 + 2]);
                acc[i][g * 4 + 3] = fmaf(p[i], x.w, acc[i][g * 4 + 3]);
            }
        }
    }
}

// Pt[tx·kM + j][ty·kM + i] = s[i][j]: a thread's score tile, transposed for rows_product.
template <int kD>
__device__ __forceinline__ void store_transposed(float* Pt, const float (&s)[Tiles<kD>::kM][Tiles<kD>::kM], int ty,
                                                 int tx) {
    using C = Tiles<kD>;
#pragma unroll
    for (int j = 0; j < C::kM; ++j) {
        float column[C::kM];
#pragma unroll
        for (int i = 0; i < C::kM; ++i) column[i] = s[i][j];
        store_vec<C::kM>(Pt + (tx * C::kM + j) * C::kLd + ty * C::kM, column);
    }
}

// dst row (row0 + ty·kM + i), columns g·64 + tx·4 + e < D, = acc · scale[i], for rows < T.
template <int kD>
__device__ __forceinline__ void write_rows(float* dst, int64_t row_stride, int row0, int T, int D,
                                           const float (&acc)[Tiles<kD>::kM][Tiles<kD>::kCols],
                                           const float (&scale)[Tiles<kD>::kM], int ty, int tx) {
    using C = Tiles<kD>;
#pragma unroll
    for (int i = 0; i < C::kM; ++i) {
        const int t = row0 + ty * C::kM + i;
        if (t >= T) continue;
        float* out = dst + static_cast<int64_t>(t) * row_stride;
#pragma unroll
        for (int g = 0; g < C::kGroups; ++g)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = g * 64 + tx * 4 + e;
                if (c < D) out[c] = acc[i][g * 4 + e] * scale[i];
            }
    }
}

template <int kD>
size_t forward_smem(const AttentionShape& s) {
    using C = Tiles<kD>;
    // Qt, Kt (Dk, kLd); V (kTile, kD); Pt (kTile, kLd)
    return sizeof(float) * (2 * static_cast<size_t>(s.Dk) * C::kLd + C::kTile * kD + C::kTile * C::kLd);
}

// One block per (query tile, b·H + h); the grid's y walks the tiles longest-first.
template <int kD>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(AttentionShape s, AttentionLayouts l,
                                                                     const float* q, const float* k, const float* v,
                                                                     float* o, float* lse) {
    using C = Tiles<kD>;
    extern __shared__ float4 smem4[];
    float* Qt = reinterpret_cast<float*>(smem4);  // (Dk, kLd)
    float* Kt = Qt + s.Dk * C::kLd;               // (Dk, kLd)
    float* V = Kt + s.Dk * C::kLd;                // (kTile, kD)
    float* Pt = V + C::kTile * kD;                // (kTile, kLd)
    const int b = static_cast<int>(blockIdx.x) / s.H, h = static_cast<int>(blockIdx.x) % s.H;
    const int qt = static_cast<int>(gridDim.y - 1 - blockIdx.y), r0 = qt * C::kTile;
    const int ty = static_cast<int>(threadIdx.x) / 16, tx = static_cast<int>(threadIdx.x) % 16;
    const float* kh = k + head_offset(l.qk, b, h);
    const float* vh = v + head_offset(l.v, b, h);
    load_transposed<kD>(Qt, q + head_offset(l.qk, b, h), l.qk.row, r0, s.T, s.Dk);

    // Per row: the running max m, the sum of exp(s − m) and the Σ exp(s − m)·v.
    float m[C::kM], sum[C::kM], acc[C::kM][C::kCols] = {};
#pragma unroll
    for (int i = 0; i < C::kM; ++i) m[i] = -INFINITY, sum[i] = 0.0f;
    for (int kt = 0; kt <= qt; ++kt) {
        const int k0 = kt * C::kTile;
        __syncthreads();  // the previous tile's K, V and P are consumed (and Q is in place)
        load_transposed<kD>(Kt, kh, l.qk.row, k0, s.T, s.Dk);
        load_rows<kD>(V, vh, l.v.row, k0, s.T, s.Dv);
        __syncthreads();
        float sc[C::kM][C::kM] = {};
        score_tile<kD>(sc, Qt, Kt, s.Dk, ty, tx);
#pragma unroll
        for (int i = 0; i < C::kM; ++i) {
            const int row = r0 + ty * C::kM + i;
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < C::kM; ++j) {
                if (k0 + tx * C::kM + j > row) sc[i][j] = -INFINITY;
                mx = fmaxf(mx, sc[i][j]);
            }
            // Finite: key k0 ≤ row is in every tile the row sees (key 0 in the first).
            const float m_new = fmaxf(m[i], row_max(mx));
            const float alpha = expf(m[i] - m_new);  // 0 on the first tile (m = −∞)
            float part = 0.0f;
#pragma unroll
            for (int j = 0; j < C::kM; ++j) {
                sc[i][j] = expf(sc[i][j] - m_new);
                part += sc[i][j];
            }
            sum[i] = sum[i] * alpha + row_sum(part);
#pragma unroll
            for (int c = 0; c < C::kCols; ++c) acc[i][c] *= alpha;
            m[i] = m_new;
        }
        store_transposed<kD>(Pt, sc, ty, tx);
        __syncthreads();
        rows_product<kD>(acc, Pt, V, ty, tx);
    }
    float inv[C::kM];
#pragma unroll
    for (int i = 0; i < C::kM; ++i) inv[i] = 1.0f / sum[i];
    write_rows<kD>(o + head_offset(l.o, b, h), l.o.row, r0, s.T, s.Dv, acc, inv, ty, tx);
    if (tx != 0) return;
#pragma unroll
    for (int i = 0; i < C::kM; ++i) {
        const int t = r0 + ty * C::kM + i;
        if (t < s.T) lse[(static_cast<int64_t>(b) * s.T + t) * s.H + h] = m[i] + logf(sum[i]);
    }
}

// delta[(b·H + h)·T + t] = Σ_c d_o·o of that row; one warp per row.
__global__ void attention_delta_kernel(AttentionShape s, HeadsLayout lo, const float* o, const float* d_o,
                                       float* delta) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
    if (row >= static_cast<int64_t>(s.B) * s.H * s.T) return;
    const int t = static_cast<int>(row % s.T), bh = static_cast<int>(row / s.T);
    const int64_t off = head_offset(lo, bh / s.H, bh % s.H) + static_cast<int64_t>(t) * lo.row;
    float acc = 0.0f;
    for (int c = static_cast<int>(threadIdx.x % 32); c < s.Dv; c += 32) acc = fmaf(d_o[off + c], o[off + c], acc);
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) delta[row] = acc;
}

// The per-thread rows' lse and D (0 past T, where P is masked anyway).
template <int kM>
__device__ __forceinline__ void load_row_stats(const AttentionShape& s, const float* lse, const float* delta, int b,
                                               int h, int first_row, float (&lse_r)[kM], float (&delta_r)[kM]) {
#pragma unroll
    for (int i = 0; i < kM; ++i) {
        const int t = first_row + i;
        const bool in = t < s.T;
        lse_r[i] = in ? lse[(static_cast<int64_t>(b) * s.T + t) * s.H + h] : 0.0f;
        delta_r[i] = in ? delta[(static_cast<int64_t>(b) * s.H + h) * s.T + t] : 0.0f;
    }
}

template <int kD>
size_t dq_smem(const AttentionShape& s) {
    using C = Tiles<kD>;
    // Qt, Kt (Dk, kLd); dOt, Vt (Dv, kLd); K (kTile, kD); dSt (kTile, kLd)
    return sizeof(float) * (2 * static_cast<size_t>(s.Dk + s.Dv) * C::kLd + C::kTile * kD + C::kTile * C::kLd);
}

// dq = dS·K per query tile, dS = P ⊙ (dO·Vᵀ − D); one block per (query tile, b·H + h).
template <int kD>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(AttentionShape s, AttentionLayouts l,
                                                                const float* q, const float* k, const float* v,
                                                                const float* lse, const float* delta,
                                                                const float* d_o, float* dq) {
    using C = Tiles<kD>;
    extern __shared__ float4 smem4[];
    float* Qt = reinterpret_cast<float*>(smem4);  // (Dk, kLd)
    float* Kt = Qt + s.Dk * C::kLd;               // (Dk, kLd)
    float* dOt = Kt + s.Dk * C::kLd;              // (Dv, kLd)
    float* Vt = dOt + s.Dv * C::kLd;              // (Dv, kLd)
    float* K = Vt + s.Dv * C::kLd;                // (kTile, kD)
    float* dSt = K + C::kTile * kD;               // (kTile, kLd)
    const int b = static_cast<int>(blockIdx.x) / s.H, h = static_cast<int>(blockIdx.x) % s.H;
    const int qt = static_cast<int>(gridDim.y - 1 - blockIdx.y), r0 = qt * C::kTile;
    const int ty = static_cast<int>(threadIdx.x) / 16, tx = static_cast<int>(threadIdx.x) % 16;
    const float* kh = k + head_offset(l.qk, b, h);
    const float* vh = v + head_offset(l.v, b, h);
    load_transposed<kD>(Qt, q + head_offset(l.qk, b, h), l.qk.row, r0, s.T, s.Dk);
    load_transposed<kD>(dOt, d_o + head_offset(l.o, b, h), l.o.row, r0, s.T, s.Dv);
    float lse_r[C::kM], delta_r[C::kM];
    load_row_stats<C::kM>(s, lse, delta, b, h, r0 + ty * C::kM, lse_r, delta_r);

    float acc[C::kM][C::kCols] = {};
    for (int kt = 0; kt <= qt; ++kt) {
        const int k0 = kt * C::kTile;
        __syncthreads();  // the previous tile's K and dS are consumed
        load_transposed<kD>(Kt, kh, l.qk.row, k0, s.T, s.Dk);
        load_transposed<kD>(Vt, vh, l.v.row, k0, s.T, s.Dv);
        load_rows<kD>(K, kh, l.qk.row, k0, s.T, s.Dk);
        __syncthreads();
        float sc[C::kM][C::kM] = {}, dp[C::kM][C::kM] = {};
        score_tile<kD>(sc, Qt, Kt, s.Dk, ty, tx);
        score_tile<kD>(dp, dOt, Vt, s.Dv, ty, tx);
#pragma unroll
        for (int i = 0; i < C::kM; ++i) {
            const int row = r0 + ty * C::kM + i;
#pragma unroll
            for (int j = 0; j < C::kM; ++j) {
                const bool seen = k0 + tx * C::kM + j <= row && row < s.T;
                const float p = seen ? expf(sc[i][j] - lse_r[i]) : 0.0f;
                sc[i][j] = p * (dp[i][j] - delta_r[i]);
            }
        }
        store_transposed<kD>(dSt, sc, ty, tx);
        __syncthreads();
        rows_product<kD>(acc, dSt, K, ty, tx);
    }
    float one[C::kM];
#pragma unroll
    for (int i = 0; i < C::kM; ++i) one[i] = 1.0f;
    write_rows<kD>(dq + head_offset(l.qk, b, h), l.qk.row, r0, s.T, s.Dk, acc, one, ty, tx);
}

template <int kD>
size_t dkdv_smem(const AttentionShape& s) {
    using C = Tiles<kD>;
    // Kt (Dk, kLd), Vt (Dv, kLd); X: Qt (Dk, kLd) then Q (kTile, kD); Y: dOt (Dv, kLd) then dO
    // (kTile, kD); Pt, dSt (kTile, kLd); lse and D of the query tile (kTile each)
    const size_t x = std::max<size_t>(static_cast<size_t>(s.Dk) * C::kLd, C::kTile * kD);
    const size_t y = std::max<size_t>(static_cast<size_t>(s.Dv) * C::kLd, C::kTile * kD);
    return sizeof(float) * (static_cast<size_t>(s.Dk + s.Dv) * C::kLd + x + y + 2 * C::kTile * C::kLd + 2 * C::kTile);
}

// dv = Pᵀ·dO and dk = dSᵀ·Q per key tile; one block per (key tile, b·H + h). The thread tiles
// are transposed: a thread's rows are keys, its columns queries.
template <int kD>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(AttentionShape s, AttentionLayouts l,
                                                                  const float* q, const float* k, const float* v,
                                                                  const float* lse, const float* delta,
                                                                  const float* d_o, float* dk, float* dv) {
    using C = Tiles<kD>;
    extern __shared__ float4 smem4[];
    const size_t x_size = max(s.Dk * C::kLd, C::kTile * kD), y_size = max(s.Dv * C::kLd, C::kTile * kD);
    float* Kt = reinterpret_cast<float*>(smem4);  // (Dk, kLd)
    float* Vt = Kt + s.Dk * C::kLd;               // (Dv, kLd)
    float* X = Vt + s.Dv * C::kLd;                // Qt (Dk, kLd), then Q (kTile, kD)
    float* Y = X + x_size;                        // dOt (Dv, kLd), then dO (kTile, kD)
    float* Pt = Y + y_size;                       // (kTile, kLd): Pt[query][key]
    float* dSt = Pt + C::kTile * C::kLd;          // (kTile, kLd)
    float* lse_s = dSt + C::kTile * C::kLd;       // (kTile)
    float* delta_s = lse_s + C::kTile;            // (kTile)
    const int b = static_cast<int>(blockIdx.x) / s.H, h = static_cast<int>(blockIdx.x) % s.H;
    const int kt = static_cast<int>(blockIdx.y), k0 = kt * C::kTile;  // the lowest keys see the most queries: first
    const int ty = static_cast<int>(threadIdx.x) / 16, tx = static_cast<int>(threadIdx.x) % 16;
    const float* qh = q + head_offset(l.qk, b, h);
    const float* doh = d_o + head_offset(l.o, b, h);
    load_transposed<kD>(Kt, k + head_offset(l.qk, b, h), l.qk.row, k0, s.T, s.Dk);
    load_transposed<kD>(Vt, v + head_offset(l.v, b, h), l.v.row, k0, s.T, s.Dv);

    float dk_acc[C::kM][C::kCols] = {}, dv_acc[C::kM][C::kCols] = {};
    for (int qt = kt; qt < static_cast<int>(gridDim.y); ++qt) {
        const int r0 = qt * C::kTile;
        __syncthreads();  // the previous query tile's Q, dO, P and dS are consumed
        load_transposed<kD>(X, qh, l.qk.row, r0, s.T, s.Dk);
        load_transposed<kD>(Y, doh, l.o.row, r0, s.T, s.Dv);
        for (int r = static_cast<int>(threadIdx.x); r < C::kTile; r += kThreads) {
            const int t = r0 + r;
            const bool in = t < s.T;
            lse_s[r] = in ? lse[(static_cast<int64_t>(b) * s.T + t) * s.H + h] : 0.0f;
            delta_s[r] = in ? delta[(static_cast<int64_t>(b) * s.H + h) * s.T + t] : 0.0f;
        }
        __syncthreads();
        float sc[C::kM][C::kM] = {}, dp[C::kM][C::kM] = {};  // [key][query]
        score_tile<kD>(sc, Kt, X, s.Dk, ty, tx);
        score_tile<kD>(dp, Vt, Y, s.Dv, ty, tx);
#pragma unroll
        for (int j = 0; j < C::kM; ++j) {
            const int qi = tx * C::kM + j, row = r0 + qi;
#pragma unroll
            for (int i = 0; i < C::kM; ++i) {
                const bool seen = k0 + ty * C::kM + i <= row && row < s.T;
                sc[i][j] = seen ? expf(sc[i][j] - lse_s[qi]) : 0.0f;
                dp[i][j] = sc[i][j] * (dp[i][j] - delta_s[qi]);
            }
        }
        store_transposed<kD>(Pt, sc, ty, tx);
        store_transposed<kD>(dSt, dp, ty, tx);
        __syncthreads();  // Qt and dOt are consumed: the row-major tiles take their place
        load_rows<kD>(X, qh, l.qk.row, r0, s.T, s.Dk);
        load_rows<kD>(Y, doh, l.o.row, r0, s.T, s.Dv);
        __syncthreads();
        rows_product<kD>(dv_acc, Pt, Y, ty, tx);
        rows_product<kD>(dk_acc, dSt, X, ty, tx);
    }
    float one[C::kM];
#pragma unroll
    for (int i = 0; i < C::kM; ++i) one[i] = 1.0f;
    write_rows<kD>(dk + head_offset(l.qk, b, h), l.qk.row, k0, s.T, s.Dk, dk_acc, one, ty, tx);
    write_rows<kD>(dv + head_offset(l.v, b, h), l.v.row, k0, s.T, s.Dv, dv_acc, one, ty, tx);
}

// The head-dim bucket of a shape; throws for one the kernels do not take.
int bucket_of(const AttentionShape& s) {
    if (s.B < 0 || s.H < 1 || s.T < 0 || s.Dk < 1 || s.Dv < 1)
        throw Error("training attention: bad shape (B " + std::to_string(s.B) + ", H " + std::to_string(s.H) +
                    ", T " + std::to_string(s.T) + ", Dk " + std::to_string(s.Dk) + ", Dv " + std::to_string(s.Dv) +
                    ")");
    const int d = std::max(s.Dk, s.Dv);
    if (d > kAttentionMaxHeadDim)
        throw Error("training attention: head dim " + std::to_string(d) + " is above the supported " +
                    std::to_string(kAttentionMaxHeadDim));
    return d <= 64 ? 64 : d <= 128 ? 128 : 256;
}

// Grid (B·H, tiles) for T rows in tiles of kTile; throws when the tile count exceeds the grid's y.
dim3 tile_grid(const AttentionShape& s, int tile) {
    const int64_t tiles = (static_cast<int64_t>(s.T) + tile - 1) / tile;
    if (tiles > 65535) throw Error("training attention: sequence length " + std::to_string(s.T) + " is too long");
    return dim3(static_cast<unsigned>(s.B * s.H), static_cast<unsigned>(tiles));
}

// Opts `kernel` in to `bytes` of dynamic shared memory; throws when the device has less per block.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
    int device = 0, limit = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (bytes > static_cast<size_t>(limit))
        throw Error("training attention: these head dims need " + std::to_string(bytes) +
                    " bytes of shared memory per block, the device has " + std::to_string(limit));
    RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int kD>
void forward_for(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k, const float* v,
                 float* o, float* lse, cudaStream_t stream) {
    const size_t smem = forward_smem<kD>(s);
    allow_smem(attention_forward_kernel<kD>, smem);
    attention_forward_kernel<kD><<<tile_grid(s, Tiles<kD>::kTile), kThreads, smem, stream>>>(s, l, q, k, v, o, lse);
    RETNET_CUDA_CHECK_LAUNCH();
}

template <int kD>
void backward_for(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k, const float* v,
                  const float* lse, const float* delta, const float* d_o, float* dq, float* dk, float* dv,
                  cudaStream_t stream) {
    const dim3 grid = tile_grid(s, Tiles<kD>::kTile);
    const size_t dq_bytes = dq_smem<kD>(s), dkdv_bytes = dkdv_smem<kD>(s);
    allow_smem(attention_dq_kernel<kD>, dq_bytes);
    allow_smem(attention_dkdv_kernel<kD>, dkdv_bytes);
    attention_dq_kernel<kD><<<grid, kThreads, dq_bytes, stream>>>(s, l, q, k, v, lse, delta, d_o, dq);
    RETNET_CUDA_CHECK_LAUNCH();
    attention_dkdv_kernel<kD><<<grid, kThreads, dkdv_bytes, stream>>>(s, l, q, k, v, lse, delta, d_o, dk, dv);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k,
                       const float* v, float* o, float* lse, cudaStream_t stream) {
    const int bucket = bucket_of(s);
    if (s.B == 0 || s.T == 0) return;
    if (bucket == 64) forward_for<64>(s, l, q, k, v, o, lse, stream);
    else if (bucket == 128) forward_for<128>(s, l, q, k, v, o, lse, stream);
    else forward_for<256>(s, l, q, k, v, o, lse, stream);
}

int64_t attention_backward_scratch_floats(const AttentionShape& s) {
    return static_cast<int64_t>(s.B) * s.H * s.T;
}

void attention_backward(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k,
                        const float* v, const float* o, const float* lse, const float* d_o, float* dq, float* dk,
                        float* dv, float* scratch, cudaStream_t stream) {
    const int bucket = bucket_of(s);
    if (s.B == 0 || s.T == 0) return;
    const int64_t rows = attention_backward_scratch_floats(s);
    attention_delta_kernel<<<ceil_div(rows, kThreads / 32), kThreads, 0, stream>>>(s, l.o, o, d_o, scratch);
    RETNET_CUDA_CHECK_LAUNCH();
    if (bucket == 64) backward_for<64>(s, l, q, k, v, lse, scratch, d_o, dq, dk, dv, stream);
    else if (bucket == 128) backward_for<128>(s, l, q, k, v, lse, scratch, d_o, dq, dk, dv, stream);
    else backward_for<256>(s, l, q, k, v, lse, scratch, d_o, dq, dk, dv, stream);
}

}  // namespace retnet::cuda::train_kernels
