// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Helpers shared by the libFuzzer targets. A property that fails calls fuzz_fail(), which aborts,
// so libFuzzer records the input as a crash; expected rejections are retnet::Error and are fine.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace retnet::fuzz {

[[noreturn]] inline void fuzz_fail(const std::string& what) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
    std::abort();
}

// The readers under test take a path and mmap or stream the file. An in-memory file (memfd) is a
// regular file to them and costs no disk I/O per input.
class MemoryFile {
public:
    MemoryFile(const uint8_t* data, size_t size) {
        fd_ = ::memfd_create("retnet-fuzz", MFD_CLOEXEC);
        if (fd_ < 0) fuzz_fail("memfd_create failed");
        size_t done = 0;
        while (done < size) {
            const ssize_t n = ::write(fd_, data + done, size - done);
            if (n <= 0) fuzz_fail("write to memfd failed");
            done += static_cast<size_t>(n);
        }
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~MemoryFile() { ::close(fd_); }
    MemoryFile(const MemoryFile&) = delete;
    MemoryFile& operator=(const MemoryFile&) = delete;
    const std::string& path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};

}  // namespace retnet::fuzz
