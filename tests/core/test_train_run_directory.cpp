// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet train`'s run directory through the CLI: a finished run resumed with other options, a
// start that fails, --out as a symbolic link. Tiny CPU runs (a 1-layer d 16 model, 2 × 16 tokens).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& extra) {
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

// The files and folders under `dir` (relative paths, sorted): what a run left there.
std::vector<std::string> entries(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& e : fs::recursive_directory_iterator(dir)) names.push_back(fs::relative(e.path(), dir).string());
    std::sort(names.begin(), names.end());
    return names;
}

// `args` with option `name`'s value replaced.
std::vector<std::string> replaced(std::vector<std::string> args, const std::string& name, const std::string& value) {
    *(std::find(args.begin(), args.end(), name) + 1) = value;
    return args;
}

TEST(TrainRunDirectory, FinishedRunResumedWithOtherOptionsIsRefusedLikeAnUnfinishedOne) {
    ScratchDir dir("finished_resume");
    const std::vector<std::string> args = tiny_training_args(dir.path());
    ASSERT_EQ(run_retnet(with(args, {"--steps", "2"})).exit_code, 0);
    const std::string weights = slurp(dir / "run" / "checkpoint" / "model.safetensors");
    const std::string expected = "retnet train: error: " + (dir / "run" / "checkpoint" / "trainer_state.json").string() +
                                 ": the run was started with other options: --lr 0.001 (this command: 0.005), --seed 1 "
                                 "(this command: 9); resume with the run's options\n";
    // At its last step (--steps 2) and with steps left to train (--steps 3): the same one line.
    for (const char* steps : {"2", "3"}) {
        const CliResult r = run_retnet(with(args, {"--steps", steps, "--resume", "--lr", "0.005", "--seed", "9"}));
        EXPECT_EQ(r.exit_code, 1) << steps;
        EXPECT_EQ(r.err, expected) << steps;
        EXPECT_EQ(r.out.find("already complete"), std::string::npos) << r.out;
    }
    // Another model config, on a finished run: named too.
    std::string config = slurp(dir / "config.json");
    config.replace(config.find("\"intermediate_size\": 32"), 23, "\"intermediate_size\": 48");
    spit(dir / "other_config.json", config);
    const CliResult r =
        run_retnet(replaced(with(args, {"--steps", "2", "--resume"}), "--config", (dir / "other_config.json").string()));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find(": the run was started with other options: --config " + (dir / "other_config.json").string() +
                         " (not the model of the run, " + (dir / "run" / "checkpoint" / "config.json").string() + ")"),
              std::string::npos)
        << r.err;
    // Unchanged: complete, nothing to do, exit 0, the checkpoint untouched.
    const CliResult done = run_retnet(with(args, {"--steps", "2", "--resume"}));
    EXPECT_EQ(done.exit_code, 0) << done.err;
    EXPECT_EQ(done.err, "");
    EXPECT_NE(done.out.find("already complete at step 2/2; nothing to do"), std::string::npos) << done.out;
    EXPECT_EQ(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights);
}

// Starts that fail after the run directory was taken (the lock, run.json): text that is not UTF-8,
// a config whose vocabulary is not the tokenizer's (both found once the data is read), --resume of
// a directory without a run. Each leaves no directory, and the fixed command needs no --overwrite.
TEST(TrainRunDirectory, FailedStartIntoANewDirectoryLeavesNothingBehind) {
    ScratchDir dir("failed_start_new");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    spit(dir / "latin1.txt", slurp(dir / "text.txt") + "caf\xe9\n");
    std::string config = slurp(dir / "config.json");
    config.replace(config.find("\"vocab_size\": 400"), 17, "\"vocab_size\": 500");
    spit(dir / "vocab500.json", config);
    const fs::path out = dir / "new" / "nested" / "run";  // three directories made for --out
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {replaced(args, "--data", (dir / "latin1.txt").string()), "latin1.txt: invalid UTF-8 at byte offset"},
        {replaced(args, "--config", (dir / "vocab500.json").string()), "vocab500.json: vocab_size = 500 but "},
        {with(args, {"--resume"}), "run: no checkpoint to resume"},
    };
    for (const auto& [failing, message] : cases) {
        const CliResult r = run_retnet(replaced(failing, "--out", out.string()));
        EXPECT_EQ(r.exit_code, 1) << message;
        EXPECT_EQ(r.err_lines(), 1) << r.err;
        EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
        EXPECT_FALSE(fs::exists(dir / "new")) << message;
    }
    const CliResult fixed = run_retnet(replaced(args, "--out", out.string()));
    EXPECT_EQ(fixed.exit_code, 0) << fixed.err;
    EXPECT_TRUE(fs::exists(out / "checkpoint" / "trainer_state.json"));
}

// A directory that was there keeps exactly what it held: an empty one stays empty, one with a file
// of the user's keeps only that file.
TEST(TrainRunDirectory, FailedStartIntoAnExistingDirectoryLeavesItAsItWas) {
    ScratchDir dir("failed_start_existing");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    spit(dir / "latin1.txt", "caf\xe9\n");
    fs::create_directories(dir / "empty");
    fs::create_directories(dir / "notes");
    spit(dir / "notes" / "README", "mine");
    for (const char* name : {"empty", "notes"}) {
        const std::vector<std::string> expected = entries(dir / name);
        const std::vector<std::string> into = replaced(args, "--out", (dir / name).string());
        for (const auto& failing : {replaced(into, "--data", (dir / "latin1.txt").string()), with(into, {"--resume"})}) {
            const CliResult r = run_retnet(failing);
            EXPECT_EQ(r.exit_code, 1) << name;
            EXPECT_EQ(r.err_lines(), 1) << r.err;
            EXPECT_EQ(entries(dir / name), expected) << name << ": " << r.err;
        }
    }
    EXPECT_EQ(slurp(dir / "notes" / "README"), "mine");
    const CliResult fixed = run_retnet(replaced(args, "--out", (dir / "empty").string()));
    EXPECT_EQ(fixed.exit_code, 0) << fixed.err;
    EXPECT_TRUE(fs::exists(dir / "empty" / "checkpoint" / "trainer_state.json"));
}

// A resume that fails once training has the directory (a damaged trainer_state.json, found when
// the checkpoint is loaded) leaves every file of the run as it was.
TEST(TrainRunDirectory, FailedResumeLeavesTheRunsFilesAlone) {
    ScratchDir dir("failed_resume");
    const std::vector<std::string> args = tiny_training_args(dir.path());
    ASSERT_EQ(run_retnet(with(args, {"--steps", "1"})).exit_code, 0);
    const fs::path state = dir / "run" / "checkpoint" / "trainer_state.json";
    std::string text = slurp(state);
    text.replace(text.find("\"data_rng\": \""), 13, "\"data_rng\": \"garbage ");
    spit(state, text);
    const std::vector<std::string> before = entries(dir / "run");
    const CliResult r = run_retnet(with(args, {"--steps", "2", "--resume"}));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("field 'data_rng' is not a saved data generator state"), std::string::npos) << r.err;
    EXPECT_EQ(entries(dir / "run"), before);
    EXPECT_EQ(slurp(state), text);
}

}  // namespace
}  // namespace retnet
