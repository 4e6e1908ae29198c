// SPDX-License-Identifier: GPL-3.0-or-later
// retnet convert: rewrite a model directory with its weights stored as F32 or BF16 (half the
// bytes: how a bundled model fits its size budget). The tokenizer and the training notes come along.
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/safetensors.h"

namespace retnet::cli {
namespace {

namespace fs = std::filesystem;

int run_convert(const std::vector<std::string>& argv) {
    Args args(argv, {});
    const std::string model_dir = args.require("model");
    const std::string out_dir = args.require("out");
    const std::string dtype_name = args.get_or("dtype", "bf16");
    args.finish();
    DType dtype;
    if (dtype_name == "bf16") dtype = DType::BF16;
    else if (dtype_name == "f32") dtype = DType::F32;
    else throw Error("--dtype must be f32 or bf16, not '" + dtype_name + "'");
    std::error_code ec;
    if (fs::exists(out_dir) && fs::equivalent(model_dir, out_dir, ec))
        throw Error("--out " + out_dir + " is the model directory itself; choose another one");

    const Model model = load_model(model_dir);
    save_model(model, out_dir, dtype);
    for (const char* extra : {"tokenizer.model", "training.json"}) {
        const fs::path from = fs::path(model_dir) / extra;
        if (!fs::exists(from)) continue;
        fs::copy_file(from, fs::path(out_dir) / extra, fs::copy_options::overwrite_existing, ec);
        if (ec) throw Error((fs::path(out_dir) / extra).string() + ": cannot copy: " + ec.message());
    }
    const auto bytes = fs::file_size(fs::path(out_dir) / "model.safetensors");
    std::printf("wrote %s (%s weights, model.safetensors %.2f MB)\n", out_dir.c_str(), dtype_name.c_str(),
                static_cast<double>(bytes) / 1e6);
    return 0;
}

const Command reg("convert", "retnet convert --model DIR --out DIR [--dtype bf16|f32]", &run_convert);

}  // namespace
}  // namespace retnet::cli
