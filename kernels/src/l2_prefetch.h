// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The weights the next kernel of a decoding step will read, for the kernel before it to request
// into L2 as it starts (prefetch_share_to_l2 in common.cuh). A step at one sequence is a chain of
// short kernels, each waiting for the one before: the retention is bound by its latency, and every
// projection's ramp and tail leave DRAM idle, while the weights that follow are never written and
// can stream at any time. Empty regions: nothing is requested.
#include <cstdint>

namespace retnet::cuda {

struct L2Prefetch {
    static constexpr int kRegions = 2;
    const void* at[kRegions] = {};   // 16-byte aligned
    uint64_t bytes[kRegions] = {};   // multiples of 16
};

#if defined(__CUDACC__)
#define RETNET_HOST_DEVICE __host__ __device__
#else
#define RETNET_HOST_DEVICE
#endif

// Block `block` of `blocks` requests bytes [begin, end) of the regions laid end to end: equal
// shares in multiples of 16 bytes (what a bulk prefetch takes), the last ones shorter or empty.
struct PrefetchShare {
    uint64_t begin = 0, end = 0;
};
RETNET_HOST_DEVICE inline PrefetchShare prefetch_share(uint64_t total, uint64_t blocks, uint64_t block) {
    const uint64_t share = ((total + blocks - 1) / blocks + 15) / 16 * 16;
    const uint64_t begin = block * share < total ? block * share : total;
    return {begin, begin + share < total ? begin + share : total};
}
#undef RETNET_HOST_DEVICE

}  // namespace retnet::cuda
