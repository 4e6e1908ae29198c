// SPDX-License-Identifier: GPL-3.0-or-later
// The training block sequence, once, over a device's TrainOps (retnet/train_ops.h).
#include <cmath>

#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/train_ops.h"

namespace retnet::train {

int64_t buffer_width(const ModelConfig& c, Buf b) {
    const bool twin = c.is_transformer();
    switch (b) {
        case Buf::Rstd1: case Buf::Rstd2: case Buf::RstdF: return 1;
        case Buf::Lse: return twin ? c.n_heads : 0;
        case Buf::G: case Buf::RstdH: case Buf::Y: case Buf::DG: case Buf::DY:  // the RetNet's gate and head norm
            if (twin) return 0;
            return b == Buf::RstdH ? c.n_heads : c.value_dim;
        case Buf::Q: case Buf::K: case Buf::DQ: case Buf::DK: return c.key_dim;
        case Buf::V: case Buf::O: case Buf::DV: case Buf::DO: return c.value_dim;
        case Buf::A: case Buf::B: case Buf::Hidden: case Buf::DA: case Buf::DB: case Buf::DHidden: return c.ffn_dim;
        case Buf::Logits: case Buf::DLogits: return c.vocab_size;
        default: return c.d_model;  // the residual stream, the norms' outputs and their gradients
    }
}

double rotary_base(const ModelConfig& c) { return c.is_transformer() ? c.rope_theta : 10000.0; }

void check_train_batch(const ModelConfig& c, const BatchView& batch) {
    if (batch.batch < 1 || batch.seq_len < 1) throw Error("training: empty batch");
    const int64_t n = static_cast<int64_t>(batch.batch) * batch.seq_len, V = c.vocab_size;
    for (int64_t i = 0; i < n; ++i)
        if (batch.inputs[i] < 0 || batch.inputs[i] >= V || batch.targets[i] < 0 || batch.targets[i] >= V)
            throw Error("training: token id out of range [0, " + std::to_string(V) + ")");
}

void check_dropout_rate(double rate) {
    if (!(rate >= 0.0 && rate < 1.0)) throw Error("training: dropout must be in [0, 1)");
}

void check_chunk(const ModelConfig& c, int chunk) {
    if (chunk < 0) throw Error("training: chunk size must be ≥ 0");
    if (chunk > 0 && c.is_transformer())
        throw Error("training: a chunk size applies to the RetNet's retention, not the Transformer twin's attention");
}

int64_t param_offset(const ParamLayout& layout, int layer, Weight w) {
    if (w == Weight::FinalNorm) return layout.final_norm;
    if (w == Weight::Output) return layout.lm_head;
    if (layer < 0 || layer >= static_cast<int>(layout.layers.size()) || w == Weight::EmbedNorm)
        throw Error("training: no parameter for this layer and weight");
    const int64_t offset = layer_member(layout.layers[static_cast<size_t>(layer)], w);
    if (offset < 0) throw Error("training: no parameter for this layer and weight");  // the twin's g_proj
    return offset;
}

namespace {

// Every site is (B·T, d) and the masks hash base + element: a shard's rows start first_row·d
// elements into the global batch's (unsigned wrap-around is the same on every device).
DropoutSite site_of(const ModelConfig& c, const PassDropout& dropout, uint64_t site) {
    if (dropout.rate <= 0.0) return {};
    return {dropout.rate, dropout_site_base(dropout.seed, site) +
                              static_cast<uint64_t>(dropout.first_row) * static_cast<uint64_t>(c.d_model)};
}

// The residual stream leaving layer l: the next layer's input, or the final norm's.
Act residual_after(int l, int n_layers) { return l + 1 < n_layers ? Act{Buf::XIn, l + 1} : Act{Buf::XFinal}; }

// fla and Llama: the rotary of q carries 1/√Dk (docs/spec.md §4), k is rotated alone, v is not.
HeadRotary rotary_of(const ModelConfig& c, Weight w) {
    if (w == Weight::V) return {};
    return {true, w == Weight::Q ? 1.0 / std::sqrt(static_cast<double>(c.head_dim_k())) : 1.0, rotary_base(c)};
}

// XMid = XIn + o_proj(mixer), q, k, v (and g) from norm(XIn). The RetNet's mixer is
// norm(retention(rot(q), rot(k), v)) ⊙ silu(g), the twin's softmax attention(rot(q), rot(k), v).
void mixer_block(TrainOps& o, const ModelConfig& c, int l, const PassDropout& dropout) {
    const auto at = [l](Buf b) { return Act{b, l}; };
    o.rms_norm(at(Buf::XIn), l, Weight::AttnNorm, at(Buf::Xn1), at(Buf::Rstd1));
    o.project_heads(at(Buf::Xn1), l, Weight::Q, rotary_of(c, Weight::Q), at(Buf::Q));
    o.project_heads(at(Buf::Xn1), l, Weight::K, rotary_of(c, Weight::K), at(Buf::K));
    o.project_heads(at(Buf::Xn1), l, Weight::V, rotary_of(c, Weight::V), at(Buf::V));
    const DropoutSite site = site_of(c, dropout, dropout_site_retention(l));
    if (c.is_transformer()) {
        o.attention(at(Buf::Q), at(Buf::K), at(Buf::V), at(Buf::O), at(Buf::Lse));
        o.residual_branch(at(Buf::XIn), at(Buf::O), l, Weight::O, site, at(Buf::XMid));
        return;
    }
    o.linear(at(Buf::Xn1), l, Weight::G, at(Buf::G));
    o.retention(at(Buf::Q), at(Buf::K), at(Buf::V), at(Buf::O));
    o.head_norm_gate(at(Buf::O), at(Buf::G), l, at(Buf::Y), at(Buf::RstdH));
    o.residual_branch(at(Buf::XIn), at(Buf::Y), l, Weight::O, site, at(Buf::XMid));
}

// next = XMid + down(silu(gate(Xn2)) ⊙ up(Xn2)), Xn2 = norm(XMid).
void ffn_block(TrainOps& o, const ModelConfig& c, int l, const PassDropout& dropout, Act next) {
    const auto at = [l](Buf b) { return Act{b, l}; };
    o.rms_norm(at(Buf::XMid), l, Weight::FfnNorm, at(Buf::Xn2), at(Buf::Rstd2));
    o.linear(at(Buf::Xn2), l, Weight::FfnAct, at(Buf::A));
    o.linear(at(Buf::Xn2), l, Weight::FfnLin, at(Buf::B));
    o.glu(at(Buf::A), at(Buf::B), at(Buf::Hidden));
    o.residual_branch(at(Buf::XMid), at(Buf::Hidden), l, Weight::FfnOut, site_of(c, dropout, dropout_site_ffn(l)), next);
}

// ∂loss/∂(a branch's output before dropout): DX through the site's mask.
Act branch_gradient(TrainOps& o, const ModelConfig& c, const PassDropout& dropout, uint64_t site) {
    if (dropout.rate <= 0.0) return Act{Buf::DX};
    o.dropout(Act{Buf::DX}, Act{Buf::DBranch}, site_of(c, dropout, site));
    return Act{Buf::DBranch};
}

void ffn_block_backward(TrainOps& o, const ModelConfig& c, int l, const PassDropout& dropout) {
    const auto at = [l](Buf b) { return Act{b, l}; };
    const Act dx{Buf::DX}, dxn{Buf::DXn}, dh{Buf::DHidden}, da{Buf::DA}, db{Buf::DB};
    // Xn2 and Hidden again (recomputed_in_backward): the same values the forward formed.
    o.rms_norm(at(Buf::XMid), l, Weight::FfnNorm, at(Buf::Xn2), at(Buf::Rstd2));
    o.glu(at(Buf::A), at(Buf::B), at(Buf::Hidden));
    o.linear_backward(at(Buf::Hidden), l, Weight::FfnOut, branch_gradient(o, c, dropout, dropout_site_ffn(l)), dh, false);
    o.glu_backward(at(Buf::A), at(Buf::B), dh, da, db);
    o.linear_backward(at(Buf::Xn2), l, Weight::FfnAct, da, dxn, false);
    o.linear_backward(at(Buf::Xn2), l, Weight::FfnLin, db, dxn, true);
    o.rms_norm_backward(at(Buf::XMid), l, Weight::FfnNorm, at(Buf::Rstd2), dxn, dx);
}

void mixer_block_backward(TrainOps& o, const ModelConfig& c, int l, const PassDropout& dropout) {
    const auto at = [l](Buf b) { return Act{b, l}; };
    const Act dx{Buf::DX}, dxn{Buf::DXn}, dy{Buf::DY}, d_o{Buf::DO}, dg{Buf::DG};
    const Act dq{Buf::DQ}, dk{Buf::DK}, dv{Buf::DV};
    const Act dbranch = branch_gradient(o, c, dropout, dropout_site_retention(l));
    // Xn1 and Y again (recomputed_in_backward).
    o.rms_norm(at(Buf::XIn), l, Weight::AttnNorm, at(Buf::Xn1), at(Buf::Rstd1));
    if (c.is_transformer()) {
        o.linear_backward(at(Buf::O), l, Weight::O, dbranch, d_o, false);
        o.attention_backward(at(Buf::Q), at(Buf::K), at(Buf::V), at(Buf::O), at(Buf::Lse), d_o, dq, dk, dv);
    } else {
        o.head_norm_gate(at(Buf::O), at(Buf::G), l, at(Buf::Y), at(Buf::RstdH));
        o.linear_backward(at(Buf::Y), l, Weight::O, dbranch, dy, false);
        o.head_norm_gate_backward(at(Buf::O), at(Buf::G), l, at(Buf::RstdH), dy, d_o, dg);
        o.retention_backward(at(Buf::Q), at(Buf::K), at(Buf::V), d_o, dq, dk, dv);
    }
    o.project_heads_backward(at(Buf::Xn1), l, Weight::Q, rotary_of(c, Weight::Q), dq, dxn, false);
    o.project_heads_backward(at(Buf::Xn1), l, Weight::K, rotary_of(c, Weight::K), dk, dxn, true);
    o.project_heads_backward(at(Buf::Xn1), l, Weight::V, rotary_of(c, Weight::V), dv, dxn, true);
    if (!c.is_transformer()) o.linear_backward(at(Buf::Xn1), l, Weight::G, dg, dxn, true);
    o.rms_norm_backward(at(Buf::XIn), l, Weight::AttnNorm, at(Buf::Rstd1), dxn, dx);
}

}  // namespace

void train_forward(TrainOps& o, const ModelConfig& c, int64_t loss_rows, const PassDropout& dropout,
                   bool want_gradient, const std::function<bool()>& cancelled) {
    check_dropout_rate(dropout.rate);
    const Act x0 = c.n_layers > 0 ? Act{Buf::XIn, 0} : Act{Buf::XFinal};
    o.embed(x0);
    if (dropout.rate > 0.0) o.dropout(x0, x0, site_of(c, dropout, dropout_site_embedding));
    for (int l = 0; l < c.n_layers; ++l) {
        throw_if_cancelled(cancelled);
        mixer_block(o, c, l, dropout);
        ffn_block(o, c, l, dropout, residual_after(l, c.n_layers));
    }
    o.rms_norm(Act{Buf::XFinal}, -1, Weight::FinalNorm, Act{Buf::Xf}, Act{Buf::RstdF});
    o.linear(Act{Buf::Xf}, -1, Weight::Output, Act{Buf::Logits});
    o.cross_entropy(Act{Buf::Logits}, want_gradient ? std::optional<Act>(Act{Buf::DLogits}) : std::nullopt,
                    1.0 / static_cast<double>(loss_rows));
}

void train_backward(TrainOps& o, const ModelConfig& c, const PassDropout& dropout, const GradientReady& ready) {
    const auto done = [&ready](GradientPart::Kind kind, int layer) {
        if (ready) ready(GradientPart{kind, layer});
    };
    o.zero_gradient();
    const Act dx{Buf::DX};
    // DXn serves as ∂loss/∂Xf here.
    o.linear_backward(Act{Buf::Xf}, -1, Weight::Output, Act{Buf::DLogits}, Act{Buf::DXn}, false);
    o.zero(dx);
    o.rms_norm_backward(Act{Buf::XFinal}, -1, Weight::FinalNorm, Act{Buf::RstdF}, Act{Buf::DXn}, dx);
    done(GradientPart::Kind::Head, -1);
    for (int l = c.n_layers; l-- > 0;) {
        ffn_block_backward(o, c, l, dropout);
        mixer_block_backward(o, c, l, dropout);
        done(GradientPart::Kind::Layer, l);
    }
    if (dropout.rate > 0.0) o.dropout(dx, dx, site_of(c, dropout, dropout_site_embedding));
    o.embed_backward(dx);
    done(GradientPart::Kind::Embedding, -1);
}

}  // namespace retnet::train
