// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin on the CUDA backend (attention.h wired in through BlockOps::attention):
// prefill and batched decoding against the double reference, graph replay against launches one by
// one bit for bit, a cache that grows past its first block mid-run, and snapshot / restore of the
// KV cache.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "decode_scenario.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/forward.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

// fp32: the same products as the double reference in float32 over ≤ 320 keys and widths ≤ 200,
// ~1e-6 relative; the model tests' 2e-5 holds with room. bf16: weights, activations fed to the
// products and the KV cache are rounded to bf16 (2⁻⁹ relative each), through two layers: a few
// percent; 0.1 catches a wrong cache row or position while allowing that.
double tolerance(bool bf16) { return bf16 ? 0.1 : 2e-5; }

class TwinCudaTest : public CudaTest, public ::testing::WithParamInterface<bool> {};

// The shared scenario (decode_scenario.h) with the prompts' logits checked and a 300-token prefill
// at step 5 that moves slot 1's cache past its first 256-token block.
TEST_P(TwinCudaTest, PrefillAndBatchedDecodeMatchReferenceAndGraphsEqualEager) {
    const bool bf16 = GetParam();
    auto model = std::make_shared<const Model>(make_transformer_twin(small_decode_config(Family::Fla), 7));
    ASSERT_TRUE(model->config.is_transformer());
    EagerGraphsReference backends(model, bf16);
    const double worst = backends.run(DecodeScenario{LogitRows::Last, 300});
    std::printf("[twin %s] worst relative error against the double reference: %.3e\n", bf16 ? "bf16" : "fp32", worst);
    EXPECT_LT(worst, tolerance(bf16));
    for (int s = 0; s < 3; ++s) {
        const RecurrentState a = backends.eager().snapshot(s), b = backends.graphs().snapshot(s);
        EXPECT_EQ(a.position, b.position);
        for (size_t l = 0; l < a.layers.size(); ++l) {
            EXPECT_EQ(a.layers[l].K, b.layers[l].K) << "slot " << s;
            EXPECT_EQ(a.layers[l].V, b.layers[l].V) << "slot " << s;
        }
    }
}

// The cache read back equals the reference's (rotated keys, values); restoring it into another
// slot and decoding the same token there gives the same logits as the original slot.
TEST_P(TwinCudaTest, SnapshotRestoreCarriesTheCache) {
    const bool bf16 = GetParam();
    auto model = std::make_shared<const Model>(make_transformer_twin(small_decode_config(Family::Fla), 8));
    CudaOptions options;
    options.bf16_weights = bf16;
    std::unique_ptr<Backend> cuda = make_cuda_backend(model, options);
    std::unique_ptr<Backend> ref = make_reference_backend(model);
    ForwardOptions chunkwise, recurrent;
    chunkwise.form = Form::Chunkwise;
    recurrent.form = Form::Recurrent;
    const std::vector<int32_t> prompt = tokens_of(21, 4);
    cuda->forward(prompt, chunkwise);
    ref->forward(prompt, chunkwise);
    const RecurrentState got = cuda->snapshot(0), want = ref->snapshot(0);
    ASSERT_EQ(got.position, 21);
    for (size_t l = 0; l < got.layers.size(); ++l) {
        ASSERT_EQ(got.layers[l].K.size(), want.layers[l].K.size());
        EXPECT_LT(rel_max_error(got.layers[l].K, want.layers[l].K),
                  tolerance(bf16)) << "K of layer " << l;
        EXPECT_LT(rel_max_error(got.layers[l].V, want.layers[l].V),
                  tolerance(bf16)) << "V of layer " << l;
    }
    cuda->set_slot_count(2);
    cuda->restore(got, 1);
    const RecurrentState again = cuda->snapshot(1);
    for (size_t l = 0; l < got.layers.size(); ++l) EXPECT_EQ(again.layers[l].K, got.layers[l].K);
    const std::vector<int32_t> next = tokens_of(1, 5);
    const SequenceRequest original{next, 0, LogitRows::Last}, restored{next, 1, LogitRows::Last};
    const Tensor a = cuda->forward_batch({&original, 1}, recurrent)[0];
    const Tensor b = cuda->forward_batch({&restored, 1}, recurrent)[0];
    EXPECT_LT(rel_max_error(b.data, a.data), 1e-5);
    cuda->reset(1);
    EXPECT_TRUE(cuda->snapshot(1).empty());
}

// Twelve and sixteen sequences decode together with bf16 weights, so the twin's projections take the
// tensor-core skinny GEMM (9 to 16 rows) inside a captured graph, and its GLU and attention hand bf16
// rows to the next projection. Graph replay equals eager launches bit for bit at every step, and every
// sequence stays within the twin's bf16 tolerance of the double reference decoding it alone.
TEST_F(CudaTest, TwinManyBf16SequencesReplayEqualsEagerAndMatchReference) {
    auto model = std::make_shared<const Model>(make_transformer_twin(small_decode_config(Family::Fla), 9));
    ForwardOptions chunkwise, recurrent;
    chunkwise.form = Form::Chunkwise;
    recurrent.form = Form::Recurrent;
    for (const int slots : {12, 16}) {
        EagerGraphsReference backends(model, true, slots);
        std::vector<std::vector<int32_t>> prompts;
        for (int s = 0; s < slots; ++s) prompts.push_back(tokens_of(2, 400 + s));
        for (int s = 0; s < slots; ++s) {
            const SequenceRequest prompt{prompts[static_cast<size_t>(s)], s, LogitRows::Last};
            backends.step({&prompt, 1}, chunkwise);
        }
        for (int t = 0; t < 4; ++t) {
            std::vector<std::vector<int32_t>> next(static_cast<size_t>(slots));
            std::vector<SequenceRequest> batch;
            for (int s = 0; s < slots; ++s) {
                next[static_cast<size_t>(s)] = tokens_of(1, 1000 + 100 * t + s);
                batch.push_back({next[static_cast<size_t>(s)], s, LogitRows::Last});
            }
            SCOPED_TRACE(std::to_string(slots) + " slots, step " + std::to_string(t));
            backends.step(batch, recurrent);
        }
        EXPECT_LT(backends.worst(), tolerance(true)) << slots << " slots";
    }
}

INSTANTIATE_TEST_SUITE_P(Weights, TwinCudaTest, ::testing::Bool());

}  // namespace
}  // namespace retnet::cuda::test
