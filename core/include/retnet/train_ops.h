// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The training block sequence of the fla RetNet and of its Llama-style Transformer twin, written
// once for every training device.
//
// train_forward runs embedding (+ dropout) → per layer [RMSNorm → q, k, v, g projections (q, k
// rotated, q times Dk^−½) → retention → per-head norm ⊙ silu(g) → o_proj, dropout, residual →
// RMSNorm → swish GLU → down_proj, dropout, residual] → final norm → logits → cross-entropy,
// keeping the named activations the backward needs; train_backward walks them in reverse into
// ∂loss/∂params. The twin's token mixer is q, k, v (q, k rotated with its rope_theta, q times
// Dk^−½) → causal softmax attention → o_proj, dropout, residual; the rest is shared. A device (the CPU in float or double, CUDA) implements TrainOps — each op's
// forward beside its backward, over its own op library and memory — and may lay a buffer out as
// it likes (the CUDA device keeps q, k, v head-major for its retention).
//
// The trainer's limits: fla layout or its twin (make_param_layout), every sequence from an empty state at
// position 0, a batch of B sequences of T tokens: every buffer has N = B·T rows.
#include <cstdint>
#include <functional>
#include <optional>

#include "retnet/block_ops.h"
#include "retnet/train.h"

namespace retnet::train {

// The named buffers of one pass, with their row widths (buffer_width). Per layer, the saved
// activations:
//   XIn (d) residual stream entering the layer, Rstd1 (1), Xn1 (d) its norm,
//   Q, K (H·Dk) rotated (q also scaled), V, G (H·Dv), O (H·Dv) retention or attention output,
//   Lse (H) the log-sum-exp of each row's attention softmax per head (the twin's),
//   RstdH (H), Y (H·Dv) normed and gated, XMid (d) after the retention residual,
//   Rstd2 (1), Xn2 (d), A, B (F) gate and up projections, Hidden (F) silu(A) ⊙ B.
// Model level: XFinal (d) the last residual stream, RstdF (1), Xf (d), Logits (V).
// Gradient scratch shared by every layer, D… = ∂loss/∂(the buffer named): DX (d) of the residual
// stream, DXn (d) of a norm's output, DBranch (d) of a branch's output before dropout, and the
// rest as their forward buffers.
// An architecture's unused buffers have width 0 and take no memory: Lse for the RetNet; G, RstdH,
// Y (and DG, DY) for the twin.
enum class Buf {
    XIn, Rstd1, Xn1, Q, K, V, G, O, Lse, RstdH, Y, XMid, Rstd2, Xn2, A, B, Hidden,  // per layer
    XFinal, RstdF, Xf, Logits,                                               // model level
    DX, DXn, DBranch, DHidden, DA, DB, DY, DO, DG, DQ, DK, DV, DLogits,      // gradients
    Count
};
inline constexpr int kLayerBufs = static_cast<int>(Buf::Hidden) + 1;
inline bool per_layer(Buf b) { return static_cast<int>(b) < kLayerBufs; }
// Per-layer activations that train_backward forms again from the kept ones before it reads them
// (the norms' outputs, the gated retention and the GLU: cheap elementwise work), so a device may
// keep one buffer of each for all layers instead of one per layer.
inline bool recomputed_in_backward(Buf b) { return b == Buf::Xn1 || b == Buf::Xn2 || b == Buf::Y || b == Buf::Hidden; }
// Values per row of a buffer in the row layout (N, width); 0 for a buffer `config`'s architecture
// does not use.
int64_t buffer_width(const ModelConfig& config, Buf b);

// A buffer of one pass: layer ≥ 0 for the per-layer activations, −1 for the others.
struct Act {
    Buf name;
    int layer = -1;
};

// One dropout site of a pass (retnet/dropout_mask.h): element i is kept with factor
// 1/(1 − rate) unless dropout_drops(base, i, rate). rate 0: no dropout.
struct DropoutSite {
    double rate = 0;
    uint64_t base = 0;
};

// The rotary embedding of project_heads: fla's pairs (i, i + Dk/2) (Llama's rotate_half pairs
// the same) at positions 0, 1, … of every sequence, frequencies θ_i = base^(−2i/Dk) formed in
// float32 as default_rotary_theta(Family::Fla, Dk, base) does, the rotated vectors times `scale`.
// Not applied (v) when `apply` is false.
struct HeadRotary {
    bool apply = false;
    double scale = 1.0;
    double base = 10000.0;
};
// The rotary base inference uses for `config` (default_rotary_theta(config)): the twin's
// rope_theta, fla's 10000 for the RetNet.
double rotary_base(const ModelConfig& config);

// The ops of a training device. Weights are named by (layer, Weight) as in block_ops.h (layer −1
// for FinalNorm and Output); every backward op accumulates (+=) into the device's gradient of the
// weights it reads. Input gradients are overwritten unless the op says it accumulates.
class TrainOps {
public:
    virtual ~TrainOps() = default;
    // x = E[inputs] (N, d).
    virtual void embed(Act x) = 0;
    // dE[inputs[r]] += dx[r].
    virtual void embed_backward(Act dx) = 0;
    // out = in ⊙ keep (N, d) (out may be in).
    virtual void dropout(Act in, Act out, const DropoutSite& site) = 0;
    // y = RMSNorm(x) · w, rstd (N) kept.
    virtual void rms_norm(Act x, int layer, Weight w, Act y, Act rstd) = 0;
    // dx += ∂loss/∂x.
    virtual void rms_norm_backward(Act x, int layer, Weight w, Act rstd, Act dy, Act dx) = 0;
    // y = x · Wᵀ.
    virtual void linear(Act x, int layer, Weight w, Act y) = 0;
    // dx = dy · W, or dx += when accumulate.
    virtual void linear_backward(Act x, int layer, Weight w, Act dy, Act dx, bool accumulate) = 0;
    // out = residual + (x · Wᵀ) ⊙ keep of `site` (no mask when site.rate is 0).
    virtual void residual_branch(Act residual, Act x, int layer, Weight w, const DropoutSite& site, Act out) = 0;
    // heads = x · Wᵀ (Q, K or V), rotated when rotary.apply, in the layout retention() takes.
    virtual void project_heads(Act x, int layer, Weight w, const HeadRotary& rotary, Act heads) = 0;
    // dx = ∂loss/∂x through the projection (+= when accumulate); dheads may be overwritten.
    virtual void project_heads_backward(Act x, int layer, Weight w, const HeadRotary& rotary, Act dheads, Act dx,
                                        bool accumulate) = 0;
    // fla retention (no normalization), o rows: o_n = Σ_{m≤n} γ_h^(n−m) (q_n·k_m) v_m, in the
    // device's form (parallel or chunkwise).
    virtual void retention(Act q, Act k, Act v, Act o) = 0;
    // dq, dk, dv in the heads' layout, from d_o rows.
    virtual void retention_backward(Act q, Act k, Act v, Act d_o, Act dq, Act dk, Act dv) = 0;
    // Causal softmax attention of the twin within each sequence of T rows, per head:
    // o_n = Σ_{m≤n} softmax_m(q_n·k_m) v_m; q arrives already scaled by Dk^−½ (project_heads'
    // rotary.scale). lse (N, H) = log Σ_{m≤n} exp(q_n·k_m), kept for the backward.
    virtual void attention(Act q, Act k, Act v, Act o, Act lse) = 0;
    // dq, dk, dv in the heads' layout from d_o (FlashAttention-2's backward: D_n = d_o_n·o_n, P
    // recomputed from lse); d_o may be overwritten.
    virtual void attention_backward(Act q, Act k, Act v, Act o, Act lse, Act d_o, Act dq, Act dk, Act dv) = 0;
    // y = RMSNorm_head(o) · w_head ⊙ silu(g) with the layer's head-norm weight (if any); rstd (N, H).
    virtual void head_norm_gate(Act o, Act g, int layer, Act y, Act rstd) = 0;
    virtual void head_norm_gate_backward(Act o, Act g, int layer, Act rstd, Act dy, Act d_o, Act dg) = 0;
    // h = silu(a) ⊙ b.
    virtual void glu(Act a, Act b, Act h) = 0;
    virtual void glu_backward(Act a, Act b, Act dh, Act da, Act db) = 0;
    // The per-row loss −log softmax(logits)[target] (the device keeps it); with dlogits,
    // (softmax − onehot) · grad_scale there (a device may let it share the logits' memory).
    virtual void cross_entropy(Act logits, std::optional<Act> dlogits, double grad_scale) = 0;
    virtual void zero(Act x) = 0;
    virtual void zero_gradient() = 0;
};

// first_row: the pass's rows are rows [first_row, first_row + B·T) of a global batch that ranks
// share (0 for a whole batch), so every rank draws the global batch's masks for its rows.
struct PassDropout {
    double rate = 0;
    uint64_t seed = 0;
    int64_t first_row = 0;
};

// The forward over a batch of B·T rows; the loss's gradient is formed when want_gradient, scaled by
// 1/loss_rows: B·T for a whole batch, the global batch's rows for a rank's shard (then the ranks'
// gradients sum to the global batch's). `cancelled` is asked before each layer: true throws
// retnet::Cancelled (an evaluation stopped by Ctrl-C within one layer's time).
void train_forward(TrainOps& ops, const ModelConfig& config, int64_t loss_rows, const PassDropout& dropout,
                   bool want_gradient, const std::function<bool()>& cancelled = {});
// The backward after train_forward(…, want_gradient = true) with the same dropout: overwrites the
// device's gradient with ∂loss/∂params, calling `ready` (when set) as each part is done.
void train_backward(TrainOps& ops, const ModelConfig& config, const PassDropout& dropout,
                    const GradientReady& ready = {});

// Throws retnet::Error for an empty batch or a token outside [0, vocab).
void check_train_batch(const ModelConfig& config, const BatchView& batch);
// Throws retnet::Error unless the dropout rate is in [0, 1).
void check_dropout_rate(double rate);
// Throws retnet::Error for a negative chunk size, or any for the twin (its attention has one form).
void check_chunk(const ModelConfig& config, int chunk);
// The offset of (layer, w) in the flat parameter vector (block_ops.h names); the head norm is
// LayerOffsets::head_norm.
int64_t param_offset(const ParamLayout& layout, int layer, Weight w);

}  // namespace retnet::train
