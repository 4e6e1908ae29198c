// SPDX-License-Identifier: GPL-3.0-or-later
#include "device_limits.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda_check.h"

namespace retnet::cuda {

int multiprocessor_count() {
    static std::mutex mutex;
    static std::map<int, int> cache;  // by device
    int device = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    const std::lock_guard<std::mutex> lock(mutex);
    const auto found = cache.find(device);
    if (found != cache.end()) return found->second;
    int sms = 0;
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return cache[device] = std::max(1, sms);
}

int resident_blocks(const void* kernel, int threads, size_t shared) {
    static std::mutex mutex;
    static std::map<std::tuple<int, const void*, int, size_t>, int> cache;
    int device = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    {
        const std::lock_guard<std::mutex> lock(mutex);
        const auto found = cache.find(std::make_tuple(device, kernel, threads, shared));
        if (found != cache.end()) return found->second;
    }
    int per_sm = 0;
    RETNET_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared));
    const int blocks = std::max(1, per_sm * multiprocessor_count());  // takes the lock itself
    const std::lock_guard<std::mutex> lock(mutex);
    return cache[std::make_tuple(device, kernel, threads, shared)] = blocks;
}

}  // namespace retnet::cuda
