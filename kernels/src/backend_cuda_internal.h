// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// For the benchmark and tests only: facts about a CUDA backend that the Backend interface does not
// carry.
#include <cstdint>

#include "retnet/forward.h"

namespace retnet {

// How many projections of a CUDA backend have read their input rows from where the op before them
// wrote them in bf16 alone (no conversion launch); 0 for other backends. Replayed graphs add none.
uint64_t cuda_bf16_handoffs(const Backend& backend);

// How many groups of projections (a layer's q, k, v, g; its FFN's act and lin) a CUDA backend has
// made by one GEMM over their adjacent weights (decoding more rows than the skinny GEMM takes); 0
// for other backends. Replayed graphs add none.
uint64_t cuda_one_gemm_projections(const Backend& backend);

// How many RMSNorms a CUDA backend has formed inside the skinny GEMM's launch that reads them (2 to 4
// rows with bf16 weights; norm_in_skinny_gemm); 0 for other backends. Replayed graphs add none.
uint64_t cuda_fused_norms(const Backend& backend);

}  // namespace retnet
