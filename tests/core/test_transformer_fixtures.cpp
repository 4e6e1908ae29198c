// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin against transformers' LlamaForCausalLM on the same weights: fixtures that
// tools/reference/make_llama_fixtures.py writes into tests/data/reference/llama_* (float64 logits of
// one pass, and of a prefill continued token by token through transformers' KV cache). A fixture
// not generated yet is reported as skipped.
#include <filesystem>

#include <gtest/gtest.h>

#include "reference_fixture.h"
#include "retnet/forward.h"
#include "retnet/npy.h"
#include "test_models.h"

namespace retnet {
namespace {

class LlamaFixture : public ::testing::TestWithParam<const char*> {};

// Tolerance of the RetNet fixtures (docs/reference-fixtures.md): 1e-4 × max|logit|.
constexpr double kTolerance = 1e-4;

TEST_P(LlamaFixture, LogitsMatchTransformers) {
    const std::string name = GetParam();
    if (!std::filesystem::exists(test::kFixtures + name))
        GTEST_SKIP() << name << " not generated: run tools/reference/make_llama_fixtures.py --out tests/data/reference";
    const test::Fixture f = test::load_fixture(name);
    ASSERT_TRUE(f.model->config.is_transformer());
    const Tensor one_pass = read_npy(test::kFixtures + name + "/logits.npy");
    const Tensor handoff = read_npy(test::kFixtures + name + "/logits_handoff.npy");
    const double scale = test::max_abs(one_pass);
    for (auto make : {&make_cpu_backend, &make_reference_backend}) {
        std::unique_ptr<Backend> backend = make(f.model);
        EXPECT_LT(test::max_abs_diff(backend->forward(f.tokens, {}), one_pass) / scale, kTolerance) << backend->name();

        // The prompt in one call, then one token at a time over the cache: transformers' handoff rows.
        backend->reset();
        const std::span<const int32_t> all(f.tokens);
        Tensor rows = backend->forward(all.first(static_cast<size_t>(f.prefill)), {});
        ForwardOptions recurrent;
        recurrent.form = Form::Recurrent;
        for (size_t t = static_cast<size_t>(f.prefill); t < f.tokens.size(); ++t) {
            const Tensor row = backend->forward(all.subspan(t, 1), recurrent);
            rows.data.insert(rows.data.end(), row.data.begin(), row.data.end());
        }
        rows.shape = handoff.shape;
        EXPECT_LT(test::max_abs_diff(rows, handoff) / scale, kTolerance) << backend->name();
    }
}

INSTANTIATE_TEST_SUITE_P(Transformers, LlamaFixture, ::testing::Values("llama_small", "llama_tied"));

}  // namespace
}  // namespace retnet
