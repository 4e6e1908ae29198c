// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What differs between the two checkpoint families, other than weight names, written once for
// every fast backend (docs/spec.md §4 lists the differences):
//   - where 1/√Dk sits (torchscale on k, fla on q) and the embedding scale;
//   - the rotary variant (torchscale pairs (2i, 2i+1), fla pairs (i, i + Dk/2));
//   - torchscale's per-row normalization and the row sums r_n = Σ_{i<n} γ^i it rests on
//     (its state is kept as raw/√r_n), and the precondition of its parallel form.
// The double reference (core/src/reference) stays a separate, deliberately naive oracle.
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "retnet/config.h"

namespace retnet {

enum class Form;

// Multipliers of q and k before rotation (both rotations are linear, so the order is free).
struct QKScale {
    float q = 1.0f;
    float k = 1.0f;
};
QKScale qk_scale(const ModelConfig& config);

// x = scale · E[token]: √d for torchscale unless no_scale_embedding, else 1.
float embedding_scale(const ModelConfig& config);

// The rotary variant: which coordinates of a head form the rotated pairs. Pair i turns by
// pos·θ_i, the angle formed in float32 as both reference implementations do (rotary_angle); the
// CPU ops (retnet/cpu_ops.h) and the CUDA kernel (kernels/src/rotary.cu) apply it.
enum class RotaryPairs {
    Interleaved,  // torchscale: (2i, 2i+1)
    HalfSplit,    // fla ("rotate_half"): (i, i + Dk/2)
};
RotaryPairs rotary_pairs(Family family);
inline float rotary_angle(int64_t pos, float theta) { return static_cast<float>(pos) * theta; }

// Throws retnet::Error when `form` cannot start at `position` for this family: torchscale's
// parallel form normalizes each row by its whole sum, so it starts from an empty state.
void check_form_start(const ModelConfig& config, Form form, int64_t position);

// ---- decay ------------------------------------------------------------------------------------

// γ_h = exp(log γ_h) in double, as every form uses it.
std::vector<double> head_decays(std::span<const float> log_decay);
// γ^i for i in [0, n], computed in double and rounded once to Real (float for inference, double
// for the gradient checks of the op library). (n + 1)
template <typename Real = float>
std::vector<Real> decay_powers(double gamma, int64_t n) {
    std::vector<Real> p(static_cast<size_t>(n) + 1);
    for (int64_t i = 0; i <= n; ++i) p[static_cast<size_t>(i)] = static_cast<Real>(std::pow(gamma, static_cast<double>(i)));
    return p;
}

// torchscale's row sum after one more token: r ← r·γ + 1 (r_0 = 0). The only place it is written.
inline double next_row_sum(double r, double gamma) { return r * gamma + 1.0; }
// r after `steps` more tokens.
double advance_row_sum(double r, double gamma, int64_t steps);

// One recurrent step in the family's state scaling: S_t = decay·S_{t−1} + inject·k_t v_tᵀ.
// fla: decay γ, inject 1 (raw state). torchscale: the state is raw/√r, so decay = √r·γ/√r',
// inject = 1/√r' with r' = next_row_sum(r, γ); `row_sum` is advanced to r'.
struct StepCoefficients {
    float decay = 1.0f;
    float inject = 1.0f;
};
StepCoefficients recurrent_step(Family family, double gamma, double& row_sum);

}  // namespace retnet
