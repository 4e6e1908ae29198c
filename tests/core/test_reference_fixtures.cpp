// SPDX-License-Identifier: GPL-3.0-or-later
// Logits of the public reference implementations (torchscale and fla, run on random-weight models
// by tools/reference/make_fixtures.py, see docs/reference-fixtures.md) reproduced by our engine,
// each form against the same form of the reference. Tolerance: 1e-4 × max|logit|; the references
// ran in float32 (fla's retention in float64), so their own rounding is ~1e-6 relative and the
// bound is met with two orders of magnitude to spare, while a wrong divisor or rotary variant
// misses it by 10–1000× (ts_eps_sensitive's forms differ from each other by 5%).
#include <gtest/gtest.h>

#include <filesystem>

#include "retnet/forward.h"
#include "retnet/npy.h"
#include "reference_fixture.h"
#include "test_models.h"

namespace retnet {
namespace {

using retnet::test::Fixture;
using retnet::test::kFixtures;
using retnet::test::load_fixture;

class ReferenceFixture : public ::testing::TestWithParam<std::tuple<std::string, Form, std::string>> {};

TEST_P(ReferenceFixture, EachFormReproducesTheSameFormOfTheReferenceCode) {
    const auto& [name, form, device] = GetParam();
    const Fixture f = load_fixture(name);
    const Tensor expected = read_npy(kFixtures + name + "/logits_" + form_name(form) + ".npy");
    auto backend = make_backend(device, f.model);
    ForwardOptions options;
    options.form = form;
    options.chunk_size = f.chunk_size;
    const Tensor got = backend->forward(f.tokens, options);
    ASSERT_EQ(got.shape, expected.shape);
    const double scale = test::max_abs(expected);
    EXPECT_LT(test::max_abs_diff(got, expected), 1e-4 * scale) << name << " " << form_name(form);
}

INSTANTIATE_TEST_SUITE_P(
    PublicCode, ReferenceFixture,
    ::testing::Combine(::testing::Values("ts_small", "ts_gelu_tied", "ts_eps_sensitive", "fla_small", "fla_tied"),
                       ::testing::Values(Form::Parallel, Form::Recurrent, Form::Chunkwise),
                       ::testing::Values("cpu", "reference")),
    [](const auto& param_info) {
        return std::get<0>(param_info.param) + "_" + form_name(std::get<1>(param_info.param)) + "_" + std::get<2>(param_info.param);
    });

// fla: prefill P tokens in one call (chunkwise), then decode the rest one at a time from the
// state it left, as fla's HF cache does.
TEST(ReferenceFixtureHandoff, FlaPrefillThenDecodeMatchesTheCachedDecoding) {
    for (const std::string name : {"fla_small", "fla_tied"}) {
        const Fixture f = load_fixture(name);
        ASSERT_GT(f.prefill, 0);
        const Tensor expected = read_npy(kFixtures + name + "/logits_handoff.npy");
        const int V = f.model->config.vocab_size;
        auto backend = make_cpu_backend(f.model);
        ForwardOptions prefill;
        prefill.form = Form::Chunkwise;
        prefill.chunk_size = f.chunk_size;
        Tensor got({static_cast<int64_t>(f.tokens.size()), V});
        const Tensor head = backend->forward(std::span(f.tokens).first(static_cast<size_t>(f.prefill)), prefill);
        std::copy(head.data.begin(), head.data.end(), got.data.begin());
        ForwardOptions step;
        step.form = Form::Recurrent;
        for (size_t t = static_cast<size_t>(f.prefill); t < f.tokens.size(); ++t) {
            const Tensor row = backend->forward(std::span(f.tokens).subspan(t, 1), step);
            std::copy(row.data.begin(), row.data.end(), got.data.begin() + static_cast<std::ptrdiff_t>(t * V));
        }
        EXPECT_LT(test::max_abs_diff(got, expected), 1e-4 * test::max_abs(expected)) << name;
    }
}

// The state itself, not only the logits: fla's recurrent_state of layer 0 after all tokens.
TEST(ReferenceFixtureState, FlaFinalStateOfLayerZeroMatches) {
    for (const std::string name : {"fla_small", "fla_tied"}) {
        const Fixture f = load_fixture(name);
        const Tensor expected = read_npy(kFixtures + name + "/final_state_layer0.npy");  // (H, Dk, Dv)
        auto backend = make_cpu_backend(f.model);
        ForwardOptions options;
        options.form = Form::Recurrent;
        backend->forward(f.tokens, options);
        Tensor got(expected.shape);
        got.data = backend->snapshot().layers[0].S;
        EXPECT_LT(test::max_abs_diff(got, expected), 1e-4 * test::max_abs(expected)) << name;
    }
}

// The reason each torchscale form has its own expected file: their outputs differ.
TEST(ReferenceFixtureSanity, TorchscaleEpsSensitiveFormsReallyDiffer) {
    const std::string dir = kFixtures + "ts_eps_sensitive/";
    const Tensor par = read_npy(dir + "logits_parallel.npy"), rec = read_npy(dir + "logits_recurrent.npy");
    EXPECT_GT(test::max_abs_diff(par, rec), 1e-2 * test::max_abs(par));
}

}  // namespace
}  // namespace retnet
