// SPDX-License-Identifier: GPL-3.0-or-later
// A short benchmark of the CUDA backend: the fused recurrent step (CUDA events, median of many
// launches after warm-up) and whole-model calls per form (host clock around forward(), which
// ends in a stream synchronize; median of several calls after warm-up). The model is random, with
// the layer shapes of fla-hub/retnet-1.3B (d 2048, 8 heads, Dk 256, Dv 512, FFN 2816, V 32000)
// and fewer layers (argument 1, default 4) so that it builds in seconds; time per layer scales.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend_cuda_internal.h"
#include "device_buffer.h"
#include "ops.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/error.h"
#include "retnet/model.h"

using namespace retnet;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Timing {
    double wall_ms, device_ms;
};

// Median wall time of forward() (logits copied to the host included) and median device time.
Timing time_forward(Backend& b, const std::vector<int32_t>& tokens, const ForwardOptions& o, int reps,
                    bool reset_each) {
    std::vector<double> ms, dev;
    for (int i = 0; i < reps + 2; ++i) {  // two warm-up calls
        if (reset_each) b.reset();
        const auto t0 = std::chrono::steady_clock::now();
        b.forward(tokens, o);
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= 2) {
            ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            dev.push_back(cuda_last_forward_device_ms(b));
        }
    }
    return {median(ms), median(dev)};
}

void bench_recurrent_kernel(int H, int Dk, int Dv, int T) {
    using namespace retnet::cuda;
    CudaStream stream;
    const size_t nq = static_cast<size_t>(H) * T * Dk, nv = static_cast<size_t>(H) * T * Dv;
    DeviceBuffer<float> q(nq), k(nq), v(nv), o(nv), S(static_cast<size_t>(H) * Dk * Dv), a(static_cast<size_t>(T) * H),
        b(static_cast<size_t>(T) * H);
    std::vector<float> ones(static_cast<size_t>(T) * H, 0.99f), host_q(nq, 0.01f), host_v(nv, 0.02f);
    q.upload(host_q, stream.get());
    k.upload(host_q, stream.get());
    v.upload(host_v, stream.get());
    a.upload(ones, stream.get());
    b.upload(ones, stream.get());
    S.zero(stream.get());
    CudaEvent start, stop;
    std::vector<double> ms;
    for (int i = 0; i < 60; ++i) {
        start.record(stream.get());
        launch_recurrent_scan(q.get(), k.get(), v.get(), S.get(), a.get(), b.get(), o.get(), nullptr, H, T, T, Dk, Dv,
                              stream.get());
        stop.record(stream.get());
        const double t = stop.elapsed_ms_since(start);
        if (i >= 10) ms.push_back(t);
    }
    const double m = median(ms);
    // bytes: q, k, v read, o written, S read + written once
    const double bytes = 4.0 * (2.0 * nq + 2.0 * nv + 2.0 * H * Dk * Dv);
    std::printf("recurrent scan kernel  H=%d Dk=%d Dv=%d T=%-5d  %9.4f ms  (%.1f us/token, %.0f GB/s)\n", H, Dk, Dv, T,
                m, 1000.0 * m / T, bytes / (m * 1e6));
}

// B sequences decoded together, one token each per step (each in its own state slot after a
// 512-token prefill, last logits row only): median wall time of a step and tokens/s over the batch.
void bench_batched_decode(Backend& backend, const char* name, int B) {
    backend.set_slot_count(B);
    std::vector<int32_t> prompt(512, 5);
    ForwardOptions pre, step;
    pre.form = Form::Chunkwise;
    step.form = Form::Recurrent;
    for (int s = 0; s < B; ++s) {
        backend.reset(s);
        const SequenceRequest r{prompt, s, LogitRows::None};
        backend.forward_batch({&r, 1}, pre);
    }
    std::vector<int32_t> next(static_cast<size_t>(B));
    std::vector<SequenceRequest> batch(static_cast<size_t>(B));
    std::vector<double> ms, dev;
    for (int i = 0; i < 32; ++i) {
        for (int s = 0; s < B; ++s) {
            next[static_cast<size_t>(s)] = (i * 31 + s * 7) % 1000;
            batch[static_cast<size_t>(s)] = {std::span(&next[static_cast<size_t>(s)], 1), s, LogitRows::Last};
        }
        const auto t0 = std::chrono::steady_clock::now();
        backend.forward_batch(batch, step);
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= 4) {
            ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            dev.push_back(cuda_last_forward_device_ms(backend));
        }
    }
    const double m = median(ms);
    std::printf("%s batched decode B=%-3d step: device %7.3f ms, wall %7.3f ms (%7.0f tokens/s over the batch)\n", name,
                B, median(dev), m, B * 1000.0 / m);
    backend.set_slot_count(1);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        std::string why;
        if (!cuda_device_available(&why)) {
            std::printf("no CUDA device: %s\n", why.c_str());
            return 0;
        }
        const int layers = argc > 1 ? std::atoi(argv[1]) : 4;
        bench_recurrent_kernel(8, 256, 512, 1);
        bench_recurrent_kernel(8, 256, 512, 1024);
        bench_recurrent_kernel(8, 100, 128, 1024);

        ModelConfig c;
        c.family = Family::Fla;
        c.vocab_size = 32000;
        c.d_model = 2048;
        c.n_layers = layers;
        c.n_heads = 8;
        c.key_dim = 2048;
        c.value_dim = 4096;
        c.ffn_dim = 2816;
        c.chunk_size = 64;
        const auto t0 = std::chrono::steady_clock::now();
        auto model = std::make_shared<const Model>(make_random_model(c, 1));
        const auto t1 = std::chrono::steady_clock::now();
        std::printf("model: fla d=2048 H=8 Dk=256 Dv=512 F=2816 V=32000 L=%d (%.0fM params, built in %.1f s)\n", layers,
                    model->parameter_count() / 1e6, std::chrono::duration<double>(t1 - t0).count());
        for (bool bf16 : {false, true}) {
            CudaOptions options;
            options.bf16_weights = bf16;
            auto backend = make_cuda_backend(model, options);
            const char* name = bf16 ? "bf16" : "fp32";
            for (int T : {512, 2048}) {
                std::vector<int32_t> tokens(static_cast<size_t>(T));
                for (int i = 0; i < T; ++i) tokens[static_cast<size_t>(i)] = (i * 7919) % c.vocab_size;
                for (Form f : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
                    ForwardOptions o;
                    o.form = f;
                    const Timing tm = time_forward(*backend, tokens, o, 5, true);
                    std::printf("%s %-9s T=%-5d device %8.2f ms (%8.0f tokens/s)   with logits to host %8.2f ms\n", name,
                                form_name(f), T, tm.device_ms, T / tm.device_ms * 1000.0, tm.wall_ms);
                }
            }
            // Decode: one token at a time after a 512-token chunkwise prefill.
            std::vector<int32_t> prompt(512, 5), one(1, 17);
            ForwardOptions pre;
            pre.form = Form::Chunkwise;
            backend->reset();
            backend->forward(prompt, pre);
            ForwardOptions step;
            step.form = Form::Recurrent;
            const Timing tm = time_forward(*backend, one, step, 50, false);
            std::printf("%s decode step (recurrent, T=1): device %7.3f ms, wall incl. logits %7.3f ms (%5.0f tokens/s)\n",
                        name, tm.device_ms, tm.wall_ms, 1000.0 / tm.wall_ms);
            for (int B : {4, 16, 64}) bench_batched_decode(*backend, name, B);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet_cuda_bench: %s\n", e.what());
        return 1;
    }
}
