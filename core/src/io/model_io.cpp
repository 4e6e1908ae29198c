// SPDX-License-Identifier: GPL-3.0-or-later
// Model directories: config.json + safetensors weights, in the torchscale key layout (docs/spec.md §2.9)
// or the fla layout (docs/spec.md §3.6). See docs/model-format.md.
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"

namespace retnet {

namespace fs = std::filesystem;

namespace {

// Optional extras of our native (fla-layout) files, written only when a model's decay or rotary
// frequencies differ from fla's fixed ones, so that a save/load round trip is exact. fla itself
// ignores unknown keys with a warning.
constexpr const char* kNativeLogDecay = "retnet.log_decay";
constexpr const char* kNativeRotaryTheta = "retnet.rotary_theta";

using Shape = std::vector<int64_t>;

// Where one file tensor goes in ModelWeights. `rows` splits a tensor along its first dimension
// over several destinations (the old fused fla gate_proj [2F, d]).
struct Slot {
    std::string name;
    Shape shape;
    std::vector<std::function<Tensor&(ModelWeights&)>> targets;  // one, or one per row block
};

std::function<Tensor&(ModelWeights&)> global(Tensor ModelWeights::*member) {
    return [member](ModelWeights& w) -> Tensor& { return w.*member; };
}
std::function<Tensor&(ModelWeights&)> layer(size_t i, Tensor LayerWeights::*member) {
    return [i, member](ModelWeights& w) -> Tensor& { return w.layers[i].*member; };
}

std::string layer_prefix(Family family, size_t i) {
    return (family == Family::TorchScale ? "layers." : "model.layers.") + std::to_string(i) + ".";
}

bool ignorable(const std::string& name) {
    // Buffers some writers keep that carry nothing we use: the rotary cache of older fla
    // versions (recomputed from Dk), fairseq's format version.
    auto ends_with = [&](const std::string& suffix) {
        return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    return ends_with(".inv_freq") || name == "version" || name == "decoder.version";
}

struct Layout {
    std::vector<Slot> slots;
    std::string decay_name;  // "" if the family's file has none
    std::string angle_name;
    std::set<std::string> tolerated;  // present or not, read or not (e.g. a duplicate of a tied matrix)
};

// transformers' LlamaForCausalLM names (the Transformer twin). No decay, and no rotary buffer:
// the frequencies follow from rope_theta (an old checkpoint's rotary_emb.inv_freq is ignorable).
Layout llama_layout(const ModelConfig& c) {
    const int64_t V = c.vocab_size, d = c.d_model, K = c.key_dim, F = c.ffn_dim;
    Layout out;
    auto add = [&](std::string name, Shape shape, std::function<Tensor&(ModelWeights&)> target) {
        out.slots.push_back(Slot{std::move(name), std::move(shape), {std::move(target)}});
    };
    add("model.embed_tokens.weight", {V, d}, global(&ModelWeights::embed));
    for (size_t i = 0; i < static_cast<size_t>(c.n_layers); ++i) {
        const std::string l = "model.layers." + std::to_string(i) + ".";
        add(l + "input_layernorm.weight", {d}, layer(i, &LayerWeights::attn_norm));
        add(l + "self_attn.q_proj.weight", {K, d}, layer(i, &LayerWeights::q_proj));
        add(l + "self_attn.k_proj.weight", {K, d}, layer(i, &LayerWeights::k_proj));
        add(l + "self_attn.v_proj.weight", {K, d}, layer(i, &LayerWeights::v_proj));
        add(l + "self_attn.o_proj.weight", {d, K}, layer(i, &LayerWeights::o_proj));
        add(l + "post_attention_layernorm.weight", {d}, layer(i, &LayerWeights::ffn_norm));
        add(l + "mlp.gate_proj.weight", {F, d}, layer(i, &LayerWeights::ffn_act));
        add(l + "mlp.up_proj.weight", {F, d}, layer(i, &LayerWeights::ffn_lin));
        add(l + "mlp.down_proj.weight", {d, F}, layer(i, &LayerWeights::ffn_out));
    }
    add("model.norm.weight", {d}, global(&ModelWeights::final_norm));
    if (c.tie_embeddings)
        out.tolerated.insert("lm_head.weight");  // transformers omits it when tied; a copy, if present, is unused
    else
        add("lm_head.weight", {V, d}, global(&ModelWeights::lm_head));
    return out;
}

// The file layout of a model with this config. `names` (the file's tensors, when loading)
// resolves the variants a family allows; when saving it is null and the canonical names are used.
Layout make_layout(const ModelConfig& c, const SafetensorsSet* names) {
    const int64_t V = c.vocab_size, d = c.d_model, K = c.key_dim, Vd = c.value_dim, F = c.ffn_dim;
    if (c.is_transformer()) return llama_layout(c);
    const auto has = [&](const std::string& n) { return names && names->contains(n); };
    Layout out;
    auto add = [&](std::string name, Shape shape, std::function<Tensor&(ModelWeights&)> target) {
        out.slots.push_back(Slot{std::move(name), std::move(shape), {std::move(target)}});
    };

    if (c.family == Family::TorchScale) {
        // fairseq's RetNetLanguageModel prefixes every key with "decoder."; syncdoth's HF port
        // (RetNetForCausalLM, docs/spec.md §2.9) with "model." and names the output projection lm_head.
        const bool fairseq = has("decoder.embed_tokens.weight") || has("decoder.output_projection.weight") ||
                             has("decoder.layer_norm.weight");
        const bool syncdoth = has("model.embed_tokens.weight") || has("model.layer_norm.weight");
        const std::string p = fairseq ? "decoder." : syncdoth ? "model." : "";
        const std::string embed = p + "embed_tokens.weight";
        const std::string output = syncdoth ? "lm_head.weight" : p + "output_projection.weight";
        if (!c.tie_embeddings) {
            add(embed, {V, d}, global(&ModelWeights::embed));
            add(output, {V, d}, global(&ModelWeights::lm_head));
        } else if (names && !has(embed) && has(output)) {
            add(output, {V, d}, global(&ModelWeights::embed));  // a tied file may keep only this name
        } else {
            add(embed, {V, d}, global(&ModelWeights::embed));
            out.tolerated.insert(output);
        }
        if (c.layernorm_embedding) add(p + "layernorm_embedding.weight", {d}, global(&ModelWeights::embed_norm));
        for (size_t i = 0; i < static_cast<size_t>(c.n_layers); ++i) {
            const std::string l = p + layer_prefix(c.family, i);
            add(l + "retention.q_proj.weight", {K, d}, layer(i, &LayerWeights::q_proj));
            add(l + "retention.k_proj.weight", {K, d}, layer(i, &LayerWeights::k_proj));
            add(l + "retention.v_proj.weight", {Vd, d}, layer(i, &LayerWeights::v_proj));
            add(l + "retention.g_proj.weight", {Vd, d}, layer(i, &LayerWeights::g_proj));
            add(l + "retention.out_proj.weight", {d, Vd}, layer(i, &LayerWeights::o_proj));
            add(l + "retention_layer_norm.weight", {d}, layer(i, &LayerWeights::attn_norm));
            add(l + "ffn.fc1.weight", {F, d}, layer(i, &LayerWeights::ffn_act));
            add(l + "ffn.gate.weight", {F, d}, layer(i, &LayerWeights::ffn_lin));
            add(l + "ffn.fc2.weight", {d, F}, layer(i, &LayerWeights::ffn_out));
            add(l + "final_layer_norm.weight", {d}, layer(i, &LayerWeights::ffn_norm));
        }
        add(p + "layer_norm.weight", {d}, global(&ModelWeights::final_norm));
        out.decay_name = p + "retnet_rel_pos.decay";
        out.angle_name = p + "retnet_rel_pos.angle";
        return out;
    }

    add("model.embeddings.weight", {V, d}, global(&ModelWeights::embed));
    for (size_t i = 0; i < static_cast<size_t>(c.n_layers); ++i) {
        const std::string l = layer_prefix(c.family, i);
        add(l + "attn_norm.weight", {d}, layer(i, &LayerWeights::attn_norm));
        add(l + "attn.q_proj.weight", {K, d}, layer(i, &LayerWeights::q_proj));
        add(l + "attn.k_proj.weight", {K, d}, layer(i, &LayerWeights::k_proj));
        add(l + "attn.v_proj.weight", {Vd, d}, layer(i, &LayerWeights::v_proj));
        add(l + "attn.g_proj.weight", {Vd, d}, layer(i, &LayerWeights::g_proj));
        add(l + "attn.o_proj.weight", {d, Vd}, layer(i, &LayerWeights::o_proj));
        if (c.head_norm_affine) {
            // fla names it g_norm_swish_gate on its fused path and g_norm otherwise (docs/spec.md §3.6).
            const bool unfused = has(l + "attn.g_norm.weight") && !has(l + "attn.g_norm_swish_gate.weight");
            add(l + (unfused ? "attn.g_norm.weight" : "attn.g_norm_swish_gate.weight"), {c.head_dim_v()},
                layer(i, &LayerWeights::head_norm));
        }
        add(l + "mlp_norm.weight", {d}, layer(i, &LayerWeights::ffn_norm));
        const std::string gate = l + "mlp.gate_proj.weight", up = l + "mlp.up_proj.weight";
        if (has(gate) && !has(up) && names->info(gate).shape == Shape{2 * F, d}) {
            // Before 2025-02 fla fused both branches: rows [0, F) gate (SiLU), rows [F, 2F) up.
            out.slots.push_back(
                Slot{gate, {2 * F, d}, {layer(i, &LayerWeights::ffn_act), layer(i, &LayerWeights::ffn_lin)}});
        } else {
            add(gate, {F, d}, layer(i, &LayerWeights::ffn_act));
            add(up, {F, d}, layer(i, &LayerWeights::ffn_lin));
        }
        add(l + "mlp.down_proj.weight", {d, F}, layer(i, &LayerWeights::ffn_out));
    }
    add("model.norm.weight", {d}, global(&ModelWeights::final_norm));
    if (c.tie_embeddings)
        out.tolerated.insert("lm_head.weight");  // HF omits it when tied; a copy, if present, is unused
    else
        add("lm_head.weight", {V, d}, global(&ModelWeights::lm_head));
    out.decay_name = kNativeLogDecay;
    out.angle_name = kNativeRotaryTheta;
    return out;
}

void check_finite(const float* data, size_t n, const std::string& file, const std::string& name) {
    for (size_t i = 0; i < n; ++i)
        if (!std::isfinite(data[i]))
            throw Error(file + ": tensor '" + name + "' contains " + (std::isnan(data[i]) ? "NaN" : "Inf") +
                        " at index " + std::to_string(i));
}

// Integer or boolean data (a quantized export, a mask) would silently become integral weights.
void check_float_dtype(const SafetensorsSet& set, const std::string& name) {
    const DType dtype = set.info(name).dtype;
    if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F64)
        throw Error(set.file_of(name) + ": tensor '" + name + "' has dtype " + dtype_name(dtype) +
                    "; weights must be F32, F16, BF16 or F64");
}

std::vector<float> read_vector(const SafetensorsSet& set, const std::string& name) {
    const Tensor t = set.read(name);
    check_finite(t.ptr(), t.data.size(), set.file_of(name), name);
    return t.data;
}

// Checkpoints in formats we recognise but do not read: one line naming the format and what to do,
// before config.json is parsed (a Flax config could otherwise pass for fla's).
void refuse_foreign_files(const fs::path& dir) {
    std::error_code ec;
    const auto has = [&](const char* name) { return fs::exists(dir / name, ec); };
    if (has("model.safetensors") || has("model.safetensors.index.json")) return;
    const std::string where = dir.string() + ": ";
    if (has("pytorch_model.bin") || has("pytorch_model.bin.index.json"))
        throw Error(where + "PyTorch pickle weights (pytorch_model.bin) are not read, since unpickling runs code; "
                    "convert them once: python3 -c \"import torch; from safetensors.torch import save_file; "
                    "sd = torch.load('pytorch_model.bin', map_location='cpu', weights_only=True); "
                    "save_file({k: v.contiguous().clone() for k, v in sd.items()}, 'model.safetensors')\"");
    if (has("flax_model.msgpack") || has("flax_model.msgpack.index.json"))
        throw Error(where + "a Flax checkpoint (flax_model.msgpack) is not read; convert it with transformers: "
                    "AutoModelForCausalLM.from_pretrained(DIR, from_flax=True).save_pretrained(OUT, "
                    "safe_serialization=True)");
    if (has("tf_model.h5"))
        throw Error(where + "a TensorFlow checkpoint (tf_model.h5) is not read; convert it with transformers: "
                    "AutoModelForCausalLM.from_pretrained(DIR, from_tf=True).save_pretrained(OUT, "
                    "safe_serialization=True)");
}

}  // namespace

namespace {

// Checks every tensor of the layout against the files (presence, shape, dtype; nothing
// unexpected) before any allocation or data read. Returns the number of values to read.
uint64_t check_files_against_layout(const ModelConfig& config, const Layout& layout, const SafetensorsSet& set,
                                    const std::string& config_path) {
    std::set<std::string> used(layout.tolerated.begin(), layout.tolerated.end());
    uint64_t total_values = 0;
    for (const Slot& s : layout.slots) {
        if (!set.contains(s.name))
            throw Error(set.source() + ": missing tensor '" + s.name + "' (expected " + shape_to_string(s.shape) +
                        " from " + config_path + ")");
        const Shape& found = set.info(s.name).shape;
        if (found != s.shape)
            throw Error(set.file_of(s.name) + ": tensor '" + s.name + "' has shape " + shape_to_string(found) +
                        ", expected " + shape_to_string(s.shape) + " from " + config_path);
        check_float_dtype(set, s.name);
        used.insert(s.name);
        total_values += static_cast<uint64_t>(shape_numel(s.shape));
    }
    const int64_t H = config.n_heads, Dk = config.head_dim_k();
    const Shape decay_shape{H};
    const Shape angle_shape = config.family == Family::TorchScale ? Shape{Dk} : Shape{Dk / 2};
    for (const auto& [name, shape] : {std::pair{layout.decay_name, decay_shape}, std::pair{layout.angle_name, angle_shape}}) {
        if (!set.contains(name)) continue;
        if (set.info(name).shape != shape)
            throw Error(set.file_of(name) + ": tensor '" + name + "' has shape " +
                        shape_to_string(set.info(name).shape) + ", expected " + shape_to_string(shape) + " from " +
                        config_path);
        check_float_dtype(set, name);
        used.insert(name);
    }
    size_t unexpected = 0;
    std::string first_unexpected;
    for (const std::string& name : set.names())
        if (!used.count(name) && !ignorable(name) && unexpected++ == 0) first_unexpected = name;
    if (unexpected)
        throw Error(set.file_of(first_unexpected) + ": unexpected tensor '" + first_unexpected + "'" +
                    (unexpected > 1 ? " (and " + std::to_string(unexpected - 1) + " more)" : std::string()) +
                    " for a " + format_name(config) + " model as described by " + config_path);
    return total_values;
}

void check_finite_bf16(const uint16_t* data, size_t n, const std::string& file, const std::string& name) {
    for (size_t i = 0; i < n; ++i)
        if ((data[i] & 0x7f80u) == 0x7f80u)  // all exponent bits set: Inf or NaN
            throw Error(file + ": tensor '" + name + "' contains " + ((data[i] & 0x7fu) ? "NaN" : "Inf") +
                        " at index " + std::to_string(i));
}

// Whether the slot's tensor stays bf16 in memory: a 2-D matrix stored as BF16, loaded AsStored.
bool keeps_bf16(const Slot& s, const SafetensorsSet& set, WeightStorage storage) {
    return storage == WeightStorage::AsStored && s.shape.size() == 2 && set.info(s.name).dtype == DType::BF16;
}

// Reads one slot's tensor (split over its targets) into `values` (Tensor::data or Tensor::bf16).
template <typename T>
void read_slot_as(const Slot& s, const SafetensorsSet& set, std::vector<T> Tensor::*values, Model& model) {
    std::vector<T> buffer(static_cast<size_t>(shape_numel(s.shape)));  // (rows, cols) of the file tensor
    if constexpr (std::is_same_v<T, float>) {
        set.read_into(s.name, buffer.data());
        check_finite(buffer.data(), buffer.size(), set.file_of(s.name), s.name);
    } else {
        set.read_bf16_into(s.name, buffer.data());
        check_finite_bf16(buffer.data(), buffer.size(), set.file_of(s.name), s.name);
    }
    if (s.targets.size() == 1) {
        s.targets[0](model.weights).*values = std::move(buffer);
        return;
    }
    const size_t block = buffer.size() / s.targets.size();
    for (size_t k = 0; k < s.targets.size(); ++k)
        (s.targets[k](model.weights).*values)
            .assign(buffer.begin() + static_cast<std::ptrdiff_t>(k * block),
                    buffer.begin() + static_cast<std::ptrdiff_t>((k + 1) * block));
}

// Reads the layout's weight tensors into the model (allocated here, each in the type it keeps;
// a fused tensor into its several targets).
void read_weights(const Layout& layout, const SafetensorsSet& set, uint64_t total_values, WeightStorage storage,
                  const ProgressCallback& progress, Model& model) {
    // Asked before the first tensor too: a cancel that came before the load (a Ctrl-C while the
    // files were checked) stops it before the largest tensors are read.
    if (progress && !progress(0.0)) throw Cancelled();
    uint64_t done_values = 0;
    for (const Slot& s : layout.slots) {
        if (keeps_bf16(s, set, storage))
            read_slot_as<uint16_t>(s, set, &Tensor::bf16, model);
        else
            read_slot_as<float>(s, set, &Tensor::data, model);
        done_values += static_cast<uint64_t>(shape_numel(s.shape));
        if (progress && !progress(static_cast<double>(done_values) / static_cast<double>(total_values)))
            throw Cancelled();
    }
}

// The stored decay and rotary frequencies, where the checkpoint has them.
void read_decay_and_theta(const ModelConfig& config, const Layout& layout, const SafetensorsSet& set, Model& model) {
    if (set.contains(layout.decay_name)) model.weights.log_decay = read_vector(set, layout.decay_name);
    if (!set.contains(layout.angle_name)) return;
    std::vector<float> angle = read_vector(set, layout.angle_name);
    if (config.family == Family::TorchScale) {
        // torchscale stores θ interleaved-duplicated: [θ0, θ0, θ1, θ1, ...].
        std::vector<float> theta(angle.size() / 2);
        for (size_t i = 0; i < theta.size(); ++i) {
            if (angle[2 * i] != angle[2 * i + 1])
                throw Error(set.file_of(layout.angle_name) + ": tensor '" + layout.angle_name +
                            "' is not of the form [θ0, θ0, θ1, θ1, ...] (entries " + std::to_string(2 * i) +
                            " and " + std::to_string(2 * i + 1) + " differ)");
            theta[i] = angle[2 * i];
        }
        angle = std::move(theta);
    }
    model.weights.rotary_theta = std::move(angle);
}

// The decay and rotary buffers the model's file keeps (filled into decay and angle, which must
// outlive `tensors`): torchscale's always, our fla-layout extras only when they differ from fla's
// fixed ones, none for the twin (its frequencies follow from rope_theta).
void add_buffers(const Model& model, const Layout& layout, const std::string& where, Tensor& decay, Tensor& angle,
                 std::vector<NamedTensor>& tensors) {
    const ModelConfig& config = model.config;
    const ModelWeights& weights = model.weights;
    if (config.is_transformer()) {
        if (weights.rotary_theta != default_rotary_theta(config) || !weights.log_decay.empty())
            throw Error(where + "a Llama file keeps no decay and no rotary frequencies other than rope_theta's");
        return;
    }
    if (weights.log_decay.size() != static_cast<size_t>(config.n_heads) ||
        weights.rotary_theta.size() != static_cast<size_t>(config.head_dim_k() / 2))
        throw Error(where + "log_decay must have " + std::to_string(config.n_heads) + " values and rotary_theta " +
                    std::to_string(config.head_dim_k() / 2));
    decay = Tensor({config.n_heads});
    decay.data = weights.log_decay;
    if (config.family == Family::TorchScale) {
        angle = Tensor({config.head_dim_k()});
        for (size_t i = 0; i < weights.rotary_theta.size(); ++i)
            angle.data[2 * i] = angle.data[2 * i + 1] = weights.rotary_theta[i];
        tensors.push_back({layout.angle_name, &angle});
        tensors.push_back({layout.decay_name, &decay});
    } else {
        angle = Tensor({config.head_dim_k() / 2});
        angle.data = weights.rotary_theta;
        if (weights.log_decay != default_log_decay(config.n_heads)) tensors.push_back({layout.decay_name, &decay});
        if (weights.rotary_theta != default_rotary_theta(config.family, config.head_dim_k()))
            tensors.push_back({layout.angle_name, &angle});
    }
}

}  // namespace

Model load_model(const std::string& directory, const ProgressCallback& progress, WeightStorage storage) {
    refuse_foreign_files(directory);
    const std::string config_path = (fs::path(directory) / "config.json").string();
    const ModelConfig config = load_config(config_path);
    const SafetensorsSet set = SafetensorsSet::open_directory(directory);
    const Layout layout = make_layout(config, &set);
    const uint64_t total_values = check_files_against_layout(config, layout, set, config_path);
    Model model = make_empty_model(config, /*allocate=*/false);
    model.directory = directory;
    read_weights(layout, set, total_values, storage, progress, model);
    read_decay_and_theta(config, layout, set, model);
    return model;
}

void save_model(const Model& model, const std::string& directory) { save_model(model, directory, DType::F32); }

void save_model(const Model& model, const std::string& directory, DType weight_dtype,
                const std::function<bool()>& cancelled,
                const std::vector<std::pair<std::string, std::string>>& carried_files) {
    const ModelConfig& config = model.config;
    if (weight_dtype != DType::F32 && weight_dtype != DType::BF16)
        throw Error("cannot save to " + directory + ": weights can be stored as F32 or BF16, not " +
                    dtype_name(weight_dtype));
    config.validate();
    const Layout layout = make_layout(config, nullptr);
    ModelWeights& weights = const_cast<ModelWeights&>(model.weights);  // the slots only read here

    const std::string where = "cannot save to " + directory + ": ";
    if (weights.layers.size() != static_cast<size_t>(config.n_layers))
        throw Error(where + "the model has " + std::to_string(weights.layers.size()) + " layers but its config says " +
                    std::to_string(config.n_layers));
    std::vector<NamedTensor> tensors;
    for (const Slot& s : layout.slots) {
        const Tensor& t = s.targets[0](weights);
        if (t.shape != s.shape || t.numel() != shape_numel(s.shape))
            throw Error(where + "tensor '" + s.name + "' has shape " + t.shape_string() + ", expected " +
                        shape_to_string(s.shape) + " from the config");
        tensors.push_back({s.name, &t});
    }
    Tensor decay, angle;  // the decay and rotary buffers, when the file keeps them
    add_buffers(model, layout, where, decay, angle, tensors);
    // One dtype per file: the decay and rotary buffers, when written, must not be rounded to bf16.
    if (weight_dtype == DType::BF16 && tensors.size() != layout.slots.size())
        throw Error(where + "BF16 storage would round the model's decay/rotary buffers (" + layout.decay_name + ", " +
                    layout.angle_name + "); save it as F32");
    std::error_code ec;
    fs::create_directories(directory, ec);
    if (ec) throw Error(where + ec.message());
    // A leftover index would take precedence over the file written here when loading.
    if (fs::exists(fs::path(directory) / "model.safetensors.index.json"))
        throw Error(where + "it holds a sharded model (model.safetensors.index.json); choose another directory");

    // Every file is written in full before any replaces its old version, so a failure (a full disk,
    // an unwritable file) leaves the old set; only a crash between the renames could mix them.
    io::AtomicFile config_file((fs::path(directory) / "config.json").string());
    config_file.write(config_to_json(config).dump(2) + "\n");
    std::vector<std::unique_ptr<io::AtomicFile>> carried;
    for (const auto& [name, bytes] : carried_files) {
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
            throw Error(where + "'" + name + "' is not a file name");
        carried.push_back(std::make_unique<io::AtomicFile>((fs::path(directory) / name).string()));
        carried.back()->write(bytes);
    }
    write_safetensors((fs::path(directory) / "model.safetensors").string(), tensors,
                      {{"format", "pt"}, {"producer", "retnet-studio"}, {"family", format_name(config)}},
                      weight_dtype, cancelled);
    config_file.commit();
    for (const auto& file : carried) file->commit();
}

}  // namespace retnet
