// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/retention_reach.h"

#include <cmath>
#include <string>

#include "retnet/error.h"

namespace retnet {

HeadReach retention_reach(std::span<const float> scores, int T, double gamma) {
    if (T < 0 || scores.size() != static_cast<size_t>(T) * static_cast<size_t>(T))
        throw Error("retention_reach: " + std::to_string(scores.size()) + " scores for " + std::to_string(T) +
                    " tokens (expected T·T)");
    if (!(gamma > 0.0 && gamma <= 1.0)) throw Error("retention_reach: decay " + std::to_string(gamma) + " outside (0, 1]");
    HeadReach reach;
    double measured_sum = 0, decay_sum = 0;
    // Running sums of γ^d and d·γ^d for d = 0..n give each query's decay-only mean in O(1).
    double weight = 0, weighted_distance = 0, power = 1;
    for (int n = 0; n < T; ++n) {
        weight += power;
        weighted_distance += static_cast<double>(n) * power;
        power *= gamma;
        const float* row = scores.data() + static_cast<size_t>(n) * static_cast<size_t>(T);
        double mass = 0, distance = 0;
        for (int m = 0; m <= n; ++m) {
            const double a = std::abs(static_cast<double>(row[m]));
            mass += a;
            distance += a * static_cast<double>(n - m);
        }
        if (!(mass > 0) || !std::isfinite(mass)) continue;
        measured_sum += distance / mass;
        decay_sum += weighted_distance / weight;
        ++reach.queries;
    }
    if (reach.queries > 0) {
        reach.mean_distance = measured_sum / reach.queries;
        reach.decay_only_distance = decay_sum / reach.queries;
    }
    return reach;
}

std::vector<HeadReach> retention_reach(const Tensor& scores, std::span<const float> log_decay) {
    if (scores.rank() != 3 || scores.dim(0) != static_cast<int64_t>(log_decay.size()) || scores.dim(1) != scores.dim(2))
        throw Error("retention_reach: scores of shape " + scores.shape_string() + " for " +
                    std::to_string(log_decay.size()) + " heads (expected (H, T, T))");
    const auto T = static_cast<int>(scores.dim(1));
    const size_t per_head = static_cast<size_t>(T) * static_cast<size_t>(T);
    std::vector<HeadReach> out;
    for (size_t h = 0; h < log_decay.size(); ++h)
        out.push_back(retention_reach(std::span<const float>(scores.data).subspan(h * per_head, per_head), T,
                                      std::exp(static_cast<double>(log_decay[h]))));
    return out;
}

}  // namespace retnet
