// SPDX-License-Identifier: GPL-3.0-or-later
// retnet init: a model directory with the reference implementation's random initialization,
// for experiments, benchmarks and as the starting point of training.
#include <cstdio>

#include "cli_common.h"
#include "command.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"

namespace retnet::cli {
namespace {

int run_init(const std::vector<std::string>& argv) {
    const auto app = make_app("init", "Creates a model directory with random weights, initialized as the reference "
                                      "implementation does.");
    std::string config_path, out;
    int64_t seed = 1;
    add_text(*app, "--config", config_path, "the model's config.json (fla or torchscale keys)")->type_name("FILE")->required();
    add_text(*app, "--out", out, "the directory to write")->type_name("DIR")->required();
    add_int(*app, "-s,--seed", seed, 0, INT64_MAX, "random seed of the weights");
    parse(*app, argv);
    const ModelConfig config = load_config(config_path);
    // The weights, and their bytes as they are written.
    check_memory(saturating_product({2, estimated_weight_bytes(config)}), "a model of " + config_path);
    const Model model = make_random_model(config, static_cast<uint64_t>(seed));
    save_model(model, out);
    std::fprintf(stderr, "wrote %s: %s model, %s parameters\n", shown(out).c_str(), family_name(model.config.family),
                 format_count(model.parameter_count()).c_str());
    return 0;
}

const Command reg("init", "a model with random weights from a config.json", &run_init);

}  // namespace
}  // namespace retnet::cli
