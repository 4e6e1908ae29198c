// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Naive double-precision twins of the CUDA kernels (same layouts as kernels/src/ops.h), written
// straight from the math with plain loops. Inputs are float (as the kernels see them).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace retnet::cuda::naive {

using Vec = std::vector<double>;
using FVec = std::vector<float>;

inline Vec rmsnorm(const FVec& x, const FVec& w, int rows, int cols, double eps) {
    Vec y(x.size());
    for (int r = 0; r < rows; ++r) {
        double sum = 0;
        for (int i = 0; i < cols; ++i) sum += double(x[r * cols + i]) * x[r * cols + i];
        const double inv = 1.0 / std::sqrt(sum / cols + eps);
        for (int i = 0; i < cols; ++i) y[r * cols + i] = x[r * cols + i] * inv * (w.empty() ? 1.0 : w[i]);
    }
    return y;
}

// src (T, H*Dk) -> (H, Tp, Dk), rotated at pos0 + t, times scale.
inline Vec rotary(const FVec& src, const FVec& theta, int T, int Tp, int H, int Dk, int64_t pos0, double scale,
                  bool interleaved) {
    Vec out(static_cast<size_t>(H) * Tp * Dk, 0.0);
    const int half = Dk / 2;
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
            const float* in = src.data() + (static_cast<size_t>(t) * H + h) * Dk;
            double* o = out.data() + (static_cast<size_t>(h) * Tp + t) * Dk;
            for (int i = 0; i < half; ++i) {
                const float angle = static_cast<float>(pos0 + t) * theta[i];
                const double c = std::cos(double(angle)), s = std::sin(double(angle));
                const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                o[a] = scale * (in[a] * c - in[b] * s);
                o[b] = scale * (in[b] * c + in[a] * s);
            }
        }
    return out;
}

inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
inline double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// o (H, Tp, Dv) head-major, g (T, H*Dv) -> y (T, H*Dv)
inline Vec head_norm_gate(const FVec& o, const FVec& g, const FVec& w, int T, int Tp, int H, int Dv, double eps) {
    Vec y(static_cast<size_t>(T) * H * Dv);
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h) {
            const float* in = o.data() + (static_cast<size_t>(h) * Tp + t) * Dv;
            double sum = 0;
            for (int i = 0; i < Dv; ++i) sum += double(in[i]) * in[i];
            const double inv = 1.0 / std::sqrt(sum / Dv + eps);
            for (int i = 0; i < Dv; ++i) {
                const size_t idx = (static_cast<size_t>(t) * H + h) * Dv + i;
                y[idx] = in[i] * inv * (w.empty() ? 1.0 : w[i]) * silu(g[idx]);
            }
        }
    return y;
}

// Y (M, N) = X (M, K) Wᵀ, W (N, K)
inline Vec linear(const FVec& X, const FVec& W, int M, int N, int K) {
    Vec Y(static_cast<size_t>(M) * N);
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(X[m * K + k]) * W[static_cast<size_t>(n) * K + k];
            Y[static_cast<size_t>(m) * N + n] = s;
        }
    return Y;
}

// Recurrent scan: S_t = a S + b k vᵀ, o_t = qᵀ S_t; S (H, Dk, Dv) in/out; norms (T, H) = ‖S_t‖_F².
inline Vec recurrent(const FVec& q, const FVec& k, const FVec& v, Vec& S, const FVec& a, const FVec& b, int H,
                     int T, int Tp, int Dk, int Dv, Vec* norms_sq) {
    Vec o(static_cast<size_t>(H) * Tp * Dv, 0.0);
    if (norms_sq) norms_sq->assign(static_cast<size_t>(T) * H, 0.0);
    for (int h = 0; h < H; ++h) {
        double* Sh = S.data() + static_cast<size_t>(h) * Dk * Dv;
        for (int t = 0; t < T; ++t) {
            const double at = a[t * H + h], bt = b[t * H + h];
            const float* kt = k.data() + (static_cast<size_t>(h) * Tp + t) * Dk;
            const float* qt = q.data() + (static_cast<size_t>(h) * Tp + t) * Dk;
            const float* vt = v.data() + (static_cast<size_t>(h) * Tp + t) * Dv;
            double nsq = 0;
            for (int i = 0; i < Dk; ++i)
                for (int j = 0; j < Dv; ++j) {
                    double& s = Sh[static_cast<size_t>(i) * Dv + j];
                    s = at * s + bt * kt[i] * vt[j];
                    nsq += s * s;
                }
            for (int j = 0; j < Dv; ++j) {
                double acc = 0;
                for (int i = 0; i < Dk; ++i) acc += qt[i] * Sh[static_cast<size_t>(i) * Dv + j];
                o[(static_cast<size_t>(h) * Tp + t) * Dv + j] = acc;
            }
            if (norms_sq) (*norms_sq)[static_cast<size_t>(t) * H + h] = nsq;
        }
    }
    return o;
}

inline double decay_pow(float log_decay, int n) { return std::exp(double(n) * double(log_decay)); }

// Causal softmax attention per matrix of dense (BH, T, D) tensors (q already scaled):
// o_n = Σ_{m≤n} p_nm v_m, p_nm = softmax_m(q_n·k_m); o (BH, T, Dv), lse (BH, T) = logsumexp_m.
template <typename In>
void attention(const std::vector<In>& q, const std::vector<In>& k, const std::vector<In>& v, int BH, int T, int Dk,
               int Dv, Vec& o, Vec& lse) {
    o.assign(static_cast<size_t>(BH) * T * Dv, 0.0);
    lse.assign(static_cast<size_t>(BH) * T, 0.0);
    Vec s(static_cast<size_t>(T));
    for (int bh = 0; bh < BH; ++bh)
        for (int n = 0; n < T; ++n) {
            const size_t qn = (static_cast<size_t>(bh) * T + n) * Dk;
            double mx = -INFINITY;
            for (int m = 0; m <= n; ++m) {
                const size_t km = (static_cast<size_t>(bh) * T + m) * Dk;
                double dot = 0;
                for (int c = 0; c < Dk; ++c) dot += double(q[qn + c]) * double(k[km + c]);
                s[m] = dot;
                mx = std::max(mx, dot);
            }
            double sum = 0;
            for (int m = 0; m <= n; ++m) sum += std::exp(s[m] - mx);
            double* on = o.data() + (static_cast<size_t>(bh) * T + n) * Dv;
            for (int m = 0; m <= n; ++m) {
                const double p = std::exp(s[m] - mx) / sum;
                for (int c = 0; c < Dv; ++c) on[c] += p * double(v[(static_cast<size_t>(bh) * T + m) * Dv + c]);
            }
            lse[static_cast<size_t>(bh) * T + n] = mx + std::log(sum);
        }
}

// The gradients of attention() for the output's gradient d_o (BH, T, Dv): with dp_nm = d_o_n·v_m
// and dS_nm = p_nm (dp_nm − Σ_m' p_nm' dp_nm'), dq_n = Σ_m dS_nm k_m, dk_m = Σ_n dS_nm q_n,
// dv_m = Σ_n p_nm d_o_n.
template <typename In>
void attention_backward(const std::vector<In>& q, const std::vector<In>& k, const std::vector<In>& v,
                        const std::vector<In>& d_o, int BH, int T, int Dk, int Dv, Vec& dq, Vec& dk, Vec& dv) {
    dq.assign(static_cast<size_t>(BH) * T * Dk, 0.0);
    dk.assign(dq.size(), 0.0);
    dv.assign(static_cast<size_t>(BH) * T * Dv, 0.0);
    Vec p(static_cast<size_t>(T)), dp(static_cast<size_t>(T));
    for (int bh = 0; bh < BH; ++bh)
        for (int n = 0; n < T; ++n) {
            const size_t qn = (static_cast<size_t>(bh) * T + n) * Dk, on = (static_cast<size_t>(bh) * T + n) * Dv;
            double mx = -INFINITY;
            for (int m = 0; m <= n; ++m) {
                const size_t km = (static_cast<size_t>(bh) * T + m) * Dk;
                double dot = 0;
                for (int c = 0; c < Dk; ++c) dot += double(q[qn + c]) * double(k[km + c]);
                p[m] = dot;
                mx = std::max(mx, dot);
            }
            double sum = 0;
            for (int m = 0; m <= n; ++m) sum += std::exp(p[m] - mx);
            double delta = 0;
            for (int m = 0; m <= n; ++m) {
                p[m] = std::exp(p[m] - mx) / sum;
                const size_t vm = (static_cast<size_t>(bh) * T + m) * Dv;
                double dot = 0;
                for (int c = 0; c < Dv; ++c) dot += double(d_o[on + c]) * double(v[vm + c]);
                dp[m] = dot;
                delta += p[m] * dot;
            }
            for (int m = 0; m <= n; ++m) {
                const double ds = p[m] * (dp[m] - delta);
                const size_t km = (static_cast<size_t>(bh) * T + m) * Dk, vm = (static_cast<size_t>(bh) * T + m) * Dv;
                for (int c = 0; c < Dk; ++c) {
                    dq[qn + c] += ds * double(k[km + c]);
                    dk[km + c] += ds * double(q[qn + c]);
                }
                for (int c = 0; c < Dv; ++c) dv[vm + c] += p[m] * double(d_o[on + c]);
            }
        }
}

}  // namespace retnet::cuda::naive
