// SPDX-License-Identifier: GPL-3.0-or-later
// config.json of both checkpoint families (docs/spec.md §2.1 torchscale RetNetConfig, §3.1 fla HF config).
#include "retnet/config.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/json_text.h"

namespace retnet {

using nlohmann::json;

const char* family_name(Family f) {
    switch (f) {
        case Family::TorchScale: return "torchscale";
        case Family::Fla: return "fla";
    }
    return "unknown";
}

const char* format_name(const ModelConfig& config) {
    return config.is_transformer() ? "llama" : family_name(config.family);
}

namespace {

constexpr int kMaxLayers = 1024;
constexpr int kMaxDim = 1 << 20;
constexpr int kMaxVocab = 1 << 24;

// The key that holds a ModelConfig field in the family's own config.json, so that validation
// errors name what the user sees in the file.
struct FieldNames {
    const char* vocab;
    const char* d_model;
    const char* layers;
    const char* heads;
    const char* key_dim;
    const char* value_dim;
    const char* ffn;
    const char* eps;
    const char* chunk;
};

const FieldNames& field_names(const ModelConfig& c) {
    static const FieldNames llama{"vocab_size",        "hidden_size",   "num_hidden_layers",
                                  "num_attention_heads", "num_attention_heads*head_dim",
                                  "num_attention_heads*head_dim", "intermediate_size", "rms_norm_eps",
                                  "chunk_size"};
    if (c.is_transformer()) return llama;
    const Family f = c.family;
    static const FieldNames torchscale{"vocab_size",          "decoder_embed_dim",
                                       "decoder_layers",      "decoder_retention_heads",
                                       "decoder_embed_dim",   "decoder_value_embed_dim",
                                       "decoder_ffn_embed_dim", "layernorm_eps",
                                       "recurrent_chunk_size"};
    static const FieldNames fla{"vocab_size", "hidden_size",       "num_hidden_layers",
                                "num_heads",  "hidden_size*expand_k", "hidden_size*expand_v",
                                "intermediate_size", "norm_eps", "chunk_size"};
    return f == Family::TorchScale ? torchscale : fla;
}

void check_range(const char* name, int64_t value, int64_t lo, int64_t hi) {
    if (value < lo || value > hi)
        throw Error(std::string(name) + " = " + std::to_string(value) + " is outside [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

// Typed access to the keys of one config.json; every error names the file and the key.
class JsonFields {
public:
    JsonFields(const json& j, const std::string& source) : j_(j), source_(source) {}

    bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

    [[noreturn]] void fail(const std::string& what) const { throw Error(source_ + ": " + what); }

    int64_t integer(const char* key) const {
        if (!has(key)) fail(std::string("missing field '") + key + "'");
        const json& v = j_.at(key);
        if (v.is_number_unsigned()) {
            const auto u = v.get<uint64_t>();
            if (u > static_cast<uint64_t>(INT_MAX)) fail(out_of_range(key, v));
            return static_cast<int64_t>(u);
        }
        if (v.is_number_integer()) {
            const auto i = v.get<int64_t>();
            if (i < INT_MIN || i > INT_MAX) fail(out_of_range(key, v));
            return i;
        }
        // Some writers dump integral values as 512.0.
        if (v.is_number_float()) {
            const double d = v.get<double>();
            if (std::isfinite(d) && d == std::floor(d)) {
                if (d < INT_MIN || d > INT_MAX) fail(out_of_range(key, v));
                return static_cast<int64_t>(d);
            }
        }
        fail(std::string("field '") + key + "' must be an integer (got " + v.dump() + ")");
    }
    int64_t integer(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }

    double number(const char* key) const {
        if (!has(key)) fail(std::string("missing field '") + key + "'");
        const json& v = j_.at(key);
        if (!v.is_number()) fail(std::string("field '") + key + "' must be a number (got " + v.dump() + ")");
        return v.get<double>();
    }
    double number(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }

    bool boolean(const char* key, bool fallback) const {
        if (!has(key)) return fallback;
        const json& v = j_.at(key);
        if (!v.is_boolean()) fail(std::string("field '") + key + "' must be true or false (got " + v.dump() + ")");
        return v.get<bool>();
    }

    std::string string(const char* key, const std::string& fallback) const {
        if (!has(key)) return fallback;
        const json& v = j_.at(key);
        if (!v.is_string()) fail(std::string("field '") + key + "' must be a string (got " + v.dump() + ")");
        return v.get<std::string>();
    }

    const json& raw(const char* key) const { return j_.at(key); }

private:
    static std::string out_of_range(const char* key, const json& v) {
        return std::string("field '") + key + "' = " + v.dump() + " is out of range";
    }
    const json& j_;
    const std::string& source_;
};

int to_int(double value, const char* what, const JsonFields& f) {
    if (!std::isfinite(value) || value < INT_MIN || value > INT_MAX)
        f.fail(std::string(what) + " = " + std::to_string(value) + " is out of range");
    return static_cast<int>(value);  // Python int(): truncation toward zero
}

ModelConfig parse_torchscale(const JsonFields& f) {
    if (!f.boolean("decoder_normalize_before", true))
        f.fail("decoder_normalize_before: false (post-norm) is not supported");
    if (f.boolean("deepnorm", false)) f.fail("deepnorm: true is not supported");
    if (f.boolean("multiway", false)) f.fail("multiway: true is not supported");
    if (f.integer("moe_freq", 0) > 0) f.fail("moe_freq > 0 (mixture of experts) is not supported");
    if (f.boolean("no_output_layer", false)) f.fail("no_output_layer: true is not supported");
    // syncdoth's HF port (same math, `model.`-prefixed tensors) can swap the GLU for the older
    // FeedForwardNetwork with biases and a LayerNorm, which no RetNet we run has.
    if (!f.boolean("use_glu", true)) f.fail("use_glu: false (a feed-forward network with biases) is not supported");
    if (f.boolean("use_ffn_rms_norm", false)) f.fail("use_ffn_rms_norm: true is not supported");

    ModelConfig c;
    c.family = Family::TorchScale;
    c.d_model = static_cast<int>(f.integer("decoder_embed_dim"));
    c.key_dim = c.d_model;
    c.value_dim = static_cast<int>(f.integer("decoder_value_embed_dim"));
    c.n_heads = static_cast<int>(f.integer("decoder_retention_heads"));
    c.ffn_dim = static_cast<int>(f.integer("decoder_ffn_embed_dim"));
    c.n_layers = static_cast<int>(f.integer("decoder_layers"));
    c.vocab_size = static_cast<int>(f.integer("vocab_size"));
    const std::string act = f.string("activation_fn", "gelu");
    if (act == "gelu")
        c.ffn_activation = Activation::Gelu;
    else if (act == "swish")
        c.ffn_activation = Activation::Swish;
    else
        f.fail("activation_fn '" + act + "' is not supported (expected \"gelu\" or \"swish\")");
    c.scale_embedding = !f.boolean("no_scale_embedding", true);
    c.layernorm_embedding = f.boolean("layernorm_embedding", false);
    c.norm_eps = f.number("layernorm_eps", 1e-6);
    // syncdoth's HF port names it as transformers does.
    c.tie_embeddings = f.boolean("share_decoder_input_output_embed", f.boolean("tie_word_embeddings", false));
    c.chunk_size = static_cast<int>(f.integer("recurrent_chunk_size", 512));
    c.head_norm_affine = false;
    c.bos_token_id = static_cast<int>(f.integer("bos_token_id", -1));
    c.eos_token_id = static_cast<int>(f.integer("eos_token_id", -1));
    return c;
}

ModelConfig parse_fla(const JsonFields& f) {
    const std::string act = f.string("hidden_act", "swish");
    if (act != "swish" && act != "silu")
        f.fail("hidden_act '" + act + "' is not supported (expected \"swish\" or \"silu\")");
    if (!f.boolean("use_output_gate", true)) f.fail("use_output_gate: false is not supported");
    if (f.boolean("use_short_conv", false)) f.fail("use_short_conv: true is not supported");
    if (f.has("feature_map"))
        f.fail("feature_map " + f.raw("feature_map").dump() + " is not supported (expected null)");
    if (f.has("attn")) f.fail("hybrid attention layers ('attn' is not null) are not supported");
    if (f.has("attnres_block_size")) f.fail("attnres_block_size (AttnRes residuals) is not supported");

    ModelConfig c;
    c.family = Family::Fla;
    c.d_model = static_cast<int>(f.integer("hidden_size"));
    c.n_heads = static_cast<int>(f.integer("num_heads"));
    if (f.has("num_kv_heads") && f.integer("num_kv_heads") != c.n_heads)
        f.fail("num_kv_heads = " + std::to_string(f.integer("num_kv_heads")) + " differs from num_heads = " +
               std::to_string(c.n_heads) + ": grouped k/v heads (GQA) are not supported");
    c.n_layers = static_cast<int>(f.integer("num_hidden_layers"));
    c.vocab_size = static_cast<int>(f.integer("vocab_size"));
    c.key_dim = to_int(c.d_model * f.number("expand_k", 1.0), "hidden_size*expand_k", f);
    c.value_dim = to_int(c.d_model * f.number("expand_v", 2.0), "hidden_size*expand_v", f);
    if (f.has("intermediate_size")) {
        c.ffn_dim = static_cast<int>(f.integer("intermediate_size"));
    } else {
        // fla GatedMLP: int(d * hidden_ratio * 2 / 3) rounded up to a multiple of 256.
        const double ratio = f.number("hidden_ratio", 2.0);
        const int64_t raw = to_int(static_cast<double>(c.d_model) * ratio * 2.0 / 3.0, "intermediate size", f);
        const int64_t rounded = 256 * ((raw + 255) / 256);
        if (rounded > INT_MAX) f.fail("hidden_ratio gives an intermediate size out of range");
        c.ffn_dim = static_cast<int>(rounded);
    }
    c.ffn_activation = Activation::Swish;
    // fla's configs before 2024-04 named the eps rms_norm_eps (fla-hub's 1.3B/2.7B still do).
    c.norm_eps = f.number("norm_eps", f.number("rms_norm_eps", 1e-6));
    c.tie_embeddings = f.boolean("tie_word_embeddings", false);
    c.head_norm_affine = f.boolean("elementwise_affine", true);
    c.scale_embedding = false;
    c.layernorm_embedding = false;
    c.chunk_size = 64;  // the chunk size of fla's chunk kernel; not stored in config.json
    c.bos_token_id = static_cast<int>(f.integer("bos_token_id", -1));
    c.eos_token_id = static_cast<int>(f.integer("eos_token_id", -1));
    return c;
}

// A token id that transformers may write as a list (Llama 3's several eos ids): the first one.
int token_id(const JsonFields& f, const char* key) {
    if (f.has(key) && f.raw(key).is_array()) {
        const json& ids = f.raw(key);
        if (ids.empty()) return -1;
        if (!ids[0].is_number_integer()) f.fail(std::string("field '") + key + "' must hold token ids (got " + ids.dump() + ")");
        const int64_t id = ids[0].get<int64_t>();
        if (id < INT_MIN || id > INT_MAX) f.fail(std::string("field '") + key + "' = " + ids.dump() + " is out of range");
        return static_cast<int>(id);
    }
    return static_cast<int>(f.integer(key, -1));
}

// The rotary base: transformers ≥ 5 writes it into "rope_parameters" ({"rope_theta": …,
// "rope_type": "default"}), earlier versions as a top-level "rope_theta". Any other rope_type
// (linear, dynamic, yarn, llama3 …) changes the frequencies and is refused.
double llama_rope_theta(const JsonFields& f) {
    if (!f.has("rope_parameters")) return f.number("rope_theta", 10000.0);
    const json& p = f.raw("rope_parameters");
    if (!p.is_object()) f.fail("rope_parameters must be an object (got " + p.dump() + ")");
    const json type = p.value("rope_type", json("default"));
    if (type != "default") f.fail("rope_parameters.rope_type " + type.dump() + " is not supported (expected \"default\")");
    const json theta = p.value("rope_theta", json(f.has("rope_theta") ? f.number("rope_theta", 10000.0) : 10000.0));
    if (!theta.is_number()) f.fail("rope_parameters.rope_theta must be a number (got " + theta.dump() + ")");
    return theta.get<double>();
}

// transformers' LlamaConfig: the Transformer twin (docs/transformer.md). What a plain
// LlamaForCausalLM computes is accepted; variants that change the math are refused by name.
ModelConfig parse_llama(const JsonFields& f) {
    const std::string act = f.string("hidden_act", "silu");
    if (act != "silu" && act != "swish") f.fail("hidden_act '" + act + "' is not supported (expected \"silu\")");
    if (f.boolean("attention_bias", false)) f.fail("attention_bias: true is not supported");
    if (f.boolean("mlp_bias", false)) f.fail("mlp_bias: true is not supported");
    if (f.has("rope_scaling")) f.fail("rope_scaling " + f.raw("rope_scaling").dump() + " is not supported (expected null)");
    ModelConfig c;
    c.architecture = Architecture::Transformer;
    c.family = Family::Fla;
    c.d_model = static_cast<int>(f.integer("hidden_size"));
    c.n_heads = static_cast<int>(f.integer("num_attention_heads"));
    if (f.has("num_key_value_heads") && f.integer("num_key_value_heads") != c.n_heads)
        f.fail("num_key_value_heads = " + std::to_string(f.integer("num_key_value_heads")) +
               " differs from num_attention_heads = " + std::to_string(c.n_heads) +
               ": grouped-query attention (GQA) is not supported");
    if (c.n_heads < 1) f.fail("num_attention_heads = " + std::to_string(c.n_heads) + " must be at least 1");
    if (!f.has("head_dim") && c.d_model % c.n_heads != 0)
        f.fail("num_attention_heads = " + std::to_string(c.n_heads) + " does not divide hidden_size = " +
               std::to_string(c.d_model));
    const int64_t head_dim = f.integer("head_dim", c.d_model / c.n_heads);
    if (head_dim < 1 || head_dim * c.n_heads > kMaxDim)
        f.fail("head_dim = " + std::to_string(head_dim) + " is out of range");
    if (head_dim % 2 != 0) f.fail("head_dim = " + std::to_string(head_dim) + " must be even (rotary rotates pairs)");
    c.key_dim = c.value_dim = static_cast<int>(head_dim * c.n_heads);
    c.n_layers = static_cast<int>(f.integer("num_hidden_layers"));
    c.vocab_size = static_cast<int>(f.integer("vocab_size"));
    c.ffn_dim = static_cast<int>(f.integer("intermediate_size"));
    c.ffn_activation = Activation::Swish;
    c.norm_eps = f.number("rms_norm_eps", 1e-6);
    c.rope_theta = llama_rope_theta(f);
    c.tie_embeddings = f.boolean("tie_word_embeddings", false);
    c.head_norm_affine = false;
    c.bos_token_id = token_id(f, "bos_token_id");
    c.eos_token_id = token_id(f, "eos_token_id");
    return c;
}

// transformers names Flax and TensorFlow classes with a prefix; their configs can otherwise look
// like fla's (hidden_size, num_heads) and would be refused for an unrelated key.
void refuse_foreign_architecture(const JsonFields& f) {
    if (!f.has("architectures") || !f.raw("architectures").is_array()) return;
    for (const json& a : f.raw("architectures")) {
        const std::string name = a.is_string() ? a.get<std::string>() : std::string();
        if (name.rfind("Flax", 0) == 0 || name.rfind("TF", 0) == 0)
            f.fail("architecture " + name + " is a " + (name[0] == 'F' ? "Flax" : "TensorFlow") +
                   " model; load it in transformers and save it with save_pretrained(safe_serialization=True) "
                   "from the PyTorch class, then open that directory");
    }
}

void validate_transformer(const ModelConfig& c, const FieldNames& n) {
    if (c.family != Family::Fla || c.head_norm_affine)
        throw Error("the Transformer twin follows fla's conventions (family fla, no head norm weight)");
    if (c.key_dim != c.value_dim)
        throw Error(std::string("the Transformer twin has one head width for q, k and v (") + n.key_dim + ")");
    if (!std::isfinite(c.rope_theta) || c.rope_theta <= 0.0)
        throw Error("rope_theta = " + std::to_string(c.rope_theta) + " must be finite and > 0");
}

}  // namespace

void ModelConfig::validate() const {
    const FieldNames& n = field_names(*this);
    check_range(n.vocab, vocab_size, 1, kMaxVocab);
    check_range(n.d_model, d_model, 1, kMaxDim);
    check_range(n.layers, n_layers, 1, kMaxLayers);
    check_range(n.heads, n_heads, 1, kMaxDim);
    check_range(n.key_dim, key_dim, 1, kMaxDim);
    check_range(n.value_dim, value_dim, 1, kMaxDim);
    check_range(n.ffn, ffn_dim, 1, kMaxDim);
    if (key_dim % n_heads != 0)
        throw Error(std::string(n.heads) + " = " + std::to_string(n_heads) + " does not divide " + n.key_dim +
                    " = " + std::to_string(key_dim));
    if (value_dim % n_heads != 0)
        throw Error(std::string(n.heads) + " = " + std::to_string(n_heads) + " does not divide " + n.value_dim +
                    " = " + std::to_string(value_dim));
    if (head_dim_k() % 2 != 0)
        throw Error("key head dimension " + std::string(n.key_dim) + "/" + n.heads + " = " +
                    std::to_string(head_dim_k()) + " must be even (rotary rotates pairs)");
    if (!std::isfinite(norm_eps) || norm_eps < 0.0)
        throw Error(std::string(n.eps) + " = " + std::to_string(norm_eps) + " must be finite and >= 0");
    check_range(n.chunk, chunk_size, 1, INT_MAX);
    if (bos_token_id < -1 || bos_token_id >= vocab_size)
        throw Error("bos_token_id = " + std::to_string(bos_token_id) + " is not a token id below vocab_size = " +
                    std::to_string(vocab_size));
    if (eos_token_id < -1 || eos_token_id >= vocab_size)
        throw Error("eos_token_id = " + std::to_string(eos_token_id) + " is not a token id below vocab_size = " +
                    std::to_string(vocab_size));
    if (family == Family::TorchScale && key_dim != d_model)
        throw Error("torchscale models have key_dim = decoder_embed_dim, got key_dim = " + std::to_string(key_dim) +
                    " and decoder_embed_dim = " + std::to_string(d_model));
    if (family == Family::Fla && (scale_embedding || layernorm_embedding))
        throw Error("fla models have no embedding scale and no embedding norm");
    if (is_transformer()) validate_transformer(*this, n);
}


ModelConfig parse_config(const json& j, const std::string& source) {
    if (!j.is_object()) throw Error(source + ": expected a JSON object at the top level");
    const JsonFields f(j, source);
    refuse_foreign_architecture(f);
    ModelConfig c;
    if (f.has("decoder_embed_dim")) {
        c = parse_torchscale(f);
    } else if (f.has("model_type")) {
        const std::string type = f.string("model_type", "");
        if (type == "llama")
            c = parse_llama(f);
        else if (type == "retnet")
            c = parse_fla(f);
        else
            f.fail("model_type '" + type + "' is not a RetNet (expected \"retnet\") or a Llama (\"llama\")");
    } else if (f.has("hidden_size") && f.has("num_heads")) {
        c = parse_fla(f);
    } else {
        f.fail("not a RetNet config: neither 'decoder_embed_dim' (torchscale) nor 'model_type': \"retnet\" (fla)");
    }
    try {
        c.validate();
    } catch (const Error& e) {
        throw Error(source + ": " + e.what());
    }
    return c;
}

// A config.json is a few KiB; anything near this is not one.
constexpr uint64_t kMaxConfigBytes = 16u << 20;

ModelConfig load_config(const std::string& path) {
    const std::string text = read_regular_file(path, uint64_t(16) << 20);  // a FIFO or directory: its own line
    json j;
    try {
        j = parse_json_bounded(text);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
        throw Error(path + ": not valid JSON (" + json_error_text(e) + ")");
    }
    return parse_config(j, path);
}

namespace {

// The smallest ratio r with int(d * r) == width, so that fla's int(hidden_size * expand) is exact.
double expand_ratio(int width, int d_model) {
    double r = static_cast<double>(width) / d_model;
    while (static_cast<int64_t>(d_model * r) < width) r = std::nextafter(r, std::numeric_limits<double>::infinity());
    return r;
}

}  // namespace

namespace {

// transformers' LlamaConfig keys, as LlamaForCausalLM.save_pretrained writes them.
json llama_config_json(const ModelConfig& c) {
    json j;
    j["model_type"] = "llama";
    j["architectures"] = json::array({"LlamaForCausalLM"});
    j["hidden_size"] = c.d_model;
    j["intermediate_size"] = c.ffn_dim;
    j["num_hidden_layers"] = c.n_layers;
    j["num_attention_heads"] = c.n_heads;
    j["num_key_value_heads"] = c.n_heads;
    j["head_dim"] = c.head_dim_k();
    j["hidden_act"] = "silu";
    j["rms_norm_eps"] = c.norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["rope_scaling"] = nullptr;
    j["attention_bias"] = false;
    j["attention_dropout"] = 0.0;
    j["mlp_bias"] = false;
    j["tie_word_embeddings"] = c.tie_embeddings;
    j["vocab_size"] = c.vocab_size;
    j["max_position_embeddings"] = 2048;
    j["initializer_range"] = 0.02;
    j["pretraining_tp"] = 1;
    j["use_cache"] = true;
    j["pad_token_id"] = nullptr;
    j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
    j["eos_token_id"] = c.eos_token_id >= 0 ? json(c.eos_token_id) : json(nullptr);
    return j;
}

}  // namespace

json config_to_json(const ModelConfig& c) {
    if (c.is_transformer()) return llama_config_json(c);
    json j;
    if (c.family == Family::TorchScale) {
        j["decoder_embed_dim"] = c.d_model;
        j["decoder_value_embed_dim"] = c.value_dim;
        j["decoder_retention_heads"] = c.n_heads;
        j["decoder_ffn_embed_dim"] = c.ffn_dim;
        j["decoder_layers"] = c.n_layers;
        j["decoder_normalize_before"] = true;
        j["activation_fn"] = c.ffn_activation == Activation::Gelu ? "gelu" : "swish";
        j["dropout"] = 0.0;
        j["activation_dropout"] = 0.0;
        j["drop_path_rate"] = 0.0;
        j["no_scale_embedding"] = !c.scale_embedding;
        j["layernorm_embedding"] = c.layernorm_embedding;
        j["layernorm_eps"] = c.norm_eps;
        j["deepnorm"] = false;
        j["subln"] = true;
        j["multiway"] = false;
        j["moe_freq"] = 0;
        j["share_decoder_input_output_embed"] = c.tie_embeddings;
        j["no_output_layer"] = false;
        j["chunkwise_recurrent"] = false;
        j["recurrent_chunk_size"] = c.chunk_size;
        j["vocab_size"] = c.vocab_size;
        // Not RetNetConfig keys (it ignores unknown ones); kept so the tokenizer ids survive a save.
        if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
        if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
        return j;
    }
    j["model_type"] = "retnet";
    j["architectures"] = json::array({"RetNetForCausalLM"});
    j["attn_mode"] = "chunk";
    j["hidden_size"] = c.d_model;
    j["expand_k"] = expand_ratio(c.key_dim, c.d_model);
    j["expand_v"] = expand_ratio(c.value_dim, c.d_model);
    j["num_heads"] = c.n_heads;
    j["num_kv_heads"] = nullptr;
    j["hidden_ratio"] = 2;
    j["intermediate_size"] = c.ffn_dim;
    j["num_hidden_layers"] = c.n_layers;
    j["hidden_act"] = "swish";
    j["feature_map"] = nullptr;
    j["use_short_conv"] = false;
    j["conv_size"] = 4;
    j["use_output_gate"] = true;
    j["elementwise_affine"] = c.head_norm_affine;
    j["norm_eps"] = c.norm_eps;
    j["attn"] = nullptr;
    j["fuse_norm"] = true;
    j["fuse_swiglu"] = true;
    j["fuse_cross_entropy"] = true;
    j["tie_word_embeddings"] = c.tie_embeddings;
    j["vocab_size"] = c.vocab_size;
    j["pad_token_id"] = nullptr;
    j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
    j["eos_token_id"] = c.eos_token_id >= 0 ? json(c.eos_token_id) : json(nullptr);
    j["initializer_range"] = 0.02;
    j["max_position_embeddings"] = 2048;
    j["use_cache"] = true;
    return j;
}

}  // namespace retnet
