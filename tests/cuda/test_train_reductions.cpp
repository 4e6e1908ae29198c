// SPDX-License-Identifier: GPL-3.0-or-later
// The training reductions without atomics (embedding.cu, norms.cu, train/train_reductions.cu): the host
// grouping of rows by token, the embedding gradient, partial-sum columns and the squared norm,
// each against a double sum on the host, and each repeated to show it gives the same bits.
//
// Tolerances: every partial and final sum of the embedding gradient adds at most a few hundred
// float terms of |x| ≤ 1 (rounding ≤ n·6e-8 relative, here < 3e-5 of the sum's scale); the
// column and squared-norm sums accumulate in double, so they land within float rounding of the
// result (6e-8) and 1e-12 respectively.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cuda_test_util.h"
#include "retnet/error.h"
#include "layer_kernels.h"
#include "train/train_kernels.h"

namespace retnet::cuda::test {
namespace {

namespace tk = train_kernels;
namespace lk = layer_kernels;

TEST(TokenRowGroups, SortsRowsByTokenThenPositionAndCutsSegments) {
    const std::vector<int32_t> tokens{3, 1, 3, 3, 0, 1};
    const lk::TokenRowGroups g = lk::group_rows_by_token(tokens.data(), 6, 5, 2);
    EXPECT_EQ(g.rows, (std::vector<int32_t>{4, 1, 5, 0, 2, 3}));
    // Token 0: [0, 1); token 1: [1, 3); token 3: [3, 5) and [5, 6); tokens 2 and 4 own none.
    EXPECT_EQ(g.segment_start, (std::vector<int32_t>{0, 1, 3, 5, 6}));
    EXPECT_EQ(g.token_segment, (std::vector<int32_t>{0, 1, 2, 2, 4, 4}));
    EXPECT_LE(static_cast<int64_t>(g.segment_start.size()) - 1, lk::max_token_segments(6, 5));

    const lk::TokenRowGroups empty = lk::group_rows_by_token(tokens.data(), 0, 5);
    EXPECT_EQ(empty.segment_start, (std::vector<int32_t>{0}));
    const std::vector<int32_t> bad{0, 5};
    EXPECT_THROW(lk::group_rows_by_token(bad.data(), 2, 5), Error);
    EXPECT_THROW(lk::group_rows_by_token(tokens.data(), 6, 5, 0), Error);
}

class TrainReductionTest : public CudaTest {};

TEST_F(TrainReductionTest, EmbeddingGradientSumsEachTokensRowsOnce) {
    // Skewed counts: token 2 holds ~half the rows (many segments), some tokens none; d = 40 is
    // not a multiple of the block.
    const int V = 11, d = 40;
    const int64_t n = 1500;
    std::mt19937_64 rng(5);
    std::uniform_int_distribution<int32_t> any(0, 7);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int32_t& t : tokens) t = rng() % 2 ? 2 : any(rng);
    const std::vector<float> dx = random_vector(static_cast<size_t>(n * d), 6);
    const std::vector<float> initial = random_vector(static_cast<size_t>(V * d), 7);  // tied lm_head gradient

    const lk::TokenRowGroups groups = lk::group_rows_by_token(tokens.data(), n, V);
    ASSERT_GT(groups.token_segment[3] - groups.token_segment[2], 10);  // token 2 spans many segments
    auto rows = to_device(groups.rows, stream());
    auto starts = to_device(groups.segment_start, stream());
    auto owners = to_device(groups.token_segment, stream());
    const lk::DeviceTokenRowGroups device{rows.get(), starts.get(), owners.get(),
                                          static_cast<int64_t>(groups.segment_start.size()) - 1, V};
    auto d_dx = to_device(dx, stream());
    DeviceBuffer<float> partial(static_cast<size_t>(lk::max_token_segments(n, V) * d));
    std::vector<std::vector<float>> results;
    for (int repeat = 0; repeat < 2; ++repeat) {
        auto d_embed = to_device(initial, stream());
        lk::embedding_backward(device, d_dx.get(), partial.get(), d_embed.get(), d, stream());
        results.push_back(to_host(d_embed, stream()));
    }
    std::vector<double> expected(initial.begin(), initial.end());
    for (int64_t r = 0; r < n; ++r)
        for (int i = 0; i < d; ++i)
            expected[static_cast<size_t>(tokens[static_cast<size_t>(r)] * d + i)] += dx[static_cast<size_t>(r * d + i)];
    EXPECT_LT(rel_max_error(results[0], expected), 3e-5);
    EXPECT_EQ(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)), 0);
    // Tokens that never occur keep the initial gradient exactly.
    for (int v : {8, 9, 10})
        for (int i = 0; i < d; ++i)
            EXPECT_EQ(results[0][static_cast<size_t>(v * d + i)], initial[static_cast<size_t>(v * d + i)]);
}

TEST_F(TrainReductionTest, PartialColumnsAndSquaredNormMatchDoubleSums) {
    const int64_t parts = 777;
    const int cols = 130;
    const std::vector<float> p = random_vector(static_cast<size_t>(parts * cols), 8);
    std::vector<float> out_initial(static_cast<size_t>(cols), 0.5f);
    auto d_p = to_device(p, stream());
    auto d_out = to_device(out_initial, stream());
    lk::sum_partials(d_p.get(), parts, cols, d_out.get(), stream());
    const std::vector<float> sums = to_host(d_out, stream());
    for (int i = 0; i < cols; ++i) {
        double expected = 0.5;
        for (int64_t k = 0; k < parts; ++k) expected += p[static_cast<size_t>(k * cols + i)];
        EXPECT_NEAR(sums[static_cast<size_t>(i)], expected, 1e-6 * (1.0 + std::abs(expected))) << i;
    }

    for (const int64_t n : {int64_t{1}, int64_t{255}, int64_t{1'000'003}}) {
        const std::vector<float> g = random_vector(static_cast<size_t>(n), static_cast<uint64_t>(n));
        auto d_g = to_device(g, stream());
        DeviceBuffer<double> partials(tk::kSumOfSquaresPartials), total(1);
        double expected = 0.0;
        for (float x : g) expected += static_cast<double>(x) * x;
        double first = 0.0, second = 0.0;
        tk::sum_of_squares(d_g.get(), n, partials.get(), total.get(), stream());
        first = to_host(total, stream())[0];
        tk::sum_of_squares(d_g.get(), n, partials.get(), total.get(), stream());
        second = to_host(total, stream())[0];
        EXPECT_NEAR(first, expected, 1e-12 * expected) << n;
        EXPECT_EQ(std::memcmp(&first, &second, sizeof(double)), 0) << n;
    }
}

}  // namespace
}  // namespace retnet::cuda::test
