// SPDX-License-Identifier: GPL-3.0-or-later
// The best logits of each row (retnet/best_logits.h; pack_best_logits is the twin this is tested
// against), so that a decoding step sends back a few hundred bytes a sequence, not its vocabulary.
//
// One block a row, two passes over it (the second over registers for rows of up to 32,768 logits)
// for rows like a model's, and a radix select for rows of many equal logits (best_logits_kernel
// below): about 10 µs a row on an H100. A first version that always took the radix select (five
// passes, histogram atomics crowding on a few bins) took 45 µs, more than the 128 KB copy of a
// 32,000-logit row that it saves.
#include <climits>
#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxCount = 256;  // kMaxBestLogits
constexpr int kMaxCandidates = 1024;  // logits past the fast path's threshold that it ranks
constexpr int kHeld = 16;             // vectors of 4 logits a thread keeps in registers

// best_logits_key of retnet/best_logits.h (C++20 there; these sources are C++17).
__device__ __forceinline__ uint32_t logit_key(float logit) {
    uint32_t bits = __float_as_uint(logit);
    if ((bits & 0x7fffffffu) == 0) bits = 0;
    return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

// The shared memory of one row's selection.
struct Shared {
    unsigned histogram[256];
    uint32_t sorted[kThreads];                 // the threads' best keys, in a bitonic sort's stage
    uint32_t candidate_key[kMaxCandidates];
    int candidate_id[kMaxCandidates];
    int warp_ties[kWarps];
    uint32_t prefix;
    int needed, candidates, masked, first_bad;
};

__device__ __forceinline__ bool better(uint32_t key_a, int id_a, uint32_t key_b, int id_b) {
    return key_a != key_b ? key_a > key_b : id_a < id_b;
}

// Slow but general: the key of the kept-th best by a radix select over the whole row (four passes
// of 8 bits), then the keys above it in any order and the ties of lowest id in rounds of kThreads
// consecutive ids. For rows whose threshold lets too many candidates through (ties everywhere).
__device__ void collect_by_radix(const float* row, int V, int kept, Shared& sh) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) sh.prefix = 0, sh.needed = kept, sh.candidates = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += kThreads) sh.histogram[b] = 0;
        __syncthreads();
        const uint32_t prefix = sh.prefix, high = shift == 24 ? 0u : ~0u << (shift + 8);
        for (int i = tid; i < V; i += kThreads) {
            const uint32_t key = logit_key(row[i]);
            if ((key & high) == prefix) atomicAdd(&sh.histogram[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (warp == 0) {  // lane l holds bins 255 − 8l … 248 − 8l, best first
            unsigned bins[8], sum = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) sum += bins[j] = sh.histogram[255 - 8 * lane - j];
            unsigned inclusive = sum;
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                const unsigned before = __shfl_up_sync(0xffffffffu, inclusive, d);
                if (lane >= d) inclusive += before;
            }
            const unsigned needed = static_cast<unsigned>(sh.needed);
            __syncwarp();  // every lane has read it before one lane rewrites it
            unsigned above = inclusive - sum;  // keys in better bins than this lane's
            if (above < needed && inclusive >= needed) {
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    if (above + bins[j] >= needed) {
                        sh.prefix = prefix | (static_cast<uint32_t>(255 - 8 * lane - j) << shift);
                        sh.needed = static_cast<int>(needed - above);
                        break;
                    }
                    above += bins[j];
                }
            }
        }
        __syncthreads();
    }
    const uint32_t threshold = sh.prefix;
    const int ties_needed = sh.needed;  // ≥ 1: keys equal to the threshold that are kept
    for (int i = tid; i < V; i += kThreads) {
        const uint32_t key = logit_key(row[i]);
        if (key > threshold) {
            const int at = atomicAdd(&sh.candidates, 1);
            sh.candidate_key[at] = key, sh.candidate_id[at] = i;
        }
    }
    __syncthreads();
    const int above = sh.candidates;  // kept − ties_needed
    for (int base = 0, taken = 0; base < V && taken < ties_needed; base += kThreads) {
        const int i = base + tid;
        const bool tie = i < V && logit_key(row[i]) == threshold;
        const unsigned ballot = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) sh.warp_ties[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, round = 0;
        for (int w = 0; w < kWarps; ++w) {
            before += w < warp ? sh.warp_ties[w] : 0;
            round += sh.warp_ties[w];
        }
        const int rank = taken + before + __popc(ballot & ((1u << lane) - 1u));
        if (tie && rank < ties_needed) sh.candidate_key[above + rank] = threshold, sh.candidate_id[above + rank] = i;
        taken += round;
        __syncthreads();  // warp_ties is rewritten by the next round
    }
    if (tid == 0) sh.candidates = kept;
    __syncthreads();
}

// One block a row. Fast path: every thread keeps the best key of its share of the row (and counts
// the masked and finds the non-finite logits); the kept-th best of those kThreads keys is a
// threshold that at least `kept` logits reach, and typically not many more (about kept for
// model-like rows), so a second pass gathers those few into shared memory, where each one's rank
// among them places it. Where more than kMaxCandidates reach it, the radix path above.
__global__ void __launch_bounds__(kThreads) best_logits_kernel(const float* __restrict__ logits, int V, int count,
                                                               float* __restrict__ packed, int64_t packed_width) {
    __shared__ Shared sh;
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * V;
    float* out = packed + static_cast<int64_t>(blockIdx.x) * packed_width;
    const int tid = threadIdx.x;
    const int kept = min(count, V);
    if (tid == 0) sh.candidates = 0, sh.masked = 0, sh.first_bad = INT_MAX;
    __syncthreads();

    uint32_t best_key = 0;  // the lowest key: a thread without logits never raises the threshold
    int masked = 0, first_bad = INT_MAX;
    const auto look = [&](float logit, int i) {
        const uint32_t bits = __float_as_uint(logit);
        masked += bits == 0xff800000u;
        if ((bits & 0x7fffffffu) >= 0x7f800000u && bits != 0xff800000u) first_bad = min(first_bad, i);
        best_key = max(best_key, logit_key(logit));
    };
    const auto gather = [&](float logit, int i, uint32_t threshold) {
        const uint32_t key = logit_key(logit);
        if (key >= threshold) {
            const int at = atomicAdd(&sh.candidates, 1);
            if (at < kMaxCandidates) sh.candidate_key[at] = key, sh.candidate_id[at] = i;
        }
    };
    // Rows of up to kHeld · kThreads vectors of 4 (32,768 logits) stay in registers between the
    // passes, all their loads in flight at once; longer or unaligned rows are read twice.
    const float4* row4 = reinterpret_cast<const float4*>(row);
    const int vectors = V % 4 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0 ? V / 4 : -1;
    const bool held = vectors >= 0 && vectors <= kHeld * kThreads;
    float4 hold[kHeld];
    if (held) {
#pragma unroll
        for (int j = 0; j < kHeld; ++j) {
            const int v = tid + j * kThreads;
            hold[j] = v < vectors ? row4[v] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int j = 0; j < kHeld; ++j) {
            const int v = tid + j * kThreads;
            if (v < vectors) look(hold[j].x, 4 * v), look(hold[j].y, 4 * v + 1), look(hold[j].z, 4 * v + 2), look(hold[j].w, 4 * v + 3);
        }
    } else {
        for (int i = tid; i < V; i += kThreads) look(row[i], i);
    }
    if (masked) atomicAdd(&sh.masked, masked);
    if (first_bad != INT_MAX) atomicMin(&sh.first_bad, first_bad);

    // Bitonic sort of the threads' keys, best first: strides within a warp by shuffles, the others
    // through shared memory.
    uint32_t key = best_key;
    for (int size = 2; size <= kThreads; size <<= 1)
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            uint32_t other;
            if (stride < 32) {
                other = __shfl_xor_sync(0xffffffffu, key, stride);
            } else {
                sh.sorted[tid] = key;
                __syncthreads();
                other = sh.sorted[tid ^ stride];
                __syncthreads();  // read before the next stage rewrites it
            }
            const bool descending = (tid & size) == 0, lower = (tid & stride) == 0;
            key = lower == descending ? max(key, other) : min(key, other);
        }
    if (tid == kept - 1) sh.prefix = key;  // the kept-th best thread key
    __syncthreads();
    const uint32_t threshold = sh.prefix;

    if (held) {
#pragma unroll
        for (int j = 0; j < kHeld; ++j) {
            const int v = tid + j * kThreads;
            if (v < vectors)
                gather(hold[j].x, 4 * v, threshold), gather(hold[j].y, 4 * v + 1, threshold),
                    gather(hold[j].z, 4 * v + 2, threshold), gather(hold[j].w, 4 * v + 3, threshold);
        }
    } else {
        for (int i = tid; i < V; i += kThreads) gather(row[i], i, threshold);
    }
    __syncthreads();
    const bool overflow = sh.candidates > kMaxCandidates;  // the same for the whole block
    __syncthreads();  // read by every thread before collect_by_radix rewrites it
    if (overflow) collect_by_radix(row, V, kept, sh);
    const int candidates = sh.candidates;

    for (int c = tid; c < candidates; c += kThreads) {
        const uint32_t key = sh.candidate_key[c];
        const int id = sh.candidate_id[c];
        int rank = 0;
        for (int d = 0; d < candidates; ++d) rank += better(sh.candidate_key[d], sh.candidate_id[d], key, id);
        if (rank < kept) {
            out[rank] = __int_as_float(id);
            out[count + rank] = row[id];
        }
    }
    for (int c = kept + tid; c < count; c += kThreads) {
        out[c] = __int_as_float(-1);
        out[count + c] = 0.0f;
    }
    if (tid == 0) {
        const int bad = sh.first_bad == INT_MAX ? -1 : sh.first_bad;
        out[2 * count] = __int_as_float(sh.masked);
        out[2 * count + 1] = __int_as_float(bad);
        out[2 * count + 2] = bad >= 0 ? row[bad] : 0.0f;
    }
}

}  // namespace

void launch_best_logits(const float* d_logits, int rows, int V, int count, float* d_packed, int64_t packed_width,
                        cudaStream_t stream) {
    if (rows <= 0) return;
    if (count < 1 || count > kMaxCount || V < 1 || packed_width != 2 * static_cast<int64_t>(count) + 3 || rows > 65535)
        throw Error("launch_best_logits: bad shape (rows " + std::to_string(rows) + ", V " + std::to_string(V) +
                    ", count " + std::to_string(count) + ")");
    best_logits_kernel<<<rows, kThreads, 0, stream>>>(d_logits, V, count, d_packed, packed_width);
    RETNET_CUDA_CHECK(cudaGetLastError());
}

}  // namespace retnet::cuda
