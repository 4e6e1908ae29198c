// SPDX-License-Identifier: GPL-3.0-or-later
// retnet convert: rewrite a model directory with its weights stored as F32 or BF16 (half the
// bytes: how a bundled model fits its size budget). The tokenizer and the training notes come along.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"

namespace retnet::cli {
namespace {

namespace fs = std::filesystem;

// The files that come along with the weights, when the model has them.
constexpr const char* kCarried[] = {"tokenizer.model", "training.json"};

// convert replaces a model as a whole, and only when asked to (--overwrite): before, any model in
// --out was replaced without a word, another model's tokenizer and training notes removed with it.
// A directory that holds none (no model.safetensors) may hold someone's config.json or
// tokenizer.model, which would be replaced, or files the model would be mixed among: as with init,
// such a directory must be new or empty.
void require_model_or_empty_directory(const std::string& out, const std::vector<std::string>& written, bool overwrite) {
    std::error_code ec;
    if (!fs::is_directory(out, ec)) return;  // a new one (check_output_directory refused the rest)
    for (const char* weights : {"model.safetensors", "model.safetensors.index.json"})
        if (fs::exists(fs::symlink_status(fs::path(out) / weights, ec))) {
            if (overwrite) return;
            throw Error("--out " + out + " holds a model already (" + weights +
                        "); pass --overwrite to replace it as a whole, or choose a new or empty directory");
        }
    // The temporary files of a convert that was killed outright (a second SIGTERM) are no one's
    // files: the next write unlinks and replaces them, so they do not make the directory taken.
    const std::string other = first_entry_besides_leftovers(out);
    if (other.empty()) return;
    for (const std::string& name : written)
        if (fs::exists(fs::symlink_status(fs::path(out) / name, ec)))
            throw Error("--out " + out + " holds no model but a " + name +
                        " that convert would replace; choose a new or empty directory");
    throw Error("--out " + out + " is not empty (it holds " + other + ") and holds no model; choose a new or empty "
                "directory");
}

// The files convert writes in --out replace what is there, never what a link there points to (the
// source model's weights, a file outside --out: the atomic writer follows links, as a file --out
// may be one). A directory where a file goes is refused before the load, not after it; a FIFO or a
// device there is written in place, as every output of the project is (a FIFO's reader, if it has
// one, cannot be asked without ending its stream).
void refuse_links_and_directories(const std::string& out, const std::vector<std::string>& written) {
    std::error_code ec;
    for (const std::string& name : written) {
        const fs::path at = fs::path(out) / name;
        const fs::file_status st = fs::symlink_status(at, ec);
        if (fs::is_symlink(st))
            throw Error("--out " + out + " holds " + name + " as a symbolic link (to " + fs::read_symlink(at, ec).string() +
                        "); convert replaces a model's files, never what a link points to: remove the link or choose "
                        "another directory");
        if (fs::is_directory(st))
            throw Error("--out " + out + " holds a directory named " + name +
                        " where convert writes that file; remove it or choose another directory");
    }
}

// A replaced model loses the files that come along which the new one does not have (an older
// model's tokenizer next to other weights would be taken for theirs).
void remove_stale_carried(const std::string& out, const std::vector<std::pair<std::string, std::string>>& extras) {
    std::error_code ec;
    for (const char* name : kCarried)
        if (std::none_of(extras.begin(), extras.end(), [&](const auto& extra) { return extra.first == name; }))
            fs::remove(fs::path(out) / name, ec);  // a link is removed, not what it points to
}

std::string format_megabytes(uintmax_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f MB", static_cast<double>(bytes) / 1e6);
    return text;
}

int run_convert(const std::vector<std::string>& argv) {
    const auto app = make_app("convert", "Writes a model with its weights stored as bf16 or fp32; the tokenizer and "
                                         "training notes come along.");
    std::string model_dir, out_dir, dtype_name = "bf16";
    bool overwrite = false;
    add_model_option(*app, model_dir)->required();
    add_out_directory(*app, out_dir, "the directory to write");
    add_text(*app, "--dtype", dtype_name, "how the weights are stored (f32: fp32, safetensors' name)")
        ->type_name("bf16|fp32");
    add_flag(*app, "--overwrite", overwrite, "replace a model already in --out (its tokenizer and training notes too)");
    parse(*app, argv);
    if (dtype_name == "f32") dtype_name = "fp32";  // the name convert took first; fp32 as bench, cost and generate
    require_one_of("--dtype", dtype_name, {"bf16", "fp32"});
    const DType dtype = dtype_name == "bf16" ? DType::BF16 : DType::F32;
    std::error_code ec;
    if (fs::exists(out_dir, ec) && fs::equivalent(model_dir, out_dir, ec))
        throw Error("--out " + out_dir + " is the model directory itself; choose another one");
    check_output_directory(out_dir, "the model directory");
    std::vector<std::string> written{"config.json"};  // and model.safetensors, which a directory without a model lacks
    for (const char* extra : kCarried)
        if (fs::exists(fs::symlink_status(fs::path(model_dir) / extra, ec))) written.emplace_back(extra);
    require_model_or_empty_directory(out_dir, written, overwrite);
    written.emplace_back("model.safetensors");
    refuse_links_and_directories(follow_output_directory(out_dir), written);

    check_model_memory(model_dir, 2);  // the weights, and their bytes as they are written
    // Ctrl-C from the load to the last tensor written (between tensors): nothing of this run is
    // left, an older model in --out stays as it was.
    const InterruptGuard interrupt;
    const Model model = load_model_interruptible(model_dir);
    // The files that come along are read (and the tokenizer checked) before anything is written, so
    // an unreadable one cannot leave a half-written output directory.
    std::vector<std::pair<std::string, std::string>> extras;  // name, bytes
    for (const char* extra : kCarried) {
        const fs::path from = fs::path(model_dir) / extra;
        if (!fs::exists(fs::symlink_status(from, ec))) continue;
        extras.emplace_back(extra, read_regular_file(from.string()));
        if (extras.back().first == "tokenizer.model") Tokenizer::from_serialized(extras.back().second, from.string());
    }
    const bool created = !fs::exists(fs::symlink_status(out_dir, ec));
    try {
        save_model(model, out_dir, dtype, interrupt.cancelled(), extras);  // the carried files in its commit
        if (!created) remove_stale_carried(out_dir, extras);
        remove_model_write_leftovers(out_dir);  // a killed convert's that this one did not write
    } catch (...) {
        if (created) fs::remove_all(out_dir, ec);  // nothing half-written stays behind
        throw;
    }
    const auto bytes = fs::file_size(fs::path(out_dir) / "model.safetensors", ec);  // none for a FIFO or device
    std::printf("wrote %s (%s weights%s)\n", shown(out_dir).c_str(), dtype_name.c_str(),
                ec ? "" : (", model.safetensors " + format_megabytes(bytes)).c_str());
    return 0;
}

const Command reg("convert", "a model rewritten with bf16 (or fp32) weights", &run_convert);

}  // namespace
}  // namespace retnet::cli
