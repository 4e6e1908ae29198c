// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Float32 building blocks of the fast CPU backend. Matrix products go through BLAS (OpenBLAS,
// threaded); the rest are simple loops over contiguous rows.
#include <cstdint>
#include <span>
#include <vector>

#include "retnet/config.h"
#include "retnet/model.h"

namespace retnet::cpu {

// C (M, N) = alpha · op(A) op(B) + beta · C, row-major, op = transpose when the flag is set.
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

// y (T, out) = x (T, in) Wᵀ with W (out, in).
void linear(const float* x, int T, int in, const Tensor& w, float* y);

// Row-wise RMSNorm in place; `weight` may be empty (no affine weight).
void rms_norm_rows(float* x, int rows, int cols, const Tensor& weight, double eps);
void rms_norm_rows(const float* x, float* y, int rows, int cols, const Tensor& weight, double eps);

void rotate(float* x, int Dk, int64_t pos, const std::vector<float>& theta, Family family);

float silu(float x);
float gelu(float x);

}  // namespace retnet::cpu
