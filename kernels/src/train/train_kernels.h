// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Host launchers of the training kernels (forward with the values the backward needs, and the
// backward). Every pointer is device memory; every launcher enqueues on `stream` and checks the
// launch. Layouts, as in ../ops.h:
//   rows        (N, H*D), N = B·T: row b·T + t holds every head, head h at columns [h*D, (h+1)*D)
//   head-major  (B·H, Tp, D): sequence b, head h at matrix b·H + h; Tp = n_chunks·C ≥ T, rows
//               [T, Tp) are zero padding so every chunk has C rows
// "Accumulates" means +=, "writes" means =.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace retnet::cuda::train_kernels {

// Sums that many threads feed (embedding and norm-weight gradients, the gradient norm) are taken
// in two stages, partial sums of fixed index ranges and then their sum in index order, so a
// training step is bit-reproducible; the callers own the partials' scratch.

// x[r] = E[tokens[r]]                                     E (V, d), x (N, d)
void embedding_forward(const int32_t* tokens, const float* embed, float* x, int64_t rows, int d,
                       cudaStream_t stream);

// The batch's rows grouped by token, for the embedding gradient (built on the host per batch):
// rows sorted by token, then by position, cut into segments of at most kEmbeddingSegmentRows rows
// that each belong to one token.
constexpr int kEmbeddingSegmentRows = 64;
struct TokenRowGroups {
    std::vector<int32_t> rows;           // (N) row indices, token-major
    std::vector<int32_t> segment_start;  // (n_segments + 1) into rows; the last is N
    std::vector<int32_t> token_segment;  // (V + 1) token v owns segments [token_segment[v], token_segment[v+1])
};
// Throws Error for a token outside [0, vocab).
TokenRowGroups group_rows_by_token(const int32_t* tokens, int64_t n, int vocab,
                                   int max_segment_rows = kEmbeddingSegmentRows);
// At most this many segments for `rows` rows (the size of embedding_backward's partials).
int64_t max_token_segments(int64_t rows, int vocab);
struct DeviceTokenRowGroups {  // TokenRowGroups uploaded
    const int32_t* rows;
    const int32_t* segment_start;
    const int32_t* token_segment;
    int64_t n_segments;
    int vocab;
};
// dE[v] += Σ of dx over the rows holding token v: each segment's rows in order into partial
// (n_segments, d), then each token's segments in order.
void embedding_backward(const DeviceTokenRowGroups& groups, const float* dx, float* partial, float* d_embed, int d,
                        cudaStream_t stream);

// out[i] += Σ_p partials[p][i] for partials (n_parts, cols).
void sum_partials(const float* partials, int64_t n_parts, int cols, float* out, cudaStream_t stream);

// y = x · rstd · w per row; writes rstd (N).
void rmsnorm_forward(const float* x, const float* w, int64_t rows, int dim, float eps, float* y,
                     float* rstd, cudaStream_t stream);
// Accumulates dx (N, dim) and dw (dim); dw_partials is scratch of (rmsnorm_backward_parts(rows), dim).
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t rows,
                      int dim, float* dx, float* dw, float* dw_partials, cudaStream_t stream);
int64_t rmsnorm_backward_parts(int64_t rows);

// fla half-split rotary. cos_sin (T, Dk/2, 2) = (cos, sin) of t·θ_i.
// Forward: src rows (B·T, H·Dk) → dst head-major (B·H, Tp, Dk), rotated by +angle, times scale.
void rotary_rows_to_heads(const float* src, const float* cos_sin, float* dst, int B, int T, int Tp,
                          int H, int Dk, float scale, cudaStream_t stream);
// Backward (the transpose): src head-major → dst rows, rotated by −angle, times scale.
void rotary_heads_to_rows_transposed(const float* src, const float* cos_sin, float* dst, int B, int T,
                                     int Tp, int H, int Dk, float scale, cudaStream_t stream);

// Layout changes: rows (B·T, H·D) ↔ head-major (B·H, Tp, D) (padding rows written as zeros).
void rows_to_heads(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream);
void heads_to_rows(const float* src, float* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream);

// Chunked retention helpers. Matrices are indexed m = (b·H + h)·n_chunks + c. decay (H, C + 1)
// holds γ_h^k for k = 0..C.
// A (n_mats, C, C) ← A ⊙ D, D_ij = γ_h^(i−j) for j ≤ i, 0 above the diagonal.
void apply_decay_mask(float* A, const float* decay, int n_mats, int n_chunks, int H, int C,
                      cudaStream_t stream);
enum class RowDecay { Head /* γ^(i+1) */, Tail /* γ^(C−1−i) */ };
// dst (n_mats, C, D) = diag(γ_h^f(i)) src, per chunk matrix.
void scale_chunk_rows(const float* src, float* dst, const float* decay, int n_mats, int n_chunks, int H,
                      int C, int D, RowDecay which, cudaStream_t stream);
// states (B·H, n_chunks, E): states[0] = 0, states[c] = γ^C states[c−1] + contrib[c−1].
void state_scan_forward(const float* contrib, float* states, const float* decay, int BH, int n_chunks,
                        int H, int C, int E, cudaStream_t stream);
// after (B·H, n_chunks, E): after[n−1] = 0, after[c−1] = contrib[c] + γ^C after[c]
// (∂loss/∂(state after chunk c) from contrib[c] = ∂loss/∂(state before chunk c) via the outputs).
void state_scan_backward(const float* contrib, float* after, const float* decay, int BH, int n_chunks,
                         int H, int C, int E, cudaStream_t stream);

// fla output gate, per head of Dv columns: y = o·rstd·w ⊙ silu(g); writes rstd (N, H). w may be null.
void head_norm_gate_forward(const float* o, const float* g, const float* w, int64_t rows, int H, int Dv,
                            float eps, float* y, float* rstd, cudaStream_t stream);
// Writes d_o and dg; accumulates dw (Dv) when w is not null, through dw_partials, scratch of
// (head_norm_gate_backward_parts(rows, H), Dv).
void head_norm_gate_backward(const float* o, const float* g, const float* w, const float* rstd,
                             const float* dy, int64_t rows, int H, int Dv, float* d_o, float* dg,
                             float* dw, float* dw_partials, cudaStream_t stream);
int64_t head_norm_gate_backward_parts(int64_t rows, int H);

// h = silu(a) ⊙ b; backward writes da, db.
void swiglu_forward(const float* a, const float* b, int64_t n, float* h, cudaStream_t stream);
void swiglu_backward(const float* a, const float* b, const float* dh, int64_t n, float* da, float* db,
                     cudaStream_t stream);

// Per row: loss[r] = logsumexp(logits[r]) − logits[r][target]. With `with_gradient` the logits are
// overwritten by their gradient (softmax − onehot) · grad_scale.
void cross_entropy(float* logits, const int32_t* targets, int64_t rows, int vocab, float* loss,
                   bool with_gradient, float grad_scale, cudaStream_t stream);

// Dropout of one site (retnet/dropout_mask.h): element i's factor is 0 when
// train::dropout_drops(base, i, p), else scale = float(1/(1 − p)), as the CPU trainer's float masks.
struct DropoutSite {
    double p;
    uint64_t base;  // train::dropout_site_base(seed, site)
    float scale;
};
// out = residual + branch ⊙ keep (out may alias residual).
void dropout_residual_add(const float* residual, const float* branch, float* out, int64_t n, const DropoutSite& site,
                          cudaStream_t stream);
// out = in ⊙ keep (out may alias in).
void dropout_scale(const float* in, float* out, int64_t n, const DropoutSite& site, cudaStream_t stream);

// *sum_sq (one double) = Σ g²; partials is scratch of kSumOfSquaresPartials doubles.
constexpr int kSumOfSquaresPartials = 1024;
void sum_of_squares(const float* g, int64_t n, double* partials, double* sum_sq, cudaStream_t stream);
// g *= max_norm / (√sum_sq + 1e-12) when max_norm > 0 and √sum_sq > max_norm (read on the device).
void clip_by_norm(float* g, int64_t n, const double* sum_sq, double max_norm, cudaStream_t stream);

struct AdamWScalars {
    float beta1, beta2, eps;
    float decay;          // lr · weight_decay, applied where decays[i] != 0
    float step_size;      // lr / (1 − β1^t)
    float inv_sqrt_bc2;   // 1 / √(1 − β2^t)
};
void adamw(float* params, const float* grad, float* m, float* v, const uint8_t* decays, int64_t n,
           const AdamWScalars& s, cudaStream_t stream);
// average += (1 − keep)·(params − average)
void update_average(float* average, const float* params, int64_t n, float keep, cudaStream_t stream);

}  // namespace retnet::cuda::train_kernels
