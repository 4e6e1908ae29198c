// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Kernel-level timing of the retention alone (`retnet bench --mode kernels`): the fla retention of
// B sequences of T tokens as the CUDA trainer runs it — q, k, v head-major (bf16 under cuda-bf16), the
// fused chunkwise passes (cuBLAS with exact fp32 products) — forward alone and forward + backward,
// without the projections around it. No CUDA types here, so the CLI includes it without the toolkit's headers.
#include "retnet/cuda/cuda_trainer.h"

namespace retnet::cuda {

struct RetentionKernelShape {
    int batch = 1, seq_len = 1, heads = 1, head_dim_k = 1, head_dim_v = 1;
    int chunk = 64;  // 0: the parallel form (one T×T block per head)
};

struct RetentionKernelTiming {
    double forward_ms = 0;           // median over the repeats, CUDA events around the call
    double forward_backward_ms = 0;  // the trainer's path: forward, then backward from d_o
};

// Two warm-up calls, then the median of `repeats` timed calls of each, on the current device.
// Precision as the trainer's devices: the chunk products in fp32, TF32 or bf16 tensor cores.
// Throws retnet::Error for a shape that is not positive and on any CUDA error (out of memory).
RetentionKernelTiming time_retention_kernels(const RetentionKernelShape& shape, TrainPrecision precision, int repeats);

}  // namespace retnet::cuda
