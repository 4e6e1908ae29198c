// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What-if edits of a model, for seeing what a head does: mute a head (its output no longer
// reaches the residual stream) or give a head another decay γ. Both are applied to a copy of the
// weights, so every backend and every form runs them unchanged:
//  - muting head h of layer l zeroes columns [h·Dv, (h+1)·Dv) of that layer's o_proj — exactly the
//    head's part of the retention branch; its scores and state still evolve, they are just not read;
//  - γ is one value per head index shared by all layers in both families, so an override applies
//    to head h of every layer.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "retnet/model.h"

namespace retnet {

struct Interventions {
    std::vector<std::pair<int, int>> muted;  // (layer, head), each at most once
    std::map<int, double> gamma;             // head -> γ in (0, 1]

    bool empty() const { return muted.empty() && gamma.empty(); }
};

// "2.3,0.1" mutes layer 2 head 3 and layer 0 head 1; "0=0.9,5=0.999" sets γ of heads 0 and 5.
// Either may be empty. Throws retnet::Error naming the bad entry.
Interventions parse_interventions(const std::string& mute, const std::string& gamma);
// The same syntax back, e.g. "mute 2.3,0.1; gamma 0=0.9"; "" when empty.
std::string describe(const Interventions& interventions);
// A copy of `model` with the edits applied; throws retnet::Error for a layer or head the model
// does not have.
Model apply_interventions(const Model& model, const Interventions& interventions);

}  // namespace retnet
