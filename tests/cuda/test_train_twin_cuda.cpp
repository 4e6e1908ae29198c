// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA trainer on the Transformer twin (its fused attention, train/train_attention.h) against
// the CPU trainer: loss, logits and gradient against loss_and_gradient<double>, with and without
// dropout; a few whole steps of the registered "cuda" device against the "cpu" device; bf16 and
// tf32 GEMMs around the fp32 attention. Skipped without a GPU.
//
// Tolerances, fp32 as in test_train_cuda.cpp: every op rounds at 6e-8 relative, the longest sums
// (GEMMs over ≤ 40 terms, attention over ≤ 70 keys × 12 dims) keep the gradient within ~1e-6 of
// the double one norm-wise; 1e-4 leaves room, while a wrong rotary base, a missing causal mask or
// a dropped gradient path misses by 1e-2 or more. Steps: AdamW's update m̂/(√v̂ + eps) is nearly
// sign(g) for |g| ≫ eps, so with the default eps a gradient entry within rounding of zero could
// move its weight by ±lr on one device and not the other; eps = 1e-3 makes the update continuous
// in g, so the weights differ by ~lr·Δg/eps ≈ 1e-6 and 1e-4 holds them to it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "cuda_test_util.h"
#include "retnet/cuda/cuda_trainer.h"
#include "retnet/train.h"
#include "retnet/train_device.h"
#include "train_test_util.h"

namespace retnet::cuda::test {
namespace {

using train::BatchView;
using train::LossOptions;
using train::ParamLayout;

struct TwinCase {
    std::string name;
    int batch = 3, seq_len = 13;
    int head_dim = 8;
    bool tied = false;
};

void PrintTo(const TwinCase& c, std::ostream* os) { *os << c.name; }

// A small Llama-style twin: H = 2 heads of head_dim (q, k, v, o of 2·head_dim), a rotary base
// other than fla's 10000 so that the trainer must use the twin's.
ModelConfig twin_config(const TwinCase& c) {
    ModelConfig m;
    m.family = Family::Fla;
    m.architecture = Architecture::Transformer;
    m.vocab_size = 37;
    m.d_model = 24;
    m.n_layers = 2;
    m.n_heads = 2;
    m.key_dim = m.value_dim = 2 * c.head_dim;
    m.ffn_dim = 40;
    m.head_norm_affine = false;
    m.tie_embeddings = c.tied;
    m.rope_theta = 500000.0;
    m.bos_token_id = 1;
    m.eos_token_id = 2;
    return m;
}

struct TwinSetup {
    ModelConfig config;
    ParamLayout layout;
    std::vector<float> params;
    Tokens tokens;
    BatchView batch;

    TwinSetup(const TwinCase& c, uint64_t param_seed, uint64_t token_seed)
        : config(twin_config(c)),
          layout(train::make_param_layout(config)),
          params(random_params(layout, param_seed)),
          tokens(random_tokens(c.batch * c.seq_len, config.vocab_size, token_seed)),
          batch(tokens.view(c.batch, c.seq_len)) {}
    TwinSetup(const TwinSetup&) = delete;  // batch points into tokens
    TwinSetup& operator=(const TwinSetup&) = delete;
};

class CudaTwinTrainGradient : public CudaTest, public ::testing::WithParamInterface<TwinCase> {};

TEST_P(CudaTwinTrainGradient, LossGradientAndLogitsMatchTheCpuDoubleReference) {
    const TwinCase& c = GetParam();
    const TwinSetup setup(c, 7, 11);
    const auto& [config, layout, params, tokens, batch] = setup;
    std::vector<double> grad_ref, logits_ref;
    const double loss_ref = cpu_reference(config, layout, params, batch, LossOptions{}, &grad_ref, &logits_ref);

    CudaTrainer trainer(config, layout);
    trainer.upload_params(params);
    const double loss_no_grad = trainer.loss_and_gradient(batch, false);
    const std::vector<float> logits = trainer.download_logits();
    const double loss = trainer.loss_and_gradient(batch, true);
    const std::vector<float> grad = trainer.download_gradient();
    const double grad_err = rel_l2_error(grad, grad_ref), logit_err = rel_max_error(logits, logits_ref);
    std::printf("[twin %s] loss %.8f (cpu double %.8f), gradient rel l2 err %.3e, logits rel max err %.3e\n",
                c.name.c_str(), loss, loss_ref, grad_err, logit_err);
    EXPECT_NEAR(loss, loss_ref, 1e-5 * loss_ref);
    EXPECT_NEAR(loss_no_grad, loss_ref, 1e-5 * loss_ref);
    EXPECT_LT(logit_err, 1e-5);
    EXPECT_LT(grad_err, 1e-4);
    expect_every_tensor_close(layout, grad, grad_ref, 1e-3);
    // No atomics anywhere: the same batch gives the same bits.
    trainer.loss_and_gradient(batch, true);
    EXPECT_TRUE(same_bits(trainer.download_gradient(), grad));

    // Dropout: the CPU's masks at the embedding, the attention branch and the FFN branch.
    LossOptions with_dropout;
    with_dropout.dropout = 0.3;
    with_dropout.dropout_seed = 0x1234567890ABCDEFULL;
    std::vector<double> grad_dropout_ref;
    const double loss_dropout_ref = cpu_reference(config, layout, params, batch, with_dropout, &grad_dropout_ref);
    // The masks matter at this size (the gradient moves by O(1)), so the comparison below can fail.
    ASSERT_GT(std::abs(loss_dropout_ref - loss_ref), 1e-4 * loss_ref);
    ASSERT_GT(rel_l2_error(grad_ref, grad_dropout_ref), 0.1);
    const double loss_dropout =
        trainer.loss_and_gradient(batch, true, TrainDropout{with_dropout.dropout, with_dropout.dropout_seed});
    EXPECT_NEAR(loss_dropout, loss_dropout_ref, 1e-5 * loss_dropout_ref);
    EXPECT_LT(rel_l2_error(trainer.download_gradient(), grad_dropout_ref), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Models, CudaTwinTrainGradient,
    ::testing::Values(TwinCase{"B3_T13", 3, 13, 8, false}, TwinCase{"B4_T1_tied", 4, 1, 8, true},
                      // 70 rows cross the kernels' 64-row tile; head dim 12 is not a multiple of 4
                      TwinCase{"B2_T70_head12_tied", 2, 70, 12, true}),
    [](const auto& case_info) { return case_info.param.name; });

class CudaTwinTrainerTest : public CudaTest {};

// The path `retnet train --arch transformer --device cuda` takes, step for step beside "cpu".
TEST_F(CudaTwinTrainerTest, RegisteredDeviceStepsMatchTheCpuDevice) {
    register_cuda_trainer();
    const TwinCase c{"steps", 2, 20, 8, false};
    const TwinSetup setup(c, 23, 24);
    const auto& [config, layout, params, tokens, batch] = setup;
    train::TrainDeviceOptions options;
    options.dropout = 0.1;
    std::unique_ptr<train::TrainDevice> cpu = train::make_train_device("cpu", config, layout, options);
    std::unique_ptr<train::TrainDevice> gpu = train::make_train_device("cuda", config, layout, options);
    for (train::TrainDevice* device : {cpu.get(), gpu.get()}) device->upload(params, train::make_adamw_state(layout));
    train::AdamWConfig adam;
    adam.eps = 1e-3;  // see the tolerances above
    for (int step = 0; step < 3; ++step) {
        const uint64_t seed = 100 + static_cast<uint64_t>(step);
        double norm_cpu = 0, norm_gpu = 0;
        const double loss_cpu = cpu->step(batch, 0.2, adam, 1e-2, seed, &norm_cpu);
        const double loss_gpu = gpu->step(batch, 0.2, adam, 1e-2, seed, &norm_gpu);
        EXPECT_NEAR(loss_gpu, loss_cpu, 1e-5 * loss_cpu) << "step " << step;
        EXPECT_NEAR(norm_gpu, norm_cpu, 1e-4 * norm_cpu) << "step " << step;
        if (step == 0) {
            EXPECT_GT(norm_cpu, 0.2) << "the steps must exercise clipping";
        }
    }
    std::vector<float> p_cpu, p_gpu;
    train::AdamWState s_cpu, s_gpu;
    cpu->download(p_cpu, s_cpu);
    gpu->download(p_gpu, s_gpu);
    EXPECT_FALSE(same_bits(p_gpu, params));  // the steps moved the weights
    EXPECT_LT(rel_max_error(p_gpu, p_cpu), 1e-4);
    EXPECT_EQ(s_gpu.step, s_cpu.step);
    EXPECT_NEAR(gpu->loss(batch), cpu->loss(batch), 1e-5 * cpu->loss(batch));
}

// bf16 or tf32 GEMM operands (8 or 11 significant bits) around the fp32 attention: the loss, a
// mean over positions, stays within 1e-2 of the double reference, the gradient's direction too.
TEST_F(CudaTwinTrainerTest, Bf16AndTf32LossesAreWithinOnePercentOfTheDoubleReference) {
    const TwinCase c{"bf16", 4, 48, 8, false};
    const TwinSetup setup(c, 3, 5);
    const auto& [config, layout, params, tokens, batch] = setup;
    std::vector<double> grad_ref;
    const double loss_ref = cpu_reference(config, layout, params, batch, LossOptions{}, &grad_ref);
    for (TrainPrecision precision : {TrainPrecision::Bf16, TrainPrecision::Tf32}) {
        CudaTrainerOptions options;
        options.precision = precision;
        CudaTrainer trainer(config, layout, options);
        trainer.upload_params(params);
        const double loss = trainer.loss_and_gradient(batch);
        const double grad_err = rel_l2_error(trainer.download_gradient(), grad_ref);
        std::printf("[twin %s] loss %.6f (cpu double %.6f), gradient rel l2 err %.3e\n",
                    precision == TrainPrecision::Bf16 ? "bf16" : "tf32", loss, loss_ref, grad_err);
        EXPECT_NEAR(loss, loss_ref, 1e-2 * loss_ref);
        EXPECT_LT(grad_err, 0.1);
    }
}

TEST_F(CudaTwinTrainerTest, RefusesAChunkSizeAndHeadsWiderThanTheKernels) {
    const ModelConfig small = twin_config(TwinCase{});
    CudaTrainerOptions chunked;
    chunked.chunk = 8;
    const ParamLayout small_layout = train::make_param_layout(small);
    EXPECT_THROW({ CudaTrainer trainer(small, small_layout, chunked); }, Error);

    ModelConfig config = small;
    config.d_model = 16;
    config.n_heads = 1;
    config.key_dim = config.value_dim = 264;
    const ParamLayout layout = train::make_param_layout(config);
    try {
        CudaTrainer trainer(config, layout);
        ADD_FAILURE() << "a 264-wide head was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("head dim 264"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace retnet::cuda::test
