// SPDX-License-Identifier: GPL-3.0-or-later
// The op library's fla retention (retnet/cpu_ops.h), forward and backward, in the parallel and
// chunkwise forms, one (sequence, head) pair per task.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

namespace retnet::cpu {

namespace {

// γ^k for k = 0..n−1, in double then rounded to T.
template <typename T>
std::vector<T> decay_powers(float log_decay, int64_t n) {
    std::vector<T> p(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
        p[static_cast<size_t>(k)] = static_cast<T>(std::exp(static_cast<double>(k) * log_decay));
    return p;
}

// A (L, L) ← A ⊙ D with D_ij = γ^(i−j) for j ≤ i, 0 above the diagonal.
template <typename T>
void apply_decay_mask(T* A, int64_t L, const std::vector<T>& pw) {
    for (int64_t i = 0; i < L; ++i) {
        T* row = A + i * L;
        for (int64_t j = 0; j <= i; ++j) row[j] *= pw[static_cast<size_t>(i - j)];
        for (int64_t j = i + 1; j < L; ++j) row[j] = T(0);
    }
}

// Calls fn(b, h) for every (sequence, head) pair across threads, BLAS single-threaded inside.
void for_each_sequence_head(int64_t batch, int64_t n_heads, const std::function<void(int64_t, int64_t)>& fn) {
    with_single_threaded_blas([&] {
        parallel_blocks(batch * n_heads, 1, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) fn(i / n_heads, i % n_heads);
        });
    });
}


}  // namespace

template <typename T>
void retention_forward(const T* q, const T* k, const T* v, const RetentionShape& s,
                       const float* log_decay, int chunk, T* o) {
    const int64_t Tn = s.seq_len, Dk = s.head_dim_k, Dv = s.head_dim_v;
    const int64_t ldk = s.n_heads * Dk, ldv = s.n_heads * Dv;
    const int64_t C = chunk > 0 ? std::min<int64_t>(chunk, Tn) : Tn;
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const T* Q = q + b * Tn * ldk + h * Dk;
        const T* K = k + b * Tn * ldk + h * Dk;
        const T* V = v + b * Tn * ldv + h * Dv;
        T* O = o + b * Tn * ldv + h * Dv;
        const std::vector<T> pw = decay_powers<T>(log_decay[h], C + 1);
        std::vector<T> A(static_cast<size_t>(C * C));
        std::vector<T> S(static_cast<size_t>(Dk * Dv), T(0));  // (Dk, Dv) state before the chunk
        std::vector<T> Qs(static_cast<size_t>(C * Dk)), Vs(static_cast<size_t>(C * Dv));
        for (int64_t c0 = 0; c0 < Tn; c0 += C) {
            const int64_t L = std::min(C, Tn - c0);
            const T* Qc = Q + c0 * ldk;
            const T* Kc = K + c0 * ldk;
            const T* Vc = V + c0 * ldv;
            T* Oc = O + c0 * ldv;
            gemm<T>(false, true, L, L, Dk, T(1), Qc, ldk, Kc, ldk, T(0), A.data(), L);
            apply_decay_mask(A.data(), L, pw);
            gemm<T>(false, false, L, Dv, L, T(1), A.data(), L, Vc, ldv, T(0), Oc, ldv);
            if (c0 > 0) {
                // O_c += diag(γ^(i+1)) Q_c S
                for (int64_t i = 0; i < L; ++i)
                    for (int64_t j = 0; j < Dk; ++j)
                        Qs[static_cast<size_t>(i * Dk + j)] = Qc[i * ldk + j] * pw[static_cast<size_t>(i + 1)];
                gemm<T>(false, false, L, Dv, Dk, T(1), Qs.data(), Dk, S.data(), Dv, T(1), Oc, ldv);
            }
            if (c0 + L >= Tn) break;  // no later chunk reads the state
            // S ← γ^L S + K_cᵀ diag(γ^(L−1−j)) V_c
            for (int64_t j = 0; j < L; ++j)
                for (int64_t e = 0; e < Dv; ++e)
                    Vs[static_cast<size_t>(j * Dv + e)] = Vc[j * ldv + e] * pw[static_cast<size_t>(L - 1 - j)];
            for (T& x : S) x *= pw[static_cast<size_t>(L)];
            gemm<T>(true, false, Dk, Dv, L, T(1), Kc, ldk, Vs.data(), Dv, T(1), S.data(), Dv);
        }
    });
}

template <typename T>
void retention_backward(const T* q, const T* k, const T* v, const T* d_o, const RetentionShape& s,
                        const float* log_decay, int chunk, T* dq, T* dk, T* dv) {
    const int64_t Tn = s.seq_len, Dk = s.head_dim_k, Dv = s.head_dim_v;
    const int64_t ldk = s.n_heads * Dk, ldv = s.n_heads * Dv;
    const int64_t C = chunk > 0 ? std::min<int64_t>(chunk, Tn) : Tn;
    const int64_t n_chunks = (Tn + C - 1) / C;
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const int64_t q_off = b * Tn * ldk + h * Dk, v_off = b * Tn * ldv + h * Dv;
        const T* Q = q + q_off;
        const T* K = k + q_off;
        const T* V = v + v_off;
        const T* dO = d_o + v_off;
        T* dQ = dq + q_off;
        T* dK = dk + q_off;
        T* dV = dv + v_off;
        const std::vector<T> pw = decay_powers<T>(log_decay[h], C + 1);
        const size_t state = static_cast<size_t>(Dk * Dv);
        // states[c] = S before chunk c (n_chunks, Dk, Dv), recomputed.
        std::vector<T> states(static_cast<size_t>(n_chunks) * state, T(0));
        std::vector<T> Vs(static_cast<size_t>(C * Dv)), Ks(static_cast<size_t>(C * Dk)),
            dOs(static_cast<size_t>(C * Dv));
        for (int64_t c = 1; c < n_chunks; ++c) {
            const int64_t c0 = (c - 1) * C, L = C;
            T* S = states.data() + static_cast<size_t>(c) * state;
            const T* Sprev = states.data() + static_cast<size_t>(c - 1) * state;
            for (size_t i = 0; i < state; ++i) S[i] = Sprev[i] * pw[static_cast<size_t>(L)];
            for (int64_t j = 0; j < L; ++j)
                for (int64_t e = 0; e < Dv; ++e)
                    Vs[static_cast<size_t>(j * Dv + e)] = V[(c0 + j) * ldv + e] * pw[static_cast<size_t>(L - 1 - j)];
            gemm<T>(true, false, Dk, Dv, L, T(1), K + c0 * ldk, ldk, Vs.data(), Dv, T(1), S, Dv);
        }
        std::vector<T> A(static_cast<size_t>(C * C)), dA(A.size());
        std::vector<T> dS(state, T(0));  // ∂L/∂S after the current chunk
        for (int64_t c = n_chunks - 1; c >= 0; --c) {
            const int64_t c0 = c * C, L = std::min(C, Tn - c0);
            const T* Qc = Q + c0 * ldk;
            const T* Kc = K + c0 * ldk;
            const T* Vc = V + c0 * ldv;
            const T* dOc = dO + c0 * ldv;
            T* dQc = dQ + c0 * ldk;
            T* dKc = dK + c0 * ldk;
            T* dVc = dV + c0 * ldv;
            const T* Sprev = states.data() + static_cast<size_t>(c) * state;
            const bool has_after = c < n_chunks - 1;  // dS is non-zero
            gemm<T>(false, true, L, L, Dk, T(1), Qc, ldk, Kc, ldk, T(0), A.data(), L);
            apply_decay_mask(A.data(), L, pw);
            gemm<T>(false, true, L, L, Dv, T(1), dOc, ldv, Vc, ldv, T(0), dA.data(), L);
            apply_decay_mask(dA.data(), L, pw);
            // dV_c = Aᵀ dO_c + diag(γ^(L−1−j)) K_c dS
            gemm<T>(true, false, L, Dv, L, T(1), A.data(), L, dOc, ldv, T(0), dVc, ldv);
            // dQ_c = dA K_c + diag(γ^(i+1)) dO_c S_prevᵀ
            gemm<T>(false, false, L, Dk, L, T(1), dA.data(), L, Kc, ldk, T(0), dQc, ldk);
            // dK_c = dAᵀ Q_c + diag(γ^(L−1−j)) V_c dSᵀ
            gemm<T>(true, false, L, Dk, L, T(1), dA.data(), L, Qc, ldk, T(0), dKc, ldk);
            if (has_after) {
                for (int64_t j = 0; j < L; ++j) {
                    const T g = pw[static_cast<size_t>(L - 1 - j)];
                    for (int64_t e = 0; e < Dk; ++e) Ks[static_cast<size_t>(j * Dk + e)] = Kc[j * ldk + e] * g;
                    for (int64_t e = 0; e < Dv; ++e) Vs[static_cast<size_t>(j * Dv + e)] = Vc[j * ldv + e] * g;
                }
                gemm<T>(false, false, L, Dv, Dk, T(1), Ks.data(), Dk, dS.data(), Dv, T(1), dVc, ldv);
                gemm<T>(false, true, L, Dk, Dv, T(1), Vs.data(), Dv, dS.data(), Dv, T(1), dKc, ldk);
            }
            if (c > 0) {
                for (int64_t i = 0; i < L; ++i)
                    for (int64_t e = 0; e < Dv; ++e)
                        dOs[static_cast<size_t>(i * Dv + e)] = dOc[i * ldv + e] * pw[static_cast<size_t>(i + 1)];
                gemm<T>(false, true, L, Dk, Dv, T(1), dOs.data(), Dv, Sprev, Dv, T(1), dQc, ldk);
                // dS_prev = γ^L dS + Q_cᵀ diag(γ^(i+1)) dO_c
                for (T& x : dS) x *= pw[static_cast<size_t>(L)];
                gemm<T>(true, false, Dk, Dv, L, T(1), Qc, ldk, dOs.data(), Dv, T(1), dS.data(), Dv);
            }
        }
    });
}

#define RETNET_INSTANTIATE_RETENTION(T)                                                                         \
    template void retention_forward<T>(const T*, const T*, const T*, const RetentionShape&, const float*, int,  \
                                       T*);                                                                     \
    template void retention_backward<T>(const T*, const T*, const T*, const T*, const RetentionShape&,          \
                                        const float*, int, T*, T*, T*);

RETNET_INSTANTIATE_RETENTION(float)
RETNET_INSTANTIATE_RETENTION(double)

}  // namespace retnet::cpu
