// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU ops' fork-join helper (core/src/cpu/parallel.h): every item once, in a split that depends
// only on the sizes, and an exception in any block reaching the caller after every block has ended.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
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

// The workers are kept between regions: thousands of small regions in a row, regions inside a
// region's blocks (on the calling thread and on a worker), and regions from two threads at once
// each cover every item once.
TEST(Parallel, KeptWorkersServeRegionsInARowNestedAndFromTwoThreads) {
    const Threads threads(3);
    auto region_sum = [](int64_t n) {
        std::vector<int64_t> partial(3, 0);
        const int used = parallel_blocks(n, 1, [&](int64_t begin, int64_t end, int block) {
            for (int64_t i = begin; i < end; ++i) partial[static_cast<size_t>(block)] += i;
        });
        int64_t sum = 0;
        for (int b = 0; b < used; ++b) sum += partial[static_cast<size_t>(b)];
        return sum;
    };
    for (int round = 0; round < 5000; ++round) {
        const int64_t n = 1 + round % 17;
        ASSERT_EQ(region_sum(n), n * (n - 1) / 2) << "round " << round;
    }
    std::vector<int64_t> inner(3, 0);
    parallel_blocks(3, 1, [&](int64_t begin, int64_t, int block) { inner[static_cast<size_t>(block)] = region_sum(100 + begin); });
    for (int b = 0; b < 3; ++b) EXPECT_EQ(inner[static_cast<size_t>(b)], (100 + b) * (99 + b) / 2) << b;
    std::atomic<int> wrong{0};
    auto hammer = [&] {
        for (int round = 0; round < 2000; ++round)
            if (region_sum(64) != 64 * 63 / 2) wrong += 1;
    };
    std::thread other(hammer);
    hammer();
    other.join();
    EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace retnet::cpu
