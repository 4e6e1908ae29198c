// SPDX-License-Identifier: GPL-3.0-or-later
// The fast CPU backend: float32 activations, matrix products through OpenBLAS (threaded), the
// state kept in float32 like the GPU's. Tested against the double reference (tests/core).
#include <cmath>
#include <cstring>

#include "cpu/cpu_ops.h"
#include "cpu/cpu_retention.h"
#include "retnet/error.h"
#include "retnet/forward.h"

namespace retnet {
namespace {

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(std::shared_ptr<const Model> model)
        : model_(std::move(model)), state_(make_empty_state(model_->config)) {}

    std::string name() const override { return "cpu"; }
    const Model& model() const override { return *model_; }
    void reset() override { state_ = make_empty_state(model_->config); }
    RecurrentState snapshot() const override { return state_; }

    void restore(const RecurrentState& state) override {
        check_state_shape(model_->config, state);
        state_ = state;
    }

    Tensor forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                   Introspection* intro) override {
        const Model& m = *model_;
        const ModelConfig& c = m.config;
        check_forward_inputs(m, tokens, options);
        if (c.family == Family::TorchScale && options.form == Form::Parallel && !state_.empty())
            throw Error("the torchscale parallel form starts from an empty state (its row "
                        "normalization needs the whole row); continue with the recurrent or "
                        "chunkwise form");
        const int T = static_cast<int>(tokens.size()), d = c.d_model, H = c.n_heads;
        const int Dk = c.head_dim_k(), Dv = c.head_dim_v(), F = c.ffn_dim;
        const int chunk = options.chunk_size > 0 ? options.chunk_size : c.chunk_size;
        const double head_eps = options.head_norm_eps.value_or(c.norm_eps);
        if (intro) {
            intro->layer_outputs.clear();
            intro->state_norms = intro->want_state_norms ? Tensor({T, c.n_layers, H}) : Tensor();
            intro->scores = Tensor();
        }

        std::vector<float> x(static_cast<size_t>(T) * d);  // (T, d) residual stream
        const float embed_scale = c.scale_embedding ? std::sqrt(static_cast<float>(d)) : 1.0f;
        for (int t = 0; t < T; ++t) {
            const float* row = m.weights.embed.ptr() + static_cast<size_t>(tokens[static_cast<size_t>(t)]) * d;
            for (int j = 0; j < d; ++j) x[static_cast<size_t>(t) * d + j] = row[j] * embed_scale;
        }
        if (c.layernorm_embedding) cpu::rms_norm_rows(x.data(), T, d, m.weights.embed_norm, c.norm_eps);

        std::vector<float> h(x.size()), q(static_cast<size_t>(T) * c.key_dim), k(q.size());
        std::vector<float> v(static_cast<size_t>(T) * c.value_dim), g(v.size()), retained(v.size());
        std::vector<float> o_head(static_cast<size_t>(T) * Dv), proj(x.size());
        std::vector<float> ffn_a(static_cast<size_t>(T) * F), ffn_b(ffn_a.size());
        cpu::HeadInputs in;
        in.T = T;
        in.Dk = Dk;
        in.Dv = Dv;
        const float inv_sqrt_dk = 1.0f / std::sqrt(static_cast<float>(Dk));

        for (int l = 0; l < c.n_layers; ++l) {
            const LayerWeights& w = m.weights.layers[static_cast<size_t>(l)];
            LayerState& ls = state_.layers[static_cast<size_t>(l)];
            cpu::rms_norm_rows(x.data(), h.data(), T, d, w.attn_norm, c.norm_eps);
            cpu::linear(h.data(), T, d, w.q_proj, q.data());
            cpu::linear(h.data(), T, d, w.k_proj, k.data());
            cpu::linear(h.data(), T, d, w.v_proj, v.data());
            cpu::linear(h.data(), T, d, w.g_proj, g.data());

            for (int hd = 0; hd < H; ++hd) {
                gather_head(q, k, v, hd, in, inv_sqrt_dk);
                const double gamma = std::exp(static_cast<double>(m.weights.log_decay[static_cast<size_t>(hd)]));
                double unused_r = 0;
                cpu::HeadState hs{ls.S.data() + static_cast<size_t>(hd) * Dk * Dv,
                                  c.family == Family::TorchScale ? &ls.scale[static_cast<size_t>(hd)] : &unused_r};
                const std::vector<double> divisor =
                    cpu::retention_forward(c.family, options.form, chunk, gamma, in, hs, o_head.data());
                if (intro) record(*intro, gamma, in, hs, divisor, l, hd);
                cpu::advance_state(c.family, gamma, in, hs);

                for (int t = 0; t < T; ++t) {
                    float* dst = retained.data() + static_cast<size_t>(t) * c.value_dim + static_cast<size_t>(hd) * Dv;
                    std::memcpy(dst, o_head.data() + static_cast<size_t>(t) * Dv, sizeof(float) * static_cast<size_t>(Dv));
                    cpu::rms_norm_rows(dst, 1, Dv, w.head_norm, head_eps);
                }
            }
            for (size_t i = 0; i < retained.size(); ++i) retained[i] *= cpu::silu(g[i]);
            cpu::linear(retained.data(), T, c.value_dim, w.o_proj, proj.data());
            for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

            cpu::rms_norm_rows(x.data(), h.data(), T, d, w.ffn_norm, c.norm_eps);
            cpu::linear(h.data(), T, d, w.ffn_act, ffn_a.data());
            cpu::linear(h.data(), T, d, w.ffn_lin, ffn_b.data());
            const bool gelu = c.ffn_activation == Activation::Gelu;
            for (size_t i = 0; i < ffn_a.size(); ++i)
                ffn_a[i] = (gelu ? cpu::gelu(ffn_a[i]) : cpu::silu(ffn_a[i])) * ffn_b[i];
            cpu::linear(ffn_a.data(), T, F, w.ffn_out, proj.data());
            for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
            if (intro && intro->want_layer_outputs) {
                Tensor out({T, d});
                out.data = x;
                intro->layer_outputs.push_back(std::move(out));
            }
        }
        state_.position += T;
        cpu::rms_norm_rows(x.data(), T, d, m.weights.final_norm, c.norm_eps);
        Tensor logits({T, c.vocab_size});
        cpu::linear(x.data(), T, d, m.weights.output_matrix(), logits.ptr());
        return logits;
    }

private:
    // Copies head hd's q, k, v out of the projections, rotates at absolute positions and applies
    // 1/√Dk where the family does (torchscale on k before rotation; fla on q — both linear).
    void gather_head(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                     int hd, cpu::HeadInputs& in, float inv_sqrt_dk) const {
        const ModelConfig& c = model_->config;
        const int T = in.T, Dk = in.Dk, Dv = in.Dv;
        in.q.resize(static_cast<size_t>(T) * Dk);
        in.k.resize(in.q.size());
        in.v.resize(static_cast<size_t>(T) * Dv);
        const bool ts = c.family == Family::TorchScale;
        for (int t = 0; t < T; ++t) {
            float* qd = in.q.data() + static_cast<size_t>(t) * Dk;
            float* kd = in.k.data() + static_cast<size_t>(t) * Dk;
            const float* qs = q.data() + static_cast<size_t>(t) * c.key_dim + static_cast<size_t>(hd) * Dk;
            const float* ks = k.data() + static_cast<size_t>(t) * c.key_dim + static_cast<size_t>(hd) * Dk;
            for (int i = 0; i < Dk; ++i) {
                qd[i] = ts ? qs[i] : qs[i] * inv_sqrt_dk;
                kd[i] = ts ? ks[i] * inv_sqrt_dk : ks[i];
            }
            const int64_t pos = state_.position + t;
            cpu::rotate(qd, Dk, pos, model_->weights.rotary_theta, c.family);
            cpu::rotate(kd, Dk, pos, model_->weights.rotary_theta, c.family);
            std::memcpy(in.v.data() + static_cast<size_t>(t) * Dv,
                        v.data() + static_cast<size_t>(t) * c.value_dim + static_cast<size_t>(hd) * Dv,
                        sizeof(float) * static_cast<size_t>(Dv));
        }
    }

    void record(Introspection& intro, double gamma, const cpu::HeadInputs& in, const cpu::HeadState& hs,
                const std::vector<double>& divisor, int layer, int hd) const {
        const ModelConfig& c = model_->config;
        const int T = in.T;
        if (intro.want_state_norms) {
            const std::vector<float> norms = cpu::state_norms_per_token(c.family, gamma, in, hs);
            for (int t = 0; t < T; ++t)
                intro.state_norms.data[(static_cast<size_t>(t) * c.n_layers + layer) * c.n_heads + hd] = norms[static_cast<size_t>(t)];
        }
        if (intro.score_layer == layer && (intro.want_all_head_scores || intro.score_head == hd)) {
            if (intro.scores.empty())
                intro.scores = intro.want_all_head_scores ? Tensor({c.n_heads, T, T}) : Tensor({T, T});
            const size_t offset = intro.want_all_head_scores ? static_cast<size_t>(hd) * T * T : 0;
            cpu::retention_scores(gamma, in, divisor, intro.scores.ptr() + offset);
        }
    }

    std::shared_ptr<const Model> model_;
    RecurrentState state_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model) {
    if (!model) throw Error("no model");
    return std::make_unique<CpuBackend>(std::move(model));
}

}  // namespace retnet
