// SPDX-License-Identifier: GPL-3.0-or-later
// Training throughput of the CUDA trainer: tokens/s of whole steps (forward, backward, clipping,
// AdamW; wall clock, the step waits for its loss) on random fla models, fp32 / tf32 / bf16 GEMMs,
// parallel and chunkwise retention, and the same shapes as Transformer twins. Also checks the
// device gradient against the CPU trainer's float gradient at a realistic size, and times the
// twin's training attention kernels alone (train/train_attention.h) up to the 1.3B twin's heads at
// T = 8192. Usage: retnet_cuda_train_bench [batch] [seq_len] [steps]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "device_buffer.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/cuda_trainer.h"
#include "retnet/model.h"
#include "retnet/train.h"
#include "train/train_attention.h"

using namespace retnet;

namespace {

ModelConfig fla_config(int d, int layers, int heads, int ffn, int vocab) {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = vocab;
    c.d_model = d;
    c.n_layers = layers;
    c.n_heads = heads;
    c.key_dim = d;        // expand_k 1
    c.value_dim = 2 * d;  // expand_v 2
    c.ffn_dim = ffn;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

const char* precision_name(cuda::TrainPrecision p) {
    switch (p) {
        case cuda::TrainPrecision::Fp32: return "fp32";
        case cuda::TrainPrecision::Tf32: return "tf32";
        case cuda::TrainPrecision::Bf16: return "bf16";
    }
    return "?";
}

struct Batch {
    std::vector<int32_t> inputs, targets;
};

Batch random_batch(int n, int vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
    Batch b;
    b.inputs.resize(static_cast<size_t>(n));
    b.targets.resize(static_cast<size_t>(n));
    for (auto& x : b.inputs) x = tok(rng);
    for (auto& x : b.targets) x = tok(rng);
    return b;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
    double e = 0, s = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        e += (static_cast<double>(a[i]) - ref[i]) * (static_cast<double>(a[i]) - ref[i]);
        s += static_cast<double>(ref[i]) * ref[i];
    }
    return std::sqrt(e / s);
}

// Forward and backward of the training attention on random head-major q, k, v (o, d_o rows):
// milliseconds (CUDA events, the median of 5 after a warm-up) and the fp32 rate of the products
// they execute: the forward's two (q·k, p·v) over the T(T+1)/2 causal pairs of each head, the
// backward's seven (dq: q·k, dO·v, dS·k; dk, dv: q·k, dO·v, P·dO, dS·q).
void bench_attention(int B, int H, int T, int D, cudaStream_t stream) {
    namespace tk = cuda::train_kernels;
    const tk::AttentionShape shape{B, H, T, D, D};
    const tk::AttentionLayouts layouts{tk::heads_layout(H, T, D), tk::heads_layout(H, T, D), tk::rows_layout(T, H, D)};
    const size_t n = static_cast<size_t>(B) * H * T * D;
    std::mt19937_64 rng(4);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> host(n);
    for (float& x : host) x = dist(rng);
    cuda::DeviceBuffer<float> q(n), k(n), v(n), o(n), d_o(n), dq(n), dk(n), dv(n);
    cuda::DeviceBuffer<float> lse(static_cast<size_t>(B) * T * H);
    cuda::DeviceBuffer<float> scratch(static_cast<size_t>(tk::attention_backward_scratch_floats(shape)));
    for (cuda::DeviceBuffer<float>* x : {&q, &k, &v, &d_o}) x->upload(host, stream);
    const auto median_ms = [&](auto&& run) {
        run();
        std::vector<float> ms;
        for (int i = 0; i < 5; ++i) {
            cuda::CudaEvent start, stop;
            start.record(stream);
            run();
            stop.record(stream);
            ms.push_back(stop.elapsed_ms_since(start));
        }
        std::sort(ms.begin(), ms.end());
        return static_cast<double>(ms[2]);
    };
    const double fwd = median_ms([&] {
        tk::attention_forward(shape, layouts, q.get(), k.get(), v.get(), o.get(), lse.get(), stream);
    });
    const double bwd = median_ms([&] {
        tk::attention_backward(shape, layouts, q.get(), k.get(), v.get(), o.get(), lse.get(), d_o.get(), dq.get(),
                               dk.get(), dv.get(), scratch.get(), stream);
    });
    const double pairs = static_cast<double>(B) * H * T * (T + 1.0) / 2.0;
    std::printf("attention B=%d H=%d T=%d D=%d: forward %.2f ms (%.1f TFLOP/s), backward %.2f ms (%.1f TFLOP/s)\n", B,
                H, T, D, fwd, 2.0 * pairs * 2 * D / (fwd * 1e9), bwd, 2.0 * pairs * 7 * D / (bwd * 1e9));
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
    const int B = argc > 1 ? std::atoi(argv[1]) : 32;
    const int T = argc > 2 ? std::atoi(argv[2]) : 256;
    const int steps = argc > 3 ? std::atoi(argv[3]) : 10;
    std::string why;
    if (!cuda_device_available(&why)) {
        std::printf("CUDA unavailable: %s\n", why.c_str());
        return 0;
    }
    try {
        // Gradient at a realistic size against the CPU trainer (float, BLAS).
        {
            const ModelConfig config = fla_config(256, 4, 4, 768, 2048);
            const train::ParamLayout layout = train::make_param_layout(config);
            const std::vector<float> params = train::flatten_weights(make_random_model(config, 1), layout);
            const int b = 4;
            const Batch batch = random_batch(b * T, config.vocab_size, 2);
            const train::BatchView view{batch.inputs.data(), batch.targets.data(), b, T};
            for (int chunk : {0, 64}) {
                std::vector<float> grad_cpu(params.size());
                train::LossOptions lo;
                lo.chunk = chunk;
                const double loss_cpu = train::loss_and_gradient<float>(config, layout, params.data(), view,
                                                                        grad_cpu.data(), lo);
                for (auto p : {cuda::TrainPrecision::Fp32, cuda::TrainPrecision::Bf16}) {
                    cuda::CudaTrainerOptions o;
                    o.chunk = chunk;
                    o.precision = p;
                    cuda::CudaTrainer trainer(config, layout, o);
                    trainer.upload_params(params);
                    const double loss = trainer.loss_and_gradient(view);
                    std::printf("check d=256 L=4 B=%d T=%d chunk=%d %s: loss %.6f (cpu float %.6f), gradient rel l2 vs cpu %.3e\n",
                                b, T, chunk, precision_name(p), loss, loss_cpu, rel_l2(trainer.download_gradient(), grad_cpu));
                }
            }
        }
        {
            cuda::CudaStream stream;
            bench_attention(B, 4, T, 64, stream.get());
            bench_attention(4, 16, 2048, 128, stream.get());
            bench_attention(1, 8, 8192, 256, stream.get());
        }
        struct Shape {
            int d, layers, heads, ffn;
            bool twin;
        };
        for (const Shape& s : {Shape{256, 4, 4, 768, false}, Shape{384, 6, 6, 1024, false}, Shape{256, 4, 4, 768, true},
                               Shape{384, 6, 6, 1024, true}}) {
            const ModelConfig retnet = fla_config(s.d, s.layers, s.heads, s.ffn, 2048);
            const ModelConfig config = s.twin ? transformer_twin_config(retnet) : retnet;
            const train::ParamLayout layout = train::make_param_layout(config);
            const std::vector<float> params = train::flatten_weights(
                s.twin ? make_transformer_twin(retnet, 1) : make_random_model(config, 1), layout);
            const Batch batch = random_batch(B * T, config.vocab_size, 3);
            const train::BatchView view{batch.inputs.data(), batch.targets.data(), B, T};
            for (int chunk : {0, 64}) {
                if (s.twin && chunk > 0) continue;  // the twin has no chunks
                for (auto p : {cuda::TrainPrecision::Fp32, cuda::TrainPrecision::Tf32, cuda::TrainPrecision::Bf16}) {
                    cuda::CudaTrainerOptions o;
                    o.chunk = chunk;
                    o.precision = p;
                    cuda::CudaTrainer trainer(config, layout, o);
                    trainer.upload(params, train::make_adamw_state(layout));
                    train::AdamWConfig adam;
                    double loss = 0, norm = 0;
                    for (int i = 0; i < 2; ++i) loss = trainer.train_step(view, 1.0, adam, 1e-3, &norm);
                    const auto t0 = std::chrono::steady_clock::now();
                    for (int i = 0; i < steps; ++i) loss = trainer.train_step(view, 1.0, adam, 1e-3, &norm);
                    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                    std::printf("train %s d=%d L=%d H=%d F=%d V=2048 params=%.1fM B=%d T=%d chunk=%d %s: %.2f ms/step, "
                                "%.0f tokens/s (loss %.4f)\n",
                                s.twin ? "twin" : "retnet", s.d, s.layers, s.heads, config.ffn_dim,
                                static_cast<double>(layout.total) / 1e6, B, T, chunk, precision_name(p),
                                1e3 * sec / steps, static_cast<double>(B) * T * steps / sec, loss);
                    std::fflush(stdout);
                }
            }
        }
    } catch (const std::exception& e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
    return 0;
}
