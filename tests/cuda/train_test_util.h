// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Shared helpers of the CUDA trainer tests (test_train_cuda.cpp, test_train_twin_cuda.cpp):
// random weights and tokens, the CPU trainer's double reference and per-tensor comparisons.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "retnet/train.h"

namespace retnet::cuda::test {

// Weights well away from the 0.02 initialization, so every path carries a sizeable gradient
// (norm weights around 1, as the core gradient tests do).
inline std::vector<float> random_params(const train::ParamLayout& layout, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(-0.4f, 0.4f);
    std::vector<float> p(static_cast<size_t>(layout.total));
    for (float& x : p) x = dist(rng);
    for (const train::ParamTensor& t : layout.tensors)
        if (t.shape.size() == 1)
            for (int64_t i = 0; i < t.size; ++i) p[static_cast<size_t>(t.offset + i)] += 1.0f;
    return p;
}

struct Tokens {
    std::vector<int32_t> inputs, targets;
    train::BatchView view(int batch, int seq_len) const { return {inputs.data(), targets.data(), batch, seq_len}; }
};

inline Tokens random_tokens(int n, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
    Tokens t;
    t.inputs.resize(static_cast<size_t>(n));
    t.targets.resize(static_cast<size_t>(n));
    for (auto& x : t.inputs) x = tok(rng);
    for (auto& x : t.targets) x = tok(rng);
    return t;
}

// Each tensor's gradient, not only the vector as a whole (a small tensor could hide in the norm).
// A tensor whose true gradient vanishes — the twin's q and k at T = 1, where one key makes the
// softmax constant — has only rounding noise to compare: its error is measured against the whole
// gradient's scale instead of its own (~1e-19 in double).
inline void expect_every_tensor_close(const train::ParamLayout& layout, const std::vector<float>& grad,
                                      const std::vector<double>& grad_ref, double tolerance) {
    const auto l2 = [](auto first, auto last) {
        double s = 0.0;
        for (auto it = first; it != last; ++it) s += static_cast<double>(*it) * static_cast<double>(*it);
        return std::sqrt(s);
    };
    const double whole = l2(grad_ref.begin(), grad_ref.end());
    for (const train::ParamTensor& t : layout.tensors) {
        const auto first = static_cast<size_t>(t.offset), last = static_cast<size_t>(t.offset + t.size);
        const std::vector<float> g(grad.begin() + first, grad.begin() + last);
        const std::vector<double> r(grad_ref.begin() + first, grad_ref.begin() + last);
        const double own = l2(r.begin(), r.end());
        if (own >= 1e-6 * whole) {
            EXPECT_LT(rel_l2_error(g, r), tolerance) << t.name;
        } else {
            std::vector<double> diff(r.size());
            for (size_t i = 0; i < r.size(); ++i) diff[i] = static_cast<double>(g[i]) - r[i];
            EXPECT_LT(l2(diff.begin(), diff.end()), tolerance * whole) << t.name << " (true gradient ~0)";
        }
    }
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The CPU trainer's loss in double for float weights (with its gradient and logits when asked):
// the reference every device result is compared with.
inline double cpu_reference(const ModelConfig& config, const train::ParamLayout& layout,
                            const std::vector<float>& params, const train::BatchView& batch,
                            const train::LossOptions& options, std::vector<double>* grad = nullptr,
                            std::vector<double>* logits = nullptr) {
    const std::vector<double> params_d(params.begin(), params.end());
    if (grad) grad->assign(params.size(), 0.0);
    return train::loss_and_gradient<double>(config, layout, params_d.data(), batch, grad ? grad->data() : nullptr,
                                            options, logits);
}

}  // namespace retnet::cuda::test
