// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Limits of the current device that launch shapes are sized by, queried once per device.
#include <cstddef>

namespace retnet::cuda {

// Streaming multiprocessors of the current device (at least 1).
int multiprocessor_count();

// Blocks of `threads` threads and `shared` bytes of dynamic shared memory of `kernel` that the
// current device holds at once (at least 1), cached per device, kernel and shape.
int resident_blocks(const void* kernel, int threads, size_t shared);

}  // namespace retnet::cuda
