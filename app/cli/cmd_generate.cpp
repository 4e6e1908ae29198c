// SPDX-License-Identifier: GPL-3.0-or-later
// retnet generate: prefill a prompt in the chosen form, decode recurrently, stream text to stdout
// as it is produced (or one JSON object per token), then a one-line summary on stderr.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "shared_options.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/generate.h"
#include "retnet/utf8.h"

namespace retnet::cli {
namespace {

// A stop string as --stop spells it (\n, \t, \\, \,), other controls as visible symbols: the
// summary line stays one line.
std::string as_stop_option(const std::string& stop) {
    std::string spelled;
    for (const char c : stop) {
        if (c == '\n') spelled += "\\n";
        else if (c == '\t') spelled += "\\t";
        else if (c == '\\' || c == ',') spelled += std::string("\\") + c;
        else spelled += c;
    }
    return printable(spelled);
}

// --prompt TEXT, or --prompt-file FILE ("-": standard input), for prompts too long for a command line.
std::optional<std::string> read_prompt(const CLI::Option* text_option, const std::string& text, const std::string& file) {
    if (text_option->count() > 0 && !file.empty()) throw Error("give either --prompt or --prompt-file, not both");
    if (text_option->count() == 0 && file.empty()) return std::nullopt;
    if (file.empty()) return text;
    constexpr size_t kMaxPromptBytes = size_t(64) << 20;
    if (file != "-") {
        try {
            return read_regular_file(file, kMaxPromptBytes);
        } catch (const Error& e) {  // `-f <(command)` is a pipe: say what works instead
            std::error_code ec;
            if (std::filesystem::is_fifo(file, ec)) throw Error(std::string(e.what()) + "; pipe it in with --prompt-file - instead");
            throw;
        }
    }
    std::string prompt;
    std::vector<char> buffer(65536);  // not on the stack: `ulimit -s 64` made it overflow
    while (const size_t n = std::fread(buffer.data(), 1, buffer.size(), stdin)) {
        prompt.append(buffer.data(), n);
        if (prompt.size() > kMaxPromptBytes) throw Error("--prompt-file -: standard input holds more than 64 MiB");
    }
    if (std::ferror(stdin)) throw Error("--prompt-file -: cannot read standard input");
    return prompt;
}

nlohmann::json candidates_json(const std::vector<TokenProb>& list, const Tokenizer* tokenizer) {
    nlohmann::json out = nlohmann::json::array();
    for (const TokenProb& c : list) {
        nlohmann::json entry = {{"id", c.id}, {"prob", c.prob}, {"logit", c.logit}};
        if (tokenizer) entry["piece"] = tokenizer->display_piece(c.id);
        out.push_back(std::move(entry));
    }
    return out;
}

// What `generate` reads besides the shared generation options.
struct GenerateCommand {
    std::string model_dir, device = "cpu", prompt, prompt_file, tokens;
    InterventionText edits;
    GenerationOptions generation;
    bool json = false;
    const CLI::Option *prompt_option = nullptr, *tokens_option = nullptr;
};

void add_generate_options(CLI::App& app, GenerateCommand& c) {
    add_model_option(app, c.model_dir);
    c.prompt_option = add_text(app, "-p,--prompt", c.prompt, "the text to continue");
    add_text(app, "-f,--prompt-file", c.prompt_file, "read the prompt from FILE (- for standard input)")
        ->type_name("FILE");
    c.tokens_option = add_text(app, "--tokens", c.tokens, "the prompt as token ids instead of text")->type_name("ID,ID,...");
    add_generation_options(app, c.generation);
    add_int(app, "--top-n", c.generation.params.n_top, 0, 100, "candidates listed per token with --json");
    add_device_option(app, c.device);
    add_json_flag(app, c.json);
    add_intervention_options(app, c.edits);
}

int run_generate(const std::vector<std::string>& argv) {
    const auto app = make_app("generate", "Prefills the prompt in the chosen form, then decodes recurrently and streams "
                                          "the text to standard output; a summary line goes to standard error.");
    GenerateCommand c;
    add_generate_options(*app, c);
    parse(*app, argv);
    if (app->count("--prompt-file") > 0 && c.prompt_file.empty())  // it ran with no prompt at all
        throw Error("option --prompt-file is empty (name a file, or - for standard input)");
    const bool json = c.json;
    const std::string model_dir = model_dir_or_default(c.model_dir);
    const auto prompt_text = read_prompt(c.prompt_option, c.prompt, c.prompt_file);
    if (prompt_text && c.tokens_option->count() > 0)
        throw Error("give either --prompt or --tokens, not both (or --prompt-file instead of --prompt)");
    GenerationParams params = c.generation.resolve("generate");
    // Nothing rewinds here: no state snapshots during decoding (on a GPU each is a copy of every
    // layer's state to the host).
    params.checkpoint_interval = 0;
    if (!c.json) params.n_top = 0;  // the candidates are listed only in JSON: no softmax per token otherwise
    const SamplerParams& sampler = params.sampler;
    const bool add_bos = !c.generation.no_bos;
    // Caught from here, after the prompt is read (a Ctrl-C at a terminal typing it still ends the
    // command at once): a large model takes seconds to load and a long prompt to encode.
    InterruptGuard interrupt;
    auto model = load_model_edited(model_dir, c.edits);
    auto backend = make_backend_option(c.device, model);

    const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load_from_model_dir(model_dir);
    Generator generator(*backend, tokenizer.get());
    std::vector<int32_t> prompt;
    if (c.tokens_option->count() > 0) {
        prompt = parse_token_list(c.tokens);
    } else {
        if (!tokenizer && prompt_text && !prompt_text->empty())
            throw Error(model_dir + " has no tokenizer.model: give the prompt as ids with --tokens 1,2,3");
        prompt = generator.encode_prompt(prompt_text.value_or(""), params.max_prompt_tokens, add_bos);
    }
    // Before any allocation: a long prompt in the parallel form holds (T, T) scores per head.
    check_prompt_memory(model->config, static_cast<int64_t>(prompt.size()), params.prefill_form, params.chunk_size);
    interrupt.check();  // nothing generated yet: "cancelled", not a summary of no tokens

    std::string printed;  // stream text written so far
    bool first_id = true;
    const auto on_token = [&](const TokenEvent& e) {
        if (json) {
            nlohmann::json j = {{"type", "token"}, {"position", e.position}, {"id", e.id}, {"text", e.text},
                                {"forced", e.forced}, {"step_ms", e.step_ms}};
            if (tokenizer) j["piece"] = tokenizer->display_piece(e.id);
            j["top"] = candidates_json(e.top, tokenizer.get());
            j["top_filtered"] = candidates_json(e.top_filtered, tokenizer.get());
            std::printf("%s\n", json_text(j).c_str());
        } else if (tokenizer) {
            std::fputs(printable(e.stream_text).c_str(), stdout);
            printed += e.stream_text;
        } else {
            std::printf("%s%d", first_id ? "" : " ", e.id);
            first_id = false;
        }
        // A reader that has gone (`| head`) or a full disk: stop generating what nobody receives.
        if (stdout_error() != 0) interrupt.flag().store(true);
    };
    const GenerationResult result = generator.generate(prompt, params, on_token, &interrupt.flag());
    check_stdout();  // throws for a failed write, before any summary

    const GenerationStats& s = result.stats;
    if (json) {
        nlohmann::json summary = {
            {"type", "summary"}, {"prompt_tokens", static_cast<int64_t>(prompt.size())},
            {"generated_tokens", s.generated_tokens}, {"prefill_mode", form_name(s.prefill_form)},
            {"prefill_ms", s.prefill_ms}, {"prefill_tokens_per_s", s.prefill_tokens_per_s()},
            {"decode_ms", s.decode_ms}, {"tokens_per_s", s.tokens_per_s()},
            {"stop_reason", stop_reason_name(s.stop_reason)}, {"device", backend->name()},
            {"seed", sampler.seed}, {"tokens", result.tokens}, {"text", result.text}};
        if (!s.stop_string.empty()) summary["stop_string"] = s.stop_string;
        std::printf("%s\n", json_text(summary).c_str());
    } else {
        // Text held back as a possible stop string that never completed.
        if (tokenizer && result.text.size() > printed.size())
            std::fputs(printable(result.text.substr(printed.size())).c_str(), stdout);
        std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    const auto tokens = [](int64_t n) { return n == 1 ? "token" : "tokens"; };
    std::fprintf(stderr,
                 "retnet generate: %lld %s, %.1f tokens/s (%.2f ms/token) on %s; prefill %lld %s in %.1f ms "
                 "(%s); stopped: %s%s\n",
                 static_cast<long long>(s.generated_tokens), tokens(s.generated_tokens), s.tokens_per_s(),
                 s.generated_tokens ? s.decode_ms / static_cast<double>(s.generated_tokens) : 0.0,
                 backend->name().c_str(), static_cast<long long>(s.prefill_tokens), tokens(s.prefill_tokens), s.prefill_ms,
                 form_name(s.prefill_form), stop_reason_name(s.stop_reason),
                 s.stop_string.empty() ? "" : (" \"" + as_stop_option(s.stop_string) + "\"").c_str());
    return s.stop_reason == StopReason::Cancelled ? cancelled_status() : 0;
}

const Command reg("generate", "continue a prompt: prefill in any form, decode recurrently, stream the text", &run_generate);

}  // namespace
}  // namespace retnet::cli
