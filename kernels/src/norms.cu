// SPDX-License-Identifier: GPL-3.0-or-later
// RMSNorm and fla's per-head RMSNorm + swish gate, forward (inference and training) beside the
// backward, and the fixed-order column sums of their weight gradients.
#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"

namespace retnet::cuda::layer_kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 128;
// Rows of one RMSNorm-backward block (sharing its dw partial). Each row waits on a block-wide sum, so
// the blocks must be many for their loads to keep the memory busy: 32 rows a block (256 blocks at
// 8192 rows) ran at a fifth of the bandwidth.
constexpr int kNormRowsPerBlock = 8;
constexpr int kGatePairsPerBlock = 64;  // (row, head) pairs of one head-norm backward block
// Fewer head-norm pairs than this (under a warp-per-pair block per SM) get a block each.
constexpr int64_t kBlockPerPairBelow = 1024;

// One block per row. A bf16 y is the float result rounded (a bf16 GEMM's input, bit for bit
// launch_float_to_bf16 of the float y).
template <typename Out>
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, int dim, float eps, Out* y, float* rstd) {
    __shared__ double shared[32];
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t r = blockIdx.x;
    const float* xr = x + r * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
    ss = block_sum(ss, shared);
    const float s = static_cast<float>(1.0 / sqrt(ss / dim + static_cast<double>(eps)));
    if (rstd && threadIdx.x == 0) rstd[r] = s;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) store_as(y + r * dim + i, xr[i] * s * (w ? w[i] : 1.0f));
}

// The trainer's rows (dim a multiple of 128, at most 128·kMaxRunsPerLane, 16-byte aligned): one warp
// per row, the row held in registers as runs of four floats (one 16-byte load each, the row read
// once), summed by the warp alone (no block barrier). The same per-element arithmetic as the kernel
// above; the squares summed in another order (double: rstd agrees far below float rounding).
constexpr int kMaxRunsPerLane = 16;
// Whether rmsnorm_forward_warp_kernel takes these rows (its pointers are restrict: y apart from x).
template <typename Out>
bool rmsnorm_warp_fits(const float* x, const Out* y, int dim) {
    return dim % 128 == 0 && dim <= 128 * kMaxRunsPerLane && aligned16(x) && aligned16(y) &&
           static_cast<const void*>(x) != static_cast<const void*>(y);
}
template <typename Out>
__global__ void rmsnorm_forward_warp_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t rows,
                                            int dim, float eps, Out* __restrict__ y, float* __restrict__ rstd) {
    wait_for_previous_grid();
    allow_next_grid();
    const int lane = threadIdx.x & 31;
    const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return;
    const int runs = dim / 128;  // of four floats, per lane: lane's run k starts at 4·(lane + 32k)
    const float4* xr = reinterpret_cast<const float4*>(x + r * dim);
    float4 v[kMaxRunsPerLane];
    double ss = 0.0;
#pragma unroll
    for (int k = 0; k < kMaxRunsPerLane; ++k)
        if (k < runs) v[k] = __ldg(xr + lane + 32 * k);
#pragma unroll
    for (int k = 0; k < kMaxRunsPerLane; ++k)
        if (k < runs)
            ss += static_cast<double>(v[k].x) * v[k].x + static_cast<double>(v[k].y) * v[k].y +
                  static_cast<double>(v[k].z) * v[k].z + static_cast<double>(v[k].w) * v[k].w;
    ss = warp_sum(ss);
    const float s = static_cast<float>(1.0 / sqrt(ss / dim + static_cast<double>(eps)));
    if (rstd && lane == 0) rstd[r] = s;
#pragma unroll
    for (int k = 0; k < kMaxRunsPerLane; ++k) {
        if (k >= runs) break;
        const int i = 4 * (lane + 32 * k);
        const float4 wi = w ? make_float4(w[i], w[i + 1], w[i + 2], w[i + 3]) : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        store4_as(y + r * dim + i, v[k].x * s * wi.x, v[k].y * s * wi.y, v[k].z * s * wi.z, v[k].w * s * wi.w);
    }
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

// Where pair p = (row, head) of y starts, and where its o does (o rows when heads_T = 0, else
// head-major with heads_Tp rows per head).
__device__ __forceinline__ void gate_offsets(int64_t pair, int heads_T, int heads_Tp, int H, int Dv, int64_t& off,
                                             int64_t& o_off) {
    off = pair * Dv;  // (row·H + h)·Dv: rows hold their heads contiguously
    o_off = off;
    if (heads_T > 0) {
        const int64_t row = pair / H, b = row / heads_T, t = row % heads_T;
        o_off = ((b * H + pair % H) * heads_Tp + t) * Dv;
    }
}

// y = o·rsqrt(mean(o²) + eps)·w ⊙ silu(g) for one pair, its sum of squares already reduced. In:
// float, or bf16 (the cuda-bf16 trainer keeps o and g in bf16), widened to float.
// Out: float, or bf16 (the float result rounded: a bf16 GEMM's input).
template <typename In, typename Out>
__device__ __forceinline__ void gate_write(const In* o, const In* g, const float* w, int64_t off, int64_t o_off,
                                           int Dv, double ss, float eps, int first, int stride, Out* y) {
    const float s = static_cast<float>(1.0 / sqrt(ss / Dv + static_cast<double>(eps)));
    for (int i = first; i < Dv; i += stride)
        store_as(y + off + i, load_as_float(o[o_off + i]) * s * (w ? w[i] : 1.0f) * silu(load_as_float(g[off + i])));
}

template <typename In>
__device__ __forceinline__ double squares(const In* o, int first, int stride, int Dv) {
    double ss = 0.0;
    for (int i = first; i < Dv; i += stride) {
        const double x = load_as_float(o[i]);
        ss += x * x;
    }
    return ss;
}

// Many pairs (training, prefill): one warp per pair.
template <typename In, typename Out>
__global__ void head_norm_gate_forward_warp_kernel(const In* o, int heads_T, int heads_Tp, const In* g,
                                                   const float* w, int64_t pairs, int H, int Dv, float eps, Out* y,
                                                   float* rstd) {
    wait_for_previous_grid();
    allow_next_grid();
    const int lane = threadIdx.x & 31;
    const int64_t pair = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    if (pair >= pairs) return;
    int64_t off, o_off;
    gate_offsets(pair, heads_T, heads_Tp, H, Dv, off, o_off);
    const double ss = warp_sum(squares(o + o_off, lane, 32, Dv));
    if (rstd && lane == 0) rstd[pair] = static_cast<float>(1.0 / sqrt(ss / Dv + static_cast<double>(eps)));
    gate_write(o, g, w, off, o_off, Dv, ss, eps, lane, 32, y);
}

// The same with each lane's elements in runs of eight (16-byte accesses; Dv a multiple of 8, o, g and
// y 16-byte aligned): for bf16 o, g and y the one-element lanes moved 64 bytes a warp per access and
// ran at half the bandwidth. The same float arithmetic per element; the squares are summed in
// another order (double, so rstd is the same to far below float rounding).
// Whether head_norm_gate_forward_warp8_kernel takes these buffers (16-byte accesses).
template <typename In, typename Out>
bool gate_by8(const In* o, const In* g, const Out* y, int Dv) {
    return Dv % 8 == 0 && aligned16(o) && aligned16(g) && aligned16(y);
}
template <typename In, typename Out>
__global__ void head_norm_gate_forward_warp8_kernel(const In* __restrict__ o, int heads_T, int heads_Tp,
                                                    const In* __restrict__ g, const float* __restrict__ w,
                                                    int64_t pairs, int H, int Dv, float eps, Out* __restrict__ y,
                                                    float* __restrict__ rstd) {
    wait_for_previous_grid();
    allow_next_grid();
    const int lane = threadIdx.x & 31;
    const int64_t pair = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    if (pair >= pairs) return;
    int64_t off, o_off;  // g and y rows; o's
    gate_offsets(pair, heads_T, heads_Tp, H, Dv, off, o_off);
    double ss = 0.0;
    for (int c = lane * 8; c < Dv; c += 256) {
        float ov[8];
        load8_as_float(o + o_off + c, ov);
#pragma unroll
        for (int k = 0; k < 8; ++k) ss += static_cast<double>(ov[k]) * ov[k];
    }
    ss = warp_sum(ss);
    const float s = static_cast<float>(1.0 / sqrt(ss / Dv + static_cast<double>(eps)));
    if (rstd && lane == 0) rstd[pair] = s;
    for (int c = lane * 8; c < Dv; c += 256) {
        float ov[8], gv[8], yv[8];
        load8_as_float(o + o_off + c, ov);
        load8_as_float(g + off + c, gv);
#pragma unroll
        for (int k = 0; k < 8; ++k) yv[k] = ov[k] * s * (w ? w[c + k] : 1.0f) * silu(gv[k]);
        store8_as(y + off + c, yv);
    }
}

// Few pairs (a decoding step): one block per pair, so they still spread over the GPU.
template <typename In, typename Out>
__global__ void head_norm_gate_forward_block_kernel(const In* o, int heads_T, int heads_Tp, const In* g,
                                                    const float* w, int H, int Dv, float eps, Out* y, float* rstd) {
    __shared__ double shared[32];
    wait_for_previous_grid();
    allow_next_grid();
    const int64_t pair = blockIdx.x;
    int64_t off, o_off;
    gate_offsets(pair, heads_T, heads_Tp, H, Dv, off, o_off);
    const double ss = block_sum(squares(o + o_off, threadIdx.x, blockDim.x, Dv), shared);
    if (rstd && threadIdx.x == 0) rstd[pair] = static_cast<float>(1.0 / sqrt(ss / Dv + static_cast<double>(eps)));
    gate_write(o, g, w, off, o_off, Dv, ss, eps, threadIdx.x, blockDim.x, y);
}

// kGatePairsPerBlock pairs per block, one warp at a time per pair. Each warp sums its pairs' dw in
// its own row of shared memory (lane i owns columns i + 32k); the warps' rows are then added in
// warp order into the block's row of dw_partials. A pair's o, dy and g are loaded into registers
// before anything is stored when Dv ≤ 32·kMaxPerLane and a multiple of 32 (kPerLane > 0: all of a
// warp's loads in flight at once, each silu formed once), else re-read in a second pass
// (kPerLane = 0); the same sums in the same order either way. In and DG (dg's type): as gate_write.
constexpr int kMaxPerLane = 16;
template <int kPerLane, typename In, typename DG>
__global__ void head_norm_gate_backward_kernel(const In* __restrict__ o, const In* __restrict__ g,
                                               const float* __restrict__ w, const float* __restrict__ rstd,
                                               const float* __restrict__ dy, int64_t pairs, int Dv,
                                               float* __restrict__ d_o, DG* __restrict__ dg,
                                               float* __restrict__ dw_partials) {
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
        if constexpr (kPerLane > 0) {
            float ov[kPerLane], gv[kPerLane], dyv[kPerLane];  // of lane + 32k
#pragma unroll
            for (int k = 0; k < kPerLane; ++k) {
                const int64_t i = off + lane + 32 * k;
                ov[k] = load_as_float(o[i]);
                gv[k] = load_as_float(g[i]);
                dyv[k] = dy[i];
            }
            float xhat[kPerLane], dxhat[kPerLane];  // o·s and dy·silu(g)·w
#pragma unroll
            for (int k = 0; k < kPerLane; ++k) {
                const int i = lane + 32 * k;
                const float wi = w ? w[i] : 1.0f;
                xhat[k] = ov[k] * s;
                const float dn = dyv[k] * silu(gv[k]);
                store_as(dg + off + i, dyv[k] * xhat[k] * wi * silu_grad(gv[k]));
                if (dw_partials) my_dw[i] += dn * xhat[k];
                dxhat[k] = dn * wi;
                dot += static_cast<double>(dxhat[k]) * xhat[k];
            }
            const float mean = static_cast<float>(warp_sum(dot) / Dv);
#pragma unroll
            for (int k = 0; k < kPerLane; ++k) d_o[off + lane + 32 * k] = s * (dxhat[k] - xhat[k] * mean);
        } else {
            for (int i = lane; i < Dv; i += 32) {
                const float xhat = load_as_float(o[off + i]) * s, gi = load_as_float(g[off + i]);
                const float wi = w ? w[i] : 1.0f;
                const float dn = dy[off + i] * silu(gi);
                store_as(dg + off + i, dy[off + i] * xhat * wi * silu_grad(gi));
                if (dw_partials) my_dw[i] += dn * xhat;
                dot += static_cast<double>(dn * wi) * xhat;
            }
            const float mean = static_cast<float>(warp_sum(dot) / Dv);
            for (int i = lane; i < Dv; i += 32) {
                const float xhat = load_as_float(o[off + i]) * s;
                const float dxhat = dy[off + i] * silu(load_as_float(g[off + i])) * (w ? w[i] : 1.0f);
                d_o[off + i] = s * (dxhat - xhat * mean);
            }
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

// One block per column: out[i] += Σ_p partials[p][i]; each thread sums a fixed stride of parts,
// then the block's fixed shuffle tree adds the threads' sums.
__global__ void sum_partials_kernel(const float* partials, int64_t n_parts, int cols, float* out) {
    __shared__ double shared[32];
    const int i = static_cast<int>(blockIdx.x);
    double sum = 0.0;
    for (int64_t p = threadIdx.x; p < n_parts; p += blockDim.x) sum += static_cast<double>(partials[p * cols + i]);
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) out[i] += static_cast<float>(sum);
}

}  // namespace

template <typename Out>
void rmsnorm_forward(const float* x, const float* w, int64_t rows, int dim, float eps, Out* y, float* rstd,
                     cudaStream_t stream) {
    if (rows <= 0) return;
    if (rmsnorm_warp_fits(x, y, dim))
        rmsnorm_forward_warp_kernel<Out><<<ceil_div(rows * 32, kThreads), kThreads, 0, stream>>>(x, w, rows, dim, eps, y,
                                                                                                 rstd);
    else
        rmsnorm_forward_kernel<Out><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, dim, eps, y, rstd);
    RETNET_CUDA_CHECK_LAUNCH();
}
template void rmsnorm_forward(const float*, const float*, int64_t, int, float, float*, float*, cudaStream_t);
template void rmsnorm_forward(const float*, const float*, int64_t, int, float, __nv_bfloat16*, float*, cudaStream_t);

int64_t rmsnorm_backward_parts(int64_t rows) { return ceil_div(rows, kNormRowsPerBlock); }

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t rows, int dim,
                      float* dx, float* dw, float* dw_partials, cudaStream_t stream) {
    if (rows == 0) return;
    rmsnorm_backward_kernel<<<ceil_div(rows, kNormRowsPerBlock), kThreads, sizeof(float) * dim, stream>>>(
        x, w, rstd, dy, rows, dim, dx, dw ? dw_partials : nullptr);
    RETNET_CUDA_CHECK_LAUNCH();
    if (dw) sum_partials(dw_partials, rmsnorm_backward_parts(rows), dim, dw, stream);
}

namespace {
template <typename In, typename Out>
void gate_forward(const In* o, int heads_T, int heads_Tp, const In* g, const float* w, int64_t rows, int H, int Dv,
                  float eps, Out* y, float* rstd, cudaStream_t stream) {
    const int64_t pairs = rows * H;
    if (pairs <= 0) return;
    if (pairs < kBlockPerPairBelow)
        head_norm_gate_forward_block_kernel<In, Out><<<static_cast<unsigned>(pairs), kThreads, 0, stream>>>(
            o, heads_T, heads_Tp, g, w, H, Dv, eps, y, rstd);
    else
        head_norm_gate_forward_warp_kernel<In, Out><<<ceil_div(pairs * 32, kThreads), kThreads, 0, stream>>>(
            o, heads_T, heads_Tp, g, w, pairs, H, Dv, eps, y, rstd);
    RETNET_CUDA_CHECK_LAUNCH();
}
}  // namespace

void head_norm_gate_forward(const HeadNormInput& o, const float* g, const float* w, int64_t rows, int H, int Dv,
                            float eps, float* y, float* rstd, cudaStream_t stream) {
    gate_forward(o.o, o.heads_T, o.heads_Tp, g, w, rows, H, Dv, eps, y, rstd, stream);
}

template <typename Out>
void head_norm_gate_forward(const __nv_bfloat16* o, const __nv_bfloat16* g, const float* w, int64_t rows, int H,
                            int Dv, float eps, Out* y, float* rstd, cudaStream_t stream) {
    const int64_t pairs = rows * H;
    if (pairs >= kBlockPerPairBelow && gate_by8(o, g, y, Dv)) {
        head_norm_gate_forward_warp8_kernel<__nv_bfloat16, Out><<<ceil_div(pairs * 32, kThreads), kThreads, 0, stream>>>(
            o, 0, 0, g, w, pairs, H, Dv, eps, y, rstd);
        RETNET_CUDA_CHECK_LAUNCH();
        return;
    }
    gate_forward(o, 0, 0, g, w, rows, H, Dv, eps, y, rstd, stream);
}
template void head_norm_gate_forward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, int64_t, int, int, float,
                                     float*, float*, cudaStream_t);
template void head_norm_gate_forward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, int64_t, int, int, float,
                                     __nv_bfloat16*, float*, cudaStream_t);

int64_t head_norm_gate_backward_parts(int64_t rows, int H) { return ceil_div(rows * H, kGatePairsPerBlock); }

template <typename In, typename DG>
void head_norm_gate_backward(const In* o, const In* g, const float* w, const float* rstd, const float* dy,
                             int64_t rows, int H, int Dv, float* d_o, DG* dg, float* dw, float* dw_partials,
                             cudaStream_t stream) {
    const int64_t pairs = rows * H;
    if (pairs == 0) return;
    const unsigned blocks = ceil_div(pairs, kGatePairsPerBlock);
    const size_t shared = sizeof(float) * (kThreads / 32) * Dv;
    float* partials = dw ? dw_partials : nullptr;
    // the register-held pair for the widths models have (Dv 64 … 512), the two-pass loop otherwise
    const auto launch = [&](auto kernel) {
        kernel<<<blocks, kThreads, shared, stream>>>(o, g, w, rstd, dy, pairs, Dv, d_o, dg, partials);
    };
    switch (Dv % 32 == 0 ? Dv / 32 : 0) {
        case 2: launch(head_norm_gate_backward_kernel<2, In, DG>); break;
        case 4: launch(head_norm_gate_backward_kernel<4, In, DG>); break;
        case 8: launch(head_norm_gate_backward_kernel<8, In, DG>); break;
        case kMaxPerLane: launch(head_norm_gate_backward_kernel<kMaxPerLane, In, DG>); break;
        default: launch(head_norm_gate_backward_kernel<0, In, DG>); break;
    }
    RETNET_CUDA_CHECK_LAUNCH();
    if (dw) sum_partials(dw_partials, head_norm_gate_backward_parts(rows, H), Dv, dw, stream);
}

template void head_norm_gate_backward(const float*, const float*, const float*, const float*, const float*, int64_t,
                                      int, int, float*, float*, float*, float*, cudaStream_t);
template void head_norm_gate_backward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, const float*,
                                      const float*, int64_t, int, int, float*, float*, float*, float*, cudaStream_t);
template void head_norm_gate_backward(const __nv_bfloat16*, const __nv_bfloat16*, const float*, const float*,
                                      const float*, int64_t, int, int, float*, __nv_bfloat16*, float*, float*,
                                      cudaStream_t);

void sum_partials(const float* partials, int64_t n_parts, int cols, float* out, cudaStream_t stream) {
    if (n_parts == 0 || cols == 0) return;
    sum_partials_kernel<<<static_cast<unsigned>(cols), kReduceThreads, 0, stream>>>(partials, n_parts, cols, out);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::layer_kernels

namespace retnet::cuda {

// The inference launchers let each kernel start as the previous one ends (common.cuh).
namespace {
// Many rows (a prefill) a warp each, 16-byte loads (rmsnorm_forward_warp_kernel); few rows (a
// decoding step) a block each, so that they still spread over the GPU.
constexpr int64_t kWarpPerRowFrom = 1024;
template <typename Out>
void launch_rmsnorm_as(const float* d_x, const float* d_weight, Out* d_y, int rows, int cols, float eps,
                       cudaStream_t stream) {
    using namespace layer_kernels;
    if (rows <= 0) return;
    if (rows >= kWarpPerRowFrom && rmsnorm_warp_fits(d_x, d_y, cols))
        launch_overlapped(rmsnorm_forward_warp_kernel<Out>, dim3(ceil_div(static_cast<int64_t>(rows) * 32, kThreads)),
                          dim3(kThreads), 0, stream, d_x, d_weight, static_cast<int64_t>(rows), cols, eps, d_y, nullptr);
    else
        launch_overlapped(rmsnorm_forward_kernel<Out>, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream,
                          d_x, d_weight, cols, eps, d_y, nullptr);
}
}  // namespace

void launch_rmsnorm(const float* d_x, const float* d_weight, float* d_y, int rows, int cols, float eps,
                    cudaStream_t stream) {
    launch_rmsnorm_as(d_x, d_weight, d_y, rows, cols, eps, stream);
}

void launch_rmsnorm_bf16(const float* d_x, const float* d_weight, __nv_bfloat16* d_y, int rows, int cols, float eps,
                         cudaStream_t stream) {
    launch_rmsnorm_as(d_x, d_weight, d_y, rows, cols, eps, stream);
}

namespace {
template <typename Out>
void launch_head_norm_gate_as(const float* d_o, const float* d_g, const float* d_weight, Out* d_y, int T, int Tp, int H,
                              int Dv, float eps, cudaStream_t stream) {
    using namespace layer_kernels;
    const int64_t pairs = static_cast<int64_t>(T) * H;
    if (pairs <= 0) return;
    if (pairs < kBlockPerPairBelow)
        launch_overlapped(head_norm_gate_forward_block_kernel<float, Out>, dim3(static_cast<unsigned>(pairs)),
                          dim3(kThreads), 0, stream, d_o, T, Tp, d_g, d_weight, H, Dv, eps, d_y, nullptr);
    else if (gate_by8(d_o, d_g, d_y, Dv))
        launch_overlapped(head_norm_gate_forward_warp8_kernel<float, Out>, dim3(ceil_div(pairs * 32, kThreads)),
                          dim3(kThreads), 0, stream, d_o, T, Tp, d_g, d_weight, pairs, H, Dv, eps, d_y, nullptr);
    else
        launch_overlapped(head_norm_gate_forward_warp_kernel<float, Out>, dim3(ceil_div(pairs * 32, kThreads)),
                          dim3(kThreads), 0, stream, d_o, T, Tp, d_g, d_weight, pairs, H, Dv, eps, d_y, nullptr);
}
}  // namespace

void launch_head_norm_gate(const float* d_o, const float* d_g, const float* d_weight, float* d_y, int T, int Tp,
                           int H, int Dv, float eps, cudaStream_t stream) {
    launch_head_norm_gate_as(d_o, d_g, d_weight, d_y, T, Tp, H, Dv, eps, stream);
}
void launch_head_norm_gate(const float* d_o, const float* d_g, const float* d_weight, __nv_bfloat16* d_y, int T, int Tp,
                           int H, int Dv, float eps, cudaStream_t stream) {
    launch_head_norm_gate_as(d_o, d_g, d_weight, d_y, T, Tp, H, Dv, eps, stream);
}

}  // namespace retnet::cuda
