// SPDX-License-Identifier: GPL-3.0-or-later
// The FFN's gated linear unit h = act(a) ⊙ b (swish or gelu), forward beside backward.
#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"

namespace retnet::cuda::layer_kernels {

namespace {

constexpr int kThreads = 256;

__global__ void glu_forward_kernel(const float* a, const float* b, int64_t n, bool gelu_act, float* h) {
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = a[i];
    h[i] = (gelu_act ? gelu(x) : silu(x)) * b[i];
}

__global__ void glu_backward_kernel(const float* a, const float* b, const float* dh, int64_t n, bool gelu_act,
                                    float* da, float* db) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = a[i];
    da[i] = dh[i] * b[i] * (gelu_act ? gelu_grad(x) : silu_grad(x));
    db[i] = dh[i] * (gelu_act ? gelu(x) : silu(x));
}

}  // namespace

void glu_forward(const float* a, const float* b, int64_t n, bool gelu_act, float* h, cudaStream_t stream) {
    if (n <= 0) return;
    glu_forward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, b, n, gelu_act, h);
    RETNET_CUDA_CHECK_LAUNCH();
}

void glu_backward(const float* a, const float* b, const float* dh, int64_t n, bool gelu_act, float* da, float* db,
                  cudaStream_t stream) {
    if (n <= 0) return;
    glu_backward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, b, dh, n, gelu_act, da, db);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::layer_kernels

namespace retnet::cuda {

void launch_glu(const float* d_a, const float* d_b, float* d_h, int64_t n, bool gelu, cudaStream_t stream) {
    if (n <= 0) return;
    launch_overlapped(layer_kernels::glu_forward_kernel, dim3(ceil_div(n, layer_kernels::kThreads)),
                      dim3(layer_kernels::kThreads), 0, stream, d_a, d_b, n, gelu, d_h);
}

}  // namespace retnet::cuda
