// SPDX-License-Identifier: GPL-3.0-or-later
// GPU ranks over NCCL: gradient buckets summed on a stream of their own (GradientSync), and the
// training loop's few host collectives (a loss, a flag, the initial state) staged through the GPU.
// Every host wait polls with a deadline, so a rank that died turns into an error, not a hang.
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "../cuda_check.h"
#include "../device_buffer.h"
#include "gradient_sync.h"
#include "retnet/cuda/nccl_ranks.h"
#include "retnet/error.h"

namespace retnet::cuda {

namespace {

void nccl_check(ncclResult_t result, const char* what, ncclComm_t comm = nullptr) {
    if (result == ncclSuccess) return;
    std::string detail = ncclGetErrorString(result);
    if (const char* last = ncclGetLastError(comm); last && *last) detail += ": " + std::string(last);
    throw Error(std::string("NCCL: ") + what + " failed (" + detail + ")");
}

// RETNET_NCCL_TIMEOUT (seconds) or 10 minutes: longer than any step, validation or checkpoint of
// a model that fits a GPU, so only a rank that is gone reaches it.
double timeout_from_environment() {
    const char* text = std::getenv("RETNET_NCCL_TIMEOUT");
    if (!text) return 600;
    char* end = nullptr;
    const double seconds = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(seconds > 0))
        throw Error("RETNET_NCCL_TIMEOUT='" + std::string(text) + "' is not a number of seconds");
    return seconds;
}

class NcclCommunicator final : public train::Communicator, public GradientSync {
public:
    NcclCommunicator(const ncclUniqueId& id, int rank, int size, int device)
        : rank_(rank), size_(size), device_(device), timeout_s_(timeout_from_environment()) {
        RETNET_CUDA_CHECK(cudaSetDevice(device));
        stream_ = std::make_unique<CudaStream>();
        RETNET_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
        RETNET_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
        nccl_check(ncclCommInitRank(&comm_, size, id, rank), "ncclCommInitRank");
    }
    ~NcclCommunicator() override {
        if (comm_) ncclCommDestroy(comm_);  // null after a timeout aborted it
        cudaEventDestroy(ready_);
        cudaEventDestroy(done_);
    }
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    int local_rank() const override { return device_; }
    std::string description() const override { return std::to_string(size_) + " GPU ranks (NCCL)"; }

    void all_reduce_sum(std::span<double> values) override {
        if (values.empty()) return;
        doubles_.upload(values.data(), values.size(), stream());
        nccl_check(ncclAllReduce(doubles_.get(), doubles_.get(), values.size(), ncclDouble, ncclSum, comm(), stream()),
                   "ncclAllReduce", comm_);
        wait_host();
        doubles_.download(values.data(), values.size(), stream());
        stream_->synchronize();
    }
    void start_all_reduce_sum(std::span<float> values) override {
        if (values.empty()) return;
        DeviceBuffer<float>& staged = staged_.emplace_back(values.size()).buffer;
        staged_.back().host = values;
        staged.upload(values.data(), values.size(), stream());
        nccl_check(ncclAllReduce(staged.get(), staged.get(), values.size(), ncclFloat, ncclSum, comm(), stream()),
                   "ncclAllReduce", comm_);
    }
    void wait_all() override {
        wait_host();
        for (Staged& s : staged_) s.buffer.download(s.host.data(), s.host.size(), stream());
        stream_->synchronize();
        staged_.clear();
    }
    // In pieces through one staging buffer: the initial state of a large model passes here once,
    // and the GPU memory it would hold whole belongs to the training.
    void broadcast_bytes(std::span<std::byte> bytes, int root) override {
        constexpr size_t kPiece = size_t{64} << 20;
        DeviceBuffer<uint8_t> staged(std::min(bytes.size(), kPiece));
        for (size_t at = 0; at < bytes.size(); at += kPiece) {
            const size_t n = std::min(kPiece, bytes.size() - at);
            auto* host = reinterpret_cast<uint8_t*>(bytes.data() + at);
            staged.upload(host, n, stream());
            nccl_check(ncclBroadcast(staged.get(), staged.get(), n, ncclUint8, root, comm(), stream()), "ncclBroadcast",
                       comm_);
            wait_host();
            staged.download(host, n, stream());
            stream_->synchronize();
        }
    }

    void start(float* data, size_t count, cudaStream_t after) override {
        if (count == 0) return;
        // cudaStreamWaitEvent takes the event's latest record, so one event serves every bucket.
        RETNET_CUDA_CHECK(cudaEventRecord(ready_, after));
        RETNET_CUDA_CHECK(cudaStreamWaitEvent(stream(), ready_, 0));
        nccl_check(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm(), stream()), "ncclAllReduce", comm_);
    }
    void join(cudaStream_t s) override {
        RETNET_CUDA_CHECK(cudaEventRecord(done_, stream()));
        RETNET_CUDA_CHECK(cudaStreamWaitEvent(s, done_, 0));
    }
    void wait_host() override {
        RETNET_CUDA_CHECK(cudaEventRecord(done_, stream()));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
        for (;;) {
            const cudaError_t state = cudaEventQuery(done_);
            if (state == cudaSuccess) return;
            if (state != cudaErrorNotReady) throw_cuda_error(state, "cudaEventQuery", __FILE__, __LINE__);
            ncclResult_t async = ncclSuccess;
            nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", comm_);
            if (async != ncclSuccess) fail(std::string("NCCL reported ") + ncclGetErrorString(async));
            if (std::chrono::steady_clock::now() > deadline)
                fail("the ranks' collective did not finish within " + std::to_string(static_cast<int>(timeout_s_)) +
                     " s (another rank died or hangs; RETNET_NCCL_TIMEOUT sets the limit)");
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

private:
    struct Staged {
        explicit Staged(size_t n) : buffer(n) {}
        DeviceBuffer<float> buffer;
        std::span<float> host;
    };

    cudaStream_t stream() const { return stream_->get(); }
    ncclComm_t comm() const {
        if (!comm_) throw Error("rank " + std::to_string(rank_) + ": the NCCL communicator was aborted");
        return comm_;
    }
    // Aborting frees the GPU from collectives that will never complete.
    [[noreturn]] void fail(const std::string& why) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw Error("rank " + std::to_string(rank_) + ": " + why);
    }

    const int rank_, size_, device_;
    const double timeout_s_;
    std::unique_ptr<CudaStream> stream_;  // the collectives' own stream
    cudaEvent_t ready_ = nullptr;         // a bucket's gradient is complete on the compute stream
    cudaEvent_t done_ = nullptr;          // every collective queued so far has finished
    ncclComm_t comm_ = nullptr;
    DeviceBuffer<double> doubles_;  // host sums staged through the GPU
    std::vector<Staged> staged_;    // host floats being summed, until wait_all
};

ncclUniqueId read_id_file(int rank, const std::string& path, double timeout_s) {
    namespace fs = std::filesystem;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    ncclUniqueId id{};
    std::error_code ec;
    while (!(fs::is_regular_file(path, ec) && fs::file_size(path, ec) == sizeof id)) {
        if (std::chrono::steady_clock::now() > deadline)
            throw Error("rank " + std::to_string(rank) + ": no NCCL id from rank 0 in " + path + " after " +
                        std::to_string(static_cast<int>(timeout_s)) + " s");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::ifstream in(path, std::ios::binary);
    if (!in.read(id.internal, sizeof id.internal)) throw Error(path + ": cannot read the NCCL id");
    return id;
}

// The id appears under its name complete or not at all (written beside it, then renamed).
void write_id_file(const ncclUniqueId& id, const std::string& path) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out.write(id.internal, sizeof id.internal) || !out.flush()) throw Error(tmp + ": cannot write the NCCL id");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": cannot rename the NCCL id into place");
}

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<train::Communicator> nccl_ranks_from_file(int rank, int size, int device, const std::string& id_file,
                                                          double timeout_s) {
    if (size < 1 || rank < 0 || rank >= size) throw Error("NCCL: rank " + std::to_string(rank) + " of " +
                                                          std::to_string(size) + " is impossible");
    ncclUniqueId id{};
    if (rank == 0) {
        nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        write_id_file(id, id_file);
    } else {
        id = read_id_file(rank, id_file, timeout_s);
    }
    return std::make_unique<NcclCommunicator>(id, rank, size, device);
}

std::unique_ptr<GradientSync> nccl_over(train::Communicator& bootstrap, int device) {
    ncclUniqueId id{};
    if (bootstrap.rank() == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    bootstrap.broadcast(std::span<char>(id.internal, sizeof id.internal), 0);
    return std::make_unique<NcclCommunicator>(id, bootstrap.rank(), bootstrap.size(), device);
}

}  // namespace retnet::cuda
