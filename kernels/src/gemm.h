// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// cuBLAS GEMMs seen through row-major views (cuBLAS is column-major: a row-major (M, N) matrix is
// a column-major (N, M) one, so C = op(A)·op(B) is issued as Cᵀ = op(B)ᵀ·op(A)ᵀ).
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>

namespace retnet::cuda {

// Row-major C_b (M, N) = alpha · op(A_b) · op(B_b) + beta · C_b for b < batch, fp32 throughout.
// op(A) is (M, K): A stored (M, K) with leading dimension lda, or (K, M) when trans_a.
void gemm_strided_batched(cublasHandle_t handle, bool trans_a, bool trans_b, int M, int N, int K,
                          float alpha, const float* A, int lda, int64_t stride_a, const float* B,
                          int ldb, int64_t stride_b, float beta, float* C, int ldc,
                          int64_t stride_c, int batch);

// Y (M, N) = X (M, K) · Wᵀ + beta · Y, with W (N, K) in PyTorch's [out, in] layout. fp32.
void linear_f32(cublasHandle_t handle, const float* X, const float* W, float* Y, int M, int N, int K,
                float beta);

// The same with bf16 operands and fp32 accumulation and output: X is given in bf16 already.
void linear_bf16(cublasHandle_t handle, const __nv_bfloat16* X, const __nv_bfloat16* W, float* Y,
                 int M, int N, int K, float beta);

// Y = X · Wᵀ as linear_bf16 computes it, written head-major: the `heads` blocks of N / heads
// columns each to their own (M, N / heads) matrix, head h's at Y + h · head_stride (one batched GEMM
// instead of the GEMM and a layout pass that reads and writes Y again).
void linear_bf16_head_major(cublasHandle_t handle, const __nv_bfloat16* X, const __nv_bfloat16* W, float* Y, int M,
                            int N, int K, int heads, int64_t head_stride);

}  // namespace retnet::cuda
