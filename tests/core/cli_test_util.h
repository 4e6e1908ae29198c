// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Running the built `retnet` through the shell for the CLI tests: its exit status, stdout and
// stderr. (test_robustness_util.h runs it with an exact argv instead, for prompts of any bytes,
// and in the background for signals.)
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "process_scratch.h"

namespace retnet::test {

struct CliRun {
    int exit_code = -1;  // -1: it did not exit normally (a signal)
    std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// 'text' for sh, whatever it holds.
inline std::string shell_quote(const std::string& text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// `retnet ARGUMENTS` (already shell-quoted where needed), with `environment` before it on the
// command line (`env -u NAME`, `NAME=value`). stdout and stderr go through files of this process
// (ctest runs tests side by side), removed once read.
inline CliRun run_cli(const std::string& arguments, const std::string& environment = {}) {
    static int counter = 0;
    const std::filesystem::path& dir = process_scratch_dir();
    const std::string n = std::to_string(counter++);
    const std::filesystem::path out = dir / ("out" + n), err = dir / ("err" + n);
    const std::string command = environment + " " + shell_quote(RETNET_CLI_PATH) + " " + arguments + " >" +
                                shell_quote(out.string()) + " 2>" + shell_quote(err.string());
    const int status = std::system(command.c_str());
    CliRun r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    std::error_code ignored;
    std::filesystem::remove(out, ignored);
    std::filesystem::remove(err, ignored);
    return r;
}

// A refusal: a non-zero exit and one line on stderr that holds `needle`.
inline void expect_one_line_error(const CliRun& r, const std::string& needle) {
    EXPECT_NE(r.exit_code, 0);
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
}

}  // namespace retnet::test
