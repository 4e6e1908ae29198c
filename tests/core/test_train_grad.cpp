// SPDX-License-Identifier: GPL-3.0-or-later
// Every training op's backward, and the whole model's gradient, against central finite
// differences in double precision. The fourth-order stencil's truncation error is O(h⁴·f⁽⁵⁾):
// on the tiny model with dropout (the most curved case) it measured 3.0e-5 at h = 1e-4 and 1.9e-6
// at h = 5e-5 (the h⁴ law), so h = 2.5e-5 leaves ~1e-7; the rounding error O(ε·|f|/h) is ~1e-10.
// The tolerance 1e-6 (relative to max(1, |g|)) leaves margin yet catches any wrong term (a missing
// factor or term shows up at 1e-2 or more).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "retnet/error.h"
#include "retnet/train.h"
#include "train_float_check.h"
#include "retnet/cpu_ops.h"

using namespace retnet;
using namespace retnet::train;
using Vec = std::vector<double>;

namespace {

constexpr double kStep = 2.5e-5;
constexpr double kTolerance = 1e-6;

Vec random_vec(size_t n, std::mt19937_64& rng, double scale = 1.0, double mean = 0.0) {
    std::normal_distribution<double> dist(mean, scale);
    Vec v(n);
    for (double& x : v) x = dist(rng);
    return v;
}

double dot(const Vec& a, const Vec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

// Checks `analytic` = ∂f/∂x by central differences; returns the largest scaled error.
double check_gradient(Vec& x, const Vec& analytic, const std::function<double()>& f,
                      const char* what) {
    EXPECT_EQ(x.size(), analytic.size()) << what;
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        auto at = [&](double offset) {
            x[i] = saved + offset;
            return f();
        };
        const double numeric =
            (8 * (at(kStep) - at(-kStep)) - (at(2 * kStep) - at(-2 * kStep))) / (12 * kStep);
        x[i] = saved;
        const double err = std::abs(numeric - analytic[i]) / std::max(1.0, std::abs(numeric));
        worst = std::max(worst, err);
        EXPECT_LT(err, kTolerance) << what << "[" << i << "]: analytic " << analytic[i]
                                   << ", numeric " << numeric;
    }
    return worst;
}

void report(const char* what, double err) { std::printf("  [grad-check] %-40s max scaled error %.2e\n", what, err); }

}  // namespace

TEST(TrainGrad, RmsNorm) {
    std::mt19937_64 rng(1);
    const int64_t rows = 3, dim = 5;
    Vec x = random_vec(rows * dim, rng), w = random_vec(dim, rng, 0.5, 1.0);
    const Vec c = random_vec(rows * dim, rng);
    auto f = [&] {
        Vec y(x.size()), rstd(rows);
        cpu::rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-6, y.data(), rstd.data());
        return dot(y, c);
    };
    Vec y(x.size()), rstd(rows), dx(x.size(), 0.0), dw(dim, 0.0);
    cpu::rmsnorm_forward(x.data(), w.data(), rows, dim, 1e-6, y.data(), rstd.data());
    cpu::rmsnorm_backward(x.data(), w.data(), rstd.data(), c.data(), rows, dim, dx.data(), dw.data());
    report("rmsnorm dx", check_gradient(x, dx, f, "dx"));
    report("rmsnorm dw", check_gradient(w, dw, f, "dw"));
}

TEST(TrainGrad, Linear) {
    std::mt19937_64 rng(2);
    const int64_t rows = 4, in = 3, out = 5;
    Vec x = random_vec(rows * in, rng), W = random_vec(out * in, rng);
    const Vec c = random_vec(rows * out, rng);
    auto f = [&] {
        Vec y(rows * out);
        cpu::linear_forward(x.data(), W.data(), rows, in, out, y.data());
        return dot(y, c);
    };
    Vec dx(x.size(), 7.0), dW(W.size(), 0.0);  // dx garbage: must be overwritten
    cpu::linear_backward(x.data(), W.data(), c.data(), rows, in, out, dx.data(), false, dW.data());
    report("linear dx", check_gradient(x, dx, f, "dx"));
    report("linear dW", check_gradient(W, dW, f, "dW"));
}

// Both pair layouts (torchscale interleaved, fla half-split), from position 0 and from a later
// one (the inference backend rotates at absolute positions).
TEST(TrainGrad, Rotary) {
    for (cpu::RotaryPairs pairs : {cpu::RotaryPairs::HalfSplit, cpu::RotaryPairs::Interleaved}) {
        for (int64_t pos0 : {0, 5}) {
            std::mt19937_64 rng(static_cast<uint64_t>(3 + pos0));
            const cpu::RotaryShape shape{2, 3, 2, 4};  // B, T, H, Dk
            const std::vector<float> theta = default_rotary_theta(Family::Fla, 4);
            Vec x = random_vec(2 * 3 * 2 * 4, rng);
            const Vec c = random_vec(x.size(), rng);
            auto f = [&] {
                Vec y = x;
                cpu::rotary_forward(y.data(), shape, theta.data(), pairs, 0.5, pos0);
                return dot(y, c);
            };
            Vec dx = c;
            cpu::rotary_backward(dx.data(), shape, theta.data(), pairs, 0.5, pos0);
            report(pairs == cpu::RotaryPairs::HalfSplit ? "rotary (half-split)" : "rotary (interleaved)",
                   check_gradient(x, dx, f, "dx"));
            Vec y = x;
            cpu::rotary_forward(y.data(), shape, theta.data(), pairs, 0.5, pos0);
            if (pos0 == 0) {  // position 0 is not rotated, only scaled
                for (int64_t i = 0; i < 2 * 4; ++i) EXPECT_DOUBLE_EQ(y[static_cast<size_t>(i)], 0.5 * x[static_cast<size_t>(i)]);
                continue;
            }
            // Pair 0 of head 0 at position 5: the angle 5·θ₀ on coordinates (0, 2) or (0, 1).
            const size_t b = pairs == cpu::RotaryPairs::HalfSplit ? 2 : 1;
            const double angle = static_cast<double>(cpu::rotary_angle(5, theta[0]));
            EXPECT_NEAR(y[0], 0.5 * (x[0] * std::cos(angle) - x[b] * std::sin(angle)), 1e-14);
            EXPECT_NEAR(y[b], 0.5 * (x[b] * std::cos(angle) + x[0] * std::sin(angle)), 1e-14);
        }
    }
}

class RetentionGrad : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(RetentionGrad, MatchesFiniteDifferences) {
    // Not a structured binding: clang before 16 cannot capture those in the lambda below.
    const int T = GetParam().first, chunk = GetParam().second;
    std::mt19937_64 rng(static_cast<uint64_t>(100 + T * 10 + chunk));
    const int64_t B = 2, H = 2, Dk = 4, Dv = 3;
    const cpu::RetentionShape shape{B, T, H, Dk, Dv};
    // Strong decays so that every γ power matters at these tiny lengths.
    const std::vector<float> log_decay = {std::log(0.9f), std::log(0.6f)};
    Vec q = random_vec(B * T * H * Dk, rng), k = random_vec(q.size(), rng),
        v = random_vec(B * T * H * Dv, rng);
    const Vec c = random_vec(v.size(), rng);
    auto f = [&] {
        Vec o(v.size());
        cpu::retention_forward(q.data(), k.data(), v.data(), shape, log_decay.data(), chunk, o.data());
        return dot(o, c);
    };
    // The chunkwise output equals the parallel one.
    Vec o_par(v.size()), o_chunk(v.size());
    cpu::retention_forward(q.data(), k.data(), v.data(), shape, log_decay.data(), 0, o_par.data());
    cpu::retention_forward(q.data(), k.data(), v.data(), shape, log_decay.data(), chunk, o_chunk.data());
    for (size_t i = 0; i < o_par.size(); ++i) EXPECT_NEAR(o_chunk[i], o_par[i], 1e-12);
    // And the parallel one equals the definition o_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m.
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < T; ++n)
                for (int64_t e = 0; e < Dv; ++e) {
                    double s = 0;
                    for (int64_t m = 0; m <= n; ++m) {
                        double qk = 0;
                        for (int64_t j = 0; j < Dk; ++j)
                            qk += q[((b * T + n) * H + h) * Dk + j] * k[((b * T + m) * H + h) * Dk + j];
                        s += std::exp((n - m) * static_cast<double>(log_decay[h])) * qk *
                             v[((b * T + m) * H + h) * Dv + e];
                    }
                    EXPECT_NEAR(o_par[((b * T + n) * H + h) * Dv + e], s, 1e-12);
                }
    Vec dq(q.size(), 9.0), dk(k.size(), 9.0), dv(v.size(), 9.0);
    cpu::retention_backward(q.data(), k.data(), v.data(), c.data(), shape, log_decay.data(), chunk,
                            dq.data(), dk.data(), dv.data());
    const std::string name = "retention T=" + std::to_string(T) + " chunk=" + std::to_string(chunk);
    double err = check_gradient(q, dq, f, "dq");
    err = std::max(err, check_gradient(k, dk, f, "dk"));
    err = std::max(err, check_gradient(v, dv, f, "dv"));
    report(name.c_str(), err);
}

INSTANTIATE_TEST_SUITE_P(Forms, RetentionGrad,
                         ::testing::Values(std::pair{1, 0}, std::pair{1, 2}, std::pair{5, 0},
                                           std::pair{7, 0}, std::pair{7, 2}, std::pair{7, 3},
                                           std::pair{8, 4}, std::pair{5, 16}));

TEST(TrainGrad, HeadNormGate) {
    for (bool with_weight : {true, false}) {
        std::mt19937_64 rng(with_weight ? 4 : 5);
        const int64_t rows = 3, H = 2, Dv = 4;
        Vec o = random_vec(rows * H * Dv, rng), g = random_vec(o.size(), rng),
            w = random_vec(Dv, rng, 0.5, 1.0);
        const Vec c = random_vec(o.size(), rng);
        const double* wp = with_weight ? w.data() : nullptr;
        auto f = [&] {
            Vec y(o.size()), rstd(rows * H);
            cpu::head_norm_gate_forward(o.data(), g.data(), with_weight ? w.data() : nullptr, rows, H, Dv,
                                        1e-6, y.data(), rstd.data());
            return dot(y, c);
        };
        Vec y(o.size()), rstd(rows * H), d_o(o.size()), dg(o.size()), dw(Dv, 0.0);
        cpu::head_norm_gate_forward(o.data(), g.data(), wp, rows, H, Dv, 1e-6, y.data(), rstd.data());
        cpu::head_norm_gate_backward(o.data(), g.data(), wp, rstd.data(), c.data(), rows, H, Dv, d_o.data(),
                                     dg.data(), with_weight ? dw.data() : nullptr);
        report(with_weight ? "head norm+gate d_o (weight)" : "head norm+gate d_o (no weight)",
               check_gradient(o, d_o, f, "d_o"));
        report("head norm+gate dg", check_gradient(g, dg, f, "dg"));
        if (with_weight) report("head norm+gate dw", check_gradient(w, dw, f, "dw"));
    }
}

TEST(TrainGrad, Glu) {
    for (Activation act : {Activation::Swish, Activation::Gelu}) {
        std::mt19937_64 rng(6);
        const int64_t n = 12;
        Vec a = random_vec(n, rng, 2.0), b = random_vec(n, rng);
        const Vec c = random_vec(n, rng);
        auto f = [&] {
            Vec h(n);
            cpu::glu_forward(a.data(), b.data(), n, act, h.data());
            return dot(h, c);
        };
        Vec da(n), db(n);
        cpu::glu_backward(a.data(), b.data(), c.data(), n, act, da.data(), db.data());
        const bool swish = act == Activation::Swish;
        report(swish ? "swiglu da" : "geglu da", check_gradient(a, da, f, "da"));
        report(swish ? "swiglu db" : "geglu db", check_gradient(b, db, f, "db"));
    }
}

TEST(TrainGrad, CrossEntropy) {
    std::mt19937_64 rng(7);
    const int64_t rows = 4, V = 6;
    Vec logits = random_vec(rows * V, rng, 3.0);
    const std::vector<int32_t> targets = {0, 5, 2, 2};
    auto f = [&] { return cpu::cross_entropy<double>(logits.data(), targets.data(), rows, V, nullptr, 1.0) / rows; };
    Vec dl(logits.size());
    const double loss = cpu::cross_entropy(logits.data(), targets.data(), rows, V, dl.data(), 1.0 / rows) / rows;
    // Uniform logits give exactly log V.
    Vec flat(rows * V, 0.25);
    EXPECT_NEAR(cpu::cross_entropy<double>(flat.data(), targets.data(), rows, V, nullptr, 1.0) / rows,
                std::log(6.0), 1e-14);
    EXPECT_GT(loss, 0.0);
    report("cross-entropy", check_gradient(logits, dl, f, "dlogits"));
}

namespace {

ModelConfig tiny_config(bool tied) {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 8;
    c.value_dim = 12;
    c.ffn_dim = 10;
    c.tie_embeddings = tied;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

// Weights well away from the 0.02 init so that every path carries a sizeable gradient; the norm
// weights (the 1-D tensors) around 1.
Vec model_params(const ParamLayout& layout, std::mt19937_64& rng) {
    Vec params = random_vec(static_cast<size_t>(layout.total), rng, 0.4);
    for (const ParamTensor& t : layout.tensors)
        if (t.shape.size() == 1)
            for (int64_t i = 0; i < t.size; ++i) params[static_cast<size_t>(t.offset + i)] += 1.0;
    return params;
}

}  // namespace

class ModelGrad : public ::testing::TestWithParam<std::tuple<bool, int, int>> {};

TEST_P(ModelGrad, WholeModelMatchesFiniteDifferences) {
    const bool tied = std::get<0>(GetParam());
    const int T = std::get<1>(GetParam()), chunk = std::get<2>(GetParam());
    const ModelConfig config = tiny_config(tied);
    const ParamLayout layout = make_param_layout(config);
    std::mt19937_64 rng(42);
    Vec params = model_params(layout, rng);
    const int B = 2;
    std::uniform_int_distribution<int32_t> tok(0, config.vocab_size - 1);
    std::vector<int32_t> inputs(static_cast<size_t>(B * T)), targets(inputs.size());
    for (auto& x : inputs) x = tok(rng);
    for (auto& x : targets) x = tok(rng);
    const BatchView batch{inputs.data(), targets.data(), B, T};
    LossOptions options;
    options.chunk = chunk;
    Vec grad(params.size());
    const double loss = loss_and_gradient<double>(config, layout, params.data(), batch, grad.data(), options);
    EXPECT_GT(loss, 0.0);
    auto f = [&] { return loss_and_gradient<double>(config, layout, params.data(), batch, nullptr, options); };
    EXPECT_DOUBLE_EQ(f(), loss);
    const std::string name = std::string("model ") + (tied ? "tied" : "untied") + " T=" + std::to_string(T) +
                             " chunk=" + std::to_string(chunk);
    report(name.c_str(), check_gradient(params, grad, f, name.c_str()));
}

INSTANTIATE_TEST_SUITE_P(Configs, ModelGrad,
                         ::testing::Values(std::tuple{false, 5, 0}, std::tuple{true, 5, 2},
                                           std::tuple{false, 1, 0}, std::tuple{false, 7, 3}));

TEST(TrainGrad, WholeModelWithDropoutMatchesFiniteDifferences) {
    // Dropout masks depend only on (seed, site, element), so the loss is a fixed function of the
    // weights for a given seed and finite differences apply.
    const ModelConfig config = tiny_config(false);
    const ParamLayout layout = make_param_layout(config);
    std::mt19937_64 rng(44);
    Vec params = model_params(layout, rng);
    std::vector<int32_t> inputs = {1, 4, 7, 2, 9, 3, 0, 5, 10, 6}, targets = {4, 7, 2, 9, 3, 0, 5, 10, 6, 8};
    const BatchView batch{inputs.data(), targets.data(), 2, 5};
    LossOptions options;
    options.dropout = 0.3;
    options.dropout_seed = 99;
    Vec grad(params.size());
    const double loss = loss_and_gradient<double>(config, layout, params.data(), batch, grad.data(), options);
    auto f = [&] { return loss_and_gradient<double>(config, layout, params.data(), batch, nullptr, options); };
    EXPECT_DOUBLE_EQ(f(), loss);
    // The masks do something: another seed or no dropout give another loss.
    LossOptions other = options;
    other.dropout_seed = 100;
    EXPECT_NE(loss_and_gradient<double>(config, layout, params.data(), batch, nullptr, other), loss);
    EXPECT_NE(loss_and_gradient<double>(config, layout, params.data(), batch, nullptr, {}), loss);
    report("model with dropout 0.3", check_gradient(params, grad, f, "dropout"));
}

TEST(TrainGrad, FloatGradientMatchesDouble) {
    // The float instantiation (what training runs) against the double one on the same weights.
    const ModelConfig config = tiny_config(false);
    const ParamLayout layout = make_param_layout(config);
    std::mt19937_64 rng(43);
    Vec params = random_vec(static_cast<size_t>(layout.total), rng, 0.4);
    test::expect_float_gradient_matches_double(config, layout, params, "RetNet");
}

TEST(TrainLayout, RoundTripsThroughModel) {
    const ModelConfig config = tiny_config(false);
    const Model model = make_random_model(config, 3);
    const ParamLayout layout = make_param_layout(config);
    EXPECT_EQ(layout.total, model.parameter_count());
    std::vector<float> flat = flatten_weights(model, layout);
    Model copy = make_empty_model(config);
    unflatten_weights(flat, layout, copy);
    EXPECT_EQ(copy.weights.layers[1].ffn_out.data, model.weights.layers[1].ffn_out.data);
    EXPECT_EQ(copy.weights.lm_head.data, model.weights.lm_head.data);
    EXPECT_EQ(layout.tensors.back().name, "lm_head.weight");
    const ParamLayout tied = make_param_layout(tiny_config(true));
    EXPECT_EQ(tied.lm_head, tied.embed);
}

TEST(TrainLayout, RejectsTorchScale) {
    ModelConfig c = tiny_config(false);
    c.family = Family::TorchScale;
    c.key_dim = c.d_model;
    EXPECT_THROW(make_param_layout(c), retnet::Error);
}
