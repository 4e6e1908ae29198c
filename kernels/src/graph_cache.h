// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// CUDA graphs of whole decoding steps, keyed by what fixes a step's launches.
//
// A decoding step is a few hundred small launches; issued one by one their launch cost is larger
// than their work. The first step of a given shape runs under stream capture, and later steps of
// the same key replay the instantiated graph: the host still walks the block sequence (it stages
// the values that change — tokens, positions, state addresses, torchscale's coefficients — into
// pinned memory that the graph's copy nodes read) but launches nothing until the one graph launch.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace retnet::cuda {

struct GraphKey {
    std::vector<int> slots;             // the batch's state slots, in order
    std::vector<int64_t> logit_rows;    // rows whose logits are projected
    int best_count = 0;                 // > 0: only their best logits are selected and sent back
    uint64_t buffers = 0;               // generation of every buffer address the graph holds
    bool operator==(const GraphKey&) const = default;
};

class GraphCache {
public:
    enum class Mode { Eager, Capture, Replay };
    GraphCache() = default;
    ~GraphCache();
    GraphCache(const GraphCache&) = delete;
    GraphCache& operator=(const GraphCache&) = delete;

    // Replay when a graph of this key exists, else begins capturing `stream`.
    Mode begin(const GraphKey& key, cudaStream_t stream);
    // Ends a capture (storing the graph under its key, with `buffers` the generation after the
    // capture) or a replay, records `started` (outside the graph) and launches. No-op when eager.
    void launch(uint64_t buffers, cudaStream_t stream, cudaEvent_t started);
    // Abandons a capture after an error (the stream leaves capture mode; nothing is stored).
    void abandon(cudaStream_t stream) noexcept;
    Mode mode() const { return mode_; }
    void clear() noexcept;

private:
    struct Entry {
        GraphKey key;
        cudaGraphExec_t exec = nullptr;
    };
    static constexpr size_t kMaxGraphs = 32;
    std::vector<Entry> entries_;
    Mode mode_ = Mode::Eager;
    GraphKey pending_;
    cudaGraphExec_t current_ = nullptr;
};

}  // namespace retnet::cuda
