// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A file written all-or-nothing without destroying what stands at the path:
// - a regular file (or a new name): bytes go to `<target>.tmp`, which replaces the target (rename)
//   only in commit(). If commit() is never reached (an error, an exception), the temporary file is
//   removed and whatever was at the path before stays intact;
// - a symlink is followed: its final target is replaced that way and the link stays a link;
// - a device, FIFO or socket (/dev/null, a named pipe read by another program) is written in
//   place, never replaced by a regular file; a FIFO nobody reads is refused at once, not waited on;
// - "-", /dev/stdout, /dev/stderr, /dev/fd/N and /proc/self/fd/N write to that open descriptor.
// A directory is refused.
#include <cstddef>
#include <string>

namespace retnet::io {

// Before the work whose bytes an AtomicFile will write: throws the Error its constructor would for
// `path` (a directory given as the file, a missing or read-only folder, a symlink loop), having made
// and removed a file of its own beside the target; a temporary file already there is left as it
// is. A device, a FIFO and a descriptor are not opened (a FIFO's reader would see its end).
void check_writable(const std::string& path);

class AtomicFile {
public:
    explicit AtomicFile(std::string path);  // throws retnet::Error if the output cannot be opened
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t size);  // throws retnet::Error naming the file
    void write(const std::string& text) { write(text.data(), text.size()); }
    void commit();

    const std::string& path() const { return path_; }

private:
    [[noreturn]] void fail(const std::string& what);
    void open_in_place(int fd_or_minus_one, const std::string& open_path);
    std::string path_;         // as the caller named it (for messages)
    std::string target_;       // the file that is replaced: path_ with its symlinks followed
    std::string temp_path_;    // "" when writing in place
    int fd_ = -1;
};

}  // namespace retnet::io
