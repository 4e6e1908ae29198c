// SPDX-License-Identifier: GPL-3.0-or-later
// The fla RetNet's training forward (keeping the activations the backward needs) and backward,
// over the flat parameter vector of ParamLayout.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/train.h"
#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

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
    layout.embed = add("model.embeddings.weight", {V, d}, false);
    for (int i = 0; i < config.n_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LayerOffsets l{};
        l.attn_norm = add(p + "attn_norm.weight", {d}, false);
        l.q_proj = add(p + "attn.q_proj.weight", {K, d}, true);
        l.k_proj = add(p + "attn.k_proj.weight", {K, d}, true);
        l.v_proj = add(p + "attn.v_proj.weight", {Vd, d}, true);
        l.g_proj = add(p + "attn.g_proj.weight", {Vd, d}, true);
        l.o_proj = add(p + "attn.o_proj.weight", {d, Vd}, true);
        l.head_norm = config.head_norm_affine
                          ? add(p + "attn.g_norm_swish_gate.weight", {config.head_dim_v()}, false)
                          : -1;
        l.ffn_norm = add(p + "mlp_norm.weight", {d}, false);
        l.ffn_act = add(p + "mlp.gate_proj.weight", {F, d}, true);
        l.ffn_lin = add(p + "mlp.up_proj.weight", {F, d}, true);
        l.ffn_out = add(p + "mlp.down_proj.weight", {d, F}, true);
        layout.layers.push_back(l);
    }
    layout.final_norm = add("model.norm.weight", {d}, false);
    layout.lm_head = config.tie_embeddings ? layout.embed : add("lm_head.weight", {V, d}, true);
    return layout;
}

namespace {

// The model tensors in the layout's storage order.
std::vector<Tensor*> tensors_in_order(Model& model) {
    ModelWeights& w = model.weights;
    std::vector<Tensor*> out{&w.embed};
    for (LayerWeights& l : w.layers) {
        for (Tensor* t : {&l.attn_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj})
            out.push_back(t);
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
    for (size_t i = 0; i < tensors.size(); ++i)
        std::copy(tensors[i]->data.begin(), tensors[i]->data.end(),
                  flat.begin() + layout.tensors[i].offset);
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
        std::copy(flat.begin() + p.offset, flat.begin() + p.offset + p.size, tensors[i]->data.begin());
    }
}

namespace {

// Activations of one layer kept for the backward. N = B·T rows.
template <typename T>
struct LayerActivations {
    std::vector<T> x_in;     // (N, d) residual stream entering the layer
    std::vector<T> rstd1;    // (N)
    std::vector<T> xn1;      // (N, d)
    std::vector<T> q, k;     // (N, H·Dk) rotated; q also scaled by Dk^−½
    std::vector<T> v, g;     // (N, H·Dv)
    std::vector<T> o;        // (N, H·Dv) retention output
    std::vector<T> rstd_h;   // (N, H)
    std::vector<T> y;        // (N, H·Dv) normed and gated, input of o_proj
    std::vector<T> x_mid;    // (N, d) after the retention residual
    std::vector<T> rstd2;    // (N)
    std::vector<T> xn2;      // (N, d)
    std::vector<T> a, b;     // (N, F) gate and up projections
    std::vector<T> hidden;   // (N, F) silu(a) ⊙ b
    std::vector<T> keep_attn, keep_ffn;  // (N, d) dropout multipliers (0 or 1/(1−p)); empty: none
};

template <typename T>
std::vector<T> zeros(int64_t n) {
    return std::vector<T>(static_cast<size_t>(n), T(0));
}

template <typename T>
void multiply(std::vector<T>& x, const std::vector<T>& by) {
    for (size_t i = 0; i < x.size(); ++i) x[i] *= by[i];
}

// The gradients flowing back through one layer (N rows), reused by every layer.
template <typename T>
struct LayerGradients {
    std::vector<T> dxn, dhidden, da, db;  // (N, d), (N, F) ×3
    std::vector<T> dy, d_o, dg, dv;       // (N, H·Dv)
    std::vector<T> dq, dk;                // (N, H·Dk)
};

// One loss_and_gradient call: the forward keeps each layer's activations, the backward walks
// them in reverse; each step of the layer is a method, over the op library (retnet/cpu_ops.h).
template <typename T>
class ModelPass {
public:
    ModelPass(const ModelConfig& c, const ParamLayout& layout, const T* params, const BatchView& batch,
              const LossOptions& options)
        : c_(c), layout_(layout), P_(params), batch_(batch), options_(options), N_(int64_t(batch.batch) * batch.seq_len),
          d_(c.d_model), log_decay_(default_log_decay(c.n_heads)),
          theta_(default_rotary_theta(Family::Fla, c.head_dim_k())),
          q_scale_(1.0 / std::sqrt(static_cast<double>(c.head_dim_k()))),
          shape_{batch.batch, batch.seq_len, c.n_heads, c.head_dim_k(), c.head_dim_v()},
          rotary_{batch.batch, batch.seq_len, c.n_heads, c.head_dim_k()}, dropout_(options.dropout > 0.0) {
        if (batch.batch < 1 || batch.seq_len < 1) throw Error("training: empty batch");
        const int64_t V = c.vocab_size;
        for (int64_t i = 0; i < N_; ++i)
            if (batch.inputs[i] < 0 || batch.inputs[i] >= V || batch.targets[i] < 0 || batch.targets[i] >= V)
                throw Error("training: token id out of range [0, " + std::to_string(V) + ")");
        if (!(options.dropout >= 0.0 && options.dropout < 1.0)) throw Error("training: dropout must be in [0, 1)");
    }

    // Returns the mean loss; dlogits (when not null) receives ∂loss/∂logits.
    double forward(std::vector<T>* dlogits, std::vector<T>* logits_out) {
        embed();
        acts_.resize(layout_.layers.size());
        for (size_t li = 0; li < layout_.layers.size(); ++li) {
            retention_block(li);
            ffn_block(li);
        }
        rstd_f_ = zeros<T>(N_);
        xf_ = zeros<T>(N_ * d_);
        cpu::rmsnorm_forward(x_.data(), P_ + layout_.final_norm, N_, d_, c_.norm_eps, xf_.data(), rstd_f_.data());
        std::vector<T> logits = zeros<T>(N_ * c_.vocab_size);
        cpu::linear_forward(xf_.data(), P_ + layout_.lm_head, N_, d_, c_.vocab_size, logits.data());
        if (dlogits) *dlogits = zeros<T>(N_ * c_.vocab_size);
        const double loss = cpu::cross_entropy(logits.data(), batch_.targets, N_, c_.vocab_size,
                                               dlogits ? dlogits->data() : nullptr, 1.0 / static_cast<double>(N_)) /
                            static_cast<double>(N_);
        if (logits_out) *logits_out = std::move(logits);
        return loss;
    }

    // Overwrites grad (layout.total) with ∂loss/∂params from the forward's activations.
    void backward(std::vector<T> dlogits, T* grad) {
        std::fill(grad, grad + layout_.total, T(0));
        std::vector<T> dxf = zeros<T>(N_ * d_);
        cpu::linear_backward(xf_.data(), P_ + layout_.lm_head, dlogits.data(), N_, d_, c_.vocab_size, dxf.data(),
                             false, grad + layout_.lm_head);
        dlogits = {};
        dx_ = zeros<T>(N_ * d_);
        cpu::rmsnorm_backward(x_.data(), P_ + layout_.final_norm, rstd_f_.data(), dxf.data(), N_, d_, dx_.data(),
                              grad + layout_.final_norm);
        LayerGradients<T> g = layer_gradients();
        for (size_t li = layout_.layers.size(); li-- > 0;) {
            ffn_block_backward(li, g, grad);
            retention_block_backward(li, g, grad);
            acts_[li] = LayerActivations<T>{};  // free as we go
        }
        embed_backward(grad);
    }

private:
    std::vector<T> keep_mask(uint64_t site) const {
        std::vector<T> keep(static_cast<size_t>(N_ * d_));
        const uint64_t base = dropout_site_base(options_.dropout_seed, site);
        const double p = options_.dropout;
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        cpu::parallel_blocks(N_ * d_, 1 << 16, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) keep[static_cast<size_t>(i)] = dropout_drops(base, i, p) ? T(0) : scale;
        });
        return keep;
    }

    void embed() {
        x_ = zeros<T>(N_ * d_);  // (N, d) residual stream
        for (int64_t r = 0; r < N_; ++r)
            std::memcpy(&x_[static_cast<size_t>(r * d_)], P_ + layout_.embed + batch_.inputs[r] * d_,
                        sizeof(T) * static_cast<size_t>(d_));
        if (!dropout_) return;
        keep_embed_ = keep_mask(dropout_site_embedding);
        multiply(x_, keep_embed_);
        branch_ = zeros<T>(N_ * d_);
    }

    // x += branch_input · Wᵀ, through the dropout mask of `site` (kept in `keep`) when there is one.
    void add_branch(const T* in, const T* W, int64_t width, std::vector<T>& keep, uint64_t site) {
        if (!dropout_) {
            cpu::gemm<T>(false, true, N_, d_, width, T(1), in, width, W, width, T(1), x_.data(), d_);
            return;
        }
        cpu::gemm<T>(false, true, N_, d_, width, T(1), in, width, W, width, T(0), branch_.data(), d_);
        keep = keep_mask(site);
        for (size_t i = 0; i < x_.size(); ++i) x_[i] += branch_[i] * keep[i];
    }

    const T* head_norm_weight(const LayerOffsets& lo) const { return lo.head_norm >= 0 ? P_ + lo.head_norm : nullptr; }

    // x_mid = x_in + o_proj(norm(retention(rot(q), rot(k), v)) ⊙ silu(g)), q, k, v, g from norm(x_in).
    void retention_block(size_t li) {
        const LayerOffsets& lo = layout_.layers[li];
        LayerActivations<T>& A = acts_[li];
        const int64_t K = c_.key_dim, Vd = c_.value_dim;
        A.x_in = x_;
        A.rstd1 = zeros<T>(N_);
        A.xn1 = zeros<T>(N_ * d_);
        cpu::rmsnorm_forward(A.x_in.data(), P_ + lo.attn_norm, N_, d_, c_.norm_eps, A.xn1.data(), A.rstd1.data());
        A.q = zeros<T>(N_ * K);
        A.k = zeros<T>(N_ * K);
        A.v = zeros<T>(N_ * Vd);
        A.g = zeros<T>(N_ * Vd);
        cpu::linear_forward(A.xn1.data(), P_ + lo.q_proj, N_, d_, K, A.q.data());
        cpu::linear_forward(A.xn1.data(), P_ + lo.k_proj, N_, d_, K, A.k.data());
        cpu::linear_forward(A.xn1.data(), P_ + lo.v_proj, N_, d_, Vd, A.v.data());
        cpu::linear_forward(A.xn1.data(), P_ + lo.g_proj, N_, d_, Vd, A.g.data());
        cpu::rotary_forward(A.q.data(), rotary_, theta_.data(), cpu::RotaryPairs::HalfSplit, q_scale_);
        cpu::rotary_forward(A.k.data(), rotary_, theta_.data(), cpu::RotaryPairs::HalfSplit, 1.0);
        A.o = zeros<T>(N_ * Vd);
        cpu::retention_forward(A.q.data(), A.k.data(), A.v.data(), shape_, log_decay_.data(), options_.chunk,
                               A.o.data());
        A.rstd_h = zeros<T>(N_ * c_.n_heads);
        A.y = zeros<T>(N_ * Vd);
        cpu::head_norm_gate_forward(A.o.data(), A.g.data(), head_norm_weight(lo), N_, c_.n_heads, c_.head_dim_v(),
                                    c_.norm_eps, A.y.data(), A.rstd_h.data());
        add_branch(A.y.data(), P_ + lo.o_proj, Vd, A.keep_attn, dropout_site_retention(static_cast<int64_t>(li)));
    }

    // x_out = x_mid + down(silu(gate(xn2)) ⊙ up(xn2)), xn2 = norm(x_mid).
    void ffn_block(size_t li) {
        const LayerOffsets& lo = layout_.layers[li];
        LayerActivations<T>& A = acts_[li];
        const int64_t F = c_.ffn_dim;
        A.x_mid = x_;
        A.rstd2 = zeros<T>(N_);
        A.xn2 = zeros<T>(N_ * d_);
        cpu::rmsnorm_forward(A.x_mid.data(), P_ + lo.ffn_norm, N_, d_, c_.norm_eps, A.xn2.data(), A.rstd2.data());
        A.a = zeros<T>(N_ * F);
        A.b = zeros<T>(N_ * F);
        A.hidden = zeros<T>(N_ * F);
        cpu::linear_forward(A.xn2.data(), P_ + lo.ffn_act, N_, d_, F, A.a.data());
        cpu::linear_forward(A.xn2.data(), P_ + lo.ffn_lin, N_, d_, F, A.b.data());
        cpu::glu_forward(A.a.data(), A.b.data(), N_ * F, Activation::Swish, A.hidden.data());
        add_branch(A.hidden.data(), P_ + lo.ffn_out, F, A.keep_ffn, dropout_site_ffn(static_cast<int64_t>(li)));
    }

    LayerGradients<T> layer_gradients() const {
        const int64_t K = c_.key_dim, Vd = c_.value_dim, F = c_.ffn_dim;
        return {zeros<T>(N_ * d_), zeros<T>(N_ * F), zeros<T>(N_ * F), zeros<T>(N_ * F), zeros<T>(N_ * Vd),
                zeros<T>(N_ * Vd), zeros<T>(N_ * Vd), zeros<T>(N_ * Vd), zeros<T>(N_ * K), zeros<T>(N_ * K)};
    }

    // ∂loss/∂(a branch's output before dropout): dx through the branch's mask.
    const T* branch_grad(const std::vector<T>& keep) {
        if (keep.empty()) return dx_.data();
        dbranch_ = dx_;
        multiply(dbranch_, keep);
        return dbranch_.data();
    }

    void ffn_block_backward(size_t li, LayerGradients<T>& g, T* grad) {
        const LayerOffsets& lo = layout_.layers[li];
        const LayerActivations<T>& A = acts_[li];
        const int64_t F = c_.ffn_dim;
        cpu::linear_backward(A.hidden.data(), P_ + lo.ffn_out, branch_grad(A.keep_ffn), N_, F, d_, g.dhidden.data(),
                             false, grad + lo.ffn_out);
        cpu::glu_backward(A.a.data(), A.b.data(), g.dhidden.data(), N_ * F, Activation::Swish, g.da.data(),
                          g.db.data());
        cpu::linear_backward(A.xn2.data(), P_ + lo.ffn_act, g.da.data(), N_, d_, F, g.dxn.data(), false,
                             grad + lo.ffn_act);
        cpu::linear_backward(A.xn2.data(), P_ + lo.ffn_lin, g.db.data(), N_, d_, F, g.dxn.data(), true,
                             grad + lo.ffn_lin);
        cpu::rmsnorm_backward(A.x_mid.data(), P_ + lo.ffn_norm, A.rstd2.data(), g.dxn.data(), N_, d_, dx_.data(),
                              grad + lo.ffn_norm);
    }

    void retention_block_backward(size_t li, LayerGradients<T>& g, T* grad) {
        const LayerOffsets& lo = layout_.layers[li];
        const LayerActivations<T>& A = acts_[li];
        const int64_t K = c_.key_dim, Vd = c_.value_dim;
        cpu::linear_backward(A.y.data(), P_ + lo.o_proj, branch_grad(A.keep_attn), N_, Vd, d_, g.dy.data(), false,
                             grad + lo.o_proj);
        cpu::head_norm_gate_backward(A.o.data(), A.g.data(), head_norm_weight(lo), A.rstd_h.data(), g.dy.data(), N_,
                                     c_.n_heads, c_.head_dim_v(), g.d_o.data(), g.dg.data(),
                                     lo.head_norm >= 0 ? grad + lo.head_norm : nullptr);
        cpu::retention_backward(A.q.data(), A.k.data(), A.v.data(), g.d_o.data(), shape_, log_decay_.data(),
                                options_.chunk, g.dq.data(), g.dk.data(), g.dv.data());
        cpu::rotary_backward(g.dq.data(), rotary_, theta_.data(), cpu::RotaryPairs::HalfSplit, q_scale_);
        cpu::rotary_backward(g.dk.data(), rotary_, theta_.data(), cpu::RotaryPairs::HalfSplit, 1.0);
        const T* xn1 = A.xn1.data();
        cpu::linear_backward(xn1, P_ + lo.q_proj, g.dq.data(), N_, d_, K, g.dxn.data(), false, grad + lo.q_proj);
        cpu::linear_backward(xn1, P_ + lo.k_proj, g.dk.data(), N_, d_, K, g.dxn.data(), true, grad + lo.k_proj);
        cpu::linear_backward(xn1, P_ + lo.v_proj, g.dv.data(), N_, d_, Vd, g.dxn.data(), true, grad + lo.v_proj);
        cpu::linear_backward(xn1, P_ + lo.g_proj, g.dg.data(), N_, d_, Vd, g.dxn.data(), true, grad + lo.g_proj);
        cpu::rmsnorm_backward(A.x_in.data(), P_ + lo.attn_norm, A.rstd1.data(), g.dxn.data(), N_, d_, dx_.data(),
                              grad + lo.attn_norm);
    }

    void embed_backward(T* grad) {
        if (dropout_) multiply(dx_, keep_embed_);
        T* dembed = grad + layout_.embed;
        for (int64_t r = 0; r < N_; ++r) {
            T* row = dembed + batch_.inputs[r] * d_;
            const T* src = &dx_[static_cast<size_t>(r * d_)];
            for (int64_t i = 0; i < d_; ++i) row[i] += src[i];
        }
    }

    const ModelConfig& c_;
    const ParamLayout& layout_;
    const T* P_;
    const BatchView& batch_;
    const LossOptions& options_;
    const int64_t N_, d_;  // B·T rows, model width
    const std::vector<float> log_decay_, theta_;
    const double q_scale_;
    const cpu::RetentionShape shape_;
    const cpu::RotaryShape rotary_;
    const bool dropout_;
    std::vector<LayerActivations<T>> acts_;
    std::vector<T> x_;           // (N, d) residual stream; after the forward, the final norm's input
    std::vector<T> keep_embed_;  // (N, d) embedding dropout multipliers; empty: none
    std::vector<T> branch_;      // (N, d) a residual branch's output, when dropout applies to it
    std::vector<T> rstd_f_, xf_;  // (N), (N, d) the final norm
    std::vector<T> dx_;          // (N, d) ∂loss/∂(residual stream)
    std::vector<T> dbranch_;     // (N, d) ∂loss/∂(branch output before dropout)
};

}  // namespace

template <typename T>
double loss_and_gradient(const ModelConfig& c, const ParamLayout& layout, const T* params, const BatchView& batch,
                         T* grad, const LossOptions& options, std::vector<T>* logits) {
    ModelPass<T> pass(c, layout, params, batch, options);
    std::vector<T> dlogits;
    const double loss = pass.forward(grad ? &dlogits : nullptr, logits);
    if (grad) pass.backward(std::move(dlogits), grad);
    return loss;
}

template double loss_and_gradient<float>(const ModelConfig&, const ParamLayout&, const float*,
                                         const BatchView&, float*, const LossOptions&,
                                         std::vector<float>*);
template double loss_and_gradient<double>(const ModelConfig&, const ParamLayout&, const double*,
                                          const BatchView&, double*, const LossOptions&,
                                          std::vector<double>*);

}  // namespace retnet::train
