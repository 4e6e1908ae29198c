// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A minimal fork-join helper for the CPU ops' element-wise loops and the trainer's optimizer. The
// split of [0, n) into contiguous blocks depends only on n and the thread count, so per-block
// partial sums reduced in block order give bit-identical results run after run (exact resume
// relies on it).
#include <cstdint>
#include <functional>

namespace retnet::cpu {

// Calls fn(begin, end, block) for at most `blocks` contiguous blocks covering [0, n); block
// indices are 0..blocks−1 in order. Returns the number of blocks used.
int parallel_blocks(int64_t n, int64_t min_block, const std::function<void(int64_t, int64_t, int)>& fn);
// How many blocks parallel_blocks would use for this n.
int block_count(int64_t n, int64_t min_block);

// Runs fn with BLAS limited to one thread (for BLAS calls made from several threads at once).
void with_single_threaded_blas(const std::function<void()>& fn);

}  // namespace retnet::cpu
