// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/best_logits.h"

#include <algorithm>
#include <bit>
#include <string>

#include "retnet/error.h"

namespace retnet {
namespace {

constexpr uint32_t kPlusInf = 0x7f800000u, kMinusInf = 0xff800000u, kNoSign = 0x7fffffffu;

float int_bits(int64_t value) { return std::bit_cast<float>(static_cast<int32_t>(value)); }
int32_t bits_int(float value) { return std::bit_cast<int32_t>(value); }

void check_count(int count) {
    if (count < 1 || count > kMaxBestLogits)
        throw Error("best logits: count " + std::to_string(count) + " is outside [1, " +
                    std::to_string(kMaxBestLogits) + "]");
}

}  // namespace

int64_t best_logits_packed_width(int count) { return 2 * static_cast<int64_t>(count) + 3; }

void pack_best_logits(std::span<const float> row, int count, std::span<float> packed) {
    check_count(count);
    if (static_cast<int64_t>(packed.size()) != best_logits_packed_width(count))
        throw Error("best logits: the packed row has " + std::to_string(packed.size()) + " floats, expected " +
                    std::to_string(best_logits_packed_width(count)));
    const auto V = static_cast<int32_t>(row.size());
    int64_t masked = 0, first_bad = -1;
    for (int32_t i = 0; i < V; ++i) {
        const auto bits = std::bit_cast<uint32_t>(row[static_cast<size_t>(i)]);
        masked += bits == kMinusInf;
        if (first_bad < 0 && ((bits & kNoSign) > kPlusInf || bits == kPlusInf)) first_bad = i;
    }
    // Higher key first, then lower id (best_logits_key: NaNs get keys too, so the order stays total;
    // such a row is refused by the sampler anyway). A heap of the kept ones whose front is the worst:
    // most logits are turned away by one comparison with its key, one pass over the row.
    using Entry = std::pair<uint32_t, int32_t>;  // (key, id)
    const auto better = [](const Entry& a, const Entry& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
    const size_t kept = std::min(static_cast<size_t>(count), static_cast<size_t>(V));
    std::vector<Entry> heap;
    heap.reserve(kept);
    for (int32_t i = 0; i < V; ++i) {
        const Entry e{best_logits_key(row[static_cast<size_t>(i)]), i};
        if (heap.size() < kept) {
            heap.push_back(e);
            std::push_heap(heap.begin(), heap.end(), better);
        } else if (e.first > heap.front().first) {  // ids rise: an equal key never beats a kept one
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = e;
            std::push_heap(heap.begin(), heap.end(), better);
        }
    }
    std::sort_heap(heap.begin(), heap.end(), better);
    std::vector<int32_t> order(kept);
    for (size_t i = 0; i < kept; ++i) order[i] = heap[i].second;
    for (int i = 0; i < count; ++i) {
        const bool real = static_cast<size_t>(i) < kept;
        packed[static_cast<size_t>(i)] = int_bits(real ? order[static_cast<size_t>(i)] : -1);
        packed[static_cast<size_t>(count + i)] = real ? row[static_cast<size_t>(order[static_cast<size_t>(i)])] : 0.0f;
    }
    packed[static_cast<size_t>(2 * count)] = int_bits(masked);
    packed[static_cast<size_t>(2 * count + 1)] = int_bits(first_bad);
    packed[static_cast<size_t>(2 * count + 2)] = first_bad >= 0 ? row[static_cast<size_t>(first_bad)] : 0.0f;
}

BestLogits unpack_best_logits(std::span<const float> packed, int count, int64_t vocab_size) {
    check_count(count);
    if (static_cast<int64_t>(packed.size()) != best_logits_packed_width(count))
        throw Error("best logits: the packed row has " + std::to_string(packed.size()) + " floats, expected " +
                    std::to_string(best_logits_packed_width(count)));
    BestLogits best;
    best.vocab_size = vocab_size;
    const auto kept = static_cast<size_t>(std::min<int64_t>(count, vocab_size));
    best.ids.resize(kept);
    best.logits.resize(kept);
    for (size_t i = 0; i < kept; ++i) {
        best.ids[i] = bits_int(packed[i]);
        best.logits[i] = packed[static_cast<size_t>(count) + i];
        if (best.ids[i] < 0 || best.ids[i] >= vocab_size)
            throw Error("best logits: candidate " + std::to_string(i) + " has id " + std::to_string(best.ids[i]) +
                        ", outside the vocabulary of " + std::to_string(vocab_size) + " (internal error)");
    }
    best.masked = bits_int(packed[static_cast<size_t>(2 * count)]);
    best.first_non_finite = bits_int(packed[static_cast<size_t>(2 * count + 1)]);
    best.non_finite_value = packed[static_cast<size_t>(2 * count + 2)];
    return best;
}

BestLogits select_best_logits(std::span<const float> row, int count) {
    std::vector<float> packed(static_cast<size_t>(best_logits_packed_width(count)));
    pack_best_logits(row, count, packed);
    return unpack_best_logits(packed, count, static_cast<int64_t>(row.size()));
}

}  // namespace retnet
