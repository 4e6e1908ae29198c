// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The Transformer twin's KV caches on the device (attention.h's layout): per state slot and layer
// one K and one V buffer of (capacity, H, D) in the cache dtype. Capacity grows ahead of the
// position in blocks, keeping what the cache holds; a decoding graph keeps the addresses until a
// buffer moves (reserve() says when).
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "attention.h"
#include "device_buffer.h"

namespace retnet::cuda {

class KvCacheStore {
public:
    KvCacheStore(int layers, int width, KvDtype dtype) : layers_(layers), width_(width), dtype_(dtype) {}

    KvDtype dtype() const { return dtype_; }
    void resize_slots(int slots);  // keeps the first slots; new ones empty
    void clear(int slot);          // empties the slot and frees its memory
    // Every layer of `slot` holds at least `tokens` rows afterwards; true when a buffer moved.
    bool reserve(int slot, int64_t tokens, cudaStream_t stream);
    int64_t capacity(int slot) const { return slots_[static_cast<size_t>(slot)].capacity; }
    void* keys(int slot, int layer) { return layer_of(slot, layer).k.get(); }
    void* values(int slot, int layer) { return layer_of(slot, layer).v.get(); }
    // The first `tokens` rows of a layer as float32 (K, V each (tokens, H·D)), and back.
    void read(int slot, int layer, int64_t tokens, std::vector<float>& K, std::vector<float>& V,
              cudaStream_t stream) const;
    void write(int slot, int layer, const std::vector<float>& K, const std::vector<float>& V, cudaStream_t stream);
    // Slot `to` holds the first `tokens` rows of slot `from` (on the device).
    void copy(int from, int to, int64_t tokens, cudaStream_t stream);

private:
    struct Layer {
        DeviceBuffer<uint8_t> k, v;  // (capacity, H, D) in the cache dtype
    };
    struct Slot {
        int64_t capacity = 0;
        std::vector<Layer> layers;
    };
    Layer& layer_of(int slot, int layer) { return slots_[static_cast<size_t>(slot)].layers[static_cast<size_t>(layer)]; }
    size_t row_bytes() const { return static_cast<size_t>(width_) * kv_dtype_bytes(dtype_); }

    int layers_, width_;
    KvDtype dtype_;
    std::vector<Slot> slots_;
};

}  // namespace retnet::cuda
