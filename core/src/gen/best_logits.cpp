// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/best_logits.h"

#include <bit>
#include <limits>
#include <string>

#include "gen/select_best.h"
#include "retnet/error.h"

namespace retnet {
namespace {

constexpr uint32_t kPlusInf = 0x7f800000u, kMinusInf = 0xff800000u, kNoSign = 0x7fffffffu;

float int_bits(int64_t value) { return std::bit_cast<float>(static_cast<int32_t>(value)); }
int32_t bits_int(float value) { return std::bit_cast<int32_t>(value); }

void check_packed_width(std::span<const float> packed, int count) {
    check_best_count(count);
    if (static_cast<int64_t>(packed.size()) != best_logits_packed_width(count))
        throw Error("best logits: the packed row has " + std::to_string(packed.size()) + " floats, expected " +
                    std::to_string(best_logits_packed_width(count)));
}

}  // namespace

void check_best_count(int count) {
    if (count < 1 || count > kMaxBestLogits)
        throw Error("best logits: count " + std::to_string(count) + " is outside [1, " +
                    std::to_string(kMaxBestLogits) + "]");
}

int64_t best_logits_packed_width(int count) { return 2 * static_cast<int64_t>(count) + 3; }

LogitScan scan_logits(std::span<const float> row) {
    LogitScan scan;
    size_t bad = 0;
    for (float v : row) {
        const auto bits = std::bit_cast<uint32_t>(v);
        bad += ((bits & kNoSign) > kPlusInf) | (bits == kPlusInf);
        scan.masked += bits == kMinusInf;
    }
    if (bad > 0)
        for (size_t i = 0; i < row.size() && scan.first_non_finite < 0; ++i)
            if (!(row[i] < std::numeric_limits<float>::infinity())) scan.first_non_finite = static_cast<int64_t>(i);
    return scan;
}

void pack_best_logits(std::span<const float> row, int count, std::span<float> packed) {
    check_packed_width(packed, count);
    const LogitScan scan = scan_logits(row);
    // By best_logits_key, then lower id: NaNs get keys too, so the order stays total (such a row is
    // refused by the sampler anyway).
    std::vector<int32_t> best;
    gen::select_best(static_cast<int32_t>(row.size()), static_cast<size_t>(count),
                     [&row](int32_t id) { return best_logits_key(row[static_cast<size_t>(id)]); }, best);
    for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
        const bool real = i < best.size();
        packed[i] = int_bits(real ? best[i] : -1);
        packed[static_cast<size_t>(count) + i] = real ? row[static_cast<size_t>(best[i])] : 0.0f;
    }
    packed[static_cast<size_t>(2 * count)] = int_bits(scan.masked);
    packed[static_cast<size_t>(2 * count + 1)] = int_bits(scan.first_non_finite);
    packed[static_cast<size_t>(2 * count + 2)] =
        scan.first_non_finite >= 0 ? row[static_cast<size_t>(scan.first_non_finite)] : 0.0f;
}

BestLogits unpack_best_logits(std::span<const float> packed, int count, int64_t vocab_size) {
    check_packed_width(packed, count);
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
