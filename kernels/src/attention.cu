// SPDX-License-Identifier: GPL-3.0-or-later
// Causal attention over a KV cache (see attention.h): the batched split-K decode step and the
// blocked cuBLAS prefill.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "attention.h"
#include "common.cuh"
#include "cuda_check.h"
#include "gemm.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;

// ---- shared element helpers --------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T store_as(float x);
template <>
__device__ __forceinline__ float store_as<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 store_as<bf16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to what the cache dtype holds (the query's rounding for bf16 caches).
template <typename T>
__device__ __forceinline__ float round_to(float x) { return load_as_float(store_as<T>(x)); }

// One rotary pair turned by `angle` (float32) in double, as rotary.cu does it. The roundings are
// spelled out (no contraction left to the compiler) so that the decode and prefill kernels write
// the same bits for the same token.
struct Turn {
    double s, c;
    __device__ explicit Turn(float angle) { sincos(static_cast<double>(angle), &s, &c); }
    __device__ void apply(float x0, float x1, float& y0, float& y1) const {
        const double a = x0, b = x1;
        y0 = static_cast<float>(__fma_rn(a, c, -__dmul_rn(b, s)));
        y1 = static_cast<float>(__fma_rn(b, c, __dmul_rn(a, s)));
    }
};

// Writes pair (i0, i1) of the token's rotated k and its v into the cache row `row` (H·D elements,
// already offset to the head), and returns the rotated q pair rounded to the cache dtype.
template <typename T>
__device__ __forceinline__ void append_pair(const float* q, const float* k, const float* v, int i0, int i1,
                                            const Turn& turn, T* k_row, T* v_row, float& q0, float& q1) {
    float k0, k1;
    turn.apply(k[i0], k[i1], k0, k1);
    k_row[i0] = store_as<T>(k0);
    k_row[i1] = store_as<T>(k1);
    v_row[i0] = store_as<T>(v[i0]);
    v_row[i1] = store_as<T>(v[i1]);
    turn.apply(q[i0], q[i1], q0, q1);
    q0 = round_to<T>(q0);
    q1 = round_to<T>(q1);
}

// ---- decode ------------------------------------------------------------------------------------

constexpr int kDecodeWarps = 4;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kUnroll = 4;  // keys of one lane group in flight per step

// How a CTA reads key rows of D elements of T with 16-byte loads: a group of kLanes lanes owns a
// row (kChunksPerLane loads each), so a warp reads 32 / kLanes rows at once.
template <typename T, int D>
struct DecodeTile {
    static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
    static constexpr int kChunks = D / kVec;
    static constexpr int kLanes = kChunks % 32 == 0 ? 32 : kChunks % 16 == 0 ? 16 : kChunks % 8 == 0 ? 8
                                  : kChunks % 4 == 0 ? 4 : kChunks % 2 == 0 ? 2 : 1;
    static constexpr int kChunksPerLane = kChunks / kLanes;
    static constexpr int kPerLane = kChunksPerLane * kVec;
    static constexpr int kGroupsPerWarp = 32 / kLanes;
    static constexpr int kGroups = kDecodeWarps * kGroupsPerWarp;
    static constexpr int kKeysPerStep = kGroups * kUnroll;
    static_assert(D % kVec == 0, "a key row is whole 16-byte chunks");
};

// The keys [begin, end) of one split: ranges of equal length, a multiple of the granule.
struct KeyRange {
    int64_t begin, end;
};
__device__ __forceinline__ int64_t split_length(int64_t keys, int splits, int granule) {
    const int64_t per_split = (keys + splits - 1) / splits;
    return (per_split + granule - 1) / granule * granule;
}

__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[4]) {
    out[0] = __uint_as_float(raw.x), out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z), out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[8]) {
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // bf16 → float is exact: the bits move up
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// Rotates q, k of each sequence's new token at its position and writes k, v into the caches; the
// rotated q (rounded to the cache dtype) goes to q_out (N, H·D). Grid (N).
template <typename T>
__global__ void decode_append_kernel(AttentionDecodeArgs a) {
    wait_for_previous_grid();
    allow_next_grid();
    const int n = blockIdx.x, half = a.D / 2;
    const int64_t HD = static_cast<int64_t>(a.H) * a.D, pos = a.positions[n];
    const float* q = a.q + n * HD;
    const float* k = a.k + n * HD;
    const float* v = a.v + n * HD;
    T* k_row = static_cast<T*>(a.k_caches[n]) + pos * HD;
    T* v_row = static_cast<T*>(a.v_caches[n]) + pos * HD;
    float* q_out = a.workspace + n * HD;
    for (int p = threadIdx.x; p < a.H * half; p += blockDim.x) {
        const int h = p / half, i = p % half;
        const int i0 = h * a.D + i, i1 = i0 + half;
        const Turn turn(static_cast<float>(pos) * a.theta[i]);
        float q0, q1;
        append_pair(q, k, v, i0, i1, turn, k_row, v_row, q0, q1);
        q_out[i0] = q0;
        q_out[i1] = q1;
    }
}

template <typename Tile>
struct Running {  // one lane group's online softmax over its keys, in log2 units
    float m = -INFINITY, l = 0.0f;
    float acc[Tile::kPerLane] = {};
};

// One step of a lane group: kUnroll keys (row indices `rows`, valid or not) scored and folded in.
template <typename T, int D>
__device__ __forceinline__ void decode_step(const T* K, const T* V, int64_t HD, const int64_t (&rows)[kUnroll],
                                            const bool (&valid)[kUnroll], const float (&q)[DecodeTile<T, D>::kPerLane],
                                            Running<DecodeTile<T, D>>& run) {
    using Tile = DecodeTile<T, D>;
    uint4 kr[kUnroll][Tile::kChunksPerLane], vr[kUnroll][Tile::kChunksPerLane];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)  // every load of the step issued before any is used
#pragma unroll
        for (int c = 0; c < Tile::kChunksPerLane; ++c) {
            kr[u][c] = __ldg(reinterpret_cast<const uint4*>(K + rows[u] * HD + c * Tile::kLanes * Tile::kVec));
            vr[u][c] = __ldg(reinterpret_cast<const uint4*>(V + rows[u] * HD + c * Tile::kLanes * Tile::kVec));
        }
    float s[kUnroll];
    float m_new = run.m;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < Tile::kChunksPerLane; ++c) {
            float x[Tile::kVec];
            unpack(kr[u][c], x);
#pragma unroll
            for (int e = 0; e < Tile::kVec; ++e) dot = fmaf(q[c * Tile::kVec + e], x[e], dot);
        }
        // xor butterfly inside the group: every lane of it ends with the same bits
#pragma unroll
        for (int off = Tile::kLanes / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        s[u] = valid[u] ? dot : -INFINITY;
        m_new = fmaxf(m_new, s[u]);
    }
    if (m_new == -INFINITY) return;  // no valid key seen yet
    const float correction = exp2f(run.m - m_new);
    run.l *= correction;
#pragma unroll
    for (int e = 0; e < Tile::kPerLane; ++e) run.acc[e] *= correction;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
        const float p = exp2f(s[u] - m_new);
        run.l += p;
#pragma unroll
        for (int c = 0; c < Tile::kChunksPerLane; ++c) {
            float x[Tile::kVec];
            unpack(vr[u][c], x);
#pragma unroll
            for (int e = 0; e < Tile::kVec; ++e) run.acc[c * Tile::kVec + e] = fmaf(p, x[e], run.acc[c * Tile::kVec + e]);
        }
    }
    run.m = m_new;
}

// Merges the CTA's lane groups and writes the split's partial (max, sum, Σp·v) to the workspace.
template <typename Tile, int D>
__device__ void write_partial(const Running<Tile>& run, int group, int lane_in_group, float* part_acc, float* part_m,
                              float* part_l) {
    __shared__ float s_acc[Tile::kGroups][D];
    __shared__ float s_m[Tile::kGroups], s_l[Tile::kGroups];
#pragma unroll
    for (int c = 0; c < Tile::kChunksPerLane; ++c)
#pragma unroll
        for (int e = 0; e < Tile::kVec; ++e)
            s_acc[group][(c * Tile::kLanes + lane_in_group) * Tile::kVec + e] = run.acc[c * Tile::kVec + e];
    if (lane_in_group == 0) s_m[group] = run.m, s_l[group] = run.l;
    __syncthreads();
    float M = -INFINITY;
#pragma unroll
    for (int g = 0; g < Tile::kGroups; ++g) M = fmaxf(M, s_m[g]);  // finite: the range holds a key
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float L = 0.0f, A = 0.0f;
        for (int g = 0; g < Tile::kGroups; ++g) {
            if (s_m[g] == -INFINITY) continue;  // a group that saw no key
            const float w = exp2f(s_m[g] - M);
            L = fmaf(s_l[g], w, L);
            A = fmaf(s_acc[g][d], w, A);
        }
        part_acc[d] = A;
        if (d == 0) *part_m = M, *part_l = L;
    }
}

// Grid (splits, H, N): the keys of one split of one head of one sequence.
template <typename T, int D>
__global__ void __launch_bounds__(kDecodeThreads) decode_attention_kernel(AttentionDecodeArgs a) {
    using Tile = DecodeTile<T, D>;
    const int split = blockIdx.x, h = blockIdx.y, n = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int lane_in_group = lane % Tile::kLanes, group_in_warp = lane / Tile::kLanes;
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t keys = a.positions[n] + 1;
    const int64_t length = split_length(keys, a.splits, Tile::kKeysPerStep);
    const KeyRange range{split * length, min(keys, (split + 1) * length)};
    if (range.begin >= range.end) return;

    const int64_t HD = static_cast<int64_t>(a.H) * D;
    const float* q_rot = a.workspace + (static_cast<int64_t>(n) * a.H + h) * D;
    float q[Tile::kPerLane];  // scale and log2(e) folded in: scores come out in log2 units
#pragma unroll
    for (int c = 0; c < Tile::kChunksPerLane; ++c)
#pragma unroll
        for (int e = 0; e < Tile::kVec; ++e)
            q[c * Tile::kVec + e] = q_rot[(c * Tile::kLanes + lane_in_group) * Tile::kVec + e] * (a.scale * kLog2e);
    const int64_t lane_offset = static_cast<int64_t>(h) * D + lane_in_group * Tile::kVec;
    const T* K = static_cast<const T*>(a.k_caches[n]) + lane_offset;
    const T* V = static_cast<const T*>(a.v_caches[n]) + lane_offset;

    Running<Tile> run;
    for (int64_t step = range.begin; step < range.end; step += Tile::kKeysPerStep) {
        int64_t rows[kUnroll];
        bool valid[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int64_t key = step + (u * kDecodeWarps + warp) * Tile::kGroupsPerWarp + group_in_warp;
            valid[u] = key < range.end;
            rows[u] = valid[u] ? key : range.begin;  // a row that exists; its score is masked
        }
        decode_step<T, D>(K, V, HD, rows, valid, q, run);
    }
    const int64_t slot = (static_cast<int64_t>(n) * a.H + h) * a.splits + split;
    float* part_acc = a.workspace + static_cast<int64_t>(a.N) * HD;
    float* part_m = part_acc + static_cast<int64_t>(a.N) * a.H * a.splits * D;
    float* part_l = part_m + static_cast<int64_t>(a.N) * a.H * a.splits;
    write_partial<Tile, D>(run, warp * Tile::kGroupsPerWarp + group_in_warp, lane_in_group, part_acc + slot * D,
                           part_m + slot, part_l + slot);
}

// Grid (H, N): o = Σ_s 2^(m_s − M)·acc_s / Σ_s 2^(m_s − M)·l_s over the splits that held keys.
__global__ void decode_combine_kernel(AttentionDecodeArgs a, int granule) {
    wait_for_previous_grid();
    allow_next_grid();
    const int h = blockIdx.x, n = blockIdx.y, D = a.D;
    const int64_t keys = a.positions[n] + 1, length = split_length(keys, a.splits, granule);
    const int used = static_cast<int>((keys + length - 1) / length);
    const int64_t HD = static_cast<int64_t>(a.H) * D, slot0 = (static_cast<int64_t>(n) * a.H + h) * a.splits;
    const float* part_acc = a.workspace + static_cast<int64_t>(a.N) * HD + slot0 * D;
    const float* part_m = a.workspace + static_cast<int64_t>(a.N) * HD + static_cast<int64_t>(a.N) * a.H * a.splits * D;
    const float* part_l = part_m + static_cast<int64_t>(a.N) * a.H * a.splits + slot0;
    part_m += slot0;
    float M = -INFINITY;
    for (int s = 0; s < used; ++s) M = fmaxf(M, part_m[s]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float L = 0.0f, A = 0.0f;
        for (int s = 0; s < used; ++s) {
            const float w = exp2f(part_m[s] - M);
            L = fmaf(part_l[s], w, L);
            A = fmaf(part_acc[static_cast<int64_t>(s) * D + d], w, A);
        }
        a.o[n * HD + static_cast<int64_t>(h) * D + d] = A / L;
    }
}

template <typename T>
int granule_for(int D) {
    switch (D) {
        case 32: return DecodeTile<T, 32>::kKeysPerStep;
        case 64: return DecodeTile<T, 64>::kKeysPerStep;
        case 96: return DecodeTile<T, 96>::kKeysPerStep;
        case 128: return DecodeTile<T, 128>::kKeysPerStep;
        case 256: return DecodeTile<T, 256>::kKeysPerStep;
        default: return 0;
    }
}

template <typename T>
void launch_decode_kernels(const AttentionDecodeArgs& a, cudaStream_t stream) {
    launch_overlapped(decode_append_kernel<T>, dim3(static_cast<unsigned>(a.N)), dim3(256), 0, stream, a);
    const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.H), static_cast<unsigned>(a.N));
    switch (a.D) {
        case 32: launch_overlapped(decode_attention_kernel<T, 32>, grid, dim3(kDecodeThreads), 0, stream, a); break;
        case 64: launch_overlapped(decode_attention_kernel<T, 64>, grid, dim3(kDecodeThreads), 0, stream, a); break;
        case 96: launch_overlapped(decode_attention_kernel<T, 96>, grid, dim3(kDecodeThreads), 0, stream, a); break;
        case 128: launch_overlapped(decode_attention_kernel<T, 128>, grid, dim3(kDecodeThreads), 0, stream, a); break;
        case 256: launch_overlapped(decode_attention_kernel<T, 256>, grid, dim3(kDecodeThreads), 0, stream, a); break;
        default: throw Error("attention decode: head dim " + std::to_string(a.D) + " is not built");
    }
    launch_overlapped(decode_combine_kernel, dim3(static_cast<unsigned>(a.H), static_cast<unsigned>(a.N)),
                      dim3(std::min(256, (a.D + 31) / 32 * 32)), 0, stream, a, granule_for<T>(a.D));
}

}  // namespace

size_t kv_dtype_bytes(KvDtype dtype) { return dtype == KvDtype::BF16 ? sizeof(bf16) : sizeof(float); }

bool attention_decode_supports(int D) { return granule_for<float>(D) > 0; }

int attention_decode_granule(int D, KvDtype dtype) {
    const int g = dtype == KvDtype::BF16 ? granule_for<bf16>(D) : granule_for<float>(D);
    if (g == 0) throw Error("attention decode: head dim " + std::to_string(D) + " is not built (32, 64, 96, 128, 256)");
    return g;
}

int attention_decode_splits(int N, int H, int64_t max_keys, int num_sms) {
    constexpr int kCtasPerSm = 4;         // resident decode CTAs per SM (≈ 100 registers × 128 threads)
    constexpr int64_t kMinKeys = 256;     // a shorter range costs more in its partial than it reads
    const int64_t heads = std::max<int64_t>(1, static_cast<int64_t>(N) * H);
    const int64_t fill = (static_cast<int64_t>(std::max(num_sms, 1)) * kCtasPerSm + heads - 1) / heads;
    const int64_t by_length = (std::max<int64_t>(max_keys, 1) + kMinKeys - 1) / kMinKeys;
    return static_cast<int>(std::clamp<int64_t>(std::min(fill, by_length), 1, 1024));
}

size_t attention_decode_workspace_floats(int N, int H, int D, int splits) {
    const size_t heads = static_cast<size_t>(N) * H;
    return heads * D + heads * splits * (static_cast<size_t>(D) + 2);
}

void launch_attention_decode(const AttentionDecodeArgs& a, cudaStream_t stream) {
    if (a.N == 0) return;
    if (!attention_decode_supports(a.D) || a.N < 0 || a.H <= 0 || a.N > 65535 || a.H > 65535 || a.splits < 1 ||
        a.splits > 65535)
        throw Error("attention decode: unsupported shape (N " + std::to_string(a.N) + ", H " + std::to_string(a.H) +
                    ", D " + std::to_string(a.D) + ", splits " + std::to_string(a.splits) +
                    "); head dims 32, 64, 96, 128, 256");
    if (!a.q || !a.k || !a.v || !a.k_caches || !a.v_caches || !a.positions || !a.theta || !a.o || !a.workspace)
        throw Error("attention decode: a device pointer is missing");
    if (a.dtype == KvDtype::BF16)
        launch_decode_kernels<bf16>(a, stream);
    else
        launch_decode_kernels<float>(a, stream);
}

// ---- prefill -----------------------------------------------------------------------------------

namespace {

constexpr int kPrefillThreads = 256;
constexpr int kScoreColumns = 8;  // S rows padded to a multiple: 16-byte rows for the bf16 P over them

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The workspace: the rotated queries head-major (H, T, D) in the cache dtype, then the scores of
// one block of rows (H, rows, ld) in fp32, which the softmax overwrites with P.
struct PrefillLayout {
    size_t q_bytes, s_offset, total;
};
PrefillLayout prefill_layout(int T, int H, int D, int64_t pos0, int block_rows, KvDtype dtype) {
    const size_t q_bytes = static_cast<size_t>(T) * H * D * kv_dtype_bytes(dtype);
    const size_t s_offset = static_cast<size_t>(round_up(static_cast<int64_t>(q_bytes), 256));
    const size_t rows = static_cast<size_t>(std::min(std::max(block_rows, 1), std::max(T, 1)));
    const size_t ld = static_cast<size_t>(round_up(pos0 + T, kScoreColumns));
    return {q_bytes, s_offset, s_offset + static_cast<size_t>(H) * rows * ld * sizeof(float)};
}

// One thread per (t, h, pair i): rotate at pos0 + t, append k and v, q to (H, T, D).
template <typename T>
__global__ void prefill_append_kernel(AttentionPrefillArgs a, T* q_heads) {
    const int half = a.D / 2;
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(a.T) * a.H * half) return;
    const int i = static_cast<int>(idx % half), h = static_cast<int>((idx / half) % a.H);
    const int t = static_cast<int>(idx / (static_cast<int64_t>(half) * a.H));
    const int64_t HD = static_cast<int64_t>(a.H) * a.D, pos = a.pos0 + t;
    const int i0 = h * a.D + i, i1 = i0 + half;
    const Turn turn(static_cast<float>(pos) * a.theta[i]);
    float q0, q1;
    append_pair(a.q + t * HD, a.k + t * HD, a.v + t * HD, i0, i1, turn, static_cast<T*>(a.k_cache) + pos * HD,
                static_cast<T*>(a.v_cache) + pos * HD, q0, q1);
    T* q_row = q_heads + (static_cast<int64_t>(h) * a.T + t) * a.D;
    q_row[i] = store_as<T>(q0);
    q_row[i + half] = store_as<T>(q1);
}

// Grid (rows, H): row i of the block holds the query at position first_keys − 1 + i, which sees
// keys [0, first_keys + i). Writes P = softmax over those keys and 0 over the rest of [0, Lk),
// P of type P over the row's own bytes (bf16: the first half of them).
template <typename P>
__global__ void __launch_bounds__(kPrefillThreads)
prefill_softmax_kernel(float* S, int64_t ld, int rows, int64_t first_keys, int64_t Lk) {
    __shared__ float s_reduce[32];
    const int i = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    float* s = S + (static_cast<int64_t>(h) * rows + i) * ld;
    const int64_t valid = std::min(first_keys + i, Lk);
    float m = -INFINITY, l = 0.0f;  // this thread's running max and Σ exp(s − m)
    for (int64_t j = tid; j < valid; j += blockDim.x) {
        const float x = s[j];
        if (x > m) {
            l = l * expf(m - x) + 1.0f;
            m = x;
        } else {
            l += expf(x - m);
        }
    }
    const float M = block_max(m, s_reduce, -INFINITY);  // finite: every row sees key 0
    const float L = block_sum(m == -INFINITY ? 0.0f : l * expf(m - M), s_reduce);
    const float inv = 1.0f / L;
    P* p = reinterpret_cast<P*>(s);
    for (int64_t j0 = 0; j0 < Lk; j0 += blockDim.x) {
        const int64_t j = j0 + tid;
        const float x = j < valid ? s[j] : 0.0f;
        // bf16 P of columns < j0 + blockDim lies in bytes of S columns < (j0 + blockDim)/2: read already
        if constexpr (sizeof(P) < sizeof(float)) __syncthreads();
        if (j < Lk) p[j] = store_as<P>(j < valid ? expf(x - M) * inv : 0.0f);
    }
}

// Row-major C_b (M, N) = alpha · A_b (M, K) · op(B_b) for bf16 A, B and fp32 C (see gemm.h).
void gemm_bf16_strided_batched(cublasHandle_t handle, bool trans_b, int M, int N, int K, float alpha, const bf16* A,
                               int lda, int64_t stride_a, const bf16* B, int ldb, int64_t stride_b, float* C, int ldc,
                               int64_t stride_c, int batch) {
    const float beta = 0.0f;
    RETNET_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, N, M, K,
                                                   &alpha, B, CUDA_R_16BF, ldb, stride_b, A, CUDA_R_16BF, lda,
                                                   stride_a, &beta, C, CUDA_R_32F, ldc, stride_c, batch,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Query rows [r0, r0 + rows) of every head: S = scale·Q·Kᵀ over the Lk keys they can see, the
// masked softmax, O = P·V into the output rows.
template <typename T>
void prefill_block(cublasHandle_t cublas, const AttentionPrefillArgs& a, const T* q_heads, float* S, int r0,
                   int rows, cudaStream_t stream) {
    const int64_t Lk64 = a.pos0 + r0 + rows, ld64 = round_up(Lk64, kScoreColumns);
    const int Lk = static_cast<int>(Lk64), ld = static_cast<int>(ld64), HD = a.H * a.D;
    const T* q_block = q_heads + static_cast<int64_t>(r0) * a.D;
    const T* K = static_cast<const T*>(a.k_cache);
    const T* V = static_cast<const T*>(a.v_cache);
    float* O = a.o + static_cast<int64_t>(r0) * HD;
    const int64_t s_stride = static_cast<int64_t>(rows) * ld, q_stride = static_cast<int64_t>(a.T) * a.D;
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(a.H));
    if constexpr (sizeof(T) == sizeof(float)) {
        gemm_strided_batched(cublas, false, true, rows, Lk, a.D, a.scale, q_block, a.D, q_stride, K, HD, a.D, 0.0f, S,
                             ld, s_stride, a.H);
        prefill_softmax_kernel<float><<<grid, kPrefillThreads, 0, stream>>>(S, ld64, rows, a.pos0 + r0 + 1, Lk64);
        RETNET_CUDA_CHECK_LAUNCH();
        gemm_strided_batched(cublas, false, false, rows, a.D, Lk, 1.0f, S, ld, s_stride, V, HD, a.D, 0.0f, O, HD,
                             a.D, a.H);
    } else {
        gemm_bf16_strided_batched(cublas, true, rows, Lk, a.D, a.scale, q_block, a.D, q_stride, K, HD, a.D, S, ld,
                                  s_stride, a.H);
        prefill_softmax_kernel<bf16><<<grid, kPrefillThreads, 0, stream>>>(S, ld64, rows, a.pos0 + r0 + 1, Lk64);
        RETNET_CUDA_CHECK_LAUNCH();
        // P's rows start where S's did: ld and stride count twice as many bf16 as floats
        gemm_bf16_strided_batched(cublas, false, rows, a.D, Lk, 1.0f, reinterpret_cast<const bf16*>(S), 2 * ld,
                                  2 * s_stride, V, HD, a.D, O, HD, a.D, a.H);
    }
}

template <typename T>
void run_prefill(cublasHandle_t cublas, const AttentionPrefillArgs& a, cudaStream_t stream) {
    const PrefillLayout layout = prefill_layout(a.T, a.H, a.D, a.pos0, a.block_rows, a.dtype);
    T* q_heads = static_cast<T*>(a.workspace);
    float* S = reinterpret_cast<float*>(static_cast<char*>(a.workspace) + layout.s_offset);
    const int64_t pairs = static_cast<int64_t>(a.T) * a.H * (a.D / 2);
    prefill_append_kernel<T><<<ceil_div(pairs, kPrefillThreads), kPrefillThreads, 0, stream>>>(a, q_heads);
    RETNET_CUDA_CHECK_LAUNCH();
    for (int r0 = 0; r0 < a.T; r0 += a.block_rows)
        prefill_block<T>(cublas, a, q_heads, S, r0, std::min(a.block_rows, a.T - r0), stream);
}

void check_prefill_args(const AttentionPrefillArgs& a) {
    const auto shape = [&] {
        return " (T " + std::to_string(a.T) + ", H " + std::to_string(a.H) + ", D " + std::to_string(a.D) + ", pos0 " +
               std::to_string(a.pos0) + ", capacity " + std::to_string(a.capacity) + ", block_rows " +
               std::to_string(a.block_rows) + ")";
    };
    if (a.T < 0 || a.H <= 0 || a.D <= 0 || a.D % 2 != 0 || a.block_rows < 1 || a.pos0 < 0 || a.H > 65535 ||
        static_cast<int64_t>(a.H) * a.D > (1 << 30) || a.pos0 + a.T > (int64_t{1} << 30))
        throw Error("attention prefill: unsupported shape" + shape());
    if (a.pos0 + a.T > a.capacity) throw Error("attention prefill: the KV cache is too small" + shape());
    if (!a.q || !a.k || !a.v || !a.k_cache || !a.v_cache || !a.theta || !a.o || !a.workspace)
        throw Error("attention prefill: a device pointer is missing");
    const size_t need = attention_prefill_workspace_bytes(a.T, a.H, a.D, a.pos0, a.block_rows, a.dtype);
    if (a.workspace_bytes < need)
        throw Error("attention prefill: workspace of " + std::to_string(a.workspace_bytes) + " bytes, needs " +
                    std::to_string(need) + shape());
}

}  // namespace

size_t attention_prefill_workspace_bytes(int T, int H, int D, int64_t pos0, int block_rows, KvDtype dtype) {
    return prefill_layout(T, H, D, pos0, block_rows, dtype).total;
}

int attention_prefill_block_rows(int T, int H, int D, int64_t pos0, KvDtype dtype, size_t budget_bytes) {
    const PrefillLayout one = prefill_layout(T, H, D, pos0, 1, dtype);
    const size_t per_row = one.total - one.s_offset;
    const int64_t fit = budget_bytes > one.s_offset ? static_cast<int64_t>((budget_bytes - one.s_offset) / per_row) : 1;
    int64_t rows = std::clamp<int64_t>(fit, 1, std::max(T, 1));
    if (rows >= 64 && rows < T) rows = rows / 64 * 64;  // whole tensor-core tiles
    return static_cast<int>(rows);
}

void launch_attention_prefill(cublasHandle_t cublas, const AttentionPrefillArgs& a, cudaStream_t stream) {
    check_prefill_args(a);
    if (a.T == 0) return;
    RETNET_CUBLAS_CHECK(cublasSetStream(cublas, stream));
    if (a.dtype == KvDtype::BF16)
        run_prefill<bf16>(cublas, a, stream);
    else
        run_prefill<float>(cublas, a, stream);
}


}  // namespace retnet::cuda
