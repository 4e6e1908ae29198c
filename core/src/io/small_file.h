// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Reads a whole small file (a config, a tokenizer, an index, a hub ref) after checking that it is a
// regular file of bounded size: a FIFO, a device (a config.json symlinked to /dev/zero) or a
// directory would otherwise hang the reader or grow memory without end.
#include <cstdint>
#include <string>

namespace retnet::io {

// Throws retnet::Error naming `path` when it is missing, not a regular file or over `max_bytes`.
std::string read_small_file(const std::string& path, uint64_t max_bytes);

}  // namespace retnet::io
