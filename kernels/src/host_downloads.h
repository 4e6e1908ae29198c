// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Copies to host memory gathered over a forward and made at its end. Device ranges that follow
// each other (a batch's one-row logits) become one copy into pinned memory and then one host
// copy each: a copy into pageable memory is a staged, synchronous driver copy, and B of them
// cost more than the decoding step of B sequences itself.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "cuda_check.h"

namespace retnet::cuda {

class HostDownloads {
public:
    HostDownloads() = default;
    ~HostDownloads() {
        if (pinned_) RETNET_CUDA_CHECK_PRINT(cudaFreeHost(pinned_));
    }
    HostDownloads(const HostDownloads&) = delete;
    HostDownloads& operator=(const HostDownloads&) = delete;

    void add(const float* device, float* host, size_t count) { pending_.push_back({device, host, count}); }
    void discard() { pending_.clear(); }

    // Issues the copies on `stream` and waits for them.
    void finish(cudaStream_t stream) {
        std::vector<Range> ranges;
        ranges.swap(pending_);
        size_t total = 0;
        for (const Range& r : ranges) total += r.count;
        if (total * sizeof(float) > kMaxPinnedBytes || !reserve(total)) {  // large: straight to the host
            for (const Range& r : ranges)
                RETNET_CUDA_CHECK(cudaMemcpyAsync(r.host, r.device, r.count * sizeof(float), cudaMemcpyDeviceToHost, stream));
            RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
            return;
        }
        size_t offset = 0;
        for (size_t i = 0; i < ranges.size();) {
            size_t run = ranges[i].count, j = i + 1;
            while (j < ranges.size() && ranges[j].device == ranges[j - 1].device + ranges[j - 1].count) run += ranges[j++].count;
            RETNET_CUDA_CHECK(cudaMemcpyAsync(pinned_ + offset, ranges[i].device, run * sizeof(float),
                                              cudaMemcpyDeviceToHost, stream));
            offset += run;
            i = j;
        }
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
        offset = 0;
        for (const Range& r : ranges) {
            std::memcpy(r.host, pinned_ + offset, r.count * sizeof(float));
            offset += r.count;
        }
    }

private:
    static constexpr size_t kMaxPinnedBytes = size_t{64} << 20;
    struct Range {
        const float* device;
        float* host;
        size_t count;
    };
    // False when pinned memory cannot be had (the copies then go straight to pageable memory).
    bool reserve(size_t count) {
        if (count <= capacity_) return true;
        if (pinned_) RETNET_CUDA_CHECK(cudaFreeHost(pinned_));
        pinned_ = nullptr;
        capacity_ = 0;
        if (cudaMallocHost(reinterpret_cast<void**>(&pinned_), count * sizeof(float)) != cudaSuccess) {
            (void)cudaGetLastError();
            pinned_ = nullptr;
            return false;
        }
        capacity_ = count;
        return true;
    }

    std::vector<Range> pending_;
    float* pinned_ = nullptr;
    size_t capacity_ = 0;
};

}  // namespace retnet::cuda
