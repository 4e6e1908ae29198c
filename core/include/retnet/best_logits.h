// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The best logits of a row: what a sampler with top-k (or greedy) and no repetition penalty needs of
// a logits row, so that a device can select it and send back a few hundred bytes instead of the
// whole vocabulary (batched decoding: 64 rows of 32,000 logits are 8 MB a step over the bus).
//
// The best `count` are ranked by higher logit, then lower id, as the sampler ranks them (−0 and +0
// are equal there: the lower id comes first). With them go the number of −inf logits (masked
// tokens, which decide whether top-k filters at all) and the first NaN or +inf, which the sampler
// refuses, so that a sampler given only these makes the same draw as from the whole row.
//
// Packed form (a backend's rows of floats; ids and counts stored as int32 bit patterns), per row:
//   [count ids][count logits][masked][first non-finite id or −1][its value]
#include <bit>
#include <cstdint>
#include <span>
#include <vector>

namespace retnet {

// The most logits a row's selection returns (top-k up to this can sample on the device).
constexpr int kMaxBestLogits = 256;

struct BestLogits {
    std::vector<int32_t> ids;     // (min(count, V)) best first
    std::vector<float> logits;    // the same order, as the model produced them
    int64_t vocab_size = 0;
    int64_t masked = 0;           // logits that are −inf
    int64_t first_non_finite = -1;  // lowest id of a NaN or +inf logit, −1 when none
    float non_finite_value = 0.0f;  // that logit
};

// An unsigned key whose order is the logits' order (−0 and +0 one key): the bits with the sign
// flipped for positive values, all flipped for negative ones.
constexpr uint32_t best_logits_key(float logit) {
    uint32_t bits = std::bit_cast<uint32_t>(logit);
    if ((bits & 0x7fffffffu) == 0) bits = 0;  // −0 → +0
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

// A row's −inf logits and its first NaN or +inf (−1 when none): one pass over the bit patterns,
// which the compiler vectorizes (float comparisons that must hold for NaN do not), and a second to
// find the first only where there is one.
struct LogitScan {
    int64_t masked = 0;
    int64_t first_non_finite = -1;
};
LogitScan scan_logits(std::span<const float> row);

// Throws unless 1 ≤ count ≤ kMaxBestLogits.
void check_best_count(int count);

// Floats one row takes in packed form: 2 · count + 3.
int64_t best_logits_packed_width(int count);

// The host's selection: `row` (V) packed into `packed` (best_logits_packed_width(count)); ids past
// V (count > V) are −1. The CUDA kernel is tested against this.
void pack_best_logits(std::span<const float> row, int count, std::span<float> packed);
// Reads one packed row of a vocabulary of `vocab_size`.
BestLogits unpack_best_logits(std::span<const float> packed, int count, int64_t vocab_size);
// Both at once, for a row on the host.
BestLogits select_best_logits(std::span<const float> row, int count);

}  // namespace retnet
