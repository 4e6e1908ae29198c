// SPDX-License-Identifier: GPL-3.0-or-later
// A short benchmark of the CUDA backend: the fused recurrent step (CUDA events, median of many
// launches after warm-up) and whole-model calls per form (host clock around forward(), which
// ends in a stream synchronize; median of several calls after warm-up). The model is random, with
// the layer shapes of fla-hub/retnet-1.3B (d 2048, 8 heads, Dk 256, Dv 512, FFN 2816, V 32000)
// and fewer layers (argument 1, default 4) so that it builds in seconds; time per layer scales.
// `retnet_cuda_bench L ops [M,…]`: the decoding ops alone; `retnet_cuda_bench 0 kernels`: the
// retention kernels as `retnet bench --mode kernels` times them (`… kernels B,T,Dk,Dv`: one shape, for
// a profiler); `retnet_cuda_bench L prefill`: a chunkwise prefill of 2048 and 8192 tokens, last logits
// row only, as `retnet bench --mode prefill` times it. A binary built elsewhere runs these on the GPU
// machine without Qt or MPI (scripts/gpu/run_prebuilt.sh).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "decode_retention.h"
#include "device_buffer.h"
#include "gemv.h"
#include "gemm.h"
#include "skinny_gemm.h"
#include "ops.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/retention_bench.h"
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
            dev.push_back(b.last_forward_device_ms());
        }
    }
    return {median(ms), median(dev)};
}

// The layer shapes of fla-hub/retnet-1.3B with L layers.
ModelConfig fla_1_3b_shape(int layers) {
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
    return c;
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
// Bytes a decoding step must move at least: every weight read once (the embedding row aside) and
// each sequence's fp32 state read and written once. Over the measured copy bandwidth of the H200
// (4.3 TB/s, device-to-device, read + write counted) it is the step's floor.
double decode_floor_ms(const Model& model, bool bf16, int B) {
    const ModelConfig& c = model.config;
    const double projection_params = static_cast<double>(model.parameter_count()) - static_cast<double>(c.vocab_size) * c.d_model;
    const double state_bytes = 4.0 * c.n_layers * c.n_heads * static_cast<double>(c.head_dim_k()) * c.head_dim_v();
    const double bytes = projection_params * (bf16 ? 2.0 : 4.0) + 2.0 * B * state_bytes;
    return bytes / 4.3e12 * 1e3;
}

void bench_batched_decode(Backend& backend, const Model& model, const char* name, int B, bool bf16) {
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
    for (int i = 0; i < 40; ++i) {
        for (int s = 0; s < B; ++s) {
            next[static_cast<size_t>(s)] = (i * 31 + s * 7) % 1000;
            batch[static_cast<size_t>(s)] = {std::span(&next[static_cast<size_t>(s)], 1), s, LogitRows::Last};
        }
        const auto t0 = std::chrono::steady_clock::now();
        backend.forward_batch(batch, step);
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= 8) {
            ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
            dev.push_back(backend.last_forward_device_ms());
        }
    }
    const double m = median(ms), d = median(dev), floor = decode_floor_ms(model, bf16, B);
    std::printf("%s decode B=%-3d step: device %7.3f ms, wall %7.3f ms (%8.0f tokens/s); floor %6.3f ms = %3.0f%% of "
                "device, %3.0f%% of wall\n",
                name, B, d, m, B * 1000.0 / m, floor, 100.0 * floor / d, 100.0 * floor / m);
    backend.set_slot_count(1);
}


// Each op of one decoding step of the 1.3B layer shape, alone: median time of 20 back-to-back
// launches (in-stream launches serialize as a graph's nodes do), and the bytes it must move.
template <typename F>
double time_launches_us(cuda::CudaStream& stream, F launch) {
    cuda::CudaEvent start, stop;
    std::vector<double> us;
    for (int rep = 0; rep < 12; ++rep) {
        start.record(stream.get());
        for (int i = 0; i < 20; ++i) launch();
        stop.record(stream.get());
        if (rep >= 2) us.push_back(1000.0 * stop.elapsed_ms_since(start) / 20);
    }
    return median(us);
}

void bench_decode_ops(int M) {
    using namespace retnet::cuda;
    CudaStream stream;
    const int d = 2048, H = 8, Dk = 256, Dv = 512, F = 2816, V = 32000;
    const size_t big = static_cast<size_t>(V) * d, state_floats = static_cast<size_t>(H) * Dk * Dv;
    // M sequences' states of one layer, in as many copies as make 192 MB (a step's layers each have
    // their own, so they come from DRAM; one copy launched twenty times stayed in L2 at small M).
    const size_t set_bytes = M * state_floats * sizeof(float);
    const int state_sets = std::max(2, static_cast<int>(((size_t{192} << 20) + set_bytes - 1) / set_bytes));
    DeviceBuffer<float> x(static_cast<size_t>(M) * 8192), y(static_cast<size_t>(M) * V), y2(static_cast<size_t>(M) * 8192),
        norm(8192), states(static_cast<size_t>(state_sets) * M * state_floats), o(static_cast<size_t>(M) * H * Dv),
        theta(Dk / 2), coef(2 * H);
    for (DeviceBuffer<float>* b : {&x, &y, &y2, &norm, &states, &o, &theta, &coef})
        RETNET_CUDA_CHECK(cudaMemsetAsync(b->get(), 0, b->bytes(), stream.get()));
    std::vector<float*> ptrs;
    for (int n = 0; n < state_sets * M; ++n) ptrs.push_back(states.get() + static_cast<size_t>(n) * state_floats);
    DeviceBuffer<float*> dptrs(ptrs.size());
    dptrs.upload(ptrs, stream.get());
    DeviceBuffer<int64_t> pos(static_cast<size_t>(M));
    RETNET_CUDA_CHECK(cudaMemsetAsync(pos.get(), 0, pos.bytes(), stream.get()));
    DeviceBuffer<double2> angles(static_cast<size_t>(M) * (Dk / 2));
    launch_rotary_angles(pos.get(), theta.get(), M, Dk / 2, angles.get(), stream.get());
    auto report = [&](const char* what, double us, double bytes) {
        if (us <= 0.0) return;
        std::printf("  op M=%d %-28s %8.2f us  %7.0f GB/s\n", M, what, us, bytes / (us * 1e3));
    };
    // Weights (contents do not matter for time) cycle through 512 MB, eight bases 64 MB apart, past
    // the 50–60 MB of L2, so that every projection streams from DRAM as it does in a step (the same
    // 17 MB twenty times in a row came from L2: 2.9 TB/s for the output projection at one row on the
    // H100). The gemv jobs below name their weights as offsets from W, the first base.
    DeviceBuffer<__nv_bfloat16> big_w(static_cast<size_t>(256) * 1024 * 1024 + big), xb(static_cast<size_t>(M) * 8192);
    RETNET_CUDA_CHECK(cudaMemsetAsync(big_w.get(), 0, big_w.bytes(), stream.get()));
    const __nv_bfloat16* W = big_w.get();
    auto rotating = [&](auto launch) {
        int i = 0;
        return time_launches_us(stream, [&] { launch(big_w.get() + static_cast<size_t>(i++ % 8) * 32 * 1024 * 1024); });
    };
    CublasHandle blas;
    RETNET_CUBLAS_CHECK(cublasSetStream(blas.get(), stream.get()));
    auto gemv = [&](std::vector<GemvJob> jobs, int K, GemvInputTransform input = {}, GemvGlu glu = GemvGlu::None) {
        if (!gemv_supports(M, K, true)) return 0.0;  // not reported
        return rotating([&](const __nv_bfloat16* base) {
            std::vector<GemvJob> js = jobs;
            for (GemvJob& j : js) j.weight = base + (static_cast<const __nv_bfloat16*>(j.weight) - W);
            launch_gemv(x.get(), M, K, js.data(), static_cast<int>(js.size()), true, stream.get(), input, glu);
        });
    };
    const GemvInputTransform norm_input{GemvInput::RmsNorm, norm.get(), 1e-6f};
    report("rmsnorm", time_launches_us(stream, [&] { launch_rmsnorm(x.get(), norm.get(), y2.get(), M, d, 1e-6f, stream.get()); }),
           8.0 * M * d);
    report("gemv q,k,v,g (4 jobs)",
           gemv({{W, y.get(), d, false}, {W + 1 * d * d, y.get(), d, false}, {W + 2 * d * d, y.get(), 2 * d, false},
                 {W + 4 * d * d, y.get(), 2 * d, false}}, d),
           2.0 * 6 * d * d);
    DecodeRetentionArgs a;
    a.q = x.get(), a.k = x.get(), a.v = x.get(), a.states = dptrs.get(), a.angles = angles.get();
    a.coef_a = coef.get(), a.coef_b = coef.get() + H, a.o = o.get(), a.N = M, a.H = H, a.Dk = Dk, a.Dv = Dv;
    auto retention = [&](DecodeRetentionArgs args) {
        int i = 0;
        return time_launches_us(stream, [&] {
            args.states = dptrs.get() + static_cast<size_t>(i++ % state_sets) * M;
            launch_decode_retention(args, stream.get());
        });
    };
    report("decode retention", retention(a), 8.0 * M * H * Dk * Dv);
    DeviceBuffer<unsigned> arrivals(static_cast<size_t>(M) * H);
    arrivals.zero(stream.get());
    DecodeRetentionArgs fused = a;
    fused.g = x.get(), fused.head_norm_weight = norm.get(), fused.head_norm_eps = 1e-6f, fused.y = y2.get();
    fused.arrivals = arrivals.get();
    report("decode retention + head norm", retention(fused), 8.0 * M * H * Dk * Dv);
    report("head norm gate", time_launches_us(stream, [&] { launch_head_norm_gate(o.get(), x.get(), norm.get(), y2.get(), M, M, H, Dv, 1e-6f, stream.get()); }),
           16.0 * M * H * Dv);
    report("gemv o (accumulate)", gemv({{W, y.get(), d, true}}, 2 * d), 2.0 * 2 * d * d);
    report("gemv ffn act,lin (2 jobs)", gemv({{W, y.get(), F, false}, {W + F * d, y.get(), F, false}}, d), 2.0 * 2 * F * d);
    report("glu", time_launches_us(stream, [&] { launch_glu(y.get(), y2.get(), y.get(), static_cast<int64_t>(M) * F, false, stream.get()); }),
           12.0 * M * F);
    report("gemv ffn out (accumulate)", gemv({{W, y.get(), d, true}}, F), 2.0 * F * d);
    report("gemv output (V rows)", gemv({{W, y.get(), V, false}}, d), 2.0 * V * d);
    {  // a sampler's top-k 40 of each row (normal logits: few ties, as a model's)
        std::mt19937_64 rng(3);
        std::normal_distribution<float> normal(0.0f, 3.0f);
        std::vector<float> rows(static_cast<size_t>(M) * V);
        for (float& v : rows) v = normal(rng);
        DeviceBuffer<float> logits(rows.size()), packed(static_cast<size_t>(M) * 83);
        logits.upload(rows, stream.get());
        report("best 40 logits of V", time_launches_us(stream, [&] {
            launch_best_logits(logits.get(), M, V, 40, packed.get(), 83, stream.get());
        }), 4.0 * M * V);
    }
    if (M <= 4) {
        report("fused norm + q,k,v,g",
               gemv({{W, y.get(), d, false}, {W + 1 * d * d, y.get(), d, false}, {W + 2 * d * d, y.get(), 2 * d, false},
                     {W + 4 * d * d, y.get(), 2 * d, false}}, d, norm_input),
               2.0 * 6 * d * d);
        report("fused norm + ffn + glu", gemv({{W, y.get(), F, false}, {W + F * d, y.get(), F, false}}, d, norm_input,
                                              GemvGlu::Swish), 2.0 * 2 * F * d);
    }
    {  // the tensor-core kernel against cuBLAS, at every M (below 9 rows: against the GEMV above)
        auto skinny = [&](std::vector<std::pair<size_t, int>> jobs, int K, bool acc, GemvGlu glu = GemvGlu::None) {
            if (!skinny_gemm_supports(M, K)) return 0.0;
            return rotating([&](const __nv_bfloat16* base) {
                std::vector<GemvJob> js;
                for (auto [off, n] : jobs) js.push_back({base + off, y.get(), n, acc});
                launch_float_to_bf16(x.get(), xb.get(), static_cast<int64_t>(M) * K, stream.get());
                launch_skinny_gemm(xb.get(), M, K, js.data(), static_cast<int>(js.size()), stream.get(), glu);
            });
        };
        // the input RMSNorm as its own launch writing bf16 rows, or inside the skinny GEMM's launch
        auto normed_skinny = [&](std::vector<std::pair<size_t, int>> jobs, int K, bool inside, GemvGlu glu) {
            if (!skinny_gemm_fuses_norm(M, K)) return 0.0;
            return rotating([&](const __nv_bfloat16* base) {
                std::vector<GemvJob> js;
                for (auto [off, n] : jobs) js.push_back({base + off, y.get(), n, false});
                if (inside) {
                    launch_skinny_gemm_normed({x.get(), norm.get(), 1e-6f}, M, K, js.data(), static_cast<int>(js.size()),
                                              stream.get(), glu);
                } else {
                    launch_rmsnorm_bf16(x.get(), norm.get(), xb.get(), M, K, 1e-6f, stream.get());
                    launch_skinny_gemm(xb.get(), M, K, js.data(), static_cast<int>(js.size()), stream.get(), glu);
                }
            });
        };
        auto cublas = [&](std::vector<std::pair<size_t, int>> jobs, int K) {
            return rotating([&](const __nv_bfloat16* base) {
                launch_float_to_bf16(x.get(), xb.get(), static_cast<int64_t>(M) * K, stream.get());
                for (auto [off, n] : jobs) linear_bf16(blas.get(), xb.get(), base + off, y.get(), M, n, K, 0.0f);
            });
        };
        const size_t dd = static_cast<size_t>(d) * d;
        const std::vector<std::pair<size_t, int>> qkvg{{0, d}, {dd, d}, {2 * dd, 2 * d}, {4 * dd, 2 * d}};
        const std::vector<std::pair<size_t, int>> o1{{0, d}}, ffn{{0, F}, {static_cast<size_t>(F) * d, F}}, out{{0, V}};
        report("skinny q,k,v,g (+convert)", skinny(qkvg, d, false), 2.0 * 6 * d * d);
        report("cublas q,k,v,g (+convert)", cublas(qkvg, d), 2.0 * 6 * d * d);
        report("norm, skinny q,k,v,g", normed_skinny(qkvg, d, false, GemvGlu::None), 2.0 * 6 * d * d);
        report("skinny q,k,v,g with its norm", normed_skinny(qkvg, d, true, GemvGlu::None), 2.0 * 6 * d * d);
        report("skinny o (accumulate)", skinny(o1, 2 * d, true), 2.0 * 2 * d * d);
        report("cublas o", cublas(o1, 2 * d), 2.0 * 2 * d * d);
        report("skinny ffn glu", skinny(ffn, d, false, GemvGlu::Swish), 2.0 * 2 * F * d);
        report("cublas ffn act,lin", cublas(ffn, d), 2.0 * 2 * F * d);
        report("norm, skinny ffn glu", normed_skinny(ffn, d, false, GemvGlu::Swish), 2.0 * 2 * F * d);
        report("skinny ffn glu with its norm", normed_skinny(ffn, d, true, GemvGlu::Swish), 2.0 * 2 * F * d);
        report("skinny ffn out", skinny(o1, F, true), 2.0 * F * d);
        report("cublas ffn out", cublas(o1, F), 2.0 * F * d);
        report("skinny output (V rows)", skinny(out, d, false), 2.0 * V * d);
        report("cublas output (V rows)", cublas(out, d), 2.0 * V * d);
    }
    report("recurrent scan T=1 (old path)", time_launches_us(stream, [&] {
        launch_recurrent_scan(x.get(), x.get(), x.get(), states.get(), coef.get(), coef.get(), o.get(), nullptr, H, 1, 1, Dk, Dv, stream.get());
    }), 8.0 * H * Dk * Dv);
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
        // `retnet_cuda_bench 0 kernels`: the retention alone as the cuda-bf16 trainer runs it (what
        // `retnet bench --mode kernels` times) at the shapes, without the CLI.
        if (argc > 2 && std::string(argv[2]) == "kernels") {
            std::vector<std::tuple<int, int, int, int>> shapes{
                {8, 2048, 256, 512}, {2, 8192, 256, 512}, {1, 32768, 256, 512}, {8, 2048, 128, 256}};
            int one[4];  // `… kernels B,T,Dk,Dv`: that shape alone (for a profiler)
            if (argc > 3 && std::sscanf(argv[3], "%d,%d,%d,%d", &one[0], &one[1], &one[2], &one[3]) == 4)
                shapes = {{one[0], one[1], one[2], one[3]}};
            for (const auto& [B, T, Dk, Dv] : shapes) {
                const cuda::RetentionKernelTiming t =
                    cuda::time_retention_kernels({B, T, 8, Dk, Dv, 64}, cuda::TrainPrecision::Bf16, 9);
                std::printf("retention kernels B %d T %d H 8 Dk %d Dv %d: forward %.3f ms, forward + backward %.3f ms\n",
                            B, T, Dk, Dv, t.forward_ms, t.forward_backward_ms);
            }
            return 0;
        }
        // `retnet_cuda_bench L prefill`: a chunkwise prefill of the 1.3B shape's L layers (bf16 weights,
        // last logits row only: what `retnet bench --mode prefill` times) at 2048 and 8192 tokens.
        if (argc > 2 && std::string(argv[2]) == "prefill") {
            auto model = std::make_shared<const Model>(make_random_model(fla_1_3b_shape(layers), 1));
            CudaOptions options;
            options.bf16_weights = true;
            auto backend = make_cuda_backend(model, options);
            for (int T : {2048, 8192}) {
                std::vector<int32_t> tokens(static_cast<size_t>(T));
                for (int i = 0; i < T; ++i) tokens[static_cast<size_t>(i)] = (i * 7919) % 32000;
                const SequenceRequest request{tokens, 0, LogitRows::Last};
                ForwardOptions o;
                o.form = Form::Chunkwise;
                for (int round = 0; round < 2; ++round) {
                    std::vector<double> ms;
                    for (int r = 0; r < 7; ++r) {  // two warm-up calls
                        backend->reset();
                        const auto t0 = std::chrono::steady_clock::now();
                        backend->forward_batch({&request, 1}, o);
                        const auto t1 = std::chrono::steady_clock::now();
                        if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
                    }
                    std::printf("prefill L %d T %d: %.2f ms\n", layers, T, median(ms));
                }
            }
            return 0;
        }
        // `retnet_cuda_bench L ops [M,M,…]`: the per-op table only, for the given rows.
        std::vector<int> rows{1, 4, 8, 16, 64};
        if (argc > 3) {
            rows.clear();
            for (const char* p = argv[3]; *p;) {
                char* end = nullptr;
                rows.push_back(static_cast<int>(std::strtol(p, &end, 10)));
                p = *end == ',' ? end + 1 : end;
                if (end == p && *p) break;
            }
        }
        for (int M : rows) bench_decode_ops(M);
        if (argc > 2 && std::string(argv[2]) == "ops") return 0;
        bench_recurrent_kernel(8, 256, 512, 1);
        bench_recurrent_kernel(8, 256, 512, 1024);
        bench_recurrent_kernel(8, 100, 128, 1024);

        const ModelConfig c = fla_1_3b_shape(layers);
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
            for (int B : {1, 4, 16, 64}) bench_batched_decode(*backend, *model, name, B, bf16);
            options.cuda_graphs = false;  // the same steps launched one by one
            backend.reset();
            auto eager = make_cuda_backend(model, options);
            const std::string eager_name = std::string(name) + " no-graph";
            for (int B : {1, 16}) bench_batched_decode(*eager, *model, eager_name.c_str(), B, bf16);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet_cuda_bench: %s\n", e.what());
        return 1;
    }
}
