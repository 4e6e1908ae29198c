// SPDX-License-Identifier: GPL-3.0-or-later
// float → bf16 conversion (the bf16 GEMM path). The layer's element-wise ops, forward beside
// backward and shared with the trainer, are in embedding.cu, norms.cu, rotary.cu and glu.cu.
#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"

namespace retnet::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void float_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace

void launch_float_to_bf16(const float* d_src, __nv_bfloat16* d_dst, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    float_to_bf16_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(d_src, d_dst, n);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda
