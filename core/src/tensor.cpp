// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/tensor.h"

#include <algorithm>

#include "retnet/error.h"

namespace retnet {

int64_t shape_numel(const std::vector<int64_t>& shape) {
    for (int64_t s : shape)
        if (s < 0) throw Error("negative dimension in shape " + shape_to_string(shape));
    // A zero anywhere makes the product 0, even when the other dimensions would overflow.
    if (std::find(shape.begin(), shape.end(), int64_t(0)) != shape.end()) return 0;
    int64_t n = 1;
    for (int64_t s : shape)
        if (__builtin_mul_overflow(n, s, &n)) throw Error("shape " + shape_to_string(shape) + " is too large");
    return n;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(shape[i]);
    }
    return out + "]";
}

Tensor::Tensor(std::vector<int64_t> shape_, float fill)
    : shape(std::move(shape_)), data(static_cast<size_t>(shape_numel(shape)), fill) {}

std::string Tensor::shape_string() const { return shape_to_string(shape); }

}  // namespace retnet
