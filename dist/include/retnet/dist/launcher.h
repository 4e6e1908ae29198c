// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// `retnet train --gpus N`: the tool starts one copy of itself per rank on this host and watches
// them. A rank that fails takes the job down: the others are stopped (SIGTERM, then SIGKILL after a
// grace period) instead of waiting forever in a collective for a peer that is gone.
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace retnet::dist {

struct LaunchResult {
    int exit_code = 0;    // 0 when every rank succeeded, 130 when they stopped on Ctrl-C, else 1
    std::string message;  // one line naming the rank that failed first, "" otherwise
};

struct LaunchOptions {
    double grace_s = 5;  // between SIGTERM and SIGKILL for the ranks that are stopped
};

// Runs `size` processes of `argv` (argv[0] is the executable's path) with the environment of this
// process plus env(rank) each, and waits for all of them. SIGINT reaching the launcher is passed on
// to the ranks (which save and exit 130); SIGTERM stops them. A rank that exits non-zero (other
// than 130) or dies of a signal stops the others. The ranks die with the launcher (even by kill -9).
LaunchResult launch_ranks(const std::vector<std::string>& argv, int size,
                          const std::function<std::vector<std::pair<std::string, std::string>>(int rank)>& env,
                          const LaunchOptions& options = {});

}  // namespace retnet::dist
