// SPDX-License-Identifier: GPL-3.0-or-later
// Few-row bf16 projections on the tensor cores (see skinny_gemm.h). A block of 8 warps owns 8
// tiles of 8·R weight rows and one part of K; it stages X's columns of that part in shared memory
// (rounded to bf16 there when X is fp32), and each warp computes all M rows of X for its tile
// with mma m16n8k16. The parts of a tile are the blocks of one thread block cluster: their sums
// meet in the first block's shared memory and are added in part order.
//
// The K permutation: in 32 columns k0 … k0+31, lane (g, t) (g = lane / 4, t = lane % 4) loads the
// 16 bytes at k0 + 8t of weight row g and of X rows g and g + 8. The first product of the pair
// uses columns 8t … 8t+3 as its logical columns {2t, 2t+1, 2t+8, 2t+9}, the second 8t+4 … 8t+7;
// both operands follow the same map, so each product still sums x[k]·w[k] over the same 32 k.
#include <cooperative_groups.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "retnet/error.h"
#include "skinny_gemm.h"

namespace retnet::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kLoadsInFlight = 8;  // 16-byte weight loads per lane and round, as in the GEMV
constexpr int kMaxSplit = 8;       // parts of K: blocks of a cluster (the portable cluster size)
constexpr size_t kMaxStageBytes = 112 * 1024;  // two blocks per multiprocessor

struct SkinnyParams {
    GemvJob jobs[kGemvMaxJobs];
    int tile_start[kGemvMaxJobs + 1];  // job j owns tiles [tile_start[j], tile_start[j + 1])
    int count = 0;                     // jobs whose tiles are enumerated (a GLU enumerates the act rows)
    int total_tiles = 0;
    int split = 1;   // parts of K, the blocks of a cluster
    int part_k = 0;  // columns per part, a multiple of 32
    bool gelu = false;
};

// The tile shape for MT tiles of 16 X rows: R weight tiles of 8 rows per warp share each X
// fragment, and U chunks of 32 columns per round keep kLoadsInFlight loads in flight per lane.
template <int MT, bool kGlu>
struct TileShape {
    static constexpr int kStreams = kGlu ? 2 : 1;
    static constexpr int R = (MT == 1 || kGlu) ? 1 : 2;
    static constexpr int U = kLoadsInFlight / (kStreams * R);
    static constexpr int kAcc = kStreams * MT * R * 4;  // fp32 accumulators per lane
};

// Row stride of the staged X in elements: 16-byte aligned, and ≡ 64 bytes mod 128 when it
// would be a multiple of 128, so that the 8 lanes of a phase (two rows × 64 bytes) hit all banks.
__host__ __device__ constexpr int stage_stride(int part_k) { return part_k % 64 == 0 ? part_k + 32 : part_k; }

size_t stage_bytes(int mt, int part_k) {
    return static_cast<size_t>(mt) * 16 * static_cast<size_t>(stage_stride(part_k)) * sizeof(__nv_bfloat16);
}

int part_columns(int K, int split) { return static_cast<int>(ceil_div(ceil_div(K, split), 32)) * 32; }

__device__ __forceinline__ void mma_bf16(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Eight consecutive elements of X as bf16 (rounded to nearest, as launch_float_to_bf16 rounds).
__device__ __forceinline__ uint4 load8_bf16(const __nv_bfloat16* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ uint4 load8_bf16(const float* p) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    auto pack = [](float lo, float hi) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const unsigned*>(&v);
    };
    return make_uint4(pack(a.x, a.y), pack(a.z, a.w), pack(b.x, b.y), pack(b.z, b.w));
}

// Where a warp's tile is: its job (by constant indices, so that the parameters stay in the
// constant bank), first weight row and output.
struct TileRef {
    const __nv_bfloat16* w[2] = {nullptr, nullptr};  // act (or the only weight), lin
    float* y = nullptr;
    int n0 = 0, n = 0;
    bool accumulate = false;
};

template <int R, bool kGlu>
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
    ref.n0 = (tile - first) * 8 * R;
    return ref;
}

// Grid: x the part of K (a cluster of p.split blocks), y the group of kWarps tiles.
template <typename Xt, int MT, bool kGlu>
__global__ void __launch_bounds__(kWarps * 32) skinny_gemm_kernel(const Xt* __restrict__ x, int M, int K,
                                                                  SkinnyParams p) {
    using S = TileShape<MT, kGlu>;
    constexpr int R = S::R, U = S::U, kStreams = S::kStreams;
    extern __shared__ uint4 shared[];  // X's part (MT·16, stride) in bf16; then the parts' sums
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int part = static_cast<int>(blockIdx.x), tile = static_cast<int>(blockIdx.y) * kWarps + warp;
    const bool active = tile < p.total_tiles;
    const int k_begin = part * p.part_k, k_end = min(K, k_begin + p.part_k);
    const int part_len = max(0, k_end - k_begin), rounds = (part_len + 32 * U - 1) / (32 * U);

    TileRef ref;
    if (active) ref = locate_tile<R, kGlu>(p, tile);
    const uint4* rows[kStreams][R];  // this lane's weight row g of each 8-row tile, or null past N
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int n = ref.n0 + 8 * r + g;
#pragma unroll
        for (int s = 0; s < kStreams; ++s)
            rows[s][r] = active && n < ref.n ? reinterpret_cast<const uint4*>(ref.w[s] + static_cast<int64_t>(n) * K)
                                             : nullptr;
    }
    auto load_round = [&](uint4 (&w)[kStreams][R][U], int round) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int k = k_begin + (round * U + u) * 32 + 8 * t;
#pragma unroll
            for (int s = 0; s < kStreams; ++s)
#pragma unroll
                for (int r = 0; r < R; ++r)
                    w[s][r][u] = rows[s][r] && k < k_end ? __ldcs(rows[s][r] + k / 8) : make_uint4(0, 0, 0, 0);
        }
    };

    uint4 w_now[kStreams][R][U], w_next[kStreams][R][U];
    if (rounds > 0) load_round(w_now, 0);  // weights are never written: requested before the wait
    wait_for_previous_grid();
    allow_next_grid();

    // X's columns [k_begin, k_begin + part_k) as bf16, zero past M and past K.
    const int stride = stage_stride(p.part_k), vectors = p.part_k / 8;
    __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(shared);
    for (int i = static_cast<int>(threadIdx.x); i < MT * 16 * vectors; i += kWarps * 32) {
        const int m = i / vectors, c = (i % vectors) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (m < M && k_begin + c < k_end) v = load8_bf16(x + static_cast<int64_t>(m) * K + k_begin + c);
        *reinterpret_cast<uint4*>(xs + m * stride + c) = v;
    }
    __syncthreads();

    float acc[kStreams][MT][R][4] = {};
    for (int round = 0; round < rounds; ++round) {
        if (round + 1 < rounds) load_round(w_next, round + 1);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int c = (round * U + u) * 32;
            if (c >= part_len) break;  // the same for the whole warp
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const __nv_bfloat16* xr = xs + (mt * 16 + g) * stride + c + 8 * t;
                const uint4 xa = *reinterpret_cast<const uint4*>(xr);
                const uint4 xb = *reinterpret_cast<const uint4*>(xr + 8 * stride);
#pragma unroll
                for (int s = 0; s < kStreams; ++s)
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        const uint4 wv = w_now[s][r][u];
                        mma_bf16(acc[s][mt][r], xa.x, xb.x, xa.y, xb.y, wv.x, wv.y);
                        mma_bf16(acc[s][mt][r], xa.z, xb.z, xa.w, xb.w, wv.z, wv.w);
                    }
            }
        }
        if (round + 1 < rounds) {
#pragma unroll
            for (int s = 0; s < kStreams; ++s)
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int u = 0; u < U; ++u) w_now[s][r][u] = w_next[s][r][u];
        }
    }

    float* flat = &acc[0][0][0][0];
    if (p.split > 1) {  // the parts' sums, lane-minor (no bank conflicts), into the first block
        namespace cg = cooperative_groups;
        const cg::cluster_group cluster = cg::this_cluster();
        float* sums = reinterpret_cast<float*>(shared);  // (kWarps, kAcc, 32)
        __syncthreads();                                 // every warp is done with the staged X
#pragma unroll
        for (int i = 0; i < S::kAcc; ++i) sums[(warp * S::kAcc + i) * 32 + lane] = flat[i];
        cluster.sync();
        if (part == 0)
            for (int q = 1; q < p.split; ++q) {
                const float* remote = cluster.map_shared_rank(sums, q);
#pragma unroll
                for (int i = 0; i < S::kAcc; ++i) flat[i] += remote[(warp * S::kAcc + i) * 32 + lane];
            }
        cluster.sync();  // the other blocks' shared memory stays until the first has read it
        if (part != 0) return;
    }
    if (!active) return;
    // The accumulator fragment: entries 0, 1 at row g, columns 2t, 2t + 1; entries 2, 3 at row g + 8.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = mt * 16 + g + (e >= 2 ? 8 : 0), n = ref.n0 + 8 * r + 2 * t + (e & 1);
                if (m >= M || n >= ref.n) continue;
                float v = acc[0][mt][r][e];
                if constexpr (kGlu) v = (p.gelu ? gelu(v) : silu(v)) * acc[kStreams - 1][mt][r][e];
                float* out = ref.y + static_cast<int64_t>(m) * ref.n + n;
                *out = ref.accumulate ? *out + v : v;
            }
}

int multiprocessors() {
    static std::mutex mutex;
    static std::map<int, int> cache;
    int device = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = cache.find(device);
    if (found != cache.end()) return found->second;
    int sms = 0;
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return cache[device] = std::max(1, sms);
}

int row_tiles(int M) { return (M + 15) / 16; }

// Splits K until there are blocks enough for two per multiprocessor while every part keeps at
// least one whole round of loads, and further while X's part does not fit the stage.
template <typename Xt, int MT, bool kGlu>
void launch_shape(const Xt* x, int M, int K, SkinnyParams p, const GemvJob* jobs, int job_count,
                  cudaStream_t stream) {
    using S = TileShape<MT, kGlu>;
    const int tile_rows = 8 * S::R;
    p.tile_start[0] = 0;
    for (int j = 0; j < p.count; ++j)
        p.tile_start[j + 1] = p.tile_start[j] + static_cast<int>(ceil_div(jobs[j].n, tile_rows));
    for (int j = p.count; j < job_count; ++j) p.tile_start[j + 1] = p.tile_start[j];
    p.total_tiles = p.tile_start[p.count];
    const int groups = static_cast<int>(ceil_div(p.total_tiles, kWarps)), target_blocks = 2 * multiprocessors();
    while (p.split < kMaxSplit &&
           ((groups * p.split < target_blocks && part_columns(K, 2 * p.split) >= 32 * S::U) ||
            stage_bytes(MT, part_columns(K, p.split)) > kMaxStageBytes))
        p.split *= 2;
    p.part_k = part_columns(K, p.split);
    const size_t shared = std::max(stage_bytes(MT, p.part_k), sizeof(float) * kWarps * S::kAcc * 32);
    auto* kernel = skinny_gemm_kernel<Xt, MT, kGlu>;
    static std::once_flag configured;  // one per instantiation
    std::call_once(configured, [&] {
        RETNET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(kMaxStageBytes)));
    });
    launch_overlapped_clusters(kernel, dim3(static_cast<unsigned>(p.split), static_cast<unsigned>(groups)),
                               dim3(kWarps * 32), shared, stream, static_cast<unsigned>(p.split), x, M, K, p);
}

template <typename Xt, bool kGlu>
void launch_rows(const Xt* x, int M, int K, const SkinnyParams& p, const GemvJob* jobs, int job_count,
                 cudaStream_t stream) {
    switch (row_tiles(M)) {
        case 1: return launch_shape<Xt, 1, kGlu>(x, M, K, p, jobs, job_count, stream);
        case 2: return launch_shape<Xt, 2, kGlu>(x, M, K, p, jobs, job_count, stream);
        case 3: return launch_shape<Xt, 3, kGlu>(x, M, K, p, jobs, job_count, stream);
        default: return launch_shape<Xt, 4, kGlu>(x, M, K, p, jobs, job_count, stream);
    }
}

template <typename Xt>
void launch_typed(const Xt* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream, GemvGlu glu) {
    const bool paired = glu != GemvGlu::None;
    const bool jobs_ok = paired ? job_count == 2 && jobs[0].n == jobs[1].n && !jobs[0].accumulate
                                : job_count >= 1 && job_count <= kGemvMaxJobs;
    if (!skinny_gemm_supports(M, K) || !jobs_ok)
        throw Error("skinny gemm: unsupported shape M " + std::to_string(M) + ", K " + std::to_string(K) + ", " +
                    std::to_string(job_count) + " weights (internal error)");
    SkinnyParams p;
    p.count = paired ? 1 : job_count;
    for (int j = 0; j < job_count; ++j) p.jobs[j] = jobs[j];
    p.gelu = glu == GemvGlu::Gelu;
    int rows = 0;
    for (int j = 0; j < p.count; ++j) rows += jobs[j].n;
    if (rows == 0) return;
    if (paired) launch_rows<Xt, true>(x, M, K, p, jobs, job_count, stream);
    else launch_rows<Xt, false>(x, M, K, p, jobs, job_count, stream);
}

}  // namespace

bool skinny_gemm_supports(int M, int K) {
    return M >= 1 && M <= kSkinnyMaxRows && K > 0 && K % 8 == 0 &&
           stage_bytes(row_tiles(M), part_columns(K, kMaxSplit)) <= kMaxStageBytes;
}

void launch_skinny_gemm(const __nv_bfloat16* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream,
                        GemvGlu glu) {
    launch_typed(x, M, K, jobs, job_count, stream, glu);
}

void launch_skinny_gemm(const float* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream,
                        GemvGlu glu) {
    launch_typed(x, M, K, jobs, job_count, stream, glu);
}

}  // namespace retnet::cuda
