// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"

namespace retnet {

namespace {

const char* type_name(mode_t mode) {
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes) {
    io::AtomicFile file(path);
    file.write(bytes);
    file.commit();
}

void require_regular_file(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ELOOP) throw Error(path + ": cannot open (a symlink loop: " + std::strerror(errno) + ")");
        throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    }
    if (!S_ISREG(st.st_mode))
        throw Error(path + ": is " + type_name(st.st_mode) + ", expected a regular file");
}

std::string read_regular_file(const std::string& path, uint64_t max_bytes) {
    require_regular_file(path);
    // O_NONBLOCK: if the path was swapped for a FIFO since the check, open() still returns at once.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(path + ": is not a regular file");
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > max_bytes) {
        ::close(fd);
        throw Error(path + ": is " + format_bytes(size) + ", more than the limit of " + format_bytes(max_bytes) +
                    " for this file");
    }
    std::string bytes(static_cast<size_t>(size), '\0');
    size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const std::string reason = std::strerror(errno);
            ::close(fd);
            throw Error(path + ": cannot read (" + reason + ")");
        }
        if (n == 0) break;  // the file shrank while we read it
        done += static_cast<size_t>(n);
    }
    ::close(fd);
    bytes.resize(done);
    return bytes;
}

}  // namespace retnet
