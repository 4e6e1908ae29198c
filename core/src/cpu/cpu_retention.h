// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Retention of one head in float32 with BLAS, in the three forms of both families.
// Inputs (contiguous per head): q (T, Dk) and k (T, Dk) rotated, with 1/√Dk where the family puts
// it; v (T, Dv); S (Dk, Dv) the state before the call in the family's scaling (fla raw, torchscale
// raw/√r) and r the torchscale row sum. Output o (T, Dv) before the head norm.
// Each function returns the per-row divisor d_n of its form (o_n = R_n / d_n with R_n the
// unnormalized retention): 1 for fla, √r_n·c_n, √r_n or √ρ·all for torchscale's forms; the
// introspection uses it to draw the score matrix the form actually applied.
#include <vector>

#include "retnet/forward.h"

namespace retnet::cpu {

struct HeadInputs {
    int T = 0, Dk = 0, Dv = 0;
    std::vector<float> q;  // (T, Dk)
    std::vector<float> k;  // (T, Dk)
    std::vector<float> v;  // (T, Dv)
};

struct HeadState {
    float* S = nullptr;  // (Dk, Dv)
    double r = 0;        // torchscale row sum r_n before the call (the caller advances it); 0 for fla
};

std::vector<double> retention_forward(Family family, Form form, int chunk, double gamma,
                                      const HeadInputs& in, const HeadState& state, float* o);

// Moves S past the call's T tokens, in the recurrent form's definition (any form).
void advance_state(Family family, double gamma, const HeadInputs& in, const HeadState& state);

// ‖S_t‖_F after each token t of the call, without changing the state. (T)
std::vector<float> state_norms_per_token(Family family, double gamma, const HeadInputs& in, const HeadState& state);

// The (T, T) score matrix: (q_n·k_m) γ^(n−m) / d_n for m ≤ n.
void retention_scores(double gamma, const HeadInputs& in, const std::vector<double>& row_divisor, float* scores);

}  // namespace retnet::cpu
