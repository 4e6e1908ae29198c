// SPDX-License-Identifier: GPL-3.0-or-later
#include "kv_cache.h"

#include <cuda_bf16.h>

#include <algorithm>

#include "cuda_check.h"

namespace retnet::cuda {
namespace {

constexpr int64_t kBlockTokens = 256;

// A cache grows to hold `tokens` and one more block: a prompt's cache then takes the next 256
// decoded tokens without moving (a move copies the cache and re-captures the decoding graph), and
// never holds much more than it needs (a 1.5× policy would leave a third of a 100 GB batch idle).
int64_t grown_capacity(int64_t tokens) {
    return (tokens + 2 * kBlockTokens - 1) / kBlockTokens * kBlockTokens;
}

}  // namespace

void KvCacheStore::resize_slots(int slots) {
    const size_t old = slots_.size();
    slots_.resize(static_cast<size_t>(slots));
    for (size_t s = old; s < slots_.size(); ++s) slots_[s].layers.resize(static_cast<size_t>(layers_));
}

void KvCacheStore::clear(int slot) {
    Slot& s = slots_[static_cast<size_t>(slot)];
    s = Slot();
    s.layers.resize(static_cast<size_t>(layers_));
}

bool KvCacheStore::reserve(int slot, int64_t tokens, cudaStream_t stream) {
    Slot& s = slots_[static_cast<size_t>(slot)];
    if (tokens <= s.capacity) return false;
    const int64_t capacity = grown_capacity(tokens);
    const size_t bytes = static_cast<size_t>(capacity) * row_bytes(), kept = static_cast<size_t>(s.capacity) * row_bytes();
    for (Layer& layer : s.layers)
        for (DeviceBuffer<uint8_t>* buffer : {&layer.k, &layer.v}) {
            DeviceBuffer<uint8_t> bigger(bytes);
            if (kept > 0)
                RETNET_CUDA_CHECK(cudaMemcpyAsync(bigger.get(), buffer->get(), kept, cudaMemcpyDeviceToDevice, stream));
            RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old buffer is freed next
            *buffer = std::move(bigger);
        }
    s.capacity = capacity;
    return true;
}

void KvCacheStore::copy(int from, int to, int64_t tokens, cudaStream_t stream) {
    clear(to);
    reserve(to, tokens, stream);
    const size_t bytes = static_cast<size_t>(tokens) * row_bytes();
    for (int l = 0; l < layers_; ++l)
        if (bytes > 0) {
            RETNET_CUDA_CHECK(cudaMemcpyAsync(keys(to, l), keys(from, l), bytes, cudaMemcpyDeviceToDevice, stream));
            RETNET_CUDA_CHECK(cudaMemcpyAsync(values(to, l), values(from, l), bytes, cudaMemcpyDeviceToDevice, stream));
        }
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void KvCacheStore::read(int slot, int layer, int64_t tokens, std::vector<float>& K, std::vector<float>& V,
                        cudaStream_t stream) const {
    const Layer& l = slots_[static_cast<size_t>(slot)].layers[static_cast<size_t>(layer)];
    const size_t n = static_cast<size_t>(tokens) * static_cast<size_t>(width_);
    for (auto [buffer, out] : {std::pair{&l.k, &K}, std::pair{&l.v, &V}}) {
        out->resize(n);
        if (n == 0) continue;
        if (dtype_ == KvDtype::F32) {
            RETNET_CUDA_CHECK(cudaMemcpyAsync(out->data(), buffer->get(), n * sizeof(float), cudaMemcpyDeviceToHost, stream));
            RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
            continue;
        }
        std::vector<__nv_bfloat16> held(n);
        RETNET_CUDA_CHECK(cudaMemcpyAsync(held.data(), buffer->get(), n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost,
                                          stream));
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
        for (size_t i = 0; i < n; ++i) (*out)[i] = __bfloat162float(held[i]);  // exact
    }
}

void KvCacheStore::write(int slot, int layer, const std::vector<float>& K, const std::vector<float>& V,
                         cudaStream_t stream) {
    reserve(slot, static_cast<int64_t>(K.size() / static_cast<size_t>(width_)), stream);
    Layer& l = layer_of(slot, layer);
    for (auto [in, buffer] : {std::pair{&K, &l.k}, std::pair{&V, &l.v}}) {
        if (in->empty()) continue;
        if (dtype_ == KvDtype::F32) {
            RETNET_CUDA_CHECK(cudaMemcpyAsync(buffer->get(), in->data(), in->size() * sizeof(float), cudaMemcpyHostToDevice,
                                              stream));
            RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
            continue;
        }
        std::vector<__nv_bfloat16> narrowed(in->size());
        for (size_t i = 0; i < in->size(); ++i) narrowed[i] = __float2bfloat16_rn((*in)[i]);
        RETNET_CUDA_CHECK(cudaMemcpyAsync(buffer->get(), narrowed.data(), narrowed.size() * sizeof(__nv_bfloat16),
                                          cudaMemcpyHostToDevice, stream));
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
}

}  // namespace retnet::cuda
