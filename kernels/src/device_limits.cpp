// SPDX-License-Identifier: GPL-3.0-or-later
#include "device_limits.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>

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

}  // namespace retnet::cuda
