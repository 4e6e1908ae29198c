// SPDX-License-Identifier: GPL-3.0-or-later
// A stand-in for libretnet-cuda.so built by another build of retnet, for the loader's tests: it says
// so in its build id, and marks a file (RETNET_FAKE_MODULE_MARK) when it is loaded, so a test sees
// whether a command loaded the CUDA module at all.
#include <cstdio>
#include <cstdlib>

#include "retnet/cuda/module.h"

namespace {

__attribute__((constructor)) void mark_loaded() {
    if (const char* path = std::getenv("RETNET_FAKE_MODULE_MARK"))
        if (std::FILE* f = std::fopen(path, "w")) std::fclose(f);
}

const retnet::cuda::ModuleApi kApi{"another-build", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

extern "C" __attribute__((visibility("default"))) const retnet::cuda::ModuleApi* retnet_cuda_module_api() {
    return &kApi;
}
