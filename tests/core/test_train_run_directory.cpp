// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet train`'s run directory through the CLI: a finished run resumed with other options, a
// start that fails, --out as a symbolic link. Tiny CPU runs (a 1-layer d 16 model, 2 × 16 tokens);
// the lock's clean-up and the link's resolution also on their own.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include "retnet/error.h"
#include "retnet/run_directory.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

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
    // --steps lowered below the steps done: past it, said so (not "complete at step 2/1").
    const CliResult past = run_retnet(with(args, {"--steps", "1", "--resume"}));
    EXPECT_EQ(past.exit_code, 0) << past.err;
    EXPECT_EQ(past.err, "");
    EXPECT_EQ(past.out, "the run in " + (dir / "run").string() +
                            " is already at step 2, past --steps 1; nothing to do (give --steps above 2 to train "
                            "further)\n");
    EXPECT_EQ(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights);
}

// A run killed while it wrote its first checkpoint leaves run.json and an incomplete checkpoint.tmp/:
// --resume and a plain start each say there is nothing to resume and name --overwrite (a plain
// start used to send the user to --resume, and --resume to nothing), which then starts it again.
// A complete checkpoint.tmp/ (killed before the rename) is still something to resume.
TEST(TrainRunDirectory, ARunKilledBeforeItsFirstCheckpointPointsToOverwrite) {
    ScratchDir dir("killed_before_first_checkpoint");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    ASSERT_EQ(run_retnet(args).exit_code, 0);
    const fs::path run = dir / "run";
    fs::rename(run / "checkpoint", run / "checkpoint.tmp");
    fs::remove(run / "checkpoint.tmp" / "trainer_state.json");  // the kill came before this file
    const CliResult resumed = run_retnet(with(args, {"--resume"}));
    EXPECT_EQ(resumed.exit_code, 1);
    EXPECT_EQ(resumed.err, "retnet train: error: " + run.string() +
                               ": no checkpoint to resume: the run stopped while writing its first one (" +
                               (run / "checkpoint.tmp").string() + " is incomplete); start it again with --overwrite\n");
    const CliResult again = run_retnet(args);
    EXPECT_EQ(again.exit_code, 1);
    EXPECT_EQ(again.err, "retnet train: error: " + run.string() +
                             " already holds a training run with no checkpoint to resume (it stopped before saving "
                             "one); replace it with --overwrite, which removes what it holds, or choose another --out\n");
    const CliResult replaced_run = run_retnet(with(args, {"--overwrite"}));
    EXPECT_EQ(replaced_run.exit_code, 0) << replaced_run.err;
    EXPECT_TRUE(fs::exists(run / "checkpoint" / "trainer_state.json"));
    EXPECT_FALSE(fs::exists(run / "checkpoint.tmp"));
    // Killed after the first checkpoint was complete but before its rename: --resume recovers it,
    // so a plain start still points there (and --overwrite would throw it away).
    fs::rename(run / "checkpoint", run / "checkpoint.tmp");
    const CliResult complete = run_retnet(args);
    EXPECT_EQ(complete.exit_code, 1);
    EXPECT_NE(complete.err.find(" already holds a training run; continue it with --resume"), std::string::npos)
        << complete.err;
    const CliResult recovered = run_retnet(with(args, {"--resume"}));
    EXPECT_EQ(recovered.exit_code, 0) << recovered.err;
    EXPECT_NE(recovered.err.find("recovered the complete checkpoint of step 1"), std::string::npos) << recovered.err;
    // A checkpoint/ that lost its state file still holds weights: a plain start sends the user to
    // --resume (which names the missing file), not to --overwrite, which would delete them.
    fs::remove(run / "checkpoint" / "trainer_state.json");
    EXPECT_NE(run_retnet(args).err.find(" already holds a training run; continue it with --resume"), std::string::npos);
    EXPECT_EQ(run_retnet(with(args, {"--resume"})).err,
              "retnet train: error: " + run.string() + ": no checkpoint to resume (checkpoint/trainer_state.json missing); "
              "copy out of " + (run / "checkpoint").string() + " what you want to keep, then start again with --overwrite\n");
    // Only best/ left: nothing to resume, and --overwrite named.
    fs::remove_all(run / "checkpoint");
    ASSERT_TRUE(fs::exists(run / "best"));
    EXPECT_EQ(run_retnet(with(args, {"--resume"})).err,
              "retnet train: error: " + run.string() +
                  ": no checkpoint to resume (none is left); start the run again with --overwrite, which removes "
                  "what it holds, or choose another --out\n");
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

// --overwrite whose start fails (text that is not UTF-8, a config that does not fit the tokenizer:
// both found once the trainer reads them) keeps the run it would have replaced, every file of it
// run.json included, so --resume still continues it; one that starts replaces it. Before, the old
// checkpoints were removed before the inputs were read, and a typo lost the run.
TEST(TrainRunDirectory, OverwriteThatFailsToStartKeepsTheRunItWouldReplace) {
    ScratchDir dir("overwrite_failed");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    ASSERT_EQ(run_retnet(args).exit_code, 0);
    spit(dir / "latin1.txt", slurp(dir / "text.txt") + "caf\xe9\n");
    std::string config = slurp(dir / "config.json");
    config.replace(config.find("\"vocab_size\": 400"), 17, "\"vocab_size\": 500");
    spit(dir / "vocab500.json", config);
    const std::vector<std::string> before = entries(dir / "run");
    const std::string weights = slurp(dir / "run" / "checkpoint" / "model.safetensors");
    const std::string run_json = slurp(dir / "run" / "run.json");
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {replaced(args, "--data", (dir / "latin1.txt").string()), "latin1.txt: invalid UTF-8 at byte offset"},
        {replaced(args, "--config", (dir / "vocab500.json").string()), "vocab500.json: vocab_size = 500 but "},
        // an input inside the checkpoints it would remove (before: the old run was lost, then
        // the new one failed to open its tokenizer)
        {replaced(args, "--tokenizer", (dir / "run" / "checkpoint" / "tokenizer.model").string()),
         "is inside the run that --overwrite would replace ("},
        {replaced(args, "--data", (dir / "run" / "checkpoint" / ".." / "checkpoint" / "config.json").string()),
         "is inside the run that --overwrite would replace ("},
        {replaced(args, "--config", (dir / "run" / "checkpoint" / "config.json").string()),
         "--config " + (dir / "run" / "checkpoint" / "config.json").string() + " is inside the run that --overwrite"},
    };
    for (const auto& [failing, message] : cases) {
        const CliResult r = run_retnet(with(failing, {"--overwrite"}));
        EXPECT_EQ(r.exit_code, 1) << message;
        EXPECT_EQ(r.err_lines(), 1) << r.err;
        EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
        EXPECT_EQ(entries(dir / "run"), before) << message;
        EXPECT_EQ(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights) << message;
        EXPECT_EQ(slurp(dir / "run" / "run.json"), run_json) << message;
    }
    const CliResult resumed = run_retnet(replaced(with(args, {"--resume"}), "--steps", "2"));
    EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.out.find("step      2/2"), std::string::npos) << resumed.out;
    // A start that works replaces it: a new run of one step with another seed.
    const CliResult replaced_run = run_retnet(with(args, {"--overwrite", "--seed", "5"}));
    EXPECT_EQ(replaced_run.exit_code, 0) << replaced_run.err;
    const std::string state = slurp(dir / "run" / "checkpoint" / "trainer_state.json");
    EXPECT_NE(state.find("\"step\": 1,"), std::string::npos) << state;
    EXPECT_NE(state.find("\"seed\": 5"), std::string::npos) << state;
    EXPECT_NE(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights);
    EXPECT_EQ(entries(dir / "run"), before);
}

// --out naming a file, a FIFO or a device: what it is, in one line (before: mkdir's "Not a
// directory", as if a parent were wrong), and it is left as it was.
TEST(TrainRunDirectory, OutThatIsNotADirectorySaysWhatItIs) {
    ScratchDir dir("out_not_a_directory");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    spit(dir / "file", "mine");
    ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0644), 0);
    const std::vector<std::pair<std::string, std::string>> cases = {
        {(dir / "file").string(), "a regular file"},
        {(dir / "fifo").string(), "a FIFO (named pipe)"},
        {"/dev/null", "a character device"},  // only looked at: refused before anything is created
    };
    for (const auto& [out, kind] : cases) {
        const CliResult r = run_retnet(replaced(args, "--out", out));
        EXPECT_EQ(r.exit_code, 1) << out;
        EXPECT_EQ(r.err, "retnet train: error: --out " + out + " is " + kind + ", not a directory; give --out a directory\n");
    }
    // Below a file or a link to nothing: that one is named (mkdir said "Not a directory" or "File
    // exists"), and nothing is created.
    fs::create_symlink("nowhere", dir / "dangling");
    const std::vector<std::pair<fs::path, std::string>> below = {
        {dir / "file" / "run", (dir / "file").string() + " is a regular file, not a directory"},
        {dir / "dangling" / "run", (dir / "dangling").string() + " is a symbolic link to nowhere, which does not exist"},
    };
    for (const auto& [out, why] : below) {
        const CliResult r = run_retnet(replaced(args, "--out", out.string()));
        EXPECT_EQ(r.exit_code, 1) << out;
        EXPECT_EQ(r.err, "retnet train: error: " + out.string() + ": cannot create the run directory (" + why + ")\n");
    }
    EXPECT_FALSE(fs::exists(dir / "nowhere"));
    const CliResult empty = run_retnet(replaced(args, "--out", ""));
    EXPECT_EQ(empty.exit_code, 1);
    EXPECT_EQ(empty.err, "retnet train: error: --out is empty; give the run directory\n");
    EXPECT_EQ(slurp(dir / "file"), "mine");
    EXPECT_TRUE(fs::is_fifo(dir / "fifo"));
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

// The lock alone: released with no run saved, it removes what it made and nothing else.
TEST(TrainRunDirectory, LockReleasedWithoutARunRemovesOnlyWhatItMade) {
    ScratchDir dir("lock_cleanup");
    {
        const train::RunDirectoryLock lock((dir / "a" / "b" / "run").string());
        EXPECT_TRUE(fs::exists(dir / "a" / "b" / "run" / "train.lock"));
        spit(dir / "a" / "b" / "run" / "run.json", "{}");
        fs::create_directories(dir / "a" / "b" / "run" / "checkpoint.tmp");
        spit(dir / "a" / "b" / "run" / "checkpoint.tmp" / "config.json", "{}");
    }
    EXPECT_FALSE(fs::exists(dir / "a"));
    // What stood there before stays: the user's file and an earlier run.json.
    fs::create_directories(dir / "kept");
    spit(dir / "kept" / "notes", "mine");
    spit(dir / "kept" / "run.json", "earlier");
    {
        const train::RunDirectoryLock lock((dir / "kept").string());
        fs::create_directories(dir / "kept" / "best.tmp");
    }
    EXPECT_EQ(entries(dir / "kept"), (std::vector<std::string>{"notes", "run.json"}));
    EXPECT_EQ(slurp(dir / "kept" / "run.json"), "earlier");
    // Once something is saved (best/ here) the run keeps everything.
    {
        const train::RunDirectoryLock lock((dir / "saved").string());
        fs::create_directories(dir / "saved" / "best");
        spit(dir / "saved" / "run.json", "{}");
    }
    EXPECT_EQ(entries(dir / "saved"), (std::vector<std::string>{"best", "run.json", "train.lock"}));
}

TEST(TrainRunDirectory, ResolveRunDirectoryFollowsOnlyALinkToADirectory) {
    ScratchDir dir("resolve");
    fs::create_directories(dir / "real");
    fs::create_symlink("real", dir / "link");
    fs::create_symlink("link", dir / "link_to_link");
    const std::string real = fs::canonical(dir / "real").string();
    EXPECT_EQ(train::resolve_run_directory((dir / "link").string()), real);
    EXPECT_EQ(train::resolve_run_directory((dir / "link/").string()), real);
    EXPECT_EQ(train::resolve_run_directory((dir / "link_to_link").string()), real);
    // Not a link: as given, existing or not.
    for (const std::string& plain : {(dir / "real").string(), (dir / "missing" / "run").string(), std::string("run")})
        EXPECT_EQ(train::resolve_run_directory(plain), plain);
    spit(dir / "file", "x");
    fs::create_symlink("file", dir / "to_file");
    fs::create_symlink("nowhere", dir / "dangling");
    fs::create_symlink("loop_b", dir / "loop_a");
    fs::create_symlink("loop_a", dir / "loop_b");
    const auto refusal = [](const fs::path& p) {
        try {
            train::resolve_run_directory(p.string());
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    EXPECT_EQ(refusal(dir / "to_file"), "--out " + (dir / "to_file").string() + " is a symbolic link to " +
                                            fs::canonical(dir / "file").string() +
                                            ", which is not a directory; give --out a directory");
    EXPECT_EQ(refusal(dir / "dangling"), "--out " + (dir / "dangling").string() +
                                             " is a symbolic link to nowhere, which does not exist; create that "
                                             "directory or give --out a directory");
    EXPECT_EQ(refusal(dir / "loop_a"), "--out " + (dir / "loop_a").string() + " is a symbolic link in a loop of links");
}

// The filesystem root is a directory, but a run there would put train.lock, run.json and its
// checkpoints among the system's directories: refused however it is named, before anything is
// made (resolve_run_directory runs before the lock is taken).
TEST(TrainRunDirectory, TheFilesystemRootIsRefusedHoweverItIsNamed) {
    ScratchDir dir("root");
    fs::create_symlink("/", dir / "to_root");
    const std::string advice = "; give the run a directory of its own, e.g. --out runs/NAME";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"/", "--out / is the filesystem root" + advice},
        {"//", "--out // is the filesystem root (/)" + advice},
        {"/tmp/..", "--out /tmp/.. is the filesystem root (/)" + advice},
        {(dir / "to_root").string(), "--out " + (dir / "to_root").string() + " is the filesystem root (/)" + advice},
        {(dir / "to_root/").string(), "--out " + (dir / "to_root/").string() + " is the filesystem root (/)" + advice},
    };
    for (const auto& [out, message] : cases) {
        try {
            train::resolve_run_directory(out);
            ADD_FAILURE() << out << " accepted";
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()), message);
        }
    }
    EXPECT_EQ(train::resolve_run_directory("/tmp"), "/tmp");  // a directory under the root is one's choice
}

// --out naming one of the run's inputs (the text, say) is named as that input, not only as "a
// regular file"; the file is left as it was.
TEST(TrainRunDirectory, OutThatIsAnInputOfTheRunIsNamedAsSuch) {
    ScratchDir dir("out_is_an_input");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    for (const std::string option : {"--data", "--config", "--tokenizer"}) {
        const std::string input = *(std::find(args.begin(), args.end(), option) + 1);
        const std::string before = slurp(input);
        const CliResult r = run_retnet(replaced(args, "--out", input));
        EXPECT_EQ(r.exit_code, 1) << option;
        EXPECT_EQ(r.err, "retnet train: error: --out " + input + " is the " + option +
                             " file; give the run a directory of its own\n");
        EXPECT_EQ(slurp(input), before);
    }
}

// The one list of the run's inputs that the checks above walk (the inside-the-run refusal, --out
// as an input, the regular-file checks): each path with its option, a missing --tokenizer left out.
TEST(TrainRunDirectory, NamedInputsAreTheFilesTheRunReads) {
    train::TrainOptions o;
    o.data_path = "text.txt";
    o.config_path = "config.json";
    using Named = std::vector<std::pair<std::string, std::string>>;
    EXPECT_EQ(o.named_inputs(), (Named{{"--data", "text.txt"}, {"--config", "config.json"}}));
    o.tokenizer_path = "tokenizer.model";
    EXPECT_EQ(o.named_inputs(),
              (Named{{"--data", "text.txt"}, {"--config", "config.json"}, {"--tokenizer", "tokenizer.model"}}));
}

// --out as a symbolic link to a directory: resolved once and said so; the lock, run.json and the
// checkpoints are the target's (a lock held on the target refuses a run through the link, and the
// run continues through either name); the link stays a link. A link to nothing or to a file is
// refused in one line, creating nothing.
TEST(TrainRunDirectory, OutAsASymlinkIsResolvedOnceAndSaidSo) {
    ScratchDir dir("out_symlink");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--steps", "1"});
    fs::create_directories(dir / "real");
    fs::create_symlink("real", dir / "link");
    const std::string real = fs::canonical(dir / "real").string();
    const std::vector<std::string> via_link = replaced(args, "--out", (dir / "link").string());
    const CliResult r = run_retnet(via_link);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err, "retnet train: --out " + (dir / "link").string() +
                         " is a symbolic link: the run's lock, run.json and checkpoints are in " + real + "\n");
    EXPECT_NE(r.out.find("in " + real + "/best"), std::string::npos) << r.out;
    EXPECT_EQ(entries(dir / "real"), (std::vector<std::string>{"best", "best/config.json", "best/model.safetensors",
                                                               "best/tokenizer.model", "best/training.json",
                                                               "checkpoint", "checkpoint/config.json",
                                                               "checkpoint/model.safetensors",
                                                               "checkpoint/optimizer.safetensors",
                                                               "checkpoint/tokenizer.model",
                                                               "checkpoint/trainer_state.json", "run.json", "train.lock"}));
    EXPECT_EQ(fs::read_symlink(dir / "link"), fs::path("real"));
    {
        const train::RunDirectoryLock held(real);
        const CliResult locked = run_retnet(replaced(with(via_link, {"--resume"}), "--steps", "2"));
        EXPECT_EQ(locked.exit_code, 1);
        EXPECT_NE(locked.err.find("error: " + real + " is in use by another `retnet train` (process " +
                                  std::to_string(::getpid()) + ")"),
                  std::string::npos)
            << locked.err;
    }
    const CliResult through_link = run_retnet(replaced(with(via_link, {"--resume"}), "--steps", "2"));
    EXPECT_EQ(through_link.exit_code, 0) << through_link.err;
    EXPECT_NE(through_link.out.find("step      2/2"), std::string::npos) << through_link.out;
    const CliResult through_real = run_retnet(replaced(replaced(with(args, {"--resume"}), "--out", real), "--steps", "2"));
    EXPECT_EQ(through_real.exit_code, 0) << through_real.err;
    EXPECT_NE(through_real.out.find("already complete at step 2/2"), std::string::npos) << through_real.out;
    // A failed start through a link to an empty directory leaves it empty, and the link.
    fs::create_directories(dir / "empty");
    fs::create_symlink("empty", dir / "link_to_empty");
    spit(dir / "latin1.txt", "caf\xe9\n");
    const CliResult failed = run_retnet(replaced(replaced(args, "--out", (dir / "link_to_empty").string()), "--data",
                                                 (dir / "latin1.txt").string()));
    EXPECT_EQ(failed.exit_code, 1);
    EXPECT_TRUE(entries(dir / "empty").empty());
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir / "link_to_empty")));
    // Refused: a link to nothing (not created), a link to a file (not touched).
    fs::create_symlink("nowhere", dir / "dangling");
    spit(dir / "file", "x");
    fs::create_symlink("file", dir / "to_file");
    for (const char* name : {"dangling", "to_file"}) {
        const CliResult refused = run_retnet(replaced(args, "--out", (dir / name).string()));
        EXPECT_EQ(refused.exit_code, 1) << name;
        EXPECT_EQ(refused.err_lines(), 1) << refused.err;
        EXPECT_EQ(refused.err.rfind("retnet train: error: --out " + (dir / name).string() + " is a symbolic link to ", 0),
                  0u)
            << refused.err;
    }
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir / "nowhere")));
    EXPECT_EQ(slurp(dir / "file"), "x");
}

}  // namespace
}  // namespace retnet
