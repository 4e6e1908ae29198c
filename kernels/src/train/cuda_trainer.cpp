// SPDX-License-Identifier: GPL-3.0-or-later
// CudaTrainer: the core's training pass (retnet/train_ops.h) over the GPU's ops (CudaTrainOps), the
// parameters, gradient and AdamW moments resident on the device, plus gradient clipping, AdamW
// and parameter averaging on the device.
#include "retnet/cuda/cuda_trainer.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "../cuda_check.h"
#include "../device_buffer.h"
#include "../dist/gradient_sync.h"
#include "retnet/cuda/module.h"
#include "cuda_train_ops.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/error.h"
#include "retnet/train_device.h"
#include "retnet/train_ops.h"
#include "train_attention.h"
#include "train_kernels.h"

namespace retnet::cuda {

namespace tk = train_kernels;
using train::BatchView;

TrainPrecision train_precision_from_device(const std::string& device) {
    if (device == "cuda") return TrainPrecision::Fp32;
    if (device == "cuda-tf32") return TrainPrecision::Tf32;
    if (device == "cuda-bf16") return TrainPrecision::Bf16;
    throw Error("unknown CUDA training device '" + device + "' (expected cuda, cuda-tf32 or cuda-bf16)");
}

struct CudaTrainer::Impl {
    ModelConfig config;
    train::ParamLayout layout;
    CudaTrainerOptions options;
    std::unique_ptr<CudaStream> stream_owner;
    std::unique_ptr<CublasHandle> cublas_owner;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    std::unique_ptr<CudaTrainOps> ops;  // the activations of the current batch shape

    DeviceBuffer<float> params, grad, m, v;  // (layout.total) each
    DeviceBuffer<float> average;             // (layout.total) when average_decay > 0
    double average_decay = 0;
    DeviceBuffer<uint8_t> decays;            // (layout.total) 1 where AdamW decays the weight
    DeviceBuffer<double> sum_sq;             // (1)
    DeviceBuffer<double> sum_sq_partials;    // (kSumOfSquaresPartials)
    int64_t adam_step = 0;
    TrainDropout dropout;  // of the last forward; its backward uses the same masks
    // Data parallelism: this rank of `ranks`, the gradient summed over them through `sync`.
    int rank = 0, ranks = 1;
    std::unique_ptr<GradientSync> own_sync;  // when the ranks are not NCCL's themselves
    GradientSync* sync = nullptr;

    // The shard's rows within the global batch (every rank's shard has the same size).
    train::PassDropout pass_dropout() const { return {dropout.rate, dropout.seed, rank * ops->rows()}; }
    void forward(const BatchView& batch, bool want_gradient, const TrainDropout& drop) {
        ops->begin_pass(batch, want_gradient, params.get(), grad.get());
        dropout = drop;
        train::train_forward(*ops, config, ranks * ops->rows(), pass_dropout(), want_gradient);
    }
    // With ranks, each part of the gradient leaves on the ranks' stream as soon as the compute
    // stream has it, and the compute stream waits for all of them before the optimizer reads it.
    void backward() {
        if (!sync) {
            train::train_backward(*ops, config, pass_dropout());
            return;
        }
        train::train_backward(*ops, config, pass_dropout(), [this](const train::GradientPart& part) {
            const auto [begin, end] = train::gradient_range(layout, part);
            sync->start(grad.get() + begin, static_cast<size_t>(end - begin), stream);
        });
        sync->join(stream);
    }
    // Before any host wait on the compute stream: a rank that died shows as an error here (the
    // ranks' timeout), not as a wait that never ends.
    void wait_for_ranks() {
        if (sync) sync->wait_host();
    }
};

void require_cuda_training_device() {
    std::string why;
    if (!cuda_device_available(&why)) throw Error("CUDA training unavailable: " + why);
}

CudaTrainer::CudaTrainer(const ModelConfig& config, const train::ParamLayout& layout, CudaTrainerOptions options)
    : impl_(std::make_unique<Impl>()) {
    require_cuda_training_device();
    train::check_chunk(config, options.chunk);  // ≥ 0, and 0 for the twin
    if (!(options.dropout >= 0.0 && options.dropout < 1.0)) throw Error("CUDA training: dropout must be in [0, 1)");
    const train::ParamLayout expected = train::make_param_layout(config);  // validates the config
    if (expected.total != layout.total || expected.layers.size() != layout.layers.size())
        throw Error("CUDA training: the parameter layout does not match the model config");
    const int head_dim = std::max(config.head_dim_k(), config.head_dim_v());
    if (config.is_transformer() && head_dim > tk::kAttentionMaxHeadDim)
        throw Error("CUDA training: the twin's head dim " + std::to_string(head_dim) + " is above the " +
                    std::to_string(tk::kAttentionMaxHeadDim) + " its attention kernels take");
    Impl& s = *impl_;
    s.config = config;
    s.layout = layout;
    train::Communicator* comm = options.communicator;
    if (comm && comm->size() > 1) {
        s.rank = comm->rank();
        s.ranks = comm->size();
        options.device = comm->local_rank();
        int devices = 0;
        RETNET_CUDA_CHECK(cudaGetDeviceCount(&devices));
        if (options.device >= devices)
            throw Error("rank " + std::to_string(s.rank) + " would train on GPU " + std::to_string(options.device) +
                        ", but this host shows " + std::to_string(devices) + " (one GPU per rank of a host)");
    }
    s.options = options;
    RETNET_CUDA_CHECK(cudaSetDevice(options.device));
    s.stream_owner = std::make_unique<CudaStream>();
    s.cublas_owner = std::make_unique<CublasHandle>();
    s.stream = s.stream_owner->get();
    s.cublas = s.cublas_owner->get();
    RETNET_CUBLAS_CHECK(cublasSetStream(s.cublas, s.stream));
    switch (options.precision) {
        case TrainPrecision::Fp32:
            RETNET_CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_PEDANTIC_MATH));
            s.compute = CUBLAS_COMPUTE_32F;
            break;
        case TrainPrecision::Tf32: s.compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
        case TrainPrecision::Bf16: s.compute = CUBLAS_COMPUTE_32F_FAST_16BF; break;
    }
    const size_t n = static_cast<size_t>(layout.total);
    s.params.resize(n);
    s.grad.resize(n);
    s.m.resize(n);
    s.v.resize(n);
    s.params.zero(s.stream);
    s.grad.zero(s.stream);
    s.m.zero(s.stream);
    s.v.zero(s.stream);
    std::vector<uint8_t> decays(n, 0);
    for (const train::ParamTensor& t : layout.tensors)
        if (t.weight_decay) std::fill(decays.begin() + t.offset, decays.begin() + t.offset + t.size, uint8_t{1});
    s.decays.resize(n);
    s.decays.upload(decays, s.stream);
    s.sum_sq.resize(1);
    s.sum_sq_partials.resize(tk::kSumOfSquaresPartials);
    s.ops = std::make_unique<CudaTrainOps>(config, layout, options.chunk, s.stream, s.cublas, s.compute);
    s.stream_owner->synchronize();
    if (s.ranks > 1) {
        s.sync = dynamic_cast<GradientSync*>(comm);  // the ranks of `retnet train --gpus N` are NCCL's
        if (!s.sync) {
            s.own_sync = nccl_over(*comm, options.device);
            s.sync = s.own_sync.get();
        }
    }
}

CudaTrainer::~CudaTrainer() = default;

void CudaTrainer::upload_params(std::span<const float> params) {
    Impl& s = *impl_;
    if (static_cast<int64_t>(params.size()) != s.layout.total)
        throw Error("CUDA training: parameter vector has " + std::to_string(params.size()) + " values, expected " +
                    std::to_string(s.layout.total));
    s.params.upload(params.data(), params.size(), s.stream);
    s.stream_owner->synchronize();
}

void CudaTrainer::upload(std::span<const float> params, const train::AdamWState& state) {
    Impl& s = *impl_;
    const size_t n = static_cast<size_t>(s.layout.total);
    if (state.m.size() != n || state.v.size() != n)
        throw Error("CUDA training: AdamW moments do not match the parameter count");
    upload_params(params);
    s.m.upload(state.m.data(), n, s.stream);
    s.v.upload(state.v.data(), n, s.stream);
    s.adam_step = state.step;
    s.stream_owner->synchronize();
}

void CudaTrainer::download(std::vector<float>& params, train::AdamWState& state) {
    const Impl& s = *impl_;
    const size_t n = static_cast<size_t>(s.layout.total);
    params.resize(n);
    state.m.resize(n);
    state.v.resize(n);
    s.params.download(params.data(), n, s.stream);
    s.m.download(state.m.data(), n, s.stream);
    s.v.download(state.v.data(), n, s.stream);
    s.stream_owner->synchronize();
    state.step = s.adam_step;
}

void CudaTrainer::set_average(std::span<const float> average, double decay) {
    Impl& s = *impl_;
    if (static_cast<int64_t>(average.size()) != s.layout.total)
        throw Error("CUDA training: parameter average has " + std::to_string(average.size()) + " values, expected " +
                    std::to_string(s.layout.total));
    if (!(decay > 0 && decay < 1)) throw Error("CUDA training: average decay must be in (0, 1)");
    s.average.resize(average.size());
    s.average.upload(average.data(), average.size(), s.stream);
    s.stream_owner->synchronize();
    s.average_decay = decay;
}

void CudaTrainer::download_average(std::vector<float>& average) {
    const Impl& s = *impl_;
    if (s.average_decay <= 0) throw Error("CUDA training: no parameter average (set_average was not called)");
    average.resize(static_cast<size_t>(s.layout.total));
    s.average.download(average.data(), average.size(), s.stream);
    s.stream_owner->synchronize();
}

void CudaTrainer::swap_average() {
    Impl& s = *impl_;
    if (s.average_decay <= 0) throw Error("CUDA training: no parameter average (set_average was not called)");
    std::swap(s.params, s.average);
}

std::vector<float> CudaTrainer::download_params() const {
    const Impl& s = *impl_;
    std::vector<float> out(static_cast<size_t>(s.layout.total));
    s.params.download(out.data(), out.size(), s.stream);
    s.stream_owner->synchronize();
    return out;
}

double CudaTrainer::loss_and_gradient(const BatchView& batch, bool want_gradient, const TrainDropout& dropout) {
    Impl& s = *impl_;
    s.forward(batch, want_gradient, dropout);
    if (want_gradient) s.backward();
    s.wait_for_ranks();
    return s.ops->read_loss();
}

std::vector<float> CudaTrainer::download_gradient() const {
    const Impl& s = *impl_;
    std::vector<float> out(static_cast<size_t>(s.layout.total));
    s.grad.download(out.data(), out.size(), s.stream);
    s.stream_owner->synchronize();
    return out;
}

std::vector<float> CudaTrainer::download_logits() const { return impl_->ops->download_logits(); }

double CudaTrainer::clip_grad_norm(double max_norm) {
    Impl& s = *impl_;
    tk::sum_of_squares(s.grad.get(), s.layout.total, s.sum_sq_partials.get(), s.sum_sq.get(), s.stream);
    tk::clip_by_norm(s.grad.get(), s.layout.total, s.sum_sq.get(), max_norm, s.stream);
    double ss = 0.0;
    s.sum_sq.download(&ss, 1, s.stream);
    s.stream_owner->synchronize();
    return std::sqrt(ss);
}

void CudaTrainer::adamw_step(const train::AdamWConfig& c, double lr) { update(c, lr, nullptr, 0.0); }

void CudaTrainer::update(const train::AdamWConfig& c, double lr, const double* clip_sum_sq, double max_norm) {
    Impl& s = *impl_;
    s.adam_step += 1;
    const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(s.adam_step));
    const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(s.adam_step));
    tk::AdamWScalars k{};
    k.beta1 = static_cast<float>(c.beta1);
    k.beta2 = static_cast<float>(c.beta2);
    k.eps = static_cast<float>(c.eps);
    k.decay = static_cast<float>(lr * c.weight_decay);
    k.step_size = static_cast<float>(lr / bc1);
    k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    tk::adamw(s.params.get(), s.grad.get(), s.m.get(), s.v.get(), s.decays.get(), s.layout.total, k, clip_sum_sq,
              max_norm, s.stream);
    if (s.average_decay > 0)
        tk::update_average(s.average.get(), s.params.get(), s.layout.total,
                           static_cast<float>(train::average_decay_at(s.average_decay, s.adam_step)), s.stream);
}

int64_t CudaTrainer::adamw_steps() const { return impl_->adam_step; }

double CudaTrainer::train_step(const BatchView& batch, double max_norm, const train::AdamWConfig& config, double lr,
                               double* grad_norm, const TrainDropout& dropout) {
    Impl& s = *impl_;
    s.forward(batch, true, dropout);
    s.backward();
    // The norm and the loss are read after the update is queued: one wait per step. The update
    // clips as it reads the gradient (one pass over it fewer than clip_grad_norm + adamw_step).
    tk::sum_of_squares(s.grad.get(), s.layout.total, s.sum_sq_partials.get(), s.sum_sq.get(), s.stream);
    update(config, lr, s.sum_sq.get(), max_norm);
    s.wait_for_ranks();
    double ss = 0.0;
    s.sum_sq.download(&ss, 1, s.stream);
    const double loss = s.ops->read_loss();  // synchronizes
    if (grad_norm) *grad_norm = std::sqrt(ss);
    return loss;
}

double CudaTrainer::loss(const BatchView& batch) { return loss_and_gradient(batch, false); }

double CudaTrainer::step(const BatchView& batch, double max_norm, const train::AdamWConfig& adamw, double lr,
                         uint64_t dropout_seed, double* grad_norm) {
    return train_step(batch, max_norm, adamw, lr, grad_norm, TrainDropout{impl_->options.dropout, dropout_seed});
}

const CudaTrainerOptions& CudaTrainer::options() const { return impl_->options; }

std::string CudaTrainer::description() const {
    const char* name = "cuda";
    if (impl_->options.precision == TrainPrecision::Tf32) name = "cuda-tf32";
    if (impl_->options.precision == TrainPrecision::Bf16) name = "cuda-bf16";
    return std::string(name) + " (" + device_name() + ")";
}

std::string CudaTrainer::device_name() const {
    cudaDeviceProp prop{};
    RETNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, impl_->options.device));
    return prop.name;
}

}  // namespace retnet::cuda

namespace retnet::cuda {

void register_cuda_trainer() {
    for (const char* name : kCudaTrainDevices) {
        const std::string device = name;
        train::register_train_device(device, [device](const ModelConfig& config, const train::ParamLayout& layout,
                                                      const train::TrainDeviceOptions& o) {
            CudaTrainerOptions options;
            options.precision = train_precision_from_device(device);
            options.chunk = o.chunk;
            options.dropout = o.dropout;
            options.communicator = o.communicator;
            return std::unique_ptr<train::TrainDevice>(std::make_unique<CudaTrainer>(config, layout, options));
        });
    }
}

}  // namespace retnet::cuda
