// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/dist/ranks.h"

#include <charconv>
#include <cstdlib>

#include "retnet/error.h"

namespace retnet::dist {

namespace {

// The integer in environment variable `name`, or -1 when it is not set.
int env_int(const char* name) {
    const char* value = std::getenv(name);
    if (!value) return -1;
    const std::string_view text(value);
    int n = -1;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end != text.data() + text.size() || n < 0)
        throw Error(std::string(name) + "='" + value + "' is not a rank or a count of ranks");
    return n;
}

}  // namespace

RankEnvironment rank_environment() {
    RankEnvironment e;
    const char* size_name = nullptr;  // the launcher's variables, to name in an error
    const char* rank_name = nullptr;
    if (const int size = env_int("RETNET_WORLD_SIZE"); size >= 0) {
        e.launcher = RankEnvironment::Launcher::RetnetGpus;
        size_name = "RETNET_WORLD_SIZE", rank_name = "RETNET_RANK";
        e.size = size;
        e.rank = e.local_rank = env_int(rank_name);
        e.local_size = size;
        const char* file = std::getenv("RETNET_NCCL_ID_FILE");
        e.nccl_id_file = file ? file : "";
        if (e.nccl_id_file.empty()) throw Error("RETNET_WORLD_SIZE is set without RETNET_NCCL_ID_FILE");
    } else if (const int mpi_size = env_int("OMPI_COMM_WORLD_SIZE"); mpi_size >= 0) {
        e.launcher = RankEnvironment::Launcher::Mpirun;
        size_name = "OMPI_COMM_WORLD_SIZE", rank_name = "OMPI_COMM_WORLD_RANK";
        e.size = mpi_size;
        e.rank = env_int(rank_name);
        e.local_rank = std::max(0, env_int("OMPI_COMM_WORLD_LOCAL_RANK"));
        const int local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");  // -1: not set (an older mpirun)
        e.local_size = local_size < 0 ? 1 : local_size;
    }
    const std::string check = " (check the launcher's environment)";
    if (size_name && e.size < 1) throw Error(std::string(size_name) + "=0: a world of no ranks" + check);
    if (size_name && e.rank < 0) throw Error(std::string(size_name) + " is set without " + rank_name + check);
    if (e.local_size < 1 || e.local_size > e.size)
        throw Error(std::to_string(e.local_size) + " ranks on this host of " + std::to_string(e.size) +
                    " ranks in all is impossible" + check);
    if (e.size < 1 || e.rank < 0 || e.rank >= e.size)
        throw Error("rank " + std::to_string(e.rank) + " of " + std::to_string(e.size) + " ranks is impossible" + check);
    return e;
}

std::vector<std::pair<std::string, std::string>> gpu_rank_environment(int rank, int size,
                                                                      const std::string& nccl_id_file) {
    return {{"RETNET_RANK", std::to_string(rank)},
            {"RETNET_WORLD_SIZE", std::to_string(size)},
            {"RETNET_NCCL_ID_FILE", nccl_id_file}};
}

}  // namespace retnet::dist
