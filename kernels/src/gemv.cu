// SPDX-License-Identifier: GPL-3.0-or-later
// Few-row projections at the memory floor (see gemv.h): one warp per output column n, 16-byte
// weight loads issued eight at a time so that enough bytes are in flight to stream DRAM, the
// first eight before the previous kernel has finished (programmatic dependent launch). Fused
// variants stage X times the norm weight in shared memory (RMSNorm's scale multiplies the sums)
// or pair two weights into a GLU, so that a decoding step launches fewer, longer kernels.
#include <algorithm>
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "device_limits.h"
#include "gemv.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kUnroll = 8;  // 16-byte loads in flight per lane: a 2048-long bf16 row in one round
constexpr int kMaxFusedRows = 4;
constexpr size_t kMaxStagedBytes = 48 * 1024;
constexpr int kGemvSplit = 2;  // warps per row of gemv_split_kernel

struct GemvParams {
    GemvJob jobs[kGemvMaxJobs];
    int row_start[kGemvMaxJobs + 1];  // job j owns rows [row_start[j], row_start[j + 1]) of the launch
    int count = 0;                    // jobs whose rows are enumerated (a GLU enumerates the act rows)
    int total_rows = 0;               // row_start[count]
    GemvInputTransform input;
    bool gelu = false;  // the GLU's activation (swish otherwise)
    L2Prefetch next;
};

// acc[m] += Σ_i w_i · x[m][k0 + i] over the 16 bytes of weights in `packed`; x in global memory
// (read through the read-only cache) or staged in shared memory.
template <typename Wt, int M, bool kStaged>
__device__ __forceinline__ void dot_vector(const uint4& packed, const float* __restrict__ x, int K, int k0,
                                           float (&acc)[M]) {
    float w[16 / sizeof(Wt)];
    if constexpr (sizeof(Wt) == 2) {  // bf16: the upper half of an fp32
        const unsigned words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[2 * i] = __uint_as_float(words[i] << 16);
            w[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
        }
    } else {
        w[0] = __uint_as_float(packed.x), w[1] = __uint_as_float(packed.y);
        w[2] = __uint_as_float(packed.z), w[3] = __uint_as_float(packed.w);
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const float4* xr = reinterpret_cast<const float4*>(x + static_cast<int64_t>(m) * K + k0);
#pragma unroll
        for (int q = 0; q < static_cast<int>(16 / sizeof(Wt)) / 4; ++q) {
            const float4 xv = kStaged ? xr[q] : __ldg(xr + q);
            acc[m] = fmaf(w[4 * q], xv.x, acc[m]);
            acc[m] = fmaf(w[4 * q + 1], xv.y, acc[m]);
            acc[m] = fmaf(w[4 * q + 2], xv.z, acc[m]);
            acc[m] = fmaf(w[4 * q + 3], xv.w, acc[m]);
        }
    }
}

// x ⊙ g (M, K) into shared memory, and RMSNorm's scale of each row, in one pass over x. The
// scale is one number a row, so it multiplies the finished sums instead of every x: the products
// need no reduction before they start (on the H100, per op at one row: norm + q, k, v, g 22.8 →
// 20.7 µs, norm + FFN GLU 9.0 → 7.5). The sum of squares runs in double in block_sum's order.
template <int M>
__device__ void stage_input(const float* __restrict__ x, int K, const GemvInputTransform& t, float* xs,
                            float (&scale)[M]) {
    __shared__ double partial[M][kWarpsPerBlock];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const float* xr = x + static_cast<int64_t>(m) * K;
        double ss = 0.0;
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            const float v = xr[i];
            ss += static_cast<double>(v) * v;
            xs[m * K + i] = t.weight ? v * t.weight[i] : v;
        }
        ss = warp_sum(ss);
        if (lane == 0) partial[m][warp] = ss;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const double total = warp_sum(lane < kWarpsPerBlock ? partial[m][lane] : 0.0);
        scale[m] = static_cast<float>(1.0 / sqrt(total / K + static_cast<double>(t.eps)));
    }
}

// The rows the products read: x itself, or (kStaged) x ⊙ g staged in shared memory, with the
// per-row scale that write_row applies (1 for x itself).
template <int M, bool kStaged>
__device__ __forceinline__ const float* input_rows(const float* __restrict__ x, int K, const GemvInputTransform& t,
                                                   float4* staged, float (&scale)[M]) {
#pragma unroll
    for (int m = 0; m < M; ++m) scale[m] = 1.0f;
    if constexpr (!kStaged) return x;
    stage_input<M>(x, K, t, reinterpret_cast<float*>(staged), scale);
    return reinterpret_cast<const float*>(staged);
}

// One output row: its weights (and the GLU partner's), where it goes.
template <typename Wt>
struct RowRef {
    const uint4* w = nullptr;
    const uint4* w_lin = nullptr;
    float* y = nullptr;
    int rows = 0, n = 0;
    bool accumulate = false;
};

// Row r of the launch, by constant indices so that the parameters stay in the constant bank.
template <typename Wt, bool kGlu>
__device__ __forceinline__ RowRef<Wt> locate_row(const GemvParams& p, int r, int K) {
    int j_first = 0;
    const void* weight = p.jobs[0].weight;
    RowRef<Wt> ref;
    ref.y = p.jobs[0].y, ref.rows = p.jobs[0].n, ref.accumulate = p.jobs[0].accumulate;
    if (!kGlu) {
#pragma unroll
        for (int j = 1; j < kGemvMaxJobs; ++j)
            if (j < p.count && r >= p.row_start[j]) {
                weight = p.jobs[j].weight, ref.y = p.jobs[j].y, ref.rows = p.jobs[j].n;
                ref.accumulate = p.jobs[j].accumulate, j_first = p.row_start[j];
            }
    }
    ref.n = r - j_first;
    const int64_t offset = static_cast<int64_t>(ref.n) * K;
    ref.w = reinterpret_cast<const uint4*>(static_cast<const Wt*>(weight) + offset);
    if (kGlu) ref.w_lin = reinterpret_cast<const uint4*>(static_cast<const Wt*>(p.jobs[1].weight) + offset);
    return ref;
}

// The next round of a row's weights from vector v0 on: kLoads 16-byte loads per lane (each
// weight stream of a GLU), streamed past the caches, up to vector v_end.
template <typename Wt, int kLoads, bool kGlu>
__device__ __forceinline__ void load_round(const RowRef<Wt>& row, int v0, int v_end, uint4 (&packed)[kLoads],
                                           uint4 (&packed_lin)[kGlu ? kLoads : 1]) {
#pragma unroll
    for (int u = 0; u < kLoads; ++u)
        if (v0 + 32 * u < v_end) {
            packed[u] = __ldcs(row.w + v0 + 32 * u);
            if constexpr (kGlu) packed_lin[u] = __ldcs(row.w_lin + v0 + 32 * u);
        }
}

// acc (and acc_lin) += the products of the round held in `packed` with x̂ at vector v0.
template <typename Wt, int M, bool kStaged, int kLoads, bool kGlu>
__device__ __forceinline__ void dot_round(const uint4 (&packed)[kLoads], const uint4 (&packed_lin)[kGlu ? kLoads : 1],
                                          const float* xs, int K, int v0, int v_end, float (&acc)[M],
                                          float (&acc_lin)[kGlu ? M : 1]) {
    constexpr int kVec = 16 / sizeof(Wt);
#pragma unroll
    for (int u = 0; u < kLoads; ++u)
        if (v0 + 32 * u < v_end) {
            dot_vector<Wt, M, kStaged>(packed[u], xs, K, (v0 + 32 * u) * kVec, acc);
            if constexpr (kGlu) dot_vector<Wt, M, kStaged>(packed_lin[u], xs, K, (v0 + 32 * u) * kVec, acc_lin);
        }
}

// Writes the finished sums of one row for all M inputs (lane 0), times the input's RMSNorm scale
// (1 for an input not staged).
template <typename Wt, int M, bool kGlu>
__device__ __forceinline__ void write_row(const RowRef<Wt>& row, const GemvParams& p, const float (&acc)[M],
                                          const float (&acc_lin)[kGlu ? M : 1], const float (&scale)[M]) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
        float* out = row.y + static_cast<int64_t>(m) * row.rows + row.n;
        const float a = acc[m] * scale[m];
        if constexpr (kGlu) *out = (p.gelu ? gelu(a) : silu(a)) * (acc_lin[m] * scale[m]);
        else *out = row.accumulate ? *out + a : a;
    }
}

// A persistent grid: each warp takes rows r, r + (all warps), …; the first round of a row's
// weights is requested while the previous row is still being reduced and written, and the very
// first before the previous kernel has finished (weights are never written; their stream is what
// this kernel's time is made of). A fused input is staged once per block.
template <typename Wt, int M, bool kStaged, bool kGlu>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_kernel(const float* __restrict__ x, int K, GemvParams p) {
    constexpr int kLoads = kGlu ? kUnroll / 2 : kUnroll;  // per weight stream
    extern __shared__ float4 staged[];                     // x̂ (M, K) when kStaged
    prefetch_share_to_l2(p.next);  // first, while no registers are held
    const int lane = threadIdx.x & 31;
    const int warps = static_cast<int>(gridDim.x) * kWarpsPerBlock, total = p.total_rows;
    const int n_vec = K / static_cast<int>(16 / sizeof(Wt));
    int r = static_cast<int>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);

    uint4 packed[kLoads], packed_lin[kGlu ? kLoads : 1];
    RowRef<Wt> row;
    if (r < total) {
        row = locate_row<Wt, kGlu>(p, r, K);
        load_round<Wt, kLoads, kGlu>(row, lane, n_vec, packed, packed_lin);
    }
    wait_for_previous_grid();
    allow_next_grid();
    float scale[M];
    const float* xs = input_rows<M, kStaged>(x, K, p.input, staged, scale);
    while (r < total) {
        float acc[M], acc_lin[kGlu ? M : 1];
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] = 0.0f, acc_lin[kGlu ? m : 0] = 0.0f;
        for (int v0 = lane;;) {
            dot_round<Wt, M, kStaged, kLoads, kGlu>(packed, packed_lin, xs, K, v0, n_vec, acc, acc_lin);
            v0 += 32 * kLoads;
            if (v0 - lane >= n_vec) break;
            load_round<Wt, kLoads, kGlu>(row, v0, n_vec, packed, packed_lin);
        }
        const RowRef<Wt> done = row;
        r += warps;
        if (r < total) {
            row = locate_row<Wt, kGlu>(p, r, K);
            load_round<Wt, kLoads, kGlu>(row, lane, n_vec, packed, packed_lin);
        }
#pragma unroll
        for (int m = 0; m < M; ++m) {
            acc[m] = warp_sum(acc[m]);
            if constexpr (kGlu) acc_lin[m] = warp_sum(acc_lin[m]);
        }
        if (lane == 0) write_row<Wt, M, kGlu>(done, p, acc, acc_lin, scale);
    }
}

// Fewer rows than the GPU holds warps, each longer than one round (the output projection, the
// FFN's down projection): kSplit warps of a block share a row, each streaming its part of K, so
// that the whole matrix is requested at once instead of in rounds one after the other. The parts'
// sums meet in shared memory and are added in part order. One row per warp group, no loop.
template <typename Wt, int M, bool kStaged, bool kGlu>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_split_kernel(const float* __restrict__ x, int K,
                                                                         GemvParams p) {
    constexpr int kLoads = kGlu ? kUnroll / 2 : kUnroll;
    constexpr int kRowsPerBlock = kWarpsPerBlock / kGemvSplit;
    extern __shared__ float4 staged[];
    __shared__ float partial[kWarpsPerBlock][kGlu ? 2 : 1][M];
    prefetch_share_to_l2(p.next);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % kGemvSplit;
    const int r = static_cast<int>(blockIdx.x) * kRowsPerBlock + warp / kGemvSplit;
    const int n_vec = K / static_cast<int>(16 / sizeof(Wt));
    const int per_part = (n_vec + kGemvSplit - 1) / kGemvSplit;
    const int v_begin = part * per_part, v_end = min(n_vec, v_begin + per_part);
    const bool active = r < p.total_rows;

    uint4 packed[kLoads], packed_lin[kGlu ? kLoads : 1];
    RowRef<Wt> row;
    if (active) {
        row = locate_row<Wt, kGlu>(p, r, K);
        load_round<Wt, kLoads, kGlu>(row, v_begin + lane, v_end, packed, packed_lin);
    }
    wait_for_previous_grid();
    allow_next_grid();
    float scale[M];
    const float* xs = input_rows<M, kStaged>(x, K, p.input, staged, scale);
    float acc[M], acc_lin[kGlu ? M : 1];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f, acc_lin[kGlu ? m : 0] = 0.0f;
    if (active)
        for (int v0 = v_begin + lane;;) {
            dot_round<Wt, M, kStaged, kLoads, kGlu>(packed, packed_lin, xs, K, v0, v_end, acc, acc_lin);
            v0 += 32 * kLoads;
            if (v0 - lane >= v_end) break;
            load_round<Wt, kLoads, kGlu>(row, v0, v_end, packed, packed_lin);
        }
#pragma unroll
    for (int m = 0; m < M; ++m) {
        acc[m] = warp_sum(acc[m]);
        if constexpr (kGlu) acc_lin[m] = warp_sum(acc_lin[m]);
        if (lane == 0) {
            partial[warp][0][m] = acc[m];
            if constexpr (kGlu) partial[warp][1][m] = acc_lin[m];
        }
    }
    __syncthreads();
    if (!active || part != 0 || lane != 0) return;
#pragma unroll
    for (int m = 0; m < M; ++m) {
        acc[m] = partial[warp][0][m];
        if constexpr (kGlu) acc_lin[m] = partial[warp][1][m];
#pragma unroll
        for (int s = 1; s < kGemvSplit; ++s) {
            acc[m] += partial[warp + s][0][m];
            if constexpr (kGlu) acc_lin[m] += partial[warp + s][1][m];
        }
    }
    write_row<Wt, M, kGlu>(row, p, acc, acc_lin, scale);
}

// Rows needing more than one round each go to the split kernel when all their warps fit on the
// GPU at once; otherwise the persistent kernel streams them in rounds.
template <typename Wt, int M, bool kStaged, bool kGlu>
void launch_rows(const float* x, int K, const GemvParams& p, cudaStream_t stream) {
    const size_t shared = kStaged ? static_cast<size_t>(M) * K * sizeof(float) : 0;
    constexpr int kLoads = kGlu ? kUnroll / 2 : kUnroll;
    const int n_vec = K / static_cast<int>(16 / sizeof(Wt));
    auto* split = gemv_split_kernel<Wt, M, kStaged, kGlu>;
    const int split_blocks = static_cast<int>(ceil_div(p.total_rows, kWarpsPerBlock / kGemvSplit));
    if (n_vec > 32 * kLoads &&
        split_blocks <= resident_blocks(reinterpret_cast<const void*>(split), kWarpsPerBlock * 32, shared))
        return launch_overlapped(split, dim3(static_cast<unsigned>(split_blocks)), dim3(kWarpsPerBlock * 32), shared,
                                 stream, x, K, p);
    auto* kernel = gemv_kernel<Wt, M, kStaged, kGlu>;
    const int blocks = std::min(static_cast<int>(ceil_div(p.total_rows, kWarpsPerBlock)),
                                resident_blocks(reinterpret_cast<const void*>(kernel), kWarpsPerBlock * 32, shared));
    launch_overlapped(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), shared, stream, x, K, p);
}

template <typename Wt, bool kStaged, bool kGlu>
void launch_fused(const float* x, int M, int K, const GemvParams& p, cudaStream_t stream) {
    switch (M) {
        case 1: launch_rows<Wt, 1, kStaged, kGlu>(x, K, p, stream); break;
        case 2: launch_rows<Wt, 2, kStaged, kGlu>(x, K, p, stream); break;
        case 3: launch_rows<Wt, 3, kStaged, kGlu>(x, K, p, stream); break;
        default: launch_rows<Wt, 4, kStaged, kGlu>(x, K, p, stream); break;
    }
}

template <typename Wt>
void launch_typed(const float* x, int M, int K, const GemvParams& p, bool staged, bool glu,
                  cudaStream_t stream) {
    if (glu) return staged ? launch_fused<Wt, true, true>(x, M, K, p, stream)
                           : launch_fused<Wt, false, true>(x, M, K, p, stream);
    if (staged) return launch_fused<Wt, true, false>(x, M, K, p, stream);
    switch (M) {
        case 1: launch_rows<Wt, 1, false, false>(x, K, p, stream); break;
        case 2: launch_rows<Wt, 2, false, false>(x, K, p, stream); break;
        case 3: launch_rows<Wt, 3, false, false>(x, K, p, stream); break;
        case 4: launch_rows<Wt, 4, false, false>(x, K, p, stream); break;
        case 5: launch_rows<Wt, 5, false, false>(x, K, p, stream); break;
        case 6: launch_rows<Wt, 6, false, false>(x, K, p, stream); break;
        case 7: launch_rows<Wt, 7, false, false>(x, K, p, stream); break;
        default: launch_rows<Wt, 8, false, false>(x, K, p, stream); break;
    }
}

}  // namespace

bool gemv_supports(int M, int K, bool bf16) {
    return M >= 1 && M <= kGemvMaxRows && K > 0 && K % (bf16 ? 8 : 4) == 0;
}

bool gemv_supports_fusion(int M, int K, bool bf16) {
    return gemv_supports(M, K, bf16) && M <= kMaxFusedRows &&
           static_cast<size_t>(M) * K * sizeof(float) <= kMaxStagedBytes;
}

void launch_gemv(const float* x, int M, int K, const GemvJob* jobs, int job_count, bool bf16, cudaStream_t stream,
                 const GemvInputTransform& input, GemvGlu glu, const L2Prefetch& next) {
    const bool staged = input.kind != GemvInput::Plain, paired = glu != GemvGlu::None;
    const bool shape_ok = (staged || paired) ? gemv_supports_fusion(M, K, bf16) : gemv_supports(M, K, bf16);
    const bool jobs_ok = paired ? job_count == 2 && jobs[0].n == jobs[1].n : job_count >= 1 && job_count <= kGemvMaxJobs;
    if (!shape_ok || !jobs_ok)
        throw Error("gemv: unsupported shape M " + std::to_string(M) + ", K " + std::to_string(K) + ", " +
                    std::to_string(job_count) + " weights (internal error)");
    GemvParams p;
    p.count = paired ? 1 : job_count;  // a GLU enumerates its act rows and reads the lin row beside each
    p.row_start[0] = 0;
    for (int j = 0; j < job_count; ++j) {
        p.jobs[j] = jobs[j];
        p.row_start[j + 1] = p.row_start[j] + jobs[j].n;
    }
    p.input = input;
    p.gelu = glu == GemvGlu::Gelu;
    p.next = next;
    p.total_rows = p.row_start[p.count];
    if (p.total_rows == 0) return;
    if (bf16) launch_typed<__nv_bfloat16>(x, M, K, p, staged, paired, stream);
    else launch_typed<float>(x, M, K, p, staged, paired, stream);
}

}  // namespace retnet::cuda
