// SPDX-License-Identifier: GPL-3.0-or-later
// Two GPUs as two NCCL ranks (one thread each, bootstrapped through an id file as the ranks of
// `retnet train --gpus 2` are): the gradient summed over the ranks' shards equals one GPU's gradient
// of the whole batch, every rank holds the same bits, and three steps of the two give one GPU's
// weights. Skipped without two GPUs (or without NCCL in the build).
#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include <unistd.h>

#include "cuda_test_util.h"
#include "retnet/communicator.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/cuda_trainer.h"
#include "retnet/cuda/nccl_ranks.h"

namespace retnet::cuda {
namespace {

ModelConfig ddp_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 97;
    c.d_model = 64;
    c.n_layers = 3;
    c.n_heads = 4;
    c.key_dim = 64;
    c.value_dim = 128;
    c.ffn_dim = 160;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

class TwoGpuTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (cuda_device_count() < 2) GTEST_SKIP() << "needs two GPUs, this host shows " << cuda_device_count();
        if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL";
        id_file_ = (std::filesystem::temp_directory_path() / ("retnet_nccl_id_" + std::to_string(::getpid()))).string();
        std::filesystem::remove(id_file_);
    }
    void TearDown() override { std::filesystem::remove(id_file_); }

    // fn(rank, communicator) on two threads, one per GPU; their results in rank order.
    template <typename Fn>
    auto on_two_ranks(const Fn& fn) {
        auto run = [&](int rank) {
            std::unique_ptr<train::Communicator> comm = nccl_ranks_from_file(rank, 2, rank, id_file_, 60);
            return fn(rank, *comm);
        };
        auto other = std::async(std::launch::async, run, 1);
        auto first = run(0);
        return std::pair{std::move(first), other.get()};
    }

    std::string id_file_;
};

struct Data {
    std::vector<int32_t> inputs, targets;  // (B, T)
    int B = 4, T = 37;
    train::BatchView view(int first, int count) const {
        const size_t offset = static_cast<size_t>(first) * static_cast<size_t>(T);
        return {inputs.data() + offset, targets.data() + offset, count, T};
    }
};

Data random_data(const ModelConfig& c) {
    Data d;
    std::mt19937_64 rng(5);
    std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
    d.inputs.resize(static_cast<size_t>(d.B * d.T));
    d.targets.resize(d.inputs.size());
    for (auto& x : d.inputs) x = tok(rng);
    for (auto& x : d.targets) x = tok(rng);
    return d;
}

// fp32 without TF32 (the parity mode): the sums over the batch's rows are cuBLAS's and the fixed
// two-stage reductions, in another grouping on each rank than over the whole batch; NCCL adds the
// two shards. Bound 2e-6 of the largest entry, as on the CPU (test_mpi_gradient.cpp).
TEST_F(TwoGpuTest, SummedShardGradientsEqualOneGpusWholeBatchGradient) {
    const ModelConfig config = ddp_config();
    const train::ParamLayout layout = train::make_param_layout(config);
    const std::vector<float> params = train::flatten_weights(make_random_model(config, 3), layout);
    const Data data = random_data(config);
    const TrainDropout dropout{0.2, 31};
    std::vector<float> whole;
    {
        CudaTrainer alone(config, layout, CudaTrainerOptions{0, TrainPrecision::Fp32, 0, 0.2, nullptr});
        alone.upload_params(params);
        alone.loss_and_gradient(data.view(0, data.B), true, dropout);
        whole = alone.download_gradient();
    }
    const auto [g0, g1] = on_two_ranks([&](int rank, train::Communicator& comm) {
        CudaTrainer trainer(config, layout, CudaTrainerOptions{0, TrainPrecision::Fp32, 0, 0.2, &comm});
        trainer.upload_params(params);
        trainer.loss_and_gradient(data.view(rank * 2, 2), true, dropout);
        return trainer.download_gradient();
    });
    EXPECT_LE(test::rel_max_error(g0, whole), 2e-6);
    EXPECT_EQ(train::bits_hash(g0), train::bits_hash(g1)) << "the ranks hold different gradients";
}

// Three AdamW steps (ε 1e-4, so that entries whose terms cancel to ~ε do not magnify the rounding:
// docs/training.md) with the two GPUs against one: the weights within 3e-5, as on the CPU.
TEST_F(TwoGpuTest, TwoGpusTrainLikeOneWithTheSameGlobalBatch) {
    const ModelConfig config = ddp_config();
    const train::ParamLayout layout = train::make_param_layout(config);
    const std::vector<float> params = train::flatten_weights(make_random_model(config, 4), layout);
    const Data data = random_data(config);
    train::AdamWConfig adamw;
    adamw.eps = 1e-4;
    const auto train3 = [&](train::Communicator* comm, int first, int count) {
        CudaTrainer trainer(config, layout, CudaTrainerOptions{0, TrainPrecision::Fp32, 0, 0.1, comm});
        trainer.upload(params, train::make_adamw_state(layout));
        for (int step = 0; step < 3; ++step) trainer.step(data.view(first, count), 1.0, adamw, 1e-2, 70 + step, nullptr);
        return trainer.download_params();
    };
    const std::vector<float> alone = train3(nullptr, 0, data.B);
    const auto [p0, p1] = on_two_ranks([&](int rank, train::Communicator& comm) { return train3(&comm, rank * 2, 2); });
    double worst = 0;
    for (size_t i = 0; i < alone.size(); ++i) worst = std::max(worst, std::abs(double(alone[i]) - p0[i]));
    EXPECT_LE(worst, 3e-5);
    EXPECT_EQ(train::bits_hash(p0), train::bits_hash(p1)) << "the ranks hold different weights";
}

}  // namespace
}  // namespace retnet::cuda
