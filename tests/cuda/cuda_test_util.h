// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Shared helpers of the CUDA tests: the skip-without-GPU fixture, random data, device round trips,
// a scale-aware error measure, and the roundings of the tensor cores' operands.
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "device_buffer.h"
#include "ops.h"
#include "retnet/cuda/backend_cuda.h"

namespace retnet::cuda::test {

// Every CUDA test derives from this: no device (or no driver) means SKIPPED, not failed.
class CudaTest : public ::testing::Test {
protected:
    void SetUp() override {
        std::string why;
        if (!cuda_device_available(&why)) GTEST_SKIP() << "CUDA unavailable: " << why;
        stream_ = std::make_unique<CudaStream>();
    }
    cudaStream_t stream() const { return stream_->get(); }
    void sync() const { stream_->synchronize(); }

    std::unique_ptr<CudaStream> stream_;
};

inline std::vector<float> random_vector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host, cudaStream_t stream) {
    DeviceBuffer<T> d(host.size());
    d.upload(host, stream);
    return d;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d, cudaStream_t stream, size_t n = 0) {
    std::vector<T> host(n ? n : d.size());
    d.download(host.data(), host.size(), stream);
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
    return host;
}

// max|a − b| / max|ref|: the error relative to the data's scale (0/0 counts as 0).
template <typename A, typename B>
double rel_max_error(const std::vector<A>& got, const std::vector<B>& ref) {
    EXPECT_EQ(got.size(), ref.size());
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
        const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
        if (!std::isfinite(g)) return INFINITY;
        err = std::max(err, std::abs(g - r));
        scale = std::max(scale, std::abs(r));
    }
    return scale > 0 ? err / scale : err;
}

// ‖a − b‖₂ / ‖ref‖₂
template <typename A, typename B>
double rel_l2_error(const std::vector<A>& got, const std::vector<B>& ref) {
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
        const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
        if (!std::isfinite(g)) return INFINITY;
        err += (g - r) * (g - r);
        scale += r * r;
    }
    return scale > 0 ? std::sqrt(err / scale) : std::sqrt(err);
}

// bf16 round to nearest even, as __float2bfloat16_rn and the kernels' conversions
inline float round_to_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// cvt.rna.tf32.f32: round to nearest, ties away from zero, keeping 10 mantissa bits
inline float round_to_tf32(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits = (bits + 0x1000u) & ~0x1FFFu;
    float y;
    std::memcpy(&y, &bits, sizeof y);
    return y;
}

// The fused chunk passes' operand rounding (ops.h, ChunkProducts) and its unit roundoff u.
inline float round_for(ChunkProducts products, float x) {
    return products == ChunkProducts::Bf16 ? round_to_bf16(x) : round_to_tf32(x);
}
inline double unit_roundoff(ChunkProducts products) { return std::ldexp(1.0, products == ChunkProducts::Bf16 ? -8 : -11); }

// A fused chunk pass's precision: its products, and whether its operand matrices are stored in bf16
// (ops.h; only with bf16 products), as the CUDA trainer stores them under cuda-bf16.
struct ChunkPrecision {
    ChunkProducts products;
    bool bf16_storage;
};
inline void PrintTo(const ChunkPrecision& p, std::ostream* os) {
    *os << (p.products == ChunkProducts::Bf16 ? "bf16 products" : "TF32 products")
        << (p.bf16_storage ? ", bf16 storage" : ", fp32 storage");
}
inline const auto kChunkPrecisions = ::testing::Values(ChunkPrecision{ChunkProducts::Tf32, false},
                                                       ChunkPrecision{ChunkProducts::Bf16, false},
                                                       ChunkPrecision{ChunkProducts::Bf16, true});

// Host data as a pass reads it: with bf16 storage every value rounded to bf16 once (what the trainer
// stores), so that a double reference on the returned values sees exactly the kernel's inputs.
inline std::vector<float> as_stored(const ChunkPrecision& p, std::vector<float> x) {
    if (p.bf16_storage)
        for (float& e : x) e = round_to_bf16(e);
    return x;
}
// The storage type's device copy of such data, and its values back as floats.
template <typename In>
DeviceBuffer<In> to_device_as(const std::vector<float>& host, cudaStream_t stream) {
    if constexpr (std::is_same_v<In, float>) {
        return to_device(host, stream);
    } else {
        std::vector<In> stored(host.size());
        for (size_t i = 0; i < host.size(); ++i) stored[i] = __float2bfloat16_rn(host[i]);
        return to_device(stored, stream);
    }
}
template <typename In>
std::vector<float> to_host_floats(const DeviceBuffer<In>& d, cudaStream_t stream) {
    if constexpr (std::is_same_v<In, float>) {
        return to_host(d, stream);
    } else {
        const std::vector<In> stored = to_host(d, stream);
        std::vector<float> out(stored.size());
        for (size_t i = 0; i < stored.size(); ++i) out[i] = __bfloat162float(stored[i]);
        return out;
    }
}
// Calls run(In{}) with In the storage type of p: float, or __nv_bfloat16.
template <typename Run>
void with_storage(const ChunkPrecision& p, Run&& run) {
    if (p.bf16_storage)
        run(__nv_bfloat16{});
    else
        run(float{});
}

}  // namespace retnet::cuda::test
