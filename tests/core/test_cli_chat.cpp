// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet chat` with piped input: the recurrent state is kept between turns (turn 2 equals one
// `generate` over prompt + reply + prompt, and only the new tokens are run), /reset and /quit
// work, and Ctrl-C stops the reply under way, not the session.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

const fs::path& chat_model() {
    static ScratchDir dir("chat_model");
    static bool written = [] {
        write_small_model(dir.path());
        return true;
    }();
    (void)written;
    return dir.path();
}

// The options both runs share: a fixed seed, sampling (not greedy), the recurrent form.
const std::vector<std::string> kSampling = {"--seed", "11", "-n", "10", "--ignore-eos", "--mode", "recurrent",
                                            "--temperature", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0"};

std::vector<nlohmann::json> chat(const std::string& input, CliResult* result = nullptr, int expected_exit = 0,
                                 const std::vector<std::string>& extra = {}) {
    ScratchDir dir("chat_input");
    spit(dir / "in.txt", input);
    std::vector<std::string> args{"chat", "-m", chat_model().string(), "--json"};
    args.insert(args.end(), kSampling.begin(), kSampling.end());
    args.insert(args.end(), extra.begin(), extra.end());
    const CliResult r = run_retnet(args, 120, 0, ChildSetup{"", (dir / "in.txt").string(), 0, {}});
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    EXPECT_NE(r.err.find("[turn 1: "), std::string::npos) << r.err;
    std::vector<nlohmann::json> turns;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) turns.push_back(nlohmann::json::parse(line));
    if (result) *result = r;
    return turns;
}

std::vector<int32_t> ids(const nlohmann::json& list) { return list.get<std::vector<int32_t>>(); }

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

std::string id_list(const std::vector<int32_t>& tokens) {
    std::string out;
    for (const int32_t id : tokens) {
        if (!out.empty()) out += ',';
        out += std::to_string(id);
    }
    return out;
}

TEST(CliChat, SecondTurnContinuesFromTheStateAndEqualsOneGenerateOverTheConversation) {
    CliResult r;
    const auto turns = chat("to be or\nnot to be\n", &r);
    ASSERT_EQ(turns.size(), 2u) << r.out;
    const auto prompt1 = ids(turns[0]["input_tokens"]), reply1 = ids(turns[0]["tokens"]);
    const auto prompt2 = ids(turns[1]["input_tokens"]), reply2 = ids(turns[1]["tokens"]);
    ASSERT_EQ(reply1.size(), 10u);
    ASSERT_EQ(reply2.size(), 10u);
    EXPECT_EQ(prompt1.front(), 1);                 // BOS starts the conversation
    EXPECT_NE(prompt2.front(), 1);                 // and only the conversation
    // Turn 2 ran its own tokens and the pending last reply token, never the history again.
    EXPECT_EQ(turns[1]["prefill_tokens"].get<size_t>(), prompt2.size() + 1);
    EXPECT_EQ(turns[1]["sequence_tokens"].get<size_t>(), prompt1.size() + 10 + prompt2.size() + 10);
    EXPECT_EQ(turns[0]["state_bytes"], turns[1]["state_bytes"]);
    EXPECT_GT(turns[0]["state_bytes"].get<int64_t>(), 0);
    EXPECT_NE(r.err.find("[turn 2: "), std::string::npos) << r.err;

    // The same seed over the whole conversation in one `generate` gives the same reply.
    std::vector<std::string> args{"generate", "-m", chat_model().string(), "--json", "--top-n", "0",
                                  "--tokens", id_list(concat(concat(prompt1, reply1), prompt2))};
    args.insert(args.end(), kSampling.begin(), kSampling.end());
    const CliResult whole = run_retnet(args);
    ASSERT_EQ(whole.exit_code, 0) << whole.err;
    std::string last = whole.out.substr(whole.out.rfind('\n', whole.out.size() - 2) + 1);
    const auto summary = nlohmann::json::parse(last);
    EXPECT_EQ(ids(summary["tokens"]), reply2);
    EXPECT_EQ(summary["text"], turns[1]["text"]);

    // Without the first turn, the second line alone continues differently: the state mattered.
    args[7] = id_list(concat({1}, prompt2));  // the value of --tokens
    const CliResult alone = run_retnet(args);
    ASSERT_EQ(alone.exit_code, 0) << alone.err;
    const auto alone_summary = nlohmann::json::parse(alone.out.substr(alone.out.rfind('\n', alone.out.size() - 2) + 1));
    EXPECT_NE(ids(alone_summary["tokens"]), reply2);
}

TEST(CliChat, ResetStartsOverAndQuitEnds) {
    const auto turns = chat("to be or\n\n/reset\nto be or\n/quit\nnot read\n");
    ASSERT_EQ(turns.size(), 2u);  // the empty line is skipped, nothing after /quit is read
    EXPECT_EQ(turns[1]["input_tokens"], turns[0]["input_tokens"]);  // BOS again
    EXPECT_EQ(turns[1]["tokens"], turns[0]["tokens"]);
    EXPECT_EQ(turns[1]["prefill_tokens"], turns[0]["prefill_tokens"]);
    EXPECT_EQ(turns[1]["sequence_tokens"], turns[0]["sequence_tokens"]);
}

// A line the model cannot take (invalid UTF-8, more tokens than --max-prompt-tokens) is refused in
// one line and skipped: the conversation goes on from the state as it was (the next turn equals the
// same conversation without that line), and the exit status says that a line was refused. A CRLF
// line ending is a line ending: "/quit\r" quits.
TEST(CliChat, ARefusedLineIsSkippedAndTheConversationGoesOn) {
    const auto clean = chat("to be or\nnot\n", nullptr, 0, {"--max-prompt-tokens", "200"});
    ASSERT_EQ(clean.size(), 2u);
    CliResult r;
    const auto turns = chat("to be or\n\xc3\x28 bad\n" + std::string(300, 'a') + "\nnot\r\n/quit\r\nnot read\n", &r, 1,
                             {"--max-prompt-tokens", "200"});
    ASSERT_EQ(turns.size(), 2u) << r.err;
    EXPECT_EQ(turns[1]["input_tokens"], clean[1]["input_tokens"]);
    EXPECT_EQ(turns[1]["tokens"], clean[1]["tokens"]);
    EXPECT_EQ(turns[1]["sequence_tokens"], clean[1]["sequence_tokens"]);
    EXPECT_NE(r.err.find("line 2 skipped (the conversation goes on): prompt: invalid UTF-8"), std::string::npos) << r.err;
    const size_t at = r.err.find("line 3 skipped (the conversation goes on): the prompt has ");
    ASSERT_NE(at, std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tokens, more than the limit of 200 (raise --max-prompt-tokens)\n", at), std::string::npos) << r.err;
}

TEST(CliChat, CtrlCStopsTheReplyNotTheSession) {
    ScratchDir dir("chat_sigint");
    spit(dir / "in.txt", "to be or\nnot\n");
    RunningRetnet child({"chat", "-m", chat_model().string(), "-n", "10000000", "--ignore-eos"},
                        ChildSetup{"", (dir / "in.txt").string(), 0, {}});
    // The replies are effectively endless; once one streams, Ctrl-C ends it and the next turn starts.
    ASSERT_TRUE(child.wait_for_output_bytes(20, 60)) << child.output();
    child.send(SIGINT);
    ASSERT_TRUE(child.wait_for_stderr("[turn 1: ", 60));
    ASSERT_TRUE(child.wait_for_output_bytes(child.output().size() + 20, 60));
    child.send(SIGINT);
    const CliResult r = child.finish(60);
    EXPECT_EQ(r.signal, 0);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    for (const char* turn : {"[turn 1: ", "[turn 2: "}) {
        const size_t at = r.err.find(turn);
        ASSERT_NE(at, std::string::npos) << r.err;
        const std::string line = r.err.substr(at, r.err.find('\n', at) - at);
        EXPECT_NE(line.find(" tokens/s, stopped; "), std::string::npos) << line;
    }
}

TEST(CliChat, NeedsATokenizer) {
    ScratchDir dir("chat_no_tokenizer");
    write_small_model(dir.path(), /*with_tokenizer=*/false);
    const CliResult r = run_retnet({"chat", "-m", dir.path().string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("has no tokenizer.model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace retnet
