// SPDX-License-Identifier: GPL-3.0-or-later
#include "args.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "retnet/error.h"

namespace retnet::cli {

namespace {
// llama.cpp's short forms, where they mean the same here.
const std::pair<const char*, const char*> kAliases[] = {{"-m", "--model"},       {"-p", "--prompt"},
                                                        {"-n", "--max-new-tokens"}, {"-f", "--prompt-file"},
                                                        {"-s", "--seed"},        {"--temp", "--temperature"}};
}  // namespace

Args::Args(std::vector<std::string> argv, std::set<std::string> flags) : flags_(flags) {
    for (size_t i = 0; i < argv.size(); ++i) {
        for (const auto& [alias, name] : kAliases)
            if (argv[i] == alias || argv[i].rfind(std::string(alias) + "=", 0) == 0)
                argv[i] = name + argv[i].substr(std::string(alias).size());
        const std::string& arg = argv[i];
        if (arg.size() < 3 || arg.rfind("--", 0) != 0)
            throw Error("unexpected argument '" + arg + "' (options look like --name value)");
        std::string name = arg.substr(2), value;
        if (auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        } else if (flags.count(name)) {
            value = "true";
        } else {
            if (i + 1 >= argv.size()) throw Error("option --" + name + " needs a value");
            value = argv[++i];
        }
        for (const auto& [existing, v] : values_)
            if (existing == name) throw Error("option --" + name + " given twice");
        values_.emplace_back(name, value);
    }
}

bool Args::has(const std::string& name) {
    const auto v = get(name);
    if (!v) return false;
    if (!flags_.count(name)) return true;  // an option with a value: present
    // A flag given a value: a real boolean, so that --greedy=0 turns it off.
    for (const char* yes : {"1", "true", "yes", "on"})
        if (*v == yes) return true;
    for (const char* no : {"0", "false", "no", "off"})
        if (*v == no) return false;
    throw Error("option --" + name + " is a flag: give it alone, or =true / =false, not '" + *v + "'");
}

std::optional<std::string> Args::get(const std::string& name) {
    consumed_.insert(name);
    for (const auto& [n, v] : values_)
        if (n == name) return v;
    return std::nullopt;
}

std::string Args::get_or(const std::string& name, const std::string& fallback) {
    return get(name).value_or(fallback);
}

std::string Args::require(const std::string& name) {
    auto v = get(name);
    if (!v) throw Error("missing required option --" + name);
    return *v;
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) {
    auto v = get(name);
    if (!v) return fallback;
    int64_t out = 0;
    auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
    if (ec != std::errc() || end != v->data() + v->size())
        throw Error("option --" + name + " expects an integer, got '" + *v + "'");
    if (out < min || out > max)
        throw Error("option --" + name + " must be in [" + std::to_string(min) + ", " +
                    std::to_string(max) + "], got " + *v);
    return out;
}

namespace {
std::string number(double x) {  // 1e-09, 0.95, 100: what the user would type
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}
}  // namespace

double Args::get_double(const std::string& name, double fallback, double min, double max) {
    auto v = get(name);
    if (!v) return fallback;
    double out = 0;
    try {
        size_t used = 0;
        out = std::stod(*v, &used);
        if (used != v->size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
        throw Error("option --" + name + " expects a number, got '" + *v + "'");
    }
    if (!std::isfinite(out) || out < min || out > max)
        throw Error("option --" + name + " must be in [" + number(min) + ", " + number(max) + "], got " + *v);
    return out;
}

void Args::finish() const {
    for (const auto& [n, v] : values_) {
        if (consumed_.count(n)) continue;
        const std::string near = closest_match(n, {consumed_.begin(), consumed_.end()});
        throw Error("unknown option --" + n + (near.empty() ? "" : " (did you mean --" + near + "?)"));
    }
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    size_t best_distance = 3;
    for (const std::string& c : candidates) {
        // Levenshtein distance, one row at a time.
        std::vector<size_t> row(c.size() + 1);
        for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
        for (size_t i = 1; i <= word.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= c.size(); ++j) {
                const size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (word[i - 1] == c[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        const bool prefix = word.size() >= 3 && c.rfind(word, 0) == 0;
        const size_t distance = prefix ? 1 : row[c.size()];
        if (distance < best_distance) {
            best_distance = distance;
            best = c;
        }
    }
    return best;
}

std::vector<int32_t> parse_token_list(const std::string& text) {
    std::vector<int32_t> out;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        if (comma == std::string::npos) comma = text.size();
        std::string item = text.substr(pos, comma - pos);
        int32_t id = 0;
        auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
        if (item.empty() || ec != std::errc() || end != item.data() + item.size())
            throw Error("bad token list '" + text + "': '" + item + "' is not an integer id");
        out.push_back(id);
        pos = comma + 1;
    }
    return out;
}

}  // namespace retnet::cli
