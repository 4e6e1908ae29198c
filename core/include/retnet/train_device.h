// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Training devices: a device holds its own copy of the parameters and the AdamW state and runs
// whole steps (loss and gradient, clipping, AdamW) — the math of loss_and_gradient +
// clip_grad_norm + adamw_update. The training loop runs every step through one. "cpu"
// (CpuTrainDevice) is built into core; other devices (the CUDA trainer) register themselves, at
// start-up or through the device loader of retnet/forward.h, so core never depends on them.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "retnet/communicator.h"
#include "retnet/train.h"

namespace retnet::train {

class TrainDevice {
public:
    virtual ~TrainDevice() = default;
    // One line for logs, e.g. "cuda-bf16 (NVIDIA H200)".
    virtual std::string description() const = 0;
    virtual void upload(std::span<const float> params, const AdamWState& state) = 0;
    virtual void download(std::vector<float>& params, AdamWState& state) = 0;
    // The mean loss of a batch with the device's parameters (no gradient, no update): validation.
    virtual double loss(const BatchView& batch) = 0;
    // One step; returns the loss before the update, *grad_norm the gradient norm before clipping.
    // dropout_seed is the step's LossOptions::dropout_seed (the masks, when made with dropout > 0).
    // With ranks (TrainDeviceOptions::communicator), `batch` is this rank's shard of the global
    // batch, the gradient is summed over the ranks before clipping, and the loss is the shard's.
    virtual double step(const BatchView& batch, double max_norm, const AdamWConfig& adamw, double lr,
                        uint64_t dropout_seed, double* grad_norm) = 0;

    // Parameter averaging (TrainOptions::average_decay): set_average uploads the average and makes
    // every later step() end with update_average(average, params, average_decay_at(decay, step)).
    virtual void set_average(std::span<const float> average, double decay) = 0;
    virtual void download_average(std::vector<float>& average) = 0;
    // Exchanges the parameters and the average, so loss() measures the average; again to undo.
    virtual void swap_average() = 0;
    // Asked by loss() between layers where the device can (the CPU device; elsewhere a batch is
    // short): true ends it with retnet::Cancelled. A lone process's validation sets it, so that a
    // batch of long windows does not hold Ctrl-C for seconds; ranks finish a batch together.
    virtual void set_loss_cancelled(std::function<bool()> cancelled) { (void)cancelled; }
};

struct TrainDeviceOptions {
    int chunk = 0;       // 0: parallel retention; > 0: chunkwise with this chunk size
    double dropout = 0;  // LossOptions::dropout; a device that cannot apply it throws when > 0
    // The ranks of a data-parallel job (retnet/communicator.h), which outlive the device; null or
    // one rank: a single process. Every rank's shard is the same size.
    Communicator* communicator = nullptr;
};

// The CPU trainer's functions (train.h) on the device's own copy of the parameters, moments and
// average. loss() runs the parallel form whatever the chunk option, as evaluate_text does.
class CpuTrainDevice final : public TrainDevice {
public:
    // Throws retnet::Error for a dropout outside [0, 1) or a config the trainer does not cover.
    CpuTrainDevice(const ModelConfig& config, const ParamLayout& layout, const TrainDeviceOptions& options);
    std::string description() const override;
    void upload(std::span<const float> params, const AdamWState& state) override;
    void download(std::vector<float>& params, AdamWState& state) override;
    double loss(const BatchView& batch) override;
    double step(const BatchView& batch, double max_norm, const AdamWConfig& adamw, double lr,
                uint64_t dropout_seed, double* grad_norm) override;
    void set_average(std::span<const float> average, double decay) override;
    void download_average(std::vector<float>& average) override;
    void swap_average() override;
    void set_loss_cancelled(std::function<bool()> cancelled) override { loss_cancelled_ = std::move(cancelled); }

private:
    ModelConfig config_;
    ParamLayout layout_;
    TrainDeviceOptions options_;
    std::vector<float> params_, grad_;  // (layout.total) each
    AdamWState state_;
    std::vector<float> average_;  // (layout.total) after set_average
    double average_decay_ = 0;    // 0: no average
    std::function<bool()> loss_cancelled_;
};

using TrainDeviceFactory = std::function<std::unique_ptr<TrainDevice>(
    const ModelConfig&, const ParamLayout&, const TrainDeviceOptions&)>;
void register_train_device(const std::string& name, TrainDeviceFactory factory);
// "cpu" first, then the registered devices in name order.
std::vector<std::string> train_devices();
// A CpuTrainDevice for "cpu". Throws retnet::Error for an unknown name (listing the known ones)
// or when the device cannot be used (the factory's message).
std::unique_ptr<TrainDevice> make_train_device(const std::string& name, const ModelConfig& config,
                                               const ParamLayout& layout, const TrainDeviceOptions& options);

}  // namespace retnet::train
