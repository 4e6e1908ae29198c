// SPDX-License-Identifier: GPL-3.0-or-later
#include "train_ranks.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "cli_common.h"
#include "retnet/dist/launcher.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/run_directory.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace retnet::cli {

namespace fs = std::filesystem;
using Launcher = dist::RankEnvironment::Launcher;

void TrainRanks::fail(const std::string& message) const {
    const std::string line =
        message.rfind("rank ", 0) == 0 ? message : "rank " + std::to_string(comm->rank()) + ": " + message;
    std::fflush(stdout);
    std::fprintf(stderr, "retnet train: error: %s\n", Error(line).what());
    std::fflush(stderr);
    if (mpi) mpi->abort(1);
    std::_Exit(1);  // no destructors: a communicator's teardown could wait for the ranks still running
}

TrainRanks join_train_ranks(const dist::RankEnvironment& env) {
    TrainRanks ranks;
    ranks.env = env;
    if (env.launcher == Launcher::Mpirun && env.size > 1) {
        std::unique_ptr<dist::MpiRanks> mpi = dist::join_mpi();
        ranks.mpi = mpi.get();
        ranks.comm = std::move(mpi);
    } else if (env.launcher == Launcher::RetnetGpus && env.size > 1) {
#ifdef RETNET_HAVE_CUDA
        ranks.comm = cuda::cuda_module_or_throw().nccl_ranks_from_file(env.rank, env.size, env.local_rank,
                                                                      env.nccl_id_file, 120);
#else
        throw Error("this retnet was built without CUDA, so it cannot be a GPU rank");
#endif
    } else {
        ranks.comm = std::make_unique<train::SingleProcess>();
    }
    return ranks;
}

void resolve_out_dir(train::TrainOptions& o, bool announce) {
    const std::string given = o.out_dir;
    // One of the run's own inputs given as --out (the text, say): named as such, not only as "a
    // regular file".
    for (const auto& [option, path] : o.named_inputs()) {
        std::error_code ec;
        if (fs::equivalent(given, path, ec))
            throw Error("--out " + given + " is the " + option + " file; give the run a directory of its own");
    }
    o.out_dir = train::resolve_run_directory(given);
    if (announce && o.out_dir != given)
        std::fprintf(stderr,
                     "retnet train: --out %s is a symbolic link: the run's lock, run.json and checkpoints are in %s\n",
                     shown(given).c_str(), shown(o.out_dir).c_str());
}

bool already_complete(const train::CheckpointInfo& info, const train::TrainOptions& o) {
    const int64_t total = info.schedule_fixed ? info.total_steps : o.steps;
    if (info.step < total || info.validation_pending) return false;  // steps to train, or a validation it owes
    if (info.step > total) {
        std::printf("the run in %s is already at step %lld, past --steps %lld; nothing to do (give --steps above %lld "
                    "to train further)\n",
                    shown(o.out_dir).c_str(), static_cast<long long>(info.step), static_cast<long long>(total),
                    static_cast<long long>(info.step));
        return true;
    }
    std::printf("the run in %s is already complete at step %lld/%lld; nothing to do (raise --steps to train further)\n",
                shown(o.out_dir).c_str(), static_cast<long long>(info.step), static_cast<long long>(total));
    return true;
}

namespace {

std::string own_executable() {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) throw Error("cannot find the retnet executable to start the ranks (/proc/self/exe: " + ec.message() + ")");
    return self.string();
}

}  // namespace

int launch_gpu_ranks(train::TrainOptions o, int gpus, bool overwrite, const std::vector<std::string>& args) {
    if (!is_gpu_device(o.device))
        throw Error("--gpus trains on CUDA devices: add --device cuda, cuda-tf32 or cuda-bf16");
    train::batch_shard(o.batch, 0, gpus);  // one line when the global batch does not split
#ifdef RETNET_HAVE_CUDA
    const cuda::ModuleApi& cuda_api = cuda::cuda_module_or_throw();
    if (!cuda_api.nccl_available())
        throw Error("this retnet was built without NCCL, so it cannot train on several GPUs (NCCL comes with the "
                    "CUDA toolkit; rebuild where CMake finds nccl.h and libnccl)");
    if (std::string why; !cuda_api.device_available(&why))
        throw Error("--gpus " + std::to_string(gpus) + ": CUDA unavailable (" + why + ")");
    if (const int seen = cuda_api.device_count(); seen < gpus)
        throw Error("--gpus " + std::to_string(gpus) + ": this host shows " + std::to_string(seen) + " CUDA device(s)");
#else
    throw Error("--gpus needs a build with CUDA and NCCL");
#endif
    for (const auto& input : o.named_inputs()) require_regular_file(input.second);
    // The launcher owns the run directory for the whole job; its ranks never take the lock (rank 0
    // resolves --out again, silently, to write there).
    resolve_out_dir(o, true);
    const train::RunDirectoryLock lock(o.out_dir);
    std::string notice;
    const std::optional<train::CheckpointInfo> resumed = train::prepare_run_directory(o, overwrite, &notice);
    if (!notice.empty()) std::fprintf(stderr, "retnet train: %s\n", shown(notice).c_str());
    if (resumed && already_complete(*resumed, o)) return 0;
    const std::string id_file = (fs::path(o.out_dir) / (".nccl-id-" + std::to_string(::getpid()))).string();
    std::error_code ec;
    fs::remove(id_file, ec);
    std::vector<std::string> argv{own_executable(), "train"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::fflush(stdout);
    const dist::LaunchResult result = dist::launch_ranks(
        argv, gpus, [&](int rank) { return dist::gpu_rank_environment(rank, gpus, id_file); });
    fs::remove(id_file, ec);
    if (!result.message.empty()) std::fprintf(stderr, "retnet train: %s\n", result.message.c_str());
    return result.exit_code;
}

}  // namespace retnet::cli
