// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: the CLI's option parser (app/cli/args.cpp). The input is an argv, its
// arguments separated by NUL bytes. Whatever it holds, the parser either accepts it or throws a
// one-line retnet::Error; what it accepts is read strictly: an integer option's value is a plain
// decimal within its range, a number is finite and within its range, a flag is a real boolean.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "args.h"
#include "fuzz_common.h"
#include "retnet/error.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

namespace {

void check_error(const Error& e) {
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos || what.find('\x1b') != std::string::npos)
        fuzz_fail("error is not one clean line: " + what);
    if (what.size() > 8 * Error::kMaxLength) fuzz_fail("error message is not capped");
}

bool plain_decimal(const std::string& s) {
    const size_t start = !s.empty() && s[0] == '-' ? 1 : 0;
    return s.size() > start && s.find_first_not_of("0123456789", start) == std::string::npos;
}

void read_all(cli::Args& args) {
    if (const auto v = args.get("n")) {
        const int64_t n = args.get_int("n", 0, -1000, 1 << 20);
        if (!plain_decimal(*v) || n < -1000 || n > (1 << 20)) fuzz_fail("get_int accepted '" + *v + "'");
    }
    const double t = args.get_double("t", 0.5, 0.0, 100.0);
    if (!std::isfinite(t) || t < 0.0 || t > 100.0) fuzz_fail("get_double returned a value outside its range");
    const bool json = args.has("json");
    const bool greedy = args.has("greedy");
    (void)json;
    (void)greedy;
    if (const auto tokens = args.get("tokens"))
        for (const int32_t id : cli::parse_token_list(*tokens)) (void)id;
    args.get_or("s", "");
    args.finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<std::string> argv(1);
    for (size_t i = 0; i < size; ++i) {
        if (data[i] == 0) argv.emplace_back();
        else argv.back() += static_cast<char>(data[i]);
    }
    if (size == 0) argv.clear();
    try {
        cli::Args args(argv, {"json", "greedy"});
        read_all(args);
    } catch (const Error& e) {
        check_error(e);
    }
    return 0;
}
