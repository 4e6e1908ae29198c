// SPDX-License-Identifier: GPL-3.0-or-later
// retnet init: a model directory with the reference implementation's random initialization,
// for experiments, benchmarks and as the starting point of training; with --arch transformer the
// Transformer twin of a RetNet (docs/transformer.md), or a Llama model from its config.
#include <cstdio>
#include <filesystem>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/model_names.h"
#include "retnet/model_stats.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"

namespace retnet::cli {
namespace {

namespace fs = std::filesystem;

// The config to initialize: the file's, or the twin of the RetNet it (or --like's model) describes.
ModelConfig config_to_init(const std::string& arch, const std::string& config_path, const std::string& like) {
    if (config_path.empty() == like.empty()) throw Error("give either --config FILE or --like DIR");
    const std::string source = like.empty() ? config_path : (fs::path(resolve_model_path(like)) / "config.json").string();
    return config_for_architecture(load_config(source), parse_architecture(arch), source);
}

// init writes a new model: a directory that already holds something (a trained model, even the
// --like model itself) is never overwritten with random weights.
void require_new_directory(const std::string& out) {
    std::error_code ec;
    const fs::file_status status = fs::status(out, ec);
    if (!fs::exists(status)) return;
    if (!fs::is_directory(status)) throw Error("--out " + out + " exists and is not a directory");
    if (const std::string other = first_entry_besides_leftovers(out); !other.empty())
        throw Error("--out " + out + " is not empty (it holds " + other +
                    "); init writes a new model: choose a new or empty directory");
}

// The bytes of the --like model's tokenizer, read and checked before anything is written (empty: none).
std::string like_tokenizer(const std::string& like) {
    if (like.empty()) return {};
    const fs::path from = fs::path(resolve_model_path(like)) / "tokenizer.model";
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(from, ec))) return {};  // a bare model: token ids only
    std::string bytes = read_regular_file(from.string());
    Tokenizer::from_serialized(bytes, from.string());
    return bytes;
}

// The tokenizer first and config.json last (save_model commits it after the weights): a run killed
// midway leaves a directory without config.json, which never loads as a model. A failure, or
// `cancelled` (asked between tensors), removes what was written: the directory when init made it,
// else the tokenizer copied into the empty one (require_new_directory).
void write_model(const Model& model, const std::string& tokenizer, const std::string& out,
                 const std::function<bool()>& cancelled) {
    std::error_code ec;
    const bool created = !fs::exists(fs::symlink_status(out, ec));
    const fs::path tokenizer_file = fs::path(out) / "tokenizer.model";
    try {
        if (!tokenizer.empty()) {
            fs::create_directories(out, ec);
            if (ec) throw Error("cannot save to " + out + ": " + ec.message());
            write_file_atomically(tokenizer_file.string(), tokenizer);
        }
        save_model(model, out, DType::F32, cancelled);
        remove_model_write_leftovers(out);  // a killed init's that this one did not write
    } catch (...) {
        if (created) fs::remove_all(out, ec);  // nothing half-written stays behind
        else if (!tokenizer.empty()) fs::remove(tokenizer_file, ec);
        throw;
    }
}

int run_init(const std::vector<std::string>& argv) {
    const auto app = make_app("init", "Creates a model directory with random weights, initialized as the reference "
                                      "implementation does.");
    std::string config_path, like, out, arch = "retnet";
    int64_t seed = 1;
    add_text(*app, "--config", config_path, "the model's config.json (fla, torchscale or, with --arch transformer, llama keys)")
        ->type_name("FILE");
    add_text(*app, "--like", like, "with --arch transformer: the RetNet model whose twin to make (its tokenizer is copied)")
        ->type_name("DIR");
    add_text(*app, "--arch", arch, "retnet, or transformer: the Transformer twin of the RetNet config (same width, "
                                   "depth, heads, vocabulary and parameter count; docs/transformer.md)")
        ->type_name("retnet|transformer");
    add_out_directory(*app, out, "the directory to write");
    add_int(*app, "-s,--seed", seed, 0, INT64_MAX, "random seed of the weights");
    parse(*app, argv);
    const ModelConfig config = config_to_init(arch, config_path, like);
    require_new_directory(out);
    check_output_directory(out, "the model directory");
    const std::string tokenizer = like_tokenizer(like);
    // The weights, and their bytes as they are written.
    check_memory(saturating_product({2, estimated_weight_bytes(config)}), "a model of " + (like.empty() ? config_path : like));
    // Ctrl-C while the weights are drawn (tens of seconds for billions of values; asked between
    // layers) or written (between tensors): retnet::Cancelled, and nothing of the model is left.
    const InterruptGuard interrupt;
    const Model model = make_random_model(config, static_cast<uint64_t>(seed), interrupt.cancelled());
    write_model(model, tokenizer, out, interrupt.cancelled());
    std::fprintf(stderr, "wrote %s: %s model, %s parameters\n", shown(out).c_str(), format_name(model.config),
                 format_count(model.parameter_count()).c_str());
    return 0;
}

const Command reg("init", "a model with random weights from a config.json (or a RetNet's Transformer twin)", &run_init);

}  // namespace
}  // namespace retnet::cli
