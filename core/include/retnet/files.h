// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Reading the files a user names (config.json, tokenizer.model, a text, a checkpoint's state):
// what stands at the path must be a regular file. A FIFO would block the reader forever, a
// directory would read as empty ("not valid JSON", "too short"), so each gets its own line instead.
#include <cstdint>
#include <string>

namespace retnet {

// Throws retnet::Error naming `path` and what is wrong: missing, a directory, a FIFO, a device,
// a socket, a symlink loop, no permission. Never opens the file, so never blocks.
void require_regular_file(const std::string& path);

// The whole file, after require_regular_file; refused (one line naming both sizes) when it is larger
// than `max_bytes`, before anything is allocated.
std::string read_regular_file(const std::string& path, uint64_t max_bytes = uint64_t(1) << 32);

// Writes `bytes` all-or-nothing without destroying what stands at `path` (a symlink is followed,
// a device or FIFO written in place, "-" is stdout): see core/src/io/atomic_file.h.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace retnet
