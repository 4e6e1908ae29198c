// SPDX-License-Identifier: GPL-3.0-or-later
// Training the Transformer twin (docs/transformer.md, docs/training.md): the causal attention's
// forward against a naive loop and its backward against finite differences (double), the whole
// twin's gradient against finite differences, float against double, the trainer's logits against
// the inference engine (rope_theta ≠ 10000, so the rotary base is the twin's), the Llama names of
// the layout, and the loop end to end: the loss falls, a resumed run is bit-identical, and a
// trained twin loads as a Llama directory whose loss equals the trainer's.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "retnet/cpu_ops.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"
#include "retnet/train.h"
#include "train_float_check.h"
#include "retnet/train_ops.h"
#include "retnet/train_device.h"
#include "retnet/trainer.h"
#include "test_models.h"
#include "test_robustness_util.h"
#include "test_train_workspace.h"

namespace fs = std::filesystem;
using namespace retnet;
using namespace retnet::train;
using Vec = std::vector<double>;

namespace {

// The fourth-order central difference of test_train_grad.cpp (its step and tolerance, justified
// there: truncation ~1e-7, rounding ~1e-10 at h = 2.5e-5, any wrong term ≥ 1e-2).
constexpr double kStep = 2.5e-5;
constexpr double kTolerance = 1e-6;

Vec random_vec(size_t n, std::mt19937_64& rng, double scale = 1.0) {
    std::normal_distribution<double> dist(0.0, scale);
    Vec v(n);
    for (double& x : v) x = dist(rng);
    return v;
}

double dot(const Vec& a, const Vec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

double check_gradient(Vec& x, const Vec& analytic, const std::function<double()>& f, const std::string& what) {
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        auto at = [&](double offset) {
            x[i] = saved + offset;
            return f();
        };
        const double numeric = (8 * (at(kStep) - at(-kStep)) - (at(2 * kStep) - at(-2 * kStep))) / (12 * kStep);
        x[i] = saved;
        const double err = std::abs(numeric - analytic[i]) / std::max(1.0, std::abs(numeric));
        worst = std::max(worst, err);
        EXPECT_LT(err, kTolerance) << what << "[" << i << "]: analytic " << analytic[i] << ", numeric " << numeric;
    }
    std::printf("  [grad-check] %-44s max scaled error %.2e\n", what.c_str(), worst);
    return worst;
}

// o_n = Σ_{m≤n} softmax_m(q_n·k_m) v_m by plain loops, one (sequence, head, row) at a time.
void naive_attention(const Vec& q, const Vec& k, const Vec& v, const cpu::AttentionShape& s, Vec& o, Vec& lse) {
    const int64_t H = s.n_heads, D = s.head_dim, ld = H * D;
    o.assign(q.size(), 0.0);
    lse.assign(static_cast<size_t>(s.batch * s.seq_len * H), 0.0);
    for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < s.seq_len; ++n) {
                const auto row = [&](const Vec& x, int64_t t) { return x.data() + (b * s.seq_len + t) * ld + h * D; };
                Vec score(static_cast<size_t>(n + 1));
                double mx = -INFINITY, sum = 0;
                for (int64_t m = 0; m <= n; ++m) {
                    double d = 0;
                    for (int64_t e = 0; e < D; ++e) d += row(q, n)[e] * row(k, m)[e];
                    score[static_cast<size_t>(m)] = d;
                    mx = std::max(mx, d);
                }
                for (double& x : score) sum += x = std::exp(x - mx);
                double* out = o.data() + (b * s.seq_len + n) * ld + h * D;
                for (int64_t m = 0; m <= n; ++m)
                    for (int64_t e = 0; e < D; ++e) out[e] += score[static_cast<size_t>(m)] / sum * row(v, m)[e];
                lse[static_cast<size_t>((b * s.seq_len + n) * H + h)] = mx + std::log(sum);
            }
}

// The twin of a tiny RetNet: d 8, H 2 (D 4), L 2, V 11; rope_theta 100 (not the default 10000) so
// that a rotary built from the wrong base shows.
ModelConfig tiny_twin(bool tied) {
    ModelConfig c;
    c.architecture = Architecture::Transformer;
    c.family = Family::Fla;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = c.value_dim = 8;
    c.ffn_dim = 10;
    c.head_norm_affine = false;
    c.tie_embeddings = tied;
    c.rope_theta = 100.0;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

// Weights well away from the 0.02 init, so the softmax is far from uniform; norm weights near 1.
Vec model_params(const ParamLayout& layout, std::mt19937_64& rng) {
    Vec params = random_vec(static_cast<size_t>(layout.total), rng, 0.4);
    for (const ParamTensor& t : layout.tensors)
        if (t.shape.size() == 1)
            for (int64_t i = 0; i < t.size; ++i) params[static_cast<size_t>(t.offset + i)] += 1.0;
    return params;
}

}  // namespace

struct AttentionCase {
    int batch, seq_len;
};

class TwinAttention : public ::testing::TestWithParam<AttentionCase> {};

// T = 1, odd T, several sequences, and T past the 64-row query tile (70, 130: two and three tiles).
TEST_P(TwinAttention, ForwardMatchesTheNaiveLoop) {
    const cpu::AttentionShape s{GetParam().batch, GetParam().seq_len, 2, 4};
    std::mt19937_64 rng(static_cast<uint64_t>(7 + s.seq_len));
    const size_t n = static_cast<size_t>(s.batch * s.seq_len * s.n_heads * s.head_dim);
    const Vec q = random_vec(n, rng, 1.5), k = random_vec(n, rng, 1.5), v = random_vec(n, rng);
    Vec o(n), lse(static_cast<size_t>(s.batch * s.seq_len * s.n_heads)), o_ref, lse_ref;
    cpu::causal_attention_forward(q.data(), k.data(), v.data(), s, o.data(), lse.data());
    naive_attention(q, k, v, s, o_ref, lse_ref);
    // The same double sums in another order: a few ulps of values of order 1.
    for (size_t i = 0; i < n; ++i) EXPECT_NEAR(o[i], o_ref[i], 1e-13) << i;
    for (size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(lse[i], lse_ref[i], 1e-13) << i;
}

TEST_P(TwinAttention, BackwardMatchesFiniteDifferences) {
    const cpu::AttentionShape s{GetParam().batch, GetParam().seq_len, 2, 4};
    if (s.seq_len > 70) GTEST_SKIP() << "the forward test covers three tiles; two suffice here";
    std::mt19937_64 rng(static_cast<uint64_t>(17 + s.seq_len));
    const size_t n = static_cast<size_t>(s.batch * s.seq_len * s.n_heads * s.head_dim);
    Vec q = random_vec(n, rng, 1.5), k = random_vec(n, rng, 1.5), v = random_vec(n, rng);
    const Vec c = random_vec(n, rng);  // loss = Σ o·c
    Vec o(n), lse(static_cast<size_t>(s.batch * s.seq_len * s.n_heads));
    auto f = [&] {
        cpu::causal_attention_forward(q.data(), k.data(), v.data(), s, o.data(), lse.data());
        return dot(o, c);
    };
    f();
    Vec dq(n, 7.0), dk(n, 7.0), dv(n, 7.0);  // garbage: must be overwritten
    cpu::causal_attention_backward(q.data(), k.data(), v.data(), o.data(), lse.data(), c.data(), s, dq.data(),
                                   dk.data(), dv.data());
    const std::string name = "attention B=" + std::to_string(s.batch) + " T=" + std::to_string(s.seq_len);
    check_gradient(q, dq, f, name + " dq");
    check_gradient(k, dk, f, name + " dk");
    check_gradient(v, dv, f, name + " dv");
}

INSTANTIATE_TEST_SUITE_P(Shapes, TwinAttention,
                         ::testing::Values(AttentionCase{1, 1}, AttentionCase{3, 1}, AttentionCase{2, 5},
                                           AttentionCase{3, 7}, AttentionCase{1, 70}, AttentionCase{2, 130}));

class TwinGrad : public ::testing::TestWithParam<std::tuple<bool, int, double>> {};

// The whole twin's loss gradient, every parameter, against finite differences.
TEST_P(TwinGrad, WholeModelMatchesFiniteDifferences) {
    const auto [tied, T, dropout] = GetParam();
    const ModelConfig config = tiny_twin(tied);
    const ParamLayout layout = make_param_layout(config);
    std::mt19937_64 rng(42 + static_cast<uint64_t>(T));
    Vec params = model_params(layout, rng);
    const int B = 2;
    std::uniform_int_distribution<int32_t> tok(0, config.vocab_size - 1);
    std::vector<int32_t> inputs(static_cast<size_t>(B * T)), targets(inputs.size());
    for (auto& x : inputs) x = tok(rng);
    for (auto& x : targets) x = tok(rng);
    const BatchView batch{inputs.data(), targets.data(), B, T};
    LossOptions options;
    options.dropout = dropout;
    options.dropout_seed = 99;
    Vec grad(params.size());
    const double loss = loss_and_gradient<double>(config, layout, params.data(), batch, grad.data(), options);
    auto f = [&] { return loss_and_gradient<double>(config, layout, params.data(), batch, nullptr, options); };
    EXPECT_DOUBLE_EQ(f(), loss);
    check_gradient(params, grad, f,
                   std::string("twin ") + (tied ? "tied" : "untied") + " T=" + std::to_string(T) +
                       (dropout > 0 ? " dropout" : ""));
}

INSTANTIATE_TEST_SUITE_P(Configs, TwinGrad,
                         ::testing::Values(std::tuple{false, 5, 0.0}, std::tuple{true, 1, 0.0},
                                           std::tuple{false, 7, 0.3}));

TEST(TwinTrain, FloatGradientMatchesDouble) {
    const ModelConfig config = tiny_twin(false);
    const ParamLayout layout = make_param_layout(config);
    std::mt19937_64 rng(43);
    Vec params = model_params(layout, rng);
    test::expect_float_gradient_matches_double(config, layout, params, "twin");
}

TEST(TwinTrain, RefusesAChunkSize) {
    const ModelConfig config = tiny_twin(false);
    const ParamLayout layout = make_param_layout(config);
    const std::vector<double> params(static_cast<size_t>(layout.total), 0.1);
    std::vector<int32_t> tokens = {1, 2, 3};
    LossOptions options;
    options.chunk = 2;
    try {
        loss_and_gradient<double>(config, layout, params.data(), BatchView{tokens.data(), tokens.data(), 1, 3}, nullptr,
                                  options);
        FAIL() << "a chunk size was accepted for the twin";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "training: a chunk size applies to the RetNet's retention, not the Transformer twin's "
                               "attention");
    }
    EXPECT_THROW(CpuTrainDevice(config, layout, TrainDeviceOptions{4, 0.0}), Error);
}

// The layout's names and shapes are the ones save_model writes for a Llama directory, in order,
// and a flatten/unflatten round trip through a Model is exact.
TEST(TwinTrain, LayoutHasTheLlamaNamesOfTheSavedModel) {
    for (bool tied : {false, true}) {
        const ModelConfig config = tiny_twin(tied);
        const ParamLayout layout = make_param_layout(config);
        const Model model = make_random_model(config, 3);
        EXPECT_EQ(layout.total, model.parameter_count());
        EXPECT_EQ(layout.tensors.front().name, "model.embed_tokens.weight");
        EXPECT_EQ(layout.tensors[1].name, "model.layers.0.input_layernorm.weight");
        EXPECT_EQ(layout.tensors[5].name, "model.layers.0.self_attn.o_proj.weight");
        EXPECT_EQ(layout.tensors[6].name, "model.layers.0.post_attention_layernorm.weight");
        EXPECT_EQ(layout.layers[0].g_proj, -1);
        EXPECT_EQ(layout.layers[0].head_norm, -1);
        EXPECT_THROW(param_offset(layout, 0, Weight::G), Error);
        const fs::path dir = fs::temp_directory_path() / ("retnet_twin_layout_" + std::to_string(::getpid()));
        fs::remove_all(dir);
        save_model(model, dir.string());
        SafetensorsFile file((dir / "model.safetensors").string());
        std::set<std::string> saved, expected;
        for (const TensorInfo& t : file.tensors()) saved.insert(t.name);
        for (const ParamTensor& t : layout.tensors) {
            expected.insert(t.name);
            ASSERT_TRUE(file.contains(t.name)) << t.name;
            EXPECT_EQ(file.info(t.name).shape, t.shape) << t.name;
        }
        EXPECT_EQ(saved, expected);
        const std::vector<float> flat = flatten_weights(model, layout);
        Model copy = make_empty_model(config);
        unflatten_weights(flat, layout, copy);
        EXPECT_EQ(flatten_weights(copy, layout), flat);
        EXPECT_EQ(copy.weights.layers[1].o_proj.data, model.weights.layers[1].o_proj.data);
        // save_trained_weights writes what load_trained_weights reads back.
        save_trained_weights(config, layout, flat, (dir / "trained").string());
        const LoadedWeights back = load_trained_weights((dir / "trained").string());
        EXPECT_TRUE(back.config.is_transformer());
        EXPECT_EQ(back.config.rope_theta, 100.0);
        EXPECT_EQ(back.params, flat);
        fs::remove_all(dir);
    }
}

// The training forward computes the twin the inference engine runs: logits against the double
// reference backend (double trainer) and the float CPU backend (float trainer), T past one tile.
TEST(TwinTrain, LogitsMatchTheInferenceEngine) {
    ModelConfig retnet = test::small_config(Family::Fla);
    ModelConfig config = transformer_twin_config(retnet);
    config.rope_theta = 100.0;
    Model model = make_random_model(config, 11);
    for (LayerWeights& l : model.weights.layers)
        for (Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
            for (float& x : t->data) x *= 10.0f;  // scores of a few units: a peaked softmax
    const ParamLayout layout = make_param_layout(config);
    const std::vector<float> flat = flatten_weights(model, layout);
    const std::vector<double> flat_d(flat.begin(), flat.end());
    auto shared = std::make_shared<const Model>(std::move(model));
    for (int T : {1, 11, 70}) {
        const std::vector<int32_t> tokens = test::random_tokens(T, config.vocab_size, static_cast<uint64_t>(T));
        const std::vector<int32_t> targets(tokens.size(), 0);
        const BatchView batch{tokens.data(), targets.data(), 1, T};
        std::vector<double> logits;
        loss_and_gradient<double>(config, layout, flat_d.data(), batch, nullptr, {}, &logits);
        const Tensor ref = make_reference_backend(shared)->forward(tokens, ForwardOptions{});
        ASSERT_EQ(ref.numel(), static_cast<int64_t>(logits.size()));
        double scale = 0, err = 0;
        for (size_t i = 0; i < logits.size(); ++i) {
            scale = std::max(scale, std::abs(static_cast<double>(ref.data[i])));
            err = std::max(err, std::abs(logits[i] - ref.data[i]));
        }
        // Both double on the same float weights; the reference returns float logits: 2^-24 relative.
        EXPECT_LT(err, 1e-6 * std::max(1.0, scale)) << "T=" << T;
        EXPECT_GT(scale, 0.1);
        std::vector<float> logits_f;
        loss_and_gradient<float>(config, layout, flat.data(), batch, nullptr, {}, &logits_f);
        const Tensor cpu = make_cpu_backend(shared)->forward(tokens, ForwardOptions{});
        double err_f = 0;
        for (size_t i = 0; i < logits_f.size(); ++i)
            err_f = std::max(err_f, std::abs(static_cast<double>(logits_f[i]) - cpu.data[i]));
        // Two float computations in different orders: a few hundred roundings of 2^-24.
        EXPECT_LT(err_f, 1e-4 * std::max(1.0, scale)) << "T=" << T;
        std::printf("  twin training forward vs engine, T=%d: %.2e (double), %.2e (float), max |logit| %.2f\n", T, err,
                    err_f, scale);
    }
    // A trainer rotating with fla's base 10000 would differ by far more than the tolerance.
    ModelConfig wrong = config;
    wrong.rope_theta = 10000.0;
    const std::vector<int32_t> tokens = test::random_tokens(11, config.vocab_size, 11);
    const std::vector<int32_t> targets(tokens.size(), 0);
    std::vector<double> a, b;
    loss_and_gradient<double>(config, layout, flat_d.data(), BatchView{tokens.data(), targets.data(), 1, 11}, nullptr,
                              {}, &a);
    loss_and_gradient<double>(wrong, layout, flat_d.data(), BatchView{tokens.data(), targets.data(), 1, 11}, nullptr,
                              {}, &b);
    double diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
    EXPECT_GT(diff, 1e-2);
}

// ---- the training loop ---------------------------------------------------------------------------

namespace {

// The twin of the trainer tests' RetNet (d 32 × 2 layers, BPE 400 on 40,000 characters).
struct TwinWorkspace : test::TrainWorkspace {
    TwinWorkspace() : TrainWorkspace("retnet_train_twin", {40000, 400, 32, 2, 64}) {}

    TrainOptions options(const std::string& out) const {
        TrainOptions o;
        o.data_path = text.string();
        o.config_path = config.string();
        o.architecture = Architecture::Transformer;
        o.tokenizer_path = tokenizer.string();
        o.out_dir = (dir / out).string();
        o.batch = 4;
        o.seq_len = 32;
        o.lr = 1e-2;
        o.warmup = 5;
        o.eval_every = 0;
        o.save_every = 0;
        o.log_every = 1;
        o.eval_window = 64;
        o.threads = 2;
        return o;
    }
};

}  // namespace

// The loss falls, and best/ is a Llama directory the inference engine loads, whose loss over the
// validation windows equals the one the loop reported.
TEST(TwinTrainLoop, LossFallsAndTheSavedTwinRunsInTheEngine) {
    TwinWorkspace ws;
    TrainOptions o = ws.options("run");
    o.steps = 60;
    std::vector<double> losses, val;
    const TrainResult r = run_training(o, [&](const TrainProgress& p) {
        if (p.is_validation) val.push_back(p.val_loss);
        else if (p.message.empty()) losses.push_back(p.loss);
    });
    ASSERT_EQ(r.steps_done, 60);
    ASSERT_EQ(losses.size(), 60u);
    // Untrained, the loss is about log V (≈ 6.0); the unigram statistics alone bring it below 5.
    EXPECT_NEAR(losses.front(), std::log(400.0), 0.3);
    double last5 = 0;
    for (size_t i = losses.size() - 5; i < losses.size(); ++i) last5 += losses[i] / 5;
    EXPECT_LT(last5, losses.front() - 1.2);
    ASSERT_EQ(val.size(), 1u);
    EXPECT_LT(val[0], std::log(400.0) - 1.0);

    const fs::path best = fs::path(o.out_dir) / "best";
    const nlohmann::json config = nlohmann::json::parse(robustness::slurp(best / "config.json"));
    EXPECT_EQ(config["model_type"], "llama");
    EXPECT_EQ(config["intermediate_size"], transformer_twin_config(load_config(ws.config.string())).ffn_dim);
    auto model = std::make_shared<const Model>(load_model(best.string()));
    ASSERT_TRUE(model->config.is_transformer());
    const Tokenizer tok = Tokenizer::load((best / "tokenizer.model").string());
    const std::string val_text(split_tail(robustness::slurp(ws.text), 0.1).second);
    auto backend = make_cpu_backend(model);
    const EvalResult engine = evaluate_text(backend_batch_loss(*backend), tok, val_text, 64);
    // Float trainer against the float engine, different summation orders: ~1e-6 relative.
    EXPECT_NEAR(engine.loss_per_token, val[0], 1e-5 * val[0]);
    const LoadedWeights w = load_trained_weights(best.string());
    const EvalResult trainer = evaluate_text(w.config, w.layout, w.params.data(), tok, val_text, 64);
    EXPECT_NEAR(trainer.loss_per_token, val[0], 1e-9);
}

TEST(TwinTrainLoop, InterruptedAndResumedRunEqualsUninterruptedRun) {
    TwinWorkspace ws;
    TrainOptions full = ws.options("full"), part = ws.options("part");
    full.steps = part.steps = 8;
    full.dropout = part.dropout = 0.1;  // the masks depend on (seed, step) only: resume must reproduce them
    test::expect_resume_equals_uninterrupted(full, part);

    // The architecture is part of the run: resuming the twin's run as a RetNet is refused.
    TrainOptions other = part;
    other.resume = true;
    other.tokenizer_path.clear();
    other.architecture = Architecture::RetNet;
    other.steps = 9;
    EXPECT_THROW(run_training(other, {}), Error);
}

TEST(TwinTrainLoop, CliTrainsTheTwinAndRefusesAChunk) {
    using robustness::run_retnet;
    TwinWorkspace ws;
    const fs::path out = ws.dir / "cli";
    const std::vector<std::string> base{"train", "--arch", "transformer", "--data", ws.text.string(), "--config",
                                        ws.config.string(), "--tokenizer", ws.tokenizer.string(), "--steps", "2",
                                        "--batch", "2", "--seq-len", "16", "--threads", "1"};
    auto with = [&](std::vector<std::string> extra) {
        std::vector<std::string> args = base;
        args.insert(args.end(), extra.begin(), extra.end());
        return args;
    };
    const auto chunk = run_retnet(with({"--out", (ws.dir / "c").string(), "--chunk", "8"}));
    EXPECT_NE(chunk.exit_code, 0);
    EXPECT_EQ(chunk.err, "retnet train: error: --chunk applies to the RetNet's retention; the Transformer twin's "
                         "attention has one form (leave --chunk out)\n");
    EXPECT_FALSE(fs::exists(ws.dir / "c"));
    const auto train = run_retnet(with({"--out", out.string()}));
    ASSERT_EQ(train.exit_code, 0) << train.err;
    EXPECT_NE(train.out.find("step      2/2  loss"), std::string::npos) << train.out;
    const auto eval = run_retnet({"eval", "--model", (out / "best").string(), "--text", ws.text.string(), "--tail",
                                  "0.1"});
    ASSERT_EQ(eval.exit_code, 0) << eval.err;
    EXPECT_NE(eval.out.find("bits per char"), std::string::npos) << eval.out;
}
