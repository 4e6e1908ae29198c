// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// RAII owners of device memory, streams, events and the cuBLAS handle. Move-only; destructors
// never throw (they report a failed free on stderr). All device work of a backend runs on its one
// stream and one cuBLAS handle, from one host thread.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "cuda_check.h"

namespace retnet::cuda {

template <typename T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t count) { resize(count); }
    ~DeviceBuffer() { release(); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept
        : ptr_(std::exchange(other.ptr_, nullptr)), count_(std::exchange(other.count_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
        if (this != &other) {
            release();
            ptr_ = std::exchange(other.ptr_, nullptr);
            count_ = std::exchange(other.count_, 0);
        }
        return *this;
    }

    // Discards the contents; a no-op when the size already matches.
    void resize(size_t count) {
        if (count == count_) return;
        release();
        if (count == 0) return;
        if (count > SIZE_MAX / sizeof(T)) throw_out_of_gpu_memory(SIZE_MAX, "a device buffer");
        const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T));
        if (status == cudaErrorMemoryAllocation) {
            ptr_ = nullptr;  // stays empty: the next resize() starts clean
            throw_out_of_gpu_memory(count * sizeof(T), "a device buffer of " + std::to_string(count) + " elements");
        }
        if (status != cudaSuccess) throw_cuda_error(status, "cudaMalloc", __FILE__, __LINE__);
        count_ = count;
    }
    // Grows (never shrinks) so that at least `count` elements fit.
    void reserve(size_t count) {
        if (count > count_) resize(count);
    }

    T* get() { return ptr_; }
    const T* get() const { return ptr_; }
    size_t size() const { return count_; }
    size_t bytes() const { return count_ * sizeof(T); }
    bool empty() const { return count_ == 0; }

    void upload(const T* host, size_t count, cudaStream_t stream) {
        reserve(count);
        if (count) RETNET_CUDA_CHECK(cudaMemcpyAsync(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
    }
    void upload(const std::vector<T>& host, cudaStream_t stream) { upload(host.data(), host.size(), stream); }
    void download(T* host, size_t count, cudaStream_t stream) const {
        if (count) RETNET_CUDA_CHECK(cudaMemcpyAsync(host, ptr_, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
    }
    void zero(cudaStream_t stream) {
        if (count_) RETNET_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, bytes(), stream));
    }

private:
    void release() noexcept {
        if (ptr_) RETNET_CUDA_CHECK_PRINT(cudaFree(ptr_));
        ptr_ = nullptr;
        count_ = 0;
    }
    T* ptr_ = nullptr;
    size_t count_ = 0;
};

class CudaStream {
public:
    CudaStream() { RETNET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
    ~CudaStream() {
        if (stream_) RETNET_CUDA_CHECK_PRINT(cudaStreamDestroy(stream_));
    }
    CudaStream(const CudaStream&) = delete;
    CudaStream& operator=(const CudaStream&) = delete;
    cudaStream_t get() const { return stream_; }
    void synchronize() const { RETNET_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

private:
    cudaStream_t stream_ = nullptr;
};

class CudaEvent {
public:
    CudaEvent() { RETNET_CUDA_CHECK(cudaEventCreate(&event_)); }
    ~CudaEvent() {
        if (event_) RETNET_CUDA_CHECK_PRINT(cudaEventDestroy(event_));
    }
    CudaEvent(const CudaEvent&) = delete;
    CudaEvent& operator=(const CudaEvent&) = delete;
    cudaEvent_t get() const { return event_; }
    void record(cudaStream_t stream) { RETNET_CUDA_CHECK(cudaEventRecord(event_, stream)); }
    // Milliseconds from `start` to this event (both recorded and this one completed).
    float elapsed_ms_since(const CudaEvent& start) const {
        RETNET_CUDA_CHECK(cudaEventSynchronize(event_));
        float ms = 0.0f;
        RETNET_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
        return ms;
    }

private:
    cudaEvent_t event_ = nullptr;
};

class CublasHandle {
public:
    CublasHandle() { RETNET_CUBLAS_CHECK(cublasCreate(&handle_)); }
    ~CublasHandle() {
        if (handle_) {
            const cublasStatus_t status = cublasDestroy(handle_);
            if (status != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "cublasDestroy failed: %s\n", cublas_status_name(status));
        }
    }
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    cublasHandle_t get() const { return handle_; }

private:
    cublasHandle_t handle_ = nullptr;
};

}  // namespace retnet::cuda
