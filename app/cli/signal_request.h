// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Stop signals as requests, for the CLI's handlers (async-signal-safe: an atomic and
// clock_gettime). coreutils' `timeout` sends SIGTERM to the command and again to its process
// group, so a command gets two at once: they are one request. A repeat from 100 ms after the
// first is a second request, "stop now".
#include <time.h>

#include <atomic>
#include <cstdint>

namespace retnet::cli {

inline constexpr int64_t kSameRequestNs = 100'000'000;

enum class SignalRequest { First, Repeat, Again };

// `first_ns` holds the CLOCK_MONOTONIC time of the first signal, 0 before it (reset it to 0 to
// start over).
inline SignalRequest classify_signal(std::atomic<int64_t>& first_ns) {
    timespec now_ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &now_ts);
    const int64_t now = int64_t(now_ts.tv_sec) * 1'000'000'000 + now_ts.tv_nsec + 1;  // never 0
    int64_t first = 0;
    if (first_ns.compare_exchange_strong(first, now)) return SignalRequest::First;
    return now - first < kSameRequestNs ? SignalRequest::Repeat : SignalRequest::Again;
}

}  // namespace retnet::cli
