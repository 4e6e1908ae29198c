// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/intervention.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "retnet/error.h"

namespace retnet {

namespace {

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        item.erase(0, item.find_first_not_of(" \t"));
        item.erase(item.find_last_not_of(" \t") + 1);
        if (!item.empty()) items.push_back(item);
    }
    return items;
}

int parse_index(const std::string& text, const std::string& entry, const char* what) {
    size_t used = 0;
    int value = -1;
    try {
        value = std::stoi(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (text.empty() || used != text.size() || value < 0)
        throw Error("bad " + std::string(what) + " in '" + entry + "': expected a number ≥ 0");
    return value;
}

std::string format_gamma(double g) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", g);
    return buf;
}

}  // namespace

Interventions parse_interventions(const std::string& mute, const std::string& gamma) {
    Interventions iv;
    for (const std::string& entry : split_list(mute)) {
        const size_t dot = entry.find('.');
        if (dot == std::string::npos)
            throw Error("bad head to mute '" + entry + "': expected layer.head, e.g. 2.3");
        const std::pair<int, int> head{parse_index(entry.substr(0, dot), entry, "layer"),
                                       parse_index(entry.substr(dot + 1), entry, "head")};
        if (std::find(iv.muted.begin(), iv.muted.end(), head) == iv.muted.end()) iv.muted.push_back(head);
    }
    for (const std::string& entry : split_list(gamma)) {
        const size_t eq = entry.find('=');
        if (eq == std::string::npos) throw Error("bad decay override '" + entry + "': expected head=gamma, e.g. 0=0.9");
        const int head = parse_index(entry.substr(0, eq), entry, "head");
        const std::string value = entry.substr(eq + 1);
        size_t used = 0;
        double g = NAN;
        try {
            g = std::stod(value, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (value.empty() || used != value.size() || !(g > 0.0 && g <= 1.0))
            throw Error("bad decay in '" + entry + "': gamma must be in (0, 1]");
        iv.gamma[head] = g;
    }
    return iv;
}

std::string describe(const Interventions& iv) {
    std::string muted, gammas;
    for (const auto& [layer, head] : iv.muted) {
        if (!muted.empty()) muted += ',';
        muted += std::to_string(layer);
        muted += '.';
        muted += std::to_string(head);
    }
    for (const auto& [head, g] : iv.gamma) {
        if (!gammas.empty()) gammas += ',';
        gammas += std::to_string(head);
        gammas += '=';
        gammas += format_gamma(g);
    }
    std::string out;
    if (!muted.empty()) out = "mute " + muted;
    if (!gammas.empty()) out += (out.empty() ? "gamma " : "; gamma ") + gammas;
    return out;
}

Model apply_interventions(const Model& model, const Interventions& iv) {
    const ModelConfig& c = model.config;
    for (const auto& [layer, head] : iv.muted) {
        if (layer >= c.n_layers)
            throw Error("cannot mute layer " + std::to_string(layer) + ": the model has " +
                        std::to_string(c.n_layers) + " layers (0-based)");
        if (head >= c.n_heads)
            throw Error("cannot mute head " + std::to_string(head) + ": the model has " +
                        std::to_string(c.n_heads) + " heads (0-based)");
    }
    if (!iv.gamma.empty() && c.is_transformer())
        throw Error("cannot set a head's decay: the Transformer twin has none (attention does not decay)");
    for (const auto& [head, g] : iv.gamma)
        if (head >= c.n_heads)
            throw Error("cannot set the decay of head " + std::to_string(head) + ": the model has " +
                        std::to_string(c.n_heads) + " heads (0-based)");
    Model out = model;
    const int64_t dv = c.head_dim_v(), cols = static_cast<int64_t>(c.n_heads) * dv;
    for (const auto& [layer, head] : iv.muted) {
        Tensor& o = out.weights.layers[static_cast<size_t>(layer)].o_proj;  // (d, H·Dv)
        for (int64_t r = 0; r < c.d_model; ++r) {
            if (o.storage() == Storage::BF16)
                std::fill_n(o.bf16.begin() + r * cols + head * dv, dv, uint16_t{0});  // bf16 +0.0
            else
                std::fill_n(o.data.begin() + r * cols + head * dv, dv, 0.0f);
        }
    }
    for (const auto& [head, g] : iv.gamma)
        out.weights.log_decay[static_cast<size_t>(head)] = static_cast<float>(std::log(g));
    return out;
}

}  // namespace retnet
