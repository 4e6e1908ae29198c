// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A dense row-major float32 tensor that owns its data. The engine keeps weights and activations in
// float32 on the CPU (the reference path uses double internally); files in BF16/F16 are widened on load.
#include <cstdint>
#include <string>
#include <vector>

namespace retnet {

struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;

    Tensor() = default;
    explicit Tensor(std::vector<int64_t> shape_, float fill = 0.0f);

    int64_t numel() const { return static_cast<int64_t>(data.size()); }
    int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
    int rank() const { return static_cast<int>(shape.size()); }
    bool empty() const { return data.empty(); }
    float* ptr() { return data.data(); }
    const float* ptr() const { return data.data(); }

    // "[2, 3, 4]"
    std::string shape_string() const;
};

int64_t shape_numel(const std::vector<int64_t>& shape);
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace retnet
