// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The GLU activations and their derivatives on the device, one definition for the gate of the
// head norm (norms.cu) and the FFN (glu.cu); the formulas of the CPU op library (retnet/cpu_ops.h).
#include <cuda_runtime.h>

namespace retnet::cuda {

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_grad(float x) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}
__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad(float x) {
    return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * expf(-0.5f * x * x) * 0.39894228040143268f;
}

}  // namespace retnet::cuda
