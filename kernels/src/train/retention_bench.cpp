// SPDX-License-Identifier: GPL-3.0-or-later
// The retention alone, through CudaTrainOps: a one-layer model of the asked head shape whose q, k
// and v come from random weights (so the timed calls see real-looking data), then the timed
// retention and retention_backward calls of that layer.
#include "retnet/cuda/retention_bench.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "../cuda_check.h"
#include "../device_buffer.h"
#include "cuda_train_ops.h"
#include "retnet/error.h"
#include "retnet/train.h"

namespace retnet::cuda {
namespace {

ModelConfig one_layer_of(const RetentionKernelShape& s) {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 16;
    c.d_model = 64;  // the projections into q, k, v are not timed: keep them small
    c.ffn_dim = 64;
    c.n_layers = 1;
    c.n_heads = s.heads;
    c.key_dim = s.heads * s.head_dim_k;
    c.value_dim = s.heads * s.head_dim_v;
    c.chunk_size = s.chunk > 0 ? s.chunk : 64;
    c.head_norm_affine = true;
    c.validate();
    return c;
}

cublasComputeType_t compute_of(TrainPrecision p) {
    switch (p) {
        case TrainPrecision::Tf32: return CUBLAS_COMPUTE_32F_FAST_TF32;
        case TrainPrecision::Bf16: return CUBLAS_COMPUTE_32F_FAST_16BF;
        default: return CUBLAS_COMPUTE_32F;
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

RetentionKernelTiming time_retention_kernels(const RetentionKernelShape& s, TrainPrecision precision, int repeats) {
    if (s.batch < 1 || s.seq_len < 1 || s.heads < 1 || s.head_dim_k < 2 || s.head_dim_k % 2 != 0 ||
        s.head_dim_v < 1 || s.chunk < 0 || repeats < 1)
        throw Error("retention kernel timing: batch, length, heads and head widths must be positive (the key width "
                    "even) and the chunk size ≥ 0");
    const ModelConfig c = one_layer_of(s);
    const train::ParamLayout layout = train::make_param_layout(c);
    CudaStream stream;
    CublasHandle cublas;
    RETNET_CUBLAS_CHECK(cublasSetStream(cublas.get(), stream.get()));
    if (precision == TrainPrecision::Fp32) RETNET_CUBLAS_CHECK(cublasSetMathMode(cublas.get(), CUBLAS_PEDANTIC_MATH));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    std::vector<float> host(static_cast<size_t>(layout.total));  // (layout.total)
    for (float& w : host) w = normal(rng);
    DeviceBuffer<float> params(host.size()), grad(host.size());
    params.upload(host, stream.get());
    grad.zero(stream.get());
    std::vector<int32_t> tokens(static_cast<size_t>(s.batch) * s.seq_len);  // (B·T)
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % static_cast<unsigned>(c.vocab_size));
    CudaTrainOps ops(c, layout, s.chunk, stream.get(), cublas.get(), compute_of(precision));
    ops.begin_pass({tokens.data(), tokens.data(), s.batch, s.seq_len}, true, params.get(), grad.get());

    using train::Act;
    using train::Buf;
    const Act x{Buf::XIn, 0}, xn{Buf::Xn1, 0}, rstd{Buf::Rstd1, 0};
    const Act q{Buf::Q, 0}, k{Buf::K, 0}, v{Buf::V, 0}, o{Buf::O, 0};
    const double base = train::rotary_base(c);
    ops.embed(x);
    ops.rms_norm(x, 0, Weight::AttnNorm, xn, rstd);
    ops.project_heads(xn, 0, Weight::Q, {true, 1.0 / std::sqrt(static_cast<double>(s.head_dim_k)), base}, q);
    ops.project_heads(xn, 0, Weight::K, {true, 1.0, base}, k);
    ops.project_heads(xn, 0, Weight::V, {}, v);
    // d_o: any dense rows of the output's width will do for timing; the gate projection of the same input.
    ops.linear(xn, 0, Weight::G, Act{Buf::DO});

    CudaEvent start, stop;
    const auto time_ms = [&](auto&& call) {
        std::vector<double> ms;
        for (int i = 0; i < repeats + 2; ++i) {
            RETNET_CUDA_CHECK(cudaEventRecord(start.get(), stream.get()));
            call();
            RETNET_CUDA_CHECK(cudaEventRecord(stop.get(), stream.get()));
            RETNET_CUDA_CHECK(cudaEventSynchronize(stop.get()));
            float elapsed = 0;
            RETNET_CUDA_CHECK(cudaEventElapsedTime(&elapsed, start.get(), stop.get()));
            if (i >= 2) ms.push_back(elapsed);
        }
        return median(ms);
    };
    RetentionKernelTiming t;
    t.forward_ms = time_ms([&] { ops.retention(q, k, v, o); });
    t.forward_backward_ms = time_ms([&] {
        ops.retention(q, k, v, o);
        ops.retention_backward(q, k, v, Act{Buf::DO}, Act{Buf::DQ}, Act{Buf::DK}, Act{Buf::DV});
    });
    return t;
}

}  // namespace retnet::cuda
