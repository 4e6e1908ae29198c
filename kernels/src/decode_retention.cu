// SPDX-License-Identifier: GPL-3.0-or-later
// Batched recurrent decode step (see decode_retention.h). Grid (Dv/32, H, N); a block owns 32
// state columns of one head of one sequence, with 8 row groups of 32 threads as in the recurrent
// scan. The state is read and written once, straight from and to DRAM, all of a thread's rows in
// flight, because at T = 1 there is no reuse to keep it on chip for.
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cuda_check.h"
#include "decode_retention.h"
#include "device_limits.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

constexpr int kCols = 32;       // state columns per block (one warp wide)
constexpr int kRowGroups = 8;   // warps per block
constexpr int kRowsInFlight = 32;  // Dk 256: every row of a thread in one round
constexpr int kGateHeld = 2;       // head-norm columns a thread keeps in registers: Dv ≤ 512 all of them

// The gate's columns (and the head norm weight's) that a thread applies if its block turns out to
// be the head's last, loaded beside q and k (kHold) so that the last block's tail waits for o alone.
// Only where the launch fits in one wave: beyond it most blocks are not a head's last, and the
// registers cost occupancy (H100, 16 and 64 sequences: the retention 54.2 → 55.9 µs a layer, the
// step +2.3 % and +5.5 %; one sequence −0.6 %).
template <bool kHold>
struct GateColumns {
    __device__ void load(const DecodeRetentionArgs&, int64_t) {}
};
template <>
struct GateColumns<true> {
    float g[kGateHeld], weight[kGateHeld];
    __device__ void load(const DecodeRetentionArgs& a, int64_t g_off) {
#pragma unroll
        for (int k = 0; k < kGateHeld; ++k) {
            const int i = static_cast<int>(threadIdx.x + k * blockDim.x);
            g[k] = i < a.Dv ? a.g[g_off + i] : 0.0f;
            weight[k] = i < a.Dv && a.head_norm_weight ? a.head_norm_weight[i] : 1.0f;
        }
    }
};

template <bool kHold>
__device__ void head_norm_gate_if_last(const DecodeRetentionArgs& a, int n, int h, const float* o_head,
                                       const GateColumns<kHold>& gate);

// Elements from one sequence's row to the next: `stride`, or the packed width where it is 0.
__device__ __forceinline__ int64_t row_stride(int64_t stride, int packed) { return stride ? stride : packed; }
// Where head h of sequence n begins in g.
__device__ __forceinline__ int64_t gate_offset(const DecodeRetentionArgs& a, int n, int h) {
    return n * row_stride(a.g_stride, a.H * a.Dv) + static_cast<int64_t>(h) * a.Dv;
}

// One gated output: in y, or rounded as store_as rounds into y_bf16.
__device__ __forceinline__ void store_gated(const DecodeRetentionArgs& a, int64_t at, float value) {
    if (a.y_bf16) store_as(a.y_bf16 + at, value);
    else a.y[at] = value;
}

template <bool kHoldGate>
__global__ void __launch_bounds__(kCols * kRowGroups) decode_retention_kernel(DecodeRetentionArgs a) {
    extern __shared__ float smem[];
    float* s_q = smem;            // (Dk) rotated, scaled
    float* s_k = s_q + a.Dk;      // (Dk)
    __shared__ float s_v[kCols];
    __shared__ float s_part[kRowGroups * kCols];
    __shared__ float s_norm[kRowGroups];

    prefetch_share_to_l2(a.next);  // first, while no registers are held
    const int n = blockIdx.z, h = blockIdx.y, col0 = blockIdx.x * kCols;
    const int tid = threadIdx.x, tx = tid % kCols, ty = tid / kCols;
    const int j = col0 + tx;
    const bool valid = j < a.Dv;
    const int Dk = a.Dk, half = Dk / 2;

    // The state is written only by this kernel: its first rows are requested before the previous
    // kernel (the projections this step reads) has finished.
    float* S = a.states[n] + static_cast<int64_t>(h) * Dk * a.Dv;
    float held[kRowsInFlight];
    auto load_rows = [&](int i0) {
#pragma unroll
        for (int r = 0; r < kRowsInFlight; ++r) {
            const int i = i0 + r * kRowGroups;
            held[r] = valid && i < Dk ? S[static_cast<int64_t>(i) * a.Dv + j] : 0.0f;
        }
    };
    load_rows(ty);
    // The rotary's sines and cosines at this token's position, formed once for the step by
    // launch_rotary_angles, the step's first launch: the embedding's token copy, an ordinary copy,
    // comes between it and every later kernel, so they are complete and read here beside the state,
    // off the path that waits for the projections (a double sincos in every block was on it).
    const double2* angles = a.angles + static_cast<int64_t>(n) * half;
    const double2 first_angle = tid < half ? angles[tid] : double2{};
    wait_for_previous_grid();
    allow_next_grid();
    GateColumns<kHoldGate> gate;
    if (a.y || a.y_bf16) gate.load(a, gate_offset(a, n, h));

    // rotary, exactly as launch_rotary_to_head_major: the rotation in double
    const float* q_row = a.q + n * row_stride(a.q_stride, a.H * Dk) + h * Dk;
    const float* k_row = a.k + n * row_stride(a.k_stride, a.H * Dk) + h * Dk;
    for (int i = tid; i < half; i += blockDim.x) {
        const int i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
        const double2 angle = i == tid ? first_angle : angles[i];
        const double s = angle.x, c = angle.y;
        const double q0 = static_cast<double>(q_row[i0]) * a.q_scale, q1 = static_cast<double>(q_row[i1]) * a.q_scale;
        const double k0 = static_cast<double>(k_row[i0]) * a.k_scale, k1 = static_cast<double>(k_row[i1]) * a.k_scale;
        s_q[i0] = static_cast<float>(q0 * c - q1 * s);
        s_q[i1] = static_cast<float>(q1 * c + q0 * s);
        s_k[i0] = static_cast<float>(k0 * c - k1 * s);
        s_k[i1] = static_cast<float>(k1 * c + k0 * s);
    }
    if (tid < kCols) s_v[tid] = col0 + tid < a.Dv ? a.v[n * row_stride(a.v_stride, a.H * a.Dv) + h * a.Dv + col0 + tid] : 0.0f;
    __syncthreads();

    const int coef = a.coef_per_sequence ? n * a.H + h : h;
    const float decay = a.coef_a[coef];
    const float bv = a.coef_b[coef] * s_v[tx];
    float acc = 0.0f, nsq = 0.0f;
    for (int i0 = ty;;) {
#pragma unroll
        for (int r = 0; r < kRowsInFlight; ++r) {
            const int i = i0 + r * kRowGroups;
            if (!valid || i >= Dk) break;
            const float s = fmaf(decay, held[r], s_k[i] * bv);
            S[static_cast<int64_t>(i) * a.Dv + j] = s;
            acc = fmaf(s_q[i], s, acc);
            nsq = fmaf(s, s, nsq);
        }
        i0 += kRowGroups * kRowsInFlight;
        if (i0 >= Dk) break;
        load_rows(i0);
    }
    s_part[ty * kCols + tx] = acc;
    if (a.norms_sq) {
        nsq = warp_sum(nsq);
        if (tx == 0) s_norm[ty] = nsq;
    }
    __syncthreads();
    float* o_head = a.o + (static_cast<int64_t>(h) * a.N + n) * a.Dv;
    if (ty == 0) {
        if (valid) {
            float sum = 0.0f;
#pragma unroll
            for (int g = 0; g < kRowGroups; ++g) sum += s_part[g * kCols + tx];
            o_head[j] = sum;
        }
        if (a.norms_sq && tx == 0) {
            float total = 0.0f;
#pragma unroll
            for (int g = 0; g < kRowGroups; ++g) total += s_norm[g];
            atomicAdd(a.norms_sq + static_cast<int64_t>(n) * a.H + h, total);
        }
    }
    if (a.y || a.y_bf16) head_norm_gate_if_last<kHoldGate>(a, n, h, o_head, gate);
}

// One thread per (sequence n, pair i): the angle in float32, its sine and cosine in double, as
// launch_rotary_to_head_major forms them.
__global__ void rotary_angles_kernel(const int64_t* __restrict__ positions, const float* __restrict__ theta, int N,
                                     int half, double2* __restrict__ angles) {
    const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    if (e >= N * half) return;
    const int n = e / half, i = e - n * half;
    const float angle = static_cast<float>(positions[n]) * theta[i];
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    angles[e] = make_double2(s, c);
}

// The head norm and gate of head h of sequence n, by whichever of its column blocks finishes
// last (the others' o columns are then all written): the threadfence-reduction pattern.
template <bool kHold>
__device__ void head_norm_gate_if_last(const DecodeRetentionArgs& a, int n, int h, const float* o_head,
                                       const GateColumns<kHold>& gate) {
    __shared__ bool last;
    __shared__ double shared[32];
    __threadfence();  // this block's o columns, visible before it counts itself in
    __syncthreads();
    unsigned* arrivals = a.arrivals + static_cast<int64_t>(n) * a.H + h;
    if (threadIdx.x == 0) last = atomicAdd(arrivals, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    // as head_norm_gate_forward_block_kernel (norms.cu): the same threads, order and rounding; with
    // kHold a thread's first kGateHeld columns of o stay in registers between the two passes
    constexpr int kHeld = kHold ? kGateHeld : 0;
    const int tid = static_cast<int>(threadIdx.x), stride = static_cast<int>(blockDim.x);
    float o_held[kHold ? kGateHeld : 1];
    double ss = 0.0;
#pragma unroll
    for (int k = 0; k < kHeld; ++k) {
        const int i = tid + k * stride;
        o_held[k] = i < a.Dv ? __ldcg(o_head + i) : 0.0f;
        if (i < a.Dv) ss += static_cast<double>(o_held[k]) * o_held[k];
    }
    for (int i = tid + kHeld * stride; i < a.Dv; i += stride) {
        const float oi = __ldcg(o_head + i);
        ss += static_cast<double>(oi) * oi;
    }
    ss = block_sum(ss, shared);
    const float s = static_cast<float>(1.0 / sqrt(ss / a.Dv + static_cast<double>(a.head_norm_eps)));
    const int64_t off = (static_cast<int64_t>(n) * a.H + h) * a.Dv, g_off = gate_offset(a, n, h);
    if constexpr (kHold) {
#pragma unroll
        for (int k = 0; k < kHeld; ++k)
            if (tid + k * stride < a.Dv) store_gated(a, off + tid + k * stride, o_held[k] * s * gate.weight[k] * silu(gate.g[k]));
    }
    for (int i = tid + kHeld * stride; i < a.Dv; i += stride)
        store_gated(a, off + i, __ldcg(o_head + i) * s * (a.head_norm_weight ? a.head_norm_weight[i] : 1.0f) * silu(a.g[g_off + i]));
    if (threadIdx.x == 0) *arrivals = 0;  // ready for the next launch (a graph replays it as is)
}

}  // namespace

void launch_rotary_angles(const int64_t* positions, const float* theta, int N, int half, double2* angles,
                          cudaStream_t stream) {
    if (N <= 0 || half <= 0) return;
    constexpr int kThreads = 256;
    const int64_t total = static_cast<int64_t>(N) * half;
    if (total > (int64_t{1} << 30)) throw Error("rotary angles: " + std::to_string(total) + " pairs (unsupported)");
    rotary_angles_kernel<<<static_cast<unsigned>(ceil_div(total, kThreads)), kThreads, 0, stream>>>(positions, theta, N,
                                                                                                   half, angles);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

void launch_decode_retention(const DecodeRetentionArgs& args, cudaStream_t stream) {
    if (args.N == 0) return;
    if (args.Dk % 2 != 0 || args.N > 65535 || args.H > 65535)
        throw Error("decode retention: unsupported shape (N " + std::to_string(args.N) + ", H " +
                    std::to_string(args.H) + ", Dk " + std::to_string(args.Dk) + ")");
    const size_t smem = 2 * static_cast<size_t>(args.Dk) * sizeof(float);
    if (!args.angles) throw Error("decode retention: no rotary angles (internal error)");
    if ((args.y || args.y_bf16) && !args.arrivals) throw Error("decode retention: the fused head norm needs its arrival counters (internal error)");
    const dim3 grid(ceil_div(args.Dv, kCols), static_cast<unsigned>(args.H), static_cast<unsigned>(args.N));
    const dim3 block(kCols * kRowGroups);
    auto* one_wave = decode_retention_kernel<true>;
    auto* kernel = decode_retention_kernel<false>;
    for (auto* k : {one_wave, kernel})
        if (smem > 48 * 1024)
            RETNET_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    if (static_cast<int64_t>(grid.x) * grid.y * grid.z <=
        resident_blocks(reinterpret_cast<const void*>(one_wave), static_cast<int>(block.x), smem))
        kernel = one_wave;
    launch_overlapped(kernel, grid, block, smem, stream, args);
}

}  // namespace retnet::cuda
