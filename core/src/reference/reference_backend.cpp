// SPDX-License-Identifier: GPL-3.0-or-later
// The naive reference: every op as plain loops in double precision, each retention form written
// the way its reference implementation computes it (torchscale: docs/spec.md §2.4–2.6, fla: §3.3–3.4).
// It is never optimized; it exists so that every faster path (CPU float, CUDA) and every
// checkpoint fixture can be checked against one readable implementation.
#include <algorithm>
#include <cmath>

#include "reference/reference_ops.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "retnet/forward.h"

namespace retnet {
namespace {

using ref::Matrix;

// The recurrent state in double: per layer, per head, S (Dk, Dv) in the family's scaling
// (fla raw S; torchscale S/√r) and torchscale's r.
struct RefLayerState {
    std::vector<Matrix> S;       // H × (Dk, Dv)
    std::vector<double> scale;   // (H) torchscale r_n
};

// The Transformer twin's KV cache of one layer in double.
struct RefKv {
    std::vector<double> K;  // (position, H·D) rotated keys
    std::vector<double> V;  // (position, H·D)
};

struct HeadInputs {
    Matrix q;  // (T, Dk) rotated; fla: carries 1/√Dk
    Matrix k;  // (T, Dk) rotated; torchscale: carries 1/√Dk
    Matrix v;  // (T, Dv)
};

class ReferenceBackend final : public Backend {
public:
    explicit ReferenceBackend(std::shared_ptr<const Model> model) : model_(std::move(model)) {
        reset();
    }

    std::string name() const override { return "reference"; }
    const Model& model() const override { return *model_; }

    // The oracle runs one sequence at a time: a single state slot.
    int slot_count() const override { return 1; }
    int max_slot_count() const override { return 1; }
    void set_slot_count(int slots) override {
        if (slots != 1) throw Error("the reference backend keeps one state (slot 0), not " + std::to_string(slots));
    }

    void reset(int slot = 0) override {
        check_slot(slot);
        const ModelConfig& c = model_->config;
        layers_.assign(static_cast<size_t>(c.n_layers), {});
        for (RefLayerState& l : layers_) {
            if (c.is_transformer()) break;  // its state is the KV cache
            l.S.assign(static_cast<size_t>(c.n_heads), Matrix(c.head_dim_k(), c.head_dim_v()));
            l.scale.assign(static_cast<size_t>(c.n_heads), 0.0);
        }
        kv_.assign(static_cast<size_t>(c.n_layers), {});
        position_ = 0;
    }

    RecurrentState snapshot(int slot = 0) const override {
        check_slot(slot);
        RecurrentState out = make_empty_state(model_->config);
        out.position = position_;
        for (size_t l = 0; l < layers_.size(); ++l) {
            size_t i = 0;
            for (const Matrix& s : layers_[l].S)
                for (double x : s.data) out.layers[l].S[i++] = static_cast<float>(x);
            if (model_->config.family == Family::TorchScale) out.layers[l].scale = layers_[l].scale;
            out.layers[l].K.assign(kv_[l].K.begin(), kv_[l].K.end());
            out.layers[l].V.assign(kv_[l].V.begin(), kv_[l].V.end());
        }
        return out;
    }

    void restore(const RecurrentState& state, int slot = 0) override {
        check_slot(slot);
        const ModelConfig& c = model_->config;
        check_state_shape(c, state);
        reset();
        for (size_t l = 0; l < layers_.size(); ++l) {
            size_t i = 0;
            for (Matrix& s : layers_[l].S)
                for (double& x : s.data) x = state.layers[l].S[i++];
            if (c.family == Family::TorchScale) layers_[l].scale = state.layers[l].scale;
            kv_[l].K.assign(state.layers[l].K.begin(), state.layers[l].K.end());
            kv_[l].V.assign(state.layers[l].V.begin(), state.layers[l].V.end());
        }
        position_ = state.position;
    }

    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* intro) override {
        check_batch(*model_, batch, slot_count(), options, intro);
        check_form_start(model_->config, options.form, position_);
        return {logits_as_asked(batch[0], run(batch[0].tokens, options, intro))};  // run: (T, V)
    }

private:
    void check_slot(int slot) const {
        if (slot != 0) throw Error("state slot " + std::to_string(slot) + " does not exist (the reference backend has 1)");
    }

    Tensor run(std::span<const int32_t> tokens, const ForwardOptions& options, Introspection* intro) {
        const Model& m = *model_;
        const ModelConfig& c = m.config;
        const int T = static_cast<int>(tokens.size());
        if (intro) {
            intro->layer_outputs.clear();
            intro->state_norms = intro->want_state_norms ? Tensor({T, c.n_layers, c.n_heads}) : Tensor();
            intro->scores = Tensor();
        }

        Matrix x = ref::embed(m, tokens);  // (T, d)
        for (int l = 0; l < c.n_layers; ++l) {
            if (options.cancelled && options.cancelled()) {
                reset();  // the layers before this one have advanced their states
                throw Cancelled();
            }
            const LayerWeights& w = m.weights.layers[static_cast<size_t>(l)];

            const Matrix h = ref::rms_norm(x, w.attn_norm, c.norm_eps);
            const Matrix mixed = c.is_transformer() ? attend(h, w, l) : retain(h, w, l, options, intro);
            ref::add_in_place(x, ref::linear(mixed, w.o_proj));

            const Matrix f = ref::rms_norm(x, w.ffn_norm, c.norm_eps);
            ref::add_in_place(x, ref::glu(f, w, c.ffn_activation));
            if (intro && intro->want_layer_outputs) intro->layer_outputs.push_back(ref::to_tensor(x));
        }
        position_ += T;
        const Matrix out = ref::rms_norm(x, m.weights.final_norm, c.norm_eps);
        return ref::to_tensor(ref::linear(out, m.weights.output_matrix()));
    }

    // Gated multi-scale retention of layer l from its state (advanced), after the head norm and
    // the gate: (T, H·Dv).
    Matrix retain(const Matrix& h, const LayerWeights& w, int l, const ForwardOptions& options, Introspection* intro) {
        const Model& m = *model_;
        const ModelConfig& c = m.config;
        const int T = h.rows;
        const int chunk = effective_chunk_size(c, options);
        const double head_eps = options.head_norm_eps.value_or(c.norm_eps);
        RefLayerState& state = layers_[static_cast<size_t>(l)];
        const Matrix g = ref::linear(h, w.g_proj);                   // (T, H*Dv)
        std::vector<HeadInputs> heads = project_heads(h, w);          // H
        Matrix retained(T, c.value_dim);                             // (T, H*Dv) after head norm

        for (int hd = 0; hd < c.n_heads; ++hd) {
            HeadInputs& in = heads[static_cast<size_t>(hd)];
            const double gamma = std::exp(static_cast<double>(m.weights.log_decay[static_cast<size_t>(hd)]));
            const bool want_scores = intro && intro->score_layer == l &&
                                     (intro->want_all_head_scores || intro->score_head == hd);
            Matrix scores;
            Matrix o = run_retention(options.form, chunk, gamma, in, state, hd,
                                     want_scores ? &scores : nullptr);
            if (intro && intro->want_state_norms)
                record_state_norms(in, gamma, state, hd, l, *intro);
            advance_state(in, gamma, state, hd);
            if (want_scores) store_scores(scores, hd, T, *intro);

            for (int t = 0; t < T; ++t) {
                std::vector<double> row(o.row(t), o.row(t) + o.cols);
                ref::head_rms_norm(row, w.head_norm, head_eps);
                for (int j = 0; j < o.cols; ++j) retained.at(t, hd * o.cols + j) = row[static_cast<size_t>(j)];
            }
        }
        for (int t = 0; t < T; ++t)
            for (int j = 0; j < c.value_dim; ++j) retained.at(t, j) *= ref::silu(g.at(t, j));
        return retained;
    }

    // The Transformer twin's causal attention of layer l: q, k rotated at their absolute
    // positions (half-split pairs), q·1/√D; k, v appended to the layer's cache; then
    // y_t = softmax_{m ≤ P+t}(q_t·K_m) V_m per head. (T, H·D)
    Matrix attend(const Matrix& h, const LayerWeights& w, int l) {
        const ModelConfig& c = model_->config;
        Matrix q = ref::linear(h, w.q_proj), k = ref::linear(h, w.k_proj);
        const Matrix v = ref::linear(h, w.v_proj);
        const int T = h.rows, H = c.n_heads, D = c.head_dim_k(), HD = c.key_dim;
        const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D));
        RefKv& cache = kv_[static_cast<size_t>(l)];
        for (int t = 0; t < T; ++t)
            for (int hd = 0; hd < H; ++hd) {
                ref::rotate(q.row(t) + hd * D, D, position_ + t, model_->weights.rotary_theta, c.family);
                ref::rotate(k.row(t) + hd * D, D, position_ + t, model_->weights.rotary_theta, c.family);
                for (int i = 0; i < D; ++i) q.at(t, hd * D + i) *= inv_sqrt_d;
            }
        cache.K.insert(cache.K.end(), k.data.begin(), k.data.end());
        cache.V.insert(cache.V.end(), v.data.begin(), v.data.end());
        Matrix out(T, HD);
        for (int t = 0; t < T; ++t)
            for (int hd = 0; hd < H; ++hd) {
                const int64_t keys = position_ + t + 1;
                std::vector<double> p(static_cast<size_t>(keys));
                double peak = -INFINITY, sum = 0.0;
                for (int64_t m = 0; m < keys; ++m) {
                    double dot = 0.0;
                    for (int i = 0; i < D; ++i) dot += q.at(t, hd * D + i) * cache.K[static_cast<size_t>(m * HD + hd * D + i)];
                    p[static_cast<size_t>(m)] = dot;
                    peak = std::max(peak, dot);
                }
                for (double& e : p) sum += (e = std::exp(e - peak));
                for (int64_t m = 0; m < keys; ++m)
                    for (int i = 0; i < D; ++i)
                        out.at(t, hd * D + i) += p[static_cast<size_t>(m)] / sum * cache.V[static_cast<size_t>(m * HD + hd * D + i)];
            }
        return out;
    }

    // q, k, v per head, rotated at absolute positions, with 1/√Dk where the family puts it.
    std::vector<HeadInputs> project_heads(const Matrix& h, const LayerWeights& w) const {
        const ModelConfig& c = model_->config;
        const Matrix q = ref::linear(h, w.q_proj), k = ref::linear(h, w.k_proj), v = ref::linear(h, w.v_proj);
        const int Dk = c.head_dim_k(), Dv = c.head_dim_v(), T = h.rows;
        const double inv_sqrt_dk = 1.0 / std::sqrt(static_cast<double>(Dk));
        std::vector<HeadInputs> heads(static_cast<size_t>(c.n_heads));
        for (int hd = 0; hd < c.n_heads; ++hd) {
            HeadInputs& in = heads[static_cast<size_t>(hd)];
            in.q = Matrix(T, Dk);
            in.k = Matrix(T, Dk);
            in.v = Matrix(T, Dv);
            for (int t = 0; t < T; ++t) {
                for (int i = 0; i < Dk; ++i) {
                    in.q.at(t, i) = q.at(t, hd * Dk + i);
                    in.k.at(t, i) = k.at(t, hd * Dk + i);
                }
                for (int j = 0; j < Dv; ++j) in.v.at(t, j) = v.at(t, hd * Dv + j);
                const int64_t pos = position_ + t;
                ref::rotate(in.q.row(t), Dk, pos, model_->weights.rotary_theta, c.family);
                ref::rotate(in.k.row(t), Dk, pos, model_->weights.rotary_theta, c.family);
                for (int i = 0; i < Dk; ++i) {
                    if (c.family == Family::TorchScale) in.k.at(t, i) *= inv_sqrt_dk;
                    else in.q.at(t, i) *= inv_sqrt_dk;
                }
            }
        }
        return heads;
    }

    Matrix run_retention(Form form, int chunk, double gamma, const HeadInputs& in,
                         const RefLayerState& state, int hd, Matrix* scores) const {
        const Matrix& S0 = state.S[static_cast<size_t>(hd)];
        if (model_->config.family == Family::Fla) {
            switch (form) {
                case Form::Parallel: return ref::fla_parallel(in.q, in.k, in.v, gamma, S0, scores);
                case Form::Recurrent: return ref::fla_recurrent(in.q, in.k, in.v, gamma, S0, scores);
                case Form::Chunkwise: return ref::fla_chunkwise(in.q, in.k, in.v, gamma, S0, chunk, scores);
            }
        }
        const double r0 = state.scale[static_cast<size_t>(hd)];
        switch (form) {
            case Form::Parallel: return ref::ts_parallel(in.q, in.k, in.v, gamma, scores);
            case Form::Recurrent: return ref::ts_recurrent(in.q, in.k, in.v, gamma, S0, r0, scores);
            case Form::Chunkwise: return ref::ts_chunkwise(in.q, in.k, in.v, gamma, S0, r0, chunk, scores);
        }
        throw Error("unknown form");
    }

    // The state after this call, in the recurrent form's definition whatever form ran: that is
    // what makes a prefill in any form continue recurrently (state handoff).
    void advance_state(const HeadInputs& in, double gamma, RefLayerState& state, int hd) const {
        const bool ts = model_->config.family == Family::TorchScale;
        Matrix& S = state.S[static_cast<size_t>(hd)];
        double& r = state.scale[static_cast<size_t>(hd)];
        for (int t = 0; t < in.k.rows; ++t) ref::recurrent_update(S, r, in.k.row(t), in.v.row(t), gamma, ts);
    }

    void record_state_norms(const HeadInputs& in, double gamma, const RefLayerState& state, int hd,
                            int layer, Introspection& intro) const {
        const ModelConfig& c = model_->config;
        Matrix S = state.S[static_cast<size_t>(hd)];
        double r = state.scale[static_cast<size_t>(hd)];
        for (int t = 0; t < in.k.rows; ++t) {
            ref::recurrent_update(S, r, in.k.row(t), in.v.row(t), gamma, c.family == Family::TorchScale);
            double sum = 0;
            for (double s : S.data) sum += s * s;
            intro.state_norms.data[(static_cast<size_t>(t) * c.n_layers + layer) * c.n_heads + hd] =
                static_cast<float>(std::sqrt(sum));
        }
    }

    void store_scores(const Matrix& scores, int hd, int T, Introspection& intro) const {
        const bool all = intro.want_all_head_scores;
        if (intro.scores.empty())
            intro.scores = all ? Tensor({model_->config.n_heads, T, T}) : Tensor({T, T});
        const size_t offset = all ? static_cast<size_t>(hd) * T * T : 0;
        for (size_t i = 0; i < scores.data.size(); ++i)
            intro.scores.data[offset + i] = static_cast<float>(scores.data[i]);
    }

    std::shared_ptr<const Model> model_;
    std::vector<RefLayerState> layers_;
    std::vector<RefKv> kv_;  // L; the twin
    int64_t position_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend(std::shared_ptr<const Model> model) {
    if (!model) throw Error("no model");
    return std::make_unique<ReferenceBackend>(with_f32_weights(std::move(model)));  // it reads float32 values
}

}  // namespace retnet
