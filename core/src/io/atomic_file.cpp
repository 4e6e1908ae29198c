// SPDX-License-Identifier: GPL-3.0-or-later
#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "retnet/error.h"

namespace retnet::io {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), temp_path_(path_ + ".tmp") {
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(path_ + ": cannot create " + temp_path_ + " (" + std::strerror(errno) + ")");
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) {
        ::close(fd_);
        ::unlink(temp_path_.c_str());
    }
}

void AtomicFile::fail(const std::string& what) {
    const std::string reason = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    throw Error(path_ + ": cannot " + what + " (" + reason + ")");
}

void AtomicFile::write(const void* data, size_t size) {
    if (fd_ < 0) throw Error(path_ + ": write after the file was closed");
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd_, p, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("write");
        }
        p += n;
        size -= static_cast<size_t>(n);
    }
}

void AtomicFile::commit() {
    if (fd_ < 0) throw Error(path_ + ": commit after the file was closed");
    // fsync before rename: otherwise a crash could leave the new name pointing at empty data.
    if (::fsync(fd_) != 0) fail("flush");
    if (::close(fd_) != 0) {
        fd_ = -1;
        const std::string reason = std::strerror(errno);
        ::unlink(temp_path_.c_str());
        throw Error(path_ + ": cannot close (" + reason + ")");
    }
    fd_ = -1;
    if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
        const std::string reason = std::strerror(errno);
        ::unlink(temp_path_.c_str());
        throw Error(path_ + ": cannot replace with " + temp_path_ + " (" + reason + ")");
    }
}

}  // namespace retnet::io
