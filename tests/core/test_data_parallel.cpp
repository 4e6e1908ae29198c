// SPDX-License-Identifier: GPL-3.0-or-later
// The math of data parallelism without any transport: the shards of a global batch, their
// gradients summed, equal the whole batch's gradient (in double, to rounding); the parts that
// train_backward reports as done cover the parameters exactly once, in the order it finishes them.
// The ranks as processes (Open MPI) are tests/dist.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "retnet/communicator.h"
#include "retnet/error.h"
#include "retnet/train.h"

using namespace retnet;
using namespace retnet::train;

namespace {

ModelConfig tiny_config(bool tied) {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_layers = 3;
    c.n_heads = 2;
    c.key_dim = 8;
    c.value_dim = 12;
    c.ffn_dim = 10;
    c.tie_embeddings = tied;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

struct Batch {
    std::vector<int32_t> inputs, targets;  // (B, T)
    int B, T;
    BatchView view(int first = 0, int count = -1) const {
        const size_t offset = static_cast<size_t>(first) * static_cast<size_t>(T);
        return {inputs.data() + offset, targets.data() + offset, count < 0 ? B : count, T};
    }
};

Batch random_batch(const ModelConfig& c, int B, int T, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
    Batch b{std::vector<int32_t>(static_cast<size_t>(B * T)), std::vector<int32_t>(static_cast<size_t>(B * T)), B, T};
    for (auto& x : b.inputs) x = tok(rng);
    for (auto& x : b.targets) x = tok(rng);
    return b;
}

}  // namespace

TEST(DataParallel, BatchShardsSplitTheGlobalBatchInOrder) {
    EXPECT_EQ(batch_shard(8, 0, 1).first, 0);
    EXPECT_EQ(batch_shard(8, 0, 1).count, 8);
    EXPECT_EQ(batch_shard(8, 2, 4).first, 4);
    EXPECT_EQ(batch_shard(8, 2, 4).count, 2);
    EXPECT_EQ(batch_shard(6, 1, 3).first, 2);
    try {
        batch_shard(3, 0, 2);
        FAIL() << "a batch of 3 split over 2 ranks";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "--batch 3 cannot be split over 2 ranks: the global batch must be a multiple of the number of ranks");
    }
    EXPECT_THROW(batch_shard(4, 2, 2), Error);
}

TEST(DataParallel, GradientPartsCoverEveryParameterOnceInBackwardOrder) {
    for (const bool tied : {false, true}) {
        const ModelConfig config = tiny_config(tied);
        const ParamLayout layout = make_param_layout(config);
        const std::vector<float> params = flatten_weights(make_random_model(config, 1), layout);
        const Batch batch = random_batch(config, 2, 5, 7);
        std::vector<float> grad(params.size());
        std::vector<int> covered(params.size(), 0);
        std::vector<std::string> order;
        std::vector<std::pair<int64_t, std::vector<float>>> final_checks;  // (begin, values when reported)
        LossOptions options;
        options.gradient_ready = [&](const GradientPart& part) {
            const auto [begin, end] = gradient_range(layout, part);
            for (int64_t i = begin; i < end; ++i) covered[static_cast<size_t>(i)] += 1;
            order.push_back(part.kind == GradientPart::Kind::Head        ? "head"
                            : part.kind == GradientPart::Kind::Embedding ? "embedding"
                                                                         : std::to_string(part.layer));
            // A part is final when reported: the rest of the backward leaves it alone.
            const std::vector<float> snapshot(grad.begin() + begin, grad.begin() + end);
            final_checks.push_back({begin, snapshot});
        };
        loss_and_gradient<float>(config, layout, params.data(), batch.view(), grad.data(), options);
        EXPECT_EQ(order, (std::vector<std::string>{"head", "2", "1", "0", "embedding"})) << "tied " << tied;
        EXPECT_TRUE(std::all_of(covered.begin(), covered.end(), [](int n) { return n == 1; })) << "tied " << tied;
        for (const auto& [begin, snapshot] : final_checks)
            EXPECT_TRUE(std::equal(snapshot.begin(), snapshot.end(), grad.begin() + begin)) << "part at " << begin;
    }
}

// Shard r of N computes rows [r·B/N, (r+1)·B/N) with the global batch's normalization and dropout
// rows; summed over the shards (the all-reduce) that is the whole batch's gradient. In double the
// only difference is the order of the sums over rows: measured ≤ 3e-16 of the gradient's scale.
TEST(DataParallel, ShardGradientsSumToTheWholeBatchGradient) {
    for (const int chunk : {0, 3}) {
        const ModelConfig config = tiny_config(false);
        const ParamLayout layout = make_param_layout(config);
        const std::vector<float> weights = flatten_weights(make_random_model(config, 2), layout);
        const std::vector<double> params(weights.begin(), weights.end());
        const int B = 4, T = 7;
        const Batch batch = random_batch(config, B, T, 3);
        LossOptions whole;
        whole.chunk = chunk;
        whole.dropout = 0.3;
        whole.dropout_seed = 11;
        std::vector<double> expected(params.size());
        const double loss = loss_and_gradient<double>(config, layout, params.data(), batch.view(), expected.data(), whole);
        for (const int ranks : {2, 4}) {
            std::vector<double> summed(params.size(), 0.0), part(params.size());
            double loss_sum = 0;
            for (int r = 0; r < ranks; ++r) {
                const BatchShard shard = batch_shard(B, r, ranks);
                LossOptions o = whole;
                o.first_row = static_cast<int64_t>(shard.first) * T;
                o.global_rows = static_cast<int64_t>(B) * T;
                loss_sum += loss_and_gradient<double>(config, layout, params.data(), batch.view(shard.first, shard.count),
                                                      part.data(), o);
                for (size_t i = 0; i < part.size(); ++i) summed[i] += part[i];
            }
            double scale = 0, worst = 0;
            for (size_t i = 0; i < expected.size(); ++i) {
                scale = std::max(scale, std::abs(expected[i]));
                worst = std::max(worst, std::abs(summed[i] - expected[i]));
            }
            EXPECT_GT(scale, 1e-3);
            EXPECT_LE(worst, 1e-14 * scale) << ranks << " ranks, chunk " << chunk;
            // The shards' losses are their own means; their mean is the whole batch's.
            EXPECT_NEAR(loss_sum / ranks, loss, 1e-14 * loss) << ranks << " ranks, chunk " << chunk;
        }
    }
}

// Without the shard's dropout rows the masks would repeat the first rows' in every shard: the
// whole batch's masks are not the shards' then, and the gradients differ.
TEST(DataParallel, ShardsDrawTheGlobalBatchsDropoutMasks) {
    const ModelConfig config = tiny_config(false);
    const ParamLayout layout = make_param_layout(config);
    const std::vector<float> weights = flatten_weights(make_random_model(config, 2), layout);
    const std::vector<double> params(weights.begin(), weights.end());
    const Batch batch = random_batch(config, 2, 5, 4);
    LossOptions whole;
    whole.dropout = 0.5;
    whole.dropout_seed = 5;
    const double expected = loss_and_gradient<double>(config, layout, params.data(), batch.view(), nullptr, whole);
    LossOptions second = whole;
    second.global_rows = 10;
    const double first_half = loss_and_gradient<double>(config, layout, params.data(), batch.view(0, 1), nullptr, second);
    second.first_row = 5;
    const double second_half = loss_and_gradient<double>(config, layout, params.data(), batch.view(1, 1), nullptr, second);
    EXPECT_NEAR((first_half + second_half) / 2, expected, 1e-14);
    second.first_row = 0;  // the first row's masks again
    const double wrong = loss_and_gradient<double>(config, layout, params.data(), batch.view(1, 1), nullptr, second);
    EXPECT_GT(std::abs((first_half + wrong) / 2 - expected), 1e-6);
}
