// SPDX-License-Identifier: GPL-3.0-or-later
// Training-only kernels: softmax cross-entropy (the gradient written over the logits), clipping by
// the global norm, AdamW and the weight average. The layer's ops, forward beside backward and
// shared with inference, are in ../embedding.cu, ../norms.cu, ../rotary.cu and ../glu.cu.
// Row reductions accumulate in double: the kernels are memory-bound, and the wider sum keeps them
// at float rounding of the CPU trainer's double reference.
#include <algorithm>

#include "../common.cuh"
#include "../cuda_check.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;

// One block per row.
__global__ void cross_entropy_kernel(float* logits, const int32_t* targets, int vocab, float* loss,
                                     bool with_gradient, float grad_scale) {
    __shared__ float shared_max[32];
    __shared__ double shared_sum[32];
    const int64_t r = blockIdx.x;
    float* x = logits + r * vocab;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx, shared_max, -INFINITY);
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += static_cast<double>(expf(x[i] - mx));
    sum = block_sum(sum, shared_sum);
    const double lse = static_cast<double>(mx) + log(sum);
    const int target = targets[r];
    __syncthreads();  // every thread has read x[target] before anyone overwrites it
    if (threadIdx.x == 0) loss[r] = static_cast<float>(lse - static_cast<double>(x[target]));
    __syncthreads();
    if (!with_gradient) return;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float p = static_cast<float>(exp(static_cast<double>(x[i]) - lse));
        x[i] = (p - (i == target ? 1.0f : 0.0f)) * grad_scale;
    }
}

// The factor clipping multiplies the gradient by, or 0 when it leaves the gradient as it is.
__device__ __forceinline__ float clip_scale(const double* sum_sq, double max_norm) {
    const double norm = sqrt(*sum_sq);
    return max_norm > 0.0 && norm > max_norm ? static_cast<float>(max_norm / (norm + 1e-12)) : 0.0f;
}

__global__ void clip_kernel(float* g, int64_t n, const double* sum_sq, double max_norm) {
    const float scale = clip_scale(sum_sq, max_norm);
    if (scale == 0.0f) return;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        g[i] *= scale;
}

// The CPU trainer's update, operation for operation (train/optimizer.cpp), from the gradient clipped
// by clip_kernel's factor when sum_sq is not null: the same float product, without its pass.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, const uint8_t* decays, int64_t n,
                             AdamWScalars s, const double* sum_sq, double max_norm) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float scale = sum_sq ? clip_scale(sum_sq, max_norm) : 0.0f;
    const float gi = scale != 0.0f ? g[i] * scale : g[i];
    const float mi = s.beta1 * m[i] + (1.0f - s.beta1) * gi;
    const float vi = s.beta2 * v[i] + (1.0f - s.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i];
    if (decays[i]) pi -= s.decay * pi;
    pi -= s.step_size * mi / (sqrtf(vi) * s.inv_sqrt_bc2 + s.eps);
    p[i] = pi;
}

// train/optimizer.cpp's update_average, operation for operation.
__global__ void update_average_kernel(float* average, const float* p, int64_t n, float keep) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) average[i] += (1.0f - keep) * (p[i] - average[i]);
}

unsigned grid_for(int64_t n) { return ceil_div(n, kThreads); }
// Grid-stride kernels: enough blocks to fill the GPU, not one per element.
unsigned stride_grid(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(1024, std::max<int64_t>(1, (n + kThreads - 1) / kThreads))); }

}  // namespace

void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int vocab, float* loss,
                   bool with_gradient, float grad_scale, cudaStream_t stream) {
    if (rows == 0) return;
    cross_entropy_kernel<<<static_cast<unsigned>(rows), vocab >= 4096 ? 512 : kThreads, 0, stream>>>(
        logits, targets, vocab, loss, with_gradient, grad_scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void clip_by_norm(float* g, int64_t n, const double* sum_sq, double max_norm, cudaStream_t stream) {
    if (n == 0 || !(max_norm > 0)) return;
    clip_kernel<<<stride_grid(n), kThreads, 0, stream>>>(g, n, sum_sq, max_norm);
    RETNET_CUDA_CHECK_LAUNCH();
}

void adamw(float* params, const float* grad, float* m, float* v, const uint8_t* decays, int64_t n,
           const AdamWScalars& s, const double* clip_sum_sq, double max_norm, cudaStream_t stream) {
    if (n == 0) return;
    adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(params, grad, m, v, decays, n, s, clip_sum_sq, max_norm);
    RETNET_CUDA_CHECK_LAUNCH();
}

void update_average(float* average, const float* params, int64_t n, float keep, cudaStream_t stream) {
    if (n == 0) return;
    update_average_kernel<<<grid_for(n), kThreads, 0, stream>>>(average, params, n, keep);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::train_kernels
