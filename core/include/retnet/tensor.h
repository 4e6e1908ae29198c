// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A dense row-major tensor that owns its data, held as float32 or as bfloat16. Activations and
// small weights are float32; the big matrices of a bf16 checkpoint loaded for inference stay
// bf16 (half the memory; the CPU linear op widens them as it streams, accumulating in float32).
// Code that needs float32 values of a tensor of either kind calls to_f32() or widen().
#include <cstdint>
#include <string>
#include <vector>

namespace retnet {

enum class Storage : uint8_t { F32, BF16 };

struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;      // the values when stored as F32; empty otherwise
    std::vector<uint16_t> bf16;   // the values when stored as BF16 (upper half of a float32); empty otherwise

    Tensor() = default;
    explicit Tensor(std::vector<int64_t> shape_, float fill = 0.0f);

    Storage storage() const { return bf16.empty() ? Storage::F32 : Storage::BF16; }
    int64_t numel() const { return static_cast<int64_t>(data.size() + bf16.size()); }
    int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
    int rank() const { return static_cast<int>(shape.size()); }
    bool empty() const { return data.empty() && bf16.empty(); }
    // The float32 values; throws retnet::Error for a BF16 tensor (widen it, or use to_f32()).
    float* ptr() {
        if (!bf16.empty()) throw_not_f32();
        return data.data();
    }
    const float* ptr() const {
        if (!bf16.empty()) throw_not_f32();
        return data.data();
    }
    // Bytes of values held (what the tensor costs in memory).
    uint64_t bytes() const { return data.capacity() * sizeof(float) + bf16.capacity() * sizeof(uint16_t); }

    // A float32 copy (exact: every bf16 value is a float32).
    Tensor to_f32() const;
    // Converts a BF16 tensor to F32 in place; F32 is left as it is.
    void widen();
    // Rounds an F32 tensor to BF16 in place (round to nearest even); BF16 is left as it is.
    void narrow_to_bf16();
    // Writes values [begin, begin + count) as float32 into out, from either storage.
    void read_f32(int64_t begin, int64_t count, float* out) const;

    // "[2, 3, 4]"
    std::string shape_string() const;

private:
    [[noreturn]] void throw_not_f32() const;
};

int64_t shape_numel(const std::vector<int64_t>& shape);
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace retnet
