// SPDX-License-Identifier: GPL-3.0-or-later
// Text splitting, evaluation, and reading/writing the trainer's model files.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/safetensors.h"
#include "retnet/trainer.h"
#include "retnet/utf8.h"

namespace retnet::train {

namespace fs = std::filesystem;

int64_t count_characters(std::string_view text) {
    int64_t n = 0;
    for (unsigned char c : text) n += (c & 0xC0) != 0x80;  // every byte that is not a continuation
    return n;
}

std::pair<std::string_view, std::string_view> split_tail(std::string_view text, double tail_fraction) {
    if (!(tail_fraction > 0.0 && tail_fraction < 1.0))
        throw Error("tail fraction must be in (0, 1), got " + std::to_string(tail_fraction));
    const int64_t chars = count_characters(text);
    const int64_t head_chars = chars - static_cast<int64_t>(std::llround(static_cast<double>(chars) * tail_fraction));
    size_t cut = 0;
    int64_t seen = 0;
    for (; cut < text.size(); ++cut) {
        if ((static_cast<unsigned char>(text[cut]) & 0xC0) != 0x80) {
            if (seen == head_chars) break;
            ++seen;
        }
    }
    return {text.substr(0, cut), text.substr(cut)};
}

EvalResult evaluate_text(const ModelConfig& config, const ParamLayout& layout, const float* params,
                         const Tokenizer& tokenizer, std::string_view text, int window, int batch) {
    return evaluate_text([&](const BatchView& view) { return loss_and_gradient<float>(config, layout, params, view, nullptr); },
                         tokenizer, text, window, batch);
}

EvalResult evaluate_text(const BatchLoss& batch_loss, const Tokenizer& tokenizer, std::string_view text, int window,
                         int batch) {
    if (window < 1) throw Error("evaluation window must be at least 1 token");
    const std::vector<int32_t> tokens = tokenizer.encode(text);
    if (tokens.size() < 2) throw Error("evaluation text is too short: fewer than 2 tokens");
    EvalResult result;
    result.tokens = static_cast<int64_t>(tokens.size()) - 1;
    const std::string first = tokenizer.token_bytes(tokens[0], true);
    result.characters = count_characters(text) - count_characters(first);
    // Windows of `window` predictions: inputs tokens[s .. s+W), targets tokens[s+1 .. s+W+1).
    double loss_sum = 0;
    const int64_t n_pred = result.tokens;
    const int64_t full = n_pred / window;
    std::vector<int32_t> in, tg;
    auto run = [&](int64_t first_window, int count, int len) {
        in.assign(static_cast<size_t>(count) * static_cast<size_t>(len), 0);
        tg.assign(in.size(), 0);
        for (int b = 0; b < count; ++b) {
            const int64_t s = (first_window + b) * window;
            for (int t = 0; t < len; ++t) {
                in[static_cast<size_t>(b * len + t)] = tokens[static_cast<size_t>(s + t)];
                tg[static_cast<size_t>(b * len + t)] = tokens[static_cast<size_t>(s + t + 1)];
            }
        }
        const BatchView view{in.data(), tg.data(), count, len};
        loss_sum += batch_loss(view) * count * len;
    };
    for (int64_t w = 0; w < full; w += batch) run(w, static_cast<int>(std::min<int64_t>(batch, full - w)), window);
    const int64_t rest = n_pred - full * window;
    if (rest > 0) run(full, 1, static_cast<int>(rest));
    result.loss_per_token = loss_sum / static_cast<double>(n_pred);
    result.bits_per_char = loss_sum / std::numbers::ln2 / static_cast<double>(std::max<int64_t>(1, result.characters));
    return result;
}

LoadedWeights load_trained_weights(const std::string& directory) {
    LoadedWeights w;
    w.config = load_config((fs::path(directory) / "config.json").string());
    w.layout = make_param_layout(w.config);
    const std::string path = (fs::path(directory) / "model.safetensors").string();
    SafetensorsFile file(path);
    w.params.assign(static_cast<size_t>(w.layout.total), 0.0f);
    for (const ParamTensor& t : w.layout.tensors) {
        std::string name = t.name;
        // fla writes the per-head norm weight under either name (fused or unfused gate).
        if (!file.contains(name) && name.ends_with("attn.g_norm_swish_gate.weight"))
            name = name.substr(0, name.size() - std::string("g_norm_swish_gate.weight").size()) + "g_norm.weight";
        if (file.info(name).shape != t.shape)
            throw Error(path + ": " + name + " has shape " + shape_to_string(file.info(name).shape) +
                        ", the config needs " + shape_to_string(t.shape));
        file.read_into(name, w.params.data() + t.offset);
    }
    return w;
}

void save_trained_weights(const ModelConfig& config, const ParamLayout& layout,
                          std::span<const float> params, const std::string& directory) {
    fs::create_directories(directory);
    std::vector<Tensor> tensors;
    tensors.reserve(layout.tensors.size());
    std::vector<NamedTensor> named;
    for (const ParamTensor& t : layout.tensors) {
        Tensor x(t.shape);
        std::copy(params.begin() + t.offset, params.begin() + t.offset + t.size, x.data.begin());
        tensors.push_back(std::move(x));
    }
    for (size_t i = 0; i < tensors.size(); ++i) named.push_back({layout.tensors[i].name, &tensors[i]});
    write_safetensors((fs::path(directory) / "model.safetensors").string(), named, {{"format", "pt"}});
    io::AtomicFile json_file((fs::path(directory) / "config.json").string());
    json_file.write(config_to_json(config).dump(2) + "\n");
    json_file.commit();
}

}  // namespace retnet::train
