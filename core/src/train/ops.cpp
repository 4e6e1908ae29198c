// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/train_ops.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "train/parallel.h"

namespace retnet::train {

namespace {
std::atomic<int> g_threads{0};
}

int block_count(int64_t n, int64_t min_block) {
    const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_block));
    return static_cast<int>(std::min<int64_t>(ops::num_threads(), by_size));
}

int parallel_blocks(int64_t n, int64_t min_block,
                    const std::function<void(int64_t, int64_t, int)>& fn) {
    const int blocks = block_count(n, min_block);
    auto range = [&](int b, int64_t& begin, int64_t& end) {
        begin = n * b / blocks;
        end = n * (b + 1) / blocks;
    };
    if (blocks == 1) {
        fn(0, n, 0);
        return 1;
    }
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(blocks - 1));
    for (int b = 1; b < blocks; ++b) {
        workers.emplace_back([&, b] {
            int64_t begin, end;
            range(b, begin, end);
            fn(begin, end, b);
        });
    }
    int64_t begin, end;
    range(0, begin, end);
    fn(begin, end, 0);
    for (auto& w : workers) w.join();
    return blocks;
}

void with_single_threaded_blas(const std::function<void()>& fn) {
    const int previous = openblas_get_num_threads();
    openblas_set_num_threads(1);
    try {
        fn();
    } catch (...) {
        openblas_set_num_threads(previous);
        throw;
    }
    openblas_set_num_threads(previous);
}

}  // namespace retnet::train

namespace retnet::train::ops {

void set_num_threads(int n) { g_threads = std::max(0, n); }
int num_threads() {
    const int n = g_threads.load();
    if (n > 0) return n;
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
                static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
                static_cast<blasint>(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
                static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
                static_cast<blasint>(ldc));
}

template <typename T>
void linear_forward(const T* x, const T* W, int64_t rows, int64_t in, int64_t out, T* y) {
    gemm<T>(false, true, rows, out, in, T(1), x, in, W, in, T(0), y, out);
}

template <typename T>
void linear_backward(const T* x, const T* W, const T* dy, int64_t rows, int64_t in, int64_t out,
                     T* dx, bool accumulate_dx, T* dW) {
    if (dx) gemm<T>(false, false, rows, in, out, T(1), dy, out, W, in, accumulate_dx ? T(1) : T(0), dx, in);
    gemm<T>(true, false, out, in, rows, T(1), dy, out, x, in, T(1), dW, in);
}

namespace {

template <typename T>
T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
}

// Sums per-block partial vectors in block order into `out` (deterministic reduction).
template <typename T>
void add_partials(const std::vector<std::vector<T>>& partials, int used, int64_t n, T* out) {
    for (int b = 0; b < used; ++b)
        for (int64_t i = 0; i < n; ++i) out[i] += partials[static_cast<size_t>(b)][static_cast<size_t>(i)];
}

}  // namespace

template <typename T>
void rmsnorm_forward(const T* x, const T* w, int64_t rows, int64_t dim, double eps, T* y, T* rstd) {
    parallel_blocks(rows, 64, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* xr = x + r * dim;
            T* yr = y + r * dim;
            double ss = 0;
            for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
            const T s = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
            rstd[r] = s;
            for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * s * (w ? w[i] : T(1));
        }
    });
}

template <typename T>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, int64_t rows,
                      int64_t dim, T* dx, T* dw) {
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

namespace {

template <typename T>
void rotate(T* x, int64_t batch, int64_t seq_len, int64_t n_heads, int64_t head_dim,
            const float* theta, double scale, double direction) {
    const int64_t half = head_dim / 2;
    // (T, Dk/2) cos/sin table, computed in double from the float frequencies.
    std::vector<T> cos_t(static_cast<size_t>(seq_len * half)), sin_t(cos_t.size());
    for (int64_t t = 0; t < seq_len; ++t)
        for (int64_t i = 0; i < half; ++i) {
            const double angle = static_cast<double>(t) * static_cast<double>(theta[i]);
            cos_t[static_cast<size_t>(t * half + i)] = static_cast<T>(std::cos(angle) * scale);
            sin_t[static_cast<size_t>(t * half + i)] = static_cast<T>(direction * std::sin(angle) * scale);
        }
    const int64_t width = n_heads * head_dim;
    parallel_blocks(batch * seq_len, 64, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t t = r % seq_len;
            const T* c = cos_t.data() + t * half;
            const T* s = sin_t.data() + t * half;
            for (int64_t h = 0; h < n_heads; ++h) {
                T* xh = x + r * width + h * head_dim;
                for (int64_t i = 0; i < half; ++i) {
                    const T a = xh[i], b = xh[i + half];
                    xh[i] = a * c[i] - b * s[i];
                    xh[i + half] = a * s[i] + b * c[i];
                }
            }
        }
    });
}

}  // namespace

template <typename T>
void rotary_forward(T* x, int64_t batch, int64_t seq_len, int64_t n_heads, int64_t head_dim,
                    const float* theta, double scale) {
    rotate(x, batch, seq_len, n_heads, head_dim, theta, scale, 1.0);
}

template <typename T>
void rotary_backward(T* dx, int64_t batch, int64_t seq_len, int64_t n_heads, int64_t head_dim,
                     const float* theta, double scale) {
    rotate(dx, batch, seq_len, n_heads, head_dim, theta, scale, -1.0);
}

namespace {

// γ^k for k = 0..n−1, in double then rounded to T.
template <typename T>
std::vector<T> decay_powers(float log_decay, int64_t n) {
    std::vector<T> p(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
        p[static_cast<size_t>(k)] = static_cast<T>(std::exp(static_cast<double>(k) * log_decay));
    return p;
}

// A (L, L) ← A ⊙ D with D_ij = γ^(i−j) for j ≤ i, 0 above the diagonal.
template <typename T>
void apply_decay_mask(T* A, int64_t L, const std::vector<T>& pw) {
    for (int64_t i = 0; i < L; ++i) {
        T* row = A + i * L;
        for (int64_t j = 0; j <= i; ++j) row[j] *= pw[static_cast<size_t>(i - j)];
        for (int64_t j = i + 1; j < L; ++j) row[j] = T(0);
    }
}

// Calls fn(b, h) for every (sequence, head) pair across threads, BLAS single-threaded inside.
void for_each_sequence_head(int64_t batch, int64_t n_heads, const std::function<void(int64_t, int64_t)>& fn) {
    with_single_threaded_blas([&] {
        parallel_blocks(batch * n_heads, 1, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) fn(i / n_heads, i % n_heads);
        });
    });
}


}  // namespace

template <typename T>
void retention_forward(const T* q, const T* k, const T* v, const RetentionShape& s,
                       const float* log_decay, int chunk, T* o) {
    const int64_t Tn = s.seq_len, Dk = s.head_dim_k, Dv = s.head_dim_v;
    const int64_t ldk = s.n_heads * Dk, ldv = s.n_heads * Dv;
    const int64_t C = chunk > 0 ? std::min<int64_t>(chunk, Tn) : Tn;
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const T* Q = q + b * Tn * ldk + h * Dk;
        const T* K = k + b * Tn * ldk + h * Dk;
        const T* V = v + b * Tn * ldv + h * Dv;
        T* O = o + b * Tn * ldv + h * Dv;
        const std::vector<T> pw = decay_powers<T>(log_decay[h], C + 1);
        std::vector<T> A(static_cast<size_t>(C * C));
        std::vector<T> S(static_cast<size_t>(Dk * Dv), T(0));  // (Dk, Dv) state before the chunk
        std::vector<T> Qs(static_cast<size_t>(C * Dk)), Vs(static_cast<size_t>(C * Dv));
        for (int64_t c0 = 0; c0 < Tn; c0 += C) {
            const int64_t L = std::min(C, Tn - c0);
            const T* Qc = Q + c0 * ldk;
            const T* Kc = K + c0 * ldk;
            const T* Vc = V + c0 * ldv;
            T* Oc = O + c0 * ldv;
            gemm<T>(false, true, L, L, Dk, T(1), Qc, ldk, Kc, ldk, T(0), A.data(), L);
            apply_decay_mask(A.data(), L, pw);
            gemm<T>(false, false, L, Dv, L, T(1), A.data(), L, Vc, ldv, T(0), Oc, ldv);
            if (c0 > 0) {
                // O_c += diag(γ^(i+1)) Q_c S
                for (int64_t i = 0; i < L; ++i)
                    for (int64_t j = 0; j < Dk; ++j)
                        Qs[static_cast<size_t>(i * Dk + j)] = Qc[i * ldk + j] * pw[static_cast<size_t>(i + 1)];
                gemm<T>(false, false, L, Dv, Dk, T(1), Qs.data(), Dk, S.data(), Dv, T(1), Oc, ldv);
            }
            if (c0 + L >= Tn) break;  // no later chunk reads the state
            // S ← γ^L S + K_cᵀ diag(γ^(L−1−j)) V_c
            for (int64_t j = 0; j < L; ++j)
                for (int64_t e = 0; e < Dv; ++e)
                    Vs[static_cast<size_t>(j * Dv + e)] = Vc[j * ldv + e] * pw[static_cast<size_t>(L - 1 - j)];
            for (T& x : S) x *= pw[static_cast<size_t>(L)];
            gemm<T>(true, false, Dk, Dv, L, T(1), Kc, ldk, Vs.data(), Dv, T(1), S.data(), Dv);
        }
    });
}

template <typename T>
void retention_backward(const T* q, const T* k, const T* v, const T* d_o, const RetentionShape& s,
                        const float* log_decay, int chunk, T* dq, T* dk, T* dv) {
    const int64_t Tn = s.seq_len, Dk = s.head_dim_k, Dv = s.head_dim_v;
    const int64_t ldk = s.n_heads * Dk, ldv = s.n_heads * Dv;
    const int64_t C = chunk > 0 ? std::min<int64_t>(chunk, Tn) : Tn;
    const int64_t n_chunks = (Tn + C - 1) / C;
    for_each_sequence_head(s.batch, s.n_heads, [&](int64_t b, int64_t h) {
        const int64_t q_off = b * Tn * ldk + h * Dk, v_off = b * Tn * ldv + h * Dv;
        const T* Q = q + q_off;
        const T* K = k + q_off;
        const T* V = v + v_off;
        const T* dO = d_o + v_off;
        T* dQ = dq + q_off;
        T* dK = dk + q_off;
        T* dV = dv + v_off;
        const std::vector<T> pw = decay_powers<T>(log_decay[h], C + 1);
        const size_t state = static_cast<size_t>(Dk * Dv);
        // states[c] = S before chunk c (n_chunks, Dk, Dv), recomputed.
        std::vector<T> states(static_cast<size_t>(n_chunks) * state, T(0));
        std::vector<T> Vs(static_cast<size_t>(C * Dv)), Ks(static_cast<size_t>(C * Dk)),
            dOs(static_cast<size_t>(C * Dv));
        for (int64_t c = 1; c < n_chunks; ++c) {
            const int64_t c0 = (c - 1) * C, L = C;
            T* S = states.data() + static_cast<size_t>(c) * state;
            const T* Sprev = states.data() + static_cast<size_t>(c - 1) * state;
            for (size_t i = 0; i < state; ++i) S[i] = Sprev[i] * pw[static_cast<size_t>(L)];
            for (int64_t j = 0; j < L; ++j)
                for (int64_t e = 0; e < Dv; ++e)
                    Vs[static_cast<size_t>(j * Dv + e)] = V[(c0 + j) * ldv + e] * pw[static_cast<size_t>(L - 1 - j)];
            gemm<T>(true, false, Dk, Dv, L, T(1), K + c0 * ldk, ldk, Vs.data(), Dv, T(1), S, Dv);
        }
        std::vector<T> A(static_cast<size_t>(C * C)), dA(A.size());
        std::vector<T> dS(state, T(0));  // ∂L/∂S after the current chunk
        for (int64_t c = n_chunks - 1; c >= 0; --c) {
            const int64_t c0 = c * C, L = std::min(C, Tn - c0);
            const T* Qc = Q + c0 * ldk;
            const T* Kc = K + c0 * ldk;
            const T* Vc = V + c0 * ldv;
            const T* dOc = dO + c0 * ldv;
            T* dQc = dQ + c0 * ldk;
            T* dKc = dK + c0 * ldk;
            T* dVc = dV + c0 * ldv;
            const T* Sprev = states.data() + static_cast<size_t>(c) * state;
            const bool has_after = c < n_chunks - 1;  // dS is non-zero
            gemm<T>(false, true, L, L, Dk, T(1), Qc, ldk, Kc, ldk, T(0), A.data(), L);
            apply_decay_mask(A.data(), L, pw);
            gemm<T>(false, true, L, L, Dv, T(1), dOc, ldv, Vc, ldv, T(0), dA.data(), L);
            apply_decay_mask(dA.data(), L, pw);
            // dV_c = Aᵀ dO_c + diag(γ^(L−1−j)) K_c dS
            gemm<T>(true, false, L, Dv, L, T(1), A.data(), L, dOc, ldv, T(0), dVc, ldv);
            // dQ_c = dA K_c + diag(γ^(i+1)) dO_c S_prevᵀ
            gemm<T>(false, false, L, Dk, L, T(1), dA.data(), L, Kc, ldk, T(0), dQc, ldk);
            // dK_c = dAᵀ Q_c + diag(γ^(L−1−j)) V_c dSᵀ
            gemm<T>(true, false, L, Dk, L, T(1), dA.data(), L, Qc, ldk, T(0), dKc, ldk);
            if (has_after) {
                for (int64_t j = 0; j < L; ++j) {
                    const T g = pw[static_cast<size_t>(L - 1 - j)];
                    for (int64_t e = 0; e < Dk; ++e) Ks[static_cast<size_t>(j * Dk + e)] = Kc[j * ldk + e] * g;
                    for (int64_t e = 0; e < Dv; ++e) Vs[static_cast<size_t>(j * Dv + e)] = Vc[j * ldv + e] * g;
                }
                gemm<T>(false, false, L, Dv, Dk, T(1), Ks.data(), Dk, dS.data(), Dv, T(1), dVc, ldv);
                gemm<T>(false, true, L, Dk, Dv, T(1), Vs.data(), Dv, dS.data(), Dv, T(1), dKc, ldk);
            }
            if (c > 0) {
                for (int64_t i = 0; i < L; ++i)
                    for (int64_t e = 0; e < Dv; ++e)
                        dOs[static_cast<size_t>(i * Dv + e)] = dOc[i * ldv + e] * pw[static_cast<size_t>(i + 1)];
                gemm<T>(false, true, L, Dk, Dv, T(1), dOs.data(), Dv, Sprev, Dv, T(1), dQc, ldk);
                // dS_prev = γ^L dS + Q_cᵀ diag(γ^(i+1)) dO_c
                for (T& x : dS) x *= pw[static_cast<size_t>(L)];
                gemm<T>(true, false, Dk, Dv, L, T(1), Qc, ldk, dOs.data(), Dv, T(1), dS.data(), Dv);
            }
        }
    });
}

namespace {
template <typename T>
T silu(T x) {
    return x * sigmoid(x);
}
template <typename T>
T silu_grad(T x) {
    const T s = sigmoid(x);
    return s * (T(1) + x * (T(1) - s));
}
}  // namespace

template <typename T>
void head_norm_gate_forward(const T* o, const T* g, const T* w, int64_t rows, int64_t n_heads,
                            int64_t head_dim, double eps, T* y, T* rstd) {
    const int64_t width = n_heads * head_dim;
    parallel_blocks(rows, 32, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t h = 0; h < n_heads; ++h) {
                const int64_t off = r * width + h * head_dim;
                double ss = 0;
                for (int64_t i = 0; i < head_dim; ++i) ss += static_cast<double>(o[off + i]) * o[off + i];
                const T s = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(head_dim) + eps));
                rstd[r * n_heads + h] = s;
                for (int64_t i = 0; i < head_dim; ++i)
                    y[off + i] = o[off + i] * s * (w ? w[i] : T(1)) * silu(g[off + i]);
            }
    });
}

template <typename T>
void head_norm_gate_backward(const T* o, const T* g, const T* w, const T* rstd, const T* dy,
                             int64_t rows, int64_t n_heads, int64_t head_dim, T* d_o, T* dg,
                             T* dw) {
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
                    const T gate = silu(g[off + i]);
                    const T dn = dy[off + i] * gate;
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

template <typename T>
void swiglu_forward(const T* a, const T* b, int64_t n, T* h) {
    parallel_blocks(n, 16384, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) h[i] = silu(a[i]) * b[i];
    });
}

template <typename T>
void swiglu_backward(const T* a, const T* b, const T* dh, int64_t n, T* da, T* db) {
    parallel_blocks(n, 16384, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            da[i] = dh[i] * b[i] * silu_grad(a[i]);
            db[i] = dh[i] * silu(a[i]);
        }
    });
}

template <typename T>
double cross_entropy(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                     T* dlogits, double grad_scale) {
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

#define RETNET_INSTANTIATE_OPS(T)                                                                  \
    template void linear_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, T*);            \
    template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, \
                                     bool, T*);                                                    \
    template void rmsnorm_forward<T>(const T*, const T*, int64_t, int64_t, double, T*, T*);        \
    template void rmsnorm_backward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t,   \
                                      T*, T*);                                                     \
    template void rotary_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, const float*, double); \
    template void rotary_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, const float*, double);\
    template void retention_forward<T>(const T*, const T*, const T*, const RetentionShape&,        \
                                       const float*, int, T*);                                     \
    template void retention_backward<T>(const T*, const T*, const T*, const T*,                   \
                                        const RetentionShape&, const float*, int, T*, T*, T*);     \
    template void head_norm_gate_forward<T>(const T*, const T*, const T*, int64_t, int64_t,        \
                                            int64_t, double, T*, T*);                              \
    template void head_norm_gate_backward<T>(const T*, const T*, const T*, const T*, const T*,    \
                                             int64_t, int64_t, int64_t, T*, T*, T*);               \
    template void swiglu_forward<T>(const T*, const T*, int64_t, T*);                              \
    template void swiglu_backward<T>(const T*, const T*, const T*, int64_t, T*, T*);              \
    template double cross_entropy<T>(const T*, const int32_t*, int64_t, int64_t, T*, double);

RETNET_INSTANTIATE_OPS(float)
RETNET_INSTANTIATE_OPS(double)

}  // namespace retnet::train::ops
