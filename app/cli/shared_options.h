// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The options several commands share, each declared here once so that its name, short form,
// default and meaning read the same in the help of every command that has it.
#include <cstdint>
#include <optional>
#include <string>

#include "options.h"
#include "retnet/generate.h"

namespace retnet::cli {

// -m/--model DIR|ORG/NAME: a model directory, or a model of the Hugging Face cache by name, which
// the option resolves to its snapshot directory (retnet/model_names.h) as it is read.
CLI::Option* add_model_option(CLI::App& app, std::string& dir);

// --mute L.H,... and --gamma H=G,...: interventions on the loaded model (retnet/intervention.h).
struct InterventionText {
    std::string mute, gamma;
};
void add_intervention_options(CLI::App& app, InterventionText& edits);

// --device cpu|cuda|reference.
CLI::Option* add_device_option(CLI::App& app, std::string& device);

// --tokens 5,17,933 (required): the input as token ids; parse_token_list() reads it.
CLI::Option* add_tokens_option(CLI::App& app, std::string& tokens);

// --mode parallel|recurrent|chunkwise and --chunk-size N: the form a multi-token input runs in.
void add_form_options(CLI::App& app, std::string& mode, int& chunk_size);

// --json: one JSON document (or one object per line) instead of text.
CLI::Option* add_json_flag(CLI::App& app, bool& json);

// What `generate` and `chat` read: the sampler, the prefill form, the stops and limits.
struct GenerationOptions {
    GenerationParams params;  // sampler preset and limits as defaults
    int64_t seed = 0;         // -1: random
    bool greedy = false, no_bos = false, ignore_eos = false;
    std::string mode = "parallel";

    GenerationOptions();
    // The params the options describe (prefill form, stop strings, a random seed drawn and
    // announced on stderr as "retnet COMMAND: seed N"). Throws retnet::Error for bad values.
    GenerationParams resolve(const std::string& command);
};
void add_generation_options(CLI::App& app, GenerationOptions& options);

// "a,b\,c,\n" -> {"a", "b,c", "\n"}: commas separate, backslash escapes \, \n \t \\.
std::vector<std::string> parse_stop_strings(const std::string& text);

}  // namespace retnet::cli
