// SPDX-License-Identifier: GPL-3.0-or-later
#include "reference/reference_ops.h"

#include <algorithm>
#include <cmath>

namespace retnet::ref {

Tensor to_tensor(const Matrix& m) {
    Tensor t({m.rows, m.cols});
    for (size_t i = 0; i < m.data.size(); ++i) t.data[i] = static_cast<float>(m.data[i]);
    return t;
}

Matrix embed(const Model& model, std::span<const int32_t> tokens) {
    const ModelConfig& c = model.config;
    const int T = static_cast<int>(tokens.size()), d = c.d_model;
    const double scale = c.scale_embedding ? std::sqrt(static_cast<double>(d)) : 1.0;
    Matrix x(T, d);
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j)
            x.at(t, j) = scale * model.weights.embed.data[static_cast<size_t>(tokens[static_cast<size_t>(t)]) * d + j];
    if (c.layernorm_embedding) x = rms_norm(x, model.weights.embed_norm, c.norm_eps);
    return x;
}

Matrix rms_norm(const Matrix& x, const Tensor& weight, double eps) {
    Matrix y(x.rows, x.cols);
    for (int t = 0; t < x.rows; ++t) {
        double mean_sq = 0;
        for (int j = 0; j < x.cols; ++j) mean_sq += x.at(t, j) * x.at(t, j);
        mean_sq /= x.cols;
        const double inv = 1.0 / std::sqrt(mean_sq + eps);
        for (int j = 0; j < x.cols; ++j)
            y.at(t, j) = x.at(t, j) * inv * (weight.empty() ? 1.0 : weight.data[static_cast<size_t>(j)]);
    }
    return y;
}

void head_rms_norm(std::vector<double>& o, const Tensor& weight, double eps) {
    double mean_sq = 0;
    for (double v : o) mean_sq += v * v;
    mean_sq /= static_cast<double>(o.size());
    const double inv = 1.0 / std::sqrt(mean_sq + eps);
    for (size_t j = 0; j < o.size(); ++j) o[j] *= inv * (weight.empty() ? 1.0 : weight.data[j]);
}

Matrix linear(const Matrix& x, const Tensor& w) {
    const int out = static_cast<int>(w.dim(0)), in = static_cast<int>(w.dim(1));
    Matrix y(x.rows, out);
    for (int t = 0; t < x.rows; ++t)
        for (int o = 0; o < out; ++o) {
            double sum = 0;
            const float* wrow = w.data.data() + static_cast<size_t>(o) * in;
            for (int i = 0; i < in; ++i) sum += x.at(t, i) * wrow[i];
            y.at(t, o) = sum;
        }
    return y;
}

void add_in_place(Matrix& x, const Matrix& y) {
    for (size_t i = 0; i < x.data.size(); ++i) x.data[i] += y.data[i];
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

Matrix glu(const Matrix& x, const LayerWeights& w, Activation act) {
    const Matrix a = linear(x, w.ffn_act), b = linear(x, w.ffn_lin);
    Matrix hidden(a.rows, a.cols);
    for (size_t i = 0; i < a.data.size(); ++i)
        hidden.data[i] = (act == Activation::Gelu ? gelu(a.data[i]) : silu(a.data[i])) * b.data[i];
    return linear(hidden, w.ffn_out);
}

void rotate(double* x, int Dk, int64_t pos, const std::vector<float>& theta, Family family) {
    const int half = Dk / 2;
    for (int i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * theta[static_cast<size_t>(i)];
        const double c = std::cos(static_cast<double>(angle)), s = std::sin(static_cast<double>(angle));
        const int a = family == Family::TorchScale ? 2 * i : i;
        const int b = family == Family::TorchScale ? 2 * i + 1 : i + half;
        const double xa = x[a], xb = x[b];
        x[a] = xa * c - xb * s;
        x[b] = xb * c + xa * s;
    }
}

void recurrent_update(Matrix& S, double& r, const double* k, const double* v, double gamma, bool torchscale) {
    double decay = gamma, inject = 1.0;
    if (torchscale) {
        const double r_next = r * gamma + 1.0;
        decay = std::sqrt(r) * gamma / std::sqrt(r_next);
        inject = 1.0 / std::sqrt(r_next);
        r = r_next;
    }
    for (int i = 0; i < S.rows; ++i)
        for (int j = 0; j < S.cols; ++j) S.at(i, j) = S.at(i, j) * decay + k[i] * v[j] * inject;
}

namespace {

double dot(const double* a, const double* b, int n) {
    double s = 0;
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
}

// o_n += factor · q_nᵀ S
void add_query_state(double* o, const double* q, const Matrix& S, double factor) {
    for (int j = 0; j < S.cols; ++j) {
        double s = 0;
        for (int i = 0; i < S.rows; ++i) s += q[i] * S.at(i, j);
        o[j] += factor * s;
    }
}

Matrix start_scores(Matrix* scores, int T) {
    if (scores) *scores = Matrix(T, T);
    return Matrix();
}

}  // namespace

// ---- fla: unnormalized retention, three forms of the same sum ------------------------------

Matrix fla_parallel(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols;
    start_scores(scores, T);
    Matrix o(T, Dv);
    for (int n = 0; n < T; ++n) {
        for (int m = 0; m <= n; ++m) {
            const double a = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m);  // (QKᵀ ⊙ D)[n,m]
            if (scores) scores->at(n, m) = a;
            for (int j = 0; j < Dv; ++j) o.at(n, j) += a * v.at(m, j);
        }
        add_query_state(o.row(n), q.row(n), S0, std::pow(gamma, n + 1));
    }
    return o;
}

Matrix fla_recurrent(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols;
    start_scores(scores, T);
    Matrix S = S0, o(T, Dv);
    double unused_r = 0;
    for (int n = 0; n < T; ++n) {
        recurrent_update(S, unused_r, k.row(n), v.row(n), gamma, false);
        add_query_state(o.row(n), q.row(n), S, 1.0);
        if (scores)
            for (int m = 0; m <= n; ++m) scores->at(n, m) = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m);
    }
    return o;
}

Matrix fla_chunkwise(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, int chunk,
                     Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols;
    start_scores(scores, T);
    Matrix S = S0, o(T, Dv);
    for (int c0 = 0; c0 < T; c0 += chunk) {
        const int len = std::min(chunk, T - c0);
        for (int i = 0; i < len; ++i) {
            const int n = c0 + i;
            for (int jj = 0; jj <= i; ++jj) {  // inner: within the chunk
                const double a = dot(q.row(n), k.row(c0 + jj), Dk) * std::pow(gamma, i - jj);
                for (int j = 0; j < Dv; ++j) o.at(n, j) += a * v.at(c0 + jj, j);
            }
            add_query_state(o.row(n), q.row(n), S, std::pow(gamma, i + 1));  // cross: earlier chunks
            if (scores)
                for (int m = 0; m <= n; ++m) scores->at(n, m) = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m);
        }
        // S ← γ^len S + Σ_j γ^(len−1−j) k_j v_jᵀ
        const double chunk_decay = std::pow(gamma, len);
        for (double& s : S.data) s *= chunk_decay;
        for (int jj = 0; jj < len; ++jj) {
            const double w = std::pow(gamma, len - 1 - jj);
            for (int i = 0; i < Dk; ++i)
                for (int j = 0; j < Dv; ++j) S.at(i, j) += w * k.at(c0 + jj, i) * v.at(c0 + jj, j);
        }
    }
    return o;
}

// ---- torchscale: each form with its own per-row normalization (docs/spec.md §2.4–2.7) ---------------

Matrix ts_parallel(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols;
    start_scores(scores, T);
    Matrix o(T, Dv);
    std::vector<double> row(static_cast<size_t>(T));
    for (int n = 0; n < T; ++n) {
        double r = 0;  // Σ_{m≤n} D[n,m]
        for (int m = 0; m <= n; ++m) r += std::pow(gamma, n - m);
        double abs_sum = 0;
        for (int m = 0; m <= n; ++m) {
            row[static_cast<size_t>(m)] = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m) / std::sqrt(r);
            abs_sum += std::abs(row[static_cast<size_t>(m)]);
        }
        const double c = std::clamp(abs_sum, 1.0, 5e4);
        for (int m = 0; m <= n; ++m) {
            const double a = row[static_cast<size_t>(m)] / c;
            if (scores) scores->at(n, m) = a;
            for (int j = 0; j < Dv; ++j) o.at(n, j) += a * v.at(m, j);
        }
    }
    return o;
}

Matrix ts_recurrent(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, double r0,
                    Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols;
    start_scores(scores, T);
    Matrix S = S0, o(T, Dv);
    double r = r0;
    for (int n = 0; n < T; ++n) {
        recurrent_update(S, r, k.row(n), v.row(n), gamma, true);
        add_query_state(o.row(n), q.row(n), S, 1.0);
        if (scores)
            for (int m = 0; m <= n; ++m)
                scores->at(n, m) = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m) / std::sqrt(r);
    }
    return o;
}

Matrix ts_chunkwise(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, double r0,
                    int chunk, Matrix* scores) {
    const int T = q.rows, Dk = q.cols, Dv = v.cols, C = chunk;
    start_scores(scores, T);
    // In-chunk row sums ρ_i = Σ_{j≤i} γ^(i−j); torchscale pads the last chunk, so every chunk uses
    // the full-chunk constants (padding rows have k = v = 0 and affect nothing).
    std::vector<double> rho(static_cast<size_t>(C));
    for (int i = 0; i < C; ++i) rho[static_cast<size_t>(i)] = (i ? rho[static_cast<size_t>(i - 1)] * gamma : 0.0) + 1.0;
    const double S_B = rho[static_cast<size_t>(C - 1)];
    // torchscale's chunk state is the raw state divided by S_B; ours holds raw/√r.
    Matrix state(Dk, Dv);
    for (size_t i = 0; i < state.data.size(); ++i) state.data[i] = S0.data[i] * std::sqrt(r0) / S_B;

    Matrix o(T, Dv);
    std::vector<double> row_div(static_cast<size_t>(T));  // √ρ_i · all_i, for the scores
    for (int c0 = 0; c0 < T; c0 += C) {
        const int len = std::min(C, T - c0);
        double s = 0;  // s_c = clamp(max over value columns of Σ_k |state[k, v]|, min 1)
        for (int j = 0; j < Dv; ++j) {
            double col = 0;
            for (int i = 0; i < Dk; ++i) col += std::abs(state.at(i, j));
            s = std::max(s, col);
        }
        s = std::max(s, 1.0);
        for (int i = 0; i < len; ++i) {
            const int n = c0 + i;
            const double sqrt_rho = std::sqrt(rho[static_cast<size_t>(i)]);
            std::vector<double> inner(static_cast<size_t>(Dv), 0.0);
            double a = 0;
            for (int jj = 0; jj <= i; ++jj) {
                const double A = dot(q.row(n), k.row(c0 + jj), Dk) * std::pow(gamma, i - jj) / sqrt_rho;
                a += std::abs(A);
                for (int j = 0; j < Dv; ++j) inner[static_cast<size_t>(j)] += A * v.at(c0 + jj, j);
            }
            a = std::max(a, 1.0);
            const double all = std::max(a, s);
            std::vector<double> cross(static_cast<size_t>(Dv), 0.0);
            add_query_state(cross.data(), q.row(n), state, std::pow(gamma, i + 1) * S_B / sqrt_rho);
            for (int j = 0; j < Dv; ++j)
                o.at(n, j) = inner[static_cast<size_t>(j)] / all + cross[static_cast<size_t>(j)] / all;
            row_div[static_cast<size_t>(n)] = sqrt_rho * all;
        }
        const double chunk_decay = std::pow(gamma, C);
        for (double& x : state.data) x *= chunk_decay;
        for (int jj = 0; jj < len; ++jj) {
            const double w = std::pow(gamma, C - 1 - jj) / S_B;
            for (int i = 0; i < Dk; ++i)
                for (int j = 0; j < Dv; ++j) state.at(i, j) += w * k.at(c0 + jj, i) * v.at(c0 + jj, j);
        }
    }
    if (scores)
        for (int n = 0; n < T; ++n)
            for (int m = 0; m <= n; ++m)
                scores->at(n, m) = dot(q.row(n), k.row(m), Dk) * std::pow(gamma, n - m) / row_div[static_cast<size_t>(n)];
    return o;
}

}  // namespace retnet::ref
