// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// JSON from outside the program (a config, a checkpoint's header or index, a cost report, a
// trainer state, a server request) parsed with its nesting bounded. nlohmann parses and frees
// without recursion, but dump(), copies and comparisons recurse once a level: a 200 KB document
// nested 100,000 deep overflowed the stack when an error message quoted it (SIGSEGV).
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace retnet {

// The documents the program reads nest four levels at most.
inline constexpr int kMaxJsonDepth = 64;

// Bytes of memory a parsed document may take per byte of its text (check_memory_room).
inline constexpr uint64_t kJsonTreeBytesPerTextByte = 10;

// As nlohmann::json::parse; arrays and objects nested deeper than kMaxJsonDepth throw
// nlohmann::json::other_error ("… nested more than 64 levels deep"), so every caller that
// handles a json::exception handles it too. A document whose tree would not fit in the memory
// limit (kJsonTreeBytesPerTextByte) throws retnet::OutOfMemory first.
nlohmann::json parse_json_bounded(std::string_view text);

// A JSON exception's message without nlohmann's "[json.exception.parse_error.101] " tag, cut to 200
// bytes: what a "not valid JSON (…)" line quotes.
std::string json_error_text(const nlohmann::json::exception& e);

// Whether text nests deeper than kMaxJsonDepth, by a pass that allocates nothing (invalid JSON:
// false, the parse that follows names its error).
bool nests_too_deep(std::string_view text);

// A SAX pass over every value that stops where arrays and objects nest past kMaxJsonDepth
// (too_deep) or at a parse error; `depth` is 1 inside the top-level object. A scan that looks at
// names overrides key() (the safetensors header's, for repeated tensor names).
struct DepthBoundedSax : nlohmann::json_sax<nlohmann::json> {
    int depth = 0;
    bool too_deep = false;

    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool key(string_t&) override { return true; }
    bool start_object(std::size_t) override { return enter(); }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return enter(); }
    bool end_array() override { return --depth, true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

private:
    bool enter() {
        too_deep = ++depth > kMaxJsonDepth;
        return !too_deep;
    }
};

}  // namespace retnet
