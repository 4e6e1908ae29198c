// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The k best ids of a row, shared by the sampler's top-k and the best logits' host selection.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace retnet::gen {

// The `count` best ids of [0, n) by higher key(id), then lower id (a total order, so the result
// never depends on sort stability), best first, in `out`. A size-count heap whose front is the
// worst kept id; most ids are turned away by one comparison with its key, so this is one pass over
// the vocabulary for every generated token, with no vocabulary-sized buffer.
template <typename KeyOf>
void select_best(int32_t n, size_t count, const KeyOf& key, std::vector<int32_t>& out) {
    const auto better = [&key](int32_t a, int32_t b) {
        const auto ka = key(a), kb = key(b);
        return ka != kb ? ka > kb : a < b;
    };
    out.clear();
    if (count == 0) return;
    out.reserve(count + 1);
    int32_t id = 0;
    for (; id < n && out.size() < count; ++id) {
        out.push_back(id);
        std::push_heap(out.begin(), out.end(), better);
    }
    auto worst = key(out.front());
    for (; id < n; ++id) {
        if (key(id) < worst || !better(id, out.front())) continue;
        std::pop_heap(out.begin(), out.end(), better);
        out.back() = id;
        std::push_heap(out.begin(), out.end(), better);
        worst = key(out.front());
    }
    std::sort_heap(out.begin(), out.end(), better);
}

}  // namespace retnet::gen
