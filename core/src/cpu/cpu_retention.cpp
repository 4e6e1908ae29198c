// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU's retention: fla's forward and backward (the op library's retnet/cpu_ops.h entry points
// for the trainer, and the inference backend's fla forms), then torchscale's normalized forms and
// the recurrent form. fla's parallel form is its chunkwise form with one chunk of T tokens.
#include "cpu/cpu_retention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>

#include "cpu/cpu_ops.h"
#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"
#include "retnet/family_rules.h"

namespace retnet::cpu {
namespace {

// A (L, L) ← A ⊙ D with D_ij = γ^(i−j) for j ≤ i, 0 above the diagonal. p: γ^0..γ^(L−1).
template <typename Real>
void apply_decay_mask(Real* A, int64_t L, const std::vector<Real>& p) {
    for (int64_t i = 0; i < L; ++i) {
        Real* row = A + i * L;
        for (int64_t j = 0; j <= i; ++j) row[j] *= p[static_cast<size_t>(i - j)];
        for (int64_t j = i + 1; j < L; ++j) row[j] = Real(0);
    }
}

// dst (L, cols) = src rows (ld apart) scaled by w(j).
template <typename Real, typename Weight>
void scale_rows(const Real* src, int64_t ld, int64_t L, int64_t cols, Weight w, std::vector<Real>& dst) {
    dst.resize(static_cast<size_t>(L * cols));
    for (int64_t j = 0; j < L; ++j) {
        const Real wj = w(j);
        for (int64_t e = 0; e < cols; ++e) dst[static_cast<size_t>(j * cols + e)] = src[j * ld + e] * wj;
    }
}

// The raw state after L more tokens: S ← γ^L S + Kᵀ diag(γ^(L−1−j)) V. p: γ^0..γ^L at least.
template <typename Real>
void fla_state_step(const Real* K, int64_t ldk, const Real* V, int64_t ldv, int64_t L, int64_t Dk, int64_t Dv,
                    const std::vector<Real>& p, Real* S, std::vector<Real>& Vs) {
    scale_rows(V, ldv, L, Dv, [&](int64_t j) { return p[static_cast<size_t>(L - 1 - j)]; }, Vs);
    gemm<Real>(true, false, Dk, Dv, L, Real(1), K, ldk, Vs.data(), Dv, p[static_cast<size_t>(L)], S, Dv);
}

// The chunk length the forms use: chunk ≤ 0 or ≥ T is the parallel form (one chunk).
int64_t chunk_length(int64_t chunk, int64_t T) { return chunk > 0 ? std::min(chunk, T) : T; }

// ---- fla forward ------------------------------------------------------------------------------

// o_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m + γ^(n+1) q_n S0 over chunks of C tokens, the state carried
// between chunks. S0 (Dk, Dv) null: the empty state. o (T, Dv) rows ldo apart.
template <typename Real>
void fla_forward(double gamma, int64_t chunk, const HeadView<Real>& in, const Real* S0, Real* o, int64_t ldo) {
    const int64_t T = in.T, Dk = in.Dk, Dv = in.Dv, C = chunk_length(chunk, T);
    if (T == 0) return;
    const std::vector<Real> p = decay_powers<Real>(gamma, C);
    std::vector<Real> A(static_cast<size_t>(C * C)), Qs, Vs;
    std::vector<Real> S;  // (Dk, Dv) the state before the chunk; empty while it is zero
    if (S0) S.assign(S0, S0 + Dk * Dv);
    for (int64_t c0 = 0; c0 < T; c0 += C) {
        const int64_t L = std::min(C, T - c0);
        const Real* Qc = in.q + c0 * in.ldk;
        const Real* Kc = in.k + c0 * in.ldk;
        const Real* Vc = in.v + c0 * in.ldv;
        Real* Oc = o + c0 * ldo;
        gemm<Real>(false, true, L, L, Dk, Real(1), Qc, in.ldk, Kc, in.ldk, Real(0), A.data(), L);
        apply_decay_mask(A.data(), L, p);
        gemm<Real>(false, false, L, Dv, L, Real(1), A.data(), L, Vc, in.ldv, Real(0), Oc, ldo);
        if (!S.empty()) {  // O_c += diag(γ^(i+1)) Q_c S
            scale_rows(Qc, in.ldk, L, Dk, [&](int64_t i) { return p[static_cast<size_t>(i + 1)]; }, Qs);
            gemm<Real>(false, false, L, Dv, Dk, Real(1), Qs.data(), Dk, S.data(), Dv, Real(1), Oc, ldo);
        }
        if (c0 + L >= T) break;  // no later chunk reads the state
        if (S.empty()) S.assign(static_cast<size_t>(Dk * Dv), Real(0));
        fla_state_step(Kc, in.ldk, Vc, in.ldv, L, Dk, Dv, p, S.data(), Vs);
    }
}

// ---- fla backward (from the empty state) --------------------------------------------------------

// dQ, dK, dV (overwritten) of Σ o·dO for fla_forward from the empty state; the states before each
// chunk are recomputed with the forward's own step.
template <typename Real>
void fla_backward(double gamma, int64_t chunk, const HeadView<Real>& in, const Real* dO, Real* dQ, Real* dK,
                  Real* dV) {
    const int64_t T = in.T, Dk = in.Dk, Dv = in.Dv, ldk = in.ldk, ldv = in.ldv, C = chunk_length(chunk, T);
    if (T == 0) return;
    const int64_t n_chunks = (T + C - 1) / C;
    const std::vector<Real> p = decay_powers<Real>(gamma, C);
    const size_t state = static_cast<size_t>(Dk * Dv);
    std::vector<Real> states(static_cast<size_t>(n_chunks) * state, Real(0));  // (n_chunks, Dk, Dv) S before chunk c
    std::vector<Real> Ks, Vs, dOs;
    for (int64_t c = 1; c < n_chunks; ++c) {
        Real* S = states.data() + static_cast<size_t>(c) * state;
        std::copy_n(S - state, state, S);
        fla_state_step(in.k + (c - 1) * C * ldk, ldk, in.v + (c - 1) * C * ldv, ldv, C, Dk, Dv, p, S, Vs);
    }
    std::vector<Real> A(static_cast<size_t>(C * C)), dA(A.size());
    std::vector<Real> dS(state, Real(0));  // ∂L/∂S after the current chunk
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
        const int64_t c0 = c * C, L = std::min(C, T - c0);
        const Real *Qc = in.q + c0 * ldk, *Kc = in.k + c0 * ldk, *Vc = in.v + c0 * ldv, *dOc = dO + c0 * ldv;
        Real *dQc = dQ + c0 * ldk, *dKc = dK + c0 * ldk, *dVc = dV + c0 * ldv;
        gemm<Real>(false, true, L, L, Dk, Real(1), Qc, ldk, Kc, ldk, Real(0), A.data(), L);
        apply_decay_mask(A.data(), L, p);
        gemm<Real>(false, true, L, L, Dv, Real(1), dOc, ldv, Vc, ldv, Real(0), dA.data(), L);
        apply_decay_mask(dA.data(), L, p);
        // dV_c = Aᵀ dO_c (+ diag(γ^(L−1−j)) K_c dS), dQ_c = dA K_c (+ diag(γ^(i+1)) dO_c S_prevᵀ),
        // dK_c = dAᵀ Q_c (+ diag(γ^(L−1−j)) V_c dSᵀ)
        gemm<Real>(true, false, L, Dv, L, Real(1), A.data(), L, dOc, ldv, Real(0), dVc, ldv);
        gemm<Real>(false, false, L, Dk, L, Real(1), dA.data(), L, Kc, ldk, Real(0), dQc, ldk);
        gemm<Real>(true, false, L, Dk, L, Real(1), dA.data(), L, Qc, ldk, Real(0), dKc, ldk);
        if (c < n_chunks - 1) {  // dS is non-zero
            const auto w = [&](int64_t j) { return p[static_cast<size_t>(L - 1 - j)]; };
            scale_rows(Kc, ldk, L, Dk, w, Ks);
            scale_rows(Vc, ldv, L, Dv, w, Vs);
            gemm<Real>(false, false, L, Dv, Dk, Real(1), Ks.data(), Dk, dS.data(), Dv, Real(1), dVc, ldv);
            gemm<Real>(false, true, L, Dk, Dv, Real(1), Vs.data(), Dv, dS.data(), Dv, Real(1), dKc, ldk);
        }
        if (c > 0) {
            scale_rows(dOc, ldv, L, Dv, [&](int64_t i) { return p[static_cast<size_t>(i + 1)]; }, dOs);
            const Real* Sprev = states.data() + static_cast<size_t>(c) * state;
            gemm<Real>(false, true, L, Dk, Dv, Real(1), dOs.data(), Dv, Sprev, Dv, Real(1), dQc, ldk);
            // dS_prev = γ^L dS + Q_cᵀ diag(γ^(i+1)) dO_c
            gemm<Real>(true, false, Dk, Dv, L, Real(1), Qc, ldk, dOs.data(), Dv, p[static_cast<size_t>(L)],
                       dS.data(), Dv);
        }
    }
}

// Calls fn(b, h) for every (sequence, head) pair across threads, BLAS single-threaded inside.
void for_each_sequence_head(int64_t batch, int64_t n_heads, const std::function<void(int64_t, int64_t)>& fn) {
    parallel_blas_blocks(batch * n_heads, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) fn(i / n_heads, i % n_heads);
    });
}

// Head h of sequence b in the batched layout: q, k (B·T, H·Dk), v (B·T, H·Dv).
template <typename Real>
HeadView<Real> batched_head(const Real* q, const Real* k, const Real* v, const RetentionShape& s, int64_t b,
                            int64_t h) {
    const int64_t ldk = s.n_heads * s.head_dim_k, ldv = s.n_heads * s.head_dim_v;
    const int64_t qo = b * s.seq_len * ldk + h * s.head_dim_k, vo = b * s.seq_len * ldv + h * s.head_dim_v;
    return {s.seq_len, s.head_dim_k, s.head_dim_v, q + qo, k + qo, v + vo, ldk, ldv};
}

}  // namespace

// ---- the op library's batched fla retention (retnet/cpu_ops.h) ---------------------------------

template <typename Real>
void retention_forward(const Real* q, const Real* k, const Real* v, const RetentionShape& s,
                       const float* log_decay, int chunk, Real* o) {
    const std::vector<double> gamma = head_decays(std::span(log_decay, static_cast<size_t>(s.n_heads)));
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const HeadView<Real> in = batched_head(q, k, v, s, b, h);
        fla_forward(gamma[static_cast<size_t>(h)], chunk, in, static_cast<const Real*>(nullptr),
                    o + (in.v - v), in.ldv);
    });
}

template <typename Real>
void retention_backward(const Real* q, const Real* k, const Real* v, const Real* d_o, const RetentionShape& s,
                        const float* log_decay, int chunk, Real* dq, Real* dk, Real* dv) {
    const std::vector<double> gamma = head_decays(std::span(log_decay, static_cast<size_t>(s.n_heads)));
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const HeadView<Real> in = batched_head(q, k, v, s, b, h);
        const int64_t qo = in.q - q, vo = in.v - v;
        fla_backward(gamma[static_cast<size_t>(h)], chunk, in, d_o + vo, dq + qo, dk + qo, dv + vo);
    });
}

#define RETNET_INSTANTIATE_RETENTION(Real)                                                                     \
    template void retention_forward<Real>(const Real*, const Real*, const Real*, const RetentionShape&,        \
                                          const float*, int, Real*);                                           \
    template void retention_backward<Real>(const Real*, const Real*, const Real*, const Real*,                 \
                                           const RetentionShape&, const float*, int, Real*, Real*, Real*);

RETNET_INSTANTIATE_RETENTION(float)
RETNET_INSTANTIATE_RETENTION(double)

// ---- torchscale's normalized forms and the recurrent form (inference, float) --------------------

namespace {

// A (rows, cols) = Q_rows K_colsᵀ
void scores_qk(const float* q, const float* k, int rows, int cols, int Dk, float* A) {
    gemm(false, true, rows, cols, Dk, 1.0f, q, Dk, k, Dk, 0.0f, A, cols);
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

std::vector<double> ts_chunkwise(double gamma, int C, const HeadInputs& in, const HeadState& st, float* o) {
    const int T = in.T, Dk = in.Dk, Dv = in.Dv;
    const std::vector<float> p = decay_powers(gamma, C);
    const std::vector<double> pd = decay_powers<double>(gamma, C);
    std::vector<double> rho(static_cast<size_t>(C));
    for (int i = 0; i < C; ++i) rho[static_cast<size_t>(i)] = next_row_sum(i ? rho[static_cast<size_t>(i - 1)] : 0.0, gamma);
    const double S_B = rho[static_cast<size_t>(C - 1)];
    // torchscale's chunk state = raw state / S_B; ours holds raw/√r.
    const float to_chunk_state = static_cast<float>(std::sqrt(st.r) / S_B);
    std::vector<float> state(st.S, st.S + static_cast<size_t>(Dk) * Dv), A, vw, Qs;
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
        // O_c += diag(γ^(i+1)·S_B/√ρ_i) Q_c state
        scale_rows(q, Dk, len, Dk, [&](int64_t i) {
            return static_cast<float>(pd[static_cast<size_t>(i + 1)] * S_B / std::sqrt(rho[static_cast<size_t>(i)]));
        }, Qs);
        gemm(false, false, len, Dv, Dk, 1.0f, Qs.data(), Dk, state.data(), Dv, 1.0f, oc, Dv);
        for (int i = 0; i < len; ++i) {
            const float inv_all = static_cast<float>(1.0 / all[static_cast<size_t>(i)]);
            for (int j = 0; j < Dv; ++j) oc[static_cast<size_t>(i) * Dv + j] *= inv_all;
        }
        // Full-chunk constants, as torchscale pads the last chunk with zero rows.
        scale_rows(v, Dv, len, Dv, [&](int64_t j) { return static_cast<float>(pd[static_cast<size_t>(C - 1 - j)] / S_B); }, vw);
        gemm(true, false, Dk, Dv, len, 1.0f, k, Dk, vw.data(), Dv, p[static_cast<size_t>(C)], state.data(), Dv);
    }
    return divisor;
}

}  // namespace

// ---- the inference backend's per-head entry points ------------------------------------------------

std::vector<double> retention_forward(Family family, Form form, int chunk, double gamma,
                                      const HeadInputs& in, const HeadState& state, float* o) {
    const bool ts = family == Family::TorchScale;
    switch (form) {
        case Form::Recurrent: return recurrent(family, gamma, in, state, o);
        case Form::Parallel:
            if (ts) return ts_parallel(gamma, in, o);
            break;
        case Form::Chunkwise:
            if (ts) return ts_chunkwise(gamma, chunk, in, state, o);
            break;
    }
    fla_forward(gamma, form == Form::Chunkwise ? chunk : 0, in.view(), static_cast<const float*>(state.S), o, in.Dv);
    return std::vector<double>(static_cast<size_t>(in.T), 1.0);
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
    std::vector<float> vw;
    fla_state_step(in.k.data(), Dk, in.v.data(), Dv, T, Dk, Dv, p, S, vw);  // the raw state's step
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
