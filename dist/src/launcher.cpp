// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/dist/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "retnet/error.h"

namespace retnet::dist {

namespace {

std::atomic<int> g_signal{0};  // the last SIGINT/SIGTERM the launcher received
void remember_signal(int sig) { g_signal = sig; }

// SIGINT and SIGTERM only recorded while the ranks run; the previous handlers come back after.
class SignalCatcher {
public:
    SignalCatcher() {
        g_signal = 0;
        struct sigaction sa {};
        sa.sa_handler = remember_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int_);
        sigaction(SIGTERM, &sa, &old_term_);
    }
    ~SignalCatcher() {
        sigaction(SIGINT, &old_int_, nullptr);
        sigaction(SIGTERM, &old_term_, nullptr);
    }
    SignalCatcher(const SignalCatcher&) = delete;
    SignalCatcher& operator=(const SignalCatcher&) = delete;

private:
    struct sigaction old_int_ {}, old_term_ {};
};

pid_t start_rank(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env) {
    std::vector<std::string> args = argv;
    std::vector<char*> c_argv;
    for (std::string& a : args) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("cannot start a rank (fork: ") + std::strerror(errno) + ")");
    if (pid > 0) return pid;
    // The child: dies with the launcher, gets its rank's variables, becomes the program.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the launcher died before prctl
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGINT, &dfl, nullptr);
    sigaction(SIGTERM, &dfl, nullptr);
    for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
    ::execv(c_argv[0], c_argv.data());
    ::_exit(127);
}

std::string describe_exit(int rank, int status) {
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        const char* name = ::sigabbrev_np(sig);
        return "rank " + std::to_string(rank) + " was killed by signal " + std::to_string(sig) +
               (name ? std::string(" (SIG") + name + ")" : "");
    }
    return "rank " + std::to_string(rank) + " exited with status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

LaunchResult launch_ranks(const std::vector<std::string>& argv, int size,
                          const std::function<std::vector<std::pair<std::string, std::string>>(int rank)>& env,
                          const LaunchOptions& options) {
    if (argv.empty() || size < 1) throw Error("launch_ranks: nothing to start");
    using clock = std::chrono::steady_clock;
    SignalCatcher signals;
    std::vector<pid_t> pids;
    LaunchResult result;
    const auto stop_all = [&](int sig) {
        for (const pid_t pid : pids)
            if (pid > 0) ::kill(pid, sig);
    };
    try {
        for (int r = 0; r < size; ++r) pids.push_back(start_rank(argv, env(r)));
    } catch (const Error&) {
        stop_all(SIGKILL);
        for (const pid_t pid : pids) ::waitpid(pid, nullptr, 0);
        throw;
    }
    int running = size;
    bool interrupted = false;
    clock::time_point kill_at = clock::time_point::max();  // SIGKILL for ranks stopped with SIGTERM
    while (running > 0) {
        if (const int sig = g_signal.exchange(0); sig != 0) {
            stop_all(sig);  // Ctrl-C: the ranks save and exit 130; SIGTERM: they end
            if (sig == SIGTERM && result.message.empty()) {
                result = {1, "stopped by SIGTERM; so were the ranks"};
                kill_at = std::min(kill_at, clock::now() + std::chrono::duration_cast<clock::duration>(
                                                                std::chrono::duration<double>(options.grace_s)));
            }
        }
        if (clock::now() >= kill_at) stop_all(SIGKILL);
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            continue;
        }
        const auto it = std::find(pids.begin(), pids.end(), pid);
        if (it == pids.end()) continue;  // not one of ours
        const int rank = static_cast<int>(it - pids.begin());
        *it = -1;
        --running;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 130) {
            interrupted = true;
            continue;
        }
        if (ok || !result.message.empty()) continue;
        // The first failure: the other ranks would wait for this one forever.
        result.exit_code = 1;
        result.message = describe_exit(rank, status) + "; the other ranks were stopped";
        stop_all(SIGTERM);
        kill_at = std::min(kill_at, clock::now() + std::chrono::duration_cast<clock::duration>(
                                                       std::chrono::duration<double>(options.grace_s)));
    }
    if (result.exit_code == 0 && interrupted) result.exit_code = 130;
    return result;
}

}  // namespace retnet::dist
