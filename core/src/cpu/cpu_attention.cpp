// SPDX-License-Identifier: GPL-3.0-or-later
#include "cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"
#include "retnet/cpu_ops.h"

namespace retnet::cpu {
namespace {

// Query rows per BLAS tile: the scores of a tile, (tile, P + T) floats, stay small whatever the length.
constexpr int kTile = 64;

// Row of scores s (n) in place: softmax over its first `valid` entries, the rest zero.
void softmax_prefix(float* s, int64_t n, int64_t valid) {
    float peak = -INFINITY;
    for (int64_t m = 0; m < valid; ++m) peak = std::max(peak, s[m]);
    double sum = 0.0;
    for (int64_t m = 0; m < valid; ++m) {
        s[m] = std::exp(s[m] - peak);
        sum += s[m];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t m = 0; m < valid; ++m) s[m] *= inv;
    std::fill(s + valid, s + n, 0.0f);
}

// q · k over D coordinates in kLanes independent partial sums, so that the compiler can keep them
// in one vector register (a single running sum is a chain it may not reorder).
constexpr int kLanes = 8;
float dot(const float* q, const float* k, int D) {
    float lane[kLanes] = {};
    int i = 0;
    for (; i + kLanes <= D; i += kLanes)
        for (int j = 0; j < kLanes; ++j) lane[j] += q[i + j] * k[i + j];
    float sum = 0.0f;
    for (; i < D; ++i) sum += q[i] * k[i];
    for (int j = 0; j < kLanes; ++j) sum += lane[j];
    return sum;
}

// Head h, query t alone: scores over keys [0, P + t], then the weighted sum of the values.
void attend_one(const AttentionInputs& in, int h, int t, std::vector<float>& scores) {
    const int D = in.head_dim;
    const int64_t stride = static_cast<int64_t>(in.n_heads) * D, keys = in.position + t + 1;
    const float* q = in.q + t * in.ldq + static_cast<int64_t>(h) * D;
    scores.resize(static_cast<size_t>(keys));
    for (int64_t m = 0; m < keys; ++m) {
        const float* k = in.K + m * stride + static_cast<int64_t>(h) * D;
        scores[static_cast<size_t>(m)] = dot(q, k, D);
    }
    softmax_prefix(scores.data(), keys, keys);
    float* y = in.y + t * in.ldy + static_cast<int64_t>(h) * D;
    std::fill(y, y + D, 0.0f);
    for (int64_t m = 0; m < keys; ++m) {
        const float p = scores[static_cast<size_t>(m)];
        const float* v = in.V + m * stride + static_cast<int64_t>(h) * D;
        for (int i = 0; i < D; ++i) y[i] += p * v[i];
    }
}

// Head h, queries [t0, t1): S = Q Kᵀ over keys [0, P + t1), the causal softmax, then Y = S V.
void attend_tile(const AttentionInputs& in, int h, int t0, int t1, std::vector<float>& scores) {
    const int D = in.head_dim, rows = t1 - t0;
    const int64_t stride = static_cast<int64_t>(in.n_heads) * D, keys = in.position + t1;
    const int64_t head = static_cast<int64_t>(h) * D;
    scores.resize(static_cast<size_t>(rows * keys));  // (rows, keys)
    gemm<float>(false, true, rows, keys, D, 1.0f, in.q + t0 * in.ldq + head, in.ldq, in.K + head, stride, 0.0f,
                scores.data(), keys);
    for (int r = 0; r < rows; ++r)
        softmax_prefix(scores.data() + static_cast<int64_t>(r) * keys, keys, in.position + t0 + r + 1);
    gemm<float>(false, false, rows, D, keys, 1.0f, scores.data(), keys, in.V + head, stride, 0.0f,
                in.y + t0 * in.ldy + head, in.ldy);
}

}  // namespace

void attention_forward(std::span<const AttentionInputs> sequences, bool token_by_token) {
    struct Job {
        const AttentionInputs* in;
        int head, t0, t1;  // queries [t0, t1)
        bool loop;
    };
    std::vector<Job> jobs;
    for (const AttentionInputs& in : sequences) {
        const bool loop = token_by_token || in.T == 1;
        const int step = loop ? 1 : kTile;
        for (int h = 0; h < in.n_heads; ++h)
            for (int t0 = 0; t0 < in.T; t0 += step) jobs.push_back({&in, h, t0, std::min(in.T, t0 + step), loop});
    }
    parallel_blas_blocks(static_cast<int64_t>(jobs.size()), [&](int64_t j0, int64_t j1, int) {
        std::vector<float> scores;
        for (int64_t j = j0; j < j1; ++j) {
            const Job& job = jobs[static_cast<size_t>(j)];
            if (job.loop)
                attend_one(*job.in, job.head, job.t0, scores);
            else
                attend_tile(*job.in, job.head, job.t0, job.t1, scores);
        }
    });
}

}  // namespace retnet::cpu
