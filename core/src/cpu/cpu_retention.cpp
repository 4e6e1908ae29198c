// SPDX-License-Identifier: GPL-3.0-or-later
#include "cpu/cpu_retention.h"

#include <algorithm>
#include <cmath>

#include "cpu/cpu_ops.h"
#include "retnet/family_rules.h"

namespace retnet::cpu {
namespace {

// A (rows, cols) = Q_rows K_colsᵀ
void scores_qk(const float* q, const float* k, int rows, int cols, int Dk, float* A) {
    gemm(false, true, rows, cols, Dk, 1.0f, q, Dk, k, Dk, 0.0f, A, cols);
}

// o (rows, Dv) += diag(row_scale) · q S  with q (rows, Dk), S (Dk, Dv)
void add_query_state(const float* q, const float* S, int rows, int Dk, int Dv,
                     const std::vector<float>& row_scale, float* o, std::vector<float>& tmp) {
    tmp.assign(static_cast<size_t>(rows) * Dv, 0.0f);
    gemm(false, false, rows, Dv, Dk, 1.0f, q, Dk, S, Dv, 0.0f, tmp.data(), Dv);
    for (int n = 0; n < rows; ++n)
        for (int j = 0; j < Dv; ++j) o[static_cast<size_t>(n) * Dv + j] += row_scale[static_cast<size_t>(n)] * tmp[static_cast<size_t>(n) * Dv + j];
}

// One recurrent step on a float state (the recurrent form and the state-norm probe).
void recurrent_step(Family family, double gamma, const float* k, const float* v, int Dk, int Dv,
                    float* S, double& r) {
    const StepCoefficients step = retnet::recurrent_step(family, gamma, r);
    for (int i = 0; i < Dk; ++i) {
        const float ki = k[i] * step.inject;
        float* row = S + static_cast<size_t>(i) * Dv;
        for (int j = 0; j < Dv; ++j) row[j] = row[j] * step.decay + ki * v[j];
    }
}

std::vector<double> fla_parallel(double gamma, const HeadInputs& in, const HeadState& st, float* o) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, T);
    std::vector<float> A(static_cast<size_t>(T) * T), tmp;
    scores_qk(in.q.data(), in.k.data(), T, T, Dk, A.data());
    for (int n = 0; n < T; ++n)
        for (int m = 0; m < T; ++m) A[static_cast<size_t>(n) * T + m] *= m <= n ? p[static_cast<size_t>(n - m)] : 0.0f;
    gemm(false, false, T, Dv, T, 1.0f, A.data(), T, in.v.data(), Dv, 0.0f, o, Dv);
    std::vector<float> cross_scale(p.begin() + 1, p.end());  // γ^(n+1)
    add_query_state(in.q.data(), st.S, T, Dk, Dv, cross_scale, o, tmp);
    return std::vector<double>(static_cast<size_t>(T), 1.0);
}

std::vector<double> ts_parallel(double gamma, const HeadInputs& in, float* o) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, T);
    std::vector<float> A(static_cast<size_t>(T) * T);
    std::vector<double> divisor(static_cast<size_t>(T));
    scores_qk(in.q.data(), in.k.data(), T, T, Dk, A.data());
    double r = 0;
    for (int n = 0; n < T; ++n) {
        r = next_row_sum(r, gamma);  // Σ_{m≤n} γ^(n−m)
        const float inv_sqrt_r = static_cast<float>(1.0 / std::sqrt(r));
        float* row = A.data() + static_cast<size_t>(n) * T;
        double abs_sum = 0;
        for (int m = 0; m < T; ++m) {
            row[m] = m <= n ? row[m] * p[static_cast<size_t>(n - m)] * inv_sqrt_r : 0.0f;
            abs_sum += std::abs(row[m]);
        }
        const double c = std::clamp(abs_sum, 1.0, 5e4);
        const float inv_c = static_cast<float>(1.0 / c);
        for (int m = 0; m <= n; ++m) row[m] *= inv_c;
        divisor[static_cast<size_t>(n)] = std::sqrt(r) * c;
    }
    gemm(false, false, T, Dv, T, 1.0f, A.data(), T, in.v.data(), Dv, 0.0f, o, Dv);
    return divisor;
}

std::vector<double> recurrent(Family family, double gamma, const HeadInputs& in, const HeadState& st, float* o) {
    const int Dk = in.Dk, Dv = in.Dv;
    std::vector<float> S(st.S, st.S + static_cast<size_t>(Dk) * Dv);
    double r = st.r;
    std::vector<double> divisor(static_cast<size_t>(in.T), 1.0);
    for (int n = 0; n < in.T; ++n) {
        recurrent_step(family, gamma, in.k.data() + static_cast<size_t>(n) * Dk, in.v.data() + static_cast<size_t>(n) * Dv, Dk, Dv, S.data(), r);
        const float* q = in.q.data() + static_cast<size_t>(n) * Dk;
        float* on = o + static_cast<size_t>(n) * Dv;
        std::fill(on, on + Dv, 0.0f);
        for (int i = 0; i < Dk; ++i) {
            const float* row = S.data() + static_cast<size_t>(i) * Dv;
            for (int j = 0; j < Dv; ++j) on[j] += q[i] * row[j];
        }
        if (family == Family::TorchScale) divisor[static_cast<size_t>(n)] = std::sqrt(r);
    }
    return divisor;
}

std::vector<double> fla_chunkwise(double gamma, int C, const HeadInputs& in, const HeadState& st, float* o) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, C + 1);
    std::vector<float> S(st.S, st.S + static_cast<size_t>(Dk) * Dv), A, vw, tmp;
    for (int c0 = 0; c0 < T; c0 += C) {
        const int len = std::min(C, T - c0);
        const float* q = in.q.data() + static_cast<size_t>(c0) * Dk;
        const float* k = in.k.data() + static_cast<size_t>(c0) * Dk;
        const float* v = in.v.data() + static_cast<size_t>(c0) * Dv;
        float* oc = o + static_cast<size_t>(c0) * Dv;
        A.assign(static_cast<size_t>(len) * len, 0.0f);
        scores_qk(q, k, len, len, Dk, A.data());
        for (int i = 0; i < len; ++i)
            for (int j = 0; j < len; ++j) A[static_cast<size_t>(i) * len + j] *= j <= i ? p[static_cast<size_t>(i - j)] : 0.0f;
        gemm(false, false, len, Dv, len, 1.0f, A.data(), len, v, Dv, 0.0f, oc, Dv);
        std::vector<float> cross_scale(p.begin() + 1, p.begin() + 1 + len);  // γ^(i+1)
        add_query_state(q, S.data(), len, Dk, Dv, cross_scale, oc, tmp);
        // S ← γ^len S + Kᵀ (V ⊙ γ^(len−1−j))
        vw.assign(v, v + static_cast<size_t>(len) * Dv);
        for (int j = 0; j < len; ++j)
            for (int x = 0; x < Dv; ++x) vw[static_cast<size_t>(j) * Dv + x] *= p[static_cast<size_t>(len - 1 - j)];
        gemm(true, false, Dk, Dv, len, 1.0f, k, Dk, vw.data(), Dv, p[static_cast<size_t>(len)], S.data(), Dv);
    }
    return std::vector<double>(static_cast<size_t>(T), 1.0);
}

std::vector<double> ts_chunkwise(double gamma, int C, const HeadInputs& in, const HeadState& st, float* o) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, C + 1);
    std::vector<double> rho(static_cast<size_t>(C));
    for (int i = 0; i < C; ++i) rho[static_cast<size_t>(i)] = next_row_sum(i ? rho[static_cast<size_t>(i - 1)] : 0.0, gamma);
    const double S_B = rho[static_cast<size_t>(C - 1)];
    // torchscale's chunk state = raw state / S_B; ours holds raw/√r.
    const float to_chunk_state = static_cast<float>(std::sqrt(st.r) / S_B);
    std::vector<float> state(st.S, st.S + static_cast<size_t>(Dk) * Dv), A, vw, cross, tmp;
    for (float& x : state) x *= to_chunk_state;
    std::vector<double> divisor(static_cast<size_t>(T));
    for (int c0 = 0; c0 < T; c0 += C) {
        const int len = std::min(C, T - c0);
        const float* q = in.q.data() + static_cast<size_t>(c0) * Dk;
        const float* k = in.k.data() + static_cast<size_t>(c0) * Dk;
        const float* v = in.v.data() + static_cast<size_t>(c0) * Dv;
        float* oc = o + static_cast<size_t>(c0) * Dv;
        double s = 1.0;  // clamp(max over value columns of Σ_k |state|, min 1)
        for (int j = 0; j < Dv; ++j) {
            double col = 0;
            for (int i = 0; i < Dk; ++i) col += std::abs(state[static_cast<size_t>(i) * Dv + j]);
            s = std::max(s, col);
        }
        A.assign(static_cast<size_t>(len) * len, 0.0f);
        scores_qk(q, k, len, len, Dk, A.data());
        std::vector<double> all(static_cast<size_t>(len));
        for (int i = 0; i < len; ++i) {
            const double sqrt_rho = std::sqrt(rho[static_cast<size_t>(i)]);
            float* row = A.data() + static_cast<size_t>(i) * len;
            double a = 0;
            for (int j = 0; j < len; ++j) {
                row[j] = j <= i ? row[j] * p[static_cast<size_t>(i - j)] / static_cast<float>(sqrt_rho) : 0.0f;
                a += std::abs(row[j]);
            }
            all[static_cast<size_t>(i)] = std::max(std::max(a, 1.0), s);
            divisor[static_cast<size_t>(c0 + i)] = sqrt_rho * all[static_cast<size_t>(i)];
        }
        gemm(false, false, len, Dv, len, 1.0f, A.data(), len, v, Dv, 0.0f, oc, Dv);
        std::vector<float> cross_scale(static_cast<size_t>(len));
        for (int i = 0; i < len; ++i)
            cross_scale[static_cast<size_t>(i)] = static_cast<float>(std::pow(gamma, i + 1) * S_B / std::sqrt(rho[static_cast<size_t>(i)]));
        add_query_state(q, state.data(), len, Dk, Dv, cross_scale, oc, tmp);
        for (int i = 0; i < len; ++i) {
            const float inv_all = static_cast<float>(1.0 / all[static_cast<size_t>(i)]);
            for (int j = 0; j < Dv; ++j) oc[static_cast<size_t>(i) * Dv + j] *= inv_all;
        }
        // Full-chunk constants, as torchscale pads the last chunk with zero rows.
        vw.assign(v, v + static_cast<size_t>(len) * Dv);
        for (int j = 0; j < len; ++j) {
            const float w = static_cast<float>(std::pow(gamma, C - 1 - j) / S_B);
            for (int x = 0; x < Dv; ++x) vw[static_cast<size_t>(j) * Dv + x] *= w;
        }
        gemm(true, false, Dk, Dv, len, 1.0f, k, Dk, vw.data(), Dv, p[static_cast<size_t>(C)], state.data(), Dv);
    }
    return divisor;
}

}  // namespace

std::vector<double> retention_forward(Family family, Form form, int chunk, double gamma,
                                      const HeadInputs& in, const HeadState& state, float* o) {
    const bool ts = family == Family::TorchScale;
    switch (form) {
        case Form::Parallel: return ts ? ts_parallel(gamma, in, o) : fla_parallel(gamma, in, state, o);
        case Form::Recurrent: return recurrent(family, gamma, in, state, o);
        case Form::Chunkwise: return ts ? ts_chunkwise(gamma, chunk, in, state, o) : fla_chunkwise(gamma, chunk, in, state, o);
    }
    return {};
}

void advance_state(Family family, double gamma, const HeadInputs& in, const HeadState& state) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, T);
    const bool ts = family == Family::TorchScale;
    float* S = state.S;
    if (ts) {  // to raw scaling
        const float up = static_cast<float>(std::sqrt(state.r));
        for (int i = 0; i < Dk * Dv; ++i) S[i] *= up;
    }
    // raw S ← γ^T S + Kᵀ (V ⊙ γ^(T−1−m))
    std::vector<float> vw(in.v);
    for (int m = 0; m < T; ++m)
        for (int x = 0; x < Dv; ++x) vw[static_cast<size_t>(m) * Dv + x] *= p[static_cast<size_t>(T - 1 - m)];
    gemm(true, false, Dk, Dv, T, 1.0f, in.k.data(), Dk, vw.data(), Dv, p[static_cast<size_t>(T)], S, Dv);
    if (ts) {
        const float down = static_cast<float>(1.0 / std::sqrt(advance_row_sum(state.r, gamma, T)));
        for (int i = 0; i < Dk * Dv; ++i) S[i] *= down;
    }
}

std::vector<float> state_norms_per_token(Family family, double gamma, const HeadInputs& in, const HeadState& state) {
    const int Dk = in.Dk, Dv = in.Dv;
    std::vector<float> S(state.S, state.S + static_cast<size_t>(Dk) * Dv), norms(static_cast<size_t>(in.T));
    double r = state.r;
    for (int t = 0; t < in.T; ++t) {
        recurrent_step(family, gamma, in.k.data() + static_cast<size_t>(t) * Dk, in.v.data() + static_cast<size_t>(t) * Dv, Dk, Dv, S.data(), r);
        double sum = 0;
        for (float s : S) sum += static_cast<double>(s) * s;
        norms[static_cast<size_t>(t)] = static_cast<float>(std::sqrt(sum));
    }
    return norms;
}

void retention_scores(double gamma, const HeadInputs& in, const std::vector<double>& row_divisor, float* scores) {
    const int T = in.T;
    const std::vector<float> p = decay_powers(gamma, T);
    scores_qk(in.q.data(), in.k.data(), T, T, in.Dk, scores);
    for (int n = 0; n < T; ++n) {
        const float inv = static_cast<float>(1.0 / row_divisor[static_cast<size_t>(n)]);
        for (int m = 0; m < T; ++m) {
            float& s = scores[static_cast<size_t>(n) * T + m];
            s = m <= n ? s * p[static_cast<size_t>(n - m)] * inv : 0.0f;
        }
    }
}

}  // namespace retnet::cpu
