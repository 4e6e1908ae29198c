// SPDX-License-Identifier: GPL-3.0-or-later
// retnet eval: loss per token and bits per character of (the tail of) a text file, in windows
// that each start from an empty state (the trainer's validation) or, with --stream, as one
// sequence whose recurrent state is carried through the whole text.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "args.h"
#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/train_ops.h"
#include "retnet/trainer.h"
#include "retnet/utf8.h"

namespace retnet::cli {
namespace {

int run_eval(const std::vector<std::string>& argv) {
    Args args(argv, {"stream"});
    const std::string model_dir = args.require("model");
    const std::string text_path = args.require("text");
    const double tail = args.get_double("tail", 1.0, 1e-6, 1.0);
    const int window = static_cast<int>(args.get_int("window", 256, 1, 1 << 20));
    const int threads = static_cast<int>(args.get_int("threads", 0, 0, 4096));
    const bool stream = args.has("stream");
    if (stream && args.has("window")) throw Error("--stream and --window exclude each other (--stream has no windows)");
    std::unique_ptr<Backend> backend;
    if (stream) backend = make_backend_option(args, std::make_shared<const Model>(load_model(model_dir)));
    args.finish();
    train::ops::set_num_threads(threads);

    const std::string tok_path = (std::filesystem::path(model_dir) / "tokenizer.model").string();
    const Tokenizer tokenizer = Tokenizer::load(tok_path);
    std::ifstream in(text_path, std::ios::binary);
    if (!in) throw Error(text_path + ": cannot open");
    std::stringstream buffer;
    buffer << in.rdbuf();
    const std::string text = buffer.str();
    check_utf8(text, text_path);
    const std::string_view part = tail < 1.0 ? train::split_tail(text, tail).second : std::string_view(text);
    train::EvalResult r;
    if (stream) {
        r = train::evaluate_text_streaming(*backend, tokenizer, part);
    } else {
        const train::LoadedWeights w = train::load_trained_weights(model_dir);
        r = train::evaluate_text(w.config, w.layout, w.params.data(), tokenizer, part, window);
    }
    std::printf("text            %s (%s)\n", text_path.c_str(),
                tail < 1.0 ? ("last " + std::to_string(tail * 100).substr(0, 5) + "% of the characters").c_str()
                           : "whole file");
    if (stream)
        std::printf("tokens          %lld predicted, one sequence (state carried, %s backend)\n",
                    static_cast<long long>(r.tokens), backend->name().c_str());
    else
        std::printf("tokens          %lld predicted, windows of %d\n", static_cast<long long>(r.tokens), window);
    std::printf("characters      %lld\n", static_cast<long long>(r.characters));
    std::printf("loss per token  %.4f nats\n", r.loss_per_token);
    std::printf("bits per char   %.4f\n", r.bits_per_char);
    return 0;
}

const Command reg("eval", "retnet eval --model DIR --text FILE [--tail FRACTION] [--window T | --stream [--device D]] [--threads N]",
                  &run_eval);

}  // namespace
}  // namespace retnet::cli
