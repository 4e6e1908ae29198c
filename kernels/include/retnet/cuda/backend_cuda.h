// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The CUDA backend: the whole model on one GPU in all three forms (parallel, chunkwise,
// recurrent), behind the same retnet::Backend interface as the CPU backends. This header holds no
// CUDA types, so the CLI and the app include it without the CUDA toolkit's headers. Code that
// uses it is compiled with RETNET_HAVE_CUDA defined (an INTERFACE definition of retnet_cuda).
#include <cstdint>
#include <memory>
#include <string>

#include "retnet/forward.h"

namespace retnet {

struct CudaOptions {
    int device = 0;             // CUDA device ordinal
    bool bf16_weights = false;  // projections in bf16 (fp32 accumulation); fp32 otherwise
    bool allow_tf32 = false;    // fp32 GEMMs may use TF32 tensor cores; always on with bf16_weights
    bool cuda_graphs = true;    // decoding steps replay a captured CUDA graph (same results)
};

// True when a CUDA device can be used; otherwise `why` (if given) gets a one-line reason such as
// "no CUDA device found" or "CUDA driver unavailable: ...".
bool cuda_device_available(std::string* why = nullptr);

// How many CUDA devices this process sees (0 when none, or without a usable driver).
int cuda_device_count();

// Bytes of the current CUDA device's memory in use (by every process), for benchmarks.
int64_t cuda_device_memory_in_use();

// Uploads the model's weights to the device. Throws retnet::Error when no device is usable or
// the model does not fit; the message says which.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model,
                                           CudaOptions options = {});

// Registers "cuda" (fp32) and "cuda-bf16" (bf16 weights) with retnet::register_backend.
// Idempotent; the CUDA module calls it when the CLI or the app first asks for a CUDA device
// (retnet/cuda/module.h), a program that links retnet_cuda itself at start-up.
void register_cuda_backend();

}  // namespace retnet
