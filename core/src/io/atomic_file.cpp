// SPDX-License-Identifier: GPL-3.0-or-later
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "retnet/error.h"

namespace retnet::io {

namespace fs = std::filesystem;

namespace {

// "-" -> 1, "/dev/stdout" -> 1, "/dev/fd/3" -> 3, …; nullopt for other paths.
std::optional<int> descriptor_path(const std::string& path) {
    if (path == "-" || path == "/dev/stdout") return 1;
    if (path == "/dev/stderr") return 2;
    for (const char* prefix : {"/dev/fd/", "/proc/self/fd/"}) {
        const std::string p(prefix);
        if (path.size() <= p.size() || path.compare(0, p.size(), p) != 0) continue;
        const std::string digits = path.substr(p.size());
        if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        return std::stoi(digits);
    }
    return std::nullopt;
}

// The path with every symlink followed (relative targets resolve against the link's directory);
// a dangling link gives the path it points to, where the new file is created.
std::string follow_symlinks(const std::string& path) {
    fs::path p(path);
    for (int hops = 0; hops < 40; ++hops) {
        std::error_code ec;
        if (!fs::is_symlink(fs::symlink_status(p, ec))) return p.string();
        const fs::path target = fs::read_symlink(p, ec);
        if (ec) throw Error(path + ": cannot read the symlink (" + ec.message() + ")");
        p = target.is_absolute() ? target : p.parent_path() / target;
    }
    throw Error(path + ": cannot write (a symlink loop: " + std::strerror(ELOOP) + ")");
}

// What stands at an output path and cannot be written in place: a directory, or a socket (open()
// fails on one with ENXIO, as on a FIFO that nobody reads: named here, not as a FIFO).
void refuse_unwritable(const std::string& path, const struct stat& st) {
    if (S_ISDIR(st.st_mode)) throw Error(path + ": is a directory, expected a file name to write");
    if (S_ISSOCK(st.st_mode)) throw Error(path + ": is a socket, not a file that can be written");
}

}  // namespace

void check_writable(const std::string& path) {
    if (descriptor_path(path)) return;
    const std::string target = follow_symlinks(path);
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        refuse_unwritable(path, st);
        return;
    }
    const std::string probe = target + ".probe-" + std::to_string(::getpid());
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0 && errno != EEXIST)
        throw Error(path + ": cannot create " + target + ".tmp (" + std::strerror(errno) + ")");
    if (fd < 0) return;
    ::close(fd);
    ::unlink(probe.c_str());
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
    if (const auto fd = descriptor_path(path_)) {
        open_in_place(::fcntl(*fd, F_DUPFD_CLOEXEC, 3), path_);
        return;
    }
    target_ = follow_symlinks(path_);
    struct stat st {};
    const bool exists = ::stat(target_.c_str(), &st) == 0;
    if (exists && !S_ISREG(st.st_mode)) {
        refuse_unwritable(path_, st);
        // O_NONBLOCK: a FIFO without a reader fails with ENXIO instead of blocking forever.
        open_in_place(::open(target_.c_str(), O_WRONLY | O_CLOEXEC | O_NONBLOCK), target_);
        return;
    }
    temp_path_ = target_ + ".tmp";
    // Whatever is at the temporary name is stale (a killed writer's) and goes before a new file is
    // made there, never written through: a symbolic link or a hard link would put the data into the
    // file it shares (and be renamed over the target), a FIFO would wait for a reader. A directory
    // there cannot be unlinked: that failure (EISDIR on Linux) is the error. (Two writers of one
    // path at once still share the name: the later one's unlink takes the earlier one's file.)
    if (::unlink(temp_path_.c_str()) != 0 && errno != ENOENT)
        throw Error(path_ + ": cannot create " + temp_path_ + " (" + std::strerror(errno) + ")");
    // A file replaced keeps its permission bits (a private file stays private; not set-id bits) and,
    // where this process may give it, its owner; a new one gets 0644 less the umask.
    const mode_t mode = exists ? (st.st_mode & 0777) : 0644;
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd_ < 0) throw Error(path_ + ": cannot create " + temp_path_ + " (" + std::strerror(errno) + ")");
    if (exists) {
        const bool owner_kept = ::fchown(fd_, st.st_uid, st.st_gid) == 0;  // only root may give a file away
        (void)owner_kept;  // else the file stays this process's, as any new one
        ::fchmod(fd_, mode);  // exactly, whatever the umask (after fchown, which may clear bits)
    }
}

void AtomicFile::open_in_place(int fd, const std::string& open_path) {
    if (fd < 0) {
        if (errno == ENXIO) throw Error(path_ + ": is a FIFO (named pipe) that nobody reads; start its reader first");
        throw Error(path_ + ": cannot open " + open_path + " for writing (" + std::strerror(errno) + ")");
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);  // from here on, writes wait for the reader
    fd_ = fd;
}

AtomicFile::~AtomicFile() {
    if (fd_ < 0) return;
    ::close(fd_);
    if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::fail(const std::string& what) {
    const std::string reason = std::strerror(errno);
    ::close(fd_);
    fd_ = -1;
    if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
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
    if (temp_path_.empty()) {  // in place: a device, FIFO or descriptor has nothing to rename
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) throw Error(path_ + ": cannot close (" + std::strerror(errno) + ")");
        return;
    }
    // fsync before rename: otherwise a crash could leave the new name pointing at empty data.
    if (::fsync(fd_) != 0) fail("flush");
    if (::close(fd_) != 0) {
        fd_ = -1;
        const std::string reason = std::strerror(errno);
        ::unlink(temp_path_.c_str());
        throw Error(path_ + ": cannot close (" + reason + ")");
    }
    fd_ = -1;
    if (std::rename(temp_path_.c_str(), target_.c_str()) != 0) {
        const std::string reason = std::strerror(errno);
        ::unlink(temp_path_.c_str());
        throw Error(path_ + ": cannot replace with " + temp_path_ + " (" + reason + ")");
    }
}

}  // namespace retnet::io
