// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Causal softmax attention for training (the Transformer twin), FlashAttention-2 style in fp32:
// per (sequence, head) o_n = Σ_{m≤n} softmax_m(q_n·k_m) v_m, q already scaled by Dk^−½. The
// forward walks tiles of keys with an online softmax and keeps only lse = logsumexp_m(q_n·k_m)
// per row; the backward recomputes P = exp(q·k − lse) tile by tile from it, with the row sums
// D = rowsum(dO ⊙ O), so no T×T matrix exists anywhere: working memory is the tiles in shared
// memory plus B·H·T floats of D. Every sum is fp32 in a fixed order, without atomics (dq is
// gathered per query tile, dk and dv per key tile), so a step gives the same bits on every run.
//
// Each tensor is given as a base pointer and a HeadsLayout, so the trainer's head-major q, k, v
// (cuda_train_ops.h) and its o rows are read where they lie. Every pointer is device memory;
// every launcher enqueues on `stream` and checks the launch.
#include <cuda_runtime.h>

#include <cstdint>

namespace retnet::cuda::train_kernels {

// Row t of head h of sequence b lies at base + b·seq + h·head + t·row, its D values contiguous.
struct HeadsLayout {
    int64_t seq = 0, head = 0, row = 0;
};
// head-major (B·H, Tp, D), Tp ≥ T (rows [T, Tp) are never read)
inline HeadsLayout heads_layout(int H, int Tp, int D) {
    return {static_cast<int64_t>(H) * Tp * D, static_cast<int64_t>(Tp) * D, D};
}
// rows (B·T, H·D)
inline HeadsLayout rows_layout(int T, int H, int D) {
    return {static_cast<int64_t>(T) * H * D, D, static_cast<int64_t>(H) * D};
}

struct AttentionShape {
    int B = 0, H = 0, T = 0;  // B sequences of T rows, H heads
    int Dk = 0, Dv = 0;       // head dims of q, k and of v, o
};
// Where the tensors lie: q and k (and dq, dk) in qk, v (and dv) in v, o (and d_o) in o. lse is
// always rows (B·T, H).
struct AttentionLayouts {
    HeadsLayout qk, v, o;
};

// The largest head dim the kernels take (the 1.3B twin's).
constexpr int kAttentionMaxHeadDim = 256;

// Writes o and lse (B·T, H).
void attention_forward(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k,
                       const float* v, float* o, float* lse, cudaStream_t stream);

// Floats of the backward's scratch: D, (B·H, T).
int64_t attention_backward_scratch_floats(const AttentionShape& s);
// From d_o and the forward's o and lse, writes dq, dk (layout qk) and dv (layout v).
void attention_backward(const AttentionShape& s, const AttentionLayouts& l, const float* q, const float* k,
                        const float* v, const float* o, const float* lse, const float* d_o, float* dq, float* dk,
                        float* dv, float* scratch, cudaStream_t stream);

}  // namespace retnet::cuda::train_kernels
