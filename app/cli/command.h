// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself with a static Command object.
#include <string>
#include <vector>

namespace retnet::cli {

using CommandFn = int (*)(const std::vector<std::string>& argv);

struct CommandInfo {
    std::string name;
    std::string usage;  // one line: "retnet info --model DIR"
    CommandFn run;
};

std::vector<CommandInfo>& command_table();

struct Command {
    Command(std::string name, std::string usage, CommandFn run) {
        command_table().push_back({std::move(name), std::move(usage), run});
    }
};

}  // namespace retnet::cli
