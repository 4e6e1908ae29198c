// SPDX-License-Identifier: GPL-3.0-or-later
#include "graph_cache.h"

#include <algorithm>

#include "cuda_check.h"

namespace retnet::cuda {

GraphCache::~GraphCache() { clear(); }

void GraphCache::clear() noexcept {
    for (Entry& e : entries_) RETNET_CUDA_CHECK_PRINT(cudaGraphExecDestroy(e.exec));
    entries_.clear();
}

GraphCache::Mode GraphCache::begin(const GraphKey& key, cudaStream_t stream) {
    const auto found = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.key == key; });
    if (found != entries_.end()) {
        current_ = found->exec;
        mode_ = Mode::Replay;
        return mode_;
    }
    // Relaxed: buffers that grow during the first step are allocated while capturing.
    RETNET_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    pending_ = key;
    mode_ = Mode::Capture;
    return mode_;
}

void GraphCache::launch(uint64_t buffers, cudaStream_t stream, cudaEvent_t started) {
    if (mode_ == Mode::Eager) return;
    if (mode_ == Mode::Capture) {
        mode_ = Mode::Eager;  // whatever happens next, the stream has left capture mode
        cudaGraph_t graph = nullptr;
        RETNET_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
        RETNET_CUDA_CHECK_PRINT(cudaGraphDestroy(graph));
        RETNET_CUDA_CHECK(status);
        if (entries_.size() >= kMaxGraphs) clear();  // shapes churn (serving): start over
        pending_.buffers = buffers;
        entries_.push_back({std::move(pending_), exec});
        current_ = exec;
    }
    mode_ = Mode::Eager;
    RETNET_CUDA_CHECK(cudaEventRecord(started, stream));
    RETNET_CUDA_CHECK(cudaGraphLaunch(current_, stream));
}

void GraphCache::abandon(cudaStream_t stream) noexcept {
    if (mode_ == Mode::Capture) {
        cudaGraph_t graph = nullptr;
        if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
    }
    mode_ = Mode::Eager;
}

}  // namespace retnet::cuda
