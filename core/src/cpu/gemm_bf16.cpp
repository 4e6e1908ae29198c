// SPDX-License-Identifier: GPL-3.0-or-later
// Matrix products with bfloat16 weights and float32 sums (retnet/cpu_ops.h gemm_bf16).
// Decode multiplies one row by every weight row: memory-bound, so the weights are streamed as
// bf16 (half the bytes of float32) and widened in registers, a 16-bit shift. Prefill has enough
// rows to be compute-bound: a tile of weight rows is widened once and handed to sgemm.
#include <algorithm>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

namespace retnet::cpu {
namespace {

// Up to this many rows the dot kernel reads each weight row once for all of them; above, the
// tiled sgemm path is faster (measured on the 1.3B shape, docs/benchmarks.md).
constexpr int64_t kDotMaxRows = 8;
// Rows of B widened per sgemm call: 256 rows of K = 2048 are 2 MiB of float32 per thread; fewer
// calls mean fewer repackings of A inside sgemm.
constexpr int64_t kTileRows = 256;

inline float widen(uint16_t bits) { return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16); }

// out[m] = A row m · b for m < rows, the portable version (8 partial sums per row).
void dot_rows_portable(const float* A, int64_t lda, int64_t rows, const uint16_t* b, int64_t K, float* out) {
    for (int64_t m = 0; m < rows; ++m) {
        const float* a = A + m * lda;
        float part[8] = {};
        int64_t k = 0;
        for (; k + 8 <= K; k += 8)
            for (int j = 0; j < 8; ++j) part[j] += a[k + j] * widen(b[k + j]);
        float sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        for (; k < K; ++k) sum += a[k] * widen(b[k]);
        out[m] = sum;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline __m256 load_bf16x8(const uint16_t* p) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// A dot product's end, the same in every kernel (so that their sums agree bit for bit): the two
// accumulators' lanes summed, then the terms k0..K−1 the 16-wide loop left.
__attribute__((target("avx2,fma"))) inline float finish_dot(__m256 acc0, __m256 acc1, const float* a,
                                                             const uint16_t* b, int64_t k0, int64_t K) {
    float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
    for (int64_t k = k0; k < K; ++k) sum += a[k] * widen(b[k]);
    return sum;
}

// R rows (1 to 4) with AVX2 + FMA: each 16 widened weights feed every row; two accumulators per
// row hide the FMA latency. R is a template argument so that the accumulators stay in registers.
template <int R>
__attribute__((target("avx2,fma"))) void dot_rows_avx2_fixed(const float* A, int64_t lda, const uint16_t* b,
                                                              int64_t K, float* out) {
    __m256 acc0[R], acc1[R];
    for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256 w0 = load_bf16x8(b + k), w1 = load_bf16x8(b + k + 8);
        for (int i = 0; i < R; ++i) {
            const float* a = A + i * lda + k;
            acc0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a), w0, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), w1, acc1[i]);
        }
    }
    for (int i = 0; i < R; ++i) out[i] = finish_dot(acc0[i], acc1[i], A + i * lda, b, k, K);
}

__attribute__((target("avx2,fma"))) void dot_rows_avx2(const float* A, int64_t lda, int64_t rows, const uint16_t* b,
                                                        int64_t K, float* out) {
    for (int64_t m = 0; m < rows; m += 4) {
        const float* a = A + m * lda;
        switch (std::min<int64_t>(4, rows - m)) {
            case 1: dot_rows_avx2_fixed<1>(a, lda, b, K, out + m); break;
            case 2: dot_rows_avx2_fixed<2>(a, lda, b, K, out + m); break;
            case 3: dot_rows_avx2_fixed<3>(a, lda, b, K, out + m); break;
            default: dot_rows_avx2_fixed<4>(a, lda, b, K, out + m); break;
        }
    }
}

// One row of A against kWeightRows weight rows (B, row-major with K columns) at once: a single row
// leaves each dot product a chain of dependent FMAs, so four rows run side by side, sharing the
// loads of A. Each row's sums are formed exactly as dot_rows_avx2_fixed<1> forms them (the same
// two accumulators, then finish_dot), so the result is bit for bit the same.
constexpr int64_t kWeightRows = 4;

__attribute__((target("avx2,fma"))) void dot_weight_rows_avx2(const float* a, const uint16_t* B, int64_t K,
                                                               float* out) {
    __m256 acc0[kWeightRows], acc1[kWeightRows];
    for (int i = 0; i < kWeightRows; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256 a0 = _mm256_loadu_ps(a + k), a1 = _mm256_loadu_ps(a + k + 8);
        for (int i = 0; i < kWeightRows; ++i) {
            const uint16_t* b = B + i * K + k;
            acc0[i] = _mm256_fmadd_ps(a0, load_bf16x8(b), acc0[i]);
            acc1[i] = _mm256_fmadd_ps(a1, load_bf16x8(b + 8), acc1[i]);
        }
    }
    for (int i = 0; i < kWeightRows; ++i) out[i] = finish_dot(acc0[i], acc1[i], a, B + i * K, k, K);
}

bool has_avx2_fma() {
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return yes;
}
#endif

void dot_rows(const float* A, int64_t lda, int64_t rows, const uint16_t* b, int64_t K, float* out) {
#if defined(__x86_64__)
    if (has_avx2_fma()) return dot_rows_avx2(A, lda, rows, b, K, out);
#endif
    dot_rows_portable(A, lda, rows, b, K, out);
}

// Few rows: weight rows split over the threads, each read once.
void gemm_bf16_dot(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, float* C,
                   int64_t ldc, bool accumulate) {
    // At least 512 KiB of weights per thread: below, waking a second thread costs more than the
    // half of the product it takes (the bundled model decodes fastest on one, docs/benchmarks.md).
    const int64_t min_rows = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, K));
    parallel_blocks(N, min_rows, [&](int64_t n0, int64_t n1, int) {
        float sums[kDotMaxRows];  // (M)
        int64_t n = n0;
#if defined(__x86_64__)
        if (M == 1 && has_avx2_fma()) {  // decoding one sequence
            for (; n + kWeightRows <= n1; n += kWeightRows) {
                float row_sums[kWeightRows];
                dot_weight_rows_avx2(A, B + n * K, K, row_sums);
                for (int64_t i = 0; i < kWeightRows; ++i) C[n + i] = accumulate ? C[n + i] + row_sums[i] : row_sums[i];
            }
        }
#endif
        for (; n < n1; ++n) {
            dot_rows(A, lda, M, B + n * K, K, sums);
            for (int64_t m = 0; m < M; ++m) C[m * ldc + n] = accumulate ? C[m * ldc + n] + sums[m] : sums[m];
        }
    });
}

// Many rows: each thread widens kTileRows rows of B at a time (its share of N) and multiplies
// with single-threaded sgemm, so the widening runs on every core too.
void gemm_bf16_tiled(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, float* C,
                     int64_t ldc, bool accumulate) {
    const int64_t tiles = (N + kTileRows - 1) / kTileRows;
    parallel_blas_blocks(tiles, [&](int64_t t0, int64_t t1, int) {
        std::vector<float> tile(static_cast<size_t>(std::min(kTileRows, N) * K));  // (kTileRows, K)
        for (int64_t n0 = t0 * kTileRows; n0 < std::min(N, t1 * kTileRows); n0 += kTileRows) {
            const int64_t rows = std::min(kTileRows, N - n0);
            const uint16_t* src = B + n0 * K;
            for (int64_t i = 0; i < rows * K; ++i) tile[static_cast<size_t>(i)] = widen(src[i]);
            gemm<float>(false, true, M, rows, K, 1.0f, A, lda, tile.data(), K, accumulate ? 1.0f : 0.0f,
                        C + n0, ldc);
        }
    });
}

}  // namespace

void gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, float* C,
               int64_t ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (M <= kDotMaxRows)
        gemm_bf16_dot(M, N, K, A, lda, B, C, ldc, accumulate);
    else
        gemm_bf16_tiled(M, N, K, A, lda, B, C, ldc, accumulate);
}

}  // namespace retnet::cpu
