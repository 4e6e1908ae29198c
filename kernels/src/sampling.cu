// SPDX-License-Identifier: GPL-3.0-or-later
// On-device sampling of one token from a row of logits: greedy, temperature, top-k and top-p, with
// the uniform random number drawn by the host (so a seeded host RNG reproduces a run). One block
// of 1024 threads. Candidates (top-k, or the 1024 most likely tokens for a nucleus) are found by
// bisecting a value threshold, gathered into shared memory and bitonic-sorted; the short serial
// tail (softmax over ≤ 1024 candidates, nucleus cut, inverse CDF) runs on one thread.
#include <cfloat>

#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"

namespace retnet::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kSlots = 2048;  // candidate slots (ties at the threshold may add a few beyond K)
constexpr int kMaxCandidates = 1024;

// Larger logit first; among equal logits the smaller id first.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* logits, int V, float temperature, int top_k,
                                                          float top_p, float u, int32_t* out) {
    __shared__ float s_val[kSlots];
    __shared__ int s_id[kSlots];
    __shared__ float s_red[32];
    __shared__ int s_count;
    const int tid = threadIdx.x;

    float local_max = -FLT_MAX, local_min = FLT_MAX;
    int local_arg = V;
    for (int i = tid; i < V; i += kThreads) {
        const float l = logits[i];
        if (l > local_max) { local_max = l; local_arg = i; }
        local_min = fminf(local_min, l);
    }
    const float max_logit = block_max(local_max, s_red, -FLT_MAX);
    if (temperature <= 0.0f) {  // greedy: the smallest index holding the maximum
        int arg = local_max == max_logit ? local_arg : V;
        for (int offset = 16; offset > 0; offset >>= 1) arg = min(arg, __shfl_xor_sync(0xffffffffu, arg, offset));
        __syncthreads();
        if ((tid & 31) == 0) s_id[tid >> 5] = arg;
        __syncthreads();
        if (tid == 0) {
            int best = V;
            for (int w = 0; w < kThreads / 32; ++w) best = min(best, s_id[w]);
            *out = best;
        }
        return;
    }
    const float min_logit = -block_max(-local_min, s_red, -FLT_MAX);
    const float inv_temp = 1.0f / temperature;

    const bool full = top_k <= 0 && top_p >= 1.0f && V > kMaxCandidates;
    if (full) {  // plain temperature sampling over the whole vocabulary: inverse CDF in index order
        const int seg = (V + kThreads - 1) / kThreads;
        const int begin = tid * seg, end = min(V, begin + seg);
        double part = 0.0;
        for (int i = begin; i < end; ++i) part += exp(static_cast<double>((logits[i] - max_logit) * inv_temp));
        __shared__ double s_part[kThreads];
        s_part[tid] = part;
        __syncthreads();
        if (tid == 0) {
            double Z = 0.0;
            for (int t = 0; t < kThreads; ++t) Z += s_part[t];
            const double target = static_cast<double>(u) * Z;
            double cum = 0.0;
            int chosen = V - 1;
            for (int t = 0; t < kThreads && chosen == V - 1; ++t) {
                if (cum + s_part[t] <= target) {
                    cum += s_part[t];
                    continue;
                }
                for (int i = t * seg; i < min(V, (t + 1) * seg); ++i) {
                    cum += exp(static_cast<double>((logits[i] - max_logit) * inv_temp));
                    if (cum > target) { chosen = i; break; }
                }
                break;
            }
            *out = chosen;
        }
        return;
    }

    const int K = min(min(top_k > 0 ? top_k : kMaxCandidates, kMaxCandidates), V);
    // Largest threshold τ with count(l >= τ) >= K, by bisection on the value.
    float lo = min_logit, hi = max_logit;
    for (int iter = 0; iter < 40 && lo < hi; ++iter) {
        const float mid = lo + 0.5f * (hi - lo);
        if (mid <= lo || mid >= hi) break;
        int count = 0;
        for (int i = tid; i < V; i += kThreads) count += logits[i] >= mid;
        count = block_sum(count, reinterpret_cast<int*>(s_red));
        if (count >= K) lo = mid;
        else hi = mid;
    }
    for (int i = tid; i < kSlots; i += kThreads) {
        s_val[i] = -FLT_MAX;
        s_id[i] = INT_MAX;
    }
    if (tid == 0) s_count = 0;
    __syncthreads();
    for (int i = tid; i < V; i += kThreads) {
        const float l = logits[i];
        if (l >= lo) {
            const int slot = atomicAdd(&s_count, 1);
            if (slot < kSlots) {
                s_val[slot] = l;
                s_id[slot] = i;
            }
        }
    }
    __syncthreads();
    // Bitonic sort of the slots, best first.
    for (int size = 2; size <= kSlots; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < kSlots; i += kThreads) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool ascending_block = (i & size) == 0;  // "ascending" = best first here
                    const bool swap = ascending_block ? before(s_val[j], s_id[j], s_val[i], s_id[i])
                                                      : before(s_val[i], s_id[i], s_val[j], s_id[j]);
                    if (swap) {
                        const float tv = s_val[i];
                        s_val[i] = s_val[j];
                        s_val[j] = tv;
                        const int ti = s_id[i];
                        s_id[i] = s_id[j];
                        s_id[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
    if (tid == 0) {
        const int n = min(K, min(s_count, kSlots));
        double Z = 0.0;
        for (int i = 0; i < n; ++i) Z += exp(static_cast<double>((s_val[i] - max_logit) * inv_temp));
        // Nucleus: the shortest prefix whose probability reaches top_p.
        int keep = n;
        if (top_p < 1.0f) {
            double cum = 0.0;
            for (int i = 0; i < n; ++i) {
                cum += exp(static_cast<double>((s_val[i] - max_logit) * inv_temp));
                if (cum >= static_cast<double>(top_p) * Z) {
                    keep = i + 1;
                    break;
                }
            }
        }
        double Zk = 0.0;
        for (int i = 0; i < keep; ++i) Zk += exp(static_cast<double>((s_val[i] - max_logit) * inv_temp));
        const double target = static_cast<double>(u) * Zk;
        double cum = 0.0;
        int chosen = s_id[keep - 1];
        for (int i = 0; i < keep; ++i) {
            cum += exp(static_cast<double>((s_val[i] - max_logit) * inv_temp));
            if (cum > target) {
                chosen = s_id[i];
                break;
            }
        }
        *out = chosen;
    }
}

}  // namespace

void launch_sample_top_k_top_p(const float* d_logits, int V, float temperature, int top_k, float top_p, float u,
                               int32_t* d_token, cudaStream_t stream) {
    if (V <= 0) throw Error("sampling: empty logits");
    sample_kernel<<<1, kThreads, 0, stream>>>(d_logits, V, temperature, top_k, top_p, u, d_token);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda
