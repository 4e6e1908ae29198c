// SPDX-License-Identifier: GPL-3.0-or-later
// The FFN's gated linear unit h = act(a) ⊙ b (swish or gelu), forward beside backward.
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda::layer_kernels {

namespace {

constexpr int kThreads = 256;

// In: float, or bf16 (the cuda-bf16 trainer keeps a and b in bf16); the arithmetic is float. Out: float,
// or bf16 (the float result rounded: a bf16 GEMM's operand).
__device__ __forceinline__ float glu_value(float a, float b, bool gelu_act) { return (gelu_act ? gelu(a) : silu(a)) * b; }

template <typename In, typename Out>
__global__ void glu_forward_kernel(const In* a, const In* b, int64_t n, bool gelu_act, Out* h) {  // h may be a
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    store_as(h + i, glu_value(load_as_float(a[i]), load_as_float(b[i]), gelu_act));
}

// Eight elements per thread in 16-byte accesses (n a multiple of 8, the buffers 16-byte aligned, h not
// overlapping a or b): the scalar kernel's 2-byte bf16 accesses ran at under half the bandwidth.
template <typename In, typename Out>
__global__ void glu_forward8_kernel(const In* __restrict__ a, const In* __restrict__ b, int64_t n, bool gelu_act,
                                    Out* __restrict__ h) {
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    float av[8], bv[8], hv[8];
    load8_as_float(a + i, av);
    load8_as_float(b + i, bv);
#pragma unroll
    for (int k = 0; k < 8; ++k) hv[k] = glu_value(av[k], bv[k], gelu_act);
    store8_as(h + i, hv);
}

// h (rows, width) = act(a) ⊙ b where a and b are the two halves of each row of ab, rows `stride`
// floats apart (one GEMM's output of both weights): eight elements a thread, 16-byte accesses.
__global__ void glu_rows8_kernel(const float* __restrict__ ab, int64_t rows, int width, int64_t stride, bool gelu_act,
                                 __nv_bfloat16* __restrict__ h) {
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
    if (i >= rows * width) return;
    const int64_t r = i / width, j = i - r * width;
    const float* a = ab + r * stride + j;
    float av[8], bv[8], hv[8];
    load8_as_float(a, av);
    load8_as_float(a + width, bv);
#pragma unroll
    for (int k = 0; k < 8; ++k) hv[k] = glu_value(av[k], bv[k], gelu_act);
    store8_as(h + i, hv);
}

__device__ __forceinline__ void glu_gradient(float a, float b, float dh, bool gelu_act, float& da, float& db) {
    da = dh * b * (gelu_act ? gelu_grad(a) : silu_grad(a));
    db = dh * (gelu_act ? gelu(a) : silu(a));
}

template <typename In, typename Out>
__global__ void glu_backward_kernel(const In* __restrict__ a, const In* __restrict__ b, const float* __restrict__ dh,
                                    int64_t n, bool gelu_act, Out* __restrict__ da, Out* __restrict__ db) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float dai, dbi;
    glu_gradient(load_as_float(a[i]), load_as_float(b[i]), dh[i], gelu_act, dai, dbi);
    store_as(da + i, dai);
    store_as(db + i, dbi);
}

template <typename In, typename Out>
__global__ void glu_backward8_kernel(const In* __restrict__ a, const In* __restrict__ b, const float* __restrict__ dh,
                                     int64_t n, bool gelu_act, Out* __restrict__ da, Out* __restrict__ db) {
    const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    float av[8], bv[8], dhv[8], dav[8], dbv[8];
    load8_as_float(a + i, av);
    load8_as_float(b + i, bv);
    load8_as_float(dh + i, dhv);
#pragma unroll
    for (int k = 0; k < 8; ++k) glu_gradient(av[k], bv[k], dhv[k], gelu_act, dav[k], dbv[k]);
    store8_as(da + i, dav);
    store8_as(db + i, dbv);
}

}  // namespace

// Whether glu_forward8_kernel takes these buffers (its pointers are restrict: h apart from a and b).
template <typename In, typename Out>
bool glu_by8(const In* a, const In* b, const Out* h, int64_t n) {
    return n % 8 == 0 && aligned16(a) && aligned16(b) && aligned16(h) &&
           static_cast<const void*>(h) != static_cast<const void*>(a) &&
           static_cast<const void*>(h) != static_cast<const void*>(b);
}

template <typename In, typename Out>
void glu_forward(const In* a, const In* b, int64_t n, bool gelu_act, Out* h, cudaStream_t stream) {
    if (n <= 0) return;
    if (glu_by8(a, b, h, n))
        glu_forward8_kernel<In, Out><<<ceil_div(n / 8, kThreads), kThreads, 0, stream>>>(a, b, n, gelu_act, h);
    else
        glu_forward_kernel<In, Out><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(a, b, n, gelu_act, h);
    RETNET_CUDA_CHECK_LAUNCH();
}

template <typename In, typename Out>
void glu_backward(const In* a, const In* b, const float* dh, int64_t n, bool gelu_act, Out* da, Out* db,
                  cudaStream_t stream) {
    if (n <= 0) return;
    if (n % 8 == 0 && aligned16(a) && aligned16(b) && aligned16(dh) && aligned16(da) && aligned16(db))
        glu_backward8_kernel<In, Out><<<ceil_div(n / 8, kThreads), kThreads, 0, stream>>>(a, b, dh, n, gelu_act, da, db);
    else
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

void launch_glu(const float* d_a, const float* d_b, __nv_bfloat16* d_h, int64_t n, bool gelu, cudaStream_t stream) {
    using namespace layer_kernels;
    if (n <= 0) return;
    if (glu_by8(d_a, d_b, d_h, n))
        launch_overlapped(glu_forward8_kernel<float, __nv_bfloat16>, dim3(ceil_div(n / 8, kThreads)), dim3(kThreads), 0,
                          stream, d_a, d_b, n, gelu, d_h);
    else
        launch_overlapped(glu_forward_kernel<float, __nv_bfloat16>, dim3(ceil_div(n, kThreads)), dim3(kThreads), 0,
                          stream, d_a, d_b, n, gelu, d_h);
}

bool glu_rows_supports(int width, int64_t stride, const float* d_ab, const __nv_bfloat16* d_h) {
    return width > 0 && width % 8 == 0 && stride % 4 == 0 && stride >= 2 * static_cast<int64_t>(width) &&
           aligned16(d_ab) && aligned16(d_h);
}

void launch_glu_rows(const float* d_ab, int64_t rows, int width, int64_t stride, __nv_bfloat16* d_h, bool gelu,
                     cudaStream_t stream) {
    using namespace layer_kernels;
    if (rows <= 0) return;
    if (!glu_rows_supports(width, stride, d_ab, d_h))
        throw Error("glu rows: unsupported width " + std::to_string(width) + " or stride " + std::to_string(stride) +
                    " (internal error)");
    launch_overlapped(glu_rows8_kernel, dim3(ceil_div(rows * width / 8, kThreads)), dim3(kThreads), 0, stream, d_ab, rows,
                      width, stride, gelu, d_h);
}

}  // namespace retnet::cuda
