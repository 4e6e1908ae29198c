// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Each subcommand lives in its own cmd_*.cpp and registers itself with a static Command object.
// Its run function declares its options on make_app() (options.h) and parse()s argv first.
#include <string>
#include <vector>

namespace retnet::cli {

using CommandFn = int (*)(const std::vector<std::string>& argv);

struct CommandInfo {
    std::string name;
    std::string summary;  // one line for `retnet --help`; the options come from the command's --help
    CommandFn run;
    bool has_actions = false;  // its first word names an action (`retnet help CMD ACTION` shows the action's help)
};

std::vector<CommandInfo>& command_table();

struct Command {
    Command(std::string name, std::string summary, CommandFn run, bool has_actions = false) {
        command_table().push_back({std::move(name), std::move(summary), run, has_actions});
    }
};

}  // namespace retnet::cli
