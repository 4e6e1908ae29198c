// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Helpers of the robustness tests: scratch directories, running the `retnet` executable with an
// exact argv (prompts may hold any bytes, so no shell), a child that can be interrupted, and a
// small model directory with a tokenizer.
#include <cerrno>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "retnet/config.h"
#include "retnet/model.h"
#include "file_size_limit.h"
#include "process_scratch.h"
#include "retnet/tokenizer.h"

namespace retnet::robustness {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void spit(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << bytes;
}

// A fresh directory under /tmp, unique per process (ctest runs tests in parallel), removed after.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& tag) {
        static int counter = 0;
        path_ = fs::temp_directory_path() /
                ("retnet_robust_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~ScratchDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

private:
    fs::path path_;
};

struct CliResult {
    int exit_code = -1;  // -1: killed by a signal (a crash), see signal
    int signal = 0;
    std::string out, err;

    int err_lines() const { return static_cast<int>(std::count(err.begin(), err.end(), '\n')); }
};

// What else a child gets: its stdout sent to a file or device (/dev/full) instead of captured, and
// an address-space cap (RLIMIT_AS), under which an allocation past it fails as on a machine that
// has no more memory.
struct ChildSetup {
    std::string stdout_path;
    std::string stdin_path;  // "" = /dev/null
    long address_space_limit = 0;
    std::vector<std::pair<std::string, std::string>> environment;  // set in the child only
    long stack_soft_limit = 0, stack_hard_limit = 0;                 // RLIMIT_STACK (ulimit -Ss, -Hs) where > 0
};

// Memory caps mean nothing to a sanitizer build, whose shadow memory alone passes them.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

inline void apply_child_setup(const ChildSetup& setup) {
    for (const auto& [name, value] : setup.environment) ::setenv(name.c_str(), value.c_str(), 1);
    if (setup.address_space_limit > 0) {
        const rlimit limit{static_cast<rlim_t>(setup.address_space_limit), static_cast<rlim_t>(setup.address_space_limit)};
        ::setrlimit(RLIMIT_AS, &limit);
    }
    if (setup.stack_soft_limit > 0 || setup.stack_hard_limit > 0) {
        rlimit limit{};
        ::getrlimit(RLIMIT_STACK, &limit);
        if (setup.stack_hard_limit > 0) limit.rlim_max = static_cast<rlim_t>(setup.stack_hard_limit);
        if (setup.stack_soft_limit > 0) limit.rlim_cur = static_cast<rlim_t>(setup.stack_soft_limit);
        ::setrlimit(RLIMIT_STACK, &limit);
    }
}

// Runs `retnet args...` with stdin from /dev/null and waits (at most `timeout_s`, then SIGKILL).
// `file_size_limit` > 0 caps the size of every file the child writes (RLIMIT_FSIZE), as a
// shell's `ulimit -f` does: SIGXFSZ is left at its default action, which retnet itself must
// ignore so that a write past the limit fails with EFBIG, as writes fail on a full disk or quota
// (before, the tests ignored it for the child, and `retnet` under `ulimit -f` was killed).
// "first,first+1,…" (count values): an option's list, such as lengths past any memory for a report of
// many out-of-memory points.
inline std::string counting_list(int64_t first, int count) {
    std::string list;
    for (int k = 0; k < count; ++k) {
        if (k > 0) list += ',';
        list += std::to_string(first + k);
    }
    return list;
}

inline CliResult run_retnet(const std::vector<std::string>& args, int timeout_s = 120, long file_size_limit = 0,
                            const ChildSetup& setup = {}) {
    static int counter = 0;
    const fs::path& dir = test::process_scratch_dir();
    const fs::path out = dir / ("out" + std::to_string(counter)), err = dir / ("err" + std::to_string(counter++));
    std::vector<std::string> argv_strings{RETNET_CLI_PATH};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int in_fd = ::open(setup.stdin_path.empty() ? "/dev/null" : setup.stdin_path.c_str(), O_RDONLY);
        const int out_fd = setup.stdout_path.empty() ? ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644)
                                                     : ::open(setup.stdout_path.c_str(), O_WRONLY);
        const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        apply_child_setup(setup);
        ::dup2(in_fd, 0);
        ::dup2(out_fd, 1);
        ::dup2(err_fd, 2);
        if (file_size_limit > 0) {
            ::signal(SIGXFSZ, SIG_DFL);  // as a shell leaves it (an ignored one would stay so across exec)
            const rlimit limit{static_cast<rlim_t>(file_size_limit), static_cast<rlim_t>(file_size_limit)};
            ::setrlimit(RLIMIT_FSIZE, &limit);
        }
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    CliResult r;
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            r.err = "(timed out)";
            return r;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    r.out = slurp(out);
    r.err = slurp(err);
    fs::remove(out);
    fs::remove(err);
    return r;
}

// `retnet args...` running in the background with its stdout on a pipe, so a test can wait for
// some output, then send a signal.
class RunningRetnet {
public:
    explicit RunningRetnet(const std::vector<std::string>& args, const ChildSetup& setup = {}) {
        static int counter = 0;
        err_path_ = test::process_scratch_dir() / ("background" + std::to_string(counter++) + ".err");
        std::vector<std::string> argv_strings{RETNET_CLI_PATH};
        argv_strings.insert(argv_strings.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (std::string& s : argv_strings) argv.push_back(s.data());
        argv.push_back(nullptr);
        int pipe_fds[2];
        if (::pipe(pipe_fds) != 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            const int in_fd = ::open(setup.stdin_path.empty() ? "/dev/null" : setup.stdin_path.c_str(), O_RDONLY);
            const int err_fd = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            apply_child_setup(setup);
            ::dup2(in_fd, 0);
            ::dup2(pipe_fds[1], 1);
            ::dup2(err_fd, 2);
            ::close(pipe_fds[0]);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(pipe_fds[1]);
        out_fd_ = pipe_fds[0];
    }
    ~RunningRetnet() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        if (out_fd_ >= 0) ::close(out_fd_);
        std::error_code ec;
        fs::remove(err_path_, ec);
    }

    // Reads stdout until it contains `needle` (true) or the child ends / the time is up (false).
    bool wait_for_output(const std::string& needle, int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        while (out_.find(needle) == std::string::npos) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !read_some(static_cast<int>(left.count()))) return false;
        }
        return true;
    }

    // Reads stdout until it holds at least `bytes` bytes (true) or the child ends / the time is up (false).
    bool wait_for_output_bytes(size_t bytes, int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        while (out_.size() < bytes) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !read_some(static_cast<int>(left.count()))) return false;
        }
        return true;
    }

    // Polls the stderr file until it contains `needle` (true) or the time is up (false).
    bool wait_for_stderr(const std::string& needle, int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        while (slurp(err_path_).find(needle) == std::string::npos) {
            if (std::chrono::steady_clock::now() >= deadline) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return true;
    }

    // Whether a /proc status mask line ("SigCgt:", "SigPnd:", "ShdPnd:", then hex) holds `signal`.
    static bool mask_holds(const std::string& line, int signal) {
        return (std::stoull(line.substr(7), nullptr, 16) >> (signal - 1)) & 1;
    }

    // Waits until the child, once it runs retnet, catches `signal` (its handler is in: true), or
    // it ends or the time is up (false).
    bool wait_until_caught(int signal, int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        const fs::path proc = fs::path("/proc") / std::to_string(pid_);
        const fs::path exe = fs::canonical(RETNET_CLI_PATH);
        while (std::chrono::steady_clock::now() < deadline) {
            std::error_code ec;
            const bool exec_done = fs::read_symlink(proc / "exe", ec) == exe;  // before: the test's own handlers
            std::ifstream status(proc / "status");
            for (std::string line; std::getline(status, line);) {
                if (line.rfind("State:", 0) == 0 && line.find('Z') != std::string::npos) return false;
                if (exec_done && line.rfind("SigCgt:", 0) == 0 && mask_holds(line, signal))
                    return true;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        return false;
    }

    // Waits until `signal` is pending neither for the process nor for any of its threads: a handler
    // has taken it. (A loaded machine may leave a signal pending for tens of milliseconds, and the
    // kernel hands pending signals out lowest number first, so a SIGINT sent after a SIGTERM that
    // still waits is taken before it.) False if it is still pending after `timeout_s`.
    bool wait_until_delivered(int signal, int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        const fs::path proc = fs::path("/proc") / std::to_string(pid_);
        const auto pending_in = [&](const fs::path& status_file) {
            std::ifstream status(status_file);
            for (std::string line; std::getline(status, line);)
                if ((line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) && mask_holds(line, signal))
                    return true;
            return false;
        };
        while (std::chrono::steady_clock::now() < deadline) {
            std::error_code ec;
            bool pending = pending_in(proc / "status");
            for (fs::directory_iterator task(proc / "task", ec), end; !pending && !ec && task != end; task.increment(ec))
                pending = pending_in(task->path() / "status");
            if (!pending) return true;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        return false;
    }

    void send(int signal) { ::kill(pid_, signal); }
    // Closes our end of the child's stdout, as `| head` does after its bytes.
    void close_output() {
        if (out_fd_ >= 0) ::close(out_fd_);
        out_fd_ = -1;
    }

    // Waits for the exit (SIGKILL after `timeout_s`) and collects the rest of the output.
    CliResult finish(int timeout_s) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
        CliResult r;
        bool timed_out = false;
        while (true) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                timed_out = true;
                break;
            }
            if (!read_some(static_cast<int>(left.count()))) break;  // EOF: the child closed stdout
        }
        // the exit, by the same deadline: a child that closed its output may still hang (in its exit handlers)
        int status = 0;
        while (!timed_out && ::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() >= deadline) timed_out = true;
            else std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (timed_out) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &status, 0);
            r.err = "(timed out)";
        }
        reaped_ = true;
        if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
        r.out = out_;
        r.err += slurp(err_path_);
        return r;
    }

    const std::string& output() const { return out_; }

private:
    bool read_some(int timeout_ms) {
        if (out_fd_ < 0) {  // output closed by the test: only wait for the exit
            std::this_thread::sleep_for(std::chrono::milliseconds(std::min(timeout_ms, 20)));
            siginfo_t info{};
            ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
            return info.si_pid == 0;  // still running
        }
        pollfd p{out_fd_, POLLIN, 0};
        const int ready = ::poll(&p, 1, timeout_ms);
        if (ready == 0 || (ready < 0 && errno == EINTR)) return true;  // nothing yet: the caller's deadline decides
        if (ready < 0) return false;
        char buffer[4096];
        const ssize_t n = ::read(out_fd_, buffer, sizeof buffer);
        if (n <= 0) return false;
        out_.append(buffer, static_cast<size_t>(n));
        return true;
    }

    pid_t pid_ = -1;
    int out_fd_ = -1;
    bool reaped_ = false;
    std::string out_;
    fs::path err_path_;
};

inline std::vector<std::string> tokenizer_corpus_lines() {
    std::ifstream in(std::string(RETNET_TEST_DATA_DIR) + "/tokenizer/corpus.txt");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

// The tokenizer corpus, a line each, repeated until the text holds at least `bytes` bytes.
inline std::string repeated_corpus(size_t bytes) {
    std::string corpus, text;
    for (const std::string& line : tokenizer_corpus_lines()) corpus += line + "\n";
    while (text.size() < bytes) text += corpus;
    return text;
}

// A small fla model (d = 32, 2 heads, 2 layers) with a 400-piece byte-fallback tokenizer,
// BOS 1 and EOS 2: enough for `retnet generate --prompt` and fast on any machine.
inline ModelConfig small_chat_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 400;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 32;
    c.value_dim = 64;
    c.ffn_dim = 64;
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    return c;
}

inline void write_small_model(const fs::path& dir, bool with_tokenizer = true);

// `args` followed by `extra`: a command line with what one case adds.
inline std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& extra) {
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

// A tiny training run in `dir`: write_small_model's tokenizer, three copies of the tokenizer corpus
// as text, a one-layer d = 16 config. Returns the `retnet train` arguments that write to dir/run
// (batch 2 × 16, no periodic validation or checkpoints); a test adds --steps and what it needs.
inline std::vector<std::string> tiny_training_args(const fs::path& dir) {
    write_small_model(dir / "model");
    const fs::path text = dir / "text.txt", config = dir / "config.json";
    std::string corpus;
    for (const std::string& line : tokenizer_corpus_lines()) corpus += line + "\n";
    spit(text, corpus + corpus + corpus);
    spit(config, R"({"model_type": "retnet", "hidden_size": 16, "num_heads": 2, "num_hidden_layers": 1,
                     "expand_k": 1, "expand_v": 1, "intermediate_size": 32, "vocab_size": 400,
                     "bos_token_id": 1, "eos_token_id": 2})");
    return {"train", "--data", text.string(), "--config", config.string(), "--tokenizer",
            (dir / "model" / "tokenizer.model").string(), "--out", (dir / "run").string(), "--batch", "2",
            "--seq-len", "16", "--threads", "1", "--log-every", "1", "--eval-every", "0", "--save-every", "0",
            "--val-fraction", "0.2"};
}

inline void write_small_model(const fs::path& dir, bool with_tokenizer) {
    save_model(make_random_model(small_chat_config(), 7), dir.string());
    if (!with_tokenizer) return;
    static const std::string serialized = [] {
        TokenizerTrainOptions options;
        options.vocab_size = 400;
        return train_tokenizer(tokenizer_corpus_lines(), options);
    }();
    spit(dir / "tokenizer.model", serialized);
}

}  // namespace retnet::robustness
