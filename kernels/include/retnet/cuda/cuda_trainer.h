// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Training the fla-layout RetNet on one GPU: the same loss, gradient, clipping and AdamW as the CPU
// trainer (retnet/train.h), over the same flat parameter vector (ParamLayout), with the parameters,
// the AdamW moments, the gradient and every activation resident on the device. No CUDA types here,
// so the CLI includes it without the toolkit's headers.
//
// Precision: the parameters, moments and gradient are fp32 (the parameters are the fp32 master
// weights). The GEMMs run in fp32 (Fp32: no TF32, the parity mode the tests use), TF32 tensor cores
// (Tf32), or bf16 tensor cores with fp32 accumulation (Bf16: the projections multiply bf16 copies of
// their operands, and the activations only element-wise ops read — the gate, the retention output,
// the FFN's two projections — are kept in bf16; docs/training.md). Norms, softmax, rotary, decay and
// the optimizer compute in fp32 everywhere.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "retnet/train.h"
#include "retnet/train_device.h"

namespace retnet::cuda {

enum class TrainPrecision { Fp32, Tf32, Bf16 };

struct CudaTrainerOptions {
    int device = 0;  // CUDA device ordinal
    TrainPrecision precision = TrainPrecision::Fp32;
    int chunk = 0;  // 0: parallel retention (one T×T block per head); > 0: chunkwise, this chunk size
                    // (the Transformer twin's attention has no chunks: 0)
    double dropout = 0;  // the rate step() applies (TrainDevice); in [0, 1)
    // GPU ranks of a data-parallel job (null or one rank: this GPU alone). The trainer uses GPU
    // communicator->local_rank() instead of `device`, trains on its shard of each global batch, and
    // sums every gradient bucket over the ranks with NCCL as the backward finishes it: directly
    // over the ranks of `retnet train --gpus N` (nccl_ranks.h), else over an NCCL communicator it
    // sets up through the given ranks (mpirun's).
    train::Communicator* communicator = nullptr;
};

// Training-only dropout of one call (train::LossOptions::dropout and ::dropout_seed): the CPU
// trainer's masks, sites and 1/(1 − rate) scaling (retnet/dropout_mask.h). rate 0: none.
struct TrainDropout {
    double rate = 0;
    uint64_t seed = 0;
};

// The training devices "cuda", "cuda-tf32" and "cuda-bf16" (retnet/train_device.h) are this class.
class CudaTrainer final : public train::TrainDevice {
public:
    // Allocates the parameters, gradient and moments on the device (zeros; call upload next).
    // Throws retnet::Error when no device is usable, the config is not trainable (a twin's head
    // dim above the attention kernels' 256 included), the chunk size is negative or set for the
    // twin, or the dropout rate is outside [0, 1).
    CudaTrainer(const ModelConfig& config, const train::ParamLayout& layout, CudaTrainerOptions options = {});
    ~CudaTrainer() override;
    CudaTrainer(const CudaTrainer&) = delete;
    CudaTrainer& operator=(const CudaTrainer&) = delete;

    // e.g. "cuda-bf16 (NVIDIA H200)"
    std::string description() const override;
    // Copies the parameters and the optimizer state (moments and step count) to the device.
    void upload(std::span<const float> params, const train::AdamWState& state) override;
    void upload_params(std::span<const float> params);
    // Copies them back (resizing the vectors to layout.total).
    void download(std::vector<float>& params, train::AdamWState& state) override;
    std::vector<float> download_params() const;

    // Parameter averaging (train::update_average): from now on every adamw_step ends with
    // update_average(average, params, average_decay_at(decay, step)) on the device.
    void set_average(std::span<const float> average, double decay) override;
    void download_average(std::vector<float>& average) override;
    // Exchanges the parameters and the average (no copy), so a loss measures the average.
    void swap_average() override;

    // TrainDevice: loss_and_gradient without the gradient; train_step with the options' dropout
    // rate and this seed.
    double loss(const train::BatchView& batch) override;
    double step(const train::BatchView& batch, double max_norm, const train::AdamWConfig& adamw, double lr,
                uint64_t dropout_seed, double* grad_norm) override;

    // Forward + backward of one batch: returns the mean cross-entropy (nats) and leaves ∂loss/∂params
    // in the device gradient (overwritten). With want_gradient = false only the loss is computed.
    // With ranks, `batch` is this rank's shard and the gradient is the global batch's (summed over
    // the ranks); the loss is the shard's.
    // `dropout` as loss_and_gradient's LossOptions (validation passes none).
    double loss_and_gradient(const train::BatchView& batch, bool want_gradient = true,
                             const TrainDropout& dropout = {});
    std::vector<float> download_gradient() const;
    // The (B·T, V) logits of the last loss_and_gradient call without the gradient.
    std::vector<float> download_logits() const;

    // Scales the device gradient so its global L2 norm is at most max_norm (≤ 0: no clipping);
    // returns the norm before clipping.
    double clip_grad_norm(double max_norm);
    // One AdamW update of the device parameters with the device gradient (as train::adamw_update),
    // then the average's update when set_average was called.
    void adamw_step(const train::AdamWConfig& config, double lr);
    int64_t adamw_steps() const;

    // loss_and_gradient + clip_grad_norm + adamw_step, the same parameters and moments bit for bit
    // (the update clips as it reads, so the device gradient is left unclipped); *grad_norm gets the
    // norm before clipping.
    double train_step(const train::BatchView& batch, double max_norm, const train::AdamWConfig& config,
                      double lr, double* grad_norm = nullptr, const TrainDropout& dropout = {});

    const CudaTrainerOptions& options() const;
    std::string device_name() const;

private:
    // adamw_step from the gradient clipped by clip_sum_sq's norm (null: as it is).
    void update(const train::AdamWConfig& config, double lr, const double* clip_sum_sq, double max_norm);
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// "cuda" → Fp32, "cuda-tf32" → Tf32, "cuda-bf16" → Bf16; throws retnet::Error otherwise.
TrainPrecision train_precision_from_device(const std::string& device);

// Throws retnet::Error "CUDA training unavailable: <why>" when no CUDA device can be used: what
// making a CudaTrainer checks first, for callers that would rather ask before costly set-up.
void require_cuda_training_device();

// Registers the training devices "cuda", "cuda-tf32" and "cuda-bf16" (retnet/train_device.h).
// Idempotent; the CUDA module calls it (retnet/cuda/module.h). Using one without a GPU throws a
// one-line error.
void register_cuda_trainer();

}  // namespace retnet::cuda
