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

}  // namespace
}  // namespace retnet
