// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Copies to host memory gathered over a forward and made at its end. Device ranges that follow
// each other (a batch's one-row logits) become one copy into pinned memory and then one host
// copy each: a copy into pageable memory is a staged, synchronous driver copy, and B of them
// cost more than the decoding step of B sequences itself. The pinned copies go in pieces, each
// with an event, so that the host copies of the first ranges overlap the transfer of the later
// ones (on the H100 machine, 16 rows of 32,000 logits: 2 MB, 0.17 ms of host copying; the batch-16
// step 3.19–3.21 → 3.14 ms against one whole copy in the same run).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "cuda_check.h"

namespace retnet::cuda {

class HostDownloads {
public:
    HostDownloads() = default;
    ~HostDownloads() {
        for (cudaEvent_t e : pieces_done_) RETNET_CUDA_CHECK_PRINT(cudaEventDestroy(e));
        if (pinned_) RETNET_CUDA_CHECK_PRINT(cudaFreeHost(pinned_));
    }
    HostDownloads(const HostDownloads&) = delete;
    HostDownloads& operator=(const HostDownloads&) = delete;

    void add(const float* device, float* host, size_t count) { pending_.push_back({device, host, count}); }
    void discard() { pending_.clear(); }

    // Issues the copies on `stream` and waits for them.
    void finish(cudaStream_t stream) {
        std::vector<Range> ranges;
        ranges.swap(pending_);
        size_t total = 0;
        for (const Range& r : ranges) total += r.count;
        if (total * sizeof(float) > kMaxPinnedBytes || !reserve(total)) {  // large: straight to the host
            for (const Range& r : ranges)
                RETNET_CUDA_CHECK(cudaMemcpyAsync(r.host, r.device, r.count * sizeof(float), cudaMemcpyDeviceToHost, stream));
            RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
            return;
        }
        // Pinned offsets [piece_ends[p - 1], piece_ends[p]) arrive with event p.
        std::vector<size_t> piece_ends;
        size_t offset = 0;
        for (size_t i = 0; i < ranges.size();) {
            size_t run = ranges[i].count, j = i + 1;
            while (j < ranges.size() && ranges[j].device == ranges[j - 1].device + ranges[j - 1].count) run += ranges[j++].count;
            for (size_t done = 0; done < run;) {
                const size_t piece = std::min(run - done, kPieceFloats);
                RETNET_CUDA_CHECK(cudaMemcpyAsync(pinned_ + offset + done, ranges[i].device + done, piece * sizeof(float),
                                                  cudaMemcpyDeviceToHost, stream));
                done += piece;
                RETNET_CUDA_CHECK(cudaEventRecord(piece_done(piece_ends.size()), stream));
                piece_ends.push_back(offset + done);
            }
            offset += run;
            i = j;
        }
        offset = 0;
        size_t arrived = 0;  // pieces [0, arrived) are known to be in pinned memory (a stream's copies land in order)
        for (const Range& r : ranges) {
            const size_t end = offset + r.count;
            if (r.count > 0 && (arrived == 0 || piece_ends[arrived - 1] < end)) {
                size_t p = arrived;
                while (piece_ends[p] < end) ++p;
                RETNET_CUDA_CHECK(cudaEventSynchronize(pieces_done_[p]));
                arrived = p + 1;
            }
            std::memcpy(r.host, pinned_ + offset, r.count * sizeof(float));
            offset = end;
        }
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));  // the forward is over when this returns, with or without copies
    }

private:
    static constexpr size_t kMaxPinnedBytes = size_t{64} << 20;
    static constexpr size_t kPieceFloats = size_t{128} << 10;  // 512 KB: the bus's ~20 µs, a driver call's few
    cudaEvent_t piece_done(size_t piece) {
        while (pieces_done_.size() <= piece) {
            cudaEvent_t e = nullptr;
            RETNET_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
            pieces_done_.push_back(e);
        }
        return pieces_done_[piece];
    }
    struct Range {
        const float* device;
        float* host;
        size_t count;
    };
    // False when pinned memory cannot be had (the copies then go straight to pageable memory).
    bool reserve(size_t count) {
        if (count <= capacity_) return true;
        if (pinned_) RETNET_CUDA_CHECK(cudaFreeHost(pinned_));
        pinned_ = nullptr;
        capacity_ = 0;
        if (cudaMallocHost(reinterpret_cast<void**>(&pinned_), count * sizeof(float)) != cudaSuccess) {
            (void)cudaGetLastError();
            pinned_ = nullptr;
            return false;
        }
        capacity_ = count;
        return true;
    }

    std::vector<Range> pending_;
    std::vector<cudaEvent_t> pieces_done_;  // grown to the most pieces a forward has needed
    float* pinned_ = nullptr;
    size_t capacity_ = 0;
};

}  // namespace retnet::cuda
