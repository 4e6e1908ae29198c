// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The CPU op library: each operation of the RetNet layer once, its forward (optionally keeping
// what the backward needs) beside its backward. The fast CPU inference backend calls the
// forwards (in float); the CPU trainer calls both (float), and the gradient checks run the very
// same code in double against finite differences.
//
// Conventions: matrices are row-major; "rows" is the number of token positions (B·T for a batch).
// Backward functions ACCUMULATE (+=) into weight gradients. For input gradients each function
// says whether it overwrites or accumulates. Element-wise loops run on cpu::num_threads()
// threads in a split that depends only on the sizes, so results are bit-identical run after run.
#include <cmath>
#include <cstdint>

#include "retnet/config.h"
#include "retnet/family_rules.h"

namespace retnet::cpu {

// Sets how many threads the element-wise ops and the per-(sequence, head) retention use
// (0 = hardware concurrency). BLAS keeps its own thread count.
void set_num_threads(int n);
// OpenBLAS's threads, held at one under a ulimit -v (hold_blas_threads_for_address_limit in
// memory_limit.h), raised to blas_threads_that_fit(); nothing when they were not held. Under such a
// cap it also limits malloc to two arenas (glibc reserves 64 MiB of address space for each).
void fit_blas_threads_to_address_limit();
int num_threads();

// C (M, N) = alpha · op(A) · op(B) + beta · C, row-major, through cblas_{s,d}gemm.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// C (M, N) = A (M, K) · Bᵀ (+ C when accumulate), with B (N, K) held as bfloat16 and every sum in
// float32. Few rows (decode) stream B once through a dot kernel (AVX2/FMA where the CPU has it);
// many rows (prefill) widen B a tile at a time into a float32 buffer for sgemm.
void gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* B, float* C,
               int64_t ldc, bool accumulate);

// ---- linear ----------------------------------------------------------------------------------

// y (rows, out) = x (rows, in) · Wᵀ, W (out, in).
template <typename T>
void linear_forward(const T* x, const T* W, int64_t rows, int64_t in, int64_t out, T* y);
// dx (rows, in) = dy · W, overwritten when accumulate_dx is false, else added (dx null: skipped);
// dW (out, in) += dyᵀ · x.
template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, int64_t rows, int64_t in, int64_t out, T* dx,
                     bool accumulate_dx, T* dW);

// ---- RMSNorm ---------------------------------------------------------------------------------

// y = x · rsqrt(mean(x²) + eps) · w per row (w null: no weight; y may be x). rstd (rows), when
// not null, keeps the factor for the backward.
template <typename T>
void rmsnorm_forward(const T* x, const T* w, int64_t rows, int64_t dim, double eps, T* y, T* rstd);
// dx += ∂L/∂x; dw (dim) += ∂L/∂w (when not null).
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, int64_t rows, int64_t dim, T* dx,
                      T* dw);

// ---- rotary ----------------------------------------------------------------------------------

using retnet::RotaryPairs;  // the family's rule (retnet/family_rules.h)
using retnet::rotary_pairs;
using retnet::rotary_angle;

// Rotates pair i of one head vector x (Dk coordinates, Dk/2 pairs) by the angle of cosine c and
// sine s: (a, b) ← (a·c − b·s, b·c + a·s). With −s it is the transpose (the backward).
template <typename T>
inline void rotate_pair(T* x, int64_t i, int64_t half, RotaryPairs pairs, T c, T s) {
    const int64_t ia = pairs == RotaryPairs::Interleaved ? 2 * i : i;
    const int64_t ib = pairs == RotaryPairs::Interleaved ? 2 * i + 1 : i + half;
    const T a = x[ia], b = x[ib];
    x[ia] = a * c - b * s;
    x[ib] = b * c + a * s;
}

// x (B·T, H·Dk) in place: every head vector is multiplied by `scale`, then rotated by the angles
// of its position pos0 + t (t within the sequence). theta (Dk/2). The backward is the transpose:
// rotation by −angle, then the scale, in place on the gradient.
struct RotaryShape {
    int64_t batch, seq_len, n_heads, head_dim;
};
template <typename T>
void rotary_forward(T* x, const RotaryShape& shape, const float* theta, RotaryPairs pairs, double scale,
                    int64_t pos0 = 0);
template <typename T>
void rotary_backward(T* dx, const RotaryShape& shape, const float* theta, RotaryPairs pairs, double scale,
                     int64_t pos0 = 0);

// ---- activations and the gated linear unit ---------------------------------------------------

template <typename T>
inline T silu(T x) {
    return x / (T(1) + std::exp(-x));
}
template <typename T>
inline T silu_grad(T x) {
    const T s = T(1) / (T(1) + std::exp(-x));
    return s * (T(1) + x * (T(1) - s));
}
// Exact (erf) GELU.
template <typename T>
inline T gelu(T x) {
    return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752)));
}
template <typename T>
inline T gelu_grad(T x) {
    return T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752))) +
           x * std::exp(T(-0.5) * x * x) * T(0.39894228040143268);  // 1/√(2π)
}

// h = act(a) ⊙ b (n elements; h may be a), act = swish (silu) or gelu. The backward overwrites
// da and db.
template <typename T>
void glu_forward(const T* a, const T* b, int64_t n, Activation act, T* h);
template <typename T>
void glu_backward(const T* a, const T* b, const T* dh, int64_t n, Activation act, T* da, T* db);

// ---- fla's output: per-head RMSNorm and the swish gate ---------------------------------------

// y = RMSNorm_head(o) · w ⊙ silu(g), per head of Dv columns of o, g, y (rows, H·Dv); w (Dv) is
// shared by the heads (null: no weight); y may be o. rstd (rows, H), when not null, is kept for
// the backward.
template <typename T>
void head_norm_gate_forward(const T* o, const T* g, const T* w, int64_t rows, int64_t n_heads, int64_t head_dim,
                            double eps, T* y, T* rstd);
// d_o, dg are overwritten; dw (Dv) += (when w is not null).
template <typename T>
void head_norm_gate_backward(const T* o, const T* g, const T* w, const T* rstd, const T* dy, int64_t rows,
                             int64_t n_heads, int64_t head_dim, T* d_o, T* dg, T* dw);

// ---- retention (fla: no normalization), forward and backward ----------------------------------

// o_n = Σ_{m≤n} γ_h^(n−m) (q_n·k_m) v_m per sequence and head. q, k (B·T, H·Dk); v, o (B·T, H·Dv).
// The parallel form builds the (T, T) score matrix; the chunkwise form carries a (Dk, Dv) state
// across chunks of `chunk` tokens: same math, O(T·C) memory.
struct RetentionShape {
    int64_t batch, seq_len, n_heads, head_dim_k, head_dim_v;
};
template <typename T>
void retention_forward(const T* q, const T* k, const T* v, const RetentionShape& shape, const float* log_decay,
                       int chunk, T* o);
// dq, dk, dv are overwritten. chunk = 0 selects the parallel form.
template <typename T>
void retention_backward(const T* q, const T* k, const T* v, const T* d_o, const RetentionShape& shape,
                        const float* log_decay, int chunk, T* dq, T* dk, T* dv);

// ---- the Transformer twin's causal softmax attention (training), forward and backward -----------

// o_n = Σ_{m≤n} softmax_m(q_n·k_m) v_m per sequence and head, q already carrying 1/√D; q, k, v, o
// (B·T, H·D). lse (B·T, H) = log Σ_{m≤n} exp(q_n·k_m) is kept for the backward. Query rows go in
// tiles, so the scratch is O(tile·T) per thread and the keys above a tile's diagonal are skipped.
struct AttentionShape {
    int64_t batch, seq_len, n_heads, head_dim;
};
template <typename T>
void causal_attention_forward(const T* q, const T* k, const T* v, const AttentionShape& shape, T* o, T* lse);
// dq, dk, dv (overwritten) of Σ o·d_o: FlashAttention-2's backward, P recomputed from lse and
// D_n = d_o_n·o_n, so dS = P ⊙ (d_o Vᵀ − D), dq = dS K, dk = dSᵀ q, dv = Pᵀ d_o.
template <typename T>
void causal_attention_backward(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* d_o,
                               const AttentionShape& shape, T* dq, T* dk, T* dv);

// ---- loss ------------------------------------------------------------------------------------

// −log softmax(logits)[target] per row, summed (in double) so callers can average over any
// number of rows; dlogits (when not null) = (softmax − onehot) · grad_scale.
template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab, T* dlogits,
                     double grad_scale);

}  // namespace retnet::cpu
