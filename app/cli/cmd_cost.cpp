// SPDX-License-Identifier: GPL-3.0-or-later
// retnet cost: the paper's inference-cost comparison on this machine — the model against its
// Transformer twin (retnet/cost.h) at each context length × batch, as a table, JSON or a PNG.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model.h"
#include "retnet/model_stats.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/backend_cuda.h"
#endif
#ifdef RETNET_HAVE_COST_PLOT
#include "cost_plot_png.h"
#endif

namespace retnet::cli {
namespace {

nlohmann::json to_json(const CostReport& report) {
    nlohmann::json j = {{"device", report.device},
                        {"retnet_parameters", report.retnet_parameters},
                        {"transformer_parameters", report.transformer_parameters},
                        {"points", nlohmann::json::array()}};
    for (const CostPoint& p : report.points) {
        nlohmann::json row = {{"model", p.model}, {"length", p.length}, {"batch", p.batch},
                              {"out_of_memory", p.out_of_memory}};
        if (p.out_of_memory) {
            row["note"] = p.note;
        } else {
            row["prefill_ms"] = p.prefill_ms;
            row["ms_per_step"] = p.ms_per_step;
            row["tokens_per_s"] = p.tokens_per_s;
            row["state_bytes"] = p.state_bytes;
            if (p.device_bytes >= 0) row["device_bytes"] = p.device_bytes;
        }
        j["points"].push_back(std::move(row));
    }
    return j;
}

void print_table(const CostReport& report) {
    std::printf("%s backend; RetNet %s parameters, Transformer twin %s; medians of the timed steps\n",
                report.device.c_str(), format_count(report.retnet_parameters).c_str(),
                format_count(report.transformer_parameters).c_str());
    std::printf("%-12s %8s %6s %12s %11s %13s %14s\n", "model", "length", "batch", "prefill ms", "ms / step",
                "tokens / s", "state / cache");
    for (const CostPoint& p : report.points) {
        if (p.out_of_memory) {
            std::printf("%-12s %8d %6d   out of memory: %s\n", p.model.c_str(), p.length, p.batch, shown(p.note).c_str());
            continue;
        }
        std::printf("%-12s %8d %6d %12.2f %11.3f %13.1f %14s\n", p.model.c_str(), p.length, p.batch, p.prefill_ms,
                    p.ms_per_step, p.tokens_per_s, format_bytes(static_cast<uint64_t>(p.state_bytes)).c_str());
    }
}

namespace fs = std::filesystem;

bool is_image_name(const fs::path& path) {
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return ext == ".png" || ext == ".pdf";
}

// The picture is drawn after the whole measurement: a path that cannot take it is refused before.
// A symlink is followed (as by every --out), but only to another image: `plot.png -> /etc/passwd`
// would otherwise replace the file it points to.
void check_plot_path(const std::string& path) {
    const fs::path p(path);
    if (!is_image_name(p)) throw Error("--plot " + path + ": unknown image type (use .png or .pdf)");
    std::error_code ec;
    if (fs::is_directory(fs::status(p, ec))) throw Error("--plot " + path + " is a directory");
    if (fs::is_symlink(fs::symlink_status(p, ec))) {
        const fs::path target = fs::weakly_canonical(p, ec);
        if (ec || !is_image_name(target))
            throw Error("--plot " + path + " is a symlink to " + (ec ? ec.message() : target.string()) +
                        ", not to a .png or .pdf file; it is not overwritten");
    }
    const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
    const fs::file_status folder = fs::status(parent, ec);
    if (!fs::is_directory(folder))
        throw Error("--plot " + path + ": " + parent.string() + (fs::exists(folder) ? " is not a directory" : " does not exist"));
}

// Progress on stderr, one line per point; Ctrl-C cancels between steps.
CostProgress stderr_progress(const InterruptGuard& interrupt) {
    return [&interrupt, last = std::string()](double fraction, const std::string& what) mutable {
        if (interrupt.raised()) return false;
        const std::string prefix = "prefill of ";
        const std::string point = what.substr(std::min(what.size(), prefix.size()));
        if (what.rfind(prefix, 0) == 0 && point != last) {
            std::fprintf(stderr, "[%3.0f%%] %s\n", 100.0 * fraction, point.c_str());
            last = point;
        }
        return true;
    };
}

int run_cost(const std::vector<std::string>& argv) {
    const auto app = make_app("cost", "Measures the model against a same-size Transformer twin (random weights, or "
                                      "--transformer DIR): prefill time, decoding latency and throughput, and the "
                                      "memory of RetNet's state against the twin's KV cache, at each context length "
                                      "and batch size. Points that do not fit are reported as out of memory.");
    std::string model_dir, transformer_dir, device = "cpu", lengths_text = "1024,4096,16384,32768",
                                            batch_text = "1,8,16,64", dtype = "stored", plot_path;
    int steps = 16;
    int64_t seed = 1;
    bool json = false;
    add_model_option(*app, model_dir);
    add_device_option(*app, device);
    add_text(*app, "--transformer", transformer_dir, "a Llama-format directory to use as the Transformer")
        ->type_name("DIR")
        ->default_str("a random twin of the model");
    add_text(*app, "--lengths", lengths_text, "context lengths (tokens in each sequence before the timed steps)")
        ->type_name("T,T,...");
    add_text(*app, "--batch", batch_text, "batch sizes (sequences decoded together)")->type_name("B,B,...");
    add_text(*app, "--dtype", dtype, "precision of the projections: stored, fp32 or bf16")->type_name("stored|fp32|bf16");
    add_int(*app, "--decode-steps", steps, 1, 100000, "decoding steps timed per point");
    add_int(*app, "--seed", seed, 0, INT64_MAX, "seed of the twin's weights and of the token streams");
    add_text(*app, "--plot", plot_path, "also draw the paper's panels (memory, throughput, latency) into this PNG")
        ->type_name("FILE.png");
    add_json_flag(*app, json);
    parse(*app, argv);
    require_one_of("--dtype", dtype, {"stored", "fp32", "bf16"});
    CostOptions options;
    options.lengths = parse_positive_list("--lengths", lengths_text);
    options.batches = parse_positive_list("--batch", batch_text);
    options.decode_steps = steps;
    options.seed = static_cast<uint64_t>(seed);
#ifndef RETNET_HAVE_COST_PLOT
    if (!plot_path.empty()) throw Error("--plot needs the Qt build of retnet (this one has none); use --json");
#endif
    if (!plot_path.empty()) check_plot_path(plot_path);

    std::string model_device = device;
    auto retnet_model = apply_dtype(dtype, model_device, load_model_edited(model_dir));
    if (retnet_model->config.is_transformer())
        throw Error("--model must be a RetNet (it is a Transformer); pass a Transformer with --transformer");
    std::shared_ptr<const Model> twin;
    if (transformer_dir.empty()) {
        check_memory(estimated_weight_bytes(transformer_twin_config(retnet_model->config)), "the Transformer twin");
        twin = std::make_shared<const Model>(make_transformer_twin(retnet_model->config, static_cast<uint64_t>(seed)));
    } else {
        twin = std::make_shared<const Model>(load_model(transformer_dir, {}, WeightStorage::AsStored));
        if (!twin->config.is_transformer()) throw Error("--transformer " + shown(transformer_dir) + " is not a Llama-format Transformer");
    }
    std::string twin_device = device;
    twin = apply_dtype(dtype, twin_device, twin);
    auto retnet_backend = make_backend_option(model_device, retnet_model);
    auto twin_backend = make_backend_option(twin_device, twin);

    DeviceMemoryProbe device_memory;
#ifdef RETNET_HAVE_CUDA
    if (retnet_backend->name().rfind("cuda", 0) == 0) device_memory = [] { return cuda_device_memory_in_use(); };
#endif
    InterruptGuard interrupt;
    const CostReport report = measure_cost(*retnet_backend, *twin_backend, options, stderr_progress(interrupt),
                                           device_memory);
    if (json) std::printf("%s\n", to_json(report).dump(2).c_str());
    else print_table(report);
#ifdef RETNET_HAVE_COST_PLOT
    std::string error;
    if (!plot_path.empty() && !write_cost_plot_png(report, plot_path, &error)) throw Error("--plot: " + error);
#endif
    return 0;
}

const Command reg("cost", "RetNet against a same-size Transformer: latency, throughput and memory vs length and batch",
                  &run_cost);

}  // namespace
}  // namespace retnet::cli
