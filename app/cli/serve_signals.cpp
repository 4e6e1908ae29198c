// SPDX-License-Identifier: GPL-3.0-or-later
#include "serve_signals.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "retnet/error.h"
#include "signal_request.h"

namespace retnet::cli {
namespace {

std::atomic<int> g_write_fd{-1};
std::atomic<int64_t> g_first_signal_ns{0};  // signal_request.h

// Async-signal-safe only: atomics, clock_gettime(2), write(2) and _exit(2). A repeat within 100 ms
// (`timeout` sends SIGTERM twice at once) is the same request; a later one ends the server at once.
extern "C" void on_stop_signal(int sig) {
    const SignalRequest request = classify_signal(g_first_signal_ns);
    if (request == SignalRequest::Again) {
        static const char kMessage[] = "retnet serve: stopped at once (a second signal); anything still in flight was cut off\n";
        const ssize_t ignored = write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
        (void)ignored;
        _exit(128 + sig);
    }
    if (request == SignalRequest::Repeat) return;
    const char wake = 1;
    const ssize_t ignored = write(g_write_fd.load(), &wake, 1);
    (void)ignored;
}

// The handlers that were there before go back when the server has stopped (main's own).
struct sigaction g_previous_int {}, g_previous_term {};

void set_handlers(void (*handler)(int)) {
    struct sigaction action {};
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, &g_previous_int);
    sigaction(SIGTERM, &action, &g_previous_term);
}

}  // namespace

StopOnSignal::StopOnSignal(std::function<void()> stop) {
    if (pipe2(pipe_, O_CLOEXEC) != 0) throw Error(std::string("cannot create a pipe: ") + std::strerror(errno));
    g_write_fd = pipe_[1];
    g_first_signal_ns = 0;
    signal(SIGPIPE, SIG_IGN);  // a client that left must not end the server
    watcher_ = std::thread([this, stop = std::move(stop)] {
        char byte = 0;
        ssize_t n;
        while ((n = read(pipe_[0], &byte, 1)) < 0 && errno == EINTR) {
        }
        if (n == 1 && byte == 1) {  // 0 (or a closed pipe): the server ended on its own
            std::fputs("retnet serve: stopping: requests in flight are cancelled (a second signal stops at once)\n", stderr);
            stop();
        }
    });
    set_handlers(on_stop_signal);
}

StopOnSignal::~StopOnSignal() {
    // After a stop signal this handler stays: the repeat `timeout` sends may still be on its way, and
    // main's handler would take it for a cancel ("retnet serve: cancelled", 143, after a clean stop).
    if (g_first_signal_ns.load() == 0) {
        sigaction(SIGINT, &g_previous_int, nullptr);
        sigaction(SIGTERM, &g_previous_term, nullptr);
    }
    const char end = 0;
    const ssize_t ignored = write(pipe_[1], &end, 1);  // wakes the watcher if no signal came
    (void)ignored;
    watcher_.join();
    g_write_fd = -1;
    close(pipe_[0]);
    close(pipe_[1]);
}

}  // namespace retnet::cli
