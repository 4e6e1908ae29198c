// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Retention of one head with BLAS, in the three forms of both families: the CPU's only retention.
// The inference backend calls it per head with the slot's state (float); the op library's
// batched fla retention (retnet/cpu_ops.h, the trainer's) calls the same fla forward per
// (sequence, head) from an empty state, in float or double, and its backward sits beside it in
// cpu_retention.cpp.
// Inputs: q (T, Dk) and k (T, Dk) rotated, with 1/√Dk where the family puts it; v (T, Dv); S
// (Dk, Dv) the state before the call in the family's scaling (fla raw, torchscale raw/√r) and r
// the torchscale row sum. Output o (T, Dv) before the head norm.
// The forward returns the per-row divisor d_n of its form (o_n = R_n / d_n with R_n the
// unnormalized retention): 1 for fla, √r_n·c_n, √r_n or √ρ·all for torchscale's forms; the
// introspection uses it to draw the score matrix the form actually applied.
#include <cstdint>
#include <vector>

#include "retnet/forward.h"

namespace retnet::cpu {

// One head of one sequence, strided: row t of q is q + t·ldk, of v is v + t·ldv.
template <typename Real>
struct HeadView {
    int64_t T = 0, Dk = 0, Dv = 0;
    const Real* q = nullptr;  // (T, Dk) rows ldk apart
    const Real* k = nullptr;  // (T, Dk) rows ldk apart
    const Real* v = nullptr;  // (T, Dv) rows ldv apart
    int64_t ldk = 0, ldv = 0;
};

// The inference backend's gathered head (contiguous).
struct HeadInputs {
    int T = 0, Dk = 0, Dv = 0;
    std::vector<float> q;  // (T, Dk)
    std::vector<float> k;  // (T, Dk)
    std::vector<float> v;  // (T, Dv)
    HeadView<float> view() const { return {T, Dk, Dv, q.data(), k.data(), v.data(), Dk, Dv}; }
};

struct HeadState {
    float* S = nullptr;  // (Dk, Dv)
    double r = 0;        // torchscale row sum r_n before the call (the caller advances it); 0 for fla
};

// Any form of either family; does not change the state.
std::vector<double> retention_forward(Family family, Form form, int chunk, double gamma,
                                      const HeadInputs& in, const HeadState& state, float* o);

// Moves S past the call's T tokens, in the recurrent form's definition (any form).
void advance_state(Family family, double gamma, const HeadInputs& in, const HeadState& state);

// ‖S_t‖_F after each token t of the call, without changing the state. (T)
std::vector<float> state_norms_per_token(Family family, double gamma, const HeadInputs& in, const HeadState& state);

// The (T, T) score matrix: (q_n·k_m) γ^(n−m) / d_n for m ≤ n.
void retention_scores(double gamma, const HeadInputs& in, const std::vector<double>& row_divisor, float* scores);

}  // namespace retnet::cpu
