// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The memory budget of one command: large allocations (a model's weights, a training workspace,
// logits of a long sequence, a JSON document) are estimated before they are made and refused with
// one line naming the size and the limit, instead of growing until the kernel kills the process.
#include <cstdint>
#include <initializer_list>
#include <string>

namespace retnet {

// The limit in bytes: set_memory_limit()'s value, else $RETNET_MAX_MEMORY, else the machine's
// physical memory; lowered to the process's RLIMIT_AS / RLIMIT_DATA when those are smaller (a
// setting cannot give the process more than it may map).
uint64_t memory_limit();
// Where memory_limit() comes from, for messages ("the machine's memory", "--max-memory", …).
std::string memory_limit_source();
// Whether the process's own limit (ulimit -v, or a data-segment limit) is what binds.
bool address_space_limit_binds();
// Throws retnet::Error naming RETNET_MAX_MEMORY where it is set to something that is not a size:
// for main() to report in one line before anything asks for the limit (each ask would throw it).
void check_memory_setting();
// 0 returns to the default. `source` names the setting in messages.
void set_memory_limit(uint64_t bytes, const std::string& source = "--max-memory");

// OpenBLAS starts one thread per core as it loads, and each maps a 128 MiB buffer; where ulimit -v
// leaves no room for one, OpenBLAS retries the mapping forever and the process hangs (it joins the
// thread at exit). In two steps, for an executable:
// - hold_blas_threads_for_address_limit(argv, envp), from its .preinit_array (before any library's
//   initializer): when such a limit is set and the user chose no count (OPENBLAS_NUM_THREADS,
//   GOTO_NUM_THREADS, OMP_NUM_THREADS), the process executes itself again at once with
//   OPENBLAS_NUM_THREADS=1 (a setenv there would not last: the C library sets its environment from
//   envp after the .preinit_array has run) and RETNET_BLAS_THREADS_HELD=1 beside it;
// - cpu::fit_blas_threads_to_address_limit() (cpu_ops.h), from main(), then gives OpenBLAS
//   blas_threads_that_fit() threads: as many as fit in half the room the limit leaves once every
//   library's initializer has run (they map ~0.5 GB beyond the libraries themselves), at most the
//   cores; 0 when nothing was held.
void hold_blas_threads_for_address_limit(char** argv, char** envp);
int blas_threads_that_fit();
// Each thread that calls OpenBLAS maps such a buffer too, at its first product, and OpenBLAS keeps
// one per thread that called it at the same time; the mapping is retried forever where it fails.
// A BlasCallGuard is held around every BLAS call: a call that would need one buffer more than
// ever before checks first that it fits (throwing OutOfMemory in one line where it does not) and
// runs alone while it maps it. blas_callers_that_fit(wanted) says how many threads may call BLAS
// at once, at most `wanted` and at least 1: all where no address-space limit is set, else those
// whose buffers fit in half the room the limit leaves, counting the ones mapped already.
class BlasCallGuard {
public:
    BlasCallGuard();
    ~BlasCallGuard();
    BlasCallGuard(const BlasCallGuard&) = delete;
    BlasCallGuard& operator=(const BlasCallGuard&) = delete;

private:
    bool mapping_;  // this call holds the lock under which a new buffer is mapped
};
int blas_callers_that_fit(int wanted);
// Throws the OutOfMemory a first BLAS call would throw, now: for a command that will need BLAS
// (the CPU backend's products) and should refuse before it says it is ready, not at its first
// product. Maps nothing: it only asks whether the buffer would fit.
void check_blas_room();
inline constexpr uint64_t kBlasBufferBytes = uint64_t(128) << 20;
inline constexpr uint64_t kBlasThreadBytes = kBlasBufferBytes + (uint64_t(8) << 20);  // and a thread's stack
inline constexpr uint64_t kBlasCallRoom = kBlasBufferBytes + (uint64_t(2) << 20);    // and OpenBLAS's headers
// The environment variable that marks the held count (removed again once it is fitted).
inline constexpr const char* kBlasThreadsHeld = "RETNET_BLAS_THREADS_HELD";

// Throws retnet::Error "<what> needs 3.2 GiB, more than the memory limit of 2.0 GiB (…)" when
// bytes > memory_limit().
void check_memory(uint64_t bytes, const std::string& what);
// check_memory, and under the process's own address-space limit (ulimit -v) also against the room it
// leaves now (the libraries and what is already held count there): for a large allocation whose
// failure could not be caught cleanly (a JSON document's tree frees itself with allocations).
void check_memory_room(uint64_t bytes, const std::string& what);

// Ranks of a job on one machine share its memory, whatever each one's own limit: throws
// retnet::OutOfMemory "<what> needs 1.0 GiB per rank, 64 GiB for the 64 ranks on this machine, more
// than its memory of 31 GiB (…)" when bytes_per_rank × ranks_here > the machine's physical memory.
// One rank here: nothing beyond check_memory.
void check_host_memory(uint64_t bytes_per_rank, int ranks_here, const std::string& what);

// "512 MiB", "3.2 GiB", "17 bytes".
std::string format_bytes(uint64_t bytes);
// "8G", "512M", "1.5GiB", "4096" (bytes) -> bytes; throws retnet::Error naming `what` otherwise.
uint64_t parse_bytes(const std::string& text, const std::string& what);

// a * b * … with saturation at UINT64_MAX, for size estimates that must not wrap around.
uint64_t saturating_product(std::initializer_list<uint64_t> factors);
uint64_t saturating_sum(std::initializer_list<uint64_t> terms);

}  // namespace retnet
