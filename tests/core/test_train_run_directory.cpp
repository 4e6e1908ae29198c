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
    std::vector<std::string> other = with(args, {"--steps", "2", "--resume"});
    *(std::find(other.begin(), other.end(), "--config") + 1) = (dir / "other_config.json").string();
    const CliResult r = run_retnet(other);
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

}  // namespace
}  // namespace retnet
