// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// How far back a head reads, from its retention scores s_nm = (q_n·k_m)·γ^(n−m) (after the form's
// row normalization): the |s|-weighted mean distance n − m, set beside what the decay alone would
// give if every q·k were equal. Measured < decay-only: the content keeps the head near; measured >
// decay-only: the content reaches past what γ suggests.
#include <span>
#include <vector>

#include "retnet/tensor.h"

namespace retnet {

struct HeadReach {
    double mean_distance = 0;        // mean over queries of Σ_m |s_nm|·(n − m) / Σ_m |s_nm|
    double decay_only_distance = 0;  // the same with |s_nm| = γ^(n−m), over the same queries
    int queries = 0;                 // queries with any non-zero score (the others are skipped)
};

// scores: (T, T) of one head, row n = query n, entries above the diagonal ignored; gamma in
// (0, 1]. Throws retnet::Error on a size that is not T·T or a gamma outside (0, 1].
HeadReach retention_reach(std::span<const float> scores, int T, double gamma);
// Every head of a layer: scores (H, T, T) as Introspection::scores with want_all_head_scores, and
// the model's log γ per head (H). Throws retnet::Error on shapes that do not match.
std::vector<HeadReach> retention_reach(const Tensor& scores, std::span<const float> log_decay);

}  // namespace retnet
