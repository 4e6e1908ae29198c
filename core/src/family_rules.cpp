// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/family_rules.h"

#include <cmath>

#include "retnet/error.h"
#include "retnet/forward.h"

namespace retnet {

QKScale qk_scale(const ModelConfig& config) {
    const float inv_sqrt_dk = 1.0f / std::sqrt(static_cast<float>(config.head_dim_k()));
    if (config.family == Family::TorchScale) return {1.0f, inv_sqrt_dk};
    return {inv_sqrt_dk, 1.0f};
}

float embedding_scale(const ModelConfig& config) {
    return config.scale_embedding ? std::sqrt(static_cast<float>(config.d_model)) : 1.0f;
}

RotaryPairs rotary_pairs(Family family) {
    return family == Family::TorchScale ? RotaryPairs::Interleaved : RotaryPairs::HalfSplit;
}

void check_form_start(const ModelConfig& config, Form form, int64_t position) {
    if (config.family == Family::TorchScale && form == Form::Parallel && position != 0)
        throw Error("the torchscale parallel form starts from an empty state (its row "
                    "normalization needs the whole row); continue with the recurrent or "
                    "chunkwise form");
}

std::vector<double> head_decays(std::span<const float> log_decay) {
    std::vector<double> gamma(log_decay.size());
    for (size_t h = 0; h < log_decay.size(); ++h) gamma[h] = std::exp(static_cast<double>(log_decay[h]));
    return gamma;
}

double advance_row_sum(double r, double gamma, int64_t steps) {
    for (int64_t t = 0; t < steps; ++t) r = next_row_sum(r, gamma);
    return r;
}

StepCoefficients recurrent_step(Family family, double gamma, double& row_sum) {
    if (family != Family::TorchScale) return {static_cast<float>(gamma), 1.0f};
    const double r_next = next_row_sum(row_sum, gamma);
    const StepCoefficients step{static_cast<float>(std::sqrt(row_sum) * gamma / std::sqrt(r_next)),
                                static_cast<float>(1.0 / std::sqrt(r_next))};
    row_sum = r_next;
    return step;
}

}  // namespace retnet
