// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Projections of up to 64 rows with bf16 weights on the tensor cores (batched decoding: one row
// per sequence), written for the memory floor as the GEMV is for up to 8 rows (gemv.h).
//
// Y (M, N) = X (M, K) · Wᵀ (+ Y), W (N, K) bf16 in PyTorch's [out, in] layout, X fp32 or bf16
// (fp32 is rounded to bf16 as it is staged, as the cuBLAS path rounds it), sums in fp32. Every
// weight element is read once, in 16-byte loads straight into the matrix-product fragments: the
// products run over a permutation of K that both operands share, so the weights need neither
// shared memory nor a transposing load. A block stages only its part of X; rows too long to keep
// the GPU's loads in flight for few outputs (the output and down projections) are split between
// the blocks of a thread block cluster, whose sums meet in shared memory and are added in part
// order, so results do not depend on timing. Several weights of the same X go in one launch;
// two of the same N can be paired into a GLU. Callers check skinny_gemm_supports() first and fall
// back to cuBLAS otherwise.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "gemv.h"

namespace retnet::cuda {

constexpr int kSkinnyMaxRows = 64;

// True when M rows of K suit the kernel: K a multiple of the 8-element vector, and an eighth of
// X's rows fits a block's shared memory (K up to ~6,900 at 64 rows, ~27,000 at 16).
bool skinny_gemm_supports(int M, int K);

// The jobs' weights are bf16 (GemvJob::weight), 16-byte aligned; X (M, K) 16-byte aligned.
// With a GLU: two jobs of the same N, act then lin; y of the first gets act(x·W_actᵀ) ⊙ (x·W_linᵀ).
void launch_skinny_gemm(const __nv_bfloat16* x, int M, int K, const GemvJob* jobs, int job_count,
                        cudaStream_t stream, GemvGlu glu = GemvGlu::None);
void launch_skinny_gemm(const float* x, int M, int K, const GemvJob* jobs, int job_count, cudaStream_t stream,
                        GemvGlu glu = GemvGlu::None);

}  // namespace retnet::cuda
