// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Model hyper-parameters, read from a model directory's config.json. Two checkpoint families exist
// (see docs/model-format.md): torchscale (the paper authors' RetNetConfig) and fla
// (flash-linear-attention's HF RetNetConfig). The family is detected from the keys present.
// Our own models are written in the fla layout (the native format). A third kind of file, a
// Llama config (model_type "llama"), describes the Transformer twin (docs/transformer.md): a
// decoder-only Transformer that runs through the same block sequence with attention in place of
// retention; it follows fla's conventions (half-split rotary, 1/√D on q, no embedding scale).
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace retnet {

enum class Family { TorchScale, Fla };
enum class Activation { Gelu, Swish };
// What mixes the tokens in each block: gated multi-scale retention, or softmax attention over a
// KV cache (the Transformer twin; family is then Fla, whose rotary and scale rules it shares).
enum class Architecture { RetNet, Transformer };

const char* family_name(Family f);

struct ModelConfig {
    Family family = Family::Fla;
    Architecture architecture = Architecture::RetNet;
    int vocab_size = 0;      // V
    int d_model = 0;         // d
    int n_layers = 0;        // L
    int n_heads = 0;         // H
    int key_dim = 0;         // H * Dk (q/k projection width); the twin: H * D
    int value_dim = 0;       // H * Dv (v/g projection width); the twin: H * D (= key_dim)
    int ffn_dim = 0;         // GLU hidden width
    double norm_eps = 1e-6;  // eps of every RMSNorm, including the per-head one
    Activation ffn_activation = Activation::Swish;
    bool tie_embeddings = false;       // output projection = embedding matrix
    bool scale_embedding = false;      // torchscale: x = sqrt(d) * E[tok] when !no_scale_embedding
    bool layernorm_embedding = false;  // torchscale: RMSNorm after the embedding
    bool head_norm_affine = true;      // fla: per-head RMSNorm has a weight [Dv] shared by heads
    int chunk_size = 64;               // default chunk size of the chunkwise form
    int bos_token_id = -1;
    int eos_token_id = -1;
    double rope_theta = 10000.0;  // the twin's rotary base: θ_i = rope_theta^(−2i/D)

    bool is_transformer() const { return architecture == Architecture::Transformer; }
    int head_dim_k() const { return key_dim / n_heads; }    // Dk
    int head_dim_v() const { return value_dim / n_heads; }  // Dv

    // Throws retnet::Error naming the offending field if the values cannot describe a model.
    void validate() const;
};

// "torchscale", "fla" or, for the Transformer twin, "llama": the kind of checkpoint files.
const char* format_name(const ModelConfig& config);

// Parses a config.json of either family, or a Llama config (the Transformer twin). `source` names the file in error messages.
ModelConfig parse_config(const nlohmann::json& json, const std::string& source = "config.json");
ModelConfig load_config(const std::string& path);
// The config.json of the model's own family (keys as the reference implementation writes them;
// the twin's in transformers' LlamaConfig keys).
nlohmann::json config_to_json(const ModelConfig& config);

}  // namespace retnet
