// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Pieces of the generation loop shared by Generator (generate.cpp) and BatchGenerator
// (batch_generate.cpp).
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace retnet::gen {

using Clock = std::chrono::steady_clock;

inline double milliseconds_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string: text that
// must not be shown yet because the next token could complete a stop string.
inline size_t held_back_length(const std::string& text, const std::vector<std::string>& stop_strings) {
    size_t longest = 0;
    for (const std::string& stop : stop_strings) {
        for (size_t k = std::min(stop.size() - 1, text.size()); k > longest; --k) {
            if (text.compare(text.size() - k, k, stop, 0, k) == 0) {
                longest = k;
                break;
            }
        }
    }
    return longest;
}

}  // namespace retnet::gen
