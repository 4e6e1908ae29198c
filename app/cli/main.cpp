// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet`: the command-line tool. Errors are one line on stderr and a non-zero exit code.
#include <algorithm>
#include <cstdio>
#include <exception>

#include "command.h"
#include "model_name_option.h"
#include "retnet/error.h"
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
void print_usage() {
    auto table = retnet::cli::command_table();
    std::sort(table.begin(), table.end(), [](auto& a, auto& b) { return a.name < b.name; });
    std::fprintf(stderr, "usage: retnet <command> [options]\n\ncommands:\n");
    for (const auto& c : table) std::fprintf(stderr, "  %s\n", c.usage.c_str());
}
}  // namespace

int main(int argc, char** argv) {
#ifdef RETNET_HAVE_CUDA
    retnet::register_cuda_backend();  // registers "cuda"; it reports a missing GPU when used
    retnet::cuda::register_cuda_trainer();  // `retnet train --device cuda|cuda-tf32|cuda-bf16`
#endif
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
        print_usage();
        return argc < 2 ? 2 : 0;
    }
    const std::string name = argv[1];
    for (const auto& command : retnet::cli::command_table()) {
        if (command.name != name) continue;
        try {
            return command.run(retnet::cli::resolve_model_names(std::vector<std::string>(argv + 2, argv + argc)));
        } catch (const retnet::Cancelled&) {
            std::fprintf(stderr, "retnet %s: cancelled\n", name.c_str());
            return 130;
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "retnet %s: error: out of memory\n", name.c_str());
            return 1;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "retnet %s: error: %s\n", name.c_str(), e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "retnet: unknown command '%s'\n", name.c_str());
    print_usage();
    return 2;
}
