// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU as a training device: the trainer's loss/gradient, clipping, AdamW and averaging
// (train.h) on the device's own copy of the state, so the loop treats it like any other device.
#include <utility>

#include "retnet/error.h"
#include "retnet/train_device.h"
#include "retnet/train_ops.h"

namespace retnet::train {

CpuTrainDevice::CpuTrainDevice(const ModelConfig& config, const ParamLayout& layout, const TrainDeviceOptions& options)
    : config_(config), layout_(layout), options_(options) {
    if (!(options.dropout >= 0.0 && options.dropout < 1.0)) throw Error("training: dropout must be in [0, 1)");
    check_chunk(config, options.chunk);
    if (make_param_layout(config).total != layout.total)  // validates the config too
        throw Error("training: the parameter layout does not match the model config");
    // Nothing is allocated here: upload() brings the parameters and moments (zero-filling three
    // copies of a large model first kept a Ctrl-C during a resume waiting for seconds), and the
    // first step sizes the gradient.
}

std::string CpuTrainDevice::description() const { return "cpu"; }

void CpuTrainDevice::upload(std::span<const float> params, const AdamWState& state) {
    const size_t n = static_cast<size_t>(layout_.total);
    if (params.size() != n || state.m.size() != n || state.v.size() != n)
        throw Error("training: parameters or AdamW moments do not match the parameter count");
    params_.assign(params.begin(), params.end());
    state_ = state;
}

void CpuTrainDevice::download(std::vector<float>& params, AdamWState& state) {
    params = params_;
    state = state_;
}

double CpuTrainDevice::loss(const BatchView& batch) {
    if (params_.size() != static_cast<size_t>(layout_.total)) throw Error("training: a loss before the upload");
    LossOptions lo;
    lo.cancelled = loss_cancelled_;
    return loss_and_gradient<float>(config_, layout_, params_.data(), batch, nullptr, lo);
}

double CpuTrainDevice::step(const BatchView& batch, double max_norm, const AdamWConfig& adamw, double lr,
                            uint64_t dropout_seed, double* grad_norm) {
    if (params_.size() != static_cast<size_t>(layout_.total)) throw Error("training: a step before the upload");
    grad_.resize(params_.size());
    LossOptions lo;
    lo.chunk = options_.chunk;
    lo.dropout = options_.dropout;
    lo.dropout_seed = dropout_seed;
    Communicator* comm = options_.communicator;
    if (comm && comm->size() > 1) {
        const int64_t rows = static_cast<int64_t>(batch.batch) * batch.seq_len;
        lo.first_row = comm->rank() * rows;
        lo.global_rows = comm->size() * rows;
        // Each layer's gradient leaves for the other ranks as soon as the backward is past it.
        lo.gradient_ready = [&](const GradientPart& part) {
            const auto [begin, end] = gradient_range(layout_, part);
            comm->start_all_reduce_sum(std::span(grad_).subspan(static_cast<size_t>(begin), static_cast<size_t>(end - begin)));
        };
    }
    const double loss = loss_and_gradient<float>(config_, layout_, params_.data(), batch, grad_.data(), lo);
    if (lo.gradient_ready) comm->wait_all();
    const double norm = clip_grad_norm(grad_, max_norm);
    if (grad_norm) *grad_norm = norm;
    adamw_update(params_, grad_, state_, layout_, adamw, lr);
    if (average_decay_ > 0) update_average(average_, params_, average_decay_at(average_decay_, state_.step));
    return loss;
}

void CpuTrainDevice::set_average(std::span<const float> average, double decay) {
    if (static_cast<int64_t>(average.size()) != layout_.total)
        throw Error("training: the parameter average does not match the parameter count");
    if (!(decay > 0 && decay < 1)) throw Error("training: average decay must be in (0, 1)");
    average_.assign(average.begin(), average.end());
    average_decay_ = decay;
}

void CpuTrainDevice::download_average(std::vector<float>& average) {
    if (average_decay_ <= 0) throw Error("training: no parameter average (set_average was not called)");
    average = average_;
}

void CpuTrainDevice::swap_average() {
    if (average_decay_ <= 0) throw Error("training: no parameter average (set_average was not called)");
    std::swap(params_, average_);
}

}  // namespace retnet::train
