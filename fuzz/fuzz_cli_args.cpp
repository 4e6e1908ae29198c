// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: the CLI's option parsing (app/cli/options.cpp over CLI11). The input is an argv, its
// arguments separated by NUL bytes. Whatever it holds, parse() either accepts it, prints the help
// or throws a one-line retnet::Error; what it accepts is read strictly: an integer option's value is a plain
// decimal within its range, a number is finite and within its range, a flag is a real boolean.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "options.h"
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

// The options a command might declare; whatever parse() accepts must satisfy their contracts.
void parse_and_check(const std::vector<std::string>& argv) {
    const auto app = cli::make_app("fuzz", "the fuzzer's command");
    int64_t n = 7;
    double t = 0.5;
    bool json = false, greedy = true;
    std::string tokens, s = "x";
    CLI::Option* n_option = cli::add_int(*app, "-n,--n", n, -1000, 1 << 20, "an integer");
    cli::add_number(*app, "--t,--temperature", t, 0.0, 100.0, "a number");
    cli::add_flag(*app, "--json", json, "a flag");
    cli::add_flag(*app, "--greedy", greedy, "a flag, on by default");
    CLI::Option* tokens_option = cli::add_text(*app, "--tokens", tokens, "token ids");
    cli::add_text(*app, "-s,--s", s, "text");
    cli::parse(*app, argv);
    if (n < -1000 || n > (1 << 20)) fuzz_fail("an integer outside its range was accepted");
    if (n_option->count() > 0)
        for (const std::string& given : n_option->results())
            if (!plain_decimal(given)) fuzz_fail("--n accepted '" + given + "'");
    if (!std::isfinite(t) || t < 0.0 || t > 100.0) fuzz_fail("a number outside its range was accepted");
    if (tokens_option->count() > 0)
        for (const int32_t id : cli::parse_token_list(tokens)) (void)id;
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
        parse_and_check(argv);
    } catch (const cli::HelpShown&) {
        // -h / --help printed the help: a valid outcome
    } catch (const Error& e) {
        check_error(e);
    }
    return 0;
}
