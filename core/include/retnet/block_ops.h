// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The RetNet block sequence, written once for every fast backend.
//
// BlockBackend runs the model: embedding → per layer [RMSNorm → q, k, v, g projections →
// gated multi-scale retention → o_proj, residual → RMSNorm → GLU FFN, residual] → final norm on
// the rows whose logits were asked for → output matrix. It keeps the per-slot bookkeeping
// (positions, torchscale's row sums) and the family rules (retnet/family_rules.h). A fast backend
// (CPU, CUDA) derives from it and supplies BlockOps — a small set of ops on its own memory —
// plus the storage of the recurrent states; it may fuse or graph-capture the ops.
//
// The Transformer twin (docs/transformer.md) runs the same sequence with causal softmax attention
// over a per-slot KV cache in place of gated retention (no g projection, no head norm, no gate).
//
// Activations hold the rows of every sequence of the batch, one after the other (N = Σ T_s).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "retnet/forward.h"

namespace retnet {

// Rows of activations in the backend's own memory (host for the CPU, device for CUDA).
struct Rows {
    float* data = nullptr;  // (count, width) row-major
    int64_t count = 0;
    int64_t width = 0;
};

enum class Weight { EmbedNorm, AttnNorm, Q, K, V, G, O, FfnNorm, FfnAct, FfnLin, FfnOut, FinalNorm, Output };

// The model's tensor for (layer, weight); layer −1 for EmbedNorm, FinalNorm and Output (the
// embedding matrix when tied). An absent optional weight (no head norm weight) is empty.
const Tensor& model_weight(const Model& model, int layer, Weight weight);

// The member of a layer's record that `weight` names, for every record with the model's field
// names (LayerWeights' tensors, the trainer's LayerOffsets); `weight` is one of a layer's own.
template <class Layer>
auto& layer_member(Layer& layer, Weight weight) {
    switch (weight) {
        case Weight::AttnNorm: return layer.attn_norm;
        case Weight::Q: return layer.q_proj;
        case Weight::K: return layer.k_proj;
        case Weight::V: return layer.v_proj;
        case Weight::G: return layer.g_proj;
        case Weight::O: return layer.o_proj;
        case Weight::FfnNorm: return layer.ffn_norm;
        case Weight::FfnAct: return layer.ffn_act;
        case Weight::FfnLin: return layer.ffn_lin;
        default: return layer.ffn_out;
    }
}

// Named scratch buffers a backend keeps between calls.
enum class Scratch { Residual, Normed, Q, K, V, G, Gated, FfnA, FfnB, Selected, Logits, Best, Count };

// Sequence s of a batch: rows [first_row, first_row + length) of every activation.
struct SequenceSlice {
    int64_t first_row = 0;
    int length = 0;                    // T_s
    int slot = 0;                      // the backend's state slot
    int64_t position = 0;              // tokens the slot consumed before this call
    std::span<const double> row_sums;  // (H) torchscale r before the call; empty for fla
};

// What the retention op of one layer reports for introspection (single-sequence calls only).
struct RetentionRecord {
    float* state_norms = nullptr;  // (T, H) host: ‖S_t‖_F after each token, or null
    int score_head_begin = 0;      // scores of heads [begin, begin + count)
    int score_head_count = 0;      // 0: none
    float* scores = nullptr;       // (count, T, T) host: signed scores after decay and the
                                   // form's own row normalization
};

struct RetentionCall {
    int layer = 0;
    Form form = Form::Parallel;
    int chunk = 0;            // chunkwise only
    double head_norm_eps = 0;
    std::span<const SequenceSlice> sequences;
    RetentionRecord* record = nullptr;  // with a single sequence only
};

// One layer's attention for the Transformer twin. Every form gives the same result; a backend may
// run Form::Recurrent token by token over the cache and the others at once.
struct AttentionCall {
    int layer = 0;
    Form form = Form::Parallel;
    std::span<const SequenceSlice> sequences;  // row_sums empty
};

// What a forward will do, told to the ops before the first one runs (sizing, staging; the CUDA
// backend replays a captured graph when the same plan comes again).
struct ForwardPlan {
    std::span<const SequenceSlice> sequences;
    Form form = Form::Parallel;
    int chunk = 0;
    bool introspection = false;           // the ops will be asked for records or downloads
    std::span<const int64_t> logit_rows;  // rows of the activations whose logits are projected
    int best_count = 0;                   // > 0: only those rows' best logits go back (best_logits)
};

// One output of a group of projections that read the same input rows.
struct LinearOut {
    Weight weight;
    Rows y;
};

class BlockOps {
public:
    virtual ~BlockOps() = default;
    // Called once at the start of every forward, before any other op.
    virtual void prepare(const ForwardPlan& plan) { (void)plan; }
    // Called once at the end of every forward (completed false: it was abandoned by an error).
    virtual void finish(bool completed) { (void)completed; }
    virtual Rows scratch(Scratch which, int64_t rows, int64_t width) = 0;
    // x = scale · E[tokens]
    virtual void embed(std::span<const int32_t> tokens, float scale, Rows x) = 0;
    // y = RMSNorm(x) · w (x and y may be the same rows); layer −1 for model-level weights
    virtual void rms_norm(Rows x, int layer, Weight weight, double eps, Rows y) = 0;
    // y = x · Wᵀ, or y += x · Wᵀ
    virtual void linear(Rows x, int layer, Weight weight, Rows y, bool accumulate) = 0;
    // y_i = x · W_iᵀ for each output (a backend may read x once for all of them)
    virtual void linears(Rows x, int layer, std::span<const LinearOut> outputs) {
        for (const LinearOut& out : outputs) linear(x, layer, out.weight, out.y, false);
    }
    // h = RMSNorm(x) · w_norm, then linears(h, outputs); with `glu`, outputs are (a, b) and end as
    // a = act(a) ⊙ b. A backend may fuse the three and never write h (its callers do not read it).
    // With `glu`, a is for the next linear() alone: a backend may hand it to that projection in its
    // own form (the CUDA backend: bf16 rows) and leave a's rows unwritten; so may it leave b.
    virtual void norm_linears(Rows x, int layer, Weight norm, double eps, Rows h, std::span<const LinearOut> outputs,
                              std::optional<Activation> glu_activation = std::nullopt) {
        rms_norm(x, layer, norm, eps, h);
        linears(h, layer, outputs);
        if (glu_activation) glu(outputs[0].y, outputs[1].y, *glu_activation);
    }
    // The gated multi-scale retention of one layer, in call.form, for each sequence from its
    // slot's state (advanced to after the call, always in the recurrent form's definition):
    //   y = RMSNorm_head(Retention(rotary(q)·s_q, rotary(k)·s_k, v)) · w_head ⊙ silu(g)
    // with the family's rotary pairs and q/k scales (family_rules.h) at the slice's positions.
    // q, k (N, H·Dk) unrotated; v, g, y (N, H·Dv). y is for the next linear() alone, as the GLU's a
    // above. Without introspection (ForwardPlan), q, k, v and g too are for this call alone: a
    // backend's norm_linears may have formed them where this call reads them (the CUDA backend: v
    // head-major for a prefill, all four as one GEMM's rows for a decoding step) and left their rows
    // unwritten.
    virtual void gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) = 0;
    // The Transformer twin's causal attention of one layer, for each sequence from its slot's KV
    // cache of this layer: q and k rotated at the slice's positions with the family's pairs and θ
    // (fla's half-split, rotary_theta) and q·1/√D (qk_scale); the rotated k rows and the v rows
    // written into the cache at [position, position + T) (the backend grows it as needed); then
    //   y_t = softmax_{m ≤ position + t}(q_t · K_m) V_m  per head.
    // q, k, v, y (N, H·D); q and k may be rotated in place (callers do not read them after).
    // The default throws retnet::Error: the backend does not run the twin.
    virtual void attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y);
    // a = act(a) ⊙ b
    virtual void glu(Rows a, Rows b, Activation activation) = 0;
    // y row i = x row rows[i]
    virtual void gather_rows(Rows x, std::span<const int64_t> rows, Rows y) = 0;
    // packed row i = the best `count` of logits row i, packed (retnet/best_logits.h). The default
    // is for rows in host memory.
    virtual void best_logits(Rows logits, int count, Rows packed) {
        for (int64_t i = 0; i < logits.count; ++i)
            pack_best_logits({logits.data + i * logits.width, static_cast<size_t>(logits.width)}, count,
                             {packed.data + i * packed.width, static_cast<size_t>(packed.width)});
    }
    // host (count, width) = x
    virtual void download(Rows x, float* host) = 0;
};

class BlockBackend : public Backend {
public:
    const Model& model() const final { return *model_; }
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection = nullptr) final;

    int slot_count() const final { return static_cast<int>(slots_.size()); }
    void set_slot_count(int slots) final;
    void reset(int slot = 0) final;
    RecurrentState snapshot(int slot = 0) const final;
    void restore(const RecurrentState& state, int slot = 0) final;
    void copy_slot(int from, int to) final;

protected:
    explicit BlockBackend(std::shared_ptr<const Model> model);
    // Derived constructors call this last (it sizes the state storage through the virtuals).
    void init_slots() { set_slot_count(1); }

    virtual BlockOps& ops() = 0;
    // Storage of the S matrices, L × (H, Dk, Dv) per slot in the family's scaling; for the
    // Transformer twin the KV cache instead, L × (T, H, D) keys and values per slot.
    virtual void resize_states(int slots) = 0;  // keeps the first slots, new ones zero (empty)
    virtual void zero_state(int slot) = 0;      // the twin: empties the cache
    // Fills out.layers[l].S (the twin: K and V, out.position tokens of them, position set first).
    virtual void read_state(int slot, RecurrentState& out) const = 0;
    virtual void write_state(int slot, const RecurrentState& state) = 0;
    // Slot to's storage = slot from's (`position` tokens of it); by default through the host.
    virtual void copy_state(int from, int to, int64_t position);

    std::shared_ptr<const Model> model_;

private:
    struct SlotBook {
        int64_t position = 0;
        std::vector<std::vector<double>> row_sums;  // L × (H), torchscale; empty for fla
    };
    void run_layers(const ForwardOptions& options, std::span<const SequenceSlice> slices,
                    Rows x, Introspection* introspection);
    // The scratch rows of a layer's token mixing.
    struct MixRows {
        Rows h, q, k, v, g, y;  // (N, d), q, k (N, H·Dk), v, g, y (N, H·Dv); g unused by the twin
    };
    // Layer l's token mixing, x += o_proj(mix(norm(x))): gated retention, or the twin's attention.
    void retention_block(RetentionCall& call, std::span<SequenceSlice> slices, const MixRows& r, Rows x,
                         Introspection* introspection, RetentionRecord& record, std::span<float> layer_norms);
    void attention_block(const AttentionCall& call, const MixRows& r, Rows x, Introspection* introspection);
    // With LastBest the tensors have no rows and `best_packed` receives the packed rows (filled by
    // the time the ops' finish() returns).
    std::vector<Tensor> project_logits(std::span<const SequenceRequest> batch,
                                       std::span<const SequenceSlice> slices, std::span<const int64_t> rows, Rows x,
                                       std::vector<float>& best_packed);

    std::vector<SlotBook> slots_;
};

}  // namespace retnet
