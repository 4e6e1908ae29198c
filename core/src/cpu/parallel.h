// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The fork-join helper of the CPU ops, the per-head retention and the trainer's optimizer, on
// worker threads kept for the process (parallel.cpp). The split of [0, n) into contiguous blocks
// depends only on n and the thread count, so per-block partial sums reduced in block order give
// bit-identical results run after run (exact resume relies on it).
#include <cstdint>
#include <functional>

namespace retnet::cpu {

// Calls fn(begin, end, block) for at most `blocks` contiguous blocks covering [0, n); block
// indices are 0..blocks−1 in order. Returns the number of blocks used. An exception in a block is
// rethrown once every block has ended.
int parallel_blocks(int64_t n, int64_t min_block, const std::function<void(int64_t, int64_t, int)>& fn);
// How many blocks parallel_blocks would use for this n.
int block_count(int64_t n, int64_t min_block);

// parallel_blocks (min_block 1) for independent items that call BLAS, which runs single-threaded
// inside: as many blocks as the threads and, under an address-space limit, as the OpenBLAS work
// buffers that fit (blas_callers_that_fit, memory_limit.h). Returns the number of blocks used.
int parallel_blas_blocks(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

}  // namespace retnet::cpu
