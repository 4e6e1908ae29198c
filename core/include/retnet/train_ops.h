// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The differentiable operations of the fla RetNet, forward and backward, for training.
// Each op is a template instantiated for float (the trainer, BLAS-backed) and double (the
// gradient checks against finite differences use the very same code in double precision).
//
// Conventions: matrices are row-major; "rows" is the number of token positions N = B·T.
// Backward functions ACCUMULATE (+=) into weight gradients. For input gradients each function
// says whether it overwrites or accumulates.
#include <cstdint>

namespace retnet::train::ops {

// C (M, N) = alpha · op(A) · op(B) + beta · C, row-major, through cblas_{s,d}gemm.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// y (rows, out) = x (rows, in) · Wᵀ, W (out, in).
template <typename T>
void linear_forward(const T* x, const T* W, int64_t rows, int64_t in, int64_t out, T* y);
// dx (rows, in) = dy · W, overwritten when accumulate_dx is false, else added; dW (out, in) += dyᵀ · x.
template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, int64_t rows, int64_t in, int64_t out,
                     T* dx, bool accumulate_dx, T* dW);

// y = x · rsqrt(mean(x²) + eps) · w per row; rstd (rows) is kept for the backward.
template <typename T>
void rmsnorm_forward(const T* x, const T* w, int64_t rows, int64_t dim, double eps, T* y, T* rstd);
// dx += ∂L/∂x; dw (dim) += ∂L/∂w.
template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, int64_t rows,
                      int64_t dim, T* dx, T* dw);

// fla's half-split ("rotate_half") rotary on x (B·T, H·Dk) in place, position = t within the
// sequence, then multiplied by `scale`. The backward (rotation by −angle, times scale) is the
// transpose, also in place on the gradient.
template <typename T>
void rotary_forward(T* x, int64_t batch, int64_t seq_len, int64_t n_heads, int64_t head_dim,
                    const float* theta, double scale);
template <typename T>
void rotary_backward(T* dx, int64_t batch, int64_t seq_len, int64_t n_heads, int64_t head_dim,
                     const float* theta, double scale);

// o_n = Σ_{m≤n} γ_h^(n−m) (q_n·k_m) v_m per sequence and head. q, k (B·T, H·Dk); v, o (B·T, H·Dv).
// The parallel form builds the (T, T) score matrix; the chunkwise form carries a (Dk, Dv) state
// across chunks of `chunk` tokens: same math, O(T·C) memory.
struct RetentionShape {
    int64_t batch, seq_len, n_heads, head_dim_k, head_dim_v;
};
template <typename T>
void retention_forward(const T* q, const T* k, const T* v, const RetentionShape& shape,
                       const float* log_decay, int chunk, T* o);
// dq, dk, dv are overwritten. chunk = 0 selects the parallel form.
template <typename T>
void retention_backward(const T* q, const T* k, const T* v, const T* d_o,
                        const RetentionShape& shape, const float* log_decay, int chunk, T* dq,
                        T* dk, T* dv);

// fla's output: y = RMSNorm_head(o) · w ⊙ silu(g), per head of Dv columns, w (Dv) shared by heads
// (w = nullptr: no weight). rstd (rows, H) is kept for the backward.
template <typename T>
void head_norm_gate_forward(const T* o, const T* g, const T* w, int64_t rows, int64_t n_heads,
                            int64_t head_dim, double eps, T* y, T* rstd);
// d_o, dg are overwritten; dw (Dv) += (when w is not null).
template <typename T>
void head_norm_gate_backward(const T* o, const T* g, const T* w, const T* rstd, const T* dy,
                             int64_t rows, int64_t n_heads, int64_t head_dim, T* d_o, T* dg,
                             T* dw);

// h = silu(a) ⊙ b (n elements); backward overwrites da and db.
template <typename T>
void swiglu_forward(const T* a, const T* b, int64_t n, T* h);
template <typename T>
void swiglu_backward(const T* a, const T* b, const T* dh, int64_t n, T* da, T* db);

// Mean over rows of −log softmax(logits)[target]. Returns the SUM of the per-row losses (in double)
// so callers can average over any number of rows; dlogits (when not null) = (softmax − onehot) · grad_scale.
template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                     T* dlogits, double grad_scale);

// Sets how many threads the element-wise ops and the per-(sequence, head) retention use
// (0 = hardware concurrency). BLAS keeps its own thread count.
void set_num_threads(int n);
int num_threads();

}  // namespace retnet::train::ops
