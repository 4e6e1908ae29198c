// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The Transformer twin's causal softmax attention on the CPU (docs/transformer.md): sequences of a
// batch, every head, each over its own KV cache.
#include <cstdint>
#include <span>

namespace retnet::cpu {

struct AttentionInputs {
    const float* q = nullptr;  // (T, H·D) rotated, carrying 1/√D; row stride ldq
    int64_t ldq = 0;
    const float* K = nullptr;  // (P + T, H, D) the cache's rotated keys, the sequence's own included
    const float* V = nullptr;  // (P + T, H, D)
    float* y = nullptr;        // (T, H·D) row stride ldy
    int64_t ldy = 0;
    int64_t position = 0;      // P: tokens in the cache before the sequence's own
    int T = 0;
    int n_heads = 0;           // H
    int head_dim = 0;          // D
};

// y_t = softmax_{m ≤ P + t}(q_t · K_m) V_m for every head of every sequence. token_by_token: each
// query alone with plain loops over the cache (the recurrent form); else query tiles through BLAS
// (QKᵀ, then PV), except for single-token sequences (decoding), which take the loop. The
// (sequence, head, query tile) jobs of the whole batch share the ops' threads.
void attention_forward(std::span<const AttentionInputs> sequences, bool token_by_token);

}  // namespace retnet::cpu
