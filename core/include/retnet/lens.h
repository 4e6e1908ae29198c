// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The logit lens: each layer's residual stream read out through the model's final norm and output
// matrix, as if the layers after it were skipped. It shows at which depth the prediction forms;
// the last layer's reading is the model's own prediction.
#include <cstdint>
#include <span>
#include <vector>

#include "retnet/model.h"
#include "retnet/sampler.h"
#include "retnet/tensor.h"

namespace retnet {

struct LensReading {
    std::vector<TokenProb> top;  // best first
    double next_prob = -1.0;     // probability of the token that actually follows; -1 if none given
};

// layer_outputs: Introspection::layer_outputs of one forward call, L × (T, d). next_tokens: the
// token that follows each of the T positions (-1 where unknown), or empty. Returns (L, T) readings
// with the n_top most likely tokens each. Throws retnet::Error on shapes that do not match the model.
std::vector<std::vector<LensReading>> logit_lens(const Model& model, const std::vector<Tensor>& layer_outputs,
                                                 std::span<const int32_t> next_tokens, int n_top);

}  // namespace retnet
