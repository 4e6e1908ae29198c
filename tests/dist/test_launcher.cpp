// SPDX-License-Identifier: GPL-3.0-or-later
// The `retnet train --gpus N` launcher with stand-in ranks (sh): each rank gets its environment, a
// rank that fails stops the others within the grace period and is named in one line, ranks that
// stop on Ctrl-C make the job's status 130. And `retnet train --gpus` on a machine without GPUs
// refuses in one line before starting anything.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "retnet/dist/launcher.h"
#include "retnet/dist/ranks.h"
#include "retnet/error.h"
#include "dist_test_util.h"

namespace fs = std::filesystem;
using namespace retnet;
using namespace retnet::dist;

namespace {

std::vector<std::pair<std::string, std::string>> env_of(int rank) {
    return gpu_rank_environment(rank, 3, "/nonexistent/id");
}

LaunchResult launch_sh(const std::string& script, double grace_s = 1) {
    return launch_ranks({"/bin/sh", "-c", script}, 3, env_of, LaunchOptions{grace_s});
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST(Launcher, EveryRankRunsWithItsEnvironment) {
    const fs::path dir = fs::temp_directory_path() / ("retnet_launcher_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const LaunchResult r = launch_sh("echo \"$RETNET_RANK $RETNET_WORLD_SIZE $RETNET_NCCL_ID_FILE\" > " + dir.string() +
                                     "/rank$RETNET_RANK");
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.message, "");
    for (int rank = 0; rank < 3; ++rank) {
        std::ifstream in(dir / ("rank" + std::to_string(rank)));
        std::string line;
        std::getline(in, line);
        EXPECT_EQ(line, std::to_string(rank) + " 3 /nonexistent/id");
    }
    fs::remove_all(dir);
}

TEST(Launcher, AFailingRankStopsTheOthersAndIsNamed) {
    const auto start = std::chrono::steady_clock::now();
    const LaunchResult r = launch_sh("if [ \"$RETNET_RANK\" = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 60");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.message, "rank 1 exited with status 3; the other ranks were stopped");
    EXPECT_LT(seconds_since(start), 10.0);
}

TEST(Launcher, RanksThatIgnoreSigtermAreKilledAfterTheGracePeriod) {
    const auto start = std::chrono::steady_clock::now();
    const LaunchResult r =
        launch_sh("if [ \"$RETNET_RANK\" = 2 ]; then sleep 0.2; kill -9 $$; fi; trap '' TERM; exec sleep 60", 0.5);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.message, "rank 2 was killed by signal 9 (SIGKILL); the other ranks were stopped");
    EXPECT_LT(seconds_since(start), 10.0);
}

// How many ranks share this machine (its memory): all of them under --gpus, mpirun's local size
// under mpirun, one alone; none, or more on this machine than in the job, is refused in one line.
TEST(Launcher, RanksKnowHowManyShareTheirMachine) {
    EXPECT_EQ(rank_environment().local_size, 1);
    setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
    setenv("OMPI_COMM_WORLD_RANK", "5", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
    EXPECT_EQ(rank_environment().local_size, 4);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "9", 1);
    try {
        rank_environment();
        ADD_FAILURE() << "9 ranks on one machine of a job of 8 were accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "9 ranks on this host of 8 ranks in all is impossible (check the launcher's "
                                         "environment)");
    }
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "0", 1);
    EXPECT_THROW(rank_environment(), Error);
    // The launcher's own variables are named when the world is empty or this rank has no number.
    const auto message = [] {
        try {
            rank_environment();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    setenv("OMPI_COMM_WORLD_SIZE", "0", 1);
    EXPECT_EQ(message(), "OMPI_COMM_WORLD_SIZE=0: a world of no ranks (check the launcher's environment)");
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    EXPECT_EQ(message(), "OMPI_COMM_WORLD_SIZE is set without OMPI_COMM_WORLD_RANK (check the launcher's environment)");
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"})
        unsetenv(name);
    for (const auto& [name, value] : gpu_rank_environment(2, 3, "/nonexistent/id")) setenv(name.c_str(), value.c_str(), 1);
    EXPECT_EQ(rank_environment().local_size, 3);
    for (const auto& [name, value] : gpu_rank_environment(2, 3, "/nonexistent/id")) unsetenv(name.c_str());
}

TEST(Launcher, RanksInterruptedTogetherEndWithStatus130) {
    EXPECT_EQ(launch_sh("exit 130").exit_code, 130);
    EXPECT_EQ(launch_sh("exit 0").exit_code, 0);
}

TEST(Launcher, RetnetTrainRefusesGpusItCannotUse) {
    test::ScratchFiles files;
    // No CUDA device here (or a CPU device asked for): one line, nothing started, nothing written.
    const test::Run cpu = test::run({RETNET_CLI_PATH, "train", "--data", files.path("x").string(), "--config",
                                     files.path("x").string(), "--out", files.path("run").string(), "--gpus", "2"});
    EXPECT_EQ(cpu.exit_code, 1);
    EXPECT_EQ(cpu.err, "retnet train: error: --gpus trains on CUDA devices: add --device cuda, cuda-tf32 or cuda-bf16\n");
    const test::Run odd = test::run({RETNET_CLI_PATH, "train", "--data", files.path("x").string(), "--config",
                                     files.path("x").string(), "--out", files.path("run").string(), "--gpus", "2",
                                     "--device", "cuda", "--batch", "5"});
    EXPECT_EQ(odd.exit_code, 1);
    EXPECT_EQ(odd.err, "retnet train: error: --batch 5 cannot be split over 2 ranks: the global batch must be a "
                       "multiple of the number of ranks\n");
    EXPECT_FALSE(fs::exists(files.path("run")));
}
