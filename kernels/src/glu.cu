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

// In: float, or bf16 (the cuda-bf16 trainer keeps a and b in bf16); the arithmetic is float. Out: float,
// or bf16 (the float result rounded: a bf16 GEMM's operand).
template <typename In, typename Out>
__global__ void glu_forward_kernel(const In* a, const In* b, int64_t n, bool gelu_act, Out* h) {  // h may be a
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = load_as_float(a[i]);
    store_as(h + i, (gelu_act ? gelu(x) : silu(x)) * load_as_float(b[i]));
}

template <typename In, typename Out>
__global__ void glu_backward_kernel(const In* __restrict__ a, const In* __restrict__ b, const float* __restrict__ dh,
                                    int64_t n, bool gelu_act, Out* __restrict__ da, Out* __restrict__ db) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = load_as_float(a[i]), dhi = dh[i];
    store_as(da + i, dhi * load_as_float(b[i]) * (gelu_act ? gelu_grad(x) : silu_grad(x)));
    store_as(db + i, dhi * (gelu_act ? gelu(x) : silu(x)));
}

}  // namespace

template <typename In, typename Out>
void glu_forward(const In* a, const In* b, int64_t n, bool gelu_act, Out* h, cudaStream_t stream) {
    if (n <= 0) return;
    glu_forward_kernel<In, Out><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, b, n, gelu_act, h);
    RETNET_CUDA_CHECK_LAUNCH();
}

template <typename In, typename Out>
void glu_backward(const In* a, const In* b, const float* dh, int64_t n, bool gelu_act, Out* da, Out* db,
                  cudaStream_t stream) {
    if (n <= 0) return;
    glu_backward_kernel<In, Out><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, b, dh, n, gelu_act, da, db);
    RETNET_CUDA_CHECK_LAUNCH();
}

template void glu_forward(const float*, const float*, int64_t, bool, float*, cudaStream_t);
template void glu_forward(const __nv_bfloat16*, const __nv_bfloat16*, int64_t, bool, float*, cudaStream_t);
template void glu_forward(const __nv_bfloat16*, const __nv_bfloat16*, int64_t, bool, __nv_bfloat16*, cudaStream_t);
template void glu_backward(const float*, const float*, const float*, int64_t, bool, float*, float*, cudaStream_t);
template void glu_backward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, int64_t, bool, float*, float*,
                           cudaStream_t);
template void glu_backward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, int64_t, bool, __nv_bfloat16*,
                           __nv_bfloat16*, cudaStream_t);

}  // namespace retnet::cuda::layer_kernels

namespace retnet::cuda {

void launch_glu(const float* d_a, const float* d_b, float* d_h, int64_t n, bool gelu, cudaStream_t stream) {
    if (n <= 0) return;
    launch_overlapped(layer_kernels::glu_forward_kernel<float, float>, dim3(ceil_div(n, layer_kernels::kThreads)),
                      dim3(layer_kernels::kThreads), 0, stream, d_a, d_b, n, gelu, d_h);
}

}  // namespace retnet::cuda
