// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// One recurrent retention step for N sequences at once, each with one new token and its own
// state (batched decoding). Per sequence n and head h, in one launch:
//   q̂, k̂ = rotary(q_n, k_n at position[n]) · (q_scale, k_scale)
//   S ← a·S + b·k̂ v_nᵀ,   o = q̂ᵀ S
// with the arithmetic of launch_rotary_to_head_major followed by launch_recurrent_scan (T = 1),
// so a decoded token is bit-identical to the same token through the general recurrent path.
// With y (or y_bf16) set, the head's last column block to finish also applies the head norm and
// the gate (one launch fewer per layer and step). (A thread block cluster of a head's column
// blocks, each reading the others' o from distributed shared memory, was measured on the H200:
// 6.78 → 6.57 µs at 1 sequence, but 43.8 → 55.3 µs at 16 and 160 → 204 µs at 64, the clusters
// co-scheduling fewer blocks; not kept. Leaving the norm's scale to the output projection's GEMV,
// and storing the last state rows after the block's arrival, were measured slower on the H100:
// docs/benchmarks.md.)
// Everything that changes between steps (the rotary's angles, the states' addresses, torchscale's
// coefficients) is read from device memory, so the launch can be replayed from a CUDA graph.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "l2_prefetch.h"

namespace retnet::cuda {

struct DecodeRetentionArgs {
    const float* q = nullptr;          // (N, H·Dk) rows, unrotated
    const float* k = nullptr;          // (N, H·Dk)
    const float* v = nullptr;          // (N, H·Dv)
    // Elements from one sequence's row of q, k, v, g to the next (0: packed, H·Dk or H·Dv): rows
    // of one GEMM's output for all four are read in place.
    int64_t q_stride = 0, k_stride = 0, v_stride = 0, g_stride = 0;
    float* const* states = nullptr;    // (N) each sequence's (H, Dk, Dv) state of this layer
    const double2* angles = nullptr;   // (N, Dk/2) sin, cos of the new token's angles (launch_rotary_angles),
                                       // complete before this launch starts (read before its wait)
    float q_scale = 1.0f, k_scale = 1.0f;
    bool interleaved = false;          // pairs (2i, 2i+1) (torchscale), else (i, i + Dk/2)
    const float* coef_a = nullptr;     // (N, H), or (H) shared when coef_per_sequence is false
    const float* coef_b = nullptr;
    bool coef_per_sequence = false;
    float* o = nullptr;                // (H, N, Dv) head-major, what launch_head_norm_gate reads
    float* norms_sq = nullptr;         // (N, H) ‖S‖_F² after the step (zeroed by the caller), or null
    // The head norm and gate, fused: y = RMSNorm_head(o)·w ⊙ silu(g), summed as
    // launch_head_norm_gate's one-block-per-pair kernel sums (so bit for bit its result for fewer
    // than 1024 (sequence, head) pairs). Null y and y_bf16: only o is written.
    const float* g = nullptr;          // (N, H·Dv)
    const float* head_norm_weight = nullptr;  // (Dv), or null (no weight)
    float head_norm_eps = 0.0f;
    float* y = nullptr;                // (N, H·Dv)
    __nv_bfloat16* y_bf16 = nullptr;   // or y rounded to bf16 alone (the next projection's input)
    unsigned* arrivals = nullptr;      // (N, H) zero before the launch, and again after it
    L2Prefetch next;                   // the output projection's weights, requested into L2 at the start
    int N = 0, H = 0, Dk = 0, Dv = 0;
};

// The rotary's (sin, cos) of each sequence's new token, (N, Dk/2), as launch_rotary_to_head_major
// forms them (the angle positions[n]·θ_i in float32, its sine and cosine in double): once per step
// for all the layers' decode retention launches.
void launch_rotary_angles(const int64_t* positions, const float* theta, int N, int half, double2* angles,
                          cudaStream_t stream);

void launch_decode_retention(const DecodeRetentionArgs& args, cudaStream_t stream);

}  // namespace retnet::cuda
