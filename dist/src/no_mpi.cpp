// SPDX-License-Identifier: GPL-3.0-or-later
// A build without MPI: runs under mpirun are refused in one line.
#include "retnet/dist/ranks.h"
#include "retnet/error.h"

namespace retnet::dist {

bool mpi_available() { return false; }

std::unique_ptr<MpiRanks> join_mpi() {
    throw Error("this retnet was built without MPI, so it cannot train as one of several mpirun ranks "
                "(install libopenmpi-dev and rebuild)");
}

}  // namespace retnet::dist
