// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Host launchers of the CUDA kernels. Every pointer is device memory (d_ prefix); every launcher
// enqueues work on `stream` and checks the launch. Shapes are written where each argument is
// declared. Layouts:
//   token-major  (T, H*D):  row t holds every head, head h at columns [h*D, (h+1)*D)
//   head-major   (H, Tp, D): what the retention kernels read; Tp >= T rows, rows [T, Tp) are zero
//                            padding (the chunkwise form pads to a whole number of chunks)
// The math of each family is in docs/spec.md §2 (torchscale) and §3 (fla).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace retnet::cuda {

// ---- elementwise / normalization -------------------------------------------------------------

// x[t] = scale * E[tokens[t]]                         E (V, d), x (T, d)
void launch_embedding(const int32_t* d_tokens, const float* d_embed, float* d_x, int T, int d,
                      float scale, cudaStream_t stream);

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w   (w may be null: no weight)   x, y (rows, cols)
void launch_rmsnorm(const float* d_x, const float* d_weight, float* d_y, int rows, int cols,
                    float eps, cudaStream_t stream);

// The same, rounded to bf16 as it is written (the input of bf16 GEMMs).   y (rows, cols)
void launch_rmsnorm_bf16(const float* d_x, const float* d_weight, __nv_bfloat16* d_y, int rows, int cols,
                         float eps, cudaStream_t stream);

// Rotates q or k at absolute positions pos0 + t and writes them head-major, multiplied by `scale`
// (the family's 1/sqrt(Dk) on k for torchscale, on q for fla). Interleaved pairs (2i, 2i+1) for
// torchscale, half-split pairs (i, i + Dk/2) for fla. The angle (pos * theta_i) is formed in
// float32 as both reference implementations do, and sin/cos are taken in double.
//   src (T, H*Dk) token-major, theta (Dk/2), dst (H, Tp, Dk) head-major (rows >= T zeroed)
void launch_rotary_to_head_major(const float* d_src, const float* d_theta, float* d_dst, int T,
                                 int Tp, int H, int Dk, int64_t pos0, float scale,
                                 bool interleaved, cudaStream_t stream);

// dst (H, Tp, D) head-major <- src (T, H*D) token-major; rows >= T zeroed.
void launch_to_head_major(const float* d_src, float* d_dst, int T, int Tp, int H, int D,
                          cudaStream_t stream);

// Per head: y = RMSNorm_Dv(o) * w ⊙ silu(g)   (w null: no weight; one w shared by heads)
//   o (H, Tp, Dv) head-major, g (T, H*Dv), y (T, H*Dv) token-major
void launch_head_norm_gate(const float* d_o, const float* d_g, const float* d_weight, float* d_y,
                           int T, int Tp, int H, int Dv, float eps, cudaStream_t stream);
// The same with y rounded to bf16 (the input of the next bf16 GEMM: launch_float_to_bf16's bits of the
// float result).
void launch_head_norm_gate(const float* d_o, const float* d_g, const float* d_weight, __nv_bfloat16* d_y,
                           int T, int Tp, int H, int Dv, float eps, cudaStream_t stream);

// h = act(a) ⊙ b, act = gelu (exact erf) or swish; a, b, h (n)
void launch_glu(const float* d_a, const float* d_b, float* d_h, int64_t n, bool gelu,
                cudaStream_t stream);
// The same with h rounded to bf16 (h must not overlap a or b).
void launch_glu(const float* d_a, const float* d_b, __nv_bfloat16* d_h, int64_t n, bool gelu,
                cudaStream_t stream);

// packed row r = the best `count` (≤ 256) of logits row r, packed as retnet/best_logits.h's
// pack_best_logits packs them (bit for bit).   logits (rows, V), packed (rows, 2·count + 3)
void launch_best_logits(const float* d_logits, int rows, int V, int count, float* d_packed, int64_t packed_width,
                        cudaStream_t stream);

// h (rows, width) in bf16 = act(a) ⊙ b, a and b the halves of each row of ab (rows `stride` floats
// apart: one GEMM's output of both weights), as launch_glu would round them; for the shapes that
// glu_rows_supports (width a multiple of 8, 16-byte-aligned rows).
bool glu_rows_supports(int width, int64_t stride, const float* d_ab, const __nv_bfloat16* d_h);
void launch_glu_rows(const float* d_ab, int64_t rows, int width, int64_t stride, __nv_bfloat16* d_h, bool gelu,
                     cudaStream_t stream);

void launch_float_to_bf16(const float* d_src, __nv_bfloat16* d_dst, int64_t n, cudaStream_t stream);

// ---- retention --------------------------------------------------------------------------------

// Parallel form, after scores = Q Kᵀ (H, T, T). In place: A[n,m] = γ^(n−m)·A[n,m]·row_scale[h,n]
// for m <= n, 0 above the diagonal. With abs_sum_cap > 0 (torchscale), each row is then divided
// by c_n = clamp(Σ_m |A[n,m]|, 1, abs_sum_cap). row_factor (H, T) receives the row's total
// multiplier of the decayed raw score (row_scale / c_n).
//   scores (H, T, T), log_decay (H), row_scale (H, T), row_factor (H, T)
void launch_parallel_decay_normalize(float* d_scores, const float* d_log_decay,
                                     const float* d_row_scale, float* d_row_factor, int H, int T,
                                     float abs_sum_cap, cudaStream_t stream);

// Chunkwise form, after scores = Q_c K_cᵀ per (sequence, head, chunk): (n_seqs*H*nC, C, C). In place:
// A[i,j] = γ^(i−j)·A[i,j] / (torchscale ? sqrt(ρ_i) : 1) for j <= i, 0 above; torchscale also
// writes a_i = clamp(Σ_j |A[i,j]|, 1) to row_abs (n_seqs*H, nC*C) (ignored for fla: may be null).
// The CUDA trainer's n_seqs = B sequences share the H decays.
void launch_chunk_decay_mask(float* d_scores, const float* d_log_decay, float* d_row_abs, int H,
                             int nC, int C, bool torchscale, cudaStream_t stream, int n_seqs = 1);

// dst[h, t] = src[h, t] * factor[h, t]      src, dst (H, Tp, D), factor (H, Tp)
void launch_scale_rows(const float* d_src, const float* d_factor, float* d_dst, int H, int Tp,
                       int D, cudaStream_t stream);

// S[h] *= factor[h]                          S (H, n_per_head)
void launch_scale_per_head(float* d_S, const float* d_factor, int H, int64_t n_per_head,
                           cudaStream_t stream);

// Chunk scan: on entry U[h, c] = the chunk's own contribution (Dk, Dv) and state[h] = raw S
// before the call; on exit U[h, c] = raw state before chunk c and state = raw state after the
// last chunk: state <- chunk_decay[h, c] * state + U[h, c].
//   U (H, nC, Dk, Dv), state (H, Dk, Dv), chunk_decay (H, nC)
void launch_chunk_state_scan(float* d_U, float* d_state, const float* d_chunk_decay, int H, int nC,
                             int64_t DkDv, cudaStream_t stream);

// The precision of the fused chunkwise passes' products (chunk_tiles.cuh), fp32 accumulation either
// way: TF32 (11 significant bits), which the inference backends use; bf16 (8), which the cuda-bf16
// trainer uses, whose projections and backward products round their operands to bf16 already.
enum class ChunkProducts { Tf32, Bf16 };
// The fused passes below read their matrix operands (In) in fp32, or with bf16 products in bf16: the
// CUDA trainer stores q, k, v, dO and the chunk states so, rounded once where the passes would round
// them as they stage them (docs/cuda.md: "bf16 storage"). Scores, outputs and S stay fp32. A bf16 In
// with TF32 products is refused.

// The same chunk states from K and V directly, in one pass with each state tile kept in
// tensor-core accumulators (chunk_states.cu), for the backends that round the retention products:
// U[h, c] = Σ_{t in chunk c} row_decay[h, t]·k_t v_tᵀ with K·row_decay and V rounded to `products`'
// precision and fp32 accumulation, then the scan above: states[h, c] = S before chunk c, S after the
// last. Replaces launch_scale_rows + a batched K_cᵀ V_c GEMM + launch_chunk_state_scan.
//   k (H, Tp, Dk), v (H, Tp, Dv), row_decay (H, Tp), Tp = nC·C; chunk_decay (H, nC);
//   S (H, Dk, Dv) in/out; states (H, nC, Dk, Dv)
// ChunkWalk::Backward walks the chunks from the last to the first: states[h, c] = S after chunk c
// (before the walk reaches it), then S ← chunk_decay[h, c]·S + U[h, c]. With k = Q, v = dO,
// row_decay = γ^(i+1) and S = 0 that is the trainer's backward scan: states[h, c] = ∂loss/∂(state
// after chunk c), the G_c of launch_chunk_gradient, without writing the per-chunk terms first.
enum class ChunkWalk { Forward, Backward };
template <typename In>  // float or __nv_bfloat16: k, v and states
void launch_chunk_states(const In* d_k, const In* d_v, const float* d_row_decay, const float* d_chunk_decay, float* d_S,
                         In* d_states, int H, int nC, int C, int Dk, int Dv, ChunkProducts products, cudaStream_t stream,
                         ChunkWalk walk = ChunkWalk::Forward);

// fla's chunkwise output from the chunk states in two passes (chunk_output.cu), products in
// `products`' precision with fp32 accumulation: o_t = Σ_{s ≤ t in t's chunk} (q_t·k_s)·γ^(t−s)·v_s +
// γ^(i+1)·q_t S_c, i = t mod C, S_c = states[h, c] the state before t's chunk, γ = exp(log_decay[h mod
// decay_heads]) (the trainer's B sequences share the H decays). Chunks of at most 64, at most 65535 of
// them (chunk_output_supports: a grid dimension).
// The scores pass: scores[h, c] (C, chunk_scores_ld(C)) = (Q_c K_cᵀ) ⊙ D, D(t, s) = γ^(t−s) for
// s ≤ t, else 0, rounded to the products' precision; padding columns zero. Once per chunk, not once
// per column tile of the output. The output pass: scores · V_c + diag(γ^(i+1)) Q_c S_c.
//   q, k (H, Tp, Dk), v (H, Tp, Dv), Tp = nC·C; states (H, nC, Dk, Dv); log_decay (decay_heads);
//   scores (H, nC, C, chunk_scores_ld(C)); o: ChunkDestination below
bool chunk_output_supports(int C, int n_chunks);
int chunk_scores_ld(int C);
// Where the output pass writes o: head-major (H, Tp, Dv) in fp32, as the inference backends keep it,
// or the rows (H / heads_per_row sequences, T, heads_per_row, Dv) that the output projection reads, in
// fp32 or bf16, the padding rows past T not written (the trainer's o: no layout kernel after the pass).
struct ChunkDestination {
    void* data = nullptr;
    bool bf16 = false;
    int heads_per_row = 0;  // 0: head-major
    int T = 0;              // the rows layout's rows per sequence, 0 < T ≤ Tp
    static ChunkDestination head_major(float* o) { return {o, false, 0, 0}; }
    static ChunkDestination rows(float* o, int heads_per_row, int T) { return {o, false, heads_per_row, T}; }
    static ChunkDestination rows(__nv_bfloat16* o, int heads_per_row, int T) { return {o, true, heads_per_row, T}; }
};
template <typename In>  // q, k
void launch_chunk_scores(const In* d_q, const In* d_k, const float* d_log_decay, int decay_heads, float* d_scores, int H,
                         int nC, int C, int Dk, ChunkProducts products, cudaStream_t stream);
template <typename In>  // q, v, states
void launch_chunk_output(const In* d_q, const float* d_scores, const In* d_v, const In* d_states,
                         const float* d_log_decay, int decay_heads, ChunkDestination o, int H, int nC, int C, int Dk,
                         int Dv, ChunkProducts products, cudaStream_t stream);

// The chunkwise backward's dQ, dK and dV, each by one pass of the output pass's shape (chunk_output.cu),
// written once, products in `products`' precision with fp32 accumulation. Per head and chunk c:
//   out_c = diag(r_t) X_c M_c + Â_c Y_c,   t = row within the chunk,
//   DQ: dQ_c = dA_c K_c  + diag(γ^(t+1))   dO_c S_cᵀ   x = dO, m = states, scores = dA, y = K;  Dr = Dv, Dout = Dk
//   DK: dK_c = dA_cᵀ Q_c + diag(γ^(C−1−t)) V_c  G_cᵀ   x = V,  m = after,  scores = dA, y = Q;  Dr = Dv, Dout = Dk
//   DV: dV_c = A_cᵀ dO_c + diag(γ^(C−1−t)) K_c  G_c    x = K,  m = after,  scores = A,  y = dO; Dr = Dk, Dout = Dv
// with S_c = states[h, c] the state before chunk c (launch_chunk_states), G_c = after[h, c] =
// ∂loss/∂(state after chunk c) (launch_chunk_states walked backwards), A = launch_chunk_scores(Q, K) and
// dA = (dO Vᵀ) ⊙ D = launch_chunk_scores(q = dO, k = V, Dk = Dv), γ = exp(log_decay[h mod decay_heads]).
// The same shapes as launch_chunk_output (chunk_output_supports); the transposes are read in place.
//   x (H, Tp, Dr), y, out (H, Tp, Dout), Tp = nC·C; m (H, nC, Dk, Dv); log_decay (decay_heads);
//   scores (H, nC, C, chunk_scores_ld(C))
enum class ChunkGradient { DQ, DK, DV };
template <typename In>  // x, m, y
void launch_chunk_gradient(ChunkGradient which, const In* d_x, const In* d_m, const float* d_scores, const In* d_y,
                           const float* d_log_decay, int decay_heads, float* d_out, int H, int nC, int C, int Dr,
                           int Dout, ChunkProducts products, cudaStream_t stream);

// The scan's transpose (the trainer's backward, from zero after the last chunk), in place: on entry
// G[h, c] = ∂loss/∂(state before chunk c) through chunk c's outputs; on exit the same buffer holds
// after[h, c] = ∂loss/∂(state after chunk c): after[h, nC−1] = 0, after[h, c−1] = G[h, c] +
// chunk_decay[h, c]·after[h, c].
//   G_then_after (H, nC, Dk, Dv), chunk_decay (H, nC)
void launch_chunk_state_scan_backward(float* d_G_then_after, const float* d_chunk_decay, int H, int nC, int64_t DkDv,
                                      cudaStream_t stream);

// torchscale s_c = clamp(max_v Σ_k |state_c[k, v]| / S_B, 1) per (head, chunk).
//   states (H, nC, Dk, Dv), out (H, nC)
void launch_chunk_state_abs_max(const float* d_states, float* d_out, int H, int nC, int Dk, int Dv,
                                float inv_SB, cudaStream_t stream);

// Chunkwise output: o = inner + γ^(i+1)·cross (fla) or
// o = (inner + γ^(i+1)/sqrt(ρ_i)·cross) / max(a_t, s_c) (torchscale), i = t mod C.
// row_factor (H, Tp) receives the multiplier of the decayed raw score of row t.
//   inner, cross, o (H, Tp, Dv); row_abs (H, Tp); state_abs (H, nC)
void launch_chunk_combine(const float* d_inner, const float* d_cross, const float* d_log_decay,
                          const float* d_row_abs, const float* d_state_abs, float* d_o,
                          float* d_row_factor, int H, int Tp, int C, int Dv, bool torchscale,
                          cudaStream_t stream);

// o[h, t] += coef[h, t] * cross[h, t]        o, cross (H, Tp, Dv), coef (H, Tp)
void launch_add_scaled_rows(float* d_o, const float* d_cross, const float* d_coef, int H, int Tp,
                            int Dv, cudaStream_t stream);

// The recurrent form, fused over T steps in one launch, state kept on chip in fp32:
//   S_t = a[t,h]·S_{t−1} + b[t,h]·k_t v_tᵀ;  o_t = q_tᵀ S_t
// q, k (H, Tp, Dk), v, o (H, Tp, Dv), S (H, Dk, Dv) in/out, a, b (T, H).
// o may be null (state only). norms_sq (T, H), if not null, receives ‖S_t‖_F² (it must be zeroed).
void launch_recurrent_scan(const float* d_q, const float* d_k, const float* d_v, float* d_S,
                           const float* d_a, const float* d_b, float* d_o, float* d_norms_sq,
                           int H, int T, int Tp, int Dk, int Dv, cudaStream_t stream);

// ‖S[h]‖_F² for every head: S (H, Dk*Dv), out (H)
void launch_state_norm_sq(const float* d_S, float* d_out, int H, int64_t n_per_head,
                          cudaStream_t stream);

// Introspection: out[hi, n, m] = γ^(n−m)·(q_n·k_m)·row_factor[h, n] for m <= n (0 above), for
// heads h = head_begin + hi, hi < n_heads_out.  q, k (H, Tp, Dk); row_factor (H, Tp);
// out (n_heads_out, T, T)
void launch_retention_scores(const float* d_q, const float* d_k, const float* d_log_decay,
                             const float* d_row_factor, float* d_out, int head_begin,
                             int n_heads_out, int T, int Tp, int Dk, cudaStream_t stream);

// ---- GEMM (cuBLAS; row-major views) ------------------------------------------------------------

}  // namespace retnet::cuda
