// SPDX-License-Identifier: GPL-3.0-or-later
// The training sums that many threads feed: the embedding gradient, the norm weights' gradients
// and the gradient's squared norm. Each is taken in two stages, fixed partial sums and then their
// sum in index order, never with atomics, so one step gives the same bits on every run.
#include <algorithm>

#include "../common.cuh"
#include "../cuda_check.h"
#include "retnet/error.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 128;

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

// One block per column: out[i] += Σ_p partials[p][i]; each thread sums a fixed stride of parts,
// then the block's fixed shuffle tree adds the threads' sums.
__global__ void sum_partials_kernel(const float* partials, int64_t n_parts, int cols, float* out) {
    __shared__ double shared[32];
    const int i = static_cast<int>(blockIdx.x);
    double sum = 0.0;
    for (int64_t p = threadIdx.x; p < n_parts; p += blockDim.x) sum += static_cast<double>(partials[p * cols + i]);
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) out[i] += static_cast<float>(sum);
}

__global__ void sum_of_squares_kernel(const float* g, int64_t n, double* partial) {
    __shared__ double shared[32];
    double ss = 0.0;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        ss += static_cast<double>(g[i]) * g[i];
    ss = block_sum(ss, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = ss;
}

__global__ void sum_doubles_kernel(const double* partial, int n, double* out) {
    __shared__ double shared[32];
    double sum = 0.0;
    for (int p = threadIdx.x; p < n; p += blockDim.x) sum += partial[p];
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) *out = sum;
}

}  // namespace

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

void sum_partials(const float* partials, int64_t n_parts, int cols, float* out, cudaStream_t stream) {
    if (n_parts == 0 || cols == 0) return;
    sum_partials_kernel<<<static_cast<unsigned>(cols), kReduceThreads, 0, stream>>>(partials, n_parts, cols, out);
    RETNET_CUDA_CHECK_LAUNCH();
}

void sum_of_squares(const float* g, int64_t n, double* partials, double* sum_sq, cudaStream_t stream) {
    if (n == 0) {
        RETNET_CUDA_CHECK(cudaMemsetAsync(sum_sq, 0, sizeof(double), stream));
        return;
    }
    const auto blocks = static_cast<int>(std::min<int64_t>(kSumOfSquaresPartials, ceil_div(n, kThreads)));
    sum_of_squares_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g, n, partials);
    RETNET_CUDA_CHECK_LAUNCH();
    sum_doubles_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, sum_sq);
    RETNET_CUDA_CHECK_LAUNCH();
}

}  // namespace retnet::cuda::train_kernels
