// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/model_stats.h"

#include <cstdio>

namespace retnet {

int64_t recurrent_state_bytes(const ModelConfig& c) {
    if (c.is_transformer()) return 0;  // the twin keeps a KV cache instead (kv_cache_bytes)
    int64_t bytes = int64_t(c.n_layers) * c.n_heads * c.head_dim_k() * c.head_dim_v() * int64_t(sizeof(float));
    if (c.family == Family::TorchScale) bytes += int64_t(c.n_layers) * c.n_heads * int64_t(sizeof(double));
    return bytes;
}

ModelStats model_stats(const Model& model, int64_t context_tokens) {
    const ModelConfig& c = model.config;
    ModelStats s;
    s.parameters = model.parameter_count();
    s.weight_bytes_fp32 = s.parameters * 4;
    s.state_bytes_fp32 = recurrent_state_bytes(c);
    s.kv_cache_bytes_per_token_fp32 = kv_cache_bytes(c, 1);
    s.kv_cache_bytes_at_context_fp32 = kv_cache_bytes(c, context_tokens);
    return s;
}

int64_t kv_cache_bytes(const ModelConfig& c, int64_t tokens) {
    const int64_t width = c.is_transformer() ? c.key_dim : c.d_model;  // H·D of the twin (d/H per head)
    return int64_t(c.n_layers) * 2 * width * int64_t(sizeof(float)) * tokens;
}

std::string format_count(int64_t n) {
    char buf[32];
    if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
    else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
    else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
    else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
    return buf;
}

}  // namespace retnet
