// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// How a CUDA trainer sums its gradient over GPU ranks: each bucket (a part of the gradient that
// train_backward has finished) leaves on a stream of the ranks' own as soon as the compute stream
// has produced it, so the sums overlap the rest of the backward; the optimizer waits for all.
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "retnet/communicator.h"

namespace retnet::cuda {

class GradientSync {
public:
    virtual ~GradientSync() = default;
    // Sums `count` floats of device memory at `data` over the ranks, in place, after the work
    // queued on `after` so far.
    virtual void start(float* data, size_t count, cudaStream_t after) = 0;
    // Makes `stream` wait for every started sum.
    virtual void join(cudaStream_t stream) = 0;
    // Waits on the host for every started sum, at most the ranks' timeout (RETNET_NCCL_TIMEOUT
    // seconds, default 600): past it the NCCL communicator is aborted and retnet::Error names the
    // rank, instead of a hang behind a rank that died.
    virtual void wait_host() = 0;
};

// NCCL over the ranks of `bootstrap` (an mpirun job): rank 0 makes NCCL's unique id and sends it
// through `bootstrap`; this rank uses GPU `device`. Throws retnet::Error in a build without NCCL.
std::unique_ptr<GradientSync> nccl_over(train::Communicator& bootstrap, int device);

}  // namespace retnet::cuda
