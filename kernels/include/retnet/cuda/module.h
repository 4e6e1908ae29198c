// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The CUDA backend as a module (libretnet-cuda.so) that the CLI and the app load with dlopen the
// first time a CUDA device is asked for. A run on the CPU then never loads cuBLAS (whose start-up
// alone takes ~220 MB of memory and ~60 ms in every process), and a binary built with CUDA still
// runs on the CPU where the CUDA libraries are missing, with a notice saying why. The module takes
// the engine (retnet_core) from the program that loads it, so there is one registry, one memory
// limit, one of everything. No CUDA types here.
#include <memory>
#include <string>

#include "retnet/cuda/retention_bench.h"

namespace retnet::train {
class Communicator;
}

namespace retnet::cuda {

// The devices the module registers: inference backends and training devices. Where it cannot be
// loaded, stand-ins of the same names say why.
inline constexpr const char* kCudaBackends[] = {"cuda", "cuda-bf16"};
inline constexpr const char* kCudaTrainDevices[] = {"cuda", "cuda-tf32", "cuda-bf16"};

// What the program calls in the module beyond the devices it registers. The module and the program
// come from one build (`build_id` must match: the module shares the program's classes).
struct ModuleApi {
    const char* build_id;
    void (*register_devices)();  // kCudaBackends and kCudaTrainDevices
    int (*device_count)();
    bool (*device_available)(std::string* why);  // as cuda_device_available
    bool (*nccl_available)();
    void (*require_training_device)();
    RetentionKernelTiming (*time_retention_kernels)(const RetentionKernelShape&, TrainPrecision, int repeats);
    std::unique_ptr<train::Communicator> (*nccl_ranks_from_file)(int rank, int size, int device,
                                                                 const std::string& id_file, double timeout_s);
};

// The loaded module, or null when it cannot be loaded; `why` then holds the reason in one line
// ("libcublas.so.13: cannot open shared object file …"). Loads once; thread-safe. Where it looks:
// $RETNET_CUDA_MODULE when set, else beside the program, else the install's library directory;
// in the last two cases only where the NVIDIA driver library (libcuda.so.1) loads and reports a
// device, so that a machine without a GPU never maps the module and cuBLAS.
const ModuleApi* cuda_module(std::string* why = nullptr);
// The module, or retnet::Error("CUDA unavailable (<why>)").
const ModuleApi& cuda_module_or_throw();

// Makes the CUDA devices appear on first use (retnet::set_device_loader): the module's when it
// loads, else stand-ins for the same device names whose use says "CUDA unavailable (<why>)", so
// that --device cuda falls back to the CPU with that notice and training names the reason.
void install_cuda_module_loader();

}  // namespace retnet::cuda

// The module's one exported entry point.
extern "C" const retnet::cuda::ModuleApi* retnet_cuda_module_api();
