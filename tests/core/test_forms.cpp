// SPDX-License-Identifier: GPL-3.0-or-later
// The three retention forms against each other and the float CPU backend against the double
// reference, for both families, on random models (fixtures of the public code: test_reference_fixtures).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "test_models.h"

namespace retnet {
namespace {

using test::max_abs;
using test::max_abs_diff;

Tensor run(Backend& b, const std::vector<int32_t>& tokens, Form form, int chunk = 0,
           std::optional<double> eps = std::nullopt) {
    b.reset();
    ForwardOptions o;
    o.form = form;
    o.chunk_size = chunk;
    o.head_norm_eps = eps;
    return b.forward(tokens, o);
}

TEST(Decay, GammaMatchesTheReferenceFloat32Values) {
    const std::vector<float> log_gamma = default_log_decay(22);
    const double expected[] = {0.96875, 0.984375, 0.9921875, 0.99609375, 0.998046875, 0.9990234375};
    for (int h = 0; h < 6; ++h) EXPECT_NEAR(std::exp(static_cast<double>(log_gamma[static_cast<size_t>(h)])), expected[h], 1e-7);
    EXPECT_NEAR(log_gamma[0], -0.0317487, 1e-6);
    // 1 − 2^−25 rounds to 1 in float32: heads ≥ 20 do not decay (spec pitfall 6).
    EXPECT_EQ(log_gamma[20], 0.0f);
    EXPECT_EQ(log_gamma[21], 0.0f);
}

TEST(Rotary, ThetaOfBothFamilies) {
    const auto ts = default_rotary_theta(Family::TorchScale, 16);  // linspace: last is exactly 1e-4
    EXPECT_FLOAT_EQ(ts.front(), 1.0f);
    EXPECT_NEAR(ts.back(), 1e-4, 1e-10);
    const auto fla = default_rotary_theta(Family::Fla, 16);  // 10000^(−2i/Dk)
    EXPECT_FLOAT_EQ(fla[1], static_cast<float>(std::pow(10000.0, -2.0 / 16)));
}

// fla's retention is unnormalized: the three forms are the same sum and agree to rounding.
TEST(Forms, FlaReferenceFormsAgreeToDoublePrecision) {
    auto model = test::small_model(Family::Fla, 11);
    auto ref = make_reference_backend(model);
    const auto tokens = test::random_tokens(37, model->config.vocab_size, 5);
    const Tensor par = run(*ref, tokens, Form::Parallel);
    const double scale = max_abs(par);
    EXPECT_LT(max_abs_diff(par, run(*ref, tokens, Form::Recurrent)), 1e-6 * scale);
    for (int chunk : {1, 3, 8, 37, 64})
        EXPECT_LT(max_abs_diff(par, run(*ref, tokens, Form::Chunkwise, chunk)), 1e-6 * scale) << "chunk " << chunk;
}

// Logits leave the reference rounded to float32 (6e-8 relative), so 1e-6 of max|logit| is the
// double-precision agreement bound used below.
// torchscale's forms differ by a positive per-row scalar before the head RMSNorm, which is
// scale-invariant only when eps = 0 (docs/spec.md §2.7): with eps = 0 they agree, with 1e-6 they need not.
TEST(Forms, TorchscaleFormsAgreeWhenHeadNormEpsIsZero) {
    auto model = test::small_model(Family::TorchScale, 12);
    auto ref = make_reference_backend(model);
    const auto tokens = test::random_tokens(37, model->config.vocab_size, 6);
    const Tensor par = run(*ref, tokens, Form::Parallel, 0, 0.0);
    const double scale = max_abs(par);
    EXPECT_LT(max_abs_diff(par, run(*ref, tokens, Form::Recurrent, 0, 0.0)), 1e-6 * scale);
    for (int chunk : {1, 5, 8, 37, 50})
        EXPECT_LT(max_abs_diff(par, run(*ref, tokens, Form::Chunkwise, chunk, 0.0)), 1e-6 * scale) << "chunk " << chunk;
}

TEST(Forms, TorchscaleFormsDifferThroughTheEpsWithTinyActivations) {
    // torchscale's own init gives mean(R²/r) comparable to eps = 1e-6, so the forms differ visibly.
    ModelConfig c = test::small_config(Family::TorchScale);
    auto model = std::make_shared<Model>(make_random_model(c, 3));
    auto ref = make_reference_backend(model);
    const auto tokens = test::random_tokens(30, c.vocab_size, 8);
    const Tensor par = run(*ref, tokens, Form::Parallel);
    const Tensor chk = run(*ref, tokens, Form::Chunkwise, 4);
    EXPECT_GT(max_abs_diff(par, chk), 1e-4 * max_abs(par));
    EXPECT_LT(max_abs_diff(run(*ref, tokens, Form::Parallel, 0, 0.0), run(*ref, tokens, Form::Chunkwise, 4, 0.0)),
              1e-6 * max_abs(par));
}

struct BackendCase {
    Family family;
    Form form;
    int chunk;
    int T;
};

class CpuVersusReference : public ::testing::TestWithParam<BackendCase> {};

// float32 against double: products of length ≤ max(d, F, T) with O(1) terms give ~1e-6 relative
// error per op; after a few layers 2e-5 of max|logit| leaves margin without hiding real bugs
// (a wrong decay or divisor shows up at 1e-2 and above).
TEST_P(CpuVersusReference, LogitsStateAndIntrospectionMatch) {
    const BackendCase p = GetParam();
    auto model = test::small_model(p.family, 21);
    auto ref = make_reference_backend(model);
    auto cpu = make_cpu_backend(model);
    const auto tokens = test::random_tokens(p.T, model->config.vocab_size, 9);
    ForwardOptions o;
    o.form = p.form;
    o.chunk_size = p.chunk;
    Introspection ri, ci;
    for (Introspection* i : {&ri, &ci}) {
        i->want_state_norms = true;
        i->want_layer_outputs = true;
        i->score_layer = 1;
        i->want_all_head_scores = true;
    }
    const Tensor lr = ref->forward(tokens, o, &ri), lc = cpu->forward(tokens, o, &ci);
    ASSERT_EQ(lr.shape, lc.shape);
    EXPECT_LT(max_abs_diff(lr, lc), 2e-5 * max_abs(lr));
    EXPECT_LT(max_abs_diff(ri.state_norms, ci.state_norms), 2e-5 * max_abs(ri.state_norms));
    EXPECT_LT(max_abs_diff(ri.scores, ci.scores), 2e-5 * std::max(1.0, max_abs(ri.scores)));
    ASSERT_EQ(ri.layer_outputs.size(), ci.layer_outputs.size());
    const RecurrentState sr = ref->snapshot(), sc = cpu->snapshot();
    EXPECT_EQ(sr.position, p.T);
    EXPECT_EQ(sc.position, p.T);
    for (size_t l = 0; l < sr.layers.size(); ++l) {
        double norm = 0, diff = 0;
        for (size_t i = 0; i < sr.layers[l].S.size(); ++i) {
            norm = std::max(norm, std::abs(static_cast<double>(sr.layers[l].S[i])));
            diff = std::max(diff, std::abs(static_cast<double>(sr.layers[l].S[i]) - sc.layers[l].S[i]));
        }
        EXPECT_LT(diff, 2e-5 * norm) << "layer " << l;
        for (size_t h = 0; h < sr.layers[l].scale.size(); ++h)
            EXPECT_NEAR(sr.layers[l].scale[h], sc.layers[l].scale[h], 1e-9 * sr.layers[l].scale[h]);
    }
}

INSTANTIATE_TEST_SUITE_P(
    AllForms, CpuVersusReference,
    ::testing::Values(BackendCase{Family::Fla, Form::Parallel, 0, 37}, BackendCase{Family::Fla, Form::Recurrent, 0, 37},
                      BackendCase{Family::Fla, Form::Chunkwise, 8, 37}, BackendCase{Family::Fla, Form::Chunkwise, 5, 1},
                      BackendCase{Family::Fla, Form::Parallel, 0, 1},
                      BackendCase{Family::TorchScale, Form::Parallel, 0, 37},
                      BackendCase{Family::TorchScale, Form::Recurrent, 0, 37},
                      BackendCase{Family::TorchScale, Form::Chunkwise, 8, 37},
                      BackendCase{Family::TorchScale, Form::Chunkwise, 64, 23},
                      BackendCase{Family::TorchScale, Form::Recurrent, 0, 1}));

// Prefill in any form, then continue token by token: the continuation must equal a run that was
// recurrent from the start (the state each form leaves is the recurrent form's state).
class StateHandoff : public ::testing::TestWithParam<std::tuple<Family, Form, bool>> {};

TEST_P(StateHandoff, PrefillThenRecurrentEqualsRecurrentThroughout) {
    const auto [family, prefill_form, use_reference] = GetParam();
    auto model = test::small_model(family, 31);
    auto backend = use_reference ? make_reference_backend(model) : make_cpu_backend(model);
    const auto tokens = test::random_tokens(29, model->config.vocab_size, 10);
    const int P = 13;
    const Tensor full = run(*backend, tokens, Form::Recurrent);

    backend->reset();
    ForwardOptions prefill;
    prefill.form = prefill_form;
    prefill.chunk_size = 4;
    backend->forward(std::span(tokens).first(P), prefill);
    ForwardOptions step;
    step.form = Form::Recurrent;
    const double tol = (use_reference ? 1e-6 : 2e-5) * max_abs(full);
    for (int t = P; t < static_cast<int>(tokens.size()); ++t) {
        const Tensor logits = backend->forward(std::span(tokens).subspan(static_cast<size_t>(t), 1), step);
        for (int j = 0; j < model->config.vocab_size; ++j)
            ASSERT_NEAR(logits.data[static_cast<size_t>(j)], full.data[static_cast<size_t>(t) * model->config.vocab_size + j], tol)
                << "position " << t;
    }
}

INSTANTIATE_TEST_SUITE_P(
    BothFamilies, StateHandoff,
    ::testing::Combine(::testing::Values(Family::Fla, Family::TorchScale),
                       ::testing::Values(Form::Parallel, Form::Chunkwise, Form::Recurrent), ::testing::Bool()));

// A chunkwise call that starts from a non-zero state (fla) equals the recurrent form from that state.
TEST(Forms, ChunkwiseFromNonZeroStateMatchesRecurrent) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        auto model = test::small_model(family, 41);
        auto backend = make_cpu_backend(model);
        const auto tokens = test::random_tokens(40, model->config.vocab_size, 11);
        ForwardOptions rec;
        rec.form = Form::Recurrent;
        backend->forward(std::span(tokens).first(9), rec);
        const RecurrentState after_prefix = backend->snapshot();
        const Tensor expect = backend->forward(std::span(tokens).subspan(9), rec);
        backend->restore(after_prefix);
        ForwardOptions chunked;
        chunked.form = Form::Chunkwise;
        chunked.chunk_size = 6;
        chunked.head_norm_eps = 0.0;  // torchscale's chunk divisor differs by a row scalar
        rec.head_norm_eps = 0.0;
        backend->restore(after_prefix);
        const Tensor expect0 = backend->forward(std::span(tokens).subspan(9), rec);
        backend->restore(after_prefix);
        const Tensor got = backend->forward(std::span(tokens).subspan(9), chunked);
        EXPECT_LT(max_abs_diff(expect0, got), 2e-5 * max_abs(expect0)) << family_name(family);
        if (family == Family::Fla) {
            EXPECT_LT(max_abs_diff(expect, got), 2e-5 * max_abs(expect));
        }
    }
}

TEST(Forms, SnapshotRestoreReproducesTheContinuation) {
    auto model = test::small_model(Family::Fla, 51);
    auto backend = make_cpu_backend(model);
    const auto tokens = test::random_tokens(20, model->config.vocab_size, 12);
    ForwardOptions rec;
    rec.form = Form::Recurrent;
    backend->forward(std::span(tokens).first(10), rec);
    const RecurrentState snap = backend->snapshot();
    const Tensor first = backend->forward(std::span(tokens).subspan(10), rec);
    backend->restore(snap);
    const Tensor second = backend->forward(std::span(tokens).subspan(10), rec);
    EXPECT_EQ(first.data, second.data);
}

TEST(Forms, BadInputsAreClearErrors) {
    auto model = test::small_model(Family::TorchScale, 61);
    auto backend = make_cpu_backend(model);
    ForwardOptions o;
    const std::vector<int32_t> bad = {1, model->config.vocab_size};
    try {
        backend->forward(bad, o);
        FAIL() << "no error for an out-of-range token";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos);
    }
    EXPECT_THROW(backend->forward(std::vector<int32_t>{}, o), Error);
    o.form = Form::Recurrent;
    backend->forward(std::vector<int32_t>{1, 2}, o);
    o.form = Form::Parallel;  // torchscale parallel cannot continue a state
    EXPECT_THROW(backend->forward(std::vector<int32_t>{3}, o), Error);
    EXPECT_THROW(parse_form("sideways"), Error);
}

}  // namespace
}  // namespace retnet

namespace retnet {
namespace {

// The same agreements in float32 on the CPU backend: 1e-5 of max|logit| is ~100 float32 ulps of
// accumulated rounding over the model, far below any difference a form bug produces.
TEST(Forms, Float32FormsAgreeOnTheCpuBackend) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        auto model = test::small_model(family, 71);
        auto cpu = make_cpu_backend(model);
        const auto tokens = test::random_tokens(45, model->config.vocab_size, 13);
        const std::optional<double> eps = family == Family::TorchScale ? std::optional<double>(0.0) : std::nullopt;
        const Tensor par = run(*cpu, tokens, Form::Parallel, 0, eps);
        const double tol = 1e-5 * max_abs(par);
        EXPECT_LT(max_abs_diff(par, run(*cpu, tokens, Form::Recurrent, 0, eps)), tol) << family_name(family);
        for (int chunk : {1, 7, 16, 45})
            EXPECT_LT(max_abs_diff(par, run(*cpu, tokens, Form::Chunkwise, chunk, eps)), tol)
                << family_name(family) << " chunk " << chunk;
    }
}

}  // namespace
}  // namespace retnet

namespace retnet {
namespace {

TEST(Forms, RestoreRejectsAStateOfAnotherShape) {
    auto model = test::small_model(Family::TorchScale, 81);
    for (const std::string device : {"cpu", "reference"}) {
        auto backend = make_backend(device, model);
        RecurrentState wrong = make_empty_state(model->config);
        wrong.layers.pop_back();
        EXPECT_THROW(backend->restore(wrong), Error) << device;
        wrong = make_empty_state(model->config);
        wrong.layers[1].S.resize(3);
        EXPECT_THROW(backend->restore(wrong), Error) << device;
        wrong = make_empty_state(model->config);
        wrong.position = -1;
        EXPECT_THROW(backend->restore(wrong), Error) << device;
        backend->restore(make_empty_state(model->config));  // the right shape is accepted
    }
}

}  // namespace
}  // namespace retnet
