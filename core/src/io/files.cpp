// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"

namespace retnet {

namespace {

namespace fs = std::filesystem;

// What stands at a path, for a refusal that names it.
const char* kind_of(fs::file_type type) {
    switch (type) {
        case fs::file_type::regular: return "a regular file";
        case fs::file_type::directory: return "a directory";
        case fs::file_type::character: return "a character device";
        case fs::file_type::block: return "a block device";
        case fs::file_type::fifo: return "a FIFO (named pipe)";
        case fs::file_type::socket: return "a socket";
        default: return "a file of another kind";
    }
}

// Why `dir` cannot be made when an ancestor stands in the way (mkdir says only "File exists" or
// "Not a directory"): the nearest one that exists and is not a directory, or a link to nothing.
std::string blocking_ancestor(const fs::path& dir) {
    std::error_code ec;
    for (fs::path p = dir.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
        const fs::file_status own = fs::symlink_status(p, ec);
        if (!fs::exists(own)) continue;
        const fs::file_status st = fs::status(p, ec);
        if (ec == std::errc::too_many_symbolic_link_levels) return p.string() + " is in a loop of symbolic links";
        if (fs::is_symlink(own) && !fs::exists(st))
            return p.string() + " is a symbolic link to " + fs::read_symlink(p, ec).string() + ", which does not exist";
        if (!fs::is_directory(st)) return p.string() + " is " + kind_of(st.type()) + ", not a directory";
        return "";
    }
    return "";
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& bytes) {
    io::AtomicFile file(path);
    file.write(bytes);
    file.commit();
}

std::string follow_output_directory(const std::string& out_dir) {
    fs::path link(out_dir);
    if (!link.has_filename()) link = link.parent_path();  // "link/" would be followed by the kernel itself
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(link, ec))) return out_dir;
    const std::string where = "--out " + out_dir + " is a symbolic link";
    const fs::path target = fs::read_symlink(link, ec);
    const fs::path resolved = fs::canonical(link, ec);
    if (ec == std::errc::too_many_symbolic_link_levels) throw Error(where + " in a loop of links");
    if (ec == std::errc::no_such_file_or_directory)
        throw Error(where + " to " + target.string() +
                    ", which does not exist; create that directory or give --out a directory");
    if (ec) throw Error(where + " that cannot be followed (" + ec.message() + ")");
    if (!fs::is_directory(resolved, ec))
        throw Error(where + " to " + resolved.string() + ", which is not a directory; give --out a directory");
    return resolved.string();
}

namespace {
constexpr const char* kProbePrefix = ".retnet-probe-";
}  // namespace

void remove_dead_output_probes(const std::string& dir) {
    const fs::path place(dir);
    std::error_code ec;
    for (fs::directory_iterator it(place, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(kProbePrefix)) continue;
        const std::string digits = name.substr(std::strlen(kProbePrefix));
        if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
        const pid_t pid = static_cast<pid_t>(std::stol(digits));
        if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) ::rmdir(it->path().c_str());  // empty only
    }
}

void check_output_directory(const std::string& dir, const std::string& what) {
    if (dir.empty()) throw Error("--out is empty; give " + what);
    const fs::path target = follow_output_directory(dir);
    std::error_code ec;
    // Named here, not as mkdir's "Not a directory", which reads as if a parent were wrong.
    const fs::file_status st = fs::status(target, ec);
    if (fs::exists(st) && !fs::is_directory(st))
        throw Error("--out " + dir + " is " + kind_of(st.type()) + ", not a directory; give --out a directory");
    // A name too long (ENAMETOOLONG) read as "not there" and was found by mkdir after the work.
    if (ec == std::errc::filename_too_long) throw Error(dir + ": cannot create " + what + " (" + ec.message() + ")");
    const bool exists = fs::exists(st);
    if (!exists)
        if (const std::string why = blocking_ancestor(target); !why.empty())
            throw Error(dir + ": cannot create " + what + " (" + why + ")");
    // The first name the writing will make goes into `dir`, or into its nearest existing ancestor:
    // a directory made and removed there now meets a read-only filesystem or a missing permission
    // (which access() does not tell root) before the work, not after it.
    fs::path place = exists ? target : target.parent_path();
    while (!place.empty() && !fs::exists(fs::symlink_status(place, ec))) place = place.parent_path();
    if (place.empty()) place = ".";
    remove_dead_output_probes(place.string());
    const fs::path probe = place / (kProbePrefix + std::to_string(::getpid()));
    if (::mkdir(probe.c_str(), 0700) == 0)
        ::rmdir(probe.c_str());
    else if (errno != EEXIST)
        throw Error(dir + ": cannot " + (exists ? "write in " : "create ") + what + " (" + std::strerror(errno) + ")");
}

void check_output_file(const std::string& path) {
    // A link to nothing would make the write create its target somewhere else: refused, as the
    // directories' --out refuses it.
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(path, ec)) && fs::status(path, ec).type() == fs::file_type::not_found &&
        ec == std::errc::no_such_file_or_directory)  // a loop of links is named by check_writable
        throw Error(path + " is a symbolic link to " + fs::read_symlink(path, ec).string() +
                    ", which does not exist; give the file's own path");
    io::check_writable(path);
}

void require_regular_file(const std::string& path) {
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (ec) {
        if (ec == std::errc::too_many_symbolic_link_levels)
            throw Error(path + ": cannot open (a symlink loop: " + ec.message() + ")");
        std::error_code link_ec;
        if (ec == std::errc::no_such_file_or_directory && fs::is_symlink(fs::symlink_status(path, link_ec)))
            throw Error(path + ": is a symbolic link to " + fs::read_symlink(path, link_ec).string() +
                        ", which does not exist");
        throw Error(path + ": cannot open (" + ec.message() + ")");
    }
    if (!fs::is_regular_file(st)) throw Error(path + ": is " + kind_of(st.type()) + ", expected a regular file");
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
