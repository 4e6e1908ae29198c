// SPDX-License-Identifier: GPL-3.0-or-later
#include "cpu/cpu_ops.h"

#include <cblas.h>

#include <cmath>

namespace retnet::cpu {

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void linear(const float* x, int T, int in, const Tensor& w, float* y) {
    const int out = static_cast<int>(w.dim(0));
    gemm(false, true, T, out, in, 1.0f, x, in, w.ptr(), in, 0.0f, y, out);
}

void rms_norm_rows(const float* x, float* y, int rows, int cols, const Tensor& weight, double eps) {
    for (int r = 0; r < rows; ++r) {
        const float* xr = x + static_cast<size_t>(r) * cols;
        float* yr = y + static_cast<size_t>(r) * cols;
        double mean_sq = 0;
        for (int j = 0; j < cols; ++j) mean_sq += static_cast<double>(xr[j]) * xr[j];
        const float inv = static_cast<float>(1.0 / std::sqrt(mean_sq / cols + eps));
        for (int j = 0; j < cols; ++j) yr[j] = xr[j] * inv * (weight.empty() ? 1.0f : weight.data[static_cast<size_t>(j)]);
    }
}

void rms_norm_rows(float* x, int rows, int cols, const Tensor& weight, double eps) {
    rms_norm_rows(x, x, rows, cols, weight, eps);
}

void rotate(float* x, int Dk, int64_t pos, const std::vector<float>& theta, Family family) {
    const int half = Dk / 2;
    const bool interleaved = family == Family::TorchScale;
    for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * theta[static_cast<size_t>(i)];
        const float c = std::cos(angle), s = std::sin(angle);
        const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        const float xa = x[a], xb = x[b];
        x[a] = xa * c - xb * s;
        x[b] = xb * c + xa * s;
    }
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }
float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

}  // namespace retnet::cpu
