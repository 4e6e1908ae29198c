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

// --out given as a symbolic link: the directory it leads to (absolute, every link followed), as
// the project follows a symlink wherever it writes; `dir` itself otherwise. A link to nothing, to
// something other than a directory, or a loop of links is refused in one line.
std::string follow_output_directory(const std::string& dir);

// A bad --out is refused before the work whose result it is to hold, not after it: `dir`, a
// directory to write into (made with its parents when missing: train, init, convert), must be one
// or be possible to make, and take new files. Refused in one line: an empty name; a link as
// follow_output_directory refuses it; something other than a directory; an ancestor in the way (a
// file, a link to nothing); a directory that cannot be made or written in (a read-only filesystem,
// no permission, /proc). `what` names it in the lines ("the run directory"). Leaves nothing behind.
void check_output_directory(const std::string& dir, const std::string& what);

// check_output_directory makes and removes a probe directory (.retnet-probe-PID) in `dir`; one
// left by a process killed in between, whose process is gone, is removed here (an empty directory
// only), so that it does not make `dir` look taken. A running process's probe is left alone.
void remove_dead_output_probes(const std::string& dir);

// The same for a file that write_file_atomically and its kin will write (logits --out), refused
// in the write's own line (a missing or read-only folder, a directory given as the file). A device,
// a FIFO and standard output are written in place and not opened before (a FIFO's reader would
// see its end); a temporary file left at the path's .tmp is left for the write to replace.
void check_output_file(const std::string& path);

}  // namespace retnet
