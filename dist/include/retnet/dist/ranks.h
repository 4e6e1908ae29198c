// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// How this process was started, read from its environment before anything is initialized:
// - by Open MPI's mpirun (OMPI_COMM_WORLD_SIZE/RANK/LOCAL_RANK): the ranks talk through MPI
//   (join_mpi), GPU ranks through NCCL bootstrapped over MPI — on one host or several;
// - by `retnet train --gpus N` (RETNET_RANK, RETNET_WORLD_SIZE, RETNET_NCCL_ID_FILE): one process
//   per GPU of this host, NCCL bootstrapped through a file in the run directory;
// - alone.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "retnet/communicator.h"

namespace retnet::dist {

struct RankEnvironment {
    enum class Launcher { None, Mpirun, RetnetGpus } launcher = Launcher::None;
    int rank = 0, size = 1, local_rank = 0;
    int local_size = 1;  // ranks on this host, which share its memory (all of them under --gpus)
    std::string nccl_id_file;  // Launcher::RetnetGpus
};

// Throws retnet::Error (one line) for values that are not ranks (RETNET_RANK=x, a rank ≥ size).
RankEnvironment rank_environment();

// The environment variables `retnet train --gpus N` gives rank `rank` (read by rank_environment).
std::vector<std::pair<std::string, std::string>> gpu_rank_environment(int rank, int size,
                                                                      const std::string& nccl_id_file);

// Whether this build has MPI (retnet_dist found Open MPI at configure time).
bool mpi_available();

// The ranks of MPI_COMM_WORLD (MPI_Init on the first call). Throws retnet::Error when this build
// has no MPI. The communicator finalizes MPI when it is destroyed.
class MpiRanks : public train::Communicator {
public:
    // Ends every rank of the job now (MPI_Abort): the way out of a failure on one rank, which the
    // others would otherwise wait for in their next collective.
    [[noreturn]] virtual void abort(int code) = 0;
};
std::unique_ptr<MpiRanks> join_mpi();

}  // namespace retnet::dist
