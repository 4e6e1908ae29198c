// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Projections of 2 to 16 rows with bf16 weights on the tensor cores (batched decoding: one row
// per sequence), written for the memory floor as the GEMV is for one row (gemv.h; 8 with fp32 weights). One
// 16-row tile of X: with more rows (tiles of 32 to 64, X read from L1 or staged per block in
// shared memory, K split across a cluster) it was slower than cuBLAS on the H200 (docs/cuda.md).
//
// Y (M, N) = X (M, K) · Wᵀ (+ Y), W (N, K) bf16 in PyTorch's [out, in] layout, X bf16 (rounded
// once for all the projections of the same rows, as the cuBLAS path rounds it), sums in fp32.
// Every weight element is read once, in 16-byte loads straight into the matrix-product
// fragments: the products run over a permutation of K that both operands share, so neither
// needs shared memory or a transposing load. Rows too long to keep the GPU's loads in flight
// for few outputs (the output and down projections) are split between the warps of a block,
// whose parts meet in shared memory and are added in part order, so results do not depend on
// timing. Several weights of the same X go in one launch; two of the same N can be paired into
// a GLU. Callers check skinny_gemm_supports() first and fall back to cuBLAS otherwise.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gemv.h"

namespace retnet::cuda {

constexpr int kSkinnyMaxRows = 16;

// True when M rows of K suit the kernel (K a multiple of the 8-element vector).
bool skinny_gemm_supports(int M, int K);

// The jobs' weights are bf16 (GemvJob::weight), 16-byte aligned; X (M, K) bf16, 16-byte aligned.
// With a GLU: two jobs of the same N, act then lin; y of the first gets act(x·W_actᵀ) ⊙ (x·W_linᵀ),
// or glu_bf16 (M, N) gets it rounded to bf16 (the next bf16 projection's input) and y is not written.
void launch_skinny_gemm(const __nv_bfloat16* x, int M, int K, const GemvJob* jobs, int job_count,
                        cudaStream_t stream, GemvGlu glu = GemvGlu::None, __nv_bfloat16* glu_bf16 = nullptr);

// The same projections of X = RMSNorm(x)·w rounded to bf16, the norm formed inside the launch: bit for bit
// launch_rmsnorm_bf16 (ops.h) into bf16 rows, then launch_skinny_gemm on them, with x̂ staged in each
// block's shared memory instead of written to and read from global rows. x (M, K) fp32; weight (K) or
// null (ones). For the M and K that skinny_gemm_fuses_norm allows (K ≤ 2048: a thread holds its columns
// of four rows in registers, and x̂ leaves room for the blocks of the unfused launch's one wave).
struct SkinnyNorm {
    const float* x = nullptr;
    const float* weight = nullptr;
    float eps = 0.0f;
};
bool skinny_gemm_fuses_norm(int M, int K);
// Where the CUDA backend fuses it: up to 4 rows. Each block reads all of X's fp32 rows to sum their squares,
// so the staging grows with M (H100, 1.3B shape, device time a step: batches 2, 3, 4 −7.6, −7.8, −7.1 %;
// 6 and 8 +1.2 and +3.0 %; at 16 rows the q, k, v, g launch 35.4 µs against 26.3 with the norm's own).
constexpr int kSkinnyFusedNormMaxRows = 4;
void launch_skinny_gemm_normed(const SkinnyNorm& norm, int M, int K, const GemvJob* jobs, int job_count,
                               cudaStream_t stream, GemvGlu glu = GemvGlu::None, __nv_bfloat16* glu_bf16 = nullptr);

}  // namespace retnet::cuda
