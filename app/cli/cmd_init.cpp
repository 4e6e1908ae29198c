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
    Args args(argv, {});
    const std::string config_path = args.require("config");
    const std::string out = args.require("out");
    const auto seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, INT64_MAX));
    args.finish();
    const ModelConfig config = load_config(config_path);
    // The weights, and their bytes as they are written.
    check_memory(saturating_product({2, estimated_weight_bytes(config)}), "a model of " + config_path);
    const Model model = make_random_model(config, seed);
    save_model(model, out);
    std::fprintf(stderr, "wrote %s: %s model, %s parameters\n", shown(out).c_str(), family_name(model.config.family),
                 format_count(model.parameter_count()).c_str());
    return 0;
}

const Command reg("init", "retnet init --config CONFIG.json --out DIR [--seed S]", &run_init);

}  // namespace
}  // namespace retnet::cli
