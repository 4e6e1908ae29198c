// SPDX-License-Identifier: GPL-3.0-or-later
// retnet logits: run one form on a token list and write float32 logits (T, V) as .npy.
#include <cstdio>

#include "cli_common.h"
#include "command.h"
#include "retnet/memory_limit.h"
#include "retnet/npy.h"

namespace retnet::cli {
namespace {

int run_logits(const std::vector<std::string>& argv) {
    Args args(argv, {});
    const std::vector<int32_t> tokens = tokens_option(args);
    ForwardOptions options;
    options.form = parse_form(args.get_or("mode", "parallel"));
    options.chunk_size = static_cast<int>(args.get_int("chunk-size", 0, 1, 1 << 20));
    const std::string out = args.require("out");
    auto model = load_model_option(args);
    auto backend = make_backend_option(args, model);
    args.finish();
    check_forward_memory(model->config, static_cast<int64_t>(tokens.size()), options.form, options.chunk_size,
                         "a forward pass over " + std::to_string(tokens.size()) + " tokens");
    const Tensor logits = backend->forward(tokens, options);
    write_npy(out, logits);
    std::fprintf(stderr, "wrote %s: logits %s (%s form, %s backend)\n", shown(out).c_str(), logits.shape_string().c_str(),
                 form_name(options.form), backend->name().c_str());
    return 0;
}

const Command reg("logits",
                  "retnet logits [--model DIR] --tokens 5,17,933 --mode parallel|recurrent|chunkwise "
                  "[--chunk-size N] [--mute L.H,...] [--gamma H=G,...] [--device cpu|cuda] --out FILE.npy",
                  &run_logits);

}  // namespace
}  // namespace retnet::cli
