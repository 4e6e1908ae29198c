// SPDX-License-Identifier: GPL-3.0-or-later
// retnet init: a model directory with the reference implementation's random initialization,
// for experiments, benchmarks and as the starting point of training; with --arch transformer the
// Transformer twin of a RetNet (docs/transformer.md), or a Llama model from its config.
#include <cstdio>
#include <filesystem>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model_names.h"
#include "retnet/model_stats.h"

namespace retnet::cli {
namespace {

namespace fs = std::filesystem;

// The config to initialize: the file's, or the twin of the RetNet it (or --like's model) describes.
ModelConfig config_to_init(const std::string& arch, const std::string& config_path, const std::string& like) {
    if (config_path.empty() == like.empty()) throw Error("give either --config FILE or --like DIR");
    const std::string source = like.empty() ? config_path : (fs::path(resolve_model_path(like)) / "config.json").string();
    if (arch != "retnet" && arch != "transformer")
        throw Error("option --arch must be one of retnet, transformer, got '" + arch + "'");
    const ModelConfig config = load_config(source);
    if (arch == "retnet") {
        if (config.is_transformer()) throw Error(source + " describes a Llama Transformer; add --arch transformer");
        return config;
    }
    return config.is_transformer() ? config : transformer_twin_config(config);
}

// The tokenizer of the --like model, so that the twin reads the same text.
void copy_tokenizer(const std::string& like, const std::string& out) {
    if (like.empty()) return;
    const fs::path from = fs::path(resolve_model_path(like)) / "tokenizer.model", to = fs::path(out) / "tokenizer.model";
    std::error_code ec;
    if (fs::is_regular_file(from, ec) && !fs::exists(to, ec)) fs::copy_file(from, to, ec);
    if (ec) throw Error("cannot copy " + from.string() + " to " + to.string() + ": " + ec.message());
}

int run_init(const std::vector<std::string>& argv) {
    const auto app = make_app("init", "Creates a model directory with random weights, initialized as the reference "
                                      "implementation does.");
    std::string config_path, like, out, arch = "retnet";
    int64_t seed = 1;
    add_text(*app, "--config", config_path, "the model's config.json (fla, torchscale or, with --arch transformer, llama keys)")
        ->type_name("FILE");
    add_text(*app, "--like", like, "with --arch transformer: the RetNet model whose twin to make (its tokenizer is copied)")
        ->type_name("DIR");
    add_text(*app, "--arch", arch, "retnet, or transformer: the Transformer twin of the RetNet config (same width, "
                                   "depth, heads, vocabulary and parameter count; docs/transformer.md)")
        ->type_name("retnet|transformer");
    add_text(*app, "--out", out, "the directory to write")->type_name("DIR")->required();
    add_int(*app, "-s,--seed", seed, 0, INT64_MAX, "random seed of the weights");
    parse(*app, argv);
    const ModelConfig config = config_to_init(arch, config_path, like);
    // The weights, and their bytes as they are written.
    check_memory(saturating_product({2, estimated_weight_bytes(config)}), "a model of " + (like.empty() ? config_path : like));
    const Model model = make_random_model(config, static_cast<uint64_t>(seed));
    save_model(model, out);
    copy_tokenizer(like, out);
    std::fprintf(stderr, "wrote %s: %s model, %s parameters\n", shown(out).c_str(), format_name(model.config),
                 format_count(model.parameter_count()).c_str());
    return 0;
}

const Command reg("init", "a model with random weights from a config.json (or a RetNet's Transformer twin)", &run_init);

}  // namespace
}  // namespace retnet::cli
