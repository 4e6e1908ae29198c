// SPDX-License-Identifier: GPL-3.0-or-later
// A CUDA build without NCCL: GPU ranks are refused in one line.
#include "gradient_sync.h"
#include "retnet/cuda/nccl_ranks.h"
#include "retnet/error.h"

namespace retnet::cuda {

namespace {
[[noreturn]] void refuse() {
    throw Error("this retnet was built without NCCL, so it cannot train on several GPUs "
                "(NCCL's nccl.h and libnccl come with the CUDA toolkit; rebuild where CMake finds them)");
}
}  // namespace

bool nccl_available() { return false; }

std::unique_ptr<train::Communicator> nccl_ranks_from_file(int, int, int, const std::string&, double) { refuse(); }

std::unique_ptr<GradientSync> nccl_over(train::Communicator&, int) { refuse(); }

}  // namespace retnet::cuda
