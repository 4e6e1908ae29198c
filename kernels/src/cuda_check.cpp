// SPDX-License-Identifier: GPL-3.0-or-later
#include "cuda_check.h"

#include <cstdio>

namespace retnet::cuda {

namespace {
std::string where(const char* file, int line) {
    std::string path = file;
    const size_t slash = path.find_last_of('/');
    if (slash != std::string::npos) path = path.substr(slash + 1);
    return path + ":" + std::to_string(line);
}
}  // namespace

void throw_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
    throw Error(std::string("CUDA error ") + cudaGetErrorName(status) + " (" +
                cudaGetErrorString(status) + ") in " + expr + " at " + where(file, line));
}

std::string mebibytes(size_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

void throw_out_of_gpu_memory(size_t bytes, const std::string& what) {
    (void)cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    std::string memory;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
        memory = " (" + mebibytes(free_bytes) + " of " + mebibytes(total_bytes) + " free)";
    (void)cudaGetLastError();
    throw OutOfMemory("out of GPU memory: " + what + " needs " + mebibytes(bytes) + memory);
}

void print_cuda_error(cudaError_t status, const char* expr, const char* file, int line) {
    std::fprintf(stderr, "CUDA error %s (%s) in %s at %s\n", cudaGetErrorName(status),
                 cudaGetErrorString(status), expr, where(file, line).c_str());
}

const char* cublas_status_name(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

void throw_cublas_error(cublasStatus_t status, const char* expr, const char* file, int line) {
    if (status == CUBLAS_STATUS_ALLOC_FAILED)
        throw Error(std::string("out of GPU memory: cuBLAS could not allocate its workspace in ") + expr);
    throw Error(std::string("cuBLAS error ") + cublas_status_name(status) + " in " + expr + " at " +
                where(file, line));
}

}  // namespace retnet::cuda
