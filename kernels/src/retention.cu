// SPDX-License-Identifier: GPL-3.0-or-later
// Retention kernels of the three forms, shared by inference and the CUDA trainer (whose fla
// chunkwise forward is the decay mask, row scaling and chunk scan below, from an empty state), with
// the scan's transpose for the trainer's backward beside the scan. The matrix products (Q Kᵀ, A V, Kᵀ V, Q S) run in cuBLAS
// (see gemm.h and backend_cuda_mixing.cpp); these kernels do the decay, the family's normalization,
// the chunk-state scan and the fused recurrent step.
//
// Head-major (H, Tp, D) inputs; per-head decay γ_h = exp(log_decay[h]) with log γ in float32 as
// both reference implementations hold it. Decay powers γ^n are exp(n·log γ) in double.
#include <cmath>
#include <cstdint>

#include "common.cuh"
#include "cuda_check.h"
#include "ops.h"

namespace retnet::cuda {

namespace {

constexpr int kThreads = 256;

// ρ_i = Σ_{j<=i} γ^j (torchscale's in-chunk row sum), summed by the block in double.
__device__ double chunk_row_sum(float log_decay, int i, double* shared) {
    double part = 0.0;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) part += exp(static_cast<double>(j) * log_decay);
    return block_sum(part, shared);
}

// One block per (h, n) row of the (H, T, T) score matrix.
__global__ void parallel_decay_normalize_kernel(float* scores, const float* log_decay,
                                                const float* row_scale, float* row_factor, int H,
                                                int T, float abs_sum_cap) {
    __shared__ double shared[32];
    const int h = blockIdx.x / T, n = blockIdx.x % T;
    float* row = scores + (static_cast<int64_t>(h) * T + n) * T;
    const float lg = log_decay[h];
    const float scale = row_scale[static_cast<int64_t>(h) * T + n];
    double abs_sum = 0.0;
    for (int m = threadIdx.x; m < T; m += blockDim.x) {
        const float a = m <= n ? row[m] * decay_pow(lg, n - m) * scale : 0.0f;
        row[m] = a;
        abs_sum += fabs(static_cast<double>(a));
    }
    float factor = scale;
    if (abs_sum_cap > 0.0f) {
        abs_sum = block_sum(abs_sum, shared);
        const float c = static_cast<float>(fmin(fmax(abs_sum, 1.0), static_cast<double>(abs_sum_cap)));
        for (int m = threadIdx.x; m <= n; m += blockDim.x) row[m] /= c;
        factor = scale / c;
    }
    if (threadIdx.x == 0) row_factor[static_cast<int64_t>(h) * T + n] = factor;
}

// One block per (s, h, chunk, i) row of the (n_seqs*H*nC, C, C) chunk score matrices.
__global__ void chunk_decay_mask_kernel(float* scores, const float* log_decay, float* row_abs,
                                        int H, int nC, int C, bool torchscale) {
    __shared__ double shared[32];
    const int i = blockIdx.x % C;
    const int64_t hc = blockIdx.x / C;  // (s * H + h) * nC + c
    const int h = static_cast<int>((hc / nC) % H);
    const float lg = log_decay[h];
    float* row = scores + (hc * C + i) * C;
    float inv_sqrt_rho = 1.0f;
    if (torchscale) inv_sqrt_rho = static_cast<float>(1.0 / sqrt(chunk_row_sum(lg, i, shared)));
    double abs_sum = 0.0;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const float a = j <= i ? row[j] * decay_pow(lg, i - j) * inv_sqrt_rho : 0.0f;
        row[j] = a;
        abs_sum += fabs(static_cast<double>(a));
    }
    if (torchscale) {
        abs_sum = block_sum(abs_sum, shared);
        if (threadIdx.x == 0) row_abs[hc * C + i] = static_cast<float>(fmax(abs_sum, 1.0));
    }
}

__global__ void scale_rows_kernel(const float* src, const float* factor, float* dst, int64_t rows,
                                  int D) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= rows * D) return;
    dst[idx] = src[idx] * factor[idx / D];
}

__global__ void scale_per_head_kernel(float* S, const float* factor, int64_t n_per_head, int64_t total) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    S[idx] *= factor[idx / n_per_head];
}

// The chunk-state scan is memory-bound: per state element one dependent walk over nC chunks.
// Each thread takes kWidth consecutive elements (float4 loads when the layout allows) and loads a
// group of kGroup chunks before it stores any of them, so that many loads are in flight at once
// (a store into U and the next load from U cannot be reordered by the compiler otherwise).
constexpr int kScanGroup = 8;

__device__ inline float4 decay_add(float d, float4 s, float4 u) {
    return make_float4(d * s.x + u.x, d * s.y + u.y, d * s.z + u.z, d * s.w + u.w);
}
__device__ inline float decay_add(float d, float s, float u) { return d * s + u; }

// U (H, nC, DkDv) holds each chunk's contribution on entry and the state before it on return;
// state (H, DkDv) goes in as the state before chunk 0 and comes out as the state after the last.
template <typename Vec>
__global__ void chunk_state_scan_kernel(float* U, float* state, const float* chunk_decay, int H, int nC,
                                        int64_t DkDv) {
    const int64_t per_head = DkDv * sizeof(float) / sizeof(Vec);
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= H * per_head) return;
    const int h = static_cast<int>(idx / per_head);
    Vec* u = reinterpret_cast<Vec*>(U) + static_cast<int64_t>(h) * nC * per_head + idx % per_head;
    const float* decay = chunk_decay + static_cast<int64_t>(h) * nC;
    Vec s = reinterpret_cast<Vec*>(state)[idx];
    for (int c0 = 0; c0 < nC; c0 += kScanGroup) {
        Vec contribution[kScanGroup];
#pragma unroll
        for (int i = 0; i < kScanGroup; ++i)
            if (c0 + i < nC) contribution[i] = u[(c0 + i) * per_head];
#pragma unroll
        for (int i = 0; i < kScanGroup; ++i)
            if (c0 + i < nC) {
                u[(c0 + i) * per_head] = s;
                s = decay_add(decay[c0 + i], s, contribution[i]);
            }
    }
    reinterpret_cast<Vec*>(state)[idx] = s;
}

// The scan's transpose, walking the chunks backwards in place: slot c holds G[c] on entry and
// after[c] on return, after[nC − 1] = 0, after[c] = G[c + 1] + γ_(c+1) · after[c + 1]. G[c + 1] is
// carried in registers (its slot already holds after[c + 1]), so no second (H, nC, DkDv) buffer is
// needed. The next group's G is loaded before this group's results are stored: the slots are
// disjoint, and written in this order the loads stay in flight during the stores (the compiler may
// not move a load above a store to the same buffer).
template <typename Vec>
__global__ void chunk_state_scan_backward_kernel(float* G_then_after, const float* chunk_decay, int H, int nC,
                                                 int64_t DkDv) {
    const int64_t per_head = DkDv * sizeof(float) / sizeof(Vec);
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= H * per_head) return;
    const int h = static_cast<int>(idx / per_head);
    Vec* slot = reinterpret_cast<Vec*>(G_then_after) + static_cast<int64_t>(h) * nC * per_head + idx % per_head;
    const float* decay = chunk_decay + static_cast<int64_t>(h) * nC;
    const auto load_group = [&](int c0, Vec* g) {  // G of slots c0, c0 − 1, … (those ≥ 0)
#pragma unroll
        for (int i = 0; i < kScanGroup; ++i)
            if (c0 - i >= 0) g[i] = slot[static_cast<int64_t>(c0 - i) * per_head];
    };
    Vec next_g = slot[static_cast<int64_t>(nC - 1) * per_head];  // G[c + 1] of the slot c at hand
    Vec after{};
    slot[static_cast<int64_t>(nC - 1) * per_head] = after;
    Vec g[kScanGroup] = {}, g_ahead[kScanGroup] = {};
    load_group(nC - 2, g);
    for (int c0 = nC - 2; c0 >= 0; c0 -= kScanGroup) {  // slots c0, c0 − 1, … down to 0
        load_group(c0 - kScanGroup, g_ahead);
#pragma unroll
        for (int i = 0; i < kScanGroup; ++i)
            if (c0 - i >= 0) {
                after = decay_add(decay[c0 - i + 1], after, next_g);
                slot[static_cast<int64_t>(c0 - i) * per_head] = after;
                next_g = g[i];
            }
#pragma unroll
        for (int i = 0; i < kScanGroup; ++i) g[i] = g_ahead[i];
    }
}

// float4 when every head's block of DkDv floats starts 16-byte aligned.
bool scan_vectorizes(int64_t DkDv, const void* a, const void* b) {
    return DkDv % 4 == 0 && aligned16(a) && aligned16(b);
}

// One block per (h, chunk): largest column sum of |state| (torchscale's s_c).
__global__ void chunk_state_abs_max_kernel(const float* states, float* out, int Dk, int Dv,
                                           float inv_SB) {
    __shared__ double shared[32];
    const float* S = states + static_cast<int64_t>(blockIdx.x) * Dk * Dv;
    double best = 0.0;
    for (int v = threadIdx.x; v < Dv; v += blockDim.x) {
        double col = 0.0;
        for (int k = 0; k < Dk; ++k) col += fabs(static_cast<double>(S[static_cast<int64_t>(k) * Dv + v]));
        best = fmax(best, col);
    }
    best = block_max(best, shared, 0.0);
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(fmax(best * inv_SB, 1.0));
}

// One block per (h, t).
__global__ void chunk_combine_kernel(const float* inner, const float* cross, const float* log_decay,
                                     const float* row_abs, const float* state_abs, float* o,
                                     float* row_factor, int Tp, int C, int Dv, bool torchscale) {
    __shared__ double shared[32];
    const int h = blockIdx.x / Tp, t = blockIdx.x % Tp;
    const int i = t % C, c = t / C, nC = Tp / C;
    const float lg = log_decay[h];
    const int64_t row = (static_cast<int64_t>(h) * Tp + t) * Dv;
    float inner_coef = 1.0f, cross_coef = decay_pow(lg, i + 1), factor = 1.0f;
    if (torchscale) {
        const double sqrt_rho = sqrt(chunk_row_sum(lg, i, shared));
        const float a = row_abs[static_cast<int64_t>(h) * Tp + t];
        const float s = state_abs[static_cast<int64_t>(h) * nC + c];
        const double all = fmax(static_cast<double>(a), static_cast<double>(s));
        inner_coef = static_cast<float>(1.0 / all);
        cross_coef = static_cast<float>(exp(static_cast<double>(i + 1) * lg) / (sqrt_rho * all));
        factor = static_cast<float>(1.0 / (sqrt_rho * all));
    }
    for (int v = threadIdx.x; v < Dv; v += blockDim.x)
        o[row + v] = inner_coef * inner[row + v] + cross_coef * cross[row + v];
    if (threadIdx.x == 0) row_factor[static_cast<int64_t>(h) * Tp + t] = factor;
}

__global__ void add_scaled_rows_kernel(float* o, const float* cross, const float* coef, int64_t rows,
                                       int Dv) {
    const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx >= rows * Dv) return;
    o[idx] += coef[idx / Dv] * cross[idx];
}

// The fused recurrent form. Block (h, tile of 32 value columns); threads (32 columns × 8 row
// groups). The block's (Dk × 32) slice of S lives in shared memory for all T steps, so the state
// crosses device memory once per launch, not once per token.
constexpr int kScanCols = 32, kScanRowGroups = 8;

__global__ void __launch_bounds__(kScanCols * kScanRowGroups)
recurrent_scan_kernel(const float* q, const float* k, const float* v, float* S, const float* coef_a,
                      const float* coef_b, float* o, float* norms_sq, int H, int T, int Tp, int Dk,
                      int Dv) {
    extern __shared__ float smem[];
    float* s_state = smem;                         // (Dk, 32)
    float* s_q = s_state + Dk * kScanCols;         // (Dk)
    float* s_k = s_q + Dk;                         // (Dk)
    float* s_v = s_k + Dk;                         // (32)
    float* s_part = s_v + kScanCols;               // (8, 32)
    __shared__ float s_norm[kScanRowGroups];

    const int h = blockIdx.y;
    const int col0 = blockIdx.x * kScanCols;
    const int tx = threadIdx.x % kScanCols, ty = threadIdx.x / kScanCols;
    const int tid = threadIdx.x;
    const int j = col0 + tx;
    const bool valid = j < Dv;
    float* S_h = S + static_cast<int64_t>(h) * Dk * Dv;
    for (int i = ty; i < Dk; i += kScanRowGroups) s_state[i * kScanCols + tx] = valid ? S_h[static_cast<int64_t>(i) * Dv + j] : 0.0f;

    const float* q_h = q + static_cast<int64_t>(h) * Tp * Dk;
    const float* k_h = k + static_cast<int64_t>(h) * Tp * Dk;
    const float* v_h = v + static_cast<int64_t>(h) * Tp * Dv;
    for (int t = 0; t < T; ++t) {
        __syncthreads();  // the previous step is done with s_q, s_k, s_v, s_part
        for (int i = tid; i < Dk; i += blockDim.x) {
            s_q[i] = q_h[static_cast<int64_t>(t) * Dk + i];
            s_k[i] = k_h[static_cast<int64_t>(t) * Dk + i];
        }
        if (tid < kScanCols) s_v[tid] = col0 + tid < Dv ? v_h[static_cast<int64_t>(t) * Dv + col0 + tid] : 0.0f;
        __syncthreads();
        const float a = coef_a[static_cast<int64_t>(t) * H + h];
        const float bv = coef_b[static_cast<int64_t>(t) * H + h] * s_v[tx];
        float acc = 0.0f, nsq = 0.0f;
        for (int i = ty; i < Dk; i += kScanRowGroups) {
            const float s = fmaf(a, s_state[i * kScanCols + tx], s_k[i] * bv);
            s_state[i * kScanCols + tx] = s;
            acc = fmaf(s_q[i], s, acc);
            nsq = fmaf(s, s, nsq);
        }
        s_part[ty * kScanCols + tx] = acc;
        if (norms_sq) {
            nsq = warp_sum(nsq);
            if (tx == 0) s_norm[ty] = nsq;
        }
        __syncthreads();
        if (ty == 0) {
            if (o && valid) {
                float sum = 0.0f;
#pragma unroll
                for (int g = 0; g < kScanRowGroups; ++g) sum += s_part[g * kScanCols + tx];
                o[(static_cast<int64_t>(h) * Tp + t) * Dv + j] = sum;
            }
            if (norms_sq && tx == 0) {
                float total = 0.0f;
#pragma unroll
                for (int g = 0; g < kScanRowGroups; ++g) total += s_norm[g];
                atomicAdd(norms_sq + static_cast<int64_t>(t) * H + h, total);
            }
        }
    }
    __syncthreads();
    if (valid)
        for (int i = ty; i < Dk; i += kScanRowGroups) S_h[static_cast<int64_t>(i) * Dv + j] = s_state[i * kScanCols + tx];
}

__global__ void state_norm_sq_kernel(const float* S, float* out, int64_t n_per_head) {
    __shared__ double shared[32];
    const float* s = S + static_cast<int64_t>(blockIdx.x) * n_per_head;
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < n_per_head; i += blockDim.x) sum += static_cast<double>(s[i]) * s[i];
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(sum);
}

// One block per (head_out, n); q_n cached in shared memory.
__global__ void retention_scores_kernel(const float* q, const float* k, const float* log_decay,
                                        const float* row_factor, float* out, int head_begin, int T,
                                        int Tp, int Dk) {
    extern __shared__ float s_qn[];
    const int hi = blockIdx.x / T, n = blockIdx.x % T, h = head_begin + hi;
    const float* qn = q + (static_cast<int64_t>(h) * Tp + n) * Dk;
    for (int i = threadIdx.x; i < Dk; i += blockDim.x) s_qn[i] = qn[i];
    __syncthreads();
    const float lg = log_decay[h];
    const float factor = row_factor[static_cast<int64_t>(h) * Tp + n];
    float* row = out + (static_cast<int64_t>(hi) * T + n) * T;
    for (int m = threadIdx.x; m < T; m += blockDim.x) {
        float value = 0.0f;
        if (m <= n) {
            const float* km = k + (static_cast<int64_t>(h) * Tp + m) * Dk;
            double dot = 0.0;
            for (int i = 0; i < Dk; ++i) dot += static_cast<double>(s_qn[i]) * km[i];
            value = static_cast<float>(dot * exp(static_cast<double>(n - m) * lg) * factor);
        }
        row[m] = value;
    }
}

}  // namespace

void launch_parallel_decay_normalize(float* d_scores, const float* d_log_decay,
                                     const float* d_row_scale, float* d_row_factor, int H, int T,
                                     float abs_sum_cap, cudaStream_t stream) {
    parallel_decay_normalize_kernel<<<H * T, kThreads, 0, stream>>>(d_scores, d_log_decay, d_row_scale,
                                                                   d_row_factor, H, T, abs_sum_cap);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_chunk_decay_mask(float* d_scores, const float* d_log_decay, float* d_row_abs, int H,
                             int nC, int C, bool torchscale, cudaStream_t stream, int n_seqs) {
    const int threads = C >= 256 ? 256 : (C >= 128 ? 128 : 64);
    const int64_t rows = static_cast<int64_t>(n_seqs) * H * nC * C;
    if (rows == 0) return;
    chunk_decay_mask_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(d_scores, d_log_decay, d_row_abs,
                                                                                 H, nC, C, torchscale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_scale_rows(const float* d_src, const float* d_factor, float* d_dst, int H, int Tp,
                       int D, cudaStream_t stream) {
    const int64_t rows = static_cast<int64_t>(H) * Tp;
    scale_rows_kernel<<<ceil_div(rows * D, kThreads), kThreads, 0, stream>>>(d_src, d_factor, d_dst, rows, D);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_scale_per_head(float* d_S, const float* d_factor, int H, int64_t n_per_head,
                           cudaStream_t stream) {
    const int64_t total = H * n_per_head;
    scale_per_head_kernel<<<ceil_div(total, kThreads), kThreads, 0, stream>>>(d_S, d_factor, n_per_head, total);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_chunk_state_scan(float* d_U, float* d_state, const float* d_chunk_decay, int H, int nC,
                             int64_t DkDv, cudaStream_t stream) {
    if (H * DkDv == 0) return;
    if (scan_vectorizes(DkDv, d_U, d_state))
        chunk_state_scan_kernel<float4><<<ceil_div(H * DkDv / 4, kThreads), kThreads, 0, stream>>>(
            d_U, d_state, d_chunk_decay, H, nC, DkDv);
    else
        chunk_state_scan_kernel<float><<<ceil_div(H * DkDv, kThreads), kThreads, 0, stream>>>(d_U, d_state,
                                                                                           d_chunk_decay, H, nC, DkDv);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_chunk_state_scan_backward(float* d_G_then_after, const float* d_chunk_decay, int H, int nC, int64_t DkDv,
                                      cudaStream_t stream) {
    if (H * DkDv == 0) return;
    if (scan_vectorizes(DkDv, d_G_then_after, d_G_then_after))
        chunk_state_scan_backward_kernel<float4><<<ceil_div(H * DkDv / 4, kThreads), kThreads, 0, stream>>>(
            d_G_then_after, d_chunk_decay, H, nC, DkDv);
    else
        chunk_state_scan_backward_kernel<float><<<ceil_div(H * DkDv, kThreads), kThreads, 0, stream>>>(
            d_G_then_after, d_chunk_decay, H, nC, DkDv);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_chunk_state_abs_max(const float* d_states, float* d_out, int H, int nC, int Dk, int Dv,
                                float inv_SB, cudaStream_t stream) {
    chunk_state_abs_max_kernel<<<H * nC, kThreads, 0, stream>>>(d_states, d_out, Dk, Dv, inv_SB);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_chunk_combine(const float* d_inner, const float* d_cross, const float* d_log_decay,
                          const float* d_row_abs, const float* d_state_abs, float* d_o,
                          float* d_row_factor, int H, int Tp, int C, int Dv, bool torchscale,
                          cudaStream_t stream) {
    chunk_combine_kernel<<<H * Tp, 128, 0, stream>>>(d_inner, d_cross, d_log_decay, d_row_abs, d_state_abs,
                                                     d_o, d_row_factor, Tp, C, Dv, torchscale);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_add_scaled_rows(float* d_o, const float* d_cross, const float* d_coef, int H, int Tp,
                            int Dv, cudaStream_t stream) {
    const int64_t rows = static_cast<int64_t>(H) * Tp;
    add_scaled_rows_kernel<<<ceil_div(rows * Dv, kThreads), kThreads, 0, stream>>>(d_o, d_cross, d_coef, rows, Dv);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_recurrent_scan(const float* d_q, const float* d_k, const float* d_v, float* d_S,
                           const float* d_a, const float* d_b, float* d_o, float* d_norms_sq,
                           int H, int T, int Tp, int Dk, int Dv, cudaStream_t stream) {
    const size_t smem = (static_cast<size_t>(Dk) * kScanCols + 2 * Dk + kScanCols +
                         kScanRowGroups * kScanCols) * sizeof(float);
    if (smem > 48 * 1024) {
        int device = 0, limit = 0;
        RETNET_CUDA_CHECK(cudaGetDevice(&device));
        RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        if (smem > static_cast<size_t>(limit))
            throw Error("recurrent retention: key head dim " + std::to_string(Dk) +
                        " needs more shared memory than the device has per block");
        RETNET_CUDA_CHECK(cudaFuncSetAttribute(recurrent_scan_kernel,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem)));
    }
    const dim3 grid(ceil_div(Dv, kScanCols), static_cast<unsigned>(H));
    recurrent_scan_kernel<<<grid, kScanCols * kScanRowGroups, smem, stream>>>(
        d_q, d_k, d_v, d_S, d_a, d_b, d_o, d_norms_sq, H, T, Tp, Dk, Dv);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_state_norm_sq(const float* d_S, float* d_out, int H, int64_t n_per_head,
                          cudaStream_t stream) {
    state_norm_sq_kernel<<<H, kThreads, 0, stream>>>(d_S, d_out, n_per_head);
    RETNET_CUDA_CHECK_LAUNCH();
}

void launch_retention_scores(const float* d_q, const float* d_k, const float* d_log_decay,
                             const float* d_row_factor, float* d_out, int head_begin,
                             int n_heads_out, int T, int Tp, int Dk, cudaStream_t stream) {
    retention_scores_kernel<<<n_heads_out * T, 128, Dk * sizeof(float), stream>>>(
        d_q, d_k, d_log_decay, d_row_factor, d_out, head_begin, T, Tp, Dk);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda
