// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Host launchers of the training-only kernels: the loss, dropout and the optimizer. The chunked
// retention's kernels are the inference ones (../ops.h, ../retention.cu), and the layer's
// element-wise ops (embedding, norms, rotary, GLU), forward beside backward and shared with
// inference, are in ../layer_kernels.h. Every pointer is device memory;
// every launcher enqueues on `stream` and checks the launch. Layouts, as in ../layer_kernels.h:
//   rows        (N, H*D), N = B·T: row b·T + t holds every head, head h at columns [h*D, (h+1)*D)
//   head-major  (B·H, Tp, D): sequence b, head h at matrix b·H + h; Tp = n_chunks·C ≥ T, rows
//               [T, Tp) are zero padding so every chunk has C rows
// "Accumulates" means +=, "writes" means =.
#include <cuda_runtime.h>

#include <cstdint>

namespace retnet::cuda::train_kernels {

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
// With clip_sum_sq (the gradient's squared norm) not null, the update reads the gradient as
// clip_by_norm(·, clip_sum_sq, max_norm) would leave it, bit for bit, and leaves it unclipped.
void adamw(float* params, const float* grad, float* m, float* v, const uint8_t* decays, int64_t n,
           const AdamWScalars& s, const double* clip_sum_sq, double max_norm, cudaStream_t stream);
// average += (1 − keep)·(params − average)
void update_average(float* average, const float* params, int64_t n, float keep, cudaStream_t stream);

}  // namespace retnet::cuda::train_kernels
