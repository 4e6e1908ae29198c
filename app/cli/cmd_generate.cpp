// SPDX-License-Identifier: GPL-3.0-or-later
// retnet generate: prefill a prompt in the chosen form, decode recurrently, stream text to stdout
// as it is produced (or one JSON object per token), then a one-line summary on stderr.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/generate.h"

namespace retnet::cli {
namespace {


// "a,b\,c,\n" -> {"a", "b,c", "\n"}: commas separate, backslash escapes \, \n \t \\.
std::vector<std::string> parse_stop_strings(const std::string& text) {
    std::vector<std::string> out(1);
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == ',') {
            out.emplace_back();
        } else if (c == '\\' && i + 1 < text.size()) {
            const char next = text[++i];
            if (next == 'n') out.back() += '\n';
            else if (next == 't') out.back() += '\t';
            else if (next == ',' || next == '\\') out.back() += next;
            else throw Error("option --stop: unknown escape '\\" + std::string(1, next) + "' (use \\, \\n \\t \\\\)");
        } else {
            out.back() += c;
        }
    }
    for (const std::string& s : out)
        if (s.empty()) throw Error("option --stop has an empty stop string in '" + text + "'");
    return out;
}

// Terminal-safe text: C0 controls other than \n and \t, and DEL, become their visible Unicode
// "control picture" (U+2400 + c), so generated escape sequences cannot drive the terminal.
std::string printable(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if ((byte < 0x20 && c != '\n' && c != '\t') || byte == 0x7F) {
            const unsigned picture = byte == 0x7F ? 0x2421 : 0x2400 + byte;
            out += static_cast<char>(0xE0 | (picture >> 12));
            out += static_cast<char>(0x80 | ((picture >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (picture & 0x3F));
        } else {
            out += c;
        }
    }
    return out;
}

// --prompt TEXT, or --prompt-file FILE ("-": standard input), for prompts too long for a command line.
std::optional<std::string> prompt_option(Args& args) {
    const auto text = args.get("prompt");
    const auto file = args.get("prompt-file");
    if (text && file) throw Error("give either --prompt or --prompt-file, not both");
    if (!file) return text;
    constexpr size_t kMaxPromptBytes = size_t(64) << 20;
    if (*file != "-") return read_regular_file(*file, kMaxPromptBytes);
    std::string prompt;
    char buffer[65536];
    while (const size_t n = std::fread(buffer, 1, sizeof buffer, stdin)) {
        prompt.append(buffer, n);
        if (prompt.size() > kMaxPromptBytes) throw Error("--prompt-file -: standard input holds more than 64 MiB");
    }
    if (std::ferror(stdin)) throw Error("--prompt-file -: cannot read standard input");
    return prompt;
}

std::string resolve_model_dir(Args& args) {
    if (auto dir = args.get("model")) return *dir;
    std::string dir = default_model_dir();
    if (dir.empty()) {
        std::error_code ec;
        const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
        const auto expected = (exe.parent_path() / "../../resources/models/default").lexically_normal();
        throw Error("no --model given and no bundled default model found at " + expected.string() +
                    " (set RETNET_DEFAULT_MODEL or pass --model DIR)");
    }
    return dir;
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

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

int run_generate(const std::vector<std::string>& argv) {
    Args args(argv, {"json", "greedy", "no-bos", "ignore-eos"});
    const bool json = args.has("json");
    const std::string model_dir = resolve_model_dir(args);
    const auto prompt_text = prompt_option(args);
    const auto token_list = args.get("tokens");
    if (prompt_text && token_list) throw Error("give either --prompt or --tokens, not both (or --prompt-file instead of --prompt)");

    GenerationParams params;
    params.max_new_tokens = static_cast<int>(args.get_int("max-new-tokens", 128, 0, 1 << 24));
    params.prefill_form = parse_form(args.get_or("mode", "parallel"));
    params.chunk_size = static_cast<int>(args.get_int("chunk-size", 0, 1, 1 << 20));
    params.max_prompt_tokens = static_cast<int>(args.get_int("max-prompt-tokens", 4096, 1, 1 << 24));
    params.n_top = static_cast<int>(args.get_int("top-n", 5, 0, 100));
    params.stop_at_eos = !args.has("ignore-eos");
    // Unset options keep core's preset, which the app starts with too.
    const SamplerParams preset = default_sampling();
    SamplerParams& sampler = params.sampler;
    sampler.temperature = args.get_double("temperature", preset.temperature, 0.0, 100.0);
    if (args.has("greedy")) sampler.temperature = 0.0;
    sampler.top_k = static_cast<int>(args.get_int("top-k", preset.top_k, 0, 1 << 24));
    sampler.top_p = args.get_double("top-p", preset.top_p, 1e-9, 1.0);
    sampler.min_p = args.get_double("min-p", preset.min_p, 0.0, 1.0);
    sampler.repeat_penalty = args.get_double("repeat-penalty", preset.repeat_penalty, 1e-3, 100.0);
    sampler.repeat_last_n = static_cast<int>(args.get_int("repeat-last-n", preset.repeat_last_n, -1, 1 << 24));
    const int64_t seed = args.get_int("seed", static_cast<int64_t>(preset.seed), -1, INT64_MAX);
    // -1: a random seed, printed so that the run can be repeated.
    sampler.seed = seed >= 0 ? static_cast<uint64_t>(seed) : std::random_device{}() & 0x7fffffffu;
    if (seed < 0) std::fprintf(stderr, "retnet generate: seed %llu\n", static_cast<unsigned long long>(sampler.seed));
    if (auto stop = args.get("stop")) params.stop_strings = parse_stop_strings(*stop);
    const bool add_bos = !args.has("no-bos");
    auto model = load_model_edited(args, model_dir);
    auto backend = make_backend_option(args, model);
    args.finish();
    params.validate();

    const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load_from_model_dir(model_dir);
    Generator generator(*backend, tokenizer.get());
    std::vector<int32_t> prompt;
    if (token_list) {
        prompt = parse_token_list(*token_list);
    } else {
        if (!tokenizer && prompt_text && !prompt_text->empty())
            throw Error(model_dir + " has no tokenizer.model: give the prompt as ids with --tokens 1,2,3");
        prompt = generator.encode_prompt(prompt_text.value_or(""), params.max_prompt_tokens, add_bos);
    }

    InterruptGuard interrupt;
    std::string printed;  // stream text written so far
    bool first_id = true;
    const auto on_token = [&](const TokenEvent& e) {
        if (json) {
            nlohmann::json j = {{"type", "token"}, {"position", e.position}, {"id", e.id}, {"text", e.text},
                                {"forced", e.forced}, {"step_ms", e.step_ms}};
            if (tokenizer) j["piece"] = tokenizer->display_piece(e.id);
            j["top"] = candidates_json(e.top, tokenizer.get());
            j["top_filtered"] = candidates_json(e.top_filtered, tokenizer.get());
            std::printf("%s\n", dump(j).c_str());
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
        std::printf("%s\n", dump(summary).c_str());
    } else {
        // Text held back as a possible stop string that never completed.
        if (tokenizer && result.text.size() > printed.size())
            std::fputs(printable(result.text.substr(printed.size())).c_str(), stdout);
        std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    std::fprintf(stderr,
                 "retnet generate: %lld tokens, %.1f tokens/s (%.2f ms/token) on %s; prefill %lld tokens in %.1f ms "
                 "(%s); stopped: %s%s\n",
                 static_cast<long long>(s.generated_tokens), s.tokens_per_s(),
                 s.generated_tokens ? s.decode_ms / static_cast<double>(s.generated_tokens) : 0.0,
                 backend->name().c_str(), static_cast<long long>(s.prefill_tokens), s.prefill_ms,
                 form_name(s.prefill_form), stop_reason_name(s.stop_reason),
                 s.stop_string.empty() ? "" : (" \"" + printable(s.stop_string) + "\"").c_str());
    return s.stop_reason == StopReason::Cancelled ? 130 : 0;
}

const Command reg("generate",
                  "retnet generate [-m|--model DIR] [-p|--prompt TEXT | -f|--prompt-file FILE|- | --tokens 1,2,3] [-n|--max-new-tokens N] "
                  "[--mode parallel|recurrent|chunkwise] [--chunk-size N] [--temp|--temperature T] [--greedy] [--top-k K] "
                  "[--top-p P] [--min-p P] [--repeat-penalty R] [--repeat-last-n N] [-s|--seed S (-1: random)] [--stop STR,STR] "
                  "[--max-prompt-tokens N] [--no-bos] [--ignore-eos] [--top-n N] [--mute L.H,...] [--gamma H=G,...] [--device cpu|cuda|reference] [--json]",
                  &run_generate);

}  // namespace
}  // namespace retnet::cli
