// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet`: the command-line tool. Errors are one line on stderr and a non-zero exit code; no
// exception and no signal from a closed pipe ends it any other way.
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>

#include "args.h"
#include "cli_common.h"
#include "command.h"
#include "model_name_option.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/cuda_trainer.h"
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
    std::fprintf(to, "usage: retnet <command> [options]   (retnet help <command>, retnet --version)\n\ncommands:\n");
    for (const auto& c : table) std::fprintf(to, "  %s\n", c.usage.c_str());
    std::fprintf(to, "\nevery command: --max-memory SIZE (e.g. 8G) caps what it may allocate\n");
}

// --max-memory SIZE (any command): taken out of argv before the command parses it.
std::vector<std::string> take_memory_option(std::vector<std::string> args) {
    for (size_t i = 0; i < args.size(); ++i) {
        std::string value;
        if (args[i].rfind("--max-memory=", 0) == 0) {
            value = args[i].substr(13);
            args.erase(args.begin() + static_cast<long>(i));
        } else if (args[i] == "--max-memory") {
            if (i + 1 >= args.size()) throw retnet::Error("option --max-memory needs a value (e.g. 8G)");
            value = args[i + 1];
            args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
        } else {
            continue;
        }
        retnet::set_memory_limit(retnet::parse_bytes(value, "option --max-memory"));
        break;
    }
    return args;
}

// The command, then stdout checked: output that did not arrive is an error, not exit 0.
int run_command(const retnet::cli::CommandInfo& command, const std::vector<std::string>& args) {
    if (std::find(args.begin(), args.end(), "--help") != args.end() || std::find(args.begin(), args.end(), "-h") != args.end()) {
        std::printf("usage: %s\n", command.usage.c_str());
        retnet::cli::check_stdout();
        return 0;
    }
    // --model ORG/NAME[@REVISION] becomes the snapshot directory of the Hugging Face cache.
    const int code = command.run(retnet::cli::resolve_model_names(take_memory_option(args)));
    retnet::cli::check_stdout();
    return code;
}

int run_guarded(const retnet::cli::CommandInfo& command, const std::vector<std::string>& args) {
    const char* name = command.name.c_str();
    try {
        return run_command(command, args);
    } catch (const retnet::cli::StdoutFailed& e) {
        if (e.error == EPIPE) return 141;  // the reader has gone (`| head`): nothing to say to it
        std::fprintf(stderr, "retnet %s: error: cannot write to standard output (%s)\n", name, std::strerror(e.error));
    } catch (const retnet::Cancelled&) {
        std::fprintf(stderr, "retnet %s: cancelled\n", name);
        return 130;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "retnet %s: error: out of memory (lower the sizes, or see --max-memory)\n", name);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet %s: error: %s\n", name, retnet::Error(e.what()).what());
    } catch (...) {
        std::fprintf(stderr, "retnet %s: error: unexpected failure (an unknown exception)\n", name);
    }
    return 1;
}
}  // namespace

int main(int argc, char** argv) {
    // A closed pipe makes write() fail with EPIPE, which run_guarded reports, instead of a signal.
    std::signal(SIGPIPE, SIG_IGN);
#ifdef RETNET_HAVE_CUDA
    retnet::register_cuda_backend();  // registers "cuda"; it reports a missing GPU when used
    retnet::cuda::register_cuda_trainer();  // `retnet train --device cuda|cuda-tf32|cuda-bf16`
#endif
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const std::string first = argv[1];
    if (first == "--help" || first == "-h" || first == "--version") {
        if (first == "--version") std::printf("retnet %s\n", RETNET_VERSION);
        else print_usage(stdout);
        if (const int error = retnet::cli::stdout_error()) {
            if (error == EPIPE) return 141;
            std::fprintf(stderr, "retnet: error: cannot write to standard output (%s)\n", std::strerror(error));
            return 1;
        }
        return 0;
    }
    std::string name = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (name == "help" && argc > 2) {  // `retnet help CMD` = `retnet CMD --help`
        name = argv[2];
        args = {"--help"};
    }
    for (const auto& command : retnet::cli::command_table())
        if (command.name == name) return run_guarded(command, args);
    std::vector<std::string> names;
    for (const auto& command : retnet::cli::command_table()) names.push_back(command.name);
    const std::string near = retnet::cli::closest_match(name, names);
    std::fprintf(stderr, "retnet: unknown command '%s'%s (retnet --help lists the commands)\n",
                 retnet::Error(name).what(), near.empty() ? "" : (" (did you mean '" + near + "'?)").c_str());
    return 2;
}
