// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Command-line options through CLI11. Each command declares its options on a CLI::App made by
// make_app(); the typed helpers below read values strictly (a plain decimal integer within its
// range, a finite number within its range, a flag that is a real boolean) with our one-line
// messages, and parse() turns CLI11's outcomes into ours: help on stdout (HelpShown), every other
// problem a retnet::Error, an unknown option with a "did you mean". Options that several commands
// share are declared once, in shared_options.h.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace retnet::cli {

// parse() printed the help: the command ends with exit 0.
struct HelpShown {};

// A command's options: "retnet NAME" with its description, -h/--help and --max-memory, and the
// formatter that prints each option's default after its meaning.
std::unique_ptr<CLI::App> make_app(const std::string& name, const std::string& description);
// --max-memory SIZE (make_app gives every command one), for a command's actions, whose --help lists their own options
void add_max_memory(CLI::App& app);

// Parses argv (without the program and command names) into the options declared on `app`.
// Throws HelpShown after printing the help for -h/--help, retnet::Error for anything else.
void parse(CLI::App& app, const std::vector<std::string>& argv);

// An integer option: a plain decimal ("12abc", "1e9", "0x10", " 5" refused) in [min, max],
// stored in `value`, whose initial value is the default shown in the help.
CLI::Option* add_int(CLI::App& app, const std::string& names, int64_t& value, int64_t min, int64_t max,
                     const std::string& help);
CLI::Option* add_int(CLI::App& app, const std::string& names, int& value, int64_t min, int64_t max,
                     const std::string& help);
// A floating-point option: finite, in [min, max].
CLI::Option* add_number(CLI::App& app, const std::string& names, double& value, double min, double max,
                        const std::string& help);
// A text option; `value`'s initial value is the default (shown when not empty).
CLI::Option* add_text(CLI::App& app, const std::string& names, std::string& value, const std::string& help);
// --out naming a directory to write (required): '-', which means standard output elsewhere, is refused.
CLI::Option* add_out_directory(CLI::App& app, std::string& value, const std::string& help);
// A flag: alone it is true; --name=true|false|1|0|yes|no|on|off sets it; any other value is an error.
CLI::Option* add_flag(CLI::App& app, const std::string& names, bool& value, const std::string& help);

// The long name an option is known by in messages: "--max-new-tokens" for "-n,--max-new-tokens".
std::string option_name(const std::string& names);

// The candidate closest to `word` (edit distance at most 2, or a prefix), "" if none is: for
// "unknown option --temprature (did you mean --temperature?)".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// "5,17,933" -> {5, 17, 933}; throws on anything else.
std::vector<int32_t> parse_token_list(const std::string& text);

// Strict conversions behind add_int / add_number, for values that come from elsewhere (lists):
// `what` names the value in the message ("option --lengths").
int64_t parse_int(const std::string& what, const std::string& text, int64_t min, int64_t max);
double parse_number(const std::string& what, const std::string& text, double min, double max);

}  // namespace retnet::cli
