// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// GPU ranks over NCCL for `retnet train --gpus N`, one process per GPU of this host. No CUDA or
// NCCL types here, so the CLI includes it without their headers.
#include <memory>
#include <string>

#include "retnet/communicator.h"

namespace retnet::cuda {

// Whether this build has NCCL (found beside the CUDA toolkit at configure time).
bool nccl_available();

// Rank `rank` of `size`, on GPU `device`. Rank 0 makes NCCL's unique id and writes it to `id_file`
// (atomically: a temporary file renamed); the other ranks wait for the file, at most `timeout_s`.
// Host collectives travel through the GPU; a CUDA trainer given these ranks sums its gradient
// buckets over them directly. Throws retnet::Error (one line) in a build without NCCL, on a
// timeout, or when NCCL fails.
std::unique_ptr<train::Communicator> nccl_ranks_from_file(int rank, int size, int device, const std::string& id_file,
                                                          double timeout_s = 120);

}  // namespace retnet::cuda
