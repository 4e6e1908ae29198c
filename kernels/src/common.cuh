// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Device-side helpers shared by the kernels: element loads and stores, block reductions and launch
// arithmetic.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "cuda_check.h"
#include "l2_prefetch.h"

namespace retnet::cuda {

// Programmatic dependent launch (Hopper): a kernel launched with launch_overlapped() may start
// while the kernel before it in the stream is still running. It reads only what no earlier kernel
// writes (weights, a state only it writes) before wait_for_previous_grid(), which returns once the
// previous grid has finished and its writes are visible; it then lets the next kernel start
// (allow_next_grid). Launched the ordinary way, both are no-ops.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// This block's share of `next` (split evenly over the grid's blocks) requested into L2 by warp 0,
// 64 KB a bulk prefetch: no registers held, nothing to wait for. Called before
// wait_for_previous_grid(), so the requests go out while the previous kernel still runs.
__device__ __forceinline__ void prefetch_share_to_l2(const L2Prefetch& next) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr uint64_t kPiece = 64 * 1024;
    const uint64_t total = next.bytes[0] + next.bytes[1];
    if (total == 0 || threadIdx.x >= 32) return;
    const uint64_t blocks = static_cast<uint64_t>(gridDim.x) * gridDim.y * gridDim.z;
    const uint64_t block = blockIdx.x + static_cast<uint64_t>(gridDim.x) * (blockIdx.y + static_cast<uint64_t>(gridDim.y) * blockIdx.z);
    const PrefetchShare mine = prefetch_share(total, blocks, block);
    uint64_t region_begin = 0;
#pragma unroll
    for (int r = 0; r < L2Prefetch::kRegions; ++r) {
        const uint64_t region_end = region_begin + next.bytes[r];
        const uint64_t from = mine.begin > region_begin ? mine.begin : region_begin;
        const uint64_t to = mine.end < region_end ? mine.end : region_end;
        for (uint64_t at = from + threadIdx.x * kPiece; at < to; at += 32 * kPiece) {
            const uint64_t length = to - at < kPiece ? to - at : kPiece;
            const char* address = static_cast<const char*>(next.at[r]) + (at - region_begin);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(address), "r"(static_cast<unsigned>(length)));
        }
        region_begin = region_end;
    }
#endif
}

// Launches `kernel` so that it may overlap the end of the previous kernel (see above). Every
// kernel launched this way calls wait_for_previous_grid() before reading another kernel's output.
template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                       Args&&... args) {
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    cudaLaunchAttribute overlap[1];
    overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    overlap[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = overlap;
    config.numAttrs = 1;
    RETNET_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

// c (4 fp32 accumulators) += A (m16 k16, bf16, registers a0 … a3) · B (k16 n8, bf16, b0, b1): one
// mma.sync in the sm_80+ fragment layouts (lane g·4 + t: rows g and g + 8, columns 2t and 2t + 1).
__device__ __forceinline__ void mma_bf16(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Elements stored in float or bf16 (the trainer's kept activations), read and written as float.
__device__ __forceinline__ float load_as_float(float x) { return x; }
__device__ __forceinline__ float load_as_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store_as(float* at, float value) { *at = value; }
__device__ __forceinline__ void store_as(__nv_bfloat16* at, float value) { *at = __float2bfloat16_rn(value); }

// Eight consecutive elements (16-byte aligned) as floats: one 16-byte access for bf16, two for
// float. The bf16 store rounds each value as store_as does.
__device__ __forceinline__ void load8_as_float(const float* p, float (&v)[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8_as_float(const __nv_bfloat16* p, float (&v)[8]) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const float2 f = __bfloat1622float2(pairs[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void store8_as(float* p, const float (&v)[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8_as(__nv_bfloat16* p, const float (&v)[8]) {
    uint4 u;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) pairs[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = u;
}
// Four consecutive values (16-byte aligned for float, 8-byte for bf16), rounded as store_as rounds.
__device__ __forceinline__ void store4_as(float* p, float a, float b, float c, float d) {
    *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4_as(__nv_bfloat16* p, float a, float b, float c, float d) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    *reinterpret_cast<uint2*>(p) =
        make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
}
// Vec (1 or 4) consecutive values, as store_as / store4_as store them.
template <int Vec, typename Out>
__device__ __forceinline__ void store_vec(Out* p, const float (&v)[Vec]) {
    if constexpr (Vec == 4) store4_as(p, v[0], v[1], v[2], v[3]);
    else store_as(p, v[0]);
}
// The launchers' test for pointers of 16-byte (float4, eight-bf16) accesses.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
// And for accesses of four elements of T (16 bytes of float, 8 of bf16).
template <typename T>
inline bool vec4_aligned(const T* p) { return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0; }

inline unsigned ceil_div(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 entries; the call begins and ends with a barrier so it can be reused.
template <typename T>
__device__ T block_sum(T v, T* shared) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    T total = lane < n_warps ? shared[lane] : T(0);
    total = warp_sum(total);
    return total;
}

template <typename T>
__device__ T block_max(T v, T* shared, T lowest) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    T total = lane < n_warps ? shared[lane] : lowest;
    return warp_max(total);
}

// γ^n as exp(n·log γ) in double: the decay factors of the reference, to double rounding.
__device__ __forceinline__ float decay_pow(float log_decay, int n) {
    return static_cast<float>(exp(static_cast<double>(n) * static_cast<double>(log_decay)));
}

}  // namespace retnet::cuda
