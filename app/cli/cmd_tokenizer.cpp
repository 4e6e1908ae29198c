// SPDX-License-Identifier: GPL-3.0-or-later
// retnet tokenizer train|encode|decode: train a SentencePiece tokenizer (byte fallback on) and
// look at how text maps to ids.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <new>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/tokenizer.h"
#include "retnet/utf8.h"

namespace retnet::cli {
namespace {

// --model takes a model directory (its tokenizer.model) or the tokenizer file itself.
Tokenizer load_tokenizer_option(const std::string& path) {
    if (path.empty()) throw Error("option --model is empty (a model directory or a tokenizer.model)");
    if (path == "-") throw Error("option --model: a tokenizer is read from a file (a model directory or a tokenizer.model), not standard input");
    std::error_code error;  // a name too long or a loop of links: Tokenizer::load says why below
    if (std::filesystem::is_directory(path, error)) {
        auto tokenizer = Tokenizer::load_from_model_dir(path);
        if (!tokenizer) throw Error(path + ": no tokenizer.model in this directory");
        return std::move(*tokenizer);
    }
    return Tokenizer::load(path);
}

// What the three actions read; each declares its own part on its subcommand.
struct TokenizerOptions {
    std::string text, out, model, tokens;
    TokenizerTrainOptions train;
    bool json = false;
};

// SentencePiece trains in threads of its own, where a failed allocation cannot reach this command's
// handler: std::terminate ended the process (exit 134, "terminate called after throwing an instance of
// 'std::bad_alloc'") under ulimit -v when the text needed more than train_tokenizer's estimate (a
// random-CJK text needs ~1.5× it). While a TrainerOutOfMemoryExit lives, an allocation that fails in
// another thread ends the process with the command's one out-of-memory line and exit status 1 (nothing
// is written before the training ends); in this thread it throws as ever.
class TrainerOutOfMemoryExit {
public:
    TrainerOutOfMemoryExit() {
        // formed now: there is no memory to form it with when it is needed
        line() = address_space_limit_binds()
                     ? "retnet tokenizer: error: out of memory in the tokenizer trainer under the memory limit of " +
                           format_bytes(memory_limit()) + " (" + memory_limit_source() +
                           "; raise it or train on less text)\n"
                     : "retnet tokenizer: error: out of memory in the tokenizer trainer (train on less text)\n";
        owner() = std::this_thread::get_id();
        previous_ = std::set_new_handler(&handler);
    }
    ~TrainerOutOfMemoryExit() { std::set_new_handler(previous_); }
    TrainerOutOfMemoryExit(const TrainerOutOfMemoryExit&) = delete;
    TrainerOutOfMemoryExit& operator=(const TrainerOutOfMemoryExit&) = delete;

private:
    static std::string& line() {
        static std::string text;
        return text;
    }
    static std::thread::id& owner() {
        static std::thread::id id;
        return id;
    }
    static void handler() {
        if (std::this_thread::get_id() == owner()) throw std::bad_alloc();
        const std::string& text = line();
        (void)!::write(STDERR_FILENO, text.data(), text.size());
        ::_exit(1);
    }
    std::new_handler previous_ = nullptr;
};

int run_train(const TokenizerOptions& o) {
    const TokenizerTrainOptions& options = o.train;
    if (o.out.empty()) throw Error("option --out is empty (the directory to write tokenizer.model into)");
    if (o.out == "-") throw Error("option --out: a tokenizer is a directory (tokenizer.model inside), not standard output");
    if (options.type != "bpe" && options.type != "unigram" && options.type != "char")
        throw Error("option --type must be bpe, unigram or char, got '" + options.type + "'");
    // before the training, not after it: the directory, and the file where one is there
    check_output_directory(o.out, "the tokenizer's directory");
    if (std::error_code ec; std::filesystem::is_directory(o.out, ec))
        check_output_file((std::filesystem::path(o.out) / "tokenizer.model").string());
    const Tokenizer tokenizer = [&] {
        const TrainerOutOfMemoryExit trainer_threads;
        return train_tokenizer_file(o.text, options, o.out);
    }();
    // A unigram model stops where the text has no more pieces to give (SentencePiece's soft limit):
    // said, so that a smaller model is not taken for the size asked
    const std::string short_of = tokenizer.vocab_size() < options.vocab_size
                                     ? "; fewer than --vocab-size " + std::to_string(options.vocab_size) +
                                           ": the text holds no more pieces for this model"
                                     : "";
    std::fprintf(stderr, "retnet tokenizer: wrote %s/tokenizer.model (%s, %d pieces, byte fallback%s)\n",
                 shown(o.out).c_str(), options.type.c_str(), tokenizer.vocab_size(), short_of.c_str());
    return 0;
}

int run_encode(const TokenizerOptions& o) {
    check_utf8(o.text, "option --text");
    const Tokenizer tokenizer = load_tokenizer_option(o.model);
    const std::vector<int32_t> ids = tokenizer.encode(o.text);
    if (o.json) {
        nlohmann::json pieces = nlohmann::json::array();
        for (int32_t id : ids) pieces.push_back(tokenizer.display_piece(id));
        std::printf("%s\n", json_text(nlohmann::json{{"ids", ids}, {"pieces", pieces}}).c_str());
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

int run_decode(const TokenizerOptions& o) {
    const Tokenizer tokenizer = load_tokenizer_option(o.model);
    const std::vector<int32_t> ids = parse_token_list(o.tokens);
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= tokenizer.vocab_size())
            throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                        " is outside the tokenizer's vocabulary [0, " + std::to_string(tokenizer.vocab_size()) + ")");
    // Control bytes (a NUL, ESC, CSI) shown as symbols: they would end the line or drive the terminal.
    std::printf("%s\n", printable(tokenizer.decode(ids)).c_str());
    return 0;
}

void add_actions(CLI::App& app, TokenizerOptions& o) {
    CLI::App* train = app.add_subcommand("train", "train a sentencepiece tokenizer (byte fallback on) on a text");
    add_text(*train, "--text", o.text, "the UTF-8 training text")->type_name("FILE")->required();
    add_int(*train, "--vocab-size", o.train.vocab_size, 8, 1 << 20, "pieces in the vocabulary")->required();
    add_text(*train, "--out", o.out, "the directory to write tokenizer.model into")->type_name("DIR")->required();
    add_text(*train, "--type", o.train.type, "the sentencepiece model")->type_name("bpe|unigram|char");
    CLI::App* encode = app.add_subcommand("encode", "the token ids of a text");
    add_text(*encode, "-m,--model", o.model, "a model directory or a tokenizer.model")->type_name("DIR|FILE")->required();
    add_text(*encode, "--text", o.text, "the text to encode")->required();
    add_json_flag(*encode, o.json);
    CLI::App* decode = app.add_subcommand("decode", "the text of token ids");
    add_text(*decode, "-m,--model", o.model, "a model directory or a tokenizer.model")->type_name("DIR|FILE")->required();
    add_tokens_option(*decode, o.tokens);
    for (CLI::App* action : {train, encode, decode}) {
        add_max_memory(*action);
        action->allow_extras()->fallthrough();
    }
    app.require_subcommand(1);
}

int run_tokenizer(const std::vector<std::string>& argv) {
    const auto app = make_app("tokenizer", "Trains a sentencepiece tokenizer, and shows how text maps to ids and back.");
    TokenizerOptions o;
    add_actions(*app, o);
    const std::vector<std::string> actions = {"train", "encode", "decode"};
    if (argv.empty()) throw Error("missing action: retnet tokenizer train|encode|decode [options] (retnet help tokenizer)");
    if (argv[0][0] != '-' && std::find(actions.begin(), actions.end(), argv[0]) == actions.end()) {
        const std::string near = closest_match(argv[0], actions);
        throw Error("unknown action '" + argv[0] + "' (expected train, encode or decode" +
                    (near.empty() ? "" : "; did you mean " + near + "?") + ")");
    }
    // CLI11 takes the next word as an option's value, an action's name too: `tokenizer --max-memory encode …`
    // then said "unknown option -m"
    for (size_t i = 0; i + 1 < argv.size() && argv[i] != "--"; ++i)
        if (argv[i] == "--max-memory" && std::find(actions.begin(), actions.end(), argv[i + 1]) != actions.end())
            throw Error("option --max-memory needs a value (a size such as 8G), got the action '" + argv[i + 1] + "'");
    parse(*app, argv);
    CLI::App* chosen = app->get_subcommands().front();
    if (app->count("--max-memory") > 0 && chosen->count("--max-memory") > 0)
        throw Error("option --max-memory is given before and after the action: give it once");
    const std::string action = chosen->get_name();
    if (action == "train") return run_train(o);
    if (action == "encode") return run_encode(o);
    return run_decode(o);
}

const Command reg("tokenizer", "train a tokenizer; encode text to ids and decode ids to text", &run_tokenizer,
                  /*has_actions=*/true);

}  // namespace
}  // namespace retnet::cli
