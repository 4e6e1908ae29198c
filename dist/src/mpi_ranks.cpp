// SPDX-License-Identifier: GPL-3.0-or-later
// The ranks of an mpirun job over Open MPI: the collectives of train::Communicator as MPI calls on
// MPI_COMM_WORLD. Gradient buckets go out as non-blocking all-reduces (MPI_Iallreduce), each
// poked (MPI_Testall) when the next one starts so that Open MPI moves them on during the backward.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <vector>

#include "retnet/dist/ranks.h"
#include "retnet/error.h"

namespace retnet::dist {

namespace {

// MPI counts are ints: longer spans go in pieces.
constexpr size_t kMaxCount = size_t{1} << 30;

void check(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(std::string("MPI: ") + what + " failed (" + std::string(text, static_cast<size_t>(length)) + ")");
}

class MpiCommunicator final : public MpiRanks {
public:
    MpiCommunicator() {
        int provided = 0;
        // Only the training loop's thread calls MPI (the CPU trainer's own threads never do).
        check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
        check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
        MPI_Comm host;
        check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &host),
              "MPI_Comm_split_type");
        check(MPI_Comm_rank(host, &local_rank_), "MPI_Comm_rank");
        MPI_Comm_free(&host);
    }
    ~MpiCommunicator() override { MPI_Finalize(); }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    int local_rank() const override { return local_rank_; }
    std::string description() const override { return std::to_string(size_) + " ranks (Open MPI)"; }

    void all_reduce_sum(std::span<double> values) override {
        for (size_t i = 0; i < values.size(); i += kMaxCount)
            check(MPI_Allreduce(MPI_IN_PLACE, values.data() + i, count(values.size() - i), MPI_DOUBLE, MPI_SUM,
                                MPI_COMM_WORLD),
                  "MPI_Allreduce");
    }
    void start_all_reduce_sum(std::span<float> values) override {
        for (size_t i = 0; i < values.size(); i += kMaxCount) {
            MPI_Request request;
            check(MPI_Iallreduce(MPI_IN_PLACE, values.data() + i, count(values.size() - i), MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD, &request),
                  "MPI_Iallreduce");
            pending_.push_back(request);
        }
        int all_done = 0;
        check(MPI_Testall(static_cast<int>(pending_.size()), pending_.data(), &all_done, MPI_STATUSES_IGNORE),
              "MPI_Testall");
    }
    void wait_all() override {
        check(MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
        pending_.clear();
    }
    void broadcast_bytes(std::span<std::byte> bytes, int root) override {
        for (size_t i = 0; i < bytes.size(); i += kMaxCount)
            check(MPI_Bcast(bytes.data() + i, count(bytes.size() - i), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
    [[noreturn]] void abort(int code) override {
        MPI_Abort(MPI_COMM_WORLD, code);
        std::_Exit(code);  // MPI_Abort does not return; this only satisfies [[noreturn]]
    }

private:
    static int count(size_t left) { return static_cast<int>(std::min(left, kMaxCount)); }

    int rank_ = 0, size_ = 1, local_rank_ = 0;
    std::vector<MPI_Request> pending_;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<MpiRanks> join_mpi() { return std::make_unique<MpiCommunicator>(); }

}  // namespace retnet::dist
