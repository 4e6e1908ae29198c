// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/model.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <type_traits>

#include "retnet/error.h"
#include "retnet/memory_limit.h"

namespace retnet {

std::vector<float> default_log_decay(int n_heads) {
    // Both references compute log(1 − 2^(−5−h)) in float32: heads h ≥ 20 round to γ = 1 exactly.
    std::vector<float> out(static_cast<size_t>(n_heads));
    for (int h = 0; h < n_heads; ++h) {
        const float gamma = 1.0f - std::exp2(static_cast<float>(-5 - h));
        out[static_cast<size_t>(h)] = std::log(gamma);
    }
    return out;
}

std::vector<float> default_rotary_theta(Family family, int head_dim_k, double base) {
    const int half = head_dim_k / 2;
    std::vector<float> theta(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) {
        float exponent;
        if (family == Family::TorchScale) {
            // torch.linspace(0, 1, half) in float32 (the first half counts up from 0, the second
            // down from 1, as torch computes it), then 1 / 10000^x.
            const float step = half == 1 ? 0.0f : 1.0f / static_cast<float>(half - 1);
            exponent = i < half / 2 ? step * static_cast<float>(i) : 1.0f - step * static_cast<float>(half - 1 - i);
            theta[static_cast<size_t>(i)] = 1.0f / std::pow(10000.0f, exponent);
        } else {
            // fla and transformers' Llama: inv_freq = 1 / base^(arange(0, dim, 2) / dim) in float32
            exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim_k);
            theta[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(base), exponent);
        }
    }
    return theta;
}

std::vector<float> default_rotary_theta(const ModelConfig& config) {
    return config.is_transformer() ? default_rotary_theta(config.family, config.head_dim_k(), config.rope_theta)
                                   : default_rotary_theta(config.family, config.head_dim_k());
}

int transformer_twin_ffn_dim(const ModelConfig& r) {
    const int64_t extra = 2 * int64_t(r.key_dim) + 3 * int64_t(r.value_dim) - 4 * int64_t(r.d_model);
    const double exact = static_cast<double>(r.ffn_dim) + static_cast<double>(extra) / 3.0;
    const int64_t rounded = 8 * std::llround(exact / 8.0);
    if (rounded > (int64_t(1) << 20)) throw Error("the twin's FFN width " + std::to_string(rounded) + " is out of range");
    return static_cast<int>(std::max<int64_t>(8, rounded));
}

ModelConfig transformer_twin_config(const ModelConfig& r) {
    r.validate();
    if (r.is_transformer()) throw Error("the model is already a Transformer");
    if (r.d_model % r.n_heads != 0 || (r.d_model / r.n_heads) % 2 != 0)
        throw Error("no Transformer twin for d = " + std::to_string(r.d_model) + " and H = " +
                    std::to_string(r.n_heads) + ": the head width d/H must be a whole, even number");
    ModelConfig t;
    t.architecture = Architecture::Transformer;
    t.family = Family::Fla;
    t.vocab_size = r.vocab_size;
    t.d_model = r.d_model;
    t.n_layers = r.n_layers;
    t.n_heads = r.n_heads;
    t.key_dim = t.value_dim = r.d_model;
    t.ffn_dim = transformer_twin_ffn_dim(r);
    t.norm_eps = r.norm_eps;
    t.ffn_activation = Activation::Swish;
    t.tie_embeddings = r.tie_embeddings;
    t.head_norm_affine = false;
    t.chunk_size = r.chunk_size;
    t.bos_token_id = r.bos_token_id;
    t.eos_token_id = r.eos_token_id;
    t.rope_theta = 10000.0;
    t.validate();
    return t;
}

ModelConfig config_for_architecture(const ModelConfig& config, Architecture architecture, const std::string& source) {
    if (architecture == Architecture::RetNet) {
        if (config.is_transformer()) throw Error(source + " describes a Llama Transformer; add --arch transformer");
        return config;
    }
    return config.is_transformer() ? config : transformer_twin_config(config);
}

Model make_transformer_twin(const ModelConfig& retnet, uint64_t seed, const std::function<bool()>& cancelled) {
    return make_random_model(transformer_twin_config(retnet), seed, cancelled);
}

namespace {

// Every weight tensor of `weights` (const or not).
template <typename Weights, typename T = std::conditional_t<std::is_const_v<Weights>, const Tensor, Tensor>>
std::vector<T*> tensors_of(Weights& w) {
    std::vector<T*> out = {&w.embed, &w.embed_norm, &w.final_norm, &w.lm_head};
    for (auto& l : w.layers)
        out.insert(out.end(), {&l.attn_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.head_norm,
                               &l.ffn_norm, &l.ffn_act, &l.ffn_lin, &l.ffn_out});
    return out;
}

}  // namespace

std::vector<const Tensor*> weight_tensors(const Model& model) { return tensors_of(model.weights); }

int64_t Model::parameter_count() const {
    int64_t n = 0;
    for (const Tensor* t : weight_tensors(*this)) n += t->numel();
    return n;
}

uint64_t Model::weight_bytes() const {
    uint64_t n = 0;
    for (const Tensor* t : weight_tensors(*this)) n += t->bytes();
    return n;
}

bool Model::all_f32() const {
    for (const Tensor* t : weight_tensors(*this))
        if (t->storage() != Storage::F32) return false;
    return true;
}

std::string matrices_precision(const Model& model) {
    bool bf16 = false, fp32 = false;  // among the matrices, which hold the weights' bytes (vectors stay float32)
    for (const Tensor* t : weight_tensors(model))
        if (t->rank() == 2 && t->numel() > 0) (t->storage() == Storage::BF16 ? bf16 : fp32) = true;
    return bf16 && fp32 ? "mixed" : bf16 ? "bf16" : "fp32";
}

Model widened(const Model& model) {
    Model out = model;
    for (Tensor* t : tensors_of(out.weights)) t->widen();
    return out;
}

std::shared_ptr<const Model> with_f32_weights(std::shared_ptr<const Model> model) {
    if (!model || model->all_f32()) return model;
    // The float32 copy is made while the stored one is held (a bf16 1.3B model: 2.7 + 5.4 GB).
    check_memory(saturating_sum({model->weight_bytes(), saturating_product({uint64_t(model->parameter_count()), 4})}),
                 "widening the model's bf16 weights to float32");
    return std::make_shared<const Model>(widened(*model));
}

Model narrowed_to_bf16(Model model, const std::function<bool()>& cancelled) {
    for (Tensor* t : tensors_of(model.weights)) {
        if (t->rank() == 2) t->narrow_to_bf16();
        throw_if_cancelled(cancelled);
    }
    return model;
}

std::shared_ptr<const Model> with_bf16_matrices(std::shared_ptr<const Model> model,
                                                const std::function<bool()>& cancelled) {
    const auto weights = weight_tensors(*model);
    if (std::none_of(weights.begin(), weights.end(),
                     [](const Tensor* t) { return t->rank() == 2 && t->storage() == Storage::F32 && t->numel() > 0; }))
        return model;
    // A float32 copy is made beside the model, then narrowed tensor by tensor.
    check_memory(saturating_product({model->weight_bytes(), 2}), "narrowing the model's weights to bf16");
    return std::make_shared<const Model>(narrowed_to_bf16(*model, cancelled));
}

namespace {

// A tensor of this shape: filled, or (allocate = false) with its shape only.
Tensor make_tensor(std::vector<int64_t> shape, float fill, bool allocate) {
    if (allocate) return Tensor(std::move(shape), fill);
    Tensor t;
    t.shape = std::move(shape);
    return t;
}

}  // namespace

Model make_empty_model(const ModelConfig& config, bool allocate, const std::function<bool()>& cancelled) {
    config.validate();
    const auto T = [allocate](std::vector<int64_t> shape, float fill = 0.0f) {
        return make_tensor(std::move(shape), fill, allocate);
    };
    const int64_t V = config.vocab_size, d = config.d_model, K = config.key_dim,
                  Vd = config.value_dim, F = config.ffn_dim;
    Model m;
    m.config = config;
    ModelWeights& w = m.weights;
    w.embed = T({V, d});
    if (config.layernorm_embedding) w.embed_norm = T({d}, 1.0f);
    w.final_norm = T({d}, 1.0f);
    if (!config.tie_embeddings) w.lm_head = T({V, d});
    throw_if_cancelled(cancelled);
    w.layers.resize(static_cast<size_t>(config.n_layers));
    for (LayerWeights& l : w.layers) {
        throw_if_cancelled(cancelled);
        l.attn_norm = T({d}, 1.0f);
        l.q_proj = T({K, d});
        l.k_proj = T({K, d});
        l.v_proj = T({Vd, d});
        if (!config.is_transformer()) l.g_proj = T({Vd, d});  // the twin has no output gate
        l.o_proj = T({d, Vd});
        if (config.family == Family::Fla && config.head_norm_affine)
            l.head_norm = T({config.head_dim_v()}, 1.0f);
        l.ffn_norm = T({d}, 1.0f);
        l.ffn_act = T({F, d});
        l.ffn_lin = T({F, d});
        l.ffn_out = T({d, F});
    }
    if (!config.is_transformer()) w.log_decay = default_log_decay(config.n_heads);  // the twin has no decay
    w.rotary_theta = default_rotary_theta(config);
    return m;
}

namespace {

// `poll` every 2^20 values (a millisecond or so): a 32000 × 1024 embedding took a second between
// two polls, and a second SIGTERM within it ended `retnet cost` before it wrote its report. The
// draws are the same as without it.
using Poll = std::function<void()>;
constexpr size_t kValuesBetweenPolls = size_t{1} << 20;

void fill_normal(Tensor& t, std::mt19937_64& rng, double stddev, const Poll& poll) {
    std::normal_distribution<double> dist(0.0, stddev);
    for (size_t i = 0; i < t.data.size(); ++i) {
        if (i % kValuesBetweenPolls == 0) poll();
        t.data[i] = static_cast<float>(dist(rng));
    }
}

void fill_uniform(Tensor& t, std::mt19937_64& rng, double bound, const Poll& poll) {
    std::uniform_real_distribution<double> dist(-bound, bound);
    for (size_t i = 0; i < t.data.size(); ++i) {
        if (i % kValuesBetweenPolls == 0) poll();
        t.data[i] = static_cast<float>(dist(rng));
    }
}

// torch.nn.init.xavier_uniform_ for a [out, in] weight.
void xavier_uniform(Tensor& t, std::mt19937_64& rng, double gain, const Poll& poll) {
    const double fan_out = static_cast<double>(t.dim(0)), fan_in = static_cast<double>(t.dim(1));
    fill_uniform(t, rng, gain * std::sqrt(6.0 / (fan_in + fan_out)), poll);
}

// nn.Linear's default init: kaiming_uniform(a=√5) = U(±1/√fan_in).
void linear_default(Tensor& t, std::mt19937_64& rng, const Poll& poll) {
    fill_uniform(t, rng, 1.0 / std::sqrt(static_cast<double>(t.dim(1))), poll);
}

}  // namespace

Model make_random_model(const ModelConfig& config, uint64_t seed, const std::function<bool()>& cancelled) {
    const Poll poll = [&cancelled] { throw_if_cancelled(cancelled); };
    poll();
    Model m = make_empty_model(config, true, cancelled);  // zero-filling 0.7 GB took 0.1-0.25 s
    std::mt19937_64 rng(seed);
    ModelWeights& w = m.weights;
    const double d = config.d_model;
    if (config.family == Family::TorchScale) {
        fill_normal(w.embed, rng, 1.0 / std::sqrt(d), poll);
        if (!w.lm_head.empty()) fill_normal(w.lm_head, rng, 1.0 / std::sqrt(d), poll);
        for (LayerWeights& l : w.layers) {
            poll();
            const double g = std::pow(2.0, -2.5);
            xavier_uniform(l.q_proj, rng, g, poll);
            xavier_uniform(l.k_proj, rng, g, poll);
            xavier_uniform(l.v_proj, rng, g, poll);
            xavier_uniform(l.g_proj, rng, g, poll);
            xavier_uniform(l.o_proj, rng, std::pow(2.0, -1.0), poll);
            linear_default(l.ffn_act, rng, poll);
            linear_default(l.ffn_lin, rng, poll);
            linear_default(l.ffn_out, rng, poll);
        }
    } else {
        // fla initializer_range, and LlamaPreTrainedModel's (the twin's g_proj is empty: no values)
        const double range = 0.02;
        fill_normal(w.embed, rng, range, poll);
        if (!w.lm_head.empty()) fill_normal(w.lm_head, rng, range, poll);
        for (LayerWeights& l : w.layers) {
            poll();
            for (Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.ffn_act,
                              &l.ffn_lin, &l.ffn_out})
                fill_normal(*t, rng, range, poll);
        }
    }
    return m;
}

}  // namespace retnet
