// SPDX-License-Identifier: GPL-3.0-or-later
// Text splitting, evaluation, and reading/writing the trainer's model files.
#include <algorithm>
#include <cmath>
#include <numbers>

#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/sampler.h"
#include "retnet/trainer.h"
#include "retnet/utf8.h"

namespace retnet::train {

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

namespace {

// The text's tokens and the counts both evaluations report: every token after the first is
// predicted; the first one's characters are context only.
std::vector<int32_t> tokens_to_evaluate(const Tokenizer& tokenizer, std::string_view text, EvalResult& result) {
    std::vector<int32_t> tokens = tokenizer.encode(text);
    if (tokens.size() < 2) throw Error("evaluation text is too short: fewer than 2 tokens");
    result.tokens = static_cast<int64_t>(tokens.size()) - 1;
    result.characters = count_characters(text) - count_characters(tokenizer.token_bytes(tokens[0], true));
    return tokens;
}

void set_losses(EvalResult& result, double loss_sum) {
    result.loss_per_token = loss_sum / static_cast<double>(result.tokens);
    result.bits_per_char = loss_sum / std::numbers::ln2 / static_cast<double>(std::max<int64_t>(1, result.characters));
}

// −Σ_t log p(targets[t]) over the rows of logits (rows, V).
double target_loss_sum(const Tensor& logits, const int32_t* targets) {
    const auto rows = static_cast<size_t>(logits.shape.at(0)), V = static_cast<size_t>(logits.shape.at(1));
    double sum = 0;
    for (size_t t = 0; t < rows; ++t) sum -= log_probability({logits.data.data() + t * V, V}, targets[t]);
    return sum;
}

}  // namespace

EvalResult evaluate_text(const ModelConfig& config, const ParamLayout& layout, const float* params,
                         const Tokenizer& tokenizer, std::string_view text, int window, int batch,
                         const EvalProgress& progress) {
    return evaluate_text([&](const BatchView& view) { return loss_and_gradient<float>(config, layout, params, view, nullptr); },
                         tokenizer, text, window, batch, progress);
}

EvalResult evaluate_text(const BatchLoss& batch_loss, const Tokenizer& tokenizer, std::string_view text, int window,
                         int batch, const EvalProgress& progress) {
    if (window < 1) throw Error("evaluation window must be at least 1 token");
    EvalResult result;
    const std::vector<int32_t> tokens = tokens_to_evaluate(tokenizer, text, result);
    // Windows of `window` predictions: inputs tokens[s .. s+W), targets tokens[s+1 .. s+W+1).
    double loss_sum = 0;
    const int64_t n_pred = result.tokens;
    const int64_t full = n_pred / window;
    int64_t done = 0;
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
        done += int64_t(count) * len;
        if (progress && !progress(done, n_pred)) throw Cancelled();
    };
    for (int64_t w = 0; w < full; w += batch) run(w, static_cast<int>(std::min<int64_t>(batch, full - w)), window);
    const int64_t rest = n_pred - full * window;
    if (rest > 0) run(full, 1, static_cast<int>(rest));
    set_losses(result, loss_sum);
    return result;
}

BatchLoss backend_batch_loss(Backend& backend, std::function<bool()> cancelled) {
    ForwardOptions options;
    options.cancelled = std::move(cancelled);
    return [&backend, options](const BatchView& b) {
        const auto T = static_cast<size_t>(b.seq_len);
        double total = 0.0;
        for (size_t i = 0; i < static_cast<size_t>(b.batch); ++i) {
            backend.reset();
            total += target_loss_sum(backend.forward({b.inputs + i * T, T}, options), b.targets + i * T);
        }
        return total / (static_cast<double>(b.batch) * static_cast<double>(T));
    };
}

EvalResult evaluate_text_streaming(Backend& backend, const Tokenizer& tokenizer, std::string_view text, int piece,
                                   const EvalProgress& progress) {
    if (piece < 1) throw Error("evaluation piece must be at least 1 token");
    EvalResult result;
    const std::vector<int32_t> tokens = tokens_to_evaluate(tokenizer, text, result);
    backend.reset();
    ForwardOptions options;
    options.form = Form::Chunkwise;
    double loss_sum = 0;
    for (int64_t start = 0; start < result.tokens; start += piece) {
        const int64_t len = std::min<int64_t>(piece, result.tokens - start);
        const Tensor logits = backend.forward(std::span(tokens).subspan(static_cast<size_t>(start), static_cast<size_t>(len)),
                                              options);  // (len, V)
        loss_sum += target_loss_sum(logits, tokens.data() + start + 1);
        if (progress && !progress(start + len, result.tokens)) throw Cancelled();
    }
    set_losses(result, loss_sum);
    return result;
}

LoadedWeights load_trained_weights(const std::string& directory, const ProgressCallback& progress) {
    const Model model = load_model(directory, progress);
    LoadedWeights w;
    w.config = model.config;
    w.layout = make_param_layout(w.config);  // throws for anything but the fla layout or its twin
    // The trainer computes γ (none for the twin) and θ from the config; a checkpoint that stores
    // other values (load_model accepts them) would silently change the model.
    const std::vector<float> decay = w.config.is_transformer() ? std::vector<float>{} : default_log_decay(w.config.n_heads);
    if (model.weights.log_decay != decay || model.weights.rotary_theta != default_rotary_theta(w.config))
        throw Error(directory + ": the model stores non-default decays or rotary frequencies, which the trainer does not support");
    w.params = flatten_weights(model, w.layout);
    return w;
}

void save_trained_weights(const ModelConfig& config, const ParamLayout& layout,
                          std::span<const float> params, const std::string& directory) {
    Model model = make_empty_model(config);
    unflatten_weights(params, layout, model);
    save_model(model, directory);
}

}  // namespace retnet::train
