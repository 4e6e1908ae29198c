// SPDX-License-Identifier: GPL-3.0-or-later
// Embedding, RMSNorm, rotary + head-major layout, per-head norm with the swish gate, GLU.
// Reductions accumulate in double: they are memory-bound, so the wider sum costs nothing visible
// and keeps the kernels within float rounding of the double reference.
#include <cmath>

#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"

namespace retnet::cuda {

namespace {

__global__ void embedding_kernel(const int32_t* tokens, const float* embed, float* x, int d,
                                 float scale) {
    const int t = blockIdx.x;
    const float* row = embed + static_cast<int64_t>(tokens[t]) * d;
    float* out = x + static_cast<int64_t>(t) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[i] = scale * row[i];
}

// One block per row.
__global__ void rmsnorm_kernel(const float* x, const float* weight, float* y, int cols, float eps) {
    __shared__ double shared[32];
    const float* in = x + static_cast<int64_t>(blockIdx.x) * cols;
    float* out = y + static_cast<int64_t>(blockIdx.x) * cols;
    double sum = 0.0;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) sum += static_cast<double>(in[i]) * in[i];
    sum = block_sum(sum, shared);
    const float inv_rms = static_cast<float>(1.0 / sqrt(sum / cols + static_cast<double>(eps)));
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = in[i] * inv_rms;
        out[i] = weight ? v * weight[i] : v;
    }
}

// One thread per (row t < Tp, head, pair i).
__global__ void rotary_kernel(const float* src, const float* theta, float* dst, int T, int Tp, int H,
                              int Dk, int64_t pos0, float scale, bool interleaved) {
    const int half = Dk / 2;
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t total = static_cast<int64_t>(Tp) * H * half;
    if (idx >= total) return;
    const int i = static_cast<int>(idx % half);
    const int h = static_cast<int>((idx / half) % H);
    const int t = static_cast<int>(idx / (static_cast<int64_t>(half) * H));
    const int i0 = interleaved ? 2 * i : i;
    const int i1 = interleaved ? 2 * i + 1 : i + half;
    float* out = dst + (static_cast<int64_t>(h) * Tp + t) * Dk;
    if (t >= T) {
        out[i0] = 0.0f;
        out[i1] = 0.0f;
        return;
    }
    const float* in = src + (static_cast<int64_t>(t) * H + h) * Dk;
    const float angle = static_cast<float>(pos0 + t) * theta[i];  // float32, as the references
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    const double a = static_cast<double>(in[i0]) * scale, b = static_cast<double>(in[i1]) * scale;
    out[i0] = static_cast<float>(a * c - b * s);
    out[i1] = static_cast<float>(b * c + a * s);
}

__global__ void to_head_major_kernel(const float* src, float* dst, int T, int Tp, int H, int D) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t total = static_cast<int64_t>(Tp) * H * D;
    if (idx >= total) return;
    const int i = static_cast<int>(idx % D);
    const int h = static_cast<int>((idx / D) % H);
    const int t = static_cast<int>(idx / (static_cast<int64_t>(D) * H));
    dst[(static_cast<int64_t>(h) * Tp + t) * D + i] =
        t < T ? src[(static_cast<int64_t>(t) * H + h) * D + i] : 0.0f;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// One block per (t, h).
__global__ void head_norm_gate_kernel(const float* o, const float* g, const float* weight, float* y,
                                      int Tp, int H, int Dv, float eps) {
    __shared__ double shared[32];
    const int t = blockIdx.x / H, h = blockIdx.x % H;
    const float* in = o + (static_cast<int64_t>(h) * Tp + t) * Dv;
    const int64_t row = (static_cast<int64_t>(t) * H + h) * Dv;
    double sum = 0.0;
    for (int i = threadIdx.x; i < Dv; i += blockDim.x) sum += static_cast<double>(in[i]) * in[i];
    sum = block_sum(sum, shared);
    const float inv_rms = static_cast<float>(1.0 / sqrt(sum / Dv + static_cast<double>(eps)));
    for (int i = threadIdx.x; i < Dv; i += blockDim.x) {
        float v = in[i] * inv_rms;
        if (weight) v *= weight[i];
        y[row + i] = v * silu(g[row + i]);
    }
}

__global__ void glu_kernel(const float* a, const float* b, float* h, int64_t n, bool gelu) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = a[i];
    const float act = gelu ? 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)) : silu(x);
    h[i] = act * b[i];
}

__global__ void float_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}

constexpr int kThreads = 256;

}  // namespace

void launch_embedding(const int32_t* d_tokens, const float* d_embed, float* d_x, int T, int d,
                      float scale, cudaStream_t stream) {
    embedding_kernel<<<T, kThreads, 0, stream>>>(d_tokens, d_embed, d_x, d, scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_rmsnorm(const float* d_x, const float* d_weight, float* d_y, int rows, int cols,
                    float eps, cudaStream_t stream) {
    if (rows <= 0) return;
    rmsnorm_kernel<<<rows, kThreads, 0, stream>>>(d_x, d_weight, d_y, cols, eps);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_rotary_to_head_major(const float* d_src, const float* d_theta, float* d_dst, int T,
                                 int Tp, int H, int Dk, int64_t pos0, float scale,
                                 bool interleaved, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(Tp) * H * (Dk / 2);
    if (total == 0) return;
    rotary_kernel<<<ceil_div(total, kThreads), kThreads, 0, stream>>>(d_src, d_theta, d_dst, T, Tp, H,
                                                                      Dk, pos0, scale, interleaved);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_to_head_major(const float* d_src, float* d_dst, int T, int Tp, int H, int D,
                          cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(Tp) * H * D;
    if (total == 0) return;
    to_head_major_kernel<<<ceil_div(total, kThreads), kThreads, 0, stream>>>(d_src, d_dst, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_head_norm_gate(const float* d_o, const float* d_g, const float* d_weight, float* d_y,
                           int T, int Tp, int H, int Dv, float eps, cudaStream_t stream) {
    if (T <= 0) return;
    head_norm_gate_kernel<<<T * H, 128, 0, stream>>>(d_o, d_g, d_weight, d_y, Tp, H, Dv, eps);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_glu(const float* d_a, const float* d_b, float* d_h, int64_t n, bool gelu,
                cudaStream_t stream) {
    if (n == 0) return;
    glu_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(d_a, d_b, d_h, n, gelu);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_float_to_bf16(const float* d_src, __nv_bfloat16* d_dst, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    float_to_bf16_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(d_src, d_dst, n);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda
