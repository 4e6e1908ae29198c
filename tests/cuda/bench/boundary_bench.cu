// SPDX-License-Identifier: GPL-3.0-or-later
// What the kernel boundaries of a decoding step cost, measured apart from everything else in it.
// A batch-1 step of the 1.3B shape is a chain of matrix-vector products, each reading the output of
// the one before: per layer q,k,v,g (12288 × 2048), the output projection (2048 × 4096), the FFN's
// act and lin (5632 × 2048) and its down projection (2048 × 2816), then the vocabulary (32000 × 2048),
// 2.57 GB of bf16 weights in all. The same warp-per-row product (16-byte streaming loads, eight in
// flight a lane, the first round of a row requested before the row before it is reduced) runs the
// chain five ways:
//   kernels     one launch per product, captured in a CUDA graph: plain launches, each starting when
//               the one before has ended, and launches overlapped as the engine's are (programmatic
//               dependent launch: each requests its first weights, then waits);
//   persistent  one cooperative launch, a grid-wide barrier between products; every warp requests
//               the next product's first weights before it arrives at the barrier;
//   pairs       one launch per two products, a grid-wide barrier between them: cooperative launches
//               captured in a graph with the overlap attribute (half the boundaries become barriers;
//               the other half are cooperative launches, which may overlap less than plain ones);
//   no barrier  the persistent loop with the barriers left out: what this loop streams with no
//               dependency at all (its outputs are not a chain's: timed only).
// The floor is the weights' bytes at the copy bandwidth measured in the same run (a device-to-device
// copy, bytes read plus written). Every chain with its dependencies must give the overlapped kernels'
// outputs bit for bit (same products, same order), from activations that start as NaN: a chain that
// skipped a row or a product cannot pass for one that ran. The events time a launch from an idle
// stream, so the host's submission of a graph is inside them (which counts against the kernels' rows).
// `retnet_boundary_bench [layers]` (default 24).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common.cuh"
#include "cuda_check.h"
#include "device_buffer.h"
#include "retnet/error.h"

using namespace retnet;
using namespace retnet::cuda;
namespace cg = cooperative_groups;

namespace {

constexpr int kThreads = 256;
constexpr int kLoads = 8;  // 16-byte weight loads in flight per lane

// One product y (n) = W (n, k) · x (k); x is the first k values of the product before's output.
struct Product {
    const __nv_bfloat16* w;
    const float* x;
    float* y;
    int n, k;
};

__device__ __forceinline__ void load_round(const Product& p, int row, int v0, uint4 (&w)[kLoads]) {
    const int n_vec = p.k / 8;
    const uint4* at = reinterpret_cast<const uint4*>(p.w + static_cast<int64_t>(row) * p.k);
#pragma unroll
    for (int u = 0; u < kLoads; ++u) w[u] = v0 + 32 * u < n_vec ? __ldcs(at + v0 + 32 * u) : make_uint4(0, 0, 0, 0);
}

__device__ __forceinline__ float dot_round(const Product& p, int v0, const uint4 (&w)[kLoads], float acc) {
    const int n_vec = p.k / 8;
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
        const int v = v0 + 32 * u;
        if (v >= n_vec) break;
        // plain loads, not __ldg: in the persistent kernel x was written by this same launch
        const float4 xa = reinterpret_cast<const float4*>(p.x)[2 * v], xb = reinterpret_cast<const float4*>(p.x)[2 * v + 1];
        const float x[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        const __nv_bfloat162* pair = reinterpret_cast<const __nv_bfloat162*>(&w[u]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 f = __bfloat1622float2(pair[e]);
            acc = fmaf(f.x, x[2 * e], acc);
            acc = fmaf(f.y, x[2 * e + 1], acc);
        }
    }
    return acc;
}

// The warp's rows of p (warp, warp + warps, …); `w` holds the first round of its first row.
__device__ __forceinline__ void stream_product(const Product& p, int warp, int warps, int lane, uint4 (&w)[kLoads]) {
    const int n_vec = p.k / 8;
    for (int row = warp; row < p.n; row += warps) {
        float acc = 0.0f;
        for (int v0 = lane;;) {
            acc = dot_round(p, v0, w, acc);
            v0 += 32 * kLoads;
            if (v0 - lane >= n_vec) break;
            load_round(p, row, v0, w);
        }
        if (row + warps < p.n) load_round(p, row + warps, lane, w);
        acc = warp_sum(acc);
        if (lane == 0) p.y[row] = acc;
    }
}

__global__ void __launch_bounds__(kThreads) product_kernel(const Product* products, int index) {
    const Product p = products[index];  // written before the graph: readable before the wait
    const int lane = threadIdx.x & 31, warp = static_cast<int>(blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5));
    const int warps = static_cast<int>(gridDim.x) * (kThreads / 32);
    uint4 w[kLoads];
    if (warp < p.n) load_round(p, warp, lane, w);
    wait_for_previous_grid();
    allow_next_grid();
    stream_product(p, warp, warps, lane, w);
}

template <bool kBarrier>
__global__ void __launch_bounds__(kThreads) persistent_kernel(const Product* products, int count) {
    const int lane = threadIdx.x & 31, warp = static_cast<int>(blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5));
    const int warps = static_cast<int>(gridDim.x) * (kThreads / 32);
    uint4 w[kLoads];
    Product p = products[0];
    if (warp < p.n) load_round(p, warp, lane, w);
    for (int i = 0; i < count; ++i) {
        stream_product(p, warp, warps, lane, w);
        if (i + 1 == count) break;
        p = products[i + 1];
        if (warp < p.n) load_round(p, warp, lane, w);  // weights: requested before the barrier
        if constexpr (kBarrier) cg::this_grid().sync();
    }
}

// Products `first` and `first + 1`, the second's first weights requested before the barrier. The next
// launch is allowed after the barrier; earlier would do as well (the trigger takes effect once every
// block has issued it, so this whole grid is resident by then either way).
__global__ void __launch_bounds__(kThreads) pair_kernel(const Product* products, int first) {
    const int lane = threadIdx.x & 31, warp = static_cast<int>(blockIdx.x * (kThreads / 32) + (threadIdx.x >> 5));
    const int warps = static_cast<int>(gridDim.x) * (kThreads / 32);
    uint4 w[kLoads];
    Product p = products[first];
    if (warp < p.n) load_round(p, warp, lane, w);
    wait_for_previous_grid();
    stream_product(p, warp, warps, lane, w);
    p = products[first + 1];
    if (warp < p.n) load_round(p, warp, lane, w);
    cg::this_grid().sync();
    allow_next_grid();
    stream_product(p, warp, warps, lane, w);
}

__global__ void fill_bf16(__nv_bfloat16* w, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
        h ^= h >> 13, h *= 0x5bd1e995u, h ^= h >> 15;
        // a layer's four products scale x by ~1.15: no overflow or underflow over 24 layers
        w[i] = __float2bfloat16_rn((static_cast<float>(h & 0xffff) / 65535.0f - 0.5f) * 0.07f);
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Median milliseconds of `launch` over `reps` calls after three warm-up calls (CUDA events).
template <typename Launch>
double time_ms(cudaStream_t stream, int reps, Launch&& launch) {
    CudaEvent start, stop;
    std::vector<double> ms;
    for (int i = 0; i < reps + 3; ++i) {
        start.record(stream);
        launch();
        stop.record(stream);
        const double t = stop.elapsed_ms_since(start);
        if (i >= 3) ms.push_back(t);
    }
    return median(ms);
}

int run(int layers) {
    struct Shape {
        int n, k;
    };
    const Shape layer[] = {{12288, 2048}, {2048, 4096}, {5632, 2048}, {2048, 2816}};
    std::vector<Shape> shapes;
    for (int l = 0; l < layers; ++l) shapes.insert(shapes.end(), std::begin(layer), std::end(layer));
    shapes.push_back({32000, 2048});
    size_t weights = 0, widest = 2048;
    for (const Shape& s : shapes) weights += static_cast<size_t>(s.n) * s.k, widest = std::max<size_t>(widest, s.n);

    int device = 0, sms = 0, per_sm = 0, cooperative = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
    if (!cooperative) throw Error("this GPU cannot launch cooperative kernels: nothing measured");
    // one wave for every variant
    per_sm = 1 << 30;
    for (const void* kernel : {reinterpret_cast<const void*>(product_kernel), reinterpret_cast<const void*>(pair_kernel),
                               reinterpret_cast<const void*>(persistent_kernel<true>),
                               reinterpret_cast<const void*>(persistent_kernel<false>)}) {
        int resident = 0;
        RETNET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, 0));
        per_sm = std::min(per_sm, resident);
    }
    const int blocks = sms * per_sm;
    cudaDeviceProp prop{};
    RETNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));

    const CudaStream owned_stream;
    const cudaStream_t stream = owned_stream.get();
    DeviceBuffer<__nv_bfloat16> w(weights);
    fill_bf16<<<1024, 256, 0, stream>>>(w.get(), weights, 12345u);
    RETNET_CUDA_CHECK(cudaGetLastError());
    // Two activation buffers used in turn; the chain's input is ones.
    DeviceBuffer<float> act[2] = {DeviceBuffer<float>(widest), DeviceBuffer<float>(widest)};
    std::vector<float> ones(widest, 1.0f);
    std::vector<Product> products;
    size_t offset = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
        products.push_back({w.get() + offset, act[i % 2].get(), act[(i + 1) % 2].get(), shapes[i].n, shapes[i].k});
        offset += static_cast<size_t>(shapes[i].n) * shapes[i].k;
    }
    DeviceBuffer<Product> device_products(products.size());
    RETNET_CUDA_CHECK(cudaMemcpyAsync(device_products.get(), products.data(), products.size() * sizeof(Product),
                                      cudaMemcpyHostToDevice, stream));
    const int count = static_cast<int>(products.size());
    const auto reset_input = [&] {
        RETNET_CUDA_CHECK(cudaMemcpyAsync(act[0].get(), ones.data(), widest * sizeof(float), cudaMemcpyHostToDevice, stream));
    };

    // kernels: one graph of `count` launches, overlapped or plain
    cudaGraph_t graphs[2];
    cudaGraphExec_t chains[2];
    for (int overlapped = 0; overlapped < 2; ++overlapped) {
        RETNET_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        const Product* at = device_products.get();
        for (int i = 0; i < count; ++i) {
            if (overlapped) launch_overlapped(product_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, at, i);
            else product_kernel<<<blocks, kThreads, 0, stream>>>(at, i);
        }
        RETNET_CUDA_CHECK(cudaStreamEndCapture(stream, &graphs[overlapped]));
        RETNET_CUDA_CHECK(cudaGraphInstantiate(&chains[overlapped], graphs[overlapped], 0));
    }
    const auto run_kernels = [&] { RETNET_CUDA_CHECK(cudaGraphLaunch(chains[1], stream)); };
    // pairs: cooperative and overlapped launches, the last product alone when the count is odd
    cudaGraph_t pair_graph = nullptr;
    cudaGraphExec_t pairs = nullptr;
    std::string pairs_error;
    {
        RETNET_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        const Product* at = device_products.get();
        cudaError_t status = cudaSuccess;
        for (int i = 0; i + 1 < count && status == cudaSuccess; i += 2) {
            cudaLaunchConfig_t config = {};
            config.gridDim = dim3(static_cast<unsigned>(blocks));
            config.blockDim = dim3(kThreads);
            config.stream = stream;
            cudaLaunchAttribute attributes[2];
            attributes[0].id = cudaLaunchAttributeCooperative;
            attributes[0].val.cooperative = 1;
            attributes[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            attributes[1].val.programmaticStreamSerializationAllowed = 1;
            config.attrs = attributes;
            config.numAttrs = 2;
            status = cudaLaunchKernelEx(&config, pair_kernel, at, i);
        }
        if (status == cudaSuccess && count % 2)
            launch_overlapped(product_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, at, count - 1);
        const cudaError_t ended = cudaStreamEndCapture(stream, &pair_graph);
        if (status == cudaSuccess) status = ended;
        if (status == cudaSuccess) status = cudaGraphInstantiate(&pairs, pair_graph, 0);
        if (status != cudaSuccess) {
            pairs_error = cudaGetErrorString(status);
            (void)cudaGetLastError();
            pairs = nullptr;
        }
    }
    const auto run_pairs = [&] { RETNET_CUDA_CHECK(cudaGraphLaunch(pairs, stream)); };
    const auto run_plain = [&] { RETNET_CUDA_CHECK(cudaGraphLaunch(chains[0], stream)); };
    const auto run_persistent = [&](auto kernel) {
        const Product* at = device_products.get();
        int n = count;
        void* args[] = {&at, &n};
        RETNET_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(blocks),
                                                      dim3(kThreads), args, 0, stream));
    };

    // The chains' outputs, bit for bit, each from activations set to NaN but for the input's ones
    const int last_n = shapes.back().n;
    const auto chain_output = [&](auto&& launch) {
        for (DeviceBuffer<float>& a : act) RETNET_CUDA_CHECK(cudaMemsetAsync(a.get(), 0xFF, a.bytes(), stream));
        reset_input();
        launch();
        std::vector<float> out(last_n);
        RETNET_CUDA_CHECK(cudaMemcpyAsync(out.data(), products.back().y, last_n * sizeof(float), cudaMemcpyDeviceToHost, stream));
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
        return out;
    };
    const std::vector<float> by_kernels = chain_output(run_kernels);
    float largest = 0.0f;
    for (float v : by_kernels) {
        if (!std::isfinite(v)) throw Error("the overlapped chain's outputs are not all finite (internal error)");
        largest = std::max(largest, std::fabs(v));
    }
    if (largest == 0.0f) throw Error("the overlapped chain's outputs are all zero (internal error)");
    const auto differing = [&](const std::vector<float>& out) {
        int n = 0;
        for (int i = 0; i < last_n; ++i) n += std::memcmp(&out[i], &by_kernels[i], sizeof(float)) != 0;
        return n;
    };
    const int plain_differ = differing(chain_output(run_plain));
    const int differ = differing(chain_output([&] { run_persistent(persistent_kernel<true>); }));
    int pairs_differ = 0;
    if (pairs) {
        try {
            pairs_differ = differing(chain_output(run_pairs));
        } catch (const Error& e) {  // a cooperative launch the graph could not make after all
            pairs_error = e.what();
            (void)cudaGetLastError();
            RETNET_CUDA_CHECK(cudaGraphExecDestroy(pairs));
            pairs = nullptr;
        }
    }

    // The copy bandwidth: 1 GiB device to device, bytes read plus written
    constexpr size_t kCopy = size_t(1) << 30;
    DeviceBuffer<unsigned char> from(kCopy), to(kCopy);
    const double copy_ms = time_ms(stream, 10, [&] {
        RETNET_CUDA_CHECK(cudaMemcpyAsync(to.get(), from.get(), kCopy, cudaMemcpyDeviceToDevice, stream));
    });
    const double copy_gbs = 2.0 * kCopy / copy_ms / 1e6;

    constexpr int kReps = 20;
    std::vector<double> plain_ms, kernels_ms, pairs_ms, persistent_ms, free_ms;
    for (int round = 0; round < 3; ++round) {  // interleaved, so that none gets the warmer card
        plain_ms.push_back(time_ms(stream, kReps, run_plain));
        kernels_ms.push_back(time_ms(stream, kReps, run_kernels));
        if (pairs) pairs_ms.push_back(time_ms(stream, kReps, run_pairs));
        persistent_ms.push_back(time_ms(stream, kReps, [&] { run_persistent(persistent_kernel<true>); }));
        free_ms.push_back(time_ms(stream, kReps, [&] { run_persistent(persistent_kernel<false>); }));
    }
    const double bytes = 2.0 * static_cast<double>(weights);
    const double floor_ms = bytes / (copy_gbs * 1e6);
    std::printf("boundary %s, %d multiprocessors, %d blocks of %d threads (%d a multiprocessor)\n", prop.name, sms, blocks,
                kThreads, per_sm);
    std::printf("boundary %d layers: %d products, %.3f GB of bf16 weights; copy bandwidth %.0f GB/s -> floor %.3f ms\n",
                layers, count, bytes / 1e9, copy_gbs, floor_ms);
    const auto line = [&](const char* what, const std::vector<double>& ms) {
        const double m = median(ms);
        std::printf("boundary %-28s %.3f ms (rounds", what, m);
        for (double v : ms) std::printf(" %.3f", v);
        std::printf("), %.0f GB/s, %.1f %% of the floor, %.2f us a product\n", bytes / (m * 1e6), 100.0 * floor_ms / m,
                    1000.0 * m / count);
    };
    line("kernels (graph, plain)", plain_ms);
    line("kernels (graph, overlapped)", kernels_ms);
    if (pairs) line("pairs (graph, cooperative)", pairs_ms);
    else std::printf("boundary pairs: not launched (%s)\n", pairs_error.c_str());
    line("persistent (grid barriers)", persistent_ms);
    line("persistent, no barrier", free_ms);
    std::printf("boundary outputs (largest |y| %.3g): of %d, %d differ between overlapped and plain kernels, %d between "
                "kernels and persistent, %d between kernels and pairs\n",
                largest, last_n, plain_differ, differ, pairs_differ);

    if (pairs) RETNET_CUDA_CHECK(cudaGraphExecDestroy(pairs));
    if (pair_graph) RETNET_CUDA_CHECK(cudaGraphDestroy(pair_graph));
    for (int i = 0; i < 2; ++i) {
        RETNET_CUDA_CHECK(cudaGraphExecDestroy(chains[i]));
        RETNET_CUDA_CHECK(cudaGraphDestroy(graphs[i]));
    }
    return plain_differ == 0 && differ == 0 && pairs_differ == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc > 2) throw Error("one argument at most: the number of layers (default 24)");
        long layers = 24;
        if (argc > 1) {
            char* end = nullptr;
            layers = std::strtol(argv[1], &end, 10);
            if (end == argv[1] || *end != '\0' || layers < 1 || layers > 64)
                throw Error("layers '" + std::string(argv[1]) + "': a whole number from 1 to 64");
        }
        // (not cuda_device_available: its header is C++20, which CMake 3.25 cannot ask of nvcc)
        int devices = 0;
        const cudaError_t found = cudaGetDeviceCount(&devices);
        if (found != cudaSuccess || devices == 0) {
            std::printf("boundary: no CUDA device (%s), nothing measured\n",
                        found != cudaSuccess ? cudaGetErrorString(found) : "none found");
            return 0;
        }
        return run(static_cast<int>(layers));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet_boundary_bench: %s\n", e.what());
        return 1;
    }
}
