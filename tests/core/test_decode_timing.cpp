// SPDX-License-Identifier: GPL-3.0-or-later
// The timing steps retnet bench and retnet cost share (retnet/decode_timing.h): the median, the
// fork of one prefill into a batch's slots, and the batched decoding steps.
#include <gtest/gtest.h>

#include "retnet/decode_timing.h"
#include "retnet/error.h"
#include "retnet/model.h"
#include "test_models.h"

namespace retnet {
namespace {

TEST(DecodeTiming, MedianIsTheMiddleValueOrTheMeanOfTheTwoMiddleOnes) {
    EXPECT_DOUBLE_EQ(median({3.0, 1.0, 2.0}), 2.0);
    EXPECT_DOUBLE_EQ(median({4.0, 1.0, 3.0, 2.0}), 2.5);
    EXPECT_DOUBLE_EQ(median({7.0}), 7.0);
    EXPECT_DOUBLE_EQ(median({}), 0.0);
}

TEST(DecodeTiming, RandomTokensAreInTheVocabularyAndFollowTheSeed) {
    std::mt19937_64 a(5), b(5);
    const std::vector<int32_t> tokens = random_tokens(1000, 7, a);
    ASSERT_EQ(tokens.size(), 1000u);
    for (int32_t t : tokens) ASSERT_TRUE(t >= 0 && t < 7) << t;
    EXPECT_EQ(tokens, random_tokens(1000, 7, b));
}

void expect_same_state(const RecurrentState& a, const RecurrentState& b) {
    ASSERT_EQ(a.position, b.position);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t l = 0; l < a.layers.size(); ++l) {
        EXPECT_EQ(a.layers[l].S, b.layers[l].S) << "layer " << l;
        EXPECT_EQ(a.layers[l].scale, b.layers[l].scale) << "layer " << l;
        EXPECT_EQ(a.layers[l].K, b.layers[l].K) << "layer " << l;
        EXPECT_EQ(a.layers[l].V, b.layers[l].V) << "layer " << l;
    }
}

// Every slot holds the state of the one prefill, and that state is the chunkwise form's of the
// prompt with the chunk asked for, computed apart.
TEST(DecodeTiming, PrefillAndForkGivesEverySlotThePromptsState) {
    for (const bool twin : {false, true}) {
        SCOPED_TRACE(twin ? "Transformer twin" : "RetNet");
        std::shared_ptr<const Model> model = test::small_model(Family::TorchScale, 3);
        if (twin) model = std::make_shared<const Model>(make_transformer_twin(model->config, 4));
        const auto backend = make_cpu_backend(model);
        const std::vector<int32_t> prompt = {1, 5, 2, 7, 3, 3, 0, 4, 6};  // 9: not a multiple of the chunk
        const double ms = prefill_and_fork(*backend, prompt, 3, 4, {});
        EXPECT_GT(ms, 0.0);
        ASSERT_EQ(backend->slot_count(), 3);

        const auto alone = make_cpu_backend(model);
        ForwardOptions chunkwise;
        chunkwise.form = Form::Chunkwise;
        chunkwise.chunk_size = 4;
        alone->forward(prompt, chunkwise);
        const RecurrentState expected = alone->snapshot(0);
        EXPECT_EQ(expected.position, 9);
        for (int s = 0; s < 3; ++s) {
            SCOPED_TRACE("slot " + std::to_string(s));
            expect_same_state(backend->snapshot(s), expected);
        }
    }
}

TEST(DecodeTiming, PrefillAndForkIsCancelledBetweenLayers) {
    const auto backend = make_cpu_backend(test::small_model(Family::Fla, 3));
    const std::vector<int32_t> prompt = {1, 2, 3};
    EXPECT_THROW(prefill_and_fork(*backend, prompt, 2, 0, [] { return true; }), Cancelled);
    EXPECT_EQ(backend->snapshot(0).position, 0);  // a cancelled prefill leaves its slot empty
}

// `untimed` + `timed` steps run, each advancing every slot by one token; `timed` times come back.
TEST(DecodeTiming, DecodeStepsAdvanceEverySlotAndTimeOnlyTheTimedOnes) {
    const auto backend = make_cpu_backend(test::small_model(Family::Fla, 3));
    const std::vector<int32_t> prompt = {4, 1, 0, 2};
    prefill_and_fork(*backend, prompt, 3, 0, {});
    std::mt19937_64 rng(1);
    int calls = 0;
    const DecodeTimes times = time_decode_steps(*backend, 3, 2, 5, 0, rng, [&] { ++calls; });
    EXPECT_EQ(times.wall_ms.size(), 5u);
    for (double m : times.wall_ms) EXPECT_GE(m, 0.0);
    EXPECT_TRUE(times.device_ms.empty());  // the CPU has no device clock
    EXPECT_EQ(calls, 7);
    for (int s = 0; s < 3; ++s) EXPECT_EQ(backend->snapshot(s).position, 4 + 7) << "slot " << s;
    // a throw from after_step (a Ctrl-C's check) ends the steps
    EXPECT_THROW(time_decode_steps(*backend, 3, 0, 4, 0, rng, [] { throw Cancelled(); }), Cancelled);
    EXPECT_EQ(backend->snapshot(0).position, 4 + 7 + 1);
}

// With best logits asked for (the sampler's top-k), the steps run the same: every slot advances.
TEST(DecodeTiming, DecodeStepsWithBestLogitsAdvanceEverySlot) {
    const auto backend = make_cpu_backend(test::small_model(Family::Fla, 3));
    const std::vector<int32_t> prompt = {4, 1, 0, 2};
    prefill_and_fork(*backend, prompt, 3, 0, {});
    std::mt19937_64 rng(1);
    const DecodeTimes times = time_decode_steps(*backend, 3, 1, 3, 40, rng, {});
    EXPECT_EQ(times.wall_ms.size(), 3u);
    for (int s = 0; s < 3; ++s) EXPECT_EQ(backend->snapshot(s).position, 4 + 4) << "slot " << s;
    EXPECT_THROW(time_decode_steps(*backend, 3, 0, 1, kMaxBestLogits + 1, rng, {}), Error);
}

// The bytes a step moves, against the shapes of the small models counted by hand: fla's (tied embedding,
// a GLU) and torchscale's (untied: only the batch's embedding rows are read), and the twin's KV cache.
TEST(DecodeTiming, DecodeStepBytesCountEveryMatrixOnceAndEveryStateTwice) {
    const ModelConfig c = test::small_config(Family::Fla);  // vocab 53, d 32, 2 layers, 4 heads, Dk 8, Dv 12, FFN 40
    ASSERT_TRUE(c.vocab_size == 53 && c.d_model == 32 && c.n_layers == 2 && c.n_heads == 4 && c.key_dim == 32 &&
                c.value_dim == 48 && c.ffn_dim == 40);
    const auto fla = test::small_model(Family::Fla, 3);
    // a layer: q, k (32 × 32), v, g (48 × 32), o (32 × 48), act, lin (40 × 32), out (32 × 40)
    const uint64_t layer_values = 2 * 32 * 32 + 2 * 48 * 32 + 32 * 48 + 2 * 40 * 32 + 32 * 40;
    const uint64_t matrices = 2 * layer_values + 53 * 32;  // the tied embedding is the output matrix
    uint64_t vectors = 0;  // norms, float32 in every precision
    for (const Tensor* t : weight_tensors(*fla))
        if (t->rank() == 1) vectors += static_cast<uint64_t>(t->numel());
    EXPECT_GE(vectors, 2u * 2 * 32 + 32);  // two norms a layer and the final one at least
    const uint64_t state = 2 * 4 * 8 * 12 * 4;  // L · H · Dk · Dv float32
    for (const int batch : {1, 3}) {
        const DecodeStepBytes bf16 = decode_step_bytes(*fla, "bf16", batch, 100, 4);
        EXPECT_EQ(bf16.weights, matrices * 2 + vectors * 4) << "batch " << batch;
        EXPECT_EQ(bf16.states, batch * 2 * state) << "batch " << batch;  // read and written
        EXPECT_EQ(bf16.total(), bf16.weights + bf16.states);
        EXPECT_EQ(decode_step_bytes(*fla, "fp32", batch, 100, 4).weights, matrices * 4 + vectors * 4);
        // "mixed": each as stored (the test model's are float32)
        EXPECT_EQ(decode_step_bytes(*fla, "mixed", batch, 100, 4).weights, matrices * 4 + vectors * 4);
    }

    const auto ts = test::small_model(Family::TorchScale, 3);
    ASSERT_FALSE(ts->weights.lm_head.empty());
    const DecodeStepBytes one = decode_step_bytes(*ts, "bf16", 1, 7, 4), three = decode_step_bytes(*ts, "bf16", 3, 7, 4);
    EXPECT_EQ(three.weights - one.weights, 2u * 32 * 2);  // two more embedding rows of d bf16 values
    uint64_t all = 0;
    for (const Tensor* t : weight_tensors(*ts)) all += static_cast<uint64_t>(t->numel()) * (t->rank() == 2 ? 2 : 4);
    EXPECT_EQ(one.weights, all - 52u * 32 * 2);  // the embedding's other 52 rows are not read

    const Model twin = make_transformer_twin(c, 4);
    const uint64_t kv_token = 2 * 2 * 32;  // K and V of every layer, elements
    const DecodeStepBytes cache = decode_step_bytes(twin, "bf16", 2, 9, 2);
    EXPECT_EQ(cache.states, 2 * (9 + 1) * kv_token * 2);  // 9 tokens read, the new one's row written, bf16
}

}  // namespace
}  // namespace retnet
