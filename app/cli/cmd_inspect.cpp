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

int run_inspect(const std::vector<std::string>& argv) {
    Args args(argv, {"json", "lens"});
    const bool json = args.has("json");
    const bool lens = args.has("lens");
    const int lens_top = static_cast<int>(args.get_int("lens-top", 5, 1, 1000));
    const std::vector<int32_t> tokens = tokens_option(args);
    ForwardOptions options;
    options.form = parse_form(args.get_or("mode", "parallel"));
    options.chunk_size = static_cast<int>(args.get_int("chunk-size", 0, 1, 1 << 20));
    const int layer = static_cast<int>(args.get_int("layer", 0, 0, 1 << 20));
    const int head = static_cast<int>(args.get_int("head", 0, 0, 1 << 20));
    auto model = load_model_option(args);
    auto backend = make_backend_option(args, model);
    args.finish();
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
    if (lens) readings = logit_lens(*model, intro.layer_outputs, tokens, lens_top);

    const HeadReach reach = retention_reach(intro.scores.data, T,
                                            std::exp(static_cast<double>(model->weights.log_decay[static_cast<size_t>(head)])));

    nlohmann::json gammas = nlohmann::json::array();
    for (float lg : model->weights.log_decay) {
        const double g = std::exp(static_cast<double>(lg));
        gammas.push_back({{"gamma", g},
                          {"half_life", g < 1.0 ? std::log(0.5) / std::log(g) : INFINITY},
                          {"effective_span_1e-3", g < 1.0 ? std::log(1e-3) / std::log(g) : INFINITY}});
    }
    if (json) {
        nlohmann::json norms = nlohmann::json::array();  // [T][L][H]
        for (int t = 0; t < T; ++t)
            norms.push_back(matrix_json(intro.state_norms, c.n_layers, c.n_heads, static_cast<size_t>(t) * c.n_layers * c.n_heads));
        nlohmann::json j = {{"family", family_name(c.family)}, {"mode", form_name(options.form)},
                            {"tokens", tokens}, {"decay", gammas}, {"layer", layer}, {"head", head},
                            {"scores", matrix_json(intro.scores, T, T)},
                            {"reach", {{"mean_distance", reach.mean_distance},
                                       {"decay_only_distance", reach.decay_only_distance},
                                       {"queries", reach.queries}}},
                            {"state_norms", norms}};
        if (lens) {
            nlohmann::json layers = nlohmann::json::array();  // [L][T]
            for (const auto& layer_readings : readings) {
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
        std::printf("%s\n", j.dump().c_str());
        return 0;
    }
    std::printf("decay per head (gamma, half-life in tokens):\n");
    for (size_t h = 0; h < gammas.size(); ++h)
        std::printf("  head %zu: gamma %.9f  half-life %.1f\n", h, gammas[h]["gamma"].get<double>(),
                    gammas[h]["half_life"].get<double>());
    std::printf("retention scores, layer %d head %d (%s form), rows = queries:\n", layer, head, form_name(options.form));
    for (int n = 0; n < T; ++n) {
        std::printf("  ");
        for (int m = 0; m < T; ++m) std::printf("%9.3g", intro.scores.data[static_cast<size_t>(n) * T + m]);
        std::printf("\n");
    }
    std::printf("reach: the scores read %.2f tokens back on average (|score|-weighted, over %d queries); "
                "the decay alone would give %.2f\n",
                reach.mean_distance, reach.queries, reach.decay_only_distance);
    std::printf("state norm ||S|| at the last position, per layer (heads across):\n");
    for (int l = 0; l < c.n_layers; ++l) {
        std::printf("  layer %d:", l);
        for (int h = 0; h < c.n_heads; ++h)
            std::printf(" %10.4g", intro.state_norms.data[(static_cast<size_t>(T - 1) * c.n_layers + l) * c.n_heads + h]);
        std::printf("\n");
    }
    if (lens) {
        std::printf("logit lens: per position, each layer's most likely next token (probability), and the\n"
                    "probability it gives the token that actually follows:\n");
        for (int t = 0; t < T; ++t) {
            std::printf("  pos %d (token %d):", t, tokens[static_cast<size_t>(t)]);
            for (size_t l = 0; l < readings.size(); ++l) {
                const LensReading& r = readings[l][static_cast<size_t>(t)];
                std::printf("  L%zu %d (%.3f)", l, r.top.front().id, r.top.front().prob);
                if (r.next_prob >= 0) std::printf(" next %.3f", r.next_prob);
            }
            std::printf("\n");
        }
    }
    return 0;
}

const Command reg("inspect",
                  "retnet inspect [--model DIR] --tokens 5,17,933 [--mode parallel|recurrent|chunkwise] "
                  "[--chunk-size N] [--layer L --head H] [--lens [--lens-top N]] [--mute L.H,...] [--gamma H=G,...] [--device cpu|cuda] [--json]",
                  &run_inspect);

}  // namespace
}  // namespace retnet::cli
