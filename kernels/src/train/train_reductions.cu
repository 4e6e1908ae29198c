// SPDX-License-Identifier: GPL-3.0-or-later
// The gradient's squared norm (for clipping), taken in two stages, fixed partial sums and then
// their sum in index order, never with atomics, so one step gives the same bits on every run.
// (The embedding's and the norm weights' gradient sums live beside their ops: embedding.cu, norms.cu.)
#include <algorithm>

#include "../common.cuh"
#include "../cuda_check.h"
#include "train_kernels.h"

namespace retnet::cuda::train_kernels {

namespace {

constexpr int kThreads = 256;

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
