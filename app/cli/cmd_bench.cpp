// SPDX-License-Identifier: GPL-3.0-or-later
// retnet bench: prefill time of each form over a range of lengths, and recurrent decode speed.
// Wall-clock medians after a warm-up; forward() returns host logits, so every timing includes
// the device synchronization and the logits copy, as a user of the engine sees it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/model_stats.h"

namespace retnet::cli {
namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double time_ms(Backend& b, std::span<const int32_t> tokens, const ForwardOptions& o, bool reset) {
    if (reset) b.reset();
    const auto t0 = std::chrono::steady_clock::now();
    b.forward(tokens, o);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Strictly "64,256,1024": "1e9" or "12abc" are refused, not read as 1 or 12.
std::vector<int> parse_lengths(const std::string& text) {
    std::vector<int> out;
    try {
        for (const int32_t T : parse_token_list(text)) out.push_back(T);
    } catch (const Error&) {
        throw Error("--lengths expects comma-separated integers, got '" + text + "'");
    }
    for (const int T : out)
        if (T < 1) throw Error("--lengths must be positive, got " + std::to_string(T));
    return out;
}

int run_bench(const std::vector<std::string>& argv) {
    const auto app = make_app("bench", "Times the prefill of each form at each length and the recurrent decode speed "
                                       "(medians after a warm-up).");
    std::string model_dir, device = "cpu", lengths_text = "64,256,1024";
    InterventionText edits;
    int repeats = 5, decode_steps = 64, chunk = 0;
    bool json = false;
    add_model_option(*app, model_dir);
    add_device_option(*app, device);
    add_text(*app, "--lengths", lengths_text, "prompt lengths to time")->type_name("T,T,...");
    add_int(*app, "--repeats", repeats, 1, 1000, "timed runs per measurement (the median is reported)");
    add_int(*app, "--decode-steps", decode_steps, 1, 100000, "recurrent steps timed");
    add_int(*app, "--chunk-size", chunk, 1, 1 << 20, "chunk length of the chunkwise form")->default_str("the model's");
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    const std::vector<int> lengths = parse_lengths(lengths_text);
    auto model = load_model_edited(model_dir, edits);
    auto backend = make_backend_option(device, model);
    const int longest = *std::max_element(lengths.begin(), lengths.end());
    check_forward_memory(model->config, longest, Form::Parallel, 0, "the parallel form at T = " + std::to_string(longest));

    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> pick(0, model->config.vocab_size - 1);
    nlohmann::json report = {{"device", backend->name()}, {"family", family_name(model->config.family)},
                             {"parameters", model->parameter_count()}, {"repeats", repeats}};
    if (!json)
        std::printf("%s backend, %s parameters; median of %d runs after a warm-up\n%8s %14s %14s %14s\n",
                    backend->name().c_str(), format_count(model->parameter_count()).c_str(), repeats, "T",
                    "parallel ms", "chunkwise ms", "recurrent ms");
    for (int T : lengths) {
        std::vector<int32_t> tokens(static_cast<size_t>(T));
        for (int32_t& t : tokens) t = pick(rng);
        nlohmann::json row = {{"T", T}};
        std::vector<double> medians;
        for (Form form : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
            ForwardOptions o;
            o.form = form;
            o.chunk_size = chunk;
            time_ms(*backend, tokens, o, true);  // warm-up
            std::vector<double> ms;
            for (int r = 0; r < repeats; ++r) ms.push_back(time_ms(*backend, tokens, o, true));
            medians.push_back(median(ms));
            row[form_name(form) + std::string("_ms")] = medians.back();
        }
        report["prefill"].push_back(row);
        if (!json) std::printf("%8d %14.3f %14.3f %14.3f\n", T, medians[0], medians[1], medians[2]);
    }
    // Decode: one token at a time from a 64-token context.
    std::vector<int32_t> context(64);
    for (int32_t& t : context) t = pick(rng);
    ForwardOptions prefill, step;
    prefill.form = Form::Chunkwise;
    step.form = Form::Recurrent;
    backend->reset();
    backend->forward(context, prefill);
    std::vector<double> ms;
    for (int i = 0; i < decode_steps + 4; ++i) {
        const int32_t token = pick(rng);
        const double t = time_ms(*backend, std::span(&token, 1), step, false);
        if (i >= 4) ms.push_back(t);  // the first steps are the warm-up
    }
    const double per_token = median(ms);
    report["decode_ms_per_token"] = per_token;
    report["decode_tokens_per_s"] = 1000.0 / per_token;
    if (json) std::printf("%s\n", report.dump(2).c_str());
    else std::printf("decode: %.3f ms per token (%.1f tokens/s), median of %d steps\n", per_token, 1000.0 / per_token, decode_steps);
    return 0;
}

const Command reg("bench", "prefill time of each form and the decode speed", &run_bench);

}  // namespace
}  // namespace retnet::cli
