// SPDX-License-Identifier: GPL-3.0-or-later
#include "shared_options.h"

#include <cstdio>
#include <random>

#include "retnet/error.h"
#include "retnet/model_names.h"

namespace retnet::cli {

CLI::Option* add_model_option(CLI::App& app, std::string& dir) {
    return app
        .add_option_function<std::string>(
            "-m,--model",
            [&dir](const std::string& value) {
                // `--model "$UNSET"` is a mistake, not a request for the bundled default model.
                if (value.empty()) throw Error("option --model is empty (leave it out for the bundled default model)");
                if (value == "-") throw Error("option --model: a model is read from a directory (or ORG/NAME), not standard input");
                dir = resolve_model_path(value);
            },
            "model directory, or ORG/NAME[@REVISION] of a model in the Hugging Face cache")
        ->type_name("DIR|ORG/NAME")
        ->default_str(dir.empty() ? "the bundled default model" : dir);
}

void add_intervention_options(CLI::App& app, InterventionText& edits) {
    add_text(app, "--mute", edits.mute, "mute heads (their o_proj columns zeroed), e.g. 5.0,5.3")
        ->type_name("L.H,...")
        ->group("Interventions");
    add_text(app, "--gamma", edits.gamma, "give heads another decay, e.g. 0=0.5 (every layer's head 0)")
        ->type_name("H=G,...")
        ->group("Interventions");
}

CLI::Option* add_device_option(CLI::App& app, std::string& device) {
    return add_text(app, "--device", device,
                    "where the model runs (cuda-bf16: the GPU with bf16 weights); cuda falls back to the CPU with a notice")
        ->type_name("cpu|cuda|cuda-bf16|reference");
}

CLI::Option* add_tokens_option(CLI::App& app, std::string& tokens) {
    return add_text(app, "--tokens", tokens, "the input as token ids")->type_name("ID,ID,...")->required();
}

void add_form_options(CLI::App& app, std::string& mode, int& chunk_size) {
    add_text(app, "--mode", mode, "the form that runs the input (decoding is always recurrent)")
        ->type_name("parallel|recurrent|chunkwise");
    add_int(app, "--chunk-size", chunk_size, 1, 1 << 20, "chunk length of the chunkwise form")
        ->default_str("the model's");
}

CLI::Option* add_json_flag(CLI::App& app, bool& json) {
    return add_flag(app, "--json", json, "print JSON instead of text");
}

GenerationOptions::GenerationOptions() {
    params.sampler = default_sampling();  // the app starts from the same preset
    params.n_top = 5;
    seed = static_cast<int64_t>(params.sampler.seed);
}

void add_generation_options(CLI::App& app, GenerationOptions& o) {
    GenerationParams& p = o.params;
    SamplerParams& s = p.sampler;
    add_int(app, "-n,--max-new-tokens", p.max_new_tokens, 0, 1 << 24, "tokens to generate at most");
    add_form_options(app, o.mode, p.chunk_size);
    add_int(app, "--max-prompt-tokens", p.max_prompt_tokens, 1, 1 << 24, "refuse longer prompts");
    app.add_option_function<std::string>(
           "--stop", [&p](const std::string& text) { p.stop_strings = parse_stop_strings(text); },
           "stop when the text contains one of these (\\, \\n \\t \\\\ escape)")
        ->type_name("STR,...");
    add_flag(app, "--no-bos", o.no_bos, "do not start the prompt with the BOS token");
    add_flag(app, "--ignore-eos", o.ignore_eos, "keep going after the end-of-sequence token");
    const std::string sampling = "Sampling";
    add_number(app, "--temp,--temperature", s.temperature, 0.0, 100.0, "sampling temperature; 0 = greedy")->group(sampling);
    add_flag(app, "--greedy", o.greedy, "always take the most likely token (temperature 0)")->group(sampling);
    add_int(app, "--top-k", s.top_k, 0, 1 << 24, "sample from the K most likely tokens; 0 = all")->group(sampling);
    add_number(app, "--top-p", s.top_p, 1e-9, 1.0, "nucleus: the fewest tokens holding probability P")->group(sampling);
    add_number(app, "--min-p", s.min_p, 0.0, 1.0, "drop tokens below P times the best one's probability")->group(sampling);
    add_number(app, "--repeat-penalty", s.repeat_penalty, 1e-3, 100.0, "penalty on recent tokens; 1 = off")->group(sampling);
    add_int(app, "--repeat-last-n", s.repeat_last_n, -1, 1 << 24, "recent tokens the penalty looks at; -1 = all")
        ->group(sampling);
    add_int(app, "-s,--seed", o.seed, -1, INT64_MAX, "random seed; -1 = a random one, printed")->group(sampling);
}

GenerationParams GenerationOptions::resolve(const std::string& command) {
    GenerationParams out = params;
    out.prefill_form = parse_form(mode);
    out.stop_at_eos = !ignore_eos;
    if (greedy) out.sampler.temperature = 0.0;
    // -1: a random seed, printed so that the run can be repeated.
    out.sampler.seed = seed >= 0 ? static_cast<uint64_t>(seed) : std::random_device{}() & 0x7fffffffu;
    if (seed < 0) std::fprintf(stderr, "retnet %s: seed %llu\n", command.c_str(), static_cast<unsigned long long>(out.sampler.seed));
    out.validate();
    return out;
}

std::vector<std::string> parse_stop_strings(const std::string& text) {
    std::vector<std::string> out(1);
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == ',') {
            out.emplace_back();
        } else if (c == '\\') {
            if (i + 1 == text.size())
                throw Error("option --stop ends in a lone '\\' in '" + text + "' (write \\\\ for a backslash)");
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

}  // namespace retnet::cli
