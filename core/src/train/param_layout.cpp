// SPDX-License-Identifier: GPL-3.0-or-later
// The trainer's flat parameter vector: its layout (ParamLayout) and the copies between it and a
// Model's tensors. The loss and gradient over it: cpu_train_ops.cpp and train_pass.cpp. The
// names are the model files' (fla's for the RetNet, transformers' Llama for the twin), in their
// storage order.
#include <algorithm>

#include "retnet/error.h"
#include "retnet/train.h"

namespace retnet::train {

ParamLayout make_param_layout(const ModelConfig& config) {
    config.validate();
    if (config.family != Family::Fla || config.scale_embedding || config.layernorm_embedding ||
        config.ffn_activation != Activation::Swish)
        throw Error("training supports the fla layout only (swish GLU, no embedding scale or norm); got " +
                    std::string(family_name(config.family)));
    if (config.head_dim_k() % 2 != 0)
        throw Error("training: key head dimension must be even for the rotary embedding");
    ParamLayout layout;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, bool decay) {
        ParamTensor t;
        t.name = name;
        t.size = shape_numel(shape);
        t.shape = std::move(shape);
        t.offset = layout.total;
        t.weight_decay = decay;
        layout.total += t.size;
        layout.tensors.push_back(t);
        return t.offset;
    };
    const int64_t V = config.vocab_size, d = config.d_model, K = config.key_dim,
                  Vd = config.value_dim, F = config.ffn_dim;
    // fla: model.layers.i.{attn_norm, attn.*, mlp_norm, mlp.*}; Llama: model.layers.i.{input_layernorm,
    // self_attn.*, post_attention_layernorm, mlp.*}, no output gate, no head norm.
    const bool twin = config.is_transformer();
    const std::string attn = twin ? "self_attn." : "attn.";
    layout.embed = add(twin ? "model.embed_tokens.weight" : "model.embeddings.weight", {V, d}, false);
    for (int i = 0; i < config.n_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LayerOffsets l{};
        l.attn_norm = add(p + (twin ? "input_layernorm.weight" : "attn_norm.weight"), {d}, false);
        l.q_proj = add(p + attn + "q_proj.weight", {K, d}, true);
        l.k_proj = add(p + attn + "k_proj.weight", {K, d}, true);
        l.v_proj = add(p + attn + "v_proj.weight", {Vd, d}, true);
        l.g_proj = twin ? -1 : add(p + "attn.g_proj.weight", {Vd, d}, true);
        l.o_proj = add(p + attn + "o_proj.weight", {d, Vd}, true);
        l.head_norm = config.head_norm_affine
                          ? add(p + "attn.g_norm_swish_gate.weight", {config.head_dim_v()}, false)
                          : -1;
        l.ffn_norm = add(p + (twin ? "post_attention_layernorm.weight" : "mlp_norm.weight"), {d}, false);
        l.ffn_act = add(p + "mlp.gate_proj.weight", {F, d}, true);
        l.ffn_lin = add(p + "mlp.up_proj.weight", {F, d}, true);
        l.ffn_out = add(p + "mlp.down_proj.weight", {d, F}, true);
        layout.layers.push_back(l);
    }
    layout.final_norm = add("model.norm.weight", {d}, false);
    layout.lm_head = config.tie_embeddings ? layout.embed : add("lm_head.weight", {V, d}, true);
    return layout;
}

std::pair<int64_t, int64_t> gradient_range(const ParamLayout& layout, const GradientPart& part) {
    // Storage order: embedding, layer 0 … n − 1, final norm, lm_head (untied).
    const auto layer_start = [&layout](size_t l) {
        return l < layout.layers.size() ? layout.layers[l].attn_norm : layout.final_norm;
    };
    switch (part.kind) {
        case GradientPart::Kind::Head: return {layout.final_norm, layout.total};
        case GradientPart::Kind::Embedding: return {layout.embed, layer_start(0)};
        case GradientPart::Kind::Layer: break;
    }
    if (part.layer < 0 || part.layer >= static_cast<int>(layout.layers.size()))
        throw Error("training: no layer " + std::to_string(part.layer) + " in the gradient");
    const auto l = static_cast<size_t>(part.layer);
    return {layer_start(l), layer_start(l + 1)};
}

namespace {

// The model tensors in the layout's storage order (the twin has no g_proj).
std::vector<Tensor*> tensors_in_order(Model& model) {
    ModelWeights& w = model.weights;
    std::vector<Tensor*> out{&w.embed};
    for (LayerWeights& l : w.layers) {
        for (Tensor* t : {&l.attn_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj})
            if (t != &l.g_proj || !model.config.is_transformer()) out.push_back(t);
        if (!l.head_norm.empty()) out.push_back(&l.head_norm);
        for (Tensor* t : {&l.ffn_norm, &l.ffn_act, &l.ffn_lin, &l.ffn_out}) out.push_back(t);
    }
    out.push_back(&w.final_norm);
    if (!w.lm_head.empty()) out.push_back(&w.lm_head);
    return out;
}

void check_shapes(const std::vector<Tensor*>& tensors, const ParamLayout& layout) {
    if (tensors.size() != layout.tensors.size())
        throw Error("training: the model has " + std::to_string(tensors.size()) +
                    " weight tensors, the parameter layout " + std::to_string(layout.tensors.size()));
    for (size_t i = 0; i < tensors.size(); ++i)
        if (tensors[i]->shape != layout.tensors[i].shape)
            throw Error("training: " + layout.tensors[i].name + " has shape " +
                        tensors[i]->shape_string() + ", expected " +
                        shape_to_string(layout.tensors[i].shape));
}

}  // namespace

std::vector<float> flatten_weights(const Model& model, const ParamLayout& layout) {
    std::vector<Tensor*> tensors = tensors_in_order(const_cast<Model&>(model));
    check_shapes(tensors, layout);
    std::vector<float> flat(static_cast<size_t>(layout.total));
    // The trainer's master weights are float32: bf16-held weights are widened (exactly) here.
    for (size_t i = 0; i < tensors.size(); ++i)
        tensors[i]->read_f32(0, tensors[i]->numel(), flat.data() + layout.tensors[i].offset);
    return flat;
}

void unflatten_weights(std::span<const float> flat, const ParamLayout& layout, Model& model) {
    if (static_cast<int64_t>(flat.size()) != layout.total)
        throw Error("training: parameter vector has " + std::to_string(flat.size()) +
                    " values, expected " + std::to_string(layout.total));
    std::vector<Tensor*> tensors = tensors_in_order(model);
    check_shapes(tensors, layout);
    for (size_t i = 0; i < tensors.size(); ++i) {
        const ParamTensor& p = layout.tensors[i];
        tensors[i]->widen();  // trained weights are float32, whatever the model held before
        std::copy(flat.begin() + p.offset, flat.begin() + p.offset + p.size, tensors[i]->data.begin());
    }
}

}  // namespace retnet::train
