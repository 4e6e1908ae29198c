// SPDX-License-Identifier: GPL-3.0-or-later
// The option layer over CLI11 (app/cli/options.cpp) through the built `retnet`: help on stdout with
// every option's default, the same shared option reading the same in every command, values CLI11
// alone would accept (octal, hex, blanks, --flag=2) refused, and one-line errors.
#include <gtest/gtest.h>

#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

// The help line of `option` in `help` ("" if absent).
std::string help_line(const std::string& help, const std::string& option) {
    const size_t at = help.find("  " + option + " ");
    if (at == std::string::npos) return "";
    return help.substr(at, help.find('\n', at) - at);
}

TEST(CliOptions, HelpListsEveryOptionWithItsDefaultOnStdout) {
    const CliResult help = run_retnet({"help", "generate"});
    ASSERT_EQ(help.exit_code, 0) << help.err;
    EXPECT_TRUE(help.err.empty()) << help.err;
    EXPECT_NE(help_line(help.out, "-n,--max-new-tokens N").find("(default: 128)"), std::string::npos) << help.out;
    EXPECT_NE(help_line(help.out, "--top-n N").find("(default: 5)"), std::string::npos) << help.out;
    // A long name puts its meaning on the next line.
    const size_t mode = help.out.find("  --mode parallel|recurrent|chunkwise\n");
    ASSERT_NE(mode, std::string::npos) << help.out;
    const std::string mode_help = help.out.substr(mode, help.out.find('\n', help.out.find('\n', mode) + 1) - mode);
    EXPECT_NE(mode_help.find("(default: parallel)"), std::string::npos) << mode_help;
    for (const char* option : {"-p,--prompt", "-f,--prompt-file", "-s,--seed", "--temp,--temperature", "--greedy",
                               "--max-memory", "--mute", "--device"})
        EXPECT_NE(help.out.find(option), std::string::npos) << option;
    // Groups of options are one blank line apart, as every other part of the help.
    EXPECT_EQ(help.out.find("\n\n\n"), std::string::npos) << help.out;
    EXPECT_NE(help.out.find("\n\nInterventions:\n"), std::string::npos) << help.out;
    // -h, --help and `retnet help CMD` print the same.
    EXPECT_EQ(run_retnet({"generate", "-h"}).out, help.out);
    EXPECT_EQ(run_retnet({"generate", "--help", "--bogus"}).out, help.out);
    // A command with actions lists each action's options.
    const CliResult tokenizer = run_retnet({"tokenizer", "--help"});
    EXPECT_EQ(tokenizer.exit_code, 0);
    EXPECT_NE(tokenizer.out.find("--vocab-size N (required)"), std::string::npos) << tokenizer.out;
    // and an action's own help the options every command takes
    for (const char* action : {"train", "encode", "decode"})
        EXPECT_NE(run_retnet({"tokenizer", action, "--help"}).out.find("--max-memory SIZE"), std::string::npos) << action;
    // no line ends in blanks (CLI11 indented the blank line inside each action's part)
    for (const CliResult* h : {&help, &tokenizer}) {
        EXPECT_EQ(h->out.find(" \n"), std::string::npos) << h->out;
        EXPECT_EQ(h->out.find("\t\n"), std::string::npos) << h->out;
    }
    // `retnet help --help` is the top-level help; a second word after the command is refused, unless
    // the command has actions: then it names one, and a third word is refused.
    EXPECT_EQ(run_retnet({"help", "--help"}).out, run_retnet({"--help"}).out);
    const CliResult two = run_retnet({"help", "bench", "extra"});
    EXPECT_EQ(two.exit_code, 2);
    EXPECT_EQ(two.err, "retnet help: error: it takes one command name, got 'extra' (retnet help bench)\n");
    const CliResult action = run_retnet({"help", "tokenizer", "encode"});
    EXPECT_EQ(action.exit_code, 0) << action.err;
    EXPECT_EQ(action.out, run_retnet({"tokenizer", "encode", "--help"}).out);
    EXPECT_NE(action.out.find("Usage: retnet tokenizer encode"), std::string::npos) << action.out;
    const CliResult unknown_action = run_retnet({"help", "tokenizer", "bogus"});
    EXPECT_EQ(unknown_action.exit_code, run_retnet({"tokenizer", "bogus"}).exit_code);
    EXPECT_NE(unknown_action.exit_code, 0);
    EXPECT_NE(unknown_action.err.find("unknown action 'bogus'"), std::string::npos) << unknown_action.err;
    const CliResult three = run_retnet({"help", "tokenizer", "encode", "extra"});
    EXPECT_EQ(three.exit_code, 2);
    EXPECT_EQ(three.err, "retnet help: error: it takes a command and its action, got 'extra' (retnet help tokenizer ACTION)\n");
    // an option is not an action; an unknown command is named as such, whatever follows it; `help help` is the list
    const CliResult option = run_retnet({"help", "tokenizer", "-m"});
    EXPECT_EQ(option.exit_code, 2);
    EXPECT_EQ(option.err, "retnet help: error: it takes a command and its action, got '-m' (retnet help tokenizer ACTION)\n");
    const CliResult unknown = run_retnet({"help", "bogus", "encode"});
    EXPECT_EQ(unknown.exit_code, 2);
    EXPECT_NE(unknown.err.find("retnet: unknown command 'bogus'"), std::string::npos) << unknown.err;
    EXPECT_EQ(run_retnet({"help", "help"}).out, run_retnet({"--help"}).out);
    // a model is not read from standard input (it said "-: … -/config.json: cannot open")
    const CliResult dash = run_retnet({"info", "-m", "-"});
    EXPECT_EQ(dash.exit_code, 1) << dash.err;
    EXPECT_NE(dash.err.find("option --model: a model is read from a directory (or ORG/NAME), not standard input"),
              std::string::npos)
        << dash.err;
    // The top-level help names every command.
    const CliResult top = run_retnet({"--help"});
    EXPECT_EQ(top.exit_code, 0);
    for (const char* command : {"bench", "chat", "generate", "serve", "tokenizer", "train"})
        EXPECT_NE(top.out.find("\n  " + std::string(command) + " "), std::string::npos) << command;
}

TEST(CliOptions, SharedOptionsReadTheSameInEveryCommand) {
    const std::string model_line = help_line(run_retnet({"help", "info"}).out, "-m,--model DIR|ORG/NAME");
    ASSERT_FALSE(model_line.empty());
    for (const char* command : {"generate", "chat", "bench", "compare", "inspect", "logits", "serve"})
        EXPECT_EQ(help_line(run_retnet({"help", command}).out, "-m,--model DIR|ORG/NAME"), model_line) << command;
    const std::string seed_line = help_line(run_retnet({"help", "generate"}).out, "-s,--seed N");
    EXPECT_EQ(help_line(run_retnet({"help", "chat"}).out, "-s,--seed N"), seed_line);
}

TEST(CliOptions, ValuesCli11AloneWouldReadAreRefused) {
    ScratchDir dir("options_strict");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    // CLI11 2.1.2 reads integers with base 0 (010 = 8, 0x10 = 16) and skips blanks: here 010 is ten
    // and the others are refused.
    const CliResult ten = run_retnet({"generate", "-m", m, "-p", "a", "-n", "010", "--ignore-eos", "--json", "--top-n", "0"});
    ASSERT_EQ(ten.exit_code, 0) << ten.err;
    EXPECT_NE(ten.out.find("\"generated_tokens\":10,"), std::string::npos) << ten.out.substr(ten.out.size() > 300 ? ten.out.size() - 300 : 0);
    for (const char* bad : {"0x10", " 5", "+5", "5 ", "1e9", "12abc"}) {
        const CliResult r = run_retnet({"generate", "-m", m, "-p", "a", "-n", bad});
        EXPECT_EQ(r.exit_code, 1) << bad;
        EXPECT_EQ(r.err_lines(), 1) << r.err;
        EXPECT_NE(r.err.find("option --max-new-tokens expects an integer, got '"), std::string::npos) << r.err;
    }
    // CLI11 takes --flag=2 as on; a flag is a real boolean here.
    const CliResult two = run_retnet({"info", "-m", m, "--json=2"});
    EXPECT_EQ(two.exit_code, 1);
    EXPECT_NE(two.err.find("option --json is a flag"), std::string::npos) << two.err;
    const CliResult off = run_retnet({"info", "-m", m, "--json=off"});
    EXPECT_EQ(off.exit_code, 0) << off.err;
    EXPECT_EQ(off.out.find('{'), std::string::npos) << off.out;  // text, not JSON
    const CliResult upper = run_retnet({"info", "-m", m, "--json=TRUE"});  // refused before 2026-12-05
    EXPECT_EQ(upper.exit_code, 0) << upper.err;
    EXPECT_EQ(upper.out.rfind('{', 0), 0u) << upper.out;
    const CliResult twice = run_retnet({"generate", "-m", m, "-p", "a", "-n", "2", "--max-new-tokens", "3"});
    EXPECT_EQ(twice.exit_code, 1);
    EXPECT_NE(twice.err.find("option --max-new-tokens is given more than once"), std::string::npos) << twice.err;
    // A flag too: `--greedy --greedy=false` is a contradiction, not "the last one wins".
    const CliResult flag_twice = run_retnet({"generate", "-m", m, "-p", "a", "-n", "2", "--greedy", "--greedy=false"});
    EXPECT_EQ(flag_twice.exit_code, 1);
    EXPECT_EQ(flag_twice.err_lines(), 1) << flag_twice.err;
    EXPECT_NE(flag_twice.err.find("option --greedy is given more than once"), std::string::npos) << flag_twice.err;
    const CliResult missing = run_retnet({"generate", "-m", m, "-p"});
    EXPECT_NE(missing.err.find("option --prompt needs a value"), std::string::npos) << missing.err;
    const CliResult action = run_retnet({"tokenizer", "encdoe"});
    EXPECT_NE(action.err.find("unknown action 'encdoe' (expected train, encode or decode; did you mean encode?)"),
              std::string::npos)
        << action.err;
}

}  // namespace
}  // namespace retnet
