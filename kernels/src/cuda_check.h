// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// One checked-call macro per library. A failing call throws retnet::Error with the expression,
// the error's name and text, and file:line; library code never exits. The _PRINT variants are for
// destructors, which must not throw: they print the same line to stderr and carry on.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "retnet/error.h"

namespace retnet::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file,
                                     int line);
void print_cuda_error(cudaError_t status, const char* expr, const char* file, int line);
// A failed device allocation of `bytes` for `what`: clears the runtime's last-error slot (so the
// next kernel launch check does not report this failure again; the backend stays usable) and
// throws "out of GPU memory: <what> needs X MiB (Y MiB of Z MiB free)".
[[noreturn]] void throw_out_of_gpu_memory(size_t bytes, const std::string& what);
// "1234 MiB" (rounded up), for messages.
std::string mebibytes(size_t bytes);
const char* cublas_status_name(cublasStatus_t status);

}  // namespace retnet::cuda

#define RETNET_CUDA_CHECK(expr)                                                        \
    do {                                                                               \
        const cudaError_t retnet_status_ = (expr);                                     \
        if (retnet_status_ != cudaSuccess)                                             \
            ::retnet::cuda::throw_cuda_error(retnet_status_, #expr, __FILE__, __LINE__); \
    } while (0)

#define RETNET_CUDA_CHECK_PRINT(expr)                                                  \
    do {                                                                               \
        const cudaError_t retnet_status_ = (expr);                                     \
        if (retnet_status_ != cudaSuccess)                                             \
            ::retnet::cuda::print_cuda_error(retnet_status_, #expr, __FILE__, __LINE__); \
    } while (0)

#define RETNET_CUBLAS_CHECK(expr)                                                        \
    do {                                                                                 \
        const cublasStatus_t retnet_status_ = (expr);                                    \
        if (retnet_status_ != CUBLAS_STATUS_SUCCESS)                                     \
            ::retnet::cuda::throw_cublas_error(retnet_status_, #expr, __FILE__, __LINE__); \
    } while (0)

// After a kernel launch: a bad launch configuration shows up here, not at the next sync.
#define RETNET_CUDA_CHECK_LAUNCH() RETNET_CUDA_CHECK(cudaGetLastError())
