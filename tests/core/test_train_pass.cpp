// SPDX-License-Identifier: GPL-3.0-or-later
// The training block sequence (train_forward / train_backward) as every device sees it, through a
// TrainOps that only records: each op reads buffers written earlier in the pass, the backward
// sends exactly one gradient into every parameter tensor, and the dropout masks are the sites of
// retnet/dropout_mask.h in the forward and again in the backward. The numbers of the pass are
// checked by the gradient tests (test_train_grad.cpp) and the CUDA trainer's tests.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <vector>

#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/train_ops.h"

using namespace retnet;
using namespace retnet::train;

namespace {

ModelConfig small_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 3;
    c.n_heads = 2;
    c.key_dim = 8;
    c.value_dim = 12;
    c.ffn_dim = 10;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

// A config's TrainOps: names only buffers of its architecture (width > 0).
class RecordingOps final : public TrainOps {
public:
    explicit RecordingOps(const ModelConfig& c) : c_(c) {}
    std::set<std::pair<int, int>> written;           // (name, layer)
    std::map<std::pair<int, int>, int> weight_grads;  // (layer, Weight) → backward ops that fed it
    std::vector<uint64_t> dropout_bases;             // in call order
    std::vector<double> rotary_scales;               // of project_heads, in call order
    std::set<double> rotary_bases;                   // of the rotated projections
    int embed_grads = 0, head_norm_grads = 0, attention_grads = 0, zeroed_gradient = 0, losses = 0;
    bool loss_gradient = false;

    void embed(Act x) override { write(x); }
    void embed_backward(Act dx) override { read(dx); ++embed_grads; }
    void dropout(Act in, Act out, const DropoutSite& site) override {
        read(in); write(out);
        dropout_bases.push_back(site.base);
    }
    void rms_norm(Act x, int, Weight, Act y, Act rstd) override { read(x); write(y); write(rstd); }
    void rms_norm_backward(Act x, int layer, Weight w, Act rstd, Act dy, Act dx) override {
        read(x); read(rstd); read(dy); read(dx);  // dx accumulates
        grad(layer, w);
    }
    void linear(Act x, int, Weight, Act y) override { read(x); write(y); }
    void linear_backward(Act x, int layer, Weight w, Act dy, Act dx, bool accumulate) override {
        read(x); read(dy);
        accumulate ? read(dx) : write(dx);
        grad(layer, w);
    }
    void residual_branch(Act residual, Act x, int, Weight, const DropoutSite& site, Act out) override {
        read(residual); read(x); write(out);
        if (site.rate > 0) dropout_bases.push_back(site.base);
    }
    void project_heads(Act x, int, Weight, const HeadRotary& rotary, Act heads) override {
        read(x); write(heads);
        rotary_scales.push_back(rotary.apply ? rotary.scale : 0.0);
        if (rotary.apply) rotary_bases.insert(rotary.base);
    }
    void project_heads_backward(Act x, int layer, Weight w, const HeadRotary&, Act dheads, Act dx,
                                bool accumulate) override {
        linear_backward(x, layer, w, dheads, dx, accumulate);
    }
    void retention(Act q, Act k, Act v, Act o) override { read(q); read(k); read(v); write(o); }
    void retention_backward(Act q, Act k, Act v, Act d_o, Act dq, Act dk, Act dv) override {
        read(q); read(k); read(v); read(d_o); write(dq); write(dk); write(dv);
    }
    void attention(Act q, Act k, Act v, Act o, Act lse) override { read(q); read(k); read(v); write(o); write(lse); }
    void attention_backward(Act q, Act k, Act v, Act o, Act lse, Act d_o, Act dq, Act dk, Act dv) override {
        read(q); read(k); read(v); read(o); read(lse); read(d_o); write(dq); write(dk); write(dv);
        ++attention_grads;
    }
    void head_norm_gate(Act o, Act g, int, Act y, Act rstd) override { read(o); read(g); write(y); write(rstd); }
    void head_norm_gate_backward(Act o, Act g, int, Act rstd, Act dy, Act d_o, Act dg) override {
        read(o); read(g); read(rstd); read(dy); write(d_o); write(dg);
        ++head_norm_grads;
    }
    void glu(Act a, Act b, Act h) override { read(a); read(b); write(h); }
    void glu_backward(Act a, Act b, Act dh, Act da, Act db) override { read(a); read(b); read(dh); write(da); write(db); }
    void cross_entropy(Act logits, std::optional<Act> dlogits, double) override {
        read(logits);
        if (dlogits) write(*dlogits);
        loss_gradient = dlogits.has_value();
        ++losses;
    }
    void zero(Act x) override { write(x); }
    void zero_gradient() override { ++zeroed_gradient; }

private:
    static std::pair<int, int> key(Act a) { return {static_cast<int>(a.name), a.layer}; }
    void read(Act a) const {
        EXPECT_EQ(per_layer(a.name), a.layer >= 0) << "buffer " << static_cast<int>(a.name);
        EXPECT_GT(buffer_width(c_, a.name), 0) << "buffer " << static_cast<int>(a.name) << " is not the model's";
        EXPECT_TRUE(written.count(key(a))) << "buffer " << static_cast<int>(a.name) << " of layer " << a.layer
                                           << " read before it was written";
        // A device may keep one buffer for all layers of these: the last write must be this layer's.
        if (recomputed_in_backward(a.name)) {
            EXPECT_EQ(last_writer.at(static_cast<int>(a.name)), a.layer)
                << "shared buffer " << static_cast<int>(a.name) << " read at layer " << a.layer
                << " holds another layer's values";
        }
    }
    void write(Act a) {
        EXPECT_EQ(per_layer(a.name), a.layer >= 0) << "buffer " << static_cast<int>(a.name);
        EXPECT_GT(buffer_width(c_, a.name), 0) << "buffer " << static_cast<int>(a.name) << " is not the model's";
        written.insert(key(a));
        last_writer[static_cast<int>(a.name)] = a.layer;
    }
    void grad(int layer, Weight w) {
        EXPECT_EQ(zeroed_gradient, 1) << "a weight gradient before the gradient was zeroed";
        ++weight_grads[{layer, static_cast<int>(w)}];
    }

    const ModelConfig c_;
    std::map<int, int> last_writer;  // name → layer of its latest write
};

}  // namespace

TEST(TrainPass, ForwardWritesEveryActivationBeforeItIsRead) {
    const ModelConfig c = small_config();
    RecordingOps ops(c);
    train_forward(ops, c, 6, {}, false);
    for (int l = 0; l < c.n_layers; ++l)
        for (int b = 0; b < kLayerBufs; ++b) {
            if (buffer_width(c, static_cast<Buf>(b)) == 0) continue;  // Lse is the twin's
            EXPECT_TRUE(ops.written.count({b, l})) << "buffer " << b << " layer " << l;
        }
    EXPECT_EQ(ops.losses, 1);
    EXPECT_FALSE(ops.loss_gradient);
    EXPECT_TRUE(ops.dropout_bases.empty());
    // Per layer q (rotated, times Dk^−½ = 0.5 for Dk 4), k (rotated), v (not rotated).
    ASSERT_EQ(ops.rotary_scales.size(), 3u * c.n_layers);
    EXPECT_EQ(ops.rotary_scales[0], 0.5);
    EXPECT_EQ(ops.rotary_scales[1], 1.0);
    EXPECT_EQ(ops.rotary_scales[2], 0.0);
    EXPECT_EQ(ops.rotary_bases, std::set<double>{10000.0});  // fla's
}

TEST(TrainPass, BackwardFeedsEveryParameterTensorExactlyOnce) {
    const ModelConfig c = small_config();
    RecordingOps ops(c);
    train_forward(ops, c, 6, {}, true);
    EXPECT_TRUE(ops.loss_gradient);
    train_backward(ops, c, {});
    EXPECT_EQ(ops.zeroed_gradient, 1);
    EXPECT_EQ(ops.embed_grads, 1);
    EXPECT_EQ(ops.head_norm_grads, c.n_layers);
    std::map<std::pair<int, int>, int> expected{{{-1, static_cast<int>(Weight::FinalNorm)}, 1},
                                                {{-1, static_cast<int>(Weight::Output)}, 1}};
    for (int l = 0; l < c.n_layers; ++l)
        for (Weight w : {Weight::AttnNorm, Weight::Q, Weight::K, Weight::V, Weight::G, Weight::O, Weight::FfnNorm,
                         Weight::FfnAct, Weight::FfnLin, Weight::FfnOut})
            expected[{l, static_cast<int>(w)}] = 1;
    EXPECT_EQ(ops.weight_grads, expected);
}

TEST(TrainPass, DropoutMasksAreTheSitesOfTheMaskFunctionInBothDirections) {
    const ModelConfig c = small_config();
    const PassDropout dropout{0.25, 1234};
    RecordingOps ops(c);
    train_forward(ops, c, 6, dropout, true);
    std::vector<uint64_t> forward{dropout_site_base(dropout.seed, dropout_site_embedding)};
    for (int l = 0; l < c.n_layers; ++l) {
        forward.push_back(dropout_site_base(dropout.seed, dropout_site_retention(l)));
        forward.push_back(dropout_site_base(dropout.seed, dropout_site_ffn(l)));
    }
    EXPECT_EQ(ops.dropout_bases, forward);
    ops.dropout_bases.clear();
    train_backward(ops, c, dropout);
    EXPECT_EQ(ops.dropout_bases, std::vector<uint64_t>(forward.rbegin(), forward.rend()));
    RecordingOps bad(c);
    EXPECT_THROW(train_forward(bad, c, 6, {1.0, 0}, true), Error);
}

TEST(TrainPass, NamesMapToTheLayoutAndTheirWidths) {
    ModelConfig c = small_config();
    c.tie_embeddings = false;
    const ParamLayout layout = make_param_layout(c);
    EXPECT_EQ(param_offset(layout, 1, Weight::Q), layout.layers[1].q_proj);
    EXPECT_EQ(param_offset(layout, 2, Weight::FfnOut), layout.layers[2].ffn_out);
    EXPECT_EQ(param_offset(layout, -1, Weight::Output), layout.lm_head);
    EXPECT_EQ(param_offset(layout, -1, Weight::FinalNorm), layout.final_norm);
    EXPECT_THROW(param_offset(layout, 3, Weight::Q), Error);
    EXPECT_THROW(param_offset(layout, 0, Weight::EmbedNorm), Error);
    EXPECT_EQ(buffer_width(c, Buf::Q), 8);
    EXPECT_EQ(buffer_width(c, Buf::DV), 12);
    EXPECT_EQ(buffer_width(c, Buf::RstdH), 2);
    EXPECT_EQ(buffer_width(c, Buf::Hidden), 10);
    EXPECT_EQ(buffer_width(c, Buf::DLogits), 11);
    EXPECT_EQ(buffer_width(c, Buf::Rstd1), 1);
    EXPECT_EQ(buffer_width(c, Buf::DBranch), 8);
}

// The twin's pass: attention in place of retention, gate and head norm; the buffers it names are
// its own (RecordingOps checks every width), rotated with its rope_theta.
TEST(TrainPass, TwinPassUsesAttentionAndItsOwnBuffers) {
    ModelConfig c = small_config();
    c.architecture = Architecture::Transformer;
    c.value_dim = c.key_dim;
    c.head_norm_affine = false;
    c.rope_theta = 500.0;
    for (Buf b : {Buf::G, Buf::RstdH, Buf::Y, Buf::DG, Buf::DY}) EXPECT_EQ(buffer_width(c, b), 0);
    EXPECT_EQ(buffer_width(c, Buf::Lse), c.n_heads);
    EXPECT_EQ(buffer_width(small_config(), Buf::Lse), 0);
    RecordingOps ops(c);
    train_forward(ops, c, 6, {0.25, 7}, true);
    for (int l = 0; l < c.n_layers; ++l) {
        EXPECT_TRUE(ops.written.count({static_cast<int>(Buf::Lse), l}));
        EXPECT_TRUE(ops.written.count({static_cast<int>(Buf::O), l}));
    }
    EXPECT_EQ(ops.rotary_bases, std::set<double>{500.0});
    EXPECT_EQ(ops.dropout_bases.size(), 1u + 2u * c.n_layers);
    train_backward(ops, c, {0.25, 7});
    EXPECT_EQ(ops.attention_grads, c.n_layers);
    EXPECT_EQ(ops.head_norm_grads, 0);
    std::map<std::pair<int, int>, int> expected{{{-1, static_cast<int>(Weight::FinalNorm)}, 1},
                                                {{-1, static_cast<int>(Weight::Output)}, 1}};
    for (int l = 0; l < c.n_layers; ++l)
        for (Weight w : {Weight::AttnNorm, Weight::Q, Weight::K, Weight::V, Weight::O, Weight::FfnNorm, Weight::FfnAct,
                         Weight::FfnLin, Weight::FfnOut})
            expected[{l, static_cast<int>(w)}] = 1;
    EXPECT_EQ(ops.weight_grads, expected);
}
