// SPDX-License-Identifier: GPL-3.0-or-later
// float → bf16 conversion (the bf16 GEMM path). The layer's element-wise ops, forward beside
// backward and shared with the trainer, are in embedding.cu, norms.cu, rotary.cu and glu.cu.
#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"

namespace retnet::cuda {

namespace {

constexpr int kThreads = 256;

// Four values a thread (16-byte loads, 8-byte stores) when both ends are aligned; the tail and
// unaligned buffers one at a time.
__global__ void float_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n, bool vectorized) {
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (!vectorized) {
        if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
        return;
    }
    const int64_t i4 = 4 * i;
    if (i4 + 4 <= n) {
        const float4 x = reinterpret_cast<const float4*>(src)[i];
        const __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
        reinterpret_cast<__nv_bfloat162*>(dst)[2 * i] = lo;
        reinterpret_cast<__nv_bfloat162*>(dst)[2 * i + 1] = hi;
    } else {
        for (int64_t e = i4; e < n; ++e) dst[e] = __float2bfloat16_rn(src[e]);
    }
}

}  // namespace

void launch_float_to_bf16(const float* d_src, __nv_bfloat16* d_dst, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    const bool vectorized = reinterpret_cast<uintptr_t>(d_src) % 16 == 0 && reinterpret_cast<uintptr_t>(d_dst) % 8 == 0;
    const int64_t threads = vectorized ? (n + 3) / 4 : n;
    launch_overlapped(float_to_bf16_kernel, dim3(ceil_div(threads, kThreads)), dim3(kThreads), 0, stream, d_src, d_dst, n,
                      vectorized);
}

}  // namespace retnet::cuda
