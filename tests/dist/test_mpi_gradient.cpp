// SPDX-License-Identifier: GPL-3.0-or-later
// Run as `mpirun -np 2`: the ranks' collectives over Open MPI, and the first check — the
// gradient after the all-reduce equals the single-process gradient of the whole batch. Each rank
// computes its shard's gradient, sending each layer's part as the backward finishes it (the CPU
// device's buckets); every rank also computes the whole batch alone, and compares.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "retnet/dist/ranks.h"
#include "retnet/train_device.h"

using namespace retnet;
using namespace retnet::train;

namespace {

dist::MpiRanks* g_ranks = nullptr;

ModelConfig small_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 37;
    c.d_model = 16;
    c.n_layers = 3;
    c.n_heads = 2;
    c.key_dim = 16;
    c.value_dim = 32;
    c.ffn_dim = 40;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

struct Batch {
    std::vector<int32_t> inputs, targets;  // (B, T)
    int B, T;
    BatchView view(int first, int count) const {
        const size_t offset = static_cast<size_t>(first) * static_cast<size_t>(T);
        return {inputs.data() + offset, targets.data() + offset, count, T};
    }
};

Batch random_batch(const ModelConfig& c, int B, int T) {
    std::mt19937_64 rng(9);  // the same batch on every rank
    std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
    Batch b{std::vector<int32_t>(static_cast<size_t>(B * T)), std::vector<int32_t>(static_cast<size_t>(B * T)), B, T};
    for (auto& x : b.inputs) x = tok(rng);
    for (auto& x : b.targets) x = tok(rng);
    return b;
}

// max |a − b| over max |b|.
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
        scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    }
    return worst / scale;
}

bool same_on_every_rank(std::span<const float> values) {
    const uint64_t mine = bits_hash(values);
    uint64_t root = mine;
    g_ranks->broadcast(std::span(&root, 1), 0);
    double differ = mine != root ? 1 : 0;
    g_ranks->all_reduce_sum(std::span(&differ, 1));
    return differ == 0;
}

}  // namespace

TEST(MpiRanks, CollectivesReachEveryRank) {
    Communicator& c = *g_ranks;
    ASSERT_EQ(c.size(), 2);
    std::vector<double> values = {1.0 + c.rank(), 0.5};
    c.all_reduce_sum(values);
    EXPECT_EQ(values, (std::vector<double>{3.0, 1.0}));
    std::string text = c.rank() == 0 ? std::string("rank 0's text") : std::string();
    c.broadcast(text, 0);
    EXPECT_EQ(text, "rank 0's text");
    std::vector<float> a(1000, static_cast<float>(c.rank() + 1)), b(3, 0.25f);
    c.start_all_reduce_sum(a);
    c.start_all_reduce_sum(b);
    c.wait_all();
    EXPECT_TRUE(std::all_of(a.begin(), a.end(), [](float x) { return x == 3.0f; }));
    EXPECT_EQ(b, (std::vector<float>{0.5f, 0.5f, 0.5f}));
}

// Float sums taken in another order: each gradient entry is a sum over the batch's B·T = 28 rows
// (and, inside the products, over features), and the two ranks' partial sums added differ from
// one sum only by reassociation — a few float ulps of the larger terms. Measured: 1.2e-7 of the
// gradient's largest entry; the bound is 2e-6 (≈ 28 · 2^−24, every row's rounding lost at once).
TEST(MpiRanks, AllReducedShardGradientsEqualTheWholeBatchGradient) {
    Communicator& c = *g_ranks;
    for (const int chunk : {0, 3}) {
        const ModelConfig config = small_config();
        const ParamLayout layout = make_param_layout(config);
        const std::vector<float> params = flatten_weights(make_random_model(config, 4), layout);
        const int B = 4, T = 7;
        const Batch batch = random_batch(config, B, T);
        LossOptions whole;
        whole.chunk = chunk;
        whole.dropout = 0.3;
        whole.dropout_seed = 17;
        std::vector<float> expected(params.size()), grad(params.size());
        loss_and_gradient<float>(config, layout, params.data(), batch.view(0, B), expected.data(), whole);

        const BatchShard shard = batch_shard(B, c.rank(), c.size());
        LossOptions mine = whole;
        mine.first_row = static_cast<int64_t>(shard.first) * T;
        mine.global_rows = static_cast<int64_t>(B) * T;
        int buckets = 0;
        mine.gradient_ready = [&](const GradientPart& part) {
            const auto [begin, end] = gradient_range(layout, part);
            c.start_all_reduce_sum(std::span(grad).subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin)));
            ++buckets;
        };
        loss_and_gradient<float>(config, layout, params.data(), batch.view(shard.first, shard.count), grad.data(), mine);
        c.wait_all();
        EXPECT_EQ(buckets, config.n_layers + 2);  // head, each layer, embedding
        const double diff = relative_difference(grad, expected);
        EXPECT_LE(diff, 2e-6) << "chunk " << chunk;
        if (c.rank() == 0) std::printf("chunk %d: all-reduced vs whole batch: %.2e of the largest entry\n", chunk, diff);
        EXPECT_TRUE(same_on_every_rank(grad));
    }
}

// The CPU device's own step with ranks (buckets, clipping on the summed gradient, AdamW) against
// one process with the whole batch: the same weights after three steps, to the reassociation of
// the gradient sums carried through AdamW (whose first updates are about lr·sign(g), so a relative
// change of 1e-7 in g moves a weight by ~1e-7·lr; measured 2.1e-7 absolute at lr 1e-2; bound 1e-6).
TEST(MpiRanks, DeviceStepsWithRanksEqualOneProcessWithTheWholeBatch) {
    Communicator& c = *g_ranks;
    const ModelConfig config = small_config();
    const ParamLayout layout = make_param_layout(config);
    const std::vector<float> init = flatten_weights(make_random_model(config, 5), layout);
    const int B = 4, T = 9;
    const Batch batch = random_batch(config, B, T);
    const BatchShard shard = batch_shard(B, c.rank(), c.size());
    CpuTrainDevice alone(config, layout, TrainDeviceOptions{0, 0.2, nullptr});
    CpuTrainDevice ranked(config, layout, TrainDeviceOptions{0, 0.2, &c});
    const AdamWState state = make_adamw_state(layout);
    alone.upload(init, state);
    ranked.upload(init, state);
    for (int step = 0; step < 3; ++step) {
        double norm_alone = 0, norm_ranked = 0;
        const double loss_alone = alone.step(batch.view(0, B), 0.5, AdamWConfig{}, 1e-2, 100 + step, &norm_alone);
        double loss_ranked = ranked.step(batch.view(shard.first, shard.count), 0.5, AdamWConfig{}, 1e-2, 100 + step,
                                         &norm_ranked);
        c.all_reduce_sum(std::span(&loss_ranked, 1));
        EXPECT_NEAR(loss_ranked / c.size(), loss_alone, 1e-6 * loss_alone) << "step " << step;
        EXPECT_NEAR(norm_ranked, norm_alone, 1e-5 * norm_alone) << "step " << step;
    }
    std::vector<float> p_alone, p_ranked;
    AdamWState s_alone, s_ranked;
    alone.download(p_alone, s_alone);
    ranked.download(p_ranked, s_ranked);
    double worst = 0;
    for (size_t i = 0; i < p_alone.size(); ++i) worst = std::max(worst, std::abs(double(p_alone[i]) - p_ranked[i]));
    EXPECT_LE(worst, 1e-6);
    if (c.rank() == 0) std::printf("weights after 3 steps, ranks vs alone: %.2e\n", worst);
    EXPECT_TRUE(same_on_every_rank(p_ranked));
}

// One process per rank, one MPI_Init: gtest's own main would not set MPI up. Only rank 0 prints;
// a failure on any rank fails the job (mpirun's status).
int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    std::unique_ptr<dist::MpiRanks> ranks = dist::join_mpi();
    g_ranks = ranks.get();
    if (ranks->rank() != 0) {
        ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
        delete listeners.Release(listeners.default_result_printer());
    }
    const int failed = RUN_ALL_TESTS();
    return failed;
}
