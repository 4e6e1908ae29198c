// SPDX-License-Identifier: GPL-3.0-or-later
// The trainer's causal softmax attention (the Transformer twin's, retnet/cpu_ops.h): every
// (sequence, head) on its own thread, its query rows in tiles through BLAS. The inference
// attention over a KV cache is cpu_attention.cpp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

namespace retnet::cpu {
namespace {

// Query rows per tile: the scores of a tile are (tile, keys up to its last row).
constexpr int64_t kQueryTile = 64;

// Head h of sequence b: its first row of q, k, v, o (the rows ld = H·D apart) and of lse (H apart).
struct HeadRows {
    int64_t row0, col0, ld;
};
HeadRows head_rows(const AttentionShape& s, int64_t b, int64_t h) {
    return {b * s.seq_len, h * s.head_dim, s.n_heads * s.head_dim};
}

// Calls fn(b, h) for every (sequence, head) pair across threads, BLAS single-threaded inside.
template <typename Fn>
void for_each_sequence_head(const AttentionShape& s, const Fn& fn) {
    parallel_blas_blocks(s.batch * s.n_heads, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) fn(i / s.n_heads, i % s.n_heads);
    });
}

// P (R, L) ← the causal softmax of the scores of query rows n0..n0+R−1 over keys 0..L−1 (L = n0+R):
// row i keeps keys m ≤ n0 + i. With lse null each row's log-sum-exp is formed (max-shifted) and
// written to lse_out; else P = exp(S − lse) as the backward recomputes it.
template <typename T>
void causal_softmax(T* P, int64_t n0, int64_t R, const T* lse, int64_t lse_stride, T* lse_out) {
    const int64_t L = n0 + R;
    for (int64_t i = 0; i < R; ++i) {
        T* row = P + i * L;
        const int64_t keys = n0 + i + 1;
        if (lse) {
            const T shift = lse[(n0 + i) * lse_stride];
            for (int64_t m = 0; m < keys; ++m) row[m] = std::exp(row[m] - shift);
        } else {
            const T mx = *std::max_element(row, row + keys);
            T sum = 0;
            for (int64_t m = 0; m < keys; ++m) sum += row[m] = std::exp(row[m] - mx);
            const T inv = T(1) / sum;
            for (int64_t m = 0; m < keys; ++m) row[m] *= inv;
            lse_out[(n0 + i) * lse_stride] = mx + std::log(sum);
        }
        std::fill(row + keys, row + L, T(0));
    }
}

}  // namespace

template <typename T>
void causal_attention_forward(const T* q, const T* k, const T* v, const AttentionShape& s, T* o, T* lse) {
    const int64_t D = s.head_dim, H = s.n_heads;
    for_each_sequence_head(s, [&](int64_t b, int64_t h) {
        const HeadRows r = head_rows(s, b, h);
        const int64_t base = r.row0 * r.ld + r.col0;
        std::vector<T> P;  // (R, L) a tile's probabilities
        for (int64_t n0 = 0; n0 < s.seq_len; n0 += kQueryTile) {
            const int64_t R = std::min(kQueryTile, s.seq_len - n0), L = n0 + R;
            P.resize(static_cast<size_t>(R * L));
            gemm<T>(false, true, R, L, D, T(1), q + base + n0 * r.ld, r.ld, k + base, r.ld, T(0), P.data(), L);
            causal_softmax<T>(P.data(), n0, R, nullptr, H, lse + r.row0 * H + h);
            gemm<T>(false, false, R, D, L, T(1), P.data(), L, v + base, r.ld, T(0), o + base + n0 * r.ld, r.ld);
        }
    });
}

template <typename T>
void causal_attention_backward(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* d_o,
                               const AttentionShape& s, T* dq, T* dk, T* dv) {
    const int64_t D = s.head_dim, H = s.n_heads;
    for_each_sequence_head(s, [&](int64_t b, int64_t h) {
        const HeadRows r = head_rows(s, b, h);
        const int64_t base = r.row0 * r.ld + r.col0;
        for (int64_t t = 0; t < s.seq_len; ++t) {  // dk, dv gather every tile's share
            std::fill_n(dk + base + t * r.ld, D, T(0));
            std::fill_n(dv + base + t * r.ld, D, T(0));
        }
        std::vector<T> P, dS;  // (R, L) each
        for (int64_t n0 = 0; n0 < s.seq_len; n0 += kQueryTile) {
            const int64_t R = std::min(kQueryTile, s.seq_len - n0), L = n0 + R, tile = base + n0 * r.ld;
            P.resize(static_cast<size_t>(R * L));
            dS.resize(P.size());
            gemm<T>(false, true, R, L, D, T(1), q + tile, r.ld, k + base, r.ld, T(0), P.data(), L);
            causal_softmax<T>(P.data(), n0, R, lse + r.row0 * H + h, H, nullptr);
            // dP = d_o Vᵀ, then dS = P ⊙ (dP − D_n) with D_n = d_o_n·o_n (= Σ_m P_nm dP_nm).
            gemm<T>(false, true, R, L, D, T(1), d_o + tile, r.ld, v + base, r.ld, T(0), dS.data(), L);
            for (int64_t i = 0; i < R; ++i) {
                const T* on = o + tile + i * r.ld;
                const T* don = d_o + tile + i * r.ld;
                T Dn = 0;
                for (int64_t e = 0; e < D; ++e) Dn += don[e] * on[e];
                for (int64_t m = 0; m < L; ++m) dS[i * L + m] = P[i * L + m] * (dS[i * L + m] - Dn);
            }
            gemm<T>(true, false, L, D, R, T(1), P.data(), L, d_o + tile, r.ld, T(1), dv + base, r.ld);
            gemm<T>(false, false, R, D, L, T(1), dS.data(), L, k + base, r.ld, T(0), dq + tile, r.ld);
            gemm<T>(true, false, L, D, R, T(1), dS.data(), L, q + tile, r.ld, T(1), dk + base, r.ld);
        }
    });
}

#define RETNET_INSTANTIATE_CAUSAL_ATTENTION(T)                                                                 \
    template void causal_attention_forward<T>(const T*, const T*, const T*, const AttentionShape&, T*, T*);    \
    template void causal_attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*,     \
                                               const AttentionShape&, T*, T*, T*);

RETNET_INSTANTIATE_CAUSAL_ATTENTION(float)
RETNET_INSTANTIATE_CAUSAL_ATTENTION(double)

}  // namespace retnet::cpu
