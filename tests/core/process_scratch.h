// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// One scratch directory per test process (ctest runs tests side by side, each its own process) for
// the outputs of the programs a test runs and the copies it breaks, removed when the process exits,
// so that a test that fails or times out midway leaves nothing behind in /tmp either.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace retnet::test {

inline const std::filesystem::path& process_scratch_dir() {
    struct Dir {
        std::filesystem::path path = std::filesystem::temp_directory_path() / ("retnet_test_" + std::to_string(::getpid()));
        Dir() { std::filesystem::create_directories(path); }
        ~Dir() {
            std::error_code ignored;
            std::filesystem::remove_all(path, ignored);
        }
    };
    static const Dir dir;
    return dir.path;
}

}  // namespace retnet::test
