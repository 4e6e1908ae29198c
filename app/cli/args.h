// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Command-line options of the `retnet` subcommands: `--name value` pairs and `--flag`s.
// Every option a command reads is declared through get*/has; finish() then rejects the rest,
// so a misspelt option is an error instead of being silently ignored.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace retnet::cli {

class Args {
public:
    // argv excludes the program and subcommand names. `flags` names options that take no value.
    Args(std::vector<std::string> argv, std::set<std::string> flags);

    bool has(const std::string& name);  // present (flag or option)
    std::optional<std::string> get(const std::string& name);
    std::string get_or(const std::string& name, const std::string& fallback);
    std::string require(const std::string& name);
    int64_t get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max);
    double get_double(const std::string& name, double fallback, double min, double max);
    // Throws retnet::Error for any option that no get/has call asked about.
    void finish() const;

private:
    std::vector<std::pair<std::string, std::string>> values_;  // name (without --), value
    std::set<std::string> consumed_;
    std::set<std::string> flags_;
};

// The candidate closest to `word` (edit distance at most 2, or a prefix), "" if none is: for
// "unknown option --temprature (did you mean --temperature?)".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// "5,17,933" -> {5, 17, 933}; throws on anything else.
std::vector<int32_t> parse_token_list(const std::string& text);

}  // namespace retnet::cli
