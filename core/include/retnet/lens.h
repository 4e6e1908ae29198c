// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The logit lens: each layer's residual stream read out through the model's final norm and output
// matrix, as if the layers after it were skipped. It shows at which depth the prediction forms;
// the last layer's reading is the model's own prediction.
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "retnet/model.h"
#include "retnet/sampler.h"
#include "retnet/tensor.h"

namespace retnet {

struct LensReading {
    std::vector<TokenProb> top;  // best first
    double next_prob = -1.0;     // probability of the token that follows; -1 at the last position
};

// layer_outputs: Introspection::layer_outputs of the forward call that ran `tokens` (T), L × (T, d).
// Position t is read against tokens[t + 1]. Returns (L, T) readings with the n_top most likely
// tokens each. Throws retnet::Error on shapes or tokens that do not match the model. `cancelled` is
// asked before each layer's readout (a (T, V) product each): true throws retnet::Cancelled.
std::vector<std::vector<LensReading>> logit_lens(const Model& model, const std::vector<Tensor>& layer_outputs,
                                                 std::span<const int32_t> tokens, int n_top,
                                                 const std::function<bool()>& cancelled = {});

}  // namespace retnet
