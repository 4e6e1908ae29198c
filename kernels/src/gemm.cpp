// SPDX-License-Identifier: GPL-3.0-or-later
#include "gemm.h"

#include <string>

#include "cuda_check.h"
#include "retnet/error.h"

namespace retnet::cuda {

void gemm_strided_batched(cublasHandle_t handle, bool trans_a, bool trans_b, int M, int N, int K,
                          float alpha, const float* A, int lda, int64_t stride_a, const float* B,
                          int ldb, int64_t stride_b, float beta, float* C, int ldc,
                          int64_t stride_c, int batch) {
    if (M == 0 || N == 0 || batch == 0) return;
    const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    RETNET_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, N, M, K, &alpha, B, ldb, stride_b,
                                                  A, lda, stride_a, &beta, C, ldc, stride_c, batch));
}

void linear_f32(cublasHandle_t handle, const float* X, const float* W, float* Y, int M, int N, int K,
                float beta) {
    if (M == 0 || N == 0) return;
    const float alpha = 1.0f;
    RETNET_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W, K, X, K, &beta,
                                    Y, N));
}

void linear_bf16(cublasHandle_t handle, const __nv_bfloat16* X, const __nv_bfloat16* W, float* Y,
                 int M, int N, int K, float beta) {
    if (M == 0 || N == 0) return;
    const float alpha = 1.0f;
    RETNET_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, W, CUDA_R_16BF, K, X,
                                     CUDA_R_16BF, K, &beta, Y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

void linear_bf16_head_major(cublasHandle_t handle, const __nv_bfloat16* X, const __nv_bfloat16* W, float* Y, int M,
                            int N, int K, int heads, int64_t head_stride) {
    if (M == 0 || N == 0) return;
    if (heads <= 0 || N % heads != 0) throw Error("linear_bf16_head_major: " + std::to_string(N) +
                                                  " columns do not split into " + std::to_string(heads) + " heads");
    const int D = N / heads;
    const float alpha = 1.0f, beta = 0.0f;
    RETNET_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, D, M, K, &alpha, W, CUDA_R_16BF, K,
                                                   static_cast<long long>(D) * K, X, CUDA_R_16BF, K, 0, &beta, Y,
                                                   CUDA_R_32F, D, head_stride, heads, CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT));
}

}  // namespace retnet::cuda
