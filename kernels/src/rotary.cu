// SPDX-License-Identifier: GPL-3.0-or-later
// Rotary embedding into the head-major layout (both pair layouts, at absolute positions) and its
// transpose for the backward; the plain layout changes beside them.
#include <cstdint>
#include <string>

#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda::layer_kernels {

namespace {

constexpr int kThreads = 256;

// The backward's rows may go out in bf16 (the input of a bf16 GEMM), and the forward's heads (the
// CUDA trainer's operands of bf16 retention products): rounded from the float the fp32 rows or heads
// would hold (store_as), so they equal those converted afterwards.
// The kernels index within one head of one sequence (blockIdx.y = b·H + h) in 32 bits: 64-bit
// divisions per element made them bound by integer arithmetic (1.3 TB/s at 8192 tokens).

// One thread per (t < Tp, pair i < Dk/2) of sequence blockIdx.y, turning that pair in each of the H
// heads: the double-precision sincos, which bounded the kernel when a thread turned one head, is
// taken once per position and pair. Forward: rows → head-major, +angle, scale first (padding rows
// t ≥ T written as zeros). Backward: head-major → rows, −angle, scale last.
template <bool kForward, typename Out>
__global__ void rotary_kernel(const float* __restrict__ src, Out* __restrict__ dst, int T, int Tp, int H, int Dk,
                              RotaryArgs args) {
    const int half = Dk / 2;
    const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= Tp * half) return;
    const int t = e / half, i = e - t * half;
    const int64_t b = blockIdx.y, head_stride = static_cast<int64_t>(Tp) * Dk;
    const int i0 = args.interleaved ? 2 * i : i;
    const int i1 = args.interleaved ? 2 * i + 1 : i + half;
    int64_t head_off = (b * H * Tp + t) * Dk;  // of head 0; head h is h·head_stride further
    int64_t row_off = (b * T + t) * H * Dk;    // of head 0; head h is h·Dk further
    if (t >= T) {
        if (kForward)
            for (int h = 0; h < H; ++h, head_off += head_stride) {
                store_as(dst + head_off + i0, 0.0f);
                store_as(dst + head_off + i1, 0.0f);
            }
        return;
    }
    const float angle = static_cast<float>(args.pos0 + t) * args.theta[i];  // float32, as the references
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
#pragma unroll 4
    for (int h = 0; h < H; ++h, head_off += head_stride, row_off += Dk) {
        if (kForward) {
            const double a = static_cast<double>(src[row_off + i0]) * args.scale;
            const double bb = static_cast<double>(src[row_off + i1]) * args.scale;
            store_as(dst + head_off + i0, static_cast<float>(a * c - bb * s));
            store_as(dst + head_off + i1, static_cast<float>(bb * c + a * s));
        } else {
            const double a = static_cast<double>(src[head_off + i0]), bb = static_cast<double>(src[head_off + i1]);
            store_as(dst + row_off + i0, static_cast<float>((a * c + bb * s) * args.scale));
            store_as(dst + row_off + i1, static_cast<float>((bb * c - a * s) * args.scale));
        }
    }
}

template <int Vec>
__device__ __forceinline__ void load_vec(const float* p, float (&v)[Vec]) {
    if constexpr (Vec == 4) {
        const float4 x = *reinterpret_cast<const float4*>(p);
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
    } else {
        v[0] = *p;
    }
}
// One thread per Vec elements of a head-major row (t < Tp) of head blockIdx.y (Vec 4: D a
// multiple of 4 and the buffers aligned, 16-byte loads).
template <bool kToHeads, int Vec, typename Out>
__global__ void layout_kernel(const float* src, Out* dst, int T, int Tp, int H, int D) {
    const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x) * Vec;
    if (e >= Tp * D) return;
    const int t = e / D, i = e - t * D;
    const int bh = static_cast<int>(blockIdx.y), h = bh % H, b = bh / H;
    const int64_t head = static_cast<int64_t>(bh) * Tp * D + e;
    const int64_t row = (static_cast<int64_t>(b) * T + t) * H * D + static_cast<int64_t>(h) * D + i;
    float v[Vec] = {};
    if (kToHeads) {
        if (t < T) load_vec(src + row, v);
        store_vec(dst + head, v);
    } else if (t < T) {
        load_vec(src + head, v);
        store_vec(dst + row, v);
    }
}

// The grid of one thread per `per_head` items of each of the B·H heads.
dim3 head_grid(int B, int H, int64_t per_head, const char* what) {
    if (static_cast<int64_t>(B) * H > 65535 || per_head > (int64_t{1} << 30))
        throw Error(std::string(what) + ": too many heads or rows for one launch (B·H " +
                    std::to_string(static_cast<int64_t>(B) * H) + ")");
    return dim3(ceil_div(per_head, kThreads), static_cast<unsigned>(B * H));
}

template <bool kToHeads, typename Out>
void launch_layout(const float* src, Out* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    const int64_t per_head = static_cast<int64_t>(Tp) * D;
    if (per_head <= 0 || B <= 0 || H <= 0) return;
    const bool vec = D % 4 == 0 && aligned16(src) &&
                     vec4_aligned(dst);
    if (vec)
        layout_kernel<kToHeads, 4><<<head_grid(B, H, per_head / 4, "layout change"), kThreads, 0, stream>>>(
            src, dst, T, Tp, H, D);
    else
        layout_kernel<kToHeads, 1><<<head_grid(B, H, per_head, "layout change"), kThreads, 0, stream>>>(
            src, dst, T, Tp, H, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace {
// rotary_kernel's grid: one thread per position and pair of each of the B sequences.
dim3 rotary_grid(int B, int Tp, int Dk) {
    const int64_t per_sequence = static_cast<int64_t>(Tp) * (Dk / 2);
    if (B > 65535 || per_sequence > (int64_t{1} << 30))
        throw Error("rotary: too many sequences or rows for one launch (B " + std::to_string(B) + ")");
    return dim3(ceil_div(per_sequence, kThreads), static_cast<unsigned>(B));
}
}  // namespace

template <typename Out>
void rotary_forward(const float* src, Out* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                    cudaStream_t stream) {
    if (Tp <= 0 || Dk < 2 || B <= 0 || H <= 0) return;
    rotary_kernel<true><<<rotary_grid(B, Tp, Dk), kThreads, 0, stream>>>(src, dst, T, Tp, H, Dk, args);
    RETNET_CUDA_CHECK_LAUNCH();
}
template void rotary_forward(const float*, float*, int, int, int, int, int, const RotaryArgs&, cudaStream_t);
template void rotary_forward(const float*, __nv_bfloat16*, int, int, int, int, int, const RotaryArgs&, cudaStream_t);

template <typename Out>
void rotary_backward(const float* src, Out* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                     cudaStream_t stream) {
    if (Tp <= 0 || Dk < 2 || B <= 0 || H <= 0) return;
    rotary_kernel<false><<<rotary_grid(B, Tp, Dk), kThreads, 0, stream>>>(src, dst, T, Tp, H, Dk, args);
    RETNET_CUDA_CHECK_LAUNCH();
}
template void rotary_backward(const float*, float*, int, int, int, int, int, const RotaryArgs&, cudaStream_t);
template void rotary_backward(const float*, __nv_bfloat16*, int, int, int, int, int, const RotaryArgs&, cudaStream_t);

template <typename Out>
void rows_to_heads(const float* src, Out* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    launch_layout<true>(src, dst, B, T, Tp, H, D, stream);
}
template void rows_to_heads(const float*, float*, int, int, int, int, int, cudaStream_t);
template void rows_to_heads(const float*, __nv_bfloat16*, int, int, int, int, int, cudaStream_t);

template <typename Out>
void heads_to_rows(const float* src, Out* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream) {
    launch_layout<false>(src, dst, B, T, Tp, H, D, stream);
}
template void heads_to_rows(const float*, float*, int, int, int, int, int, cudaStream_t);
template void heads_to_rows(const float*, __nv_bfloat16*, int, int, int, int, int, cudaStream_t);

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
