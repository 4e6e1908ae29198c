// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/lens.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "cpu/cpu_ops.h"
#include "retnet/error.h"

namespace retnet {

std::vector<std::vector<LensReading>> logit_lens(const Model& model, const std::vector<Tensor>& layer_outputs,
                                                 std::span<const int32_t> tokens, int n_top,
                                                 const std::function<bool()>& cancelled) {
    const ModelConfig& c = model.config;
    const int d = c.d_model, V = c.vocab_size;
    if (static_cast<int>(layer_outputs.size()) != c.n_layers)
        throw Error("logit lens: " + std::to_string(layer_outputs.size()) + " layer outputs for a model of " +
                    std::to_string(c.n_layers) + " layers");
    for (int32_t id : tokens)
        if (id < 0 || id >= V) throw Error("logit lens: token " + std::to_string(id) + " is outside the vocabulary");
    std::vector<std::vector<LensReading>> readings;
    std::vector<float> x, logits;  // (T, d), (T, V)
    for (const Tensor& out : layer_outputs) {
        throw_if_cancelled(cancelled);
        if (out.rank() != 2 || out.dim(1) != d || (!readings.empty() && out.dim(0) != layer_outputs[0].dim(0)))
            throw Error("logit lens: layer output of shape " + out.shape_string() + ", expected (T, " +
                        std::to_string(d) + ") for every layer");
        const int T = static_cast<int>(out.dim(0));
        if (static_cast<int>(tokens.size()) != T)
            throw Error("logit lens: " + std::to_string(tokens.size()) + " tokens for layer outputs of " +
                        std::to_string(T) + " positions");
        x = out.data;
        cpu::rms_norm_rows(x.data(), T, d, model.weights.final_norm, c.norm_eps);
        logits.resize(static_cast<size_t>(T) * V);
        cpu::linear(x.data(), T, d, model.weights.output_matrix(), logits.data());
        std::vector<LensReading>& layer = readings.emplace_back(static_cast<size_t>(T));
        for (int t = 0; t < T; ++t) {
            const std::span<const float> row(logits.data() + static_cast<size_t>(t) * V, static_cast<size_t>(V));
            layer[static_cast<size_t>(t)].top = top_probabilities(row, n_top);
            if (t + 1 < T)
                layer[static_cast<size_t>(t)].next_prob = std::exp(log_probability(row, tokens[static_cast<size_t>(t + 1)]));
        }
    }
    return readings;
}

}  // namespace retnet
