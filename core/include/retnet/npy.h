// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// NumPy .npy files (https://numpy.org/neps/nep-0001-npy-format.html): a magic string, a version,
// a little-endian header length, then a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces to a multiple of
// 64 bytes and ended by '\n', then the data in C order.
#include <cstdint>
#include <string>
#include <vector>

#include "retnet/tensor.h"

namespace retnet {

// Writes float32 data ('<f4', C order, version 1.0) atomically (`path`.tmp, then rename).
void write_npy(const std::string& path, const Tensor& tensor);
void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// The bytes of such a file (header + data), for callers that write elsewhere (clipboard, archives).
std::string npy_bytes(const float* data, const std::vector<int64_t>& shape);

// Reads '<f4' or '<f8' (narrowed to float32) in C order, versions 1.0 to 3.0.
// Throws retnet::Error naming the file and the problem for anything else or any inconsistency.
Tensor read_npy(const std::string& path);

}  // namespace retnet
