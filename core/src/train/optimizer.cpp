// SPDX-License-Identifier: GPL-3.0-or-later
#include <algorithm>
#include <cmath>
#include <numbers>

#include "retnet/error.h"
#include "retnet/train.h"
#include "cpu/parallel.h"

namespace retnet::train {

AdamWState make_adamw_state(const ParamLayout& layout) {
    AdamWState s;
    s.m.assign(static_cast<size_t>(layout.total), 0.0f);
    s.v.assign(static_cast<size_t>(layout.total), 0.0f);
    return s;
}

void adamw_update(std::span<float> params, std::span<const float> grad, AdamWState& state,
                  const ParamLayout& layout, const AdamWConfig& config, double lr) {
    const size_t n = static_cast<size_t>(layout.total);
    if (params.size() != n || grad.size() != n || state.m.size() != n || state.v.size() != n)
        throw Error("AdamW: parameter, gradient and moment sizes differ");
    state.step += 1;
    const double bc1 = 1.0 - std::pow(config.beta1, static_cast<double>(state.step));
    const double bc2 = 1.0 - std::pow(config.beta2, static_cast<double>(state.step));
    const float b1 = static_cast<float>(config.beta1), b2 = static_cast<float>(config.beta2);
    for (const ParamTensor& t : layout.tensors) {
        const float decay = t.weight_decay ? static_cast<float>(lr * config.weight_decay) : 0.0f;
        const float step_size = static_cast<float>(lr / bc1);
        const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
        const float eps = static_cast<float>(config.eps);
        float* p = params.data() + t.offset;
        const float* g = grad.data() + t.offset;
        float* m = state.m.data() + t.offset;
        float* v = state.v.data() + t.offset;
        cpu::parallel_blocks(t.size, 65536, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) {
                m[i] = b1 * m[i] + (1.0f - b1) * g[i];
                v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
                p[i] -= decay * p[i];
                p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
            }
        });
    }
}

double clip_grad_norm(std::span<float> grad, double max_norm) {
    double ss = 0;
    for (float g : grad) ss += static_cast<double>(g) * g;
    const double norm = std::sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = static_cast<float>(max_norm / (norm + 1e-12));
        for (float& g : grad) g *= scale;
    }
    return norm;
}

double average_decay_at(double decay, int64_t step) {
    return std::min(decay, static_cast<double>(1 + step) / static_cast<double>(10 + step));
}

void update_average(std::span<float> average, std::span<const float> params, double decay_at_step) {
    if (average.size() != params.size()) throw Error("parameter average: sizes differ");
    const float keep = static_cast<float>(decay_at_step);
    float* a = average.data();
    const float* p = params.data();
    cpu::parallel_blocks(static_cast<int64_t>(average.size()), 65536, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) a[i] += (1.0f - keep) * (p[i] - a[i]);
    });
}

double learning_rate(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio) {
    if (warmup > 0 && step < warmup)
        return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const int64_t span = std::max<int64_t>(1, total - warmup);
    const double progress = std::clamp(static_cast<double>(step - warmup) / static_cast<double>(span), 0.0, 1.0);
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

}  // namespace retnet::train
