// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Small random models and comparison helpers shared by the core tests.
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "retnet/model.h"

namespace retnet::test {

inline ModelConfig small_config(Family family) {
    ModelConfig c;
    c.family = family;
    c.vocab_size = 53;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.key_dim = 32;    // Dk = 8
    c.value_dim = 48;  // Dv = 12
    c.ffn_dim = 40;
    c.norm_eps = 1e-6;
    c.chunk_size = 8;
    c.ffn_activation = family == Family::TorchScale ? Activation::Gelu : Activation::Swish;
    c.scale_embedding = family == Family::TorchScale;
    c.layernorm_embedding = family == Family::TorchScale;
    c.tie_embeddings = family == Family::Fla;
    return c;
}

// A random model with weights large enough that the retention normalizations are active
// (torchscale's abs-sum divisor above its clamp) and norm weights away from 1.
inline std::shared_ptr<Model> small_model(Family family, uint64_t seed) {
    auto m = std::make_shared<Model>(make_random_model(small_config(family), seed));
    std::mt19937_64 rng(seed + 1000);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    auto perturb_norm = [&](Tensor& t) {
        for (float& x : t.data) x = 1.0f + 0.3f * n01(rng);
    };
    auto scale = [](Tensor& t, float s) {
        for (float& x : t.data) x *= s;
    };
    if (family == Family::Fla) scale(m->weights.embed, 30.0f);
    for (LayerWeights& l : m->weights.layers) {
        perturb_norm(l.attn_norm);
        perturb_norm(l.ffn_norm);
        if (!l.head_norm.empty()) perturb_norm(l.head_norm);
        const float s = family == Family::Fla ? 10.0f : 4.0f;
        scale(l.q_proj, s);
        scale(l.k_proj, s);
        scale(l.v_proj, s);
    }
    perturb_norm(m->weights.final_norm);
    if (!m->weights.embed_norm.empty()) perturb_norm(m->weights.embed_norm);
    return m;
}

inline std::vector<int32_t> random_tokens(int T, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
    std::vector<int32_t> out(static_cast<size_t>(T));
    for (int32_t& t : out) t = dist(rng);
    return out;
}

inline double max_abs(const Tensor& t) {
    double m = 0;
    for (float x : t.data) m = std::max(m, std::abs(static_cast<double>(x)));
    return m;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
    if (a.shape != b.shape) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.data.size(); ++i)
        m = std::max(m, std::abs(static_cast<double>(a.data[i]) - static_cast<double>(b.data[i])));
    return m;
}

}  // namespace retnet::test
