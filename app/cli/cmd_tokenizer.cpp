// SPDX-License-Identifier: GPL-3.0-or-later
// retnet tokenizer train|encode|decode: train a SentencePiece tokenizer (byte fallback on) and
// look at how text maps to ids.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "args.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/tokenizer.h"

namespace retnet::cli {
namespace {

// --model takes a model directory (its tokenizer.model) or the tokenizer file itself.
Tokenizer load_tokenizer_option(Args& args) {
    const std::string path = args.require("model");
    if (std::filesystem::is_directory(path)) {
        auto tokenizer = Tokenizer::load_from_model_dir(path);
        if (!tokenizer) throw Error(path + ": no tokenizer.model in this directory");
        return std::move(*tokenizer);
    }
    return Tokenizer::load(path);
}

int run_train(Args& args) {
    TokenizerTrainOptions options;
    const std::string text = args.require("text");
    options.vocab_size = static_cast<int>(args.get_int("vocab-size", 0, 8, 1 << 20));
    if (options.vocab_size == 0) throw Error("missing required option --vocab-size");
    const std::string out = args.require("out");
    options.type = args.get_or("type", "bpe");
    if (options.type != "bpe" && options.type != "unigram" && options.type != "char")
        throw Error("option --type must be bpe, unigram or char, got '" + options.type + "'");
    args.finish();
    const Tokenizer tokenizer = train_tokenizer_file(text, options, out);
    std::fprintf(stderr, "retnet tokenizer: wrote %s/tokenizer.model (%s, %d pieces, byte fallback)\n", out.c_str(),
                 options.type.c_str(), tokenizer.vocab_size());
    return 0;
}

int run_encode(Args& args) {
    const bool json = args.has("json");
    const Tokenizer tokenizer = load_tokenizer_option(args);
    const std::string text = args.require("text");
    args.finish();
    const std::vector<int32_t> ids = tokenizer.encode(text);
    if (json) {
        nlohmann::json pieces = nlohmann::json::array();
        for (int32_t id : ids) pieces.push_back(tokenizer.display_piece(id));
        std::printf("%s\n", nlohmann::json{{"ids", ids}, {"pieces", pieces}}.dump().c_str());
        return 0;
    }
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i) line += ',';
        line += std::to_string(ids[i]);
    }
    std::printf("%s\n", line.c_str());
    return 0;
}

int run_decode(Args& args) {
    const Tokenizer tokenizer = load_tokenizer_option(args);
    const std::vector<int32_t> ids = parse_token_list(args.require("tokens"));
    args.finish();
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= tokenizer.vocab_size())
            throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                        " is outside the tokenizer's vocabulary [0, " + std::to_string(tokenizer.vocab_size()) + ")");
    std::printf("%s\n", tokenizer.decode(ids).c_str());
    return 0;
}

int run_tokenizer(const std::vector<std::string>& argv) {
    if (argv.empty()) throw Error("missing action: retnet tokenizer train|encode|decode [options]");
    const std::string action = argv[0];
    Args args(std::vector<std::string>(argv.begin() + 1, argv.end()), {"json"});
    if (action == "train") return run_train(args);
    if (action == "encode") return run_encode(args);
    if (action == "decode") return run_decode(args);
    throw Error("unknown action '" + action + "' (expected train, encode or decode)");
}

const Command reg("tokenizer",
                  "retnet tokenizer train --text FILE --vocab-size N --out DIR [--type bpe|unigram|char] | "
                  "encode --model DIR --text STR [--json] | decode --model DIR --tokens 1,2,3",
                  &run_tokenizer);

}  // namespace
}  // namespace retnet::cli
