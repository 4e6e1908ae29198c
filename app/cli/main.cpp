// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet`: the command-line tool. Errors are one line on stderr and a non-zero exit code; no
// exception and no signal from a closed pipe ends it any other way.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>

#include "cli_common.h"
#include "command.h"
#include "retnet/cpu_ops.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/stack_limit.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace retnet::cli {
std::vector<CommandInfo>& command_table() {
    static std::vector<CommandInfo> table;
    return table;
}
}  // namespace retnet::cli

namespace {
void print_usage(FILE* to) {
    auto table = retnet::cli::command_table();
    std::sort(table.begin(), table.end(), [](auto& a, auto& b) { return a.name < b.name; });
    std::fprintf(to,
                 "retnet %s: runs, inspects and trains Retentive Network (RetNet) language models.\n\n"
                 "Usage: retnet COMMAND [OPTIONS]\n"
                 "       retnet help COMMAND    every option of COMMAND, its default and meaning (= COMMAND --help)\n"
                 "       retnet --version\n\nCommands:\n",
                 RETNET_VERSION);
    for (const auto& c : table) std::fprintf(to, "  %-11s %s\n", c.name.c_str(), c.summary.c_str());
    std::fprintf(to, "\nEvery command takes --max-memory SIZE (e.g. 8G; K, M, G, T with or without B or iB, all powers of\n"
                     "1024; a bare number or a trailing B is bytes), which caps what it may allocate, and -h/--help.\n"
                     "--model takes a directory or ORG/NAME[@REVISION] of a model in the Hugging Face cache.\n");
}

// The command, then stdout checked: output that did not arrive is an error, not exit 0.
int run_command(const retnet::cli::CommandInfo& command, const std::vector<std::string>& args) {
    int code = 0;
    try {
        code = command.run(args);
    } catch (const retnet::cli::HelpShown&) {
        code = 0;
    }
    retnet::cli::check_stdout();
    return code;
}

// 0, or what a failed write to stdout means (141 for a closed pipe, else 1 with a line).
int stdout_exit_code() {
    const int error = retnet::cli::stdout_error();
    if (error == 0) return 0;
    if (error == EPIPE) return 141;
    std::fprintf(stderr, "retnet: error: cannot write to standard output (%s)\n", std::strerror(error));
    return 1;
}

int print_top_help() {
    print_usage(stdout);
    return stdout_exit_code();
}

// The line and exit status of the exception in flight (called from a catch block).
int report_failure(const char* name) {
    try {
        throw;
    } catch (const retnet::cli::StdoutFailed& e) {
        if (e.error == EPIPE) return 141;  // the reader has gone (`| head`): nothing to say to it
        std::fprintf(stderr, "retnet %s: error: cannot write to standard output (%s)\n", name, std::strerror(e.error));
    } catch (const retnet::Cancelled&) {
        std::fprintf(stderr, "retnet %s: cancelled\n", name);
        return retnet::cli::cancelled_status();
    } catch (const std::bad_alloc&) {
        // Under ulimit -v, --max-memory cannot help: name the cap that was hit.
        if (retnet::address_space_limit_binds())
            std::fprintf(stderr, "retnet %s: error: out of memory under the memory limit of %s (%s; raise it or lower the sizes)\n",
                         name, retnet::format_bytes(retnet::memory_limit()).c_str(),
                         retnet::memory_limit_source().c_str());
        else
            std::fprintf(stderr, "retnet %s: error: out of memory (lower the sizes, or see --max-memory)\n", name);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet %s: error: %s\n", name, retnet::Error(e.what()).what());
    } catch (...) {
        std::fprintf(stderr, "retnet %s: error: unexpected failure (an unknown exception)\n", name);
    }
    return 1;
}

int run_guarded(const retnet::cli::CommandInfo& command, const std::vector<std::string>& args) {
    try {
        return run_command(command, args);
    } catch (...) {
        retnet::cli::end_progress_line();  // the line that follows starts a line of its own
        return report_failure(command.name.c_str());
    }
}

// The handler of Ctrl-C and SIGTERM goes in before anything else runs: the shared libraries'
// initializers (CUDA, cuBLAS, OpenBLAS, MPI, Qt) take about 0.1 s before main() is reached, during
// which SIGINT's default action ended the process without a word. The dynamic linker runs an executable's
// .preinit_array ahead of every library's initializers (glibc passes argc, argv and envp).
// Under a ulimit -v, OpenBLAS's threads are held at one there, before OpenBLAS starts them, and
// fitted to the room left once main() runs (retnet/memory_limit.h: they would hang); the stack limit
// is fitted there, before any thread starts (retnet/stack_limit.h).
void install_handler_first(int argc, char** argv, char** envp) {
    retnet::hold_blas_threads_for_address_limit(argv, envp);  // may execute the process again
    retnet::fit_stack_limit();
    retnet::cli::install_interrupt_handler(argc > 1 ? argv[1] : nullptr);
}
__attribute__((section(".preinit_array"), used)) void (*g_install_handler_first)(int, char**, char**) = install_handler_first;
}  // namespace

int main(int argc, char** argv) {
    // A closed pipe makes write() fail with EPIPE, which run_guarded reports, instead of a signal;
    // a file past `ulimit -f` makes it fail with EFBIG (named as a full disk is), instead of
    // SIGXFSZ ending the process and losing what it had printed.
    std::signal(SIGPIPE, SIG_IGN);
    std::signal(SIGXFSZ, SIG_IGN);
    try {
        retnet::check_memory_setting();  // every command (and --version) would meet it first as an uncaught throw
        retnet::check_stack_limit();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet: error: %s\n", e.what());
        return 1;
    }
    retnet::cpu::fit_blas_threads_to_address_limit();
#ifdef RETNET_HAVE_CUDA
    // "cuda", "cuda-bf16" and the CUDA trainers, from the module loaded when one is first asked for.
    retnet::cuda::install_cuda_module_loader();
#endif
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const std::string first = argv[1];
    if (first == "--help" || first == "-h") return print_top_help();
    if (first == "--version") {
        std::printf("retnet %s\n", RETNET_VERSION);
        return stdout_exit_code();
    }
    std::string name = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    const auto& table = retnet::cli::command_table();
    const auto command_named = [&](const std::string& n) {
        return std::find_if(table.begin(), table.end(), [&](const auto& c) { return c.name == n; });
    };
    if (name == "help" && argc == 2) return print_top_help();
    if (name == "help") {  // `retnet help CMD [ACTION]` = `retnet CMD [ACTION] --help`
        name = argv[2];
        if (name == "--help" || name == "-h" || name == "help") return print_top_help();
        const auto command = command_named(name);
        // an unknown command is named below, whatever follows it; an action is a word, not an option
        const bool actions = command != table.end() && command->has_actions;
        if (command != table.end() && (argc - 2 > (actions ? 2 : 1) || (argc > 3 && argv[3][0] == '-'))) {
            const char* extra = !actions || argv[3][0] == '-' ? argv[3] : argv[4];
            std::fprintf(stderr, "retnet help: error: it takes %s, got '%s' (retnet help %s%s)\n",
                         actions ? "a command and its action" : "one command name", retnet::Error(extra).what(),
                         name.c_str(), actions ? " ACTION" : "");
            return 2;
        }
        args = argc > 3 ? std::vector<std::string>{argv[3], "--help"} : std::vector<std::string>{"--help"};
    }
    if (const auto command = command_named(name); command != table.end()) {
        retnet::cli::name_interrupted_command(name);
        return run_guarded(*command, args);
    }
    std::vector<std::string> names;
    for (const auto& command : table) names.push_back(command.name);
    const std::string near = retnet::cli::closest_match(name, names);
    std::fprintf(stderr, "retnet: unknown command '%s'%s (retnet --help lists the commands)\n",
                 retnet::Error(name).what(), near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str());
    return 2;
}
