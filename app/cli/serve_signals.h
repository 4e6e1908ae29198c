// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// SIGINT/SIGTERM stop `retnet serve` gracefully, whichever thread the kernel hands the signal to.
// A signal mask cannot do that: OpenBLAS starts its pool threads before main, with nothing blocked,
// and a SIGTERM landing on one of them used to kill the server outright (exit 143). So the handler,
// process-wide, only writes a byte to a pipe; a watcher thread reads it and calls `stop`. A second
// signal while stopping exits at once (a user pressing Ctrl-C again); each says so in a line on stderr.
#include <functional>
#include <thread>

namespace retnet::cli {

class StopOnSignal {
public:
    explicit StopOnSignal(std::function<void()> stop);  // installs the handlers, starts the watcher
    ~StopOnSignal();  // the previous handlers back (unless a stop signal came), watcher ended
    StopOnSignal(const StopOnSignal&) = delete;
    StopOnSignal& operator=(const StopOnSignal&) = delete;

private:
    int pipe_[2] = {-1, -1};
    std::thread watcher_;
};

}  // namespace retnet::cli
