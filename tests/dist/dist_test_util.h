// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Helpers of the data-parallel tests: a scratch directory and a command run with its output
// captured and a time limit (a job that hangs is a failure, not a stuck test).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace retnet::test {

class ScratchFiles {
public:
    ScratchFiles() {
        static int counter = 0;
        dir_ = std::filesystem::temp_directory_path() /
               ("retnet_dist_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
    }
    ~ScratchFiles() { std::filesystem::remove_all(dir_); }
    ScratchFiles(const ScratchFiles&) = delete;
    ScratchFiles& operator=(const ScratchFiles&) = delete;
    std::filesystem::path path(const std::string& name) const { return dir_ / name; }

private:
    std::filesystem::path dir_;
};

inline std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct Run {
    int exit_code = -1;  // -1: killed by a signal or by the time limit
    bool timed_out = false;
    double seconds = 0;
    std::string out, err;
};

// A child running argv with stdout and stderr in files; started at once, waited for by wait().
class Child {
public:
    explicit Child(const std::vector<std::string>& argv) {
        static int counter = 0;
        const auto base = std::filesystem::temp_directory_path() /
                          ("retnet_dist_run_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        out_ = base.string() + ".out";
        err_ = base.string() + ".err";
        std::vector<std::string> args = argv;
        std::vector<char*> c_argv;
        for (std::string& a : args) c_argv.push_back(a.data());
        c_argv.push_back(nullptr);
        start_ = std::chrono::steady_clock::now();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::setpgid(0, 0);  // its own group, so a time-out ends mpirun and every rank at once
            const int in = ::open("/dev/null", O_RDONLY);
            const int out = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            const int err = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(in, 0);
            ::dup2(out, 1);
            ::dup2(err, 2);
            ::execvp(c_argv[0], c_argv.data());
            ::_exit(127);
        }
    }
    ~Child() {
        if (pid_ > 0) {
            ::kill(-pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        std::filesystem::remove(out_);
        std::filesystem::remove(err_);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    std::string out_so_far() const { return read_text(out_); }

    Run wait(double timeout_s) {
        Run r;
        int status = 0;
        const auto deadline = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(-pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                r.timed_out = true;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        pid_ = -1;
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
        r.out = read_text(out_);
        r.err = read_text(err_);
        return r;
    }

private:
    pid_t pid_ = -1;
    std::string out_, err_;
    std::chrono::steady_clock::time_point start_;
};

inline Run run(const std::vector<std::string>& argv, double timeout_s = 300) { return Child(argv).wait(timeout_s); }

}  // namespace retnet::test
