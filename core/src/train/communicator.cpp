// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/communicator.h"

#include <cstring>

#include "retnet/error.h"

namespace retnet::train {

void Communicator::broadcast(std::string& text, int root) {
    uint64_t size = text.size();
    broadcast(std::span<uint64_t>(&size, 1), root);
    text.resize(static_cast<size_t>(size));
    broadcast(std::span<char>(text.data(), text.size()), root);
}

BatchShard batch_shard(int global_batch, int rank, int size) {
    if (size < 1 || rank < 0 || rank >= size) throw Error("training: rank " + std::to_string(rank) + " of " +
                                                          std::to_string(size) + " is impossible");
    if (global_batch % size != 0)
        throw Error("--batch " + std::to_string(global_batch) + " cannot be split over " + std::to_string(size) +
                    " ranks: the global batch must be a multiple of the number of ranks");
    const int count = global_batch / size;
    return {rank * count, count};
}

uint64_t bits_hash(std::span<const float> values) {
    // FNV-1a over 32-bit words: the hash only has to tell copies apart, and a word at a time keeps
    // it fast enough for every checkpoint of a large model.
    uint64_t h = 1469598103934665603ull;
    for (const float v : values) {
        uint32_t w;
        std::memcpy(&w, &v, sizeof w);
        h = (h ^ w) * 1099511628211ull;
    }
    return h;
}

}  // namespace retnet::train
