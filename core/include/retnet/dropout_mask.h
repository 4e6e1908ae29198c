// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The training dropout masks (LossOptions::dropout): element i of site s is dropped when a hash of
// (seed, s, i) falls below p. Counter-based, so no generator state is stored and any thread split
// — CPU threads or CUDA blocks — gives the same masks. Shared verbatim by the CPU trainer and the
// CUDA trainer's kernels (no CUDA header here: only the qualifiers when nvcc compiles it).
//
// Sites: 0 is the embedding output; layer l's retention branch (after o_proj) is 1 + 2l, its FFN
// branch (after down_proj) 2 + 2l. Elements index the (B·T, d) branch output row-major.
#include <cstdint>

#if defined(__CUDACC__)
#define RETNET_HOST_DEVICE __host__ __device__
#else
#define RETNET_HOST_DEVICE
#endif

namespace retnet::train {

RETNET_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

inline constexpr uint64_t dropout_site_embedding = 0;
RETNET_HOST_DEVICE inline uint64_t dropout_site_retention(int64_t layer) { return 1 + 2 * static_cast<uint64_t>(layer); }
RETNET_HOST_DEVICE inline uint64_t dropout_site_ffn(int64_t layer) { return 2 + 2 * static_cast<uint64_t>(layer); }

// The per-(seed, site) offset of the element hashes.
RETNET_HOST_DEVICE inline uint64_t dropout_site_base(uint64_t seed, uint64_t site) {
    return splitmix64(seed ^ splitmix64(site));
}

// True when element i of the site whose base is `base` is dropped with probability p: the top 53
// bits of the hash as a double in [0, 1) (exact), compared with p.
RETNET_HOST_DEVICE inline bool dropout_drops(uint64_t base, int64_t i, double p) {
    const double u = static_cast<double>(splitmix64(base + static_cast<uint64_t>(i)) >> 11) * 0x1.0p-53;
    return u < p;
}

}  // namespace retnet::train
