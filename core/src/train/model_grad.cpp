// SPDX-License-Identifier: GPL-3.0-or-later
// The fla RetNet's training forward (keeping the activations the backward needs) and backward,
// over the flat parameter vector of ParamLayout.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/train.h"
#include "retnet/train_ops.h"
#include "train/parallel.h"

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

// Dropout multipliers of one site (0 or 1/(1 − p)), from the shared mask function.
template <typename T>
std::vector<T> dropout_keep(int64_t n, double p, uint64_t seed, uint64_t site) {
    std::vector<T> keep(static_cast<size_t>(n));
    const uint64_t base = dropout_site_base(seed, site);
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    parallel_blocks(n, 1 << 16, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) keep[static_cast<size_t>(i)] = dropout_drops(base, i, p) ? T(0) : scale;
    });
    return keep;
}

template <typename T>
void multiply(std::vector<T>& x, const std::vector<T>& by) {
    for (size_t i = 0; i < x.size(); ++i) x[i] *= by[i];
}

}  // namespace

template <typename T>
double loss_and_gradient(const ModelConfig& c, const ParamLayout& layout, const T* P,
                         const BatchView& batch, T* grad, const LossOptions& options,
                         std::vector<T>* logits_out) {
    using namespace ops;
    const int64_t B = batch.batch, Tn = batch.seq_len, N = B * Tn;
    const int64_t d = c.d_model, H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v(),
                  K = c.key_dim, Vd = c.value_dim, F = c.ffn_dim, V = c.vocab_size;
    if (B < 1 || Tn < 1) throw Error("training: empty batch");
    for (int64_t i = 0; i < N; ++i)
        if (batch.inputs[i] < 0 || batch.inputs[i] >= V || batch.targets[i] < 0 || batch.targets[i] >= V)
            throw Error("training: token id out of range [0, " + std::to_string(V) + ")");
    const std::vector<float> log_decay = default_log_decay(c.n_heads);
    const std::vector<float> theta = default_rotary_theta(Family::Fla, static_cast<int>(Dk));
    const double q_scale = 1.0 / std::sqrt(static_cast<double>(Dk));
    const RetentionShape shape{B, Tn, H, Dk, Dv};
    const int chunk = options.chunk;
    const double p_drop = options.dropout;
    if (!(p_drop >= 0.0 && p_drop < 1.0)) throw Error("training: dropout must be in [0, 1)");
    const bool dropout = p_drop > 0.0;
    auto keep_mask = [&](uint64_t site) { return dropout_keep<T>(N * d, p_drop, options.dropout_seed, site); };

    // ---- forward ----
    std::vector<T> x = zeros<T>(N * d);  // (N, d) residual stream
    for (int64_t r = 0; r < N; ++r)
        std::memcpy(&x[static_cast<size_t>(r * d)], P + layout.embed + batch.inputs[r] * d,
                    sizeof(T) * static_cast<size_t>(d));
    std::vector<T> keep_embed;
    if (dropout) {
        keep_embed = keep_mask(dropout_site_embedding);
        multiply(x, keep_embed);
    }
    std::vector<T> branch;  // (N, d) a residual branch's output, when dropout applies to it
    if (dropout) branch = zeros<T>(N * d);
    // x += branch_input · Wᵀ, through the dropout mask when there is one.
    auto add_branch = [&](const T* in, const T* W, int64_t width, std::vector<T>& keep, uint64_t site) {
        if (!dropout) {
            gemm<T>(false, true, N, d, width, T(1), in, width, W, width, T(1), x.data(), d);
            return;
        }
        gemm<T>(false, true, N, d, width, T(1), in, width, W, width, T(0), branch.data(), d);
        keep = keep_mask(site);
        for (size_t i = 0; i < x.size(); ++i) x[i] += branch[i] * keep[i];
    };
    std::vector<LayerActivations<T>> acts(layout.layers.size());
    for (size_t li = 0; li < layout.layers.size(); ++li) {
        const LayerOffsets& lo = layout.layers[li];
        LayerActivations<T>& A = acts[li];
        A.x_in = x;
        A.rstd1 = zeros<T>(N);
        A.xn1 = zeros<T>(N * d);
        rmsnorm_forward(A.x_in.data(), P + lo.attn_norm, N, d, c.norm_eps, A.xn1.data(), A.rstd1.data());
        A.q = zeros<T>(N * K);
        A.k = zeros<T>(N * K);
        A.v = zeros<T>(N * Vd);
        A.g = zeros<T>(N * Vd);
        linear_forward(A.xn1.data(), P + lo.q_proj, N, d, K, A.q.data());
        linear_forward(A.xn1.data(), P + lo.k_proj, N, d, K, A.k.data());
        linear_forward(A.xn1.data(), P + lo.v_proj, N, d, Vd, A.v.data());
        linear_forward(A.xn1.data(), P + lo.g_proj, N, d, Vd, A.g.data());
        rotary_forward(A.q.data(), B, Tn, H, Dk, theta.data(), q_scale);
        rotary_forward(A.k.data(), B, Tn, H, Dk, theta.data(), 1.0);
        A.o = zeros<T>(N * Vd);
        retention_forward(A.q.data(), A.k.data(), A.v.data(), shape, log_decay.data(), chunk, A.o.data());
        A.rstd_h = zeros<T>(N * H);
        A.y = zeros<T>(N * Vd);
        head_norm_gate_forward(A.o.data(), A.g.data(), lo.head_norm >= 0 ? P + lo.head_norm : nullptr,
                               N, H, Dv, c.norm_eps, A.y.data(), A.rstd_h.data());
        add_branch(A.y.data(), P + lo.o_proj, Vd, A.keep_attn, dropout_site_retention(static_cast<int64_t>(li)));
        A.x_mid = x;
        A.rstd2 = zeros<T>(N);
        A.xn2 = zeros<T>(N * d);
        rmsnorm_forward(A.x_mid.data(), P + lo.ffn_norm, N, d, c.norm_eps, A.xn2.data(), A.rstd2.data());
        A.a = zeros<T>(N * F);
        A.b = zeros<T>(N * F);
        A.hidden = zeros<T>(N * F);
        linear_forward(A.xn2.data(), P + lo.ffn_act, N, d, F, A.a.data());
        linear_forward(A.xn2.data(), P + lo.ffn_lin, N, d, F, A.b.data());
        swiglu_forward(A.a.data(), A.b.data(), N * F, A.hidden.data());
        add_branch(A.hidden.data(), P + lo.ffn_out, F, A.keep_ffn, dropout_site_ffn(static_cast<int64_t>(li)));
    }
    std::vector<T> rstd_f = zeros<T>(N), xf = zeros<T>(N * d);
    rmsnorm_forward(x.data(), P + layout.final_norm, N, d, c.norm_eps, xf.data(), rstd_f.data());
    std::vector<T> logits = zeros<T>(N * V);
    linear_forward(xf.data(), P + layout.lm_head, N, d, V, logits.data());

    std::vector<T> dlogits;
    if (grad) dlogits = zeros<T>(N * V);
    const double loss = cross_entropy(logits.data(), batch.targets, N, V,
                                      grad ? dlogits.data() : nullptr, 1.0 / static_cast<double>(N)) /
                        static_cast<double>(N);
    if (logits_out) *logits_out = std::move(logits);
    if (!grad) return loss;

    // ---- backward ----
    std::fill(grad, grad + layout.total, T(0));
    std::vector<T> dxf = zeros<T>(N * d);
    linear_backward(xf.data(), P + layout.lm_head, dlogits.data(), N, d, V, dxf.data(), false,
                    grad + layout.lm_head);
    dlogits = {};
    std::vector<T> dx = zeros<T>(N * d);  // ∂loss/∂(residual stream)
    rmsnorm_backward(x.data(), P + layout.final_norm, rstd_f.data(), dxf.data(), N, d, dx.data(),
                     grad + layout.final_norm);
    std::vector<T> dbranch;  // ∂loss/∂(branch output before dropout)
    auto branch_grad = [&](const std::vector<T>& keep) -> const T* {
        if (keep.empty()) return dx.data();
        dbranch = dx;
        multiply(dbranch, keep);
        return dbranch.data();
    };
    std::vector<T> dxn = zeros<T>(N * d), dhidden = zeros<T>(N * F), da = zeros<T>(N * F),
                   db = zeros<T>(N * F), dy = zeros<T>(N * Vd), d_o = zeros<T>(N * Vd),
                   dg = zeros<T>(N * Vd), dq = zeros<T>(N * K), dk = zeros<T>(N * K),
                   dv = zeros<T>(N * Vd);
    for (size_t li = layout.layers.size(); li-- > 0;) {
        const LayerOffsets& lo = layout.layers[li];
        LayerActivations<T>& A = acts[li];
        // FFN branch: x_out = x_mid + down(silu(gate(xn2)) ⊙ up(xn2))
        linear_backward(A.hidden.data(), P + lo.ffn_out, branch_grad(A.keep_ffn), N, F, d, dhidden.data(), false,
                        grad + lo.ffn_out);
        swiglu_backward(A.a.data(), A.b.data(), dhidden.data(), N * F, da.data(), db.data());
        linear_backward(A.xn2.data(), P + lo.ffn_act, da.data(), N, d, F, dxn.data(), false, grad + lo.ffn_act);
        linear_backward(A.xn2.data(), P + lo.ffn_lin, db.data(), N, d, F, dxn.data(), true, grad + lo.ffn_lin);
        rmsnorm_backward(A.x_mid.data(), P + lo.ffn_norm, A.rstd2.data(), dxn.data(), N, d, dx.data(),
                         grad + lo.ffn_norm);
        // Retention branch: x_mid = x_in + o_proj(norm(o) ⊙ silu(g))
        linear_backward(A.y.data(), P + lo.o_proj, branch_grad(A.keep_attn), N, Vd, d, dy.data(), false,
                        grad + lo.o_proj);
        head_norm_gate_backward(A.o.data(), A.g.data(), lo.head_norm >= 0 ? P + lo.head_norm : nullptr,
                                A.rstd_h.data(), dy.data(), N, H, Dv, d_o.data(), dg.data(),
                                lo.head_norm >= 0 ? grad + lo.head_norm : nullptr);
        retention_backward(A.q.data(), A.k.data(), A.v.data(), d_o.data(), shape, log_decay.data(),
                           chunk, dq.data(), dk.data(), dv.data());
        rotary_backward(dq.data(), B, Tn, H, Dk, theta.data(), q_scale);
        rotary_backward(dk.data(), B, Tn, H, Dk, theta.data(), 1.0);
        linear_backward(A.xn1.data(), P + lo.q_proj, dq.data(), N, d, K, dxn.data(), false, grad + lo.q_proj);
        linear_backward(A.xn1.data(), P + lo.k_proj, dk.data(), N, d, K, dxn.data(), true, grad + lo.k_proj);
        linear_backward(A.xn1.data(), P + lo.v_proj, dv.data(), N, d, Vd, dxn.data(), true, grad + lo.v_proj);
        linear_backward(A.xn1.data(), P + lo.g_proj, dg.data(), N, d, Vd, dxn.data(), true, grad + lo.g_proj);
        rmsnorm_backward(A.x_in.data(), P + lo.attn_norm, A.rstd1.data(), dxn.data(), N, d, dx.data(),
                         grad + lo.attn_norm);
        A = LayerActivations<T>{};  // free as we go
    }
    if (dropout) multiply(dx, keep_embed);
    T* dembed = grad + layout.embed;
    for (int64_t r = 0; r < N; ++r) {
        T* row = dembed + batch.inputs[r] * d;
        const T* src = &dx[static_cast<size_t>(r * d)];
        for (int64_t i = 0; i < d; ++i) row[i] += src[i];
    }
    return loss;
}

template double loss_and_gradient<float>(const ModelConfig&, const ParamLayout&, const float*,
                                         const BatchView&, float*, const LossOptions&,
                                         std::vector<float>*);
template double loss_and_gradient<double>(const ModelConfig&, const ParamLayout&, const double*,
                                          const BatchView&, double*, const LossOptions&,
                                          std::vector<double>*);

}  // namespace retnet::train
