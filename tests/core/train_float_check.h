// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The float instantiation of the trainer's loss and gradient (what training runs) against the
// double one on the same weights, for any architecture: shared by the RetNet's and the twin's tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "retnet/train.h"

namespace retnet::test {

// params are rounded to float first, so both instantiations see the same values exactly.
inline void expect_float_gradient_matches_double(const ModelConfig& config, const train::ParamLayout& layout,
                                                 std::vector<double> params, const std::string& label) {
    std::vector<float> params_f(params.begin(), params.end());
    for (size_t i = 0; i < params.size(); ++i) params[i] = params_f[i];
    std::vector<int32_t> inputs = {1, 4, 7, 2, 9, 3, 0, 5, 10, 6}, targets = {4, 7, 2, 9, 3, 0, 5, 10, 6, 8};
    const train::BatchView batch{inputs.data(), targets.data(), 2, 5};
    std::vector<double> grad(params.size());
    std::vector<float> grad_f(params.size());
    const double loss = train::loss_and_gradient<double>(config, layout, params.data(), batch, grad.data());
    const double loss_f = train::loss_and_gradient<float>(config, layout, params_f.data(), batch, grad_f.data());
    EXPECT_NEAR(loss_f, loss, 1e-5 * loss);
    double max_abs = 0, max_err = 0;
    for (size_t i = 0; i < grad.size(); ++i) {
        max_abs = std::max(max_abs, std::abs(grad[i]));
        max_err = std::max(max_err, std::abs(grad[i] - grad_f[i]));
    }
    // float has 24 bits; a few hundred operations deep the error stays below 1e-4 of the scale.
    EXPECT_LT(max_err, 1e-4 * max_abs);
    std::printf("  [grad-check] %s float vs double: max |Δg| %.2e (max |g| %.2e)\n", label.c_str(), max_err, max_abs);
}

}  // namespace retnet::test
