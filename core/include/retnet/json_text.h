// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// JSON from outside the program (a config, a checkpoint's header or index, a cost report, a
// trainer state, a server request) parsed with its nesting bounded. nlohmann parses and frees
// without recursion, but dump(), copies and comparisons recurse once a level: a 200 KB document
// nested 100,000 deep overflowed the stack when an error message quoted it (SIGSEGV).
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace retnet {

// The documents the program reads nest four levels at most.
inline constexpr int kMaxJsonDepth = 64;

// As nlohmann::json::parse; arrays and objects nested deeper than kMaxJsonDepth throw
// nlohmann::json::other_error ("… nested more than 64 levels deep"), so every caller that
// handles a json::exception handles it too.
nlohmann::json parse_json_bounded(std::string_view text);

// A JSON exception's message without nlohmann's "[json.exception.parse_error.101] " tag, cut to 200
// bytes: what a "not valid JSON (…)" line quotes.
std::string json_error_text(const nlohmann::json::exception& e);

// Whether text nests deeper than kMaxJsonDepth, by a pass that allocates nothing (invalid JSON:
// false, the parse that follows names its error).
bool nests_too_deep(std::string_view text);

}  // namespace retnet
