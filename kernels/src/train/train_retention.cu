// SPDX-License-Identifier: GPL-3.0-or-later
// The element-wise parts of chunked retention for training (the products are cuBLAS batched
// GEMMs in cuda_trainer.cpp): the causal decay mask, per-row decay scaling of a chunk, and the
// scans that carry the (Dk, Dv) state forward over chunks and its gradient backward.
#include "../common.cuh"
#include "../cuda_check.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;

// Matrix m = (b·H + h)·n_chunks + c belongs to head h.
__device__ __forceinline__ int head_of(int64_t m, int n_chunks, int H) {
    return static_cast<int>((m / n_chunks) % H);
}

__global__ void decay_mask_kernel(float* A, const float* decay, int64_t n, int n_chunks, int H, int C) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const int j = static_cast<int>(idx % C);
    const int i = static_cast<int>((idx / C) % C);
    const int64_t m = idx / (static_cast<int64_t>(C) * C);
    const int h = head_of(m, n_chunks, H);
    A[idx] = j <= i ? A[idx] * decay[h * (C + 1) + (i - j)] : 0.0f;
}

__global__ void scale_rows_kernel(const float* src, float* dst, const float* decay, int64_t n, int n_chunks,
                                  int H, int C, int D, bool head) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    const int i = static_cast<int>((idx / D) % C);
    const int64_t m = idx / (static_cast<int64_t>(D) * C);
    const int h = head_of(m, n_chunks, H);
    dst[idx] = src[idx] * decay[h * (C + 1) + (head ? i + 1 : C - 1 - i)];
}

// One thread per (b·H + h, e): a sequential scan over the chunks.
__global__ void scan_forward_kernel(const float* contrib, float* states, const float* decay, int BH,
                                    int n_chunks, int H, int C, int E) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(BH) * E) return;
    const int e = static_cast<int>(idx % E);
    const int64_t bh = idx / E;
    const float gamma_c = decay[(bh % H) * (C + 1) + C];
    const int64_t base = bh * n_chunks * E + e;
    float s = 0.0f;
    states[base] = 0.0f;
    for (int c = 1; c < n_chunks; ++c) {
        s = gamma_c * s + contrib[base + static_cast<int64_t>(c - 1) * E];
        states[base + static_cast<int64_t>(c) * E] = s;
    }
}

__global__ void scan_backward_kernel(const float* contrib, float* after, const float* decay, int BH,
                                     int n_chunks, int H, int C, int E) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(BH) * E) return;
    const int e = static_cast<int>(idx % E);
    const int64_t bh = idx / E;
    const float gamma_c = decay[(bh % H) * (C + 1) + C];
    const int64_t base = bh * n_chunks * E + e;
    float g = 0.0f;
    after[base + static_cast<int64_t>(n_chunks - 1) * E] = 0.0f;
    for (int c = n_chunks - 1; c >= 1; --c) {
        g = contrib[base + static_cast<int64_t>(c) * E] + gamma_c * g;
        after[base + static_cast<int64_t>(c - 1) * E] = g;
    }
}

}  // namespace

void apply_decay_mask(float* A, const float* decay, int n_mats, int n_chunks, int H, int C, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(n_mats) * C * C;
    if (n == 0) return;
    decay_mask_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(A, decay, n, n_chunks, H, C);
    RETNET_CUDA_CHECK_LAUNCH();
}

void scale_chunk_rows(const float* src, float* dst, const float* decay, int n_mats, int n_chunks, int H, int C,
                      int D, RowDecay which, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(n_mats) * C * D;
    if (n == 0) return;
    scale_rows_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(src, dst, decay, n, n_chunks, H, C, D,
                                                                       which == RowDecay::Head);
    RETNET_CUDA_CHECK_LAUNCH();
}

void state_scan_forward(const float* contrib, float* states, const float* decay, int BH, int n_chunks, int H,
                        int C, int E, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(BH) * E;
    if (n == 0) return;
    scan_forward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(contrib, states, decay, BH, n_chunks, H,
                                                                         C, E);
    RETNET_CUDA_CHECK_LAUNCH();
}

void state_scan_backward(const float* contrib, float* after, const float* decay, int BH, int n_chunks, int H,
                         int C, int E, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(BH) * E;
    if (n == 0) return;
    scan_backward_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(contrib, after, decay, BH, n_chunks, H,
                                                                          C, E);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::train_kernels
