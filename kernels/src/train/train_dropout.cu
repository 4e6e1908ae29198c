// SPDX-License-Identifier: GPL-3.0-or-later
// Training dropout on the device: the CPU trainer's masks (retnet/dropout_mask.h, the same
// function compiled for both), recomputed from (base, i) in the backward instead of stored.
#include "../common.cuh"
#include "../cuda_check.h"
#include "retnet/dropout_mask.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float keep_factor(uint64_t base, int64_t i, double p, float scale) {
    return train::dropout_drops(base, i, p) ? 0.0f : scale;
}

__global__ void dropout_residual_add_kernel(const float* residual, const float* branch, float* out, int64_t n,
                                            double p, uint64_t base, float scale) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    // The CPU's x += branch·keep: the product rounded first, then the sum (no fused multiply-add).
    const float kept = __fmul_rn(branch[i], keep_factor(base, i, p, scale));
    out[i] = __fadd_rn(residual[i], kept);
}

__global__ void dropout_scale_kernel(const float* in, float* out, int64_t n, double p, uint64_t base, float scale) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = in[i] * keep_factor(base, i, p, scale);
}

}  // namespace

void dropout_residual_add(const float* residual, const float* branch, float* out, int64_t n, const DropoutSite& site,
                          cudaStream_t stream) {
    if (n == 0) return;
    dropout_residual_add_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(residual, branch, out, n, site.p,
                                                                               site.base, site.scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void dropout_scale(const float* in, float* out, int64_t n, const DropoutSite& site, cudaStream_t stream) {
    if (n == 0) return;
    dropout_scale_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(in, out, n, site.p, site.base, site.scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::train_kernels
