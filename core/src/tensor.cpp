// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/tensor.h"

#include <algorithm>

#include "retnet/error.h"
#include "retnet/safetensors.h"

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

Tensor Tensor::to_f32() const {
    if (storage() == Storage::F32) return *this;
    Tensor out;
    out.shape = shape;
    out.data.resize(bf16.size());
    read_f32(0, numel(), out.data.data());
    return out;
}

void Tensor::widen() {
    if (storage() == Storage::F32) return;
    *this = to_f32();
}

void Tensor::narrow_to_bf16() {
    if (storage() == Storage::BF16 || data.empty()) return;
    std::vector<uint16_t> out(data.size());
    for (size_t i = 0; i < data.size(); ++i) out[i] = float_to_bf16(data[i]);
    bf16 = std::move(out);
    std::vector<float>().swap(data);
}

void Tensor::read_f32(int64_t begin, int64_t count, float* out) const {
    if (begin < 0 || count < 0 || begin + count > numel())
        throw Error("tensor " + shape_string() + ": values [" + std::to_string(begin) + ", " +
                    std::to_string(begin + count) + ") are out of range");
    if (storage() == Storage::F32) {
        std::copy_n(data.data() + begin, count, out);
        return;
    }
    for (int64_t i = 0; i < count; ++i) out[i] = bf16_to_float(bf16[static_cast<size_t>(begin + i)]);
}

void Tensor::throw_not_f32() const {
    throw Error("tensor " + shape_string() + " is held as bf16 where float32 values are needed (widen it first)");
}

}  // namespace retnet
