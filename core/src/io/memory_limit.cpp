// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/memory_limit.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <utility>

#include "retnet/error.h"

namespace retnet {

namespace {
std::atomic<uint64_t> g_limit{0};
std::string g_source;  // set together with g_limit, from the main thread before any work

uint64_t physical_memory() {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : UINT64_MAX;
}

uint64_t rlimit_of(int resource) {
    rlimit r{};
    if (::getrlimit(resource, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
    return static_cast<uint64_t>(r.rlim_cur);
}

const char* env_limit() {
    const char* env = std::getenv("RETNET_MAX_MEMORY");
    return env && *env ? env : nullptr;
}

// What the process may map at all (ulimit -v, or a data-segment limit): no setting raises it.
uint64_t process_limit() { return std::min(rlimit_of(RLIMIT_AS), rlimit_of(RLIMIT_DATA)); }

// The limit asked for (--max-memory, RETNET_MAX_MEMORY), else 0.
uint64_t asked_limit() {
    if (const uint64_t set = g_limit.load()) return set;
    if (const char* env = env_limit()) return parse_bytes(env, "RETNET_MAX_MEMORY");
    return 0;
}

// The limit before the process's own: the asked one, else the machine's memory.
uint64_t limit_before_process() {
    const uint64_t asked = asked_limit();
    return asked ? asked : physical_memory();
}

}  // namespace

uint64_t memory_limit() { return std::min(limit_before_process(), process_limit()); }

bool address_space_limit_binds() { return process_limit() < limit_before_process(); }

std::string memory_limit_source() {
    const std::string asked = g_limit.load() ? g_source : env_limit() ? "RETNET_MAX_MEMORY" : "";
    const std::string process = "the process's address-space limit (ulimit -v)";
    if (!address_space_limit_binds()) return asked.empty() ? "the machine's memory" : asked;
    return asked.empty() ? process : process + ", lower than " + asked + "'s " + format_bytes(asked_limit());
}

void check_memory_setting() {
    if (const char* env = env_limit()) parse_bytes(env, "RETNET_MAX_MEMORY");
}

void set_memory_limit(uint64_t bytes, const std::string& source) {
    g_source = source;
    g_limit.store(bytes);
}

namespace {

// A refusal's two sizes as its message writes them: rounded, or in exact bytes where the rounded
// figures read equal ("needs 92 MiB, more than the limit of 92 MiB" says nothing).
std::pair<std::string, std::string> need_and_have(uint64_t need, uint64_t have) {
    std::string need_text = format_bytes(need), have_text = format_bytes(have);
    if (need_text == have_text) need_text = std::to_string(need) + " bytes", have_text = std::to_string(have) + " bytes";
    return {need_text, have_text};
}

}  // namespace

void check_memory(uint64_t bytes, const std::string& what) {
    const uint64_t limit = memory_limit();
    if (bytes <= limit) return;
    const auto [need, have] = need_and_have(bytes, limit);
    throw OutOfMemory(what + " needs " + need + ", more than the memory limit of " + have + " (" +
                      memory_limit_source() +
                      (address_space_limit_binds() ? "; raise it or lower the sizes)"  // no option raises it
                                             : "; set another with --max-memory SIZE or RETNET_MAX_MEMORY)"));
}

void check_host_memory(uint64_t bytes_per_rank, int ranks_here, const std::string& what) {
    if (ranks_here <= 1) return;
    const uint64_t total = saturating_product({bytes_per_rank, static_cast<uint64_t>(ranks_here)});
    const uint64_t machine = physical_memory();
    if (total <= machine) return;
    const auto [need, have] = need_and_have(total, machine);
    throw OutOfMemory(what + " needs " + format_bytes(bytes_per_rank) + " per rank, " + need + " for the " +
                      std::to_string(ranks_here) + " ranks on this machine, more than its memory of " + have +
                      " (the ranks share it: start fewer on one machine or lower the sizes)");
}

void hold_blas_threads_for_address_limit(char** argv, char** envp) {
    if (!argv || !argv[0] || !envp) return;
    size_t count = 0;
    for (; envp[count]; ++count)  // the C library's getenv does not read envp yet
        for (const char* name : {"OPENBLAS_NUM_THREADS=", "GOTO_NUM_THREADS=", "OMP_NUM_THREADS=", "RETNET_BLAS_THREADS_HELD="})
            if (std::strncmp(envp[count], name, std::strlen(name)) == 0) return;  // the user's count, or held already
    if (process_limit() == UINT64_MAX) return;
    // the executable itself, by its path (so that the process keeps its name); not where the dynamic
    // loader was run as a program (`ld.so retnet …`), whose arguments would then be read as its own
    static char path[4096];
    const ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
    if (length <= 0) return;
    path[length] = '\0';
    const char* slash = std::strrchr(path, '/');
    const char* name = slash ? slash + 1 : path;
    if (std::strncmp(name, "ld-linux", 8) == 0 || std::strncmp(name, "ld.so", 5) == 0) return;
    static char threads[] = "OPENBLAS_NUM_THREADS=1", held[] = "RETNET_BLAS_THREADS_HELD=1";
    char** env = static_cast<char**>(std::malloc((count + 3) * sizeof(char*)));
    if (!env) return;
    std::memcpy(env, envp, count * sizeof(char*));
    env[count] = threads, env[count + 1] = held, env[count + 2] = nullptr;
    ::execve(path, argv, env);  // returns only where it failed: go on as before
    std::free(env);
}

namespace {

// The address space in use: /proc/self/statm's first field.
uint64_t mapped_bytes() {
    uint64_t pages = 0;
    if (const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC); fd >= 0) {
        char text[64] = {};
        if (::read(fd, text, sizeof text - 1) > 0) pages = std::strtoull(text, nullptr, 10);
        ::close(fd);
    }
    const long page = ::sysconf(_SC_PAGESIZE);
    return pages * static_cast<uint64_t>(page > 0 ? page : 4096);
}

uint64_t address_room() {
    const uint64_t mapped = mapped_bytes(), limit = process_limit();
    return limit > mapped ? limit - mapped : 0;
}

}  // namespace

void check_memory_room(uint64_t bytes, const std::string& what) {
    check_memory(bytes, what);
    if (process_limit() == UINT64_MAX) return;
    const uint64_t room = address_room();
    if (bytes <= room) return;
    const auto [need, have] = need_and_have(bytes, room);
    throw OutOfMemory(what + " needs " + need + ", more than the " + have + " left under the process's address-space limit of " +
                      format_bytes(process_limit()) + " (ulimit -v; raise it or lower the sizes)");
}

int blas_threads_that_fit() {
    if (!std::getenv(kBlasThreadsHeld)) return 0;
    const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
    return static_cast<int>(
        std::clamp<uint64_t>(address_room() / 2 / kBlasThreadBytes, 1, cores > 0 ? static_cast<uint64_t>(cores) : 1));
}

namespace {

std::atomic<int> g_blas_active{0};   // threads inside a BLAS call now
std::atomic<int> g_blas_buffers{0};  // the most that ever were: OpenBLAS keeps a buffer for each
std::mutex g_blas_mapping;           // held by a call that maps a new buffer

// No address-space limit: no buffer needs checking. Asked once (the process never sets its own).
bool blas_unlimited() {
    static const bool unlimited = process_limit() == UINT64_MAX;
    return unlimited;
}

OutOfMemory no_room_for_blas(uint64_t room) {
    return OutOfMemory("the BLAS library needs " + format_bytes(kBlasCallRoom) + " more (its " +
                       format_bytes(kBlasBufferBytes) + " work buffer and room beside it), more than the " +
                       format_bytes(room) + " left under the process's address-space limit of " +
                       format_bytes(process_limit()) + " (ulimit -v; raise it)");
}

}  // namespace

BlasCallGuard::BlasCallGuard() : mapping_(false) {
    const int active = g_blas_active.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (active <= g_blas_buffers.load(std::memory_order_acquire) || blas_unlimited()) return;
    g_blas_mapping.lock();  // one new buffer at a time, each checked against the room left then
    mapping_ = true;
    if (active <= g_blas_buffers.load(std::memory_order_acquire)) return;  // mapped meanwhile
    const uint64_t room = address_room();
    if (room < kBlasCallRoom) {
        g_blas_mapping.unlock();
        mapping_ = false;
        g_blas_active.fetch_sub(1, std::memory_order_acq_rel);
        throw no_room_for_blas(room);
    }
    int seen = g_blas_buffers.load(std::memory_order_relaxed);
    while (seen < active && !g_blas_buffers.compare_exchange_weak(seen, active, std::memory_order_acq_rel)) {
    }
}

BlasCallGuard::~BlasCallGuard() {
    g_blas_active.fetch_sub(1, std::memory_order_acq_rel);
    if (mapping_) g_blas_mapping.unlock();
}

void check_blas_room() {
    if (blas_unlimited() || g_blas_buffers.load(std::memory_order_acquire) > 0) return;
    if (const uint64_t room = address_room(); room < kBlasCallRoom) throw no_room_for_blas(room);
}

int blas_callers_that_fit(int wanted) {
    const int mapped = g_blas_buffers.load(std::memory_order_acquire);
    if (wanted <= std::max(mapped, 1) || blas_unlimited()) return std::max(wanted, 1);
    const uint64_t more = address_room() / 2 / kBlasThreadBytes;
    return static_cast<int>(std::clamp<uint64_t>(static_cast<uint64_t>(mapped) + more,
                                                 static_cast<uint64_t>(std::max(mapped, 1)), static_cast<uint64_t>(wanted)));
}

std::string format_bytes(uint64_t bytes) {
    if (bytes == UINT64_MAX) return "more than 16 EiB";
    static const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double value = static_cast<double>(bytes);
    int unit = 0;
    while (value >= 1024.0 && unit < 6) {
        value /= 1024.0;
        ++unit;
    }
    char buf[48];
    if (unit == 0) std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
    else std::snprintf(buf, sizeof buf, value < 10 ? "%.1f %s" : "%.0f %s", value, kUnits[unit]);
    return buf;
}

uint64_t parse_bytes(const std::string& text, const std::string& what) {
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    // a decimal number only: strtod would also read "0x10", "inf" and "nan"
    const bool decimal = std::all_of(text.c_str(), static_cast<const char*>(end),
                                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || std::strchr(" .eE+-", c); });
    std::string unit(end ? end : "");
    unit.erase(0, unit.find_first_not_of(' '));  // "8 G" as "8G"
    unit.erase(unit.find_last_not_of(' ') + 1);
    const auto ends_with = [&](const char* suffix) {
        const size_t n = std::strlen(suffix);
        return unit.size() >= n && unit.compare(unit.size() - n, n, suffix) == 0;
    };
    // "G", "GB" and "GiB" all mean 2^30; "B" alone means bytes
    if (unit.size() > 2 && ends_with("iB")) unit.resize(unit.size() - 2);
    else if (ends_with("B")) unit.resize(unit.size() - 1);
    double scale = 0;
    if (unit.empty()) scale = 1;
    else if (unit == "K" || unit == "k") scale = 1024.0;
    else if (unit == "M" || unit == "m") scale = 1024.0 * 1024;
    else if (unit == "G" || unit == "g") scale = 1024.0 * 1024 * 1024;
    else if (unit == "T" || unit == "t") scale = 1024.0 * 1024 * 1024 * 1024;
    const double bytes = value * scale;
    if (end == text.c_str() || !decimal || scale == 0 || !std::isfinite(bytes) || bytes < 1 || bytes >= 1.8e19 ||
        bytes != std::floor(bytes))  // "1.5" bytes; "1.5K" is 1536
        throw Error(what + " expects a size such as 8G, 512M or 1048576, got '" + text + "'");
    return static_cast<uint64_t>(bytes);
}

uint64_t saturating_product(std::initializer_list<uint64_t> factors) {
    uint64_t out = 1;
    for (const uint64_t f : factors) {
        if (f != 0 && out > UINT64_MAX / f) return UINT64_MAX;
        out *= f;
    }
    return out;
}

uint64_t saturating_sum(std::initializer_list<uint64_t> terms) {
    uint64_t out = 0;
    for (const uint64_t t : terms) out = t > UINT64_MAX - out ? UINT64_MAX : out + t;
    return out;
}

}  // namespace retnet
