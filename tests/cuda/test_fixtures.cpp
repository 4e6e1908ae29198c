// SPDX-License-Identifier: GPL-3.0-or-later
// The checkpoint fixtures of tests/data/reference (logits of the public torchscale and fla code on
// small random-weight models, docs/reference-fixtures.md) reproduced on the GPU, each form against
// the same form of the reference code, plus fla's prefill-then-decode handoff. Tolerance as in
// tests/core/test_reference_fixtures.cpp: 1e-4 × max|logit| (the references' own float32
// rounding is ~1e-6; a wrong divisor or rotary variant misses by 10–1000×).
#include <gtest/gtest.h>


#include "cuda_test_util.h"
#include "retnet/forward.h"
#include "retnet/npy.h"
#include "../core/reference_fixture.h"

namespace retnet::cuda::test {
namespace {

using retnet::test::Fixture;
using retnet::test::kFixtures;
using retnet::test::load_fixture;

class CudaFixture : public CudaTest, public ::testing::WithParamInterface<std::tuple<std::string, Form>> {};

TEST_P(CudaFixture, EachFormReproducesTheSameFormOfTheReferenceCode) {
    const auto& [name, form] = GetParam();
    const Fixture f = load_fixture(name);
    const Tensor expected = read_npy(kFixtures + name + "/logits_" + form_name(form) + ".npy");
    auto backend = make_cuda_backend(f.model);
    ForwardOptions options;
    options.form = form;
    options.chunk_size = f.chunk_size;
    const Tensor got = backend->forward(f.tokens, options);
    ASSERT_EQ(got.shape, expected.shape);
    EXPECT_LT(rel_max_error(got.data, expected.data), 1e-4) << name << " " << form_name(form);
}

INSTANTIATE_TEST_SUITE_P(
    PublicCode, CudaFixture,
    ::testing::Combine(::testing::Values("ts_small", "ts_gelu_tied", "ts_eps_sensitive", "fla_small", "fla_tied"),
                       ::testing::Values(Form::Parallel, Form::Recurrent, Form::Chunkwise)),
    [](const auto& fixture_info) {
        return std::get<0>(fixture_info.param) + "_" + form_name(std::get<1>(fixture_info.param));
    });

class CudaFixtureHandoff : public CudaTest {};

TEST_F(CudaFixtureHandoff, FlaPrefillThenDecodeMatchesTheCachedDecoding) {
    for (const std::string name : {"fla_small", "fla_tied"}) {
        const Fixture f = load_fixture(name);
        ASSERT_GT(f.prefill, 0);
        const Tensor expected = read_npy(kFixtures + name + "/logits_handoff.npy");
        const size_t V = static_cast<size_t>(f.model->config.vocab_size);
        auto backend = make_cuda_backend(f.model);
        ForwardOptions prefill;
        prefill.form = Form::Chunkwise;
        prefill.chunk_size = f.chunk_size;
        std::vector<float> got;
        const Tensor head = backend->forward(std::span(f.tokens).first(static_cast<size_t>(f.prefill)), prefill);
        got.insert(got.end(), head.data.begin(), head.data.end());
        ForwardOptions step;
        step.form = Form::Recurrent;
        for (size_t t = static_cast<size_t>(f.prefill); t < f.tokens.size(); ++t) {
            const Tensor row = backend->forward(std::span(f.tokens).subspan(t, 1), step);
            got.insert(got.end(), row.data.begin(), row.data.end());
        }
        ASSERT_EQ(got.size(), f.tokens.size() * V);
        EXPECT_LT(rel_max_error(got, expected.data), 1e-4) << name;
    }
}

}  // namespace
}  // namespace retnet::cuda::test
