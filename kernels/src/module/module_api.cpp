// SPDX-License-Identifier: GPL-3.0-or-later
// The entry point of libretnet-cuda.so (retnet/cuda/module.h).
#include "retnet/cuda/module.h"

#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/cuda_trainer.h"
#include "retnet/cuda/nccl_ranks.h"

namespace retnet::cuda {
namespace {

void register_devices() {
    register_cuda_backend();
    register_cuda_trainer();
}

constexpr ModuleApi kApi{
    RETNET_BUILD_ID,
    &register_devices,
    &cuda_device_count,
    &cuda_device_available,
    &nccl_available,
    &require_cuda_training_device,
    &time_retention_kernels,
    &nccl_ranks_from_file,
};

}  // namespace
}  // namespace retnet::cuda

extern "C" __attribute__((visibility("default"))) const retnet::cuda::ModuleApi* retnet_cuda_module_api() {
    return &retnet::cuda::kApi;
}
