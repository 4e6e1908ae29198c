// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The fast CPU inference backend's view of the op library (retnet/cpu_ops.h): float32 calls
// shaped by the model's Tensors. Each forwards to the library's op, so inference and training run
// the same code; matrix products go through BLAS (OpenBLAS, threaded).
#include <cstdint>
#include <vector>

#include "retnet/config.h"
#include "retnet/cpu_ops.h"
#include "retnet/model.h"

namespace retnet::cpu {

// y (T, out) = x (T, in) Wᵀ (or y += x Wᵀ) with W (out, in) held as float32 or bf16; ldy is y's
// row stride (0: out).
void linear(const float* x, int64_t T, int64_t in, const Tensor& w, float* y, bool accumulate = false,
            int64_t ldy = 0);

// Row-wise RMSNorm (rmsnorm_forward); `weight` may be empty (no affine weight).
void rms_norm_rows(float* x, int rows, int cols, const Tensor& weight, double eps);
void rms_norm_rows(const float* x, float* y, int rows, int cols, const Tensor& weight, double eps);

}  // namespace retnet::cpu
