// SPDX-License-Identifier: GPL-3.0-or-later
// retnet compare: run the three forms on the same tokens and report how far apart they are.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/memory_limit.h"
#include "retnet/equivalence.h"

namespace retnet::cli {
namespace {

nlohmann::json pair_json(const PairReport& p) {
    return {{"a", form_name(p.a)},
            {"b", form_name(p.b)},
            {"max_abs", p.max_abs},
            {"rel", p.rel},
            {"nmse", p.nmse},
            {"tolerance_abs", p.tolerance_abs},
            {"first_bad_position", p.first_bad_position},
            {"state_max_abs", p.state_max_abs},
            {"per_layer_max_abs", p.per_layer_max_abs},
            {"passed", p.passed()}};
}

int run_compare(const std::vector<std::string>& argv) {
    const auto app = make_app("compare", "Runs the parallel, recurrent and chunkwise forms over the tokens and reports, "
                                         "for each pair, the error of the logits and of each layer's output.");
    std::string model_dir, device = "cpu", tokens_text;
    InterventionText edits;
    EquivalenceOptions options;
    double eps = 0;
    bool json = false;
    add_model_option(*app, model_dir);
    add_tokens_option(*app, tokens_text);
    add_int(*app, "--chunk-size", options.chunk_size, 1, 1 << 20, "chunk length of the chunkwise form")
        ->default_str("the model's");
    add_number(*app, "--tolerance", options.tolerance, 0.0, 1.0, "largest error passed, relative to max |logit|");
    CLI::Option* eps_option =
        add_number(*app, "--head-norm-eps", eps, 0, 1, "override the head RMSNorm's eps (0: torchscale's forms agree)")
            ->default_str("the model's");
    add_device_option(*app, device);
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    const std::vector<int32_t> tokens = parse_token_list(tokens_text);
    if (eps_option->count() > 0) options.head_norm_eps = eps;
    // Ctrl-C from the load to the last form: the three forms poll it before each layer.
    const InterruptGuard interrupt;
    options.cancelled = interrupt.cancelled();
    auto model = load_model_edited(model_dir, edits);
    auto backend = make_backend_option(device, model);
    const auto t = static_cast<uint64_t>(tokens.size());  // three forms' logits and layer outputs side by side
    check_forward_memory(model->config, static_cast<int64_t>(t), Form::Parallel, 0,
                         "comparing the forms on " + std::to_string(t) + " tokens",
                         saturating_product({3, t, static_cast<uint64_t>(model->config.vocab_size) +
                                                       static_cast<uint64_t>(model->config.n_layers) * model->config.d_model, 4}));

    const EquivalenceReport report = compare_forms(*backend, tokens, options);
    if (json) {
        nlohmann::json j = {{"family", format_name(model->config)}, {"device", backend->name()},
                            {"tokens", tokens.size()}, {"chunk_size", report.chunk_size},
                            {"head_norm_eps", report.head_norm_eps}, {"tolerance_rel", options.tolerance},
                            {"passed", report.passed()}};
        for (const PairReport& p : report.pairs) j["pairs"].push_back(pair_json(p));
        std::printf("%s\n", json_text(j, 2).c_str());
        return 0;
    }
    std::printf("%s model, %zu tokens, chunk size %d, head-norm eps %g, %s backend, tolerance %g x max|logit|\n",
                format_name(model->config), tokens.size(), report.chunk_size, report.head_norm_eps,
                backend->name().c_str(), options.tolerance);
    std::printf("%-22s %12s %12s %12s %10s  %s\n", "pair", "max-abs", "rel", "nmse", "first bad", "per-layer max-abs");
    for (const PairReport& p : report.pairs) {
        std::string layers;
        for (double e : p.per_layer_max_abs) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%s%.2e", layers.empty() ? "" : " ", e);
            layers += buf;
        }
        const std::string name = std::string(form_name(p.a)) + " vs " + form_name(p.b);
        std::printf("%-22s %12.3e %12.3e %12.3e %10s  %s  %s\n", name.c_str(), p.max_abs, p.rel, p.nmse,
                    p.first_bad_position < 0 ? "-" : std::to_string(p.first_bad_position).c_str(), layers.c_str(),
                    p.passed() ? "PASS" : "FAIL");
    }
    if (model->config.family == Family::TorchScale && !report.passed() && !options.head_norm_eps)
        std::printf("note: torchscale's forms differ by a per-row scale that the head RMSNorm removes only when "
                    "its eps is 0; try --head-norm-eps 0\n");
    return 0;
}

const Command reg("compare", "the three forms side by side: where and how much they differ", &run_compare);

}  // namespace
}  // namespace retnet::cli
