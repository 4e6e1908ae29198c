// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The ranks `retnet train` runs as (retnet/dist/ranks.h): alone, as one rank of an mpirun job, or
// as one of the processes `retnet train --gpus N` starts, one per GPU of this host.
#include <memory>
#include <string>
#include <vector>

#include "retnet/communicator.h"
#include "retnet/dist/ranks.h"
#include "retnet/run_directory.h"
#include "retnet/trainer.h"

namespace retnet::cli {

struct TrainRanks {
    dist::RankEnvironment env;
    std::unique_ptr<train::Communicator> comm;  // train::SingleProcess when alone
    dist::MpiRanks* mpi = nullptr;               // comm, under mpirun

    // A failure on this rank: prints its line (naming the rank) and ends the whole job now, since
    // the other ranks would otherwise wait for this one in their next collective. Under mpirun
    // that is MPI_Abort; a rank of --gpus N exits and its launcher stops the others.
    [[noreturn]] void fail(const std::string& message) const;
};

// Joins the job's other ranks: MPI under mpirun (refused in one line without MPI), NCCL for a rank
// of --gpus N, nothing when alone.
TrainRanks join_train_ranks(const dist::RankEnvironment& env);

// Makes o.out_dir the run directory it names (train::resolve_run_directory: a symbolic link is
// resolved, before the lock is taken; the filesystem root is refused); with `announce`, says so in
// one line on stderr. An --out that is the --data, --config or --tokenizer file is refused as such.
void resolve_out_dir(train::TrainOptions& o, bool announce);

// --resume of a run whose checkpoint is already at its last step, or past a lowered --steps: says
// so (instead of a "done" line with no loss) and returns true.
bool already_complete(const train::CheckpointInfo& info, const train::TrainOptions& o);

// `retnet train --gpus N` (N > 1) on this host: checks what every rank would refuse alike, takes
// the run directory (lock, resume checks), starts N copies of `retnet train` + args with their rank
// in the environment, and waits for them: a rank that fails stops the others and is named in one
// line. Returns the exit status.
int launch_gpu_ranks(train::TrainOptions o, int gpus, bool overwrite, const std::vector<std::string>& args);

}  // namespace retnet::cli
