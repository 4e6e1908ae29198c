// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/analysis.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "retnet/cpu_ops.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"

namespace retnet {

namespace {

// One (n, n) block to (m, m) cells of `stride` × `stride`, keeping the largest |value|.
void downsample_block(const float* src, int n, int stride, int m, float* dst) {
    for (int r = 0; r < m; ++r)
        for (int c = 0; c < m; ++c) {
            float best = 0.0f;
            for (int i = r * stride; i < std::min(n, (r + 1) * stride); ++i)
                for (int j = c * stride; j < std::min(n, (c + 1) * stride); ++j) {
                    const float v = src[size_t(i) * size_t(n) + size_t(j)];
                    if (std::abs(v) > std::abs(best)) best = v;
                }
            dst[size_t(r) * size_t(m) + size_t(c)] = best;
        }
}

}  // namespace

DownsampledScores downsample_scores(const Tensor& scores, int max_cells) {
    if (scores.rank() != 3 || scores.dim(1) != scores.dim(2) || scores.dim(1) < 1)
        throw Error("downsample_scores: expected scores of shape (H, T, T), got " + scores.shape_string());
    if (max_cells < 1) throw Error("downsample_scores: max_cells must be ≥ 1, got " + std::to_string(max_cells));
    DownsampledScores out;
    out.heads = int(scores.dim(0));
    out.tokens = int(scores.dim(1));
    const int T = out.tokens;
    out.stride = (T + max_cells - 1) / max_cells;
    out.size = (T + out.stride - 1) / out.stride;
    const size_t n = size_t(out.size);
    out.data.resize(size_t(out.heads) * n * n);
    for (int h = 0; h < out.heads; ++h)
        downsample_block(scores.ptr() + size_t(h) * size_t(T) * size_t(T), T, out.stride, out.size,
                         out.data.data() + size_t(h) * n * n);
    return out;
}

std::vector<TokenProb> token_candidates(std::span<const float> row, int32_t token, int n) {
    std::vector<TokenProb> top = top_probabilities(row, n);
    if (std::none_of(top.begin(), top.end(), [&](const TokenProb& p) { return p.id == token; }))
        top.push_back({token, std::exp(log_probability(row, token)), row[size_t(token)]});
    return top;
}

std::vector<std::vector<TokenProb>> prompt_candidates(const Tensor& logits, int64_t first,
                                                      std::span<const int32_t> tokens, int n) {
    if (logits.rank() != 2) throw Error("prompt_candidates: expected logits (T, V), got " + logits.shape_string());
    const int64_t rows = logits.dim(0), V = logits.dim(1);
    std::vector<std::vector<TokenProb>> out;
    for (int64_t t = 0; t < rows; ++t) {
        const int64_t position = first + t + 1;  // the token that row t predicts
        if (position < 1 || position >= int64_t(tokens.size())) break;
        const std::span<const float> row(logits.ptr() + t * V, size_t(V));
        out.push_back(token_candidates(row, tokens[size_t(position)], n));
    }
    return out;
}

RetentionInputs retention_inputs(const Model& model, const Introspection& intro, int64_t first_position) {
    const ModelConfig& c = model.config;
    const int64_t H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v();
    const int64_t T = intro.q.rank() == 2 ? intro.q.dim(0) : 0;
    auto shaped = [&](const Tensor& t, int64_t width) {
        return t.rank() == 2 && t.dim(0) == T && t.dim(1) == width;
    };
    if (T == 0 || !shaped(intro.k, H * Dk) || !shaped(intro.q, H * Dk) || !shaped(intro.v, H * Dv))
        throw Error("retention inputs: the introspection holds no q, k, v of this model (set qkv_layer)");
    RetentionInputs out{Tensor({T, H, Dk}), Tensor({T, H, Dk}), Tensor({T, H, Dv})};
    std::copy(intro.q.data.begin(), intro.q.data.end(), out.q.data.begin());
    std::copy(intro.k.data.begin(), intro.k.data.end(), out.k.data.begin());
    std::copy(intro.v.data.begin(), intro.v.data.end(), out.v.data.begin());
    const QKScale scale = qk_scale(c);
    const cpu::RotaryShape shape{1, T, H, Dk};
    const RotaryPairs pairs = rotary_pairs(c.family);
    cpu::rotary_forward(out.q.ptr(), shape, model.weights.rotary_theta.data(), pairs, scale.q, first_position);
    cpu::rotary_forward(out.k.ptr(), shape, model.weights.rotary_theta.data(), pairs, scale.k, first_position);
    return out;
}

}  // namespace retnet
