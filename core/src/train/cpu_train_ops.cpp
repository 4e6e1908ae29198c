// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU as a TrainOps device (retnet/train_ops.h) over the op library (retnet/cpu_ops.h), in
// float (training) or double (gradient checks), and loss_and_gradient on it — the RetNet's and
// the Transformer twin's.
#include <algorithm>
#include <cstring>

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"
#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/train_ops.h"

namespace retnet::train {

namespace {

// One pass's buffers, in the row layout (N, buffer_width), made (zeros) when first named; the
// parameters and their gradient are the caller's flat vectors.
template <typename T>
class CpuTrainOps final : public TrainOps {
public:
    CpuTrainOps(const ModelConfig& c, const ParamLayout& layout, const T* params, T* grad, const BatchView& batch,
                int chunk)
        : c_(c), layout_(layout), P_(params), G_(grad), batch_(batch), chunk_(chunk),
          N_(int64_t(batch.batch) * batch.seq_len), log_decay_(default_log_decay(c.n_heads)),
          bufs_(static_cast<size_t>((1 + c.n_layers) * static_cast<int>(Buf::Count))) {}

    double loss_sum() const { return loss_sum_; }
    std::vector<T> take(Act a) { return std::move(buf(a)); }

    void embed(Act x) override {
        T* out = at(x);
        const int64_t d = c_.d_model;
        for (int64_t r = 0; r < N_; ++r)
            std::memcpy(out + r * d, P_ + layout_.embed + batch_.inputs[r] * d, sizeof(T) * static_cast<size_t>(d));
    }
    void embed_backward(Act dx) override {
        const T* src = at(dx);
        const int64_t d = c_.d_model;
        for (int64_t r = 0; r < N_; ++r) {
            T* row = G_ + layout_.embed + batch_.inputs[r] * d;
            for (int64_t i = 0; i < d; ++i) row[i] += src[r * d + i];
        }
    }
    void dropout(Act in, Act out, const DropoutSite& site) override {
        const T* x = at(in);
        T* y = at(out);
        for_each_kept(site, [&](int64_t i, T keep) { y[i] = x[i] * keep; });
    }
    void rms_norm(Act x, int layer, Weight w, Act y, Act rstd) override {
        cpu::rmsnorm_forward(at(x), weight(layer, w), N_, width(x), c_.norm_eps, at(y), at(rstd));
    }
    void rms_norm_backward(Act x, int layer, Weight w, Act rstd, Act dy, Act dx) override {
        cpu::rmsnorm_backward(at(x), weight(layer, w), at(rstd), at(dy), N_, width(x), at(dx), weight_grad(layer, w));
    }
    void linear(Act x, int layer, Weight w, Act y) override {
        cpu::linear_forward(at(x), weight(layer, w), N_, width(x), width(y), at(y));
    }
    void linear_backward(Act x, int layer, Weight w, Act dy, Act dx, bool accumulate) override {
        cpu::linear_backward(at(x), weight(layer, w), at(dy), N_, width(x), width(dy), at(dx), accumulate,
                             weight_grad(layer, w));
    }
    void residual_branch(Act residual, Act x, int layer, Weight w, const DropoutSite& site, Act out) override;
    void project_heads(Act x, int layer, Weight w, const HeadRotary& rotary, Act heads) override {
        linear(x, layer, w, heads);
        if (rotary.apply)
            cpu::rotary_forward(at(heads), rotary_shape(), theta(rotary).data(), cpu::rotary_pairs(Family::Fla),
                                rotary.scale);
    }
    void project_heads_backward(Act x, int layer, Weight w, const HeadRotary& rotary, Act dheads, Act dx,
                                bool accumulate) override {
        if (rotary.apply)
            cpu::rotary_backward(at(dheads), rotary_shape(), theta(rotary).data(), cpu::rotary_pairs(Family::Fla),
                                 rotary.scale);
        linear_backward(x, layer, w, dheads, dx, accumulate);
    }
    void retention(Act q, Act k, Act v, Act o) override {
        cpu::retention_forward(at(q), at(k), at(v), retention_shape(), log_decay_.data(), chunk_, at(o));
    }
    void retention_backward(Act q, Act k, Act v, Act d_o, Act dq, Act dk, Act dv) override {
        cpu::retention_backward(at(q), at(k), at(v), at(d_o), retention_shape(), log_decay_.data(), chunk_, at(dq),
                                at(dk), at(dv));
    }
    void attention(Act q, Act k, Act v, Act o, Act lse) override {
        cpu::causal_attention_forward(at(q), at(k), at(v), attention_shape(), at(o), at(lse));
    }
    void attention_backward(Act q, Act k, Act v, Act o, Act lse, Act d_o, Act dq, Act dk, Act dv) override {
        cpu::causal_attention_backward(at(q), at(k), at(v), at(o), at(lse), at(d_o), attention_shape(), at(dq), at(dk),
                                       at(dv));
    }
    void head_norm_gate(Act o, Act g, int layer, Act y, Act rstd) override {
        cpu::head_norm_gate_forward(at(o), at(g), head_norm(P_, layer), N_, c_.n_heads, c_.head_dim_v(), c_.norm_eps,
                                    at(y), at(rstd));
    }
    void head_norm_gate_backward(Act o, Act g, int layer, Act rstd, Act dy, Act d_o, Act dg) override {
        cpu::head_norm_gate_backward(at(o), at(g), head_norm(P_, layer), at(rstd), at(dy), N_, c_.n_heads,
                                     c_.head_dim_v(), at(d_o), at(dg), head_norm(G_, layer));
    }
    void glu(Act a, Act b, Act h) override {
        cpu::glu_forward(at(a), at(b), N_ * width(a), Activation::Swish, at(h));
    }
    void glu_backward(Act a, Act b, Act dh, Act da, Act db) override {
        cpu::glu_backward(at(a), at(b), at(dh), N_ * width(a), Activation::Swish, at(da), at(db));
    }
    void cross_entropy(Act logits, std::optional<Act> dlogits, double grad_scale) override {
        loss_sum_ = cpu::cross_entropy(at(logits), batch_.targets, N_, c_.vocab_size,
                                       dlogits ? at(*dlogits) : nullptr, grad_scale);
    }
    void zero(Act x) override { std::fill(buf(x).begin(), buf(x).end(), T(0)); }
    void zero_gradient() override { std::fill(G_, G_ + layout_.total, T(0)); }

private:
    int64_t width(Act a) const { return buffer_width(c_, a.name); }
    std::vector<T>& buf(Act a) {
        if (per_layer(a.name) != (a.layer >= 0) || a.layer >= c_.n_layers)
            throw Error("training: buffer named with the wrong layer");
        // One buffer for all layers of what the backward recomputes (row 0 holds no per-layer name).
        const int row = recomputed_in_backward(a.name) ? 0 : 1 + a.layer;
        std::vector<T>& b = bufs_[static_cast<size_t>(row * static_cast<int>(Buf::Count) + static_cast<int>(a.name))];
        if (b.empty()) b.assign(static_cast<size_t>(N_ * width(a)), T(0));
        return b;
    }
    T* at(Act a) { return buf(a).data(); }
    const T* weight(int layer, Weight w) const { return P_ + param_offset(layout_, layer, w); }
    T* weight_grad(int layer, Weight w) const { return G_ + param_offset(layout_, layer, w); }
    template <typename U>
    U* head_norm(U* base, int layer) const {
        const int64_t off = layout_.layers[static_cast<size_t>(layer)].head_norm;
        return off >= 0 ? base + off : nullptr;
    }
    // (Dk/2) the frequencies of the rotary's base, formed as inference forms them.
    std::vector<float> theta(const HeadRotary& rotary) const {
        return default_rotary_theta(Family::Fla, c_.head_dim_k(), rotary.base);
    }
    cpu::RotaryShape rotary_shape() const { return {batch_.batch, batch_.seq_len, c_.n_heads, c_.head_dim_k()}; }
    cpu::AttentionShape attention_shape() const {
        return {batch_.batch, batch_.seq_len, c_.n_heads, c_.head_dim_k()};
    }
    cpu::RetentionShape retention_shape() const {
        return {batch_.batch, batch_.seq_len, c_.n_heads, c_.head_dim_k(), c_.head_dim_v()};
    }
    // fn(i, keep) over the (N, d) elements of a site, keep = 0 or 1/(1 − rate) (1 without dropout).
    template <typename Fn>
    void for_each_kept(const DropoutSite& site, const Fn& fn) const {
        const T scale = site.rate > 0.0 ? static_cast<T>(1.0 / (1.0 - site.rate)) : T(1);
        cpu::parallel_blocks(N_ * c_.d_model, 1 << 16, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) fn(i, dropout_drops(site.base, i, site.rate) ? T(0) : scale);
        });
    }

    const ModelConfig& c_;
    const ParamLayout& layout_;
    const T* P_;
    T* G_;  // null: no gradient
    const BatchView& batch_;
    const int chunk_;
    const int64_t N_;  // B·T rows
    const std::vector<float> log_decay_;
    std::vector<std::vector<T>> bufs_;  // (1 + L) × Buf::Count: model level first, then per layer
    std::vector<T> branch_;             // (N, d) a branch's output before dropout
    double loss_sum_ = 0;
};

template <typename T>
void CpuTrainOps<T>::residual_branch(Act residual, Act x, int layer, Weight w, const DropoutSite& site, Act out) {
    const int64_t d = c_.d_model, in = width(x);
    T* y = at(out);
    std::copy_n(at(residual), N_ * d, y);
    if (site.rate <= 0.0) {
        cpu::gemm<T>(false, true, N_, d, in, T(1), at(x), in, weight(layer, w), in, T(1), y, d);
        return;
    }
    branch_.resize(static_cast<size_t>(N_ * d));
    cpu::gemm<T>(false, true, N_, d, in, T(1), at(x), in, weight(layer, w), in, T(0), branch_.data(), d);
    for_each_kept(site, [&](int64_t i, T keep) { y[i] += branch_[static_cast<size_t>(i)] * keep; });
}

}  // namespace

template <typename T>
double loss_and_gradient(const ModelConfig& c, const ParamLayout& layout, const T* params, const BatchView& batch,
                         T* grad, const LossOptions& options, std::vector<T>* logits) {
    check_train_batch(c, batch);
    check_dropout_rate(options.dropout);
    check_chunk(c, options.chunk);
    const int64_t rows = static_cast<int64_t>(batch.batch) * batch.seq_len;
    CpuTrainOps<T> ops(c, layout, params, grad, batch, options.chunk);
    const PassDropout dropout{options.dropout, options.dropout_seed, options.first_row};
    train_forward(ops, c, options.global_rows > 0 ? options.global_rows : rows, dropout, grad != nullptr,
                  options.cancelled);
    if (grad) train_backward(ops, c, dropout, options.gradient_ready);
    if (logits) *logits = ops.take(Act{Buf::Logits});
    return ops.loss_sum() / static_cast<double>(rows);
}

template double loss_and_gradient<float>(const ModelConfig&, const ParamLayout&, const float*, const BatchView&,
                                         float*, const LossOptions&, std::vector<float>*);
template double loss_and_gradient<double>(const ModelConfig&, const ParamLayout&, const double*, const BatchView&,
                                          double*, const LossOptions&, std::vector<double>*);

}  // namespace retnet::train
