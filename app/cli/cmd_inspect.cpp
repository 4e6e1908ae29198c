// SPDX-License-Identifier: GPL-3.0-or-later
// retnet inspect: the quantities the app draws — decay per head, one head's retention scores,
// the state norms per position, layer and head — and, with --lens, the logit lens.
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/memory_limit.h"
#include "retnet/error.h"
#include "retnet/lens.h"
#include "retnet/retention_reach.h"

namespace retnet::cli {
namespace {

nlohmann::json matrix_json(const Tensor& t, int rows, int cols, size_t offset = 0) {
    nlohmann::json out = nlohmann::json::array();
    for (int r = 0; r < rows; ++r) {
        nlohmann::json row = nlohmann::json::array();
        for (int c = 0; c < cols; ++c) row.push_back(t.data[offset + static_cast<size_t>(r) * cols + c]);
        out.push_back(std::move(row));
    }
    return out;
}

// What run_inspect measured, for printing.
struct Inspection {
    const ModelConfig& config;
    Form form;
    const std::vector<int32_t>& tokens;
    int layer, head, T;
    const Introspection& intro;
    const HeadReach& reach;
    const nlohmann::json& gammas;  // per head: gamma, half-life, effective span
    bool lens;
    const std::vector<std::vector<LensReading>>& readings;
};

void print_json(const Inspection& in) {
    nlohmann::json norms = nlohmann::json::array();  // [T][L][H]
    for (int t = 0; t < in.T; ++t)
        norms.push_back(matrix_json(in.intro.state_norms, in.config.n_layers, in.config.n_heads, static_cast<size_t>(t) * in.config.n_layers * in.config.n_heads));
    nlohmann::json j = {{"family", family_name(in.config.family)}, {"mode", form_name(in.form)},
                        {"tokens", in.tokens}, {"decay", in.gammas}, {"layer", in.layer}, {"head", in.head},
                        {"scores", matrix_json(in.intro.scores, in.T, in.T)},
                        {"reach", {{"mean_distance", in.reach.mean_distance},
                                   {"decay_only_distance", in.reach.decay_only_distance},
                                   {"queries", in.reach.queries}}},
                        {"state_norms", norms}};
    if (in.lens) {
        nlohmann::json layers = nlohmann::json::array();  // [L][T]
        for (const auto& layer_readings : in.readings) {
            nlohmann::json row = nlohmann::json::array();
            for (const LensReading& r : layer_readings) {
                nlohmann::json top = nlohmann::json::array();
                for (const TokenProb& p : r.top) top.push_back({{"id", p.id}, {"p", p.prob}});
                row.push_back({{"top", top}, {"p_next", r.next_prob >= 0 ? nlohmann::json(r.next_prob) : nlohmann::json(nullptr)}});
            }
            layers.push_back(std::move(row));
        }
        j["lens"] = std::move(layers);
    }
    std::printf("%s\n", json_text(j).c_str());
}

void print_text(const Inspection& in) {
    std::printf("decay per head (gamma, half-life in tokens):\n");
    for (size_t h = 0; h < in.gammas.size(); ++h)
        std::printf("  head %zu: gamma %.9f  half-life %.1f\n", h, in.gammas[h]["gamma"].get<double>(),
                    in.gammas[h]["half_life"].get<double>());
    std::printf("retention scores, layer %d head %d (%s form), rows = queries:\n", in.layer, in.head, form_name(in.form));
    for (int n = 0; n < in.T; ++n) {
        std::printf("  ");
        for (int m = 0; m < in.T; ++m) std::printf("%9.3g", in.intro.scores.data[static_cast<size_t>(n) * in.T + m]);
        std::printf("\n");
    }
    std::printf("reach: the scores read %.2f tokens back on average (|score|-weighted, over %d queries); "
                "the decay alone would give %.2f\n",
                in.reach.mean_distance, in.reach.queries, in.reach.decay_only_distance);
    std::printf("state norm ||S|| at the last position, per layer (heads across):\n");
    for (int l = 0; l < in.config.n_layers; ++l) {
        std::printf("  layer %d:", l);
        for (int h = 0; h < in.config.n_heads; ++h)
            std::printf(" %10.4g", in.intro.state_norms.data[(static_cast<size_t>(in.T - 1) * in.config.n_layers + l) * in.config.n_heads + h]);
        std::printf("\n");
    }
    if (in.lens) {
        std::printf("logit lens: per position, each layer's most likely next token (probability), and the\n"
                    "probability it gives the token that actually follows:\n");
        for (int t = 0; t < in.T; ++t) {
            std::printf("  pos %d (token %d):", t, in.tokens[static_cast<size_t>(t)]);
            for (size_t l = 0; l < in.readings.size(); ++l) {
                const LensReading& r = in.readings[l][static_cast<size_t>(t)];
                std::printf("  L%zu %d (%.3f)", l, r.top.front().id, r.top.front().prob);
                if (r.next_prob >= 0) std::printf(" next %.3f", r.next_prob);
            }
            std::printf("\n");
        }
    }
}

int run_inspect(const std::vector<std::string>& argv) {
    const auto app = make_app("inspect", "Prints each head's decay, one head's retention scores and reach, the state "
                                         "norms, and with --lens what every layer would predict.");
    std::string model_dir, device = "cpu", tokens_text, mode = "parallel";
    InterventionText edits;
    ForwardOptions options;
    int lens_top = 5, layer = 0, head = 0;
    bool json = false, lens = false;
    add_model_option(*app, model_dir);
    add_tokens_option(*app, tokens_text);
    add_form_options(*app, mode, options.chunk_size);
    add_int(*app, "--layer", layer, 0, 1 << 20, "layer of the head whose scores are shown");
    add_int(*app, "--head", head, 0, 1 << 20, "head whose scores are shown");
    add_flag(*app, "--lens", lens, "add the logit lens: each layer's stream read out through the output matrix");
    add_int(*app, "--lens-top", lens_top, 1, 1000, "tokens listed per layer and position by --lens");
    add_device_option(*app, device);
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    const std::vector<int32_t> tokens = parse_token_list(tokens_text);
    options.form = parse_form(mode);
    // Ctrl-C from the load to the logit lens: the forward polls it before each layer, the lens
    // before each layer's readout.
    const InterruptGuard interrupt;
    options.cancelled = interrupt.cancelled();
    auto model = load_model_edited(model_dir, edits);
    auto backend = make_backend_option(device, model);
    const ModelConfig& c = model->config;
    if (layer >= c.n_layers) throw Error("--layer " + std::to_string(layer) + " is out of range (model has " + std::to_string(c.n_layers) + " layers)");
    if (head >= c.n_heads) throw Error("--head " + std::to_string(head) + " is out of range (model has " + std::to_string(c.n_heads) + " heads)");

    const auto n_tokens = static_cast<uint64_t>(tokens.size());
    // One head's (T, T) scores, kept as floats, and as JSON values and text (about 72 bytes each);
    // the logit lens keeps every layer's (T, d) stream and reads (T, V) logits from it.
    const uint64_t kept = saturating_sum(
        {saturating_product({n_tokens, n_tokens, json ? 76u : 4u}),
         lens ? saturating_product({static_cast<uint64_t>(c.n_layers) + 1, n_tokens, static_cast<uint64_t>(c.d_model + c.vocab_size), 4})
              : 0});
    check_forward_memory(c, static_cast<int64_t>(n_tokens), options.form, options.chunk_size,
                         "inspecting " + std::to_string(n_tokens) + " tokens" + (json ? " as JSON" : ""), kept);
    Introspection intro;
    intro.want_state_norms = true;
    intro.score_layer = layer;
    intro.score_head = head;
    intro.want_layer_outputs = lens;
    backend->forward(tokens, options, &intro);
    const int T = static_cast<int>(tokens.size());
    std::vector<std::vector<LensReading>> readings;
    if (lens) readings = logit_lens(*model, intro.layer_outputs, tokens, lens_top, interrupt.cancelled());

    const HeadReach reach = retention_reach(intro.scores.data, T,
                                            std::exp(static_cast<double>(model->weights.log_decay[static_cast<size_t>(head)])));

    nlohmann::json gammas = nlohmann::json::array();
    for (float lg : model->weights.log_decay) {
        const double g = std::exp(static_cast<double>(lg));
        gammas.push_back({{"gamma", g},
                          {"half_life", g < 1.0 ? std::log(0.5) / std::log(g) : INFINITY},
                          {"effective_span_1e-3", g < 1.0 ? std::log(1e-3) / std::log(g) : INFINITY}});
    }
    const Inspection inspection{c, options.form, tokens, layer, head, T, intro, reach, gammas, lens, readings};
    if (json) print_json(inspection);
    else print_text(inspection);
    return 0;
}

const Command reg("inspect", "decay, retention scores, reach, state norms and the logit lens", &run_inspect);

}  // namespace
}  // namespace retnet::cli
