// SPDX-License-Identifier: GPL-3.0-or-later
// Few-row bf16 projections on the tensor cores (see skinny_gemm.h). A warp owns a tile of weight
// rows and one part of K, and computes all M ≤ 16 rows of X for it with mma m16n8k16, in one of two
// shapes:
//   8 weight rows   X is the A operand (16 rows), the weights the B operand (8 rows);
//   16 weight rows  the weights are A, X is B in two n-tiles of 8 rows: each X load serves 16
//                   weight rows instead of 8, so X is read from L2 half as often per weight byte.
// On the H200 (16 rows of X, ops table) 16-row tiles took q, k, v, g from 23.9 to 19.0 µs and the
// vocabulary from 48.8 to 40.4, but the output and down projections (128 tiles of 16) and the
// FFN's GLU (176) from 11.1 / 10.6 / 12.7 to 12.7 / 11.1 / 14.0: half the tiles leave fewer
// warps streaming. So a launch takes 16-row tiles where they alone give every resident block one.
//
// With the norm fused (launch_skinny_gemm_normed) each block forms the RMSNorm of X's fp32 rows itself, as
// launch_rmsnorm_bf16's kernel forms it, into shared memory, and the warps read X there: one launch
// (and one grid's drain and the next one's wait) fewer per norm, for a read of all of X by every block.
//
// The K permutation: in 32 columns k0 … k0+31, lane (g, t) (g = lane / 4, t = lane % 4) loads the
// 16 bytes at k0 + 8t of its weight rows (g; or g and g + 8) and of X rows g and g + 8. The first
// product of the pair uses columns 8t … 8t+3 as its logical columns {2t, 2t+1, 2t+8, 2t+9}, the
// second 8t+4 … 8t+7; both operands follow the same map, so each product still sums x[k]·w[k]
// over the same 32 k.
#include <algorithm>
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "device_limits.h"
#include "retnet/error.h"
#include "skinny_gemm.h"

namespace retnet::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kLoadsInFlight = 8;  // 16-byte weight loads per lane and round, as in the GEMV
constexpr int kMaxSplit = kWarps;

struct SkinnyParams {
    GemvJob jobs[kGemvMaxJobs];
    int tile_start[kGemvMaxJobs + 1];  // job j owns tiles [tile_start[j], tile_start[j + 1])
    int count = 0;                     // jobs whose tiles are enumerated (a GLU enumerates the act rows)
    int total_tiles = 0;
    int split = 1;   // warps (parts of K) per tile, a power of two ≤ kWarps
    int part_k = 0;  // columns per part, a multiple of 32
    bool gelu = false;
    __nv_bfloat16* glu_bf16 = nullptr;  // the GLU's (M, N) output in bf16 alone, or null: fp32 to jobs[0].y
    // The fused norm's input: X's fp32 rows (M, K), the norm's weight (K; null: ones) and ε; x̂ is
    // staged in shared memory with rows staged_ld elements apart.
    const float* norm_x = nullptr;
    const float* norm_weight = nullptr;
    float norm_eps = 0.0f;
    int staged_ld = 0;
};

// Shared x̂ rows: 16-byte aligned, and a multiple of 64 elements plus 8 apart, so that the 16-byte reads of
// rows g = 0 … 7 at the same columns start 16 bytes apart in the banks (no conflicts beyond a warp's four
// wavefronts).
int staged_ld(int K) { return static_cast<int>(ceil_div(K, 64)) * 64 + 8; }
size_t staged_bytes(int M, int K) { return static_cast<size_t>(M) * staged_ld(K) * sizeof(__nv_bfloat16); }
// The fused norm's rows: at most kNormMaxK values (a thread holds its columns of a few rows in registers),
// 16 rows of which (x̂, 64 KB) leave room for two blocks a multiprocessor (the kernels' 128 registers
// allow two) beside their static shared memory: the launch keeps the unfused kernel's one wave.
constexpr int kNormMaxK = 2048;

// Per warp: one tile of kRows weight rows (of each weight of a GLU) and all of X's 16 rows; U
// chunks of 32 columns per round keep kLoadsInFlight weight loads in flight per lane.
template <bool kGlu, int kRows>
struct TileShape {
    static constexpr int kStreams = kGlu ? 2 : 1;
    static constexpr int kRowsPerLane = kRows / 8;  // g, and g + 8 with 16-row tiles
    static constexpr int U = kLoadsInFlight / (kStreams * kRowsPerLane);
    static constexpr int kProducts = kRows == 16 ? 2 : 1;  // accumulator fragments per stream
    static constexpr int kAcc = kStreams * kProducts * 4;  // fp32 accumulators per lane
};

// Where a warp's tile is: its job (by constant indices, so that the parameters stay in the
// constant bank), first weight row and output.
struct TileRef {
    const __nv_bfloat16* w[2] = {nullptr, nullptr};  // act (or the only weight), lin
    float* y = nullptr;
    int n0 = 0, n = 0;
    bool accumulate = false;
};

template <bool kGlu, int kRows>
__device__ __forceinline__ TileRef locate_tile(const SkinnyParams& p, int tile) {
    TileRef ref;
    int first = 0;
    ref.w[0] = static_cast<const __nv_bfloat16*>(p.jobs[0].weight);
    ref.y = p.jobs[0].y, ref.n = p.jobs[0].n, ref.accumulate = p.jobs[0].accumulate;
    if (kGlu) {
        ref.w[1] = static_cast<const __nv_bfloat16*>(p.jobs[1].weight);
    } else {
#pragma unroll
        for (int j = 1; j < kGemvMaxJobs; ++j)
            if (j < p.count && tile >= p.tile_start[j]) {
                ref.w[0] = static_cast<const __nv_bfloat16*>(p.jobs[j].weight);
                ref.y = p.jobs[j].y, ref.n = p.jobs[j].n, ref.accumulate = p.jobs[j].accumulate;
                first = p.tile_start[j];
            }
    }
    ref.n0 = (tile - first) * kRows;
    return ref;
}

// x̂ (M, K) = bf16(x·s·w) into shared rows p.staged_ld apart, bit for bit what rmsnorm_forward_kernel
// (norms.cu, 256 threads a row) writes: thread i sums the squares of columns i, i + 256, … of a row in
// double in that order, the warps' sums meet as block_sum adds them, and s = 1/√(mean + ε) is rounded
// from double to float; then each x̂ value is the float x·s·w rounded to nearest even. A thread keeps
// its columns of kNormRowsAtOnce rows in registers from their load to their store (one read of x, their
// loads in flight together; a first version took a row at a time and read x again for x̂: at 4 rows the
// q, k, v, g launch 24.5 µs against 22.9 now). Every block reads all of X's rows, which is why the backend
// fuses the norm for few rows only (skinny_gemm.h).
constexpr int kNormThreads = kWarps * 32;  // the norm kernel's 256
constexpr int kNormColumns = kNormMaxK / kNormThreads;  // a thread's columns of a row: i, i + 256, …
constexpr int kNormRowsAtOnce = 4;
__device__ __forceinline__ void stage_normed_rows(const SkinnyParams& p, int M, int K, const float (&w)[kNormColumns],
                                                  __nv_bfloat16* staged) {
    static_assert(kNormThreads == 256, "the norm kernel's 256 threads");
    __shared__ double warp_sums[kSkinnyMaxRows][kWarps];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    using Rows = float[kNormRowsAtOnce][kNormColumns];
    const auto load = [&](Rows& v, int m0) {
#pragma unroll
        for (int r = 0; r < kNormRowsAtOnce; ++r)
#pragma unroll
            for (int j = 0; j < kNormColumns; ++j) {
                const int m = m0 + r, i = static_cast<int>(threadIdx.x) + kNormThreads * j;
                v[r][j] = m < M && i < K ? __ldg(p.norm_x + static_cast<int64_t>(m) * K + i) : 0.0f;
            }
    };
    Rows now;
#pragma unroll
    for (int m0 = 0; m0 < kSkinnyMaxRows; m0 += kNormRowsAtOnce) {
        if (m0 >= M) break;
        load(now, m0);
#pragma unroll
        for (int r = 0; r < kNormRowsAtOnce; ++r) {
            double ss = 0.0;
#pragma unroll
            for (int j = 0; j < kNormColumns; ++j)
                if (static_cast<int>(threadIdx.x) + kNormThreads * j < K) ss += static_cast<double>(now[r][j]) * now[r][j];
            ss = warp_sum(ss);
            if (lane == 0 && m0 + r < M) warp_sums[m0 + r][warp] = ss;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < kNormRowsAtOnce; ++r) {
            const int m = m0 + r;
            if (m >= M) break;
            const double total = warp_sum(lane < kWarps ? warp_sums[m][lane] : 0.0);
            const float s = static_cast<float>(1.0 / sqrt(total / K + static_cast<double>(p.norm_eps)));
#pragma unroll
            for (int j = 0; j < kNormColumns; ++j) {
                const int i = static_cast<int>(threadIdx.x) + kNormThreads * j;
                if (i < K) staged[m * p.staged_ld + i] = __float2bfloat16_rn(now[r][j] * s * w[j]);
            }
        }
    }
    __syncthreads();
}

// A round of U chunks of 32 columns from this lane's first column k0 (k0 + 32u for chunk u), each
// pointer then stepped to the next round. `full`: the round lies wholly inside the part (no column
// checks); otherwise (the part's last round) chunks at or past k_end read zeros.
template <int kStreams, int U, int R>
__device__ __forceinline__ void load_weight_round(uint4 (&w)[kStreams][U][R], const uint4* (&at)[kStreams][R], bool full,
                                                  int k0, int k_end) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const bool in_k = full || k0 + 32 * u < k_end;
#pragma unroll
        for (int s = 0; s < kStreams; ++s)
#pragma unroll
            for (int h = 0; h < R; ++h) w[s][u][h] = in_k ? __ldcs(at[s][h] + 4 * u) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int s = 0; s < kStreams; ++s)
#pragma unroll
        for (int h = 0; h < R; ++h) at[s][h] += 4 * U;
}

// The round's products: X's rows g and g + 8 (xa_at, xb_at: global rows or the block's staged x̂) times
// the round's weights, both read at the same columns; then X's pointers stepped like the weights'.
template <int kRows, bool kNormed, int kStreams, int P, int U, int R>
__device__ __forceinline__ void multiply_round_by(float (&acc)[kStreams][P][4], const uint4 (&w)[kStreams][U][R],
                                                  const uint4*& xa_at, const uint4*& xb_at, bool second_x_tile, bool full,
                                                  int k0, int k_end) {
    const auto x_load = [](const uint4* at) {
        if constexpr (kNormed) return *at;
        else return __ldg(at);
    };
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const bool in_k = full || k0 + 32 * u < k_end;
        const uint4 xa = in_k ? x_load(xa_at + 4 * u) : make_uint4(0, 0, 0, 0);
        const uint4 xb = in_k && second_x_tile ? x_load(xb_at + 4 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int s = 0; s < kStreams; ++s) {
            if constexpr (kRows == 8) {  // A: X rows g, g + 8; B: weight row g
                const uint4 wv = w[s][u][0];
                mma_bf16(acc[s][0], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
                mma_bf16(acc[s][0], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
            } else {  // A: weight rows g, g + 8; B: X row g of each n-tile
                const uint4 lo = w[s][u][0], hi = w[s][u][R - 1];
                mma_bf16(acc[s][0], lo.x, hi.x, lo.y, hi.y, xa.x, xa.y);
                mma_bf16(acc[s][0], lo.z, hi.z, lo.w, hi.w, xa.z, xa.w);
                if (second_x_tile) {
                    mma_bf16(acc[s][P - 1], lo.x, hi.x, lo.y, hi.y, xb.x, xb.y);
                    mma_bf16(acc[s][P - 1], lo.z, hi.z, lo.w, hi.w, xb.z, xb.w);
                }
            }
        }
    }
    xa_at += 4 * U, xb_at += 4 * U;
}

// Two blocks a multiprocessor, as the unfused kernels reach by themselves (128 registers): the fused
// norm's rows held in registers would otherwise take the compiler to ~170 and one block.
template <bool kGlu, int kRows, bool kNormed>
__global__ void __launch_bounds__(kWarps * 32, 2) skinny_gemm_kernel(const __nv_bfloat16* __restrict__ x, int M, int K,
                                                                  SkinnyParams p) {
    using S = TileShape<kGlu, kRows>;
    constexpr int U = S::U, kStreams = S::kStreams, R = S::kRowsPerLane, P = S::kProducts;
    __shared__ float partial[kWarps][S::kAcc][32];  // the parts' sums, lane-minor (no bank conflicts)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int part = warp % p.split;
    const int tile = static_cast<int>(blockIdx.x) * (kWarps / p.split) + warp / p.split;
    const bool active = tile < p.total_tiles;
    const int k_begin = part * p.part_k, k_end = min(K, k_begin + p.part_k), span = k_end - k_begin;
    constexpr int kRoundK = 32 * U;  // columns a round
    // Rounds wholly inside the part are read without per-column checks; only the last may be partial.
    const int rounds = active && span > 0 ? (span + kRoundK - 1) / kRoundK : 0;
    const int full_rounds = active && span > 0 ? span / kRoundK : 0;

    TileRef ref;
    if (active) ref = locate_tile<kGlu, kRows>(p, tile);
    // This lane's weight rows g (and g + 8) of each stream, from its first column k_begin + 8t, each
    // advanced by a constant step a round (the loads' offsets are immediates, not a row·K + k a load).
    // A row past the job's last reads the last instead: its sums land in outputs that are never stored.
    const uint4* w_at[kStreams][R];
#pragma unroll
    for (int s = 0; s < kStreams; ++s)
#pragma unroll
        for (int h = 0; h < R; ++h) {
            const int n = min(ref.n0 + g + 8 * h, ref.n - 1);
            w_at[s][h] = active ? reinterpret_cast<const uint4*>(ref.w[s] + static_cast<int64_t>(n) * K + k_begin + 8 * t)
                                : nullptr;
        }
    const auto round_k0 = [&](int round) { return k_begin + round * kRoundK + 8 * t; };  // this lane's first column
    const auto load_round = [&](uint4(&w)[kStreams][U][R], int round) {
        load_weight_round(w, w_at, round < full_rounds, round_k0(round), k_end);
    };

    // Two weight buffers trade roles each round (no copy of one into the other).
    uint4 w_even[kStreams][U][R], w_odd[kStreams][U][R];
    if (rounds > 0) load_round(w_even, 0);  // weights are never written: requested before the wait
    float norm_w[kNormed ? kNormColumns : 1];  // the norm's weights of this thread's columns, likewise
    if constexpr (kNormed)
#pragma unroll
        for (int j = 0; j < kNormColumns; ++j) {
            const int i = static_cast<int>(threadIdx.x) + kNormThreads * j;
            norm_w[j] = !p.norm_weight ? 1.0f : i < K ? __ldg(p.norm_weight + i) : 0.0f;
        }
    wait_for_previous_grid();
    allow_next_grid();
    extern __shared__ __align__(16) unsigned char staged_rows[];
    const auto* staged = reinterpret_cast<const __nv_bfloat16*>(staged_rows);  // x̂ (M, staged_ld) when kNormed
    if constexpr (kNormed) stage_normed_rows(p, M, K, norm_w, reinterpret_cast<__nv_bfloat16*>(staged_rows));

    // X's rows g and g + 8 (global bf16 rows, or the block's staged x̂) from column k_begin + 8t, stepped
    // like the weights; a row past M reads row M - 1, whose sums likewise are never stored.
    const bool second_x_tile = M > 8;  // the same for the whole warp
    const auto x_row = [&](int row) {
        row = min(row, M - 1);
        if constexpr (kNormed) return reinterpret_cast<const uint4*>(staged + row * p.staged_ld + k_begin + 8 * t);
        else return reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row) * K + k_begin + 8 * t);
    };
    const uint4* xa_at = x_row(g);
    const uint4* xb_at = x_row(g + 8);
    float acc[kStreams][P][4] = {};
    const auto multiply_round = [&](const uint4(&w)[kStreams][U][R], int round) {
        multiply_round_by<kRows, kNormed>(acc, w, xa_at, xb_at, second_x_tile, round < full_rounds, round_k0(round), k_end);
    };
    for (int round = 0; round < rounds; round += 2) {
        if (round + 1 < rounds) load_round(w_odd, round + 1);
        multiply_round(w_even, round);
        if (round + 1 == rounds) break;
        if (round + 2 < rounds) load_round(w_even, round + 2);
        multiply_round(w_odd, round + 1);
    }

    float* flat = &acc[0][0][0];
    if (p.split > 1) {
        if (part != 0)
#pragma unroll
            for (int i = 0; i < S::kAcc; ++i) partial[warp][i][lane] = flat[i];
        __syncthreads();
        if (part != 0) return;
        for (int q = 1; q < p.split; ++q)
#pragma unroll
            for (int i = 0; i < S::kAcc; ++i) flat[i] += partial[warp + q][i][lane];
    }
    if (!active) return;
    // The accumulator fragment: entries 0, 1 at row g, columns 2t, 2t + 1; entries 2, 3 at row
    // g + 8. Rows are X's and columns weight rows with 8-row tiles; with 16-row tiles rows are
    // weight rows and the columns X rows 8j + … of n-tile j.
#pragma unroll
    for (int j = 0; j < P; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int along_g = g + (e >= 2 ? 8 : 0), along_t = 2 * t + (e & 1);
            const int m = kRows == 8 ? along_g : 8 * j + along_t, col = ref.n0 + (kRows == 8 ? along_t : along_g);
            if (m >= M || col >= ref.n) continue;
            float v = acc[0][j][e];
            if constexpr (kGlu) {
                v = (p.gelu ? gelu(v) : silu(v)) * acc[kStreams - 1][j][e];
                if (p.glu_bf16) {  // rounded as launch_float_to_bf16 rounds
                    p.glu_bf16[static_cast<int64_t>(m) * ref.n + col] = __float2bfloat16_rn(v);
                    continue;
                }
            }
            float* out = ref.y + static_cast<int64_t>(m) * ref.n + col;
            *out = ref.accumulate ? *out + v : v;
        }
}

// Tiles of kRows weight rows that the first `count` jobs make.
int tiles_of(const GemvJob* jobs, int count, int rows) {
    int tiles = 0;
    for (int j = 0; j < count; ++j) tiles += static_cast<int>(ceil_div(jobs[j].n, rows));
    return tiles;
}

// Splits K into as many parts as keep every block of the launch resident at once (one wave):
// a second, partial wave streams its weights with a fraction of the GPU's loads in flight (the
// q, k, v, g launch of 16 rows was 1.45 waves when split to fill two blocks per multiprocessor),
// while every part keeps at least one whole round of loads.
template <bool kGlu, int kRows, bool kNormed>
void launch_tiles(const __nv_bfloat16* x, int M, int K, SkinnyParams p, const GemvJob* jobs, int job_count,
                  int resident_warps, cudaStream_t stream) {
    using S = TileShape<kGlu, kRows>;
    p.tile_start[0] = 0;
    for (int j = 0; j < job_count; ++j) p.tile_start[j + 1] = p.tile_start[j] + (j < p.count ? tiles_of(jobs + j, 1, kRows) : 0);
    p.total_tiles = p.tile_start[p.count];
    while (p.split < kMaxSplit && p.total_tiles * p.split * 2 <= resident_warps && K >= 2 * 32 * S::U * p.split)
        p.split *= 2;
    p.part_k = static_cast<int>(ceil_div(ceil_div(K, p.split), 32)) * 32;
    const unsigned blocks = ceil_div(p.total_tiles, kWarps / p.split);
    auto* kernel = skinny_gemm_kernel<kGlu, kRows, kNormed>;
    size_t shared = 0;
    if constexpr (kNormed) {
        p.staged_ld = staged_ld(K);
        shared = staged_bytes(M, K);
        RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
    }
    launch_overlapped(kernel, dim3(blocks), dim3(kWarps * 32), shared, stream, x, M, K, p);
}

// 16-row tiles where they alone give every resident block one (see the top of the file). The fused
// norm takes the unfused kernel's tiles and split (the same sums, in the same order).
template <bool kGlu, bool kNormed>
void launch_shape(const __nv_bfloat16* x, int M, int K, const SkinnyParams& p, const GemvJob* jobs, int job_count,
                  cudaStream_t stream) {
    const int tiles_of_16 = tiles_of(jobs, p.count, 16);
    const int resident =
        resident_blocks(reinterpret_cast<const void*>(skinny_gemm_kernel<kGlu, 16, false>), kWarps * 32, 0);
    if (tiles_of_16 >= resident)
        return launch_tiles<kGlu, 16, kNormed>(x, M, K, p, jobs, job_count, resident * kWarps, stream);
    const int resident_8 =
        resident_blocks(reinterpret_cast<const void*>(skinny_gemm_kernel<kGlu, 8, false>), kWarps * 32, 0);
    launch_tiles<kGlu, 8, kNormed>(x, M, K, p, jobs, job_count, resident_8 * kWarps, stream);
}

// The jobs checked and the launch made, X as bf16 rows or (p.norm_x) to be normed in the launch.
void launch_jobs(const __nv_bfloat16* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream,
                 GemvGlu glu, __nv_bfloat16* glu_bf16, SkinnyParams p) {
    const bool paired = glu != GemvGlu::None;
    if (glu_bf16 && !paired) throw Error("skinny gemm: a bf16 output without a GLU (internal error)");
    const bool jobs_ok = paired ? job_count == 2 && jobs[0].n == jobs[1].n && !jobs[0].accumulate
                                : job_count >= 1 && job_count <= kGemvMaxJobs;
    if (!skinny_gemm_supports(M, K) || !jobs_ok)
        throw Error("skinny gemm: unsupported shape M " + std::to_string(M) + ", K " + std::to_string(K) + ", " +
                    std::to_string(job_count) + " weights (internal error)");
    p.count = paired ? 1 : job_count;
    for (int j = 0; j < job_count; ++j) p.jobs[j] = jobs[j];
    p.gelu = glu == GemvGlu::Gelu;
    p.glu_bf16 = glu_bf16;
    int rows = 0;
    for (int j = 0; j < p.count; ++j) rows += jobs[j].n;
    if (rows == 0) return;
    const bool normed = p.norm_x != nullptr;
    if (paired) (normed ? launch_shape<true, true> : launch_shape<true, false>)(x, M, K, p, jobs, job_count, stream);
    else (normed ? launch_shape<false, true> : launch_shape<false, false>)(x, M, K, p, jobs, job_count, stream);
}

}  // namespace

bool skinny_gemm_supports(int M, int K) {
    return M >= 1 && M <= kSkinnyMaxRows && K > 0 && K % 8 == 0;
}

void launch_skinny_gemm(const __nv_bfloat16* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream,
                        GemvGlu glu, __nv_bfloat16* glu_bf16) {
    launch_jobs(x, M, K, jobs, job_count, stream, glu, glu_bf16, SkinnyParams{});
}

bool skinny_gemm_fuses_norm(int M, int K) { return skinny_gemm_supports(M, K) && K <= kNormMaxK; }

void launch_skinny_gemm_normed(const SkinnyNorm& norm, int M, int K, const GemvJob* jobs, int job_count,
                               cudaStream_t stream, GemvGlu glu, __nv_bfloat16* glu_bf16) {
    if (!skinny_gemm_fuses_norm(M, K) || !norm.x)
        throw Error("skinny gemm: the norm of M " + std::to_string(M) + ", K " + std::to_string(K) +
                    " rows cannot be fused (internal error)");
    SkinnyParams p;
    p.norm_x = norm.x, p.norm_weight = norm.weight, p.norm_eps = norm.eps;
    launch_jobs(nullptr, M, K, jobs, job_count, stream, glu, glu_bf16, p);
}

}  // namespace retnet::cuda
