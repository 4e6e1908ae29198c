// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Device-side helpers shared by the kernels: block reductions and launch arithmetic.
#include <cuda_runtime.h>

#include <cstdint>

namespace retnet::cuda {

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
