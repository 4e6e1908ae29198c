// SPDX-License-Identifier: GPL-3.0-or-later
// retnet logits: run one form on a token list and write float32 logits (T, V) as .npy.
#include <cstdio>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/npy.h"

namespace retnet::cli {
namespace {

int run_logits(const std::vector<std::string>& argv) {
    const auto app = make_app("logits", "Runs one form over a token list and writes the float32 logits (T, vocab) as .npy.");
    std::string model_dir, device = "cpu", tokens_text, mode = "parallel", out;
    InterventionText edits;
    ForwardOptions options;
    add_model_option(*app, model_dir);
    add_tokens_option(*app, tokens_text);
    add_form_options(*app, mode, options.chunk_size);
    add_text(*app, "--out", out, "the .npy file to write (- for standard output)")->type_name("FILE")->required();
    add_device_option(*app, device);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    const std::vector<int32_t> tokens = parse_token_list(tokens_text);
    options.form = parse_form(mode);
    check_output_file(out);
    // Ctrl-C from the load to the end of the forward, which polls it before each layer. The .npy
    // is written after a last look at it: a Ctrl-C during that write lets it finish (the file is
    // renamed into place only when complete either way).
    const InterruptGuard interrupt;
    options.cancelled = interrupt.cancelled();
    auto model = load_model_edited(model_dir, edits);
    auto backend = make_backend_option(device, model);
    check_forward_memory(model->config, static_cast<int64_t>(tokens.size()), options.form, options.chunk_size,
                         "a forward pass over " + std::to_string(tokens.size()) + " tokens");
    const Tensor logits = backend->forward(tokens, options);
    interrupt.check();
    try {
        write_npy(out, logits);
    } catch (const Error&) {
        if (out == "-" || out == "/dev/stdout") check_stdout_reader();  // `| head -c 10`: quietly, 141
        throw;
    }
    std::fprintf(stderr, "wrote %s: logits %s (%s form, %s backend)\n", shown(out).c_str(), logits.shape_string().c_str(),
                 form_name(options.form), backend->name().c_str());
    return 0;
}

const Command reg("logits", "the logits of one form over a token list, as .npy", &run_logits);

}  // namespace
}  // namespace retnet::cli
