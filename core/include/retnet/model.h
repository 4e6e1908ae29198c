// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A RetNet language model in memory: its config and its weights in one layout for both families.
// Weights are float32, except that a model loaded with WeightStorage::AsStored keeps the big
// matrices (projections, embedding, output) of a bf16 checkpoint in bf16 (retnet/tensor.h). Linear weights keep PyTorch's [out_features, in_features] layout (y = x Wᵀ).
// Family differences that are not weights (rotary variant, where 1/√Dk sits, the in-retention
// normalization) are decided by config.family at run time.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "retnet/config.h"
#include "retnet/tensor.h"

namespace retnet {

struct LayerWeights {
    Tensor attn_norm;  // (d)        RMSNorm before retention
    Tensor q_proj;     // (H*Dk, d)
    Tensor k_proj;     // (H*Dk, d)
    Tensor v_proj;     // (H*Dv, d)
    Tensor g_proj;     // (H*Dv, d)  swish output gate
    Tensor o_proj;     // (d, H*Dv)
    Tensor head_norm;  // (Dv)       fla: shared per-head RMSNorm weight; empty = no weight (torchscale)
    Tensor ffn_norm;   // (d)        RMSNorm before the FFN
    Tensor ffn_act;    // (F, d)     branch that goes through the activation (fc1 / gate_proj)
    Tensor ffn_lin;    // (F, d)     linear branch (gate / up_proj)
    Tensor ffn_out;    // (d, F)     (fc2 / down_proj)
};

struct ModelWeights {
    Tensor embed;           // (V, d)
    Tensor embed_norm;      // (d)  torchscale layernorm_embedding; empty otherwise
    std::vector<LayerWeights> layers;  // L
    Tensor final_norm;      // (d)
    Tensor lm_head;         // (V, d); empty when tied to embed (use output_matrix())
    std::vector<float> log_decay;     // (H)     log γ_h, float32 as both references compute it
    std::vector<float> rotary_theta;  // (Dk/2)  rotation frequency of pair i

    const Tensor& output_matrix() const { return lm_head.empty() ? embed : lm_head; }
};

struct Model {
    ModelConfig config;
    ModelWeights weights;
    std::string directory;  // where it was loaded from ("" for models made in memory)

    int64_t parameter_count() const;
    // Bytes the weight tensors hold in memory.
    uint64_t weight_bytes() const;
    // True when every weight is float32 (what training and the analyses that edit weights need).
    bool all_f32() const;
};

// "bf16", "fp32" or "mixed": how the model holds its matrices, which hold the weights' bytes
// (vectors stay float32).
std::string matrices_precision(const Model& model);

// A float32 copy of the model (bf16 weights widened exactly).
Model widened(const Model& model);
// The model itself when all float32, else a widened copy: for the backends that read float32
// weights (the reference); make_backend applies it to every device but the CPU and the GPUs. The
// copy is refused (retnet::Error) when it and the stored weights would pass the memory limit.
std::shared_ptr<const Model> with_f32_weights(std::shared_ptr<const Model> model);
// The model with its matrices (the rank-2 weights) held in bf16, as a bf16 checkpoint's are; the
// norms' vectors stay float32. Taken by value: a caller that moves its model in narrows it in place
// (a copy of a large model's float32 weights would double the memory). `cancelled` is polled
// between tensors (retnet::Cancelled): narrowing every weight of a large model takes seconds.
Model narrowed_to_bf16(Model model, const std::function<bool()>& cancelled = {});
// The model itself when its matrices are bf16 already, else a narrowed copy (as with_f32_weights;
// refused when the copy and the model would pass the memory limit).
std::shared_ptr<const Model> with_bf16_matrices(std::shared_ptr<const Model> model,
                                                const std::function<bool()>& cancelled = {});
// Every weight tensor of the model, for code that visits them all.
std::vector<const Tensor*> weight_tensors(const Model& model);

// γ_h = 1 − 2^(−5−h), as log γ rounded through float32 exactly as torchscale and fla compute it.
std::vector<float> default_log_decay(int n_heads);
// torchscale: θ_i = 10000^(−i/(Dk/2−1)) (linspace); fla: θ_i = base^(−2i/Dk) (base 10000; the
// Transformer twin's is its rope_theta, formed in float32 as transformers' Llama does).
std::vector<float> default_rotary_theta(Family family, int head_dim_k, double base = 10000.0);
// The rotary frequencies a model of this config has (the twin's from its rope_theta).
std::vector<float> default_rotary_theta(const ModelConfig& config);

// Allocates every tensor with the config's shapes, filled with zeros (norm weights with ones).
// With allocate = false the tensors get their shapes but no values (the loader allocates each in
// the type it keeps, so that a bf16 model never holds a float32 copy on the way). `cancelled` is
// asked after the embedding and before each layer (throws retnet::Cancelled).
Model make_empty_model(const ModelConfig& config, bool allocate = true, const std::function<bool()>& cancelled = {});
// The reference implementation's initialization (docs/spec.md §2.11 torchscale, §3.7 fla), deterministic in seed.
// `cancelled` is asked as the tensors are allocated (make_empty_model), before each layer, and every
// 2^20 values drawn (a model of billions of values takes tens of seconds); true throws
// retnet::Cancelled.
Model make_random_model(const ModelConfig& config, uint64_t seed, const std::function<bool()>& cancelled = {});

// The Transformer twin of a RetNet config (docs/transformer.md): same d, L, H, vocabulary, norm eps,
// tying and token ids; head width D = d/H (q, k, v, o of H·D); the SwiGLU width chosen so that
// the parameter count matches the RetNet's (transformer_twin_ffn_dim). Throws retnet::Error when
// H does not divide d or d/H is odd (rotary rotates pairs).
ModelConfig transformer_twin_config(const ModelConfig& retnet);
// The twin's SwiGLU width F': RetNet's attention holds q, k (K×d), v, g (Vd×d) and o (d×Vd),
// (2K + 3Vd)·d values a layer; the twin's q, k, v, o hold 4·d·(H·D) = 4d². The difference goes
// into the FFN, 3·d values per unit of width: F' = F + (2K + 3Vd − 4d)/3, rounded to the nearest
// multiple of 8 (at least 8). The twin's count then differs from the RetNet's by at most
// L·(12d + Dv) + d: the rounding (≤ 4 units of 3d a layer), RetNet's head norm weight (Dv a
// layer) and torchscale's embedding norm (d).
int transformer_twin_ffn_dim(const ModelConfig& retnet);
// The config of `architecture` a command (init, train --arch) builds from `config`, read from
// `source`: for the RetNet the config itself (a Llama config is refused: "add --arch
// transformer"); for the Transformer the twin of a RetNet config, a Llama config as it is.
ModelConfig config_for_architecture(const ModelConfig& config, Architecture architecture, const std::string& source);
// A randomly initialized twin (Llama's init: normal std 0.02, norms 1), deterministic in seed;
// `cancelled` as for make_random_model.
Model make_transformer_twin(const ModelConfig& retnet, uint64_t seed, const std::function<bool()>& cancelled = {});

// Reports load progress in [0, 1], from 0 before the first tensor; false cancels (retnet::Cancelled).
using ProgressCallback = std::function<bool(double fraction)>;

// How the loader holds the weights. F32: everything widened to float32 (training, analyses that
// edit weights). AsStored: 2-D matrices stored as BF16 in the file stay bf16 (half the memory;
// the CPU backend streams them, the other backends get a widened copy from make_backend); other
// dtypes (F16, F64) and the 1-D weights are float32.
enum class WeightStorage { F32, AsStored };

// Loads a model directory: config.json + model.safetensors (or a sharded
// model.safetensors.index.json). Validates every tensor's presence and shape against the config
// before allocating; throws retnet::Error naming the file and the problem.
Model load_model(const std::string& directory, const ProgressCallback& progress = {},
                 WeightStorage storage = WeightStorage::F32);
// Writes config.json + model.safetensors (float32) in the model's family layout. Each file is
// atomic, and neither replaces its old version unless both were written in full.
void save_model(const Model& model, const std::string& directory);
// The same with the weights stored as `weight_dtype`: DType::F32 or DType::BF16 (round to nearest
// even, half the bytes; loading widens them back to float32 unless WeightStorage::AsStored).
// The model's own tensors may be held in either type. Other types throw. `cancelled` is asked
// before each tensor is written and before the files replace their old versions: true throws
// retnet::Cancelled with neither file replaced and no temporary file left.
// `carried_files` (file name, bytes), such as a tokenizer.model that comes with the model, join the
// same commit: each is written in full before the weights replace theirs and renamed after, so one
// that cannot be written leaves the old model whole.
enum class DType;  // retnet/safetensors.h
void save_model(const Model& model, const std::string& directory, DType weight_dtype,
                const std::function<bool()>& cancelled = {},
                const std::vector<std::pair<std::string, std::string>>& carried_files = {});

}  // namespace retnet
