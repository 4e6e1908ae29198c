// SPDX-License-Identifier: GPL-3.0-or-later
// A stand-in for libretnet-cuda.so built by another build of retnet, for the loader's tests: it says
// so in its build id, and marks a file (RETNET_FAKE_MODULE_MARK) when it is loaded, so a test sees
// whether a command loaded the CUDA module at all. Built a second time with
// RETNET_FAKE_MODULE_DATA_SYMBOL: the entry point's name on data instead of a function.
#include <cstdio>
#include <cstdlib>

namespace {

__attribute__((constructor)) void mark_loaded() {
    if (const char* path = std::getenv("RETNET_FAKE_MODULE_MARK"))
        if (std::FILE* f = std::fopen(path, "w")) std::fclose(f);
}

}  // namespace

#ifdef RETNET_FAKE_MODULE_DATA_SYMBOL

// Calling it would jump into these bytes.
extern "C" __attribute__((visibility("default"))) const unsigned char retnet_cuda_module_api[16] = {0xff, 0xff};

#else

#include "retnet/cuda/module.h"

namespace {
const retnet::cuda::ModuleApi kApi{"another-build", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}

extern "C" __attribute__((visibility("default"))) const retnet::cuda::ModuleApi* retnet_cuda_module_api() {
    return &kApi;
}

#endif
