// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "device_buffer.h"
#include "retnet/error.h"

namespace retnet::cuda {

// Per-call parameters computed on the host (decay coefficients, torchscale's √r bookkeeping) go to
// the device through one pinned buffer: a copy from pageable memory would wait for the stream
// and stall the host between launches, which dominates a one-token decoding step.
class ParamStaging {
public:
    ParamStaging() = default;
    ~ParamStaging() {
        if (host_) RETNET_CUDA_CHECK_PRINT(cudaFreeHost(host_));
    }
    ParamStaging(const ParamStaging&) = delete;
    ParamStaging& operator=(const ParamStaging&) = delete;

    // Starts a call that stages at most `floats` values; the stream must have no staged copy
    // pending (it is synchronized here, which costs nothing between calls).
    void begin(size_t floats, cudaStream_t stream) {
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
        if (floats > capacity_) {
            // Empty until both buffers exist, so a failed allocation leaves no half-made staging.
            capacity_ = 0;
            if (host_) RETNET_CUDA_CHECK(cudaFreeHost(host_));
            host_ = nullptr;
            if (cudaMallocHost(reinterpret_cast<void**>(&host_), floats * sizeof(float)) != cudaSuccess) {
                (void)cudaGetLastError();
                host_ = nullptr;
                throw Error("out of pinned host memory: the CUDA parameter staging needs " +
                            mebibytes(floats * sizeof(float)));
            }
            device_.resize(floats);
            capacity_ = floats;
            ++generation_;
        }
        used_ = 0;
    }
    // Copies `values` to the device (asynchronously, in stream order); returns the device copy.
    const float* stage(const std::vector<float>& values, cudaStream_t stream) {
        return static_cast<const float*>(stage_bytes(values.data(), values.size() * sizeof(float), stream));
    }
    template <typename T>
    const T* stage(std::span<const T> values, cudaStream_t stream) {
        return static_cast<const T*>(stage_bytes(values.data(), values.size_bytes(), stream));
    }
    // While replaying a CUDA graph, staging only writes the host side: the graph's own copy nodes
    // read the pinned buffer at the same offsets when it runs.
    void set_replay(bool replay) { replay_ = replay; }
    // Changes whenever the buffers are reallocated (a captured graph holds their addresses).
    uint64_t generation() const { return generation_; }

private:
    const void* stage_bytes(const void* values, size_t bytes, cudaStream_t stream) {
        const size_t n = (bytes + sizeof(float) - 1) / sizeof(float), padded = (n + 63) / 64 * 64;  // 256-byte slots
        if (used_ + n > capacity_) throw Error("CUDA backend: parameter staging overflow (internal error)");
        if (bytes) std::memcpy(host_ + used_, values, bytes);
        float* d = device_.get() + used_;
        if (bytes && !replay_)
            RETNET_CUDA_CHECK(cudaMemcpyAsync(d, host_ + used_, bytes, cudaMemcpyHostToDevice, stream));
        used_ = std::min(capacity_, used_ + padded);
        return d;
    }

    float* host_ = nullptr;  // pinned
    DeviceBuffer<float> device_;
    size_t capacity_ = 0, used_ = 0;
    bool replay_ = false;
    uint64_t generation_ = 0;
};

}  // namespace retnet::cuda
