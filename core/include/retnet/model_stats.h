// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Sizes a user wants to know before running a model: parameters, weight memory, and the fixed
// recurrent state next to the KV cache a Transformer of the same shape would need.
#include <cstdint>
#include <string>

#include "retnet/model.h"

namespace retnet {

struct ModelStats {
    int64_t parameters = 0;
    int64_t weight_bytes_fp32 = 0;
    int64_t state_bytes_fp32 = 0;                // recurrent_state_bytes(): fixed, independent of the length
    int64_t kv_cache_bytes_per_token_fp32 = 0;   // kv_cache_bytes(): the Transformer twin's, L·2·d·4
    int64_t kv_cache_bytes_at_context_fp32 = 0;  // per token × context
};

ModelStats model_stats(const Model& model, int64_t context_tokens);

// The whole recurrent state as the backends hold it: S (L, H, Dk, Dv) in float32, plus for
// torchscale the per-head normalizer r_n (L, H) in float64. 0 for the Transformer twin.
int64_t recurrent_state_bytes(const ModelConfig& config);

// The float32 KV cache of `tokens` tokens, L·2·(H·D)·4 bytes each: what the Transformer twin holds
// (docs/transformer.md), which for a RetNet config is its twin's, with H·D = d.
int64_t kv_cache_bytes(const ModelConfig& config, int64_t tokens);

std::string format_count(int64_t n);  // "12.3M"; sizes in bytes: format_bytes (memory_limit.h)

}  // namespace retnet
