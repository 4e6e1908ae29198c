// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU ops' fork-join helper (core/src/cpu/parallel.h): every item once, in a split that depends
// only on the sizes, and an exception in any block reaching the caller after every block has ended.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

namespace retnet::cpu {
namespace {

// Restores the thread count a test sets.
struct Threads {
    explicit Threads(int n) { set_num_threads(n); }
    ~Threads() { set_num_threads(0); }
};

TEST(Parallel, EveryItemRunsOnceInBlocksInOrder) {
    const Threads threads(4);
    for (const int64_t n : {1, 3, 4, 37}) {
        std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
        std::vector<int64_t> block_begin(4, -1);
        const int used = parallel_blas_blocks(n, [&](int64_t begin, int64_t end, int block) {
            block_begin[static_cast<size_t>(block)] = begin;
            for (int64_t i = begin; i < end; ++i) runs[static_cast<size_t>(i)] += 1;
        });
        EXPECT_EQ(used, std::min<int64_t>(n, 4)) << n;
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(runs[static_cast<size_t>(i)].load(), 1) << n << " item " << i;
        for (int b = 0; b < used; ++b) EXPECT_EQ(block_begin[static_cast<size_t>(b)], n * b / used) << n;
    }
}

// A block that threw in a worker thread ended the process (std::terminate), and one that threw on
// the calling thread left the workers joinable, which ends it too.
TEST(Parallel, AnExceptionInAnyBlockReachesTheCallerAfterEveryBlockEnded) {
    const Threads threads(4);
    for (const int thrower : {0, 2}) {
        std::atomic<int> ended{0};
        EXPECT_THROW(parallel_blocks(400, 1,
                                     [&](int64_t, int64_t, int block) {
                                         if (block == thrower) throw std::runtime_error("block failed");
                                         ended += 1;
                                     }),
                     std::runtime_error)
            << thrower;
        EXPECT_EQ(ended.load(), 3) << thrower;
    }
}

}  // namespace
}  // namespace retnet::cpu
