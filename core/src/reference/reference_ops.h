// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The reference's building blocks, in double with plain loops. Retention functions take one head:
//   q (T, Dk), k (T, Dk), v (T, Dv) already rotated and scaled; S0 (Dk, Dv) the state before the call
// and return o (T, Dv) before the head norm. `scores`, when not null, receives the (T, T) signed
// score matrix of that form: the weight of v_m in o_n after decay and the form's normalization.
#include <span>
#include <vector>

#include "retnet/config.h"
#include "retnet/model.h"
#include "retnet/tensor.h"

namespace retnet::ref {

struct Matrix {
    int rows = 0, cols = 0;
    std::vector<double> data;  // (rows, cols) row-major

    Matrix() = default;
    Matrix(int r, int c) : rows(r), cols(c), data(static_cast<size_t>(r) * static_cast<size_t>(c), 0.0) {}
    double& at(int r, int c) { return data[static_cast<size_t>(r) * cols + c]; }
    double at(int r, int c) const { return data[static_cast<size_t>(r) * cols + c]; }
    double* row(int r) { return data.data() + static_cast<size_t>(r) * cols; }
    const double* row(int r) const { return data.data() + static_cast<size_t>(r) * cols; }
};

Tensor to_tensor(const Matrix& m);

Matrix embed(const Model& model, std::span<const int32_t> tokens);             // (T, d)
Matrix rms_norm(const Matrix& x, const Tensor& weight, double eps);            // rows; empty weight = none
void head_rms_norm(std::vector<double>& o, const Tensor& weight, double eps);  // one head's (Dv)
Matrix linear(const Matrix& x, const Tensor& w);                               // x Wᵀ, W (out, in)
void add_in_place(Matrix& x, const Matrix& y);
double silu(double x);
double gelu(double x);  // exact (erf)
Matrix glu(const Matrix& x, const LayerWeights& w, Activation act);            // (T, d)

// Rotates one (Dk) vector at absolute position `pos`: torchscale pairs (2i, 2i+1), fla (i, i+Dk/2).
// The angle pos·θ is rounded to float32 as both references compute it.
void rotate(double* x, int Dk, int64_t pos, const std::vector<float>& theta, Family family);

// One recurrent step of the state in the family's scaling:
//   fla S ← γS + k vᵀ;  torchscale r' = γr + 1, S ← S·γ√r/√r' + k vᵀ/√r'  (S = raw / √r).
void recurrent_update(Matrix& S, double& r, const double* k, const double* v, double gamma, bool torchscale);

Matrix fla_parallel(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, Matrix* scores);
Matrix fla_recurrent(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, Matrix* scores);
Matrix fla_chunkwise(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, int chunk,
                     Matrix* scores);

// torchscale: parallel starts from an empty state; r0 is the state's r (0 when empty).
Matrix ts_parallel(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, Matrix* scores);
Matrix ts_recurrent(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, double r0,
                    Matrix* scores);
Matrix ts_chunkwise(const Matrix& q, const Matrix& k, const Matrix& v, double gamma, const Matrix& S0, double r0,
                    int chunk, Matrix* scores);

}  // namespace retnet::ref
