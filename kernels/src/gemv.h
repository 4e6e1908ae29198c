// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Projections of a few rows (decoding: one row per sequence), written for the memory floor.
//
// Y (M, N) = X (M, K) · Wᵀ (+ Y) with W (N, K) in PyTorch's [out, in] layout. With M ≤
// kGemvMaxRows every weight element is read once, in 16-byte loads, for all M rows; the sums are
// fp32 and X stays fp32 (it is not rounded to bf16 as the cuBLAS path rounds it). Several weights
// that read the same X (q, k, v, g; the FFN's two inputs) go in one launch, so a decoding step
// has fewer nodes. Rows longer than one round of loads, when there are fewer of them than the GPU
// holds warps (the output and down projections), are split between two warps each, so that the
// whole matrix is requested at once. Callers check gemv_supports() first and fall back to cuBLAS
// otherwise.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "l2_prefetch.h"

namespace retnet::cuda {

constexpr int kGemvMaxRows = 8;
constexpr int kGemvMaxJobs = 4;

struct GemvJob {
    const void* weight = nullptr;  // (N, K) fp32 or bf16, 16-byte aligned
    float* y = nullptr;            // (M, N)
    int n = 0;                     // N
    bool accumulate = false;       // y += instead of y =
};

// What the kernel does to X before the products, once per block into shared memory (the op it
// replaces is then not launched at all): RmsNorm x̂ = RMSNorm(x)·w for each of the M rows, the
// layer's input norms. (fla's output gate was tried the same way before the output projection:
// on the H200 its per-block prologue cost more than the launch it saved.)
enum class GemvInput { Plain, RmsNorm };
struct GemvInputTransform {
    GemvInput kind = GemvInput::Plain;
    const float* weight = nullptr;  // the norm's weight (K); null: none
    float eps = 0.0f;
};
// With a GLU the launch has two jobs of the same N, act then lin, and writes y of the first:
// y = act(x·W_actᵀ) ⊙ (x·W_linᵀ), the FFN's input half in one pass over both weights.
enum class GemvGlu { None, Swish, Gelu };

// True when rows M and the inner dimension K suit the kernel (K a multiple of the 16-byte vector).
bool gemv_supports(int M, int K, bool bf16);
// True when an input transform or a GLU can be fused for M rows of K (x̂ fits shared memory).
bool gemv_supports_fusion(int M, int K, bool bf16);

// The jobs share X (M, K) and the weights' dtype. `next`: the next kernel's weights, requested
// into L2 as the launch starts (l2_prefetch.h).
void launch_gemv(const float* x, int M, int K, const GemvJob* jobs, int job_count, bool bf16, cudaStream_t stream,
                 const GemvInputTransform& input = {}, GemvGlu glu = GemvGlu::None, const L2Prefetch& next = {});

}  // namespace retnet::cuda
