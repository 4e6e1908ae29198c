// SPDX-License-Identifier: GPL-3.0-or-later
// The CPU op library (retnet/cpu_ops.h) outside the retention: GEMM, linear, RMSNorm,
// rotary, GLU, the fla output gate and the cross-entropy, forward beside backward; and the
// inference backend's Tensor-shaped calls (cpu/cpu_ops.h) on top of them.
#include "cpu/cpu_ops.h"

#include <cblas.h>
#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "cpu/parallel.h"
#include "retnet/memory_limit.h"

namespace retnet::cpu {

void fit_blas_threads_to_address_limit() {
    // glibc reserves 64 MiB of address space for each thread's malloc arena: under a cap, 16
    // threads reserved a gigabyte of it before any work. Two arenas serve every thread then.
    if (address_space_limit_binds()) mallopt(M_ARENA_MAX, 2);
    const int fit = blas_threads_that_fit();
    if (fit == 0) return;
    if (fit > 1) openblas_set_num_threads(fit);
    // a process this one starts holds its own threads again
    ::unsetenv("OPENBLAS_NUM_THREADS");
    ::unsetenv(kBlasThreadsHeld);
}

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    const BlasCallGuard guard;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
                static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    const BlasCallGuard guard;
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
                static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

// ---- linear ----

template <typename T>
void linear_forward(const T* x, const T* W, int64_t rows, int64_t in, int64_t out, T* y) {
    gemm<T>(false, true, rows, out, in, T(1), x, in, W, in, T(0), y, out);
}

template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, int64_t rows, int64_t in, int64_t out, T* dx,
                     bool accumulate_dx, T* dW) {
    if (dx) gemm<T>(false, false, rows, in, out, T(1), dy, out, W, in, accumulate_dx ? T(1) : T(0), dx, in);
    gemm<T>(true, false, out, in, rows, T(1), dy, out, x, in, T(1), dW, in);
}

namespace {

// Forwards are independent per row, so their split does not change a bit: each block gets at
// least this many elements of work, so that the inference backend's calls (up to ~1024 rows of a
// few hundred columns) run on the calling thread as before instead of paying for thread starts;
// training batches (thousands of rows) still split.
constexpr int64_t kForwardBlockElements = 1 << 19;
int64_t forward_block_rows(int64_t row_width, int64_t at_least) {
    return std::max(at_least, kForwardBlockElements / std::max<int64_t>(1, row_width));
}

// Sums per-block partial vectors in block order into `out` (deterministic reduction).
template <typename T>
void add_partials(const std::vector<std::vector<T>>& partials, int used, int64_t n, T* out) {
    for (int b = 0; b < used; ++b)
        for (int64_t i = 0; i < n; ++i) out[i] += partials[static_cast<size_t>(b)][static_cast<size_t>(i)];
}

// 1 / √(mean(x²) + eps) of n values, the sum in double.
template <typename T>
T inverse_rms(const T* x, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    return static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
}

}  // namespace

// ---- RMSNorm ----

template <typename T>
void rmsnorm_forward(const T* x, const T* w, int64_t rows, int64_t dim, double eps, T* y, T* rstd) {
    parallel_blocks(rows, forward_block_rows(dim, 64), [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* xr = x + r * dim;
            T* yr = y + r * dim;
            const T s = inverse_rms(xr, dim, eps);
            if (rstd) rstd[r] = s;
            for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * s * (w ? w[i] : T(1));
        }
    });
}

template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, int64_t rows, int64_t dim, T* dx,
                      T* dw) {
    const int blocks = block_count(rows, 64);
    std::vector<std::vector<T>> partial(static_cast<size_t>(blocks), std::vector<T>(static_cast<size_t>(dim), T(0)));
    const int used = parallel_blocks(rows, 64, [&](int64_t r0, int64_t r1, int b) {
        std::vector<T>& pdw = partial[static_cast<size_t>(b)];
        for (int64_t r = r0; r < r1; ++r) {
            const T* xr = x + r * dim;
            const T* dyr = dy + r * dim;
            const T s = rstd[r];
            double dot = 0;  // Σ dxhat·xhat
            for (int64_t i = 0; i < dim; ++i) {
                const T xhat = xr[i] * s;
                const T dxhat = dyr[i] * (w ? w[i] : T(1));
                pdw[static_cast<size_t>(i)] += dyr[i] * xhat;
                dot += static_cast<double>(dxhat) * xhat;
            }
            const T mean = static_cast<T>(dot / static_cast<double>(dim));
            T* dxr = dx + r * dim;
            for (int64_t i = 0; i < dim; ++i) {
                const T xhat = xr[i] * s;
                const T dxhat = dyr[i] * (w ? w[i] : T(1));
                dxr[i] += s * (dxhat - xhat * mean);
            }
        }
    });
    if (dw) add_partials(partial, used, dim, dw);
}

// ---- rotary ----


namespace {

// Every head vector of x: forward, times the scale then rotated by its position's angles;
// backward (the transpose), rotated by −angle then times the scale.
template <typename T>
void rotate_rows(T* x, const RotaryShape& sh, const float* theta, RotaryPairs pairs, double scale, int64_t pos0,
                 bool backward) {
    const int64_t half = sh.head_dim / 2;
    // (T, Dk/2) cos/sin of the float angles (rotary_angle), taken in T.
    std::vector<T> cos_t(static_cast<size_t>(sh.seq_len * half)), sin_t(cos_t.size());
    for (int64_t t = 0; t < sh.seq_len; ++t)
        for (int64_t i = 0; i < half; ++i) {
            const T angle = static_cast<T>(rotary_angle(pos0 + t, theta[i]));
            cos_t[static_cast<size_t>(t * half + i)] = std::cos(angle);
            sin_t[static_cast<size_t>(t * half + i)] = backward ? -std::sin(angle) : std::sin(angle);
        }
    const T factor = static_cast<T>(scale);
    const int64_t width = sh.n_heads * sh.head_dim;
    parallel_blocks(sh.batch * sh.seq_len, forward_block_rows(width, 64), [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t t = r % sh.seq_len;
            const T* c = cos_t.data() + t * half;
            const T* s = sin_t.data() + t * half;
            T* row = x + r * width;
            if (!backward && scale != 1.0)
                for (int64_t i = 0; i < width; ++i) row[i] *= factor;
            for (int64_t h = 0; h < sh.n_heads; ++h)
                for (int64_t i = 0; i < half; ++i) rotate_pair(row + h * sh.head_dim, i, half, pairs, c[i], s[i]);
            if (backward && scale != 1.0)
                for (int64_t i = 0; i < width; ++i) row[i] *= factor;
        }
    });
}

}  // namespace

template <typename T>
void rotary_forward(T* x, const RotaryShape& shape, const float* theta, RotaryPairs pairs, double scale,
                    int64_t pos0) {
    rotate_rows(x, shape, theta, pairs, scale, pos0, false);
}

template <typename T>
void rotary_backward(T* dx, const RotaryShape& shape, const float* theta, RotaryPairs pairs, double scale,
                     int64_t pos0) {
    rotate_rows(dx, shape, theta, pairs, scale, pos0, true);
}

// ---- GLU ----

template <typename T>
void glu_forward(const T* a, const T* b, int64_t n, Activation act, T* h) {
    const bool gelu_act = act == Activation::Gelu;
    parallel_blocks(n, kForwardBlockElements, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) h[i] = (gelu_act ? gelu(a[i]) : silu(a[i])) * b[i];
    });
}

template <typename T>
void glu_backward(const T* a, const T* b, const T* dh, int64_t n, Activation act, T* da, T* db) {
    const bool gelu_act = act == Activation::Gelu;
    parallel_blocks(n, 16384, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            da[i] = dh[i] * b[i] * (gelu_act ? gelu_grad(a[i]) : silu_grad(a[i]));
            db[i] = dh[i] * (gelu_act ? gelu(a[i]) : silu(a[i]));
        }
    });
}

// ---- fla output gate ----

template <typename T>
void head_norm_gate_forward(const T* o, const T* g, const T* w, int64_t rows, int64_t n_heads, int64_t head_dim,
                            double eps, T* y, T* rstd) {
    const int64_t width = n_heads * head_dim;
    parallel_blocks(rows, forward_block_rows(width, 32), [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t h = 0; h < n_heads; ++h) {
                const int64_t off = r * width + h * head_dim;
                const T s = inverse_rms(o + off, head_dim, eps);
                if (rstd) rstd[r * n_heads + h] = s;
                for (int64_t i = 0; i < head_dim; ++i)
                    y[off + i] = o[off + i] * s * (w ? w[i] : T(1)) * silu(g[off + i]);
            }
    });
}

template <typename T>
void head_norm_gate_backward(const T* o, const T* g, const T* w, const T* rstd, const T* dy, int64_t rows,
                             int64_t n_heads, int64_t head_dim, T* d_o, T* dg, T* dw) {
    const int64_t width = n_heads * head_dim;
    const int blocks = block_count(rows, 32);
    std::vector<std::vector<T>> partial(static_cast<size_t>(blocks), std::vector<T>(static_cast<size_t>(head_dim), T(0)));
    const int used = parallel_blocks(rows, 32, [&](int64_t r0, int64_t r1, int b) {
        std::vector<T>& pdw = partial[static_cast<size_t>(b)];
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t h = 0; h < n_heads; ++h) {
                const int64_t off = r * width + h * head_dim;
                const T s = rstd[r * n_heads + h];
                double dot = 0;
                for (int64_t i = 0; i < head_dim; ++i) {
                    const T xhat = o[off + i] * s;
                    const T wi = w ? w[i] : T(1);
                    const T dn = dy[off + i] * silu(g[off + i]);
                    dg[off + i] = dy[off + i] * xhat * wi * silu_grad(g[off + i]);
                    pdw[static_cast<size_t>(i)] += dn * xhat;
                    dot += static_cast<double>(dn * wi) * xhat;
                }
                const T mean = static_cast<T>(dot / static_cast<double>(head_dim));
                for (int64_t i = 0; i < head_dim; ++i) {
                    const T xhat = o[off + i] * s;
                    const T dxhat = dy[off + i] * silu(g[off + i]) * (w ? w[i] : T(1));
                    d_o[off + i] = s * (dxhat - xhat * mean);
                }
            }
    });
    if (dw) add_partials(partial, used, head_dim, dw);
}

// ---- cross-entropy ----

template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab, T* dlogits,
                     double grad_scale) {
    const int blocks = block_count(rows, 16);
    std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
    const int used = parallel_blocks(rows, 16, [&](int64_t r0, int64_t r1, int b) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* x = logits + r * vocab;
            T mx = x[0];
            for (int64_t i = 1; i < vocab; ++i) mx = std::max(mx, x[i]);
            double sum = 0;
            for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
            const double lse = static_cast<double>(mx) + std::log(sum);
            partial[static_cast<size_t>(b)] += lse - static_cast<double>(x[targets[r]]);
            if (dlogits) {
                T* d = dlogits + r * vocab;
                for (int64_t i = 0; i < vocab; ++i)
                    d[i] = static_cast<T>(std::exp(static_cast<double>(x[i]) - lse) * grad_scale);
                d[targets[r]] -= static_cast<T>(grad_scale);
            }
        }
    });
    double total = 0;
    for (int b = 0; b < used; ++b) total += partial[static_cast<size_t>(b)];
    return total;
}

#define RETNET_INSTANTIATE_DENSE_OPS(T)                                                                          \
    template void linear_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);                          \
    template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, bool, T*);     \
    template void rmsnorm_forward<T>(const T*, const T*, int64_t, int64_t, double, T*, T*);                      \
    template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, T*, T*);         \
    template void rotary_forward<T>(T*, const RotaryShape&, const float*, RotaryPairs, double, int64_t);        \
    template void rotary_backward<T>(T*, const RotaryShape&, const float*, RotaryPairs, double, int64_t);       \
    template void glu_forward<T>(const T*, const T*, int64_t, Activation, T*);                                   \
    template void glu_backward<T>(const T*, const T*, const T*, int64_t, Activation, T*, T*);                    \
    template void head_norm_gate_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, double, T*, \
                                            T*);                                                                 \
    template void head_norm_gate_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, int64_t, \
                                             int64_t, T*, T*, T*);                                               \
    template double cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, T*, double);

RETNET_INSTANTIATE_DENSE_OPS(float)
RETNET_INSTANTIATE_DENSE_OPS(double)

// ---- the inference backend's Tensor-shaped calls ----

void linear(const float* x, int64_t T, int64_t in, const Tensor& w, float* y, bool accumulate, int64_t ldy) {
    const int64_t out = w.dim(0);
    if (ldy == 0) ldy = out;
    if (w.storage() == Storage::BF16)
        gemm_bf16(T, out, in, x, in, w.bf16.data(), y, ldy, accumulate);
    else if (T == 1) {  // decode: OpenBLAS's sgemm with one row runs at a fraction of sgemv's bandwidth
        const BlasCallGuard guard;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(out), static_cast<blasint>(in), 1.0f,
                    w.ptr(), static_cast<blasint>(in), x, 1, accumulate ? 1.0f : 0.0f, y, 1);
    } else
        gemm<float>(false, true, T, out, in, 1.0f, x, in, w.ptr(), in, accumulate ? 1.0f : 0.0f, y, ldy);
}

void rms_norm_rows(const float* x, float* y, int rows, int cols, const Tensor& weight, double eps) {
    rmsnorm_forward<float>(x, weight.empty() ? nullptr : weight.ptr(), rows, cols, eps, y, nullptr);
}

void rms_norm_rows(float* x, int rows, int cols, const Tensor& weight, double eps) {
    rms_norm_rows(x, x, rows, cols, weight, eps);
}


}  // namespace retnet::cpu
