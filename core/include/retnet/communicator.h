// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The ranks of a data-parallel training job, as the training loop and its devices see them. Each
// rank is a process with its own copy of the parameters; a step's gradients are summed over the
// ranks so every rank applies the same update. Core only knows this interface: the
// implementations over Open MPI (retnet_dist, CPU ranks) and NCCL (retnet_cuda, GPU ranks) live
// in their own libraries, so core needs neither's headers.
//
// Every call is collective: all ranks make the same calls in the same order, with the same sizes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

namespace retnet::train {

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // The rank among the processes of this host: the GPU a GPU rank uses.
    virtual int local_rank() const = 0;
    // e.g. "2 ranks (Open MPI)", for logs.
    virtual std::string description() const = 0;

    // Sums `values` over the ranks, in place; every rank gets the same bits.
    virtual void all_reduce_sum(std::span<double> values) = 0;
    // Starts summing `values` over the ranks in place and returns at once, so a device can go on
    // computing while a bucket of finished gradients travels; `values` must stay untouched until
    // wait_all(), which completes every started sum.
    virtual void start_all_reduce_sum(std::span<float> values) = 0;
    virtual void wait_all() = 0;
    // Copies `root`'s bytes to every rank.
    virtual void broadcast_bytes(std::span<std::byte> bytes, int root) = 0;

    template <typename T>
    void broadcast(std::span<T> values, int root) {
        static_assert(std::is_trivially_copyable_v<T>);
        broadcast_bytes(std::as_writable_bytes(values), root);
    }
    // root's string on every rank (its size first, then its bytes).
    void broadcast(std::string& text, int root);
};

// One process, no other rank: every collective is the identity.
class SingleProcess final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    int local_rank() const override { return 0; }
    std::string description() const override { return "1 process"; }
    void all_reduce_sum(std::span<double>) override {}
    void start_all_reduce_sum(std::span<float>) override {}
    void wait_all() override {}
    void broadcast_bytes(std::span<std::byte>, int) override {}
};

// The rows of a global batch of `global_batch` sequences that `rank` of `size` trains on:
// sequences [first, first + count). Throws retnet::Error (one line) unless size divides it.
struct BatchShard {
    int first = 0, count = 0;
};
BatchShard batch_shard(int global_batch, int rank, int size);

// A 64-bit hash of float values' bits, to check that every rank holds the same parameters.
uint64_t bits_hash(std::span<const float> values);

}  // namespace retnet::train
