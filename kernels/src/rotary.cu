// SPDX-License-Identifier: GPL-3.0-or-later
// Rotary embedding into the head-major layout (both pair layouts, at absolute positions) and its
// transpose for the backward; the plain layout changes beside them.
#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"

namespace retnet::cuda::layer_kernels {

namespace {

constexpr int kThreads = 256;

// One thread per (b, t < Tp, h, pair i < Dk/2). Forward: rows → head-major, +angle, scale first
// (padding rows t ≥ T written as zeros). Backward: head-major → rows, −angle, scale last.
template <bool kForward>
__global__ void rotary_kernel(const float* src, float* dst, int B, int T, int Tp, int H, int Dk, RotaryArgs args) {
    const int half = Dk / 2;
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(B) * Tp * H * half) return;
    const int i = static_cast<int>(idx % half);
    const int h = static_cast<int>((idx / half) % H);
    const int t = static_cast<int>((idx / (static_cast<int64_t>(half) * H)) % Tp);
    const int b = static_cast<int>(idx / (static_cast<int64_t>(half) * H * Tp));
    const int i0 = args.interleaved ? 2 * i : i;
    const int i1 = args.interleaved ? 2 * i + 1 : i + half;
    const int64_t head_off = ((static_cast<int64_t>(b) * H + h) * Tp + t) * Dk;
    const int64_t row_off = (static_cast<int64_t>(b) * T + t) * H * Dk + static_cast<int64_t>(h) * Dk;
    if (t >= T) {
        if (kForward) {
            dst[head_off + i0] = 0.0f;
            dst[head_off + i1] = 0.0f;
        }
        return;
    }
    const float angle = static_cast<float>(args.pos0 + t) * args.theta[i];  // float32, as the references
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    if (kForward) {
        const double a = static_cast<double>(src[row_off + i0]) * args.scale;
        const double bb = static_cast<double>(src[row_off + i1]) * args.scale;
        dst[head_off + i0] = static_cast<float>(a * c - bb * s);
        dst[head_off + i1] = static_cast<float>(bb * c + a * s);
    } else {
        const double a = static_cast<double>(src[head_off + i0]), bb = static_cast<double>(src[head_off + i1]);
        dst[row_off + i0] = static_cast<float>((a * c + bb * s) * args.scale);
        dst[row_off + i1] = static_cast<float>((bb * c - a * s) * args.scale);
    }
}

// One thread per head-major element (b, h, t < Tp, i < D).
template <bool kToHeads>
__global__ void layout_kernel(const float* src, float* dst, int B, int T, int Tp, int H, int D) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(B) * H * Tp * D) return;
    const int i = static_cast<int>(idx % D);
    const int t = static_cast<int>((idx / D) % Tp);
    const int64_t bh = idx / (static_cast<int64_t>(D) * Tp);
    const int h = static_cast<int>(bh % H), b = static_cast<int>(bh / H);
    const int64_t row = (static_cast<int64_t>(b) * T + t) * H * D + static_cast<int64_t>(h) * D + i;
    if (kToHeads)
        dst[idx] = t < T ? src[row] : 0.0f;
    else if (t < T)
        dst[row] = src[idx];
}

}  // namespace

void rotary_forward(const float* src, float* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                    cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * Tp * H * (Dk / 2);
    if (n <= 0) return;
    rotary_kernel<true><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, Dk, args);
    RETNET_CUDA_CHECK_LAUNCH();
}

void rotary_backward(const float* src, float* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                     cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * Tp * H * (Dk / 2);
    if (n <= 0) return;
    rotary_kernel<false><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, Dk, args);
    RETNET_CUDA_CHECK_LAUNCH();
}

void rows_to_heads(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * H * Tp * D;
    if (n <= 0) return;
    layout_kernel<true><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

void heads_to_rows(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * H * Tp * D;
    if (n <= 0) return;
    layout_kernel<false><<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::layer_kernels

namespace retnet::cuda {

void launch_rotary_to_head_major(const float* d_src, const float* d_theta, float* d_dst, int T, int Tp, int H,
                                 int Dk, int64_t pos0, float scale, bool interleaved, cudaStream_t stream) {
    layer_kernels::rotary_forward(d_src, d_dst, 1, T, Tp, H, Dk, {d_theta, pos0, scale, interleaved}, stream);
}

void launch_to_head_major(const float* d_src, float* d_dst, int T, int Tp, int H, int D, cudaStream_t stream) {
    layer_kernels::rows_to_heads(d_src, d_dst, 1, T, Tp, H, D, stream);
}

}  // namespace retnet::cuda
