// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Training the fla-layout RetNet (and its Llama-style Transformer twin) on the CPU: the parameters as one flat vector, the loss and its
// gradient for a batch (a training forward that keeps its activations, then the backward), AdamW
// with decoupled weight decay, gradient clipping and a warmup + cosine schedule.
// The same loss/gradient code is instantiated for float (training) and double (gradient checks).
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "retnet/model.h"

namespace retnet::train {

// One weight tensor inside the flat parameter vector.
struct ParamTensor {
    std::string name;  // the model file's name, e.g. fla's "model.layers.0.attn.q_proj.weight"
    std::vector<int64_t> shape;
    int64_t offset = 0;
    int64_t size = 0;
    bool weight_decay = false;  // projection matrices only: not norms, not the embedding
};

struct LayerOffsets {
    int64_t attn_norm, q_proj, k_proj, v_proj, g_proj, o_proj;  // g_proj −1 for the twin (no output gate)
    int64_t head_norm;  // −1 when the per-head norm has no weight
    int64_t ffn_norm, ffn_act, ffn_lin, ffn_out;
};

struct ParamLayout {
    std::vector<ParamTensor> tensors;  // in storage order
    std::vector<LayerOffsets> layers;
    int64_t embed = 0, final_norm = 0;
    int64_t lm_head = 0;  // equals `embed` when the embeddings are tied
    int64_t total = 0;
};

// Throws retnet::Error unless the config is an fla model (the family the trainer writes) or its
// Transformer twin (Llama names).
ParamLayout make_param_layout(const ModelConfig& config);
std::vector<float> flatten_weights(const Model& model, const ParamLayout& layout);
// Copies the flat vector into the model's tensors (which must have the layout's shapes).
void unflatten_weights(std::span<const float> flat, const ParamLayout& layout, Model& model);

// The parts of the gradient in the order train_backward completes them: the head (final norm and
// an untied lm_head), layers n − 1 … 0, the embedding (with a tied lm_head). Each is a contiguous
// range of the flat vector (gradient_range), final once reported, so a data-parallel device can
// send it to the other ranks while the backward goes on.
struct GradientPart {
    enum class Kind { Head, Layer, Embedding } kind;
    int layer = -1;  // Kind::Layer
};
using GradientReady = std::function<void(const GradientPart&)>;
// [begin, end) of a part in the flat parameter vector.
std::pair<int64_t, int64_t> gradient_range(const ParamLayout& layout, const GradientPart& part);

// A batch of `batch` sequences of `seq_len` tokens; targets[i] is the token after inputs[i].
struct BatchView {
    const int32_t* inputs;   // (B, T)
    const int32_t* targets;  // (B, T)
    int batch;
    int seq_len;
};

struct LossOptions {
    int chunk = 0;  // 0: parallel retention (T×T scores); > 0: chunkwise with this chunk size (RetNet only)
    // Training-only regularization, not part of the model: the embedding output and each residual
    // branch's output (after o_proj, after down_proj) are zeroed with probability `dropout` and
    // scaled by 1/(1 − dropout). The masks are a pure function of (dropout_seed, site, element).
    double dropout = 0;
    uint64_t dropout_seed = 0;
    // Data parallelism: the batch is rank's shard, rows [first_row, first_row + B·T) of a global
    // batch of global_rows rows (0: the batch is the whole batch). The gradient is then this
    // shard's part of the global mean's (the ranks' parts sum to it) and the dropout masks are the
    // global batch's; the returned loss stays the shard's own mean.
    int64_t first_row = 0;
    int64_t global_rows = 0;
    GradientReady gradient_ready;  // passed to train_backward (a part of the gradient is final)
    // Asked before each layer of the forward: true throws retnet::Cancelled (`retnet eval` stops
    // within a layer of its batch of windows after Ctrl-C).
    std::function<bool()> cancelled;
};

// Mean next-token cross-entropy (nats) over the B·T positions. When `grad` is not null it is
// overwritten with ∂loss/∂params (layout.total values). When `logits` is not null it receives
// the (B·T, V) logits. Every sequence starts from an empty state at position 0.
template <typename T>
double loss_and_gradient(const ModelConfig& config, const ParamLayout& layout, const T* params,
                         const BatchView& batch, T* grad, const LossOptions& options = {},
                         std::vector<T>* logits = nullptr);

// ---- optimizer ----------------------------------------------------------------------------

struct AdamWConfig {
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double weight_decay = 0.1;  // decoupled, applied to tensors with ParamTensor::weight_decay
};

struct AdamWState {
    std::vector<float> m, v;  // first and second moments (layout.total each)
    int64_t step = 0;         // updates done
};

AdamWState make_adamw_state(const ParamLayout& layout);
// One update with learning rate `lr`: p ← p − lr·(m̂/(√v̂+eps) + wd·p) (bias-corrected moments).
void adamw_update(std::span<float> params, std::span<const float> grad, AdamWState& state,
                  const ParamLayout& layout, const AdamWConfig& config, double lr);

// Scales grad so its global L2 norm is at most max_norm (max_norm ≤ 0: no clipping).
// Returns the norm before clipping.
double clip_grad_norm(std::span<float> grad, double max_norm);

// Parameter averaging (an exponential moving average of the weights, Polyak-style): after update
// t (counting from 1) average ← average + (1 − d_t)·(params − average), with
// d_t = min(decay, (1 + t) / (10 + t)) so that the random initialization fades within the first
// steps. The average starts equal to the initial parameters.
double average_decay_at(double decay, int64_t step);
void update_average(std::span<float> average, std::span<const float> params, double decay_at_step);

// Linear warmup from peak/warmup to peak over `warmup` steps, then cosine decay to
// peak·min_ratio at step `total`. `step` counts from 0.
double learning_rate(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio);

}  // namespace retnet::train
