// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The layer's element-wise ops on the GPU, each one kernel with its backward beside it, shared by
// the inference backend (through the launch_* calls of ops.h) and the CUDA trainer:
//   embedding.cu   embedding gather (× scale) and its scatter-add gradient
//   norms.cu       RMSNorm, fla's per-head RMSNorm + swish gate, and the fixed-order column sums
//                  of their weight gradients
//   rotary.cu      rotary (both pair layouts) into head-major, its transpose, layout changes
//   glu.cu         GLU (swish or gelu) and its gradient
// Every pointer is device memory; every launcher enqueues on `stream` and checks the launch.
// Layouts:
//   rows        (N, H*D), N = B·T: row b·T + t holds every head, head h at columns [h*D, (h+1)*D)
//   head-major  (B·H, Tp, D): sequence b, head h at matrix b·H + h; Tp ≥ T, rows [T, Tp) are zero
//               padding (the chunkwise form pads to whole chunks)
// Row reductions (norms) accumulate in double: the kernels are memory-bound, and the wider sum
// keeps them at float rounding of the double reference. Sums that many threads feed (weight
// gradients) are taken in two stages of fixed order, never with atomics, so a training step is
// bit-reproducible; the callers own the partials' scratch.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace retnet::cuda::layer_kernels {

// ---- embedding (embedding.cu) ------------------------------------------------------------------

// x[r] = scale · E[tokens[r]]                              E (V, d), x (N, d)
void embedding_forward(const int32_t* tokens, const float* embed, float* x, int64_t rows, int d, float scale,
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
// dE[v] += Σ of dx over the rows holding token v (scale 1): each segment's rows in order into
// partial (n_segments, d), then each token's segments in order.
void embedding_backward(const DeviceTokenRowGroups& groups, const float* dx, float* partial, float* d_embed, int d,
                        cudaStream_t stream);

// ---- norms (norms.cu) --------------------------------------------------------------------------

// y = x · rstd · w per row (w null: no weight; y may be x); writes rstd (N) when not null. Out:
// float, or bf16 (the float result rounded, for a bf16 GEMM: launch_float_to_bf16's bits).
template <typename Out>
void rmsnorm_forward(const float* x, const float* w, int64_t rows, int dim, float eps, Out* y, float* rstd,
                     cudaStream_t stream);
// Accumulates dx (N, dim) and dw (dim, when not null); dw_partials is scratch of
// (rmsnorm_backward_parts(rows), dim).
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, int64_t rows, int dim,
                      float* dx, float* dw, float* dw_partials, cudaStream_t stream);
int64_t rmsnorm_backward_parts(int64_t rows);

// Where o, the retention output, lies for the head norm: rows (N, H·Dv) when heads_T is 0, else
// head-major (B·H, heads_Tp, Dv) with heads_T rows per sequence (N = B·heads_T).
struct HeadNormInput {
    const float* o;
    int heads_T = 0, heads_Tp = 0;
};
// fla output gate, per head of Dv columns: y = o·rstd·w ⊙ silu(g); g, y rows (N, H·Dv); writes
// rstd (N, H) when not null. w may be null (no weight; one w shared by the heads).
void head_norm_gate_forward(const HeadNormInput& o, const float* g, const float* w, int64_t rows, int H, int Dv,
                            float eps, float* y, float* rstd, cudaStream_t stream);
// The same from o and g rows in bf16 (the cuda-bf16 trainer keeps them so), widened to float; y
// (Out) float, or bf16 rounded from the float result.
template <typename Out>
void head_norm_gate_forward(const __nv_bfloat16* o, const __nv_bfloat16* g, const float* w, int64_t rows, int H,
                            int Dv, float eps, Out* y, float* rstd, cudaStream_t stream);
// o rows; In float or bf16, as the forward. Writes d_o and dg (DG: float, or bf16 from a bf16 In);
// accumulates dw (Dv) when w is not null, through dw_partials, scratch of
// (head_norm_gate_backward_parts(rows, H), Dv).
template <typename In, typename DG>
void head_norm_gate_backward(const In* o, const In* g, const float* w, const float* rstd, const float* dy,
                             int64_t rows, int H, int Dv, float* d_o, DG* dg, float* dw, float* dw_partials,
                             cudaStream_t stream);
int64_t head_norm_gate_backward_parts(int64_t rows, int H);

// out[i] += Σ_p partials[p][i] for partials (n_parts, cols), in a fixed order.
void sum_partials(const float* partials, int64_t n_parts, int cols, float* out, cudaStream_t stream);

// ---- rotary and layouts (rotary.cu) ------------------------------------------------------------

struct RotaryArgs {
    const float* theta;  // (Dk/2) frequencies
    int64_t pos0;        // position of row t = 0 of every sequence
    float scale;         // multiplies the rotated vectors (the family's 1/√Dk, or 1)
    bool interleaved;    // pairs (2i, 2i+1) (torchscale), else (i, i + Dk/2) (fla)
};
// Rotates src rows (B·T, H·Dk) at positions pos0 + t into dst head-major (B·H, Tp, Dk), times
// scale. The angle (pos·θ_i) is formed in float32 as both reference implementations do; sin and
// cos and the rotation are taken in double. Out: float, or bf16 (rounded from the float result).
template <typename Out>
void rotary_forward(const float* src, Out* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                    cudaStream_t stream);
// The transpose: src head-major → dst rows, rotated by −angle, times scale. Out: float, or bf16
// (rounded from the float rows, for a bf16 GEMM).
template <typename Out>
void rotary_backward(const float* src, Out* dst, int B, int T, int Tp, int H, int Dk, const RotaryArgs& args,
                     cudaStream_t stream);

// Layout changes: rows (B·T, H·D) ↔ head-major (B·H, Tp, D) (padding rows written as zeros).
template <typename Out>  // float, or bf16 as rotary_forward
void rows_to_heads(const float* src, Out* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream);
template <typename Out>  // float, or bf16 as rotary_backward
void heads_to_rows(const float* src, Out* dst, int B, int T, int Tp, int H, int D, cudaStream_t stream);

// ---- GLU (glu.cu) ------------------------------------------------------------------------------

// h = act(a) ⊙ b, act = gelu (exact erf) or swish (silu); a, b, h (n); h may be a. In: float, or bf16 (the
// cuda-bf16 trainer's kept a and b), widened to float. Out: float, or (from bf16 In) bf16 rounded from
// the float result.
template <typename In, typename Out>
void glu_forward(const In* a, const In* b, int64_t n, bool gelu, Out* h, cudaStream_t stream);
// Writes da, db (Out as glu_forward's).
template <typename In, typename Out>
void glu_backward(const In* a, const In* b, const float* dh, int64_t n, bool gelu, Out* da, Out* db,
                  cudaStream_t stream);

}  // namespace retnet::cuda::layer_kernels
