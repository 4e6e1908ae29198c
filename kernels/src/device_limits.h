// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Limits of the current device that launch shapes are sized by, queried once per device.

namespace retnet::cuda {

// Streaming multiprocessors of the current device (at least 1).
int multiprocessor_count();

}  // namespace retnet::cuda
