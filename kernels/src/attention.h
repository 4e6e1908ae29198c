// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Causal multi-head attention over a per-sequence KV cache: the attention of the Transformer twin
// (Llama-style: rotary on q and k, softmax(q·kᵀ·scale)·v, no GQA).
//
// KV cache: per sequence (and layer) one K and one V buffer, each (capacity, H, D) row-major in
// the cache dtype: the row of position t is H·D contiguous elements, head h at offset h·D. Rows
// hold k already rotated at its position, and v as is. Base addresses must be 16-byte aligned
// (cudaMalloc's are; an offset into a larger buffer must keep that).
//
// Rotary (Llama's rotate_half): pair i is (i, i + D/2), turned by pos·θ_i with θ_i =
// rope_theta^(−2i/D) given by the caller; the angle is formed in float32 and the rotation done in
// double (as launch_rotary_to_head_major does), the same way in decode and prefill, so both paths
// write bit-identical cache rows for the same token.
//
// bf16 caches: k and v are rounded to bf16 when written, and q is rounded to bf16 too (in decode
// as in prefill) so both paths score with the same operands a bf16 tensor-core product sees.
// Accumulation is fp32 everywhere.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace retnet::cuda {

enum class KvDtype { F32, BF16 };

size_t kv_dtype_bytes(KvDtype dtype);

// ---- decode: one new token for each of N sequences ---------------------------------------------
// Per sequence n: rotate q_n and k_n at positions[n], write k_n and v_n as row positions[n] of its
// caches, then attend over its positions[n] + 1 keys. The keys of a sequence are cut into `splits`
// contiguous ranges, one CTA each per (range, head, sequence), whose partial (max, sum, Σp·v) a
// second kernel combines ("flash-decoding"). Everything that changes between steps (positions,
// cache addresses) is read from device memory, and the grid depends only on (splits, H, N), so
// the launch can be captured once in a CUDA graph and replayed as the sequences grow.
struct AttentionDecodeArgs {
    const float* q = nullptr;            // (N, H·D) unrotated query rows
    const float* k = nullptr;            // (N, H·D) unrotated new key rows
    const float* v = nullptr;            // (N, H·D) new value rows
    void* const* k_caches = nullptr;     // (N) device array: sequence n's K cache, capacity > positions[n]
    void* const* v_caches = nullptr;     // (N) device array: sequence n's V cache
    const int64_t* positions = nullptr;  // (N) device array: position of the new token (keys cached before it)
    const float* theta = nullptr;        // (D/2) device array: rotary frequencies
    float scale = 0.0f;                  // softmax scale, 1/√D for Llama
    KvDtype dtype = KvDtype::F32;
    float* o = nullptr;                  // (N, H·D) output rows, what the output projection reads
    float* workspace = nullptr;          // attention_decode_workspace_floats(N, H, D, splits) floats
    int N = 0, H = 0, D = 0;
    int splits = 1;                      // key ranges per sequence, ≥ 1 (attention_decode_splits)
};

// Head dims the decode kernel is built for (32, 64, 96, 128, 256).
bool attention_decode_supports(int D);
// A split count that fills the device for N·H heads over up to max_keys keys (≥ 1, and no range
// shorter than ~256 keys). Independent of the current lengths, so a graph can keep it.
int attention_decode_splits(int N, int H, int64_t max_keys, int num_sms);
// Keys one CTA reads per step for this head dim and dtype: each split's range is a multiple of it
// (so a sequence of k keys uses ⌈k / (granule·⌈⌈k/splits⌉/granule⌉)⌉ of the splits; the rest exit).
int attention_decode_granule(int D, KvDtype dtype);
size_t attention_decode_workspace_floats(int N, int H, int D, int splits);
// Three kernels on `stream`, launched with programmatic dependent launch (see common.cuh).
void launch_attention_decode(const AttentionDecodeArgs& args, cudaStream_t stream);

// ---- prefill: T new tokens of one sequence -----------------------------------------------------
// Rotate the T rows at positions pos0 … pos0+T−1, append k and v to the caches (which hold pos0
// rows already), then causal attention of the T queries over all pos0 + T keys, `block_rows`
// query rows at a time: per block, S = scale·Q·Kᵀ for every head in one strided-batched cuBLAS
// product (fp32 caches: SGEMM in the handle's math mode, which is pedantic fp32 unless the caller
// allowed TF32; bf16 caches: bf16 operands, fp32 compute and output), a masked softmax kernel
// writes P over S in place (bf16 P for bf16 caches), and O = P·V as a second batched product
// straight into the output rows. Working memory: the rotated queries (T·H·D in the cache dtype)
// and H·block_rows·(pos0+T) floats of scores, never T².
struct AttentionPrefillArgs {
    const float* q = nullptr;   // (T, H·D) unrotated query rows
    const float* k = nullptr;   // (T, H·D) unrotated key rows
    const float* v = nullptr;   // (T, H·D) value rows
    void* k_cache = nullptr;    // this sequence's K cache (capacity, H, D)
    void* v_cache = nullptr;
    int64_t capacity = 0;       // rows of each cache; pos0 + T must fit
    int64_t pos0 = 0;           // position of the first new row (rows already cached)
    const float* theta = nullptr;  // (D/2)
    float scale = 0.0f;
    KvDtype dtype = KvDtype::F32;
    float* o = nullptr;         // (T, H·D) output rows
    void* workspace = nullptr;  // attention_prefill_workspace_bytes(...) bytes, 256-byte aligned
    size_t workspace_bytes = 0;
    int T = 0, H = 0, D = 0;
    int block_rows = 0;         // query rows per step, ≥ 1
};

// The largest block of query rows (a multiple of 64 when T allows, ≥ 1) whose workspace fits in
// budget_bytes; the caller passes it as block_rows.
int attention_prefill_block_rows(int T, int H, int D, int64_t pos0, KvDtype dtype, size_t budget_bytes);
size_t attention_prefill_workspace_bytes(int T, int H, int D, int64_t pos0, int block_rows, KvDtype dtype);
// Binds `cublas` to `stream` (cublasSetStream) and issues everything there.
void launch_attention_prefill(cublasHandle_t cublas, const AttentionPrefillArgs& args, cudaStream_t stream);

}  // namespace retnet::cuda
