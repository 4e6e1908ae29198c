// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU ops' threads (cpu/parallel.h): the thread count, the split of a range into blocks, and
// the workers that run the blocks, kept between parallel regions.
#include "cpu/parallel.h"

#include <cblas.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "retnet/cpu_ops.h"
#include "retnet/memory_limit.h"

namespace retnet::cpu {

namespace {

std::atomic<int> g_threads{0};

// Workers kept for the life of the process. Starting and joining threads for every region cost
// ~30–100 µs a region, and a small model's decoding step has ~50 regions. A region's blocks
// 1..blocks−1 go to workers 0..blocks−2 and block 0 to the calling thread, so the split, and
// so every result, is the one of threads started for the region.
class WorkerPool {
public:
    // Runs block(b) for every b in [0, blocks) and returns once all have ended: false, having run
    // nothing, where another thread's region holds the pool or the process is a fork's child.
    // `block` must not throw.
    bool run(int blocks, const std::function<void(int)>& block) {
        if (t_in_region || g_forked.load(std::memory_order_relaxed)) return false;
        std::unique_lock region(region_, std::try_to_lock);
        if (!region.owns_lock()) return false;
        t_in_region = true;
        grow_to(blocks - 1);
        const int on_workers = std::min(blocks - 1, started_);
        {
            std::lock_guard lock(mutex_);
            job_ = &block;
            job_workers_ = on_workers;
            pending_.store(on_workers, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        for (int b = 0; b < blocks; b = b == 0 ? on_workers + 1 : b + 1) block(b);  // 0, and the blocks no worker took
        {
            std::unique_lock lock(mutex_);
            done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
        }
        t_in_region = false;
        return true;
    }

private:
    void grow_to(int count) {
        if (started_ >= count) return;
        static std::once_flag fork_handler;
        std::call_once(fork_handler, [] { pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); }); });
        // An 8 MiB stack whatever ulimit -s says: glibc gives a thread the main thread's limit,
        // which under `ulimit -s 300000` reserved 300 MB of address space a worker.
        pthread_attr_t attributes;
        if (pthread_attr_init(&attributes) != 0) return;
        pthread_attr_setstacksize(&attributes, size_t(8) << 20);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        for (; started_ < count; ++started_) {
            auto* start = new (std::nothrow) WorkerStart{this, started_};
            pthread_t thread;
            if (!start || pthread_create(&thread, &attributes, &WorkerPool::start_worker, start) != 0) {
                delete start;
                break;  // no room for another thread (ulimit -v): the caller runs the rest
            }
        }
        pthread_attr_destroy(&attributes);
    }

    struct WorkerStart {
        WorkerPool* pool;
        int index;
    };
    static void* start_worker(void* argument) {
        const WorkerStart start = *static_cast<WorkerStart*>(argument);
        delete static_cast<WorkerStart*>(argument);
        start.pool->work(start.index);
        return nullptr;
    }

    void work(int index) {
        t_in_region = true;  // a region inside one of its blocks gets threads of its own
        uint64_t seen = 0;
        for (;;) {
            const std::function<void(int)>* job = nullptr;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
                seen = generation_.load(std::memory_order_relaxed);
                if (index < job_workers_) job = job_;
            }
            if (!job) continue;
            (*job)(index + 1);
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard lock(mutex_);  // the caller tests pending_ under it before it sleeps
                done_.notify_one();
            }
        }
    }

    static inline std::atomic<bool> g_forked{false};  // a fork's child has none of the workers
    static inline thread_local bool t_in_region = false;  // this thread runs a region's block
    std::mutex region_;  // one region at a time
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::atomic<uint64_t> generation_{0};  // one more for every region
    std::atomic<int> pending_{0};          // workers of this region still running
    const std::function<void(int)>* job_ = nullptr;
    int job_workers_ = 0;
    int started_ = 0;  // workers, detached: the pool is never destroyed
};

WorkerPool& pool() {
    static WorkerPool* const kept = new WorkerPool;  // never destroyed: its workers outlive main()
    return *kept;
}

// parallel_blocks with at most `max_blocks` blocks. An exception in any block is rethrown here
// once every block has ended.
int parallel_blocks_at_most(int64_t n, int64_t min_block, int max_blocks,
                            const std::function<void(int64_t, int64_t, int)>& fn) {
    const int blocks = std::max(1, std::min(block_count(n, min_block), max_blocks));
    if (blocks == 1) {
        fn(0, n, 0);
        return 1;
    }
    std::vector<std::exception_ptr> errors(static_cast<size_t>(blocks));
    const std::function<void(int)> run_block = [&](int b) {
        try {
            fn(n * b / blocks, n * (b + 1) / blocks, b);
        } catch (...) {
            errors[static_cast<size_t>(b)] = std::current_exception();
        }
    };
    if (!pool().run(blocks, run_block)) {
        // A region inside a region, or two threads' regions at once: threads of its own. One that
        // cannot be started leaves its block to this thread.
        std::vector<std::thread> workers;
        std::vector<int> here{0};
        workers.reserve(static_cast<size_t>(blocks - 1));
        for (int b = 1; b < blocks; ++b) {
            try {
                workers.emplace_back(run_block, b);
            } catch (const std::system_error&) {
                here.push_back(b);
            }
        }
        for (const int b : here) run_block(b);
        for (auto& w : workers) w.join();
    }
    for (const std::exception_ptr& error : errors)
        if (error) std::rethrow_exception(error);
    return blocks;
}

}  // namespace

void set_num_threads(int n) { g_threads = std::max(0, n); }

int num_threads() {
    const int n = g_threads.load();
    if (n > 0) return n;
    // Asked once: glibc reads /sys for it, which costs more than a small op.
    static const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    return hardware;
}

int block_count(int64_t n, int64_t min_block) {
    const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_block));
    return static_cast<int>(std::min<int64_t>(num_threads(), by_size));
}

int parallel_blocks(int64_t n, int64_t min_block, const std::function<void(int64_t, int64_t, int)>& fn) {
    return parallel_blocks_at_most(n, min_block, num_threads(), fn);
}

int parallel_blas_blocks(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
    const int callers = blas_callers_that_fit(block_count(n, 1));
    const int previous = openblas_get_num_threads();
    openblas_set_num_threads(1);
    try {
        const int used = parallel_blocks_at_most(n, 1, callers, fn);
        openblas_set_num_threads(previous);
        return used;
    } catch (...) {
        openblas_set_num_threads(previous);
        throw;
    }
}

}  // namespace retnet::cpu
