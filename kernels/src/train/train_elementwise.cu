// SPDX-License-Identifier: GPL-3.0-or-later
// Training kernels outside the retention: embedding, RMSNorm, rotary + layout changes, the fla
// output gate, SwiGLU, cross-entropy, gradient norm and AdamW — forward and backward.
// Row reductions (norms, softmax sums) accumulate in double: the kernels are memory-bound, and
// the wider sum keeps them at float rounding of the CPU trainer's double reference.
#include <algorithm>

#include "../common.cuh"
#include "../cuda_check.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kNormRowsPerBlock = 32;   // rows of one RMSNorm-backward block (shares its dw partial)
constexpr int kGatePairsPerBlock = 64;  // (row, head) pairs of one head-norm block

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoidf_(x); }
__device__ __forceinline__ float silu_grad(float x) {
    const float s = sigmoidf_(x);
    return s * (1.0f + x * (1.0f - s));
}

__global__ void embedding_forward_kernel(const int32_t* tokens, const float* embed, float* x, int d) {
    const int64_t r = blockIdx.x;
    const float* row = embed + static_cast<int64_t>(tokens[r]) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) x[r * d + i] = row[i];
}

// One block per row.
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, int dim, float eps, float* y,
                                       float* rstd) {
    __shared__ double shared[32];
    const int64_t r = blockIdx.x;
    const float* xr = x + r * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    ss = block_sum(ss, shared);
    const float s = static_cast<float>(1.0 / sqrt(ss / dim + static_cast<double>(eps)));
    if (threadIdx.x == 0) rstd[r] = s;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) y[r * dim + i] = xr[i] * s * (w ? w[i] : 1.0f);
}

// kNormRowsPerBlock rows per block; each thread owns columns threadIdx.x + k·blockDim.x, so it
// sums their dw over the block's rows alone, in row order, then writes the block's row of
// dw_partials (when not null).
__global__ void rmsnorm_backward_kernel(const float* x, const float* w, const float* rstd, const float* dy,
                                        int64_t rows, int dim, float* dx, float* dw_partials) {
    extern __shared__ float dw_partial[];  // (dim)
    __shared__ double shared[32];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dw_partial[i] = 0.0f;
    const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kNormRowsPerBlock;
    const int64_t r1 = min(rows, r0 + kNormRowsPerBlock);
    for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x + r * dim;
        const float* dyr = dy + r * dim;
        const float s = rstd[r];
        double dot = 0.0;  // Σ dxhat·xhat
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float xhat = xr[i] * s;
            dot += static_cast<double>(dyr[i] * (w ? w[i] : 1.0f)) * xhat;
            dw_partial[i] += dyr[i] * xhat;
        }
        const float mean = static_cast<float>(block_sum(dot, shared) / dim);
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float xhat = xr[i] * s;
            dx[r * dim + i] += s * (dyr[i] * (w ? w[i] : 1.0f) - xhat * mean);
        }
    }
    if (dw_partials)
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            dw_partials[static_cast<int64_t>(blockIdx.x) * dim + i] = dw_partial[i];
}

// One thread per (b, t < Tp, h, i < Dk/2). direction +1: rows → heads; −1: heads → rows (transpose).
template <bool kForward>
__global__ void rotary_kernel(const float* src, const float* cos_sin, float* dst, int B, int T, int Tp,
                              int H, int Dk, float scale) {
    const int half = Dk / 2;
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= static_cast<int64_t>(B) * Tp * H * half) return;
    const int i = static_cast<int>(idx % half);
    const int h = static_cast<int>((idx / half) % H);
    const int t = static_cast<int>((idx / (static_cast<int64_t>(half) * H)) % Tp);
    const int b = static_cast<int>(idx / (static_cast<int64_t>(half) * H * Tp));
    const int64_t head_off = ((static_cast<int64_t>(b) * H + h) * Tp + t) * Dk;
    const int64_t row_off = (static_cast<int64_t>(b) * T + t) * H * Dk + static_cast<int64_t>(h) * Dk;
    if (kForward) {
        if (t >= T) {
            dst[head_off + i] = 0.0f;
            dst[head_off + i + half] = 0.0f;
            return;
        }
        const float c = cos_sin[(static_cast<int64_t>(t) * half + i) * 2];
        const float s = cos_sin[(static_cast<int64_t>(t) * half + i) * 2 + 1];
        const float a = src[row_off + i], bb = src[row_off + i + half];
        dst[head_off + i] = (a * c - bb * s) * scale;
        dst[head_off + i + half] = (a * s + bb * c) * scale;
    } else {
        if (t >= T) return;
        const float c = cos_sin[(static_cast<int64_t>(t) * half + i) * 2];
        const float s = cos_sin[(static_cast<int64_t>(t) * half + i) * 2 + 1];
        const float a = src[head_off + i], bb = src[head_off + i + half];
        dst[row_off + i] = (a * c + bb * s) * scale;
        dst[row_off + i + half] = (bb * c - a * s) * scale;
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

// One warp per (row, head) pair.
__global__ void head_norm_gate_forward_kernel(const float* o, const float* g, const float* w, int64_t pairs,
                                              int H, int Dv, float eps, float* y, float* rstd) {
    const int lane = threadIdx.x & 31;
    const int64_t pair = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    if (pair >= pairs) return;
    const int64_t off = pair * Dv;  // (row·H + h)·Dv: rows hold their heads contiguously
    double ss = 0.0;
    for (int i = lane; i < Dv; i += 32) ss += static_cast<double>(o[off + i]) * o[off + i];
    ss = warp_sum(ss);
    const float s = static_cast<float>(1.0 / sqrt(ss / Dv + static_cast<double>(eps)));
    if (lane == 0) rstd[pair] = s;
    for (int i = lane; i < Dv; i += 32) y[off + i] = o[off + i] * s * (w ? w[i] : 1.0f) * silu(g[off + i]);
}

// kGatePairsPerBlock pairs per block, one warp at a time per pair. Each warp sums its pairs' dw in
// its own row of shared memory (lane i owns columns i + 32k); the warps' rows are then added in
// warp order into the block's row of dw_partials.
__global__ void head_norm_gate_backward_kernel(const float* o, const float* g, const float* w,
                                               const float* rstd, const float* dy, int64_t pairs, int Dv,
                                               float* d_o, float* dg, float* dw_partials) {
    extern __shared__ float warp_dw[];  // (n_warps, Dv)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float* my_dw = warp_dw + static_cast<int64_t>(warp) * Dv;
    for (int i = lane; i < Dv; i += 32) my_dw[i] = 0.0f;
    const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kGatePairsPerBlock;
    const int64_t p1 = min(pairs, p0 + kGatePairsPerBlock);
    for (int64_t pair = p0 + warp; pair < p1; pair += n_warps) {
        const int64_t off = pair * Dv;
        const float s = rstd[pair];
        double dot = 0.0;
        for (int i = lane; i < Dv; i += 32) {
            const float xhat = o[off + i] * s;
            const float wi = w ? w[i] : 1.0f;
            const float dn = dy[off + i] * silu(g[off + i]);
            dg[off + i] = dy[off + i] * xhat * wi * silu_grad(g[off + i]);
            if (dw_partials) my_dw[i] += dn * xhat;
            dot += static_cast<double>(dn * wi) * xhat;
        }
        const float mean = static_cast<float>(warp_sum(dot) / Dv);
        for (int i = lane; i < Dv; i += 32) {
            const float xhat = o[off + i] * s;
            const float dxhat = dy[off + i] * silu(g[off + i]) * (w ? w[i] : 1.0f);
            d_o[off + i] = s * (dxhat - xhat * mean);
        }
    }
    if (!dw_partials) return;
    __syncthreads();
    for (int i = threadIdx.x; i < Dv; i += blockDim.x) {
        float sum = 0.0f;
        for (int k = 0; k < n_warps; ++k) sum += warp_dw[static_cast<int64_t>(k) * Dv + i];
        dw_partials[static_cast<int64_t>(blockIdx.x) * Dv + i] = sum;
    }
}

__global__ void swiglu_forward_kernel(const float* a, const float* b, int64_t n, float* h) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) h[i] = silu(a[i]) * b[i];
}

__global__ void swiglu_backward_kernel(const float* a, const float* b, const float* dh, int64_t n, float* da,
                                       float* db) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    da[i] = dh[i] * b[i] * silu_grad(a[i]);
    db[i] = dh[i] * silu(a[i]);
}

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

__global__ void clip_kernel(float* g, int64_t n, const double* sum_sq, double max_norm) {
    const double norm = sqrt(*sum_sq);
    if (!(max_norm > 0.0 && norm > max_norm)) return;
    const float scale = static_cast<float>(max_norm / (norm + 1e-12));
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        g[i] *= scale;
}

// The CPU trainer's update, operation for operation (train/optimizer.cpp).
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, const uint8_t* decays, int64_t n,
                             AdamWScalars s) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float gi = g[i];
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

void embedding_forward(const int32_t* tokens, const float* embed, float* x, int64_t rows, int d,
                       cudaStream_t stream) {
    if (rows == 0) return;
    embedding_forward_kernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(tokens, embed, x, d);
    RETNET_CUDA_CHECK_LAUNCH();
}

void rmsnorm_forward(const float* x, const float* w, int64_t rows, int dim, float eps, float* y, float* rstd,
                     cudaStream_t stream) {
    if (rows == 0) return;
    rmsnorm_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, dim, eps, y, rstd);
    RETNET_CUDA_CHECK_LAUNCH();
}

int64_t rmsnorm_backward_parts(int64_t rows) { return ceil_div(rows, kNormRowsPerBlock); }

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t rows, int dim,
                      float* dx, float* dw, float* dw_partials, cudaStream_t stream) {
    if (rows == 0) return;
    rmsnorm_backward_kernel<<<ceil_div(rows, kNormRowsPerBlock), kThreads, sizeof(float) * dim, stream>>>(
        x, w, rstd, dy, rows, dim, dx, dw ? dw_partials : nullptr);
    RETNET_CUDA_CHECK_LAUNCH();
    if (dw) sum_partials(dw_partials, rmsnorm_backward_parts(rows), dim, dw, stream);
}

void rotary_rows_to_heads(const float* src, const float* cos_sin, float* dst, int B, int T, int Tp, int H,
                          int Dk, float scale, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * Tp * H * (Dk / 2);
    if (n == 0) return;
    rotary_kernel<true><<<grid_for(n), kThreads, 0, stream>>>(src, cos_sin, dst, B, T, Tp, H, Dk, scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void rotary_heads_to_rows_transposed(const float* src, const float* cos_sin, float* dst, int B, int T, int Tp,
                                     int H, int Dk, float scale, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * Tp * H * (Dk / 2);
    if (n == 0) return;
    rotary_kernel<false><<<grid_for(n), kThreads, 0, stream>>>(src, cos_sin, dst, B, T, Tp, H, Dk, scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void rows_to_heads(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * H * Tp * D;
    if (n == 0) return;
    layout_kernel<true><<<grid_for(n), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

void heads_to_rows(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(B) * H * Tp * D;
    if (n == 0) return;
    layout_kernel<false><<<grid_for(n), kThreads, 0, stream>>>(src, dst, B, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

void head_norm_gate_forward(const float* o, const float* g, const float* w, int64_t rows, int H, int Dv,
                            float eps, float* y, float* rstd, cudaStream_t stream) {
    const int64_t pairs = rows * H;
    if (pairs == 0) return;
    head_norm_gate_forward_kernel<<<ceil_div(pairs * 32, kThreads), kThreads, 0, stream>>>(o, g, w, pairs, H, Dv,
                                                                                          eps, y, rstd);
    RETNET_CUDA_CHECK_LAUNCH();
}

int64_t head_norm_gate_backward_parts(int64_t rows, int H) { return ceil_div(rows * H, kGatePairsPerBlock); }

void head_norm_gate_backward(const float* o, const float* g, const float* w, const float* rstd, const float* dy,
                             int64_t rows, int H, int Dv, float* d_o, float* dg, float* dw, float* dw_partials,
                             cudaStream_t stream) {
    const int64_t pairs = rows * H;
    if (pairs == 0) return;
    head_norm_gate_backward_kernel<<<ceil_div(pairs, kGatePairsPerBlock), kThreads,
                                     sizeof(float) * (kThreads / 32) * Dv, stream>>>(o, g, w, rstd, dy, pairs, Dv,
                                                                                    d_o, dg, dw ? dw_partials : nullptr);
    RETNET_CUDA_CHECK_LAUNCH();
    if (dw) sum_partials(dw_partials, head_norm_gate_backward_parts(rows, H), Dv, dw, stream);
}

void swiglu_forward(const float* a, const float* b, int64_t n, float* h, cudaStream_t stream) {
    if (n == 0) return;
    swiglu_forward_kernel<<<grid_for(n), kThreads, 0, stream>>>(a, b, n, h);
    RETNET_CUDA_CHECK_LAUNCH();
}

void swiglu_backward(const float* a, const float* b, const float* dh, int64_t n, float* da, float* db,
                     cudaStream_t stream) {
    if (n == 0) return;
    swiglu_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(a, b, dh, n, da, db);
    RETNET_CUDA_CHECK_LAUNCH();
}

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
           const AdamWScalars& s, cudaStream_t stream) {
    if (n == 0) return;
    adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(params, grad, m, v, decays, n, s);
    RETNET_CUDA_CHECK_LAUNCH();
}

void update_average(float* average, const float* params, int64_t n, float keep, cudaStream_t stream) {
    if (n == 0) return;
    update_average_kernel<<<grid_for(n), kThreads, 0, stream>>>(average, params, n, keep);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::train_kernels
