// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A file written all-or-nothing: bytes go to `path`.tmp, which replaces `path` (rename) only in
// commit(). If commit() is never reached (an error, an exception), the temporary file is removed
// and whatever was at `path` before stays intact.
#include <cstddef>
#include <string>

namespace retnet::io {

class AtomicFile {
public:
    explicit AtomicFile(std::string path);  // throws retnet::Error if the temp file cannot be created
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t size);  // throws retnet::Error naming the file
    void write(const std::string& text) { write(text.data(), text.size()); }
    void commit();

    const std::string& path() const { return path_; }

private:
    [[noreturn]] void fail(const std::string& what);
    std::string path_;
    std::string temp_path_;
    int fd_ = -1;
};

}  // namespace retnet::io
