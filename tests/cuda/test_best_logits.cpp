// SPDX-License-Identifier: GPL-3.0-or-later
// The best-logits selection on the GPU against its host twin (pack_best_logits) bit for bit, on
// awkward rows (one logit, fewer logits than asked, ties everywhere, signed zeros, masks, NaN and
// +inf, a vocabulary not a multiple of the block), and whole decoding steps asking for LastBest
// (graphs captured and replayed) against the same backend's Last rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <iterator>
#include <limits>
#include <random>

#include "cuda_test_util.h"
#include "decode_scenario.h"
#include "retnet/best_logits.h"

namespace retnet::cuda::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct HostRows {
    int rows = 0, V = 0;
    std::vector<float> data;  // (rows, V)
};

// Row r of a kind chosen by r: normal values (the kernel's fast path), a few values repeated
// everywhere, all equal, masks, signed zeros (its radix select), 200 levels (the fast path with
// ties at its threshold); and non-finite values.
HostRows awkward_rows(int rows, int V, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 4.0f);
    const float few[] = {-kInf, -1.5f, -0.0f, 0.0f, 2.0f, 7.25f};
    HostRows out{rows, V, std::vector<float>(static_cast<size_t>(rows) * V)};
    for (int r = 0; r < rows; ++r) {
        float* row = out.data.data() + static_cast<size_t>(r) * V;
        for (int i = 0; i < V; ++i) {
            switch (r % 6) {
                case 0: row[i] = normal(rng); break;
                case 5: row[i] = static_cast<float>(rng() % 200); break;  // ties, but few at the top
                case 1: row[i] = few[rng() % 6]; break;
                case 2: row[i] = 3.0f; break;
                case 3: row[i] = rng() % 3 ? -kInf : normal(rng); break;
                default: row[i] = rng() % 2 ? 0.0f : -0.0f; break;
            }
        }
        if (r % 7 == 6 && V > 2) {
            row[V / 2] = std::nanf("");
            row[V - 1] = kInf;
        }
    }
    return out;
}

class BestLogitsKernelTest : public CudaTest, public ::testing::WithParamInterface<std::tuple<int, int, int>> {};

TEST_P(BestLogitsKernelTest, PacksWhatTheHostTwinPacksBitForBit) {
    const auto [rows, V, count] = GetParam();
    const HostRows in = awkward_rows(rows, V, 17 + static_cast<uint64_t>(V));
    const int64_t width = best_logits_packed_width(count);
    std::vector<float> expected(static_cast<size_t>(rows * width));
    for (int r = 0; r < rows; ++r)
        pack_best_logits({in.data.data() + static_cast<size_t>(r) * V, static_cast<size_t>(V)}, count,
                         {expected.data() + r * width, static_cast<size_t>(width)});
    const auto d_logits = to_device(in.data, stream());
    DeviceBuffer<float> d_packed(expected.size());
    launch_best_logits(d_logits.get(), rows, V, count, d_packed.get(), width, stream());
    const std::vector<float> got = to_host(d_packed, stream());
    for (int r = 0; r < rows; ++r)
        for (int64_t i = 0; i < width; ++i) {
            const size_t at = static_cast<size_t>(r * width + i);
            ASSERT_EQ(std::bit_cast<uint32_t>(got[at]), std::bit_cast<uint32_t>(expected[at]))
                << "row " << r << " (kind " << r % 6 << "), packed entry " << i;
        }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BestLogitsKernelTest,
                         ::testing::Values(std::make_tuple(1, 1, 1), std::make_tuple(3, 7, 40),
                                           std::make_tuple(7, 511, 1), std::make_tuple(7, 513, 256),
                                           std::make_tuple(3, 256, 256), std::make_tuple(7, 2048, 40),
                                           std::make_tuple(14, 32000, 40), std::make_tuple(5, 100003, 256),
                                           std::make_tuple(64, 32000, 1)));

TEST(BestLogitsKernelLimits, RefusesCountsAndWidthsItCannotPack) {
    EXPECT_THROW(launch_best_logits(nullptr, 1, 10, 0, nullptr, 3, nullptr), Error);
    EXPECT_THROW(launch_best_logits(nullptr, 1, 10, 257, nullptr, 517, nullptr), Error);
    EXPECT_THROW(launch_best_logits(nullptr, 1, 10, 4, nullptr, 10, nullptr), Error);
}

// Sequences decoding together ask for their best logits; a second backend on the same model asks
// for the rows. The logits are the same kernels' in both, so the best are exactly the host's
// selection of the rows, step after step. The first backend's requests change between steps
// (rows, 40 best, 1 best, 40 best again, rows), so that a graph captured for one is never replayed
// for another (each is captured at its first step and replayed when it comes back).
class BestLogitsDecodeTest : public CudaTest, public ::testing::WithParamInterface<std::tuple<Family, bool>> {};

TEST_P(BestLogitsDecodeTest, StepsSendBackTheBestOfTheRowsTheyWould) {
    const auto [family, bf16] = GetParam();
    ModelConfig config = small_decode_config(family);
    config.vocab_size = 500;
    auto model = std::make_shared<const Model>(make_random_model(config, 5));
    CudaOptions options;
    options.bf16_weights = bf16;
    const int counts[] = {0, 40, 1, 40, 0, 1};  // per step; 0: whole rows
    for (const int slots : {1, 3, 20}) {
        auto rows = make_cuda_backend(model, options), best = make_cuda_backend(model, options);
        ForwardOptions recurrent;
        recurrent.form = Form::Recurrent;
        for (Backend* b : {rows.get(), best.get()}) b->set_slot_count(slots);
        for (int step = 0; step < static_cast<int>(std::size(counts)); ++step) {
            const int count = counts[step];
            std::vector<std::vector<int32_t>> next(static_cast<size_t>(slots));
            std::vector<BestLogits> got(static_cast<size_t>(slots));
            std::vector<SequenceRequest> asked_rows, asked_best;
            for (int s = 0; s < slots; ++s) {
                next[static_cast<size_t>(s)] = tokens_of(1, 900 + 10 * step + s);
                asked_rows.push_back({next[static_cast<size_t>(s)], s, LogitRows::Last});
                asked_best.push_back({next[static_cast<size_t>(s)], s, count > 0 ? LogitRows::LastBest : LogitRows::Last,
                                      count, count > 0 ? &got[static_cast<size_t>(s)] : nullptr});
            }
            const std::vector<Tensor> full = rows->forward_batch(asked_rows, recurrent);
            const std::vector<Tensor> mine = best->forward_batch(asked_best, recurrent);
            for (int s = 0; s < slots; ++s) {
                SCOPED_TRACE(std::to_string(slots) + " slots, step " + std::to_string(step) + ", slot " + std::to_string(s));
                const std::vector<float>& row = full[static_cast<size_t>(s)].data;
                if (count == 0) {
                    EXPECT_EQ(mine[static_cast<size_t>(s)].data, row);
                    continue;
                }
                EXPECT_EQ(mine[static_cast<size_t>(s)].dim(0), 0);
                const BestLogits expected = select_best_logits(row, count);
                const BestLogits& actual = got[static_cast<size_t>(s)];
                ASSERT_EQ(actual.ids.size(), static_cast<size_t>(count));
                EXPECT_EQ(actual.ids, expected.ids);
                EXPECT_EQ(actual.logits, expected.logits);
                EXPECT_EQ(actual.ids.front(), std::max_element(row.begin(), row.end()) - row.begin());
                EXPECT_EQ(actual.vocab_size, config.vocab_size);
                EXPECT_EQ(actual.first_non_finite, -1);
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(FamiliesAndWeights, BestLogitsDecodeTest,
                         ::testing::Combine(::testing::Values(Family::Fla, Family::TorchScale), ::testing::Bool()));

}  // namespace
}  // namespace retnet::cuda::test
