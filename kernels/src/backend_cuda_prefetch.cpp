// SPDX-License-Identifier: GPL-3.0-or-later
// Which weights a decoding step of one sequence requests into L2 for the kernel after the one that
// requests them (l2_prefetch.h): the decode retention the output projection's, the output
// projection the FFN's act and lin. Measured on the H200 (1.3B shape, device ms a step, two rounds):
// batch 1 1.138–1.142 against 1.160–1.161 without; the down projection's weights requested by the
// GLU and the next layer's q and k by the down projection as well made it 1.166–1.170 (those
// kernels stream at full speed already, the requests compete with their own loads); with 16 and 64
// sequences the retention streams their states and the requests cost 4.5 % and 1.3 %, so none.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend_cuda_class.h"

namespace retnet::cuda_backend {

void CudaBackend::init_l2_prefetch() {
    int l2 = 0;
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, options_.device));
    l2_prefetch_cap_ = static_cast<uint64_t>(l2) / 2;  // room for the kernel's own reads and the state
    const char* setting = std::getenv("RETNET_L2_PREFETCH");  // "0": none (to measure what it gains)
    // measured with bf16 weights only (fp32 ones are twice the bytes: half the FFN's would fit)
    if ((setting && std::strcmp(setting, "0") == 0) || !options_.bf16_weights) l2_prefetch_cap_ = 0;
    const char* fused_norm = std::getenv("RETNET_SKINNY_NORM");  // "0": the norm as its own launch (to measure it)
    skinny_norm_ = !(fused_norm && std::strcmp(fused_norm, "0") == 0);
}

// Weights first and second of layer `layer`, up to half the L2 in all.
cuda::L2Prefetch CudaBackend::prefetch_of(int layer, Weight first, Weight second) const {
    cuda::L2Prefetch next;
    uint64_t room = l2_prefetch_cap_;
    const Weight wanted[cuda::L2Prefetch::kRegions] = {first, second};
    for (int r = 0; r < cuda::L2Prefetch::kRegions && (r == 0 || second != first); ++r) {
        const DeviceWeight& W = weight(layer, wanted[r]);
        const void* at = W.bf16 ? static_cast<const void*>(W.bf16) : static_cast<const void*>(W.f32.get());
        const uint64_t element = W.bf16 ? 2 : 4;
        const uint64_t bytes = std::min(room, static_cast<uint64_t>(W.out) * static_cast<uint64_t>(W.in) * element) / 16 * 16;
        if (!at || reinterpret_cast<uintptr_t>(at) % 16 != 0 || bytes == 0) break;
        next.at[r] = at, next.bytes[r] = bytes;
        room -= bytes;
    }
    return next;
}

// For the decode retention of layer `layer` over N sequences: the output projection's weights.
cuda::L2Prefetch CudaBackend::weights_after_retention(int layer, int N) const {
    if (N != 1) return {};
    return prefetch_of(layer, Weight::O, Weight::O);
}

// For the output projection of layer `layer` over M rows: the FFN's act and lin weights.
cuda::L2Prefetch CudaBackend::weights_after_output_projection(int layer, int M) const {
    if (M != 1) return {};
    return prefetch_of(layer, Weight::FfnAct, Weight::FfnLin);
}

}  // namespace retnet::cuda_backend
