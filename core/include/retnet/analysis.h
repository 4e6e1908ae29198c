// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Engine-side work behind the app's analysis views, kept in core (no Qt) so that it is tested
// once and shared: downsampling retention scores for display, and the candidates of a prompt
// token (what the model expected at that position).
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "retnet/forward.h"
#include "retnet/model.h"
#include "retnet/sampler.h"
#include "retnet/tensor.h"

namespace retnet {

// Retention scores of H heads shrunk to at most `max_cells` cells per side. Each shown cell
// covers `stride` × `stride` positions and keeps the value of largest magnitude (with its
// sign), so isolated strong scores survive. Shown index i starts at position i·stride.
struct DownsampledScores {
    int heads = 0;
    int tokens = 0;  // T of the full scores
    int size = 0;    // n = ⌈T / stride⌉ cells per side
    int stride = 1;
    std::vector<float> data;  // (H, n, n)

    int first_position(int cell) const { return cell * stride; }
    // The last position a cell covers (the text may end inside the last cell).
    int last_position(int cell) const { return std::min(tokens, (cell + 1) * stride) - 1; }
};

// `scores` is (H, T, T); max_cells ≥ 1. Throws retnet::Error on another shape.
DownsampledScores downsample_scores(const Tensor& scores, int max_cells);

// The candidates shown for `token` at a position whose logits row is `row` (V): the `n` most
// likely tokens, best first, with `token` itself appended when it is not among them.
std::vector<TokenProb> token_candidates(std::span<const float> row, int32_t token, int n);

// For a prefill's logits (rows, V) that start at position `first` of `tokens`: the candidates
// of every token a row predicts (row t predicts position first + t + 1). Entry i belongs to
// position first + 1 + i; rows that predict past the end of `tokens` give nothing.
std::vector<std::vector<TokenProb>> prompt_candidates(const Tensor& logits, int64_t first,
                                                      std::span<const int32_t> tokens, int n);

// q, k and v of one layer as the retention op uses them, for the step-through of the recurrence:
// q and k multiplied by the family's scale (retnet/family_rules.h) and rotated to their
// positions first_position + t. From an Introspection with qkv_layer set.
struct RetentionInputs {
    Tensor q, k;  // (T, H, Dk)
    Tensor v;     // (T, H, Dv)
};
// Throws retnet::Error when the introspection holds no q, k, v of this model's shape.
RetentionInputs retention_inputs(const Model& model, const Introspection& introspection, int64_t first_position);

}  // namespace retnet
