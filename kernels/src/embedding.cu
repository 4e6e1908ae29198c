// SPDX-License-Identifier: GPL-3.0-or-later
// Embedding: the gather (inference and training) and its gradient, a scatter-add taken in two
// fixed-order stages over the batch's rows grouped by token (no atomics: bit-reproducible).
#include <algorithm>
#include <string>

#include "common.cuh"
#include "cuda_check.h"
#include "layer_kernels.h"
#include "ops.h"
#include "retnet/error.h"

namespace retnet::cuda::layer_kernels {

namespace {

__global__ void embedding_forward_kernel(const int32_t* tokens, const float* embed, float* x, int d, float scale) {
    const int64_t r = blockIdx.x;
    const float* row = embed + static_cast<int64_t>(tokens[r]) * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) x[r * d + i] = scale * row[i];
}

// One block per segment: partial (n_segments, d) = Σ of its rows of dx, in row order.
__global__ void embedding_segment_kernel(const int32_t* rows, const int32_t* segment_start, const float* dx,
                                         float* partial, int d) {
    const int64_t s = blockIdx.x;
    const int32_t first = segment_start[s], last = segment_start[s + 1];
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float sum = 0.0f;
        for (int32_t k = first; k < last; ++k) sum += dx[static_cast<int64_t>(rows[k]) * d + i];
        partial[s * d + i] = sum;
    }
}

// One block per token: dE[v] += Σ of its segments' partials, in segment order.
__global__ void embedding_token_kernel(const int32_t* token_segment, const float* partial, float* d_embed, int d) {
    const int64_t v = blockIdx.x;
    const int32_t first = token_segment[v], last = token_segment[v + 1];
    if (first == last) return;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float sum = 0.0f;
        for (int32_t s = first; s < last; ++s) sum += partial[static_cast<int64_t>(s) * d + i];
        d_embed[v * d + i] += sum;
    }
}

}  // namespace

void embedding_forward(const int32_t* tokens, const float* embed, float* x, int64_t rows, int d, float scale,
                       cudaStream_t stream) {
    if (rows == 0) return;
    embedding_forward_kernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(tokens, embed, x, d, scale);
    RETNET_CUDA_CHECK_LAUNCH();
}

TokenRowGroups group_rows_by_token(const int32_t* tokens, int64_t n, int vocab, int max_segment_rows) {
    if (max_segment_rows < 1) throw Error("group_rows_by_token: segments need at least one row");
    TokenRowGroups g;
    std::vector<int32_t> count(static_cast<size_t>(vocab) + 1, 0);
    for (int64_t r = 0; r < n; ++r) {
        if (tokens[r] < 0 || tokens[r] >= vocab)
            throw Error("group_rows_by_token: token " + std::to_string(tokens[r]) + " outside the vocabulary");
        ++count[static_cast<size_t>(tokens[r]) + 1];
    }
    for (int v = 0; v < vocab; ++v) count[static_cast<size_t>(v) + 1] += count[static_cast<size_t>(v)];
    // Counting sort: stable, so each token's rows stay in position order.
    g.rows.resize(static_cast<size_t>(n));
    std::vector<int32_t> next(count.begin(), count.end() - 1);
    for (int64_t r = 0; r < n; ++r) g.rows[static_cast<size_t>(next[static_cast<size_t>(tokens[r])]++)] = static_cast<int32_t>(r);
    g.token_segment.assign(static_cast<size_t>(vocab) + 1, 0);
    g.segment_start.clear();
    for (int v = 0; v < vocab; ++v) {
        g.token_segment[static_cast<size_t>(v)] = static_cast<int32_t>(g.segment_start.size());
        for (int32_t k = count[static_cast<size_t>(v)]; k < count[static_cast<size_t>(v) + 1]; k += max_segment_rows)
            g.segment_start.push_back(k);
    }
    g.token_segment[static_cast<size_t>(vocab)] = static_cast<int32_t>(g.segment_start.size());
    g.segment_start.push_back(static_cast<int32_t>(n));
    return g;
}

int64_t max_token_segments(int64_t rows, int vocab) {
    return (rows + kEmbeddingSegmentRows - 1) / kEmbeddingSegmentRows + std::min<int64_t>(rows, vocab);
}

void embedding_backward(const DeviceTokenRowGroups& groups, const float* dx, float* partial, float* d_embed, int d,
                        cudaStream_t stream) {
    if (groups.n_segments == 0) return;
    embedding_segment_kernel<<<static_cast<unsigned>(groups.n_segments), 128, 0, stream>>>(
        groups.rows, groups.segment_start, dx, partial, d);
    RETNET_CUDA_CHECK_LAUNCH();
    embedding_token_kernel<<<static_cast<unsigned>(groups.vocab), 128, 0, stream>>>(groups.token_segment, partial,
                                                                                    d_embed, d);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::layer_kernels

namespace retnet::cuda {

void launch_embedding(const int32_t* d_tokens, const float* d_embed, float* d_x, int T, int d, float scale,
                      cudaStream_t stream) {
    layer_kernels::embedding_forward(d_tokens, d_embed, d_x, T, d, scale, stream);
}

}  // namespace retnet::cuda
