// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A backend decorator for watching a generation from outside: every single-sequence forward call
// is passed through to the real backend, asks it for the state norms and every logits row as
// well, and reports the position it started at, the logits and the norms to a callback; the
// caller still gets only the logits rows it asked for. The generator does not know it is
// watched, so the app's state view fills in while the engine prefills and decodes.
#include <functional>

#include "retnet/forward.h"

namespace retnet {

class TapBackend : public Backend {
public:
    // `logits` (T, V); `state_norms` (T, L, H) ‖S_t‖_F after each of the T tokens, or empty
    // (rank 0) when `want_norms` said no for this call, and always for the Transformer twin.
    using Observer = std::function<void(int64_t first_position, const Tensor& logits,
                                        const Tensor& state_norms)>;
    // `want_norms`, when given, is asked before every call: the norms cost a pass over every
    // state, which nobody needs while nothing shows them.
    TapBackend(Backend& inner, Observer observer, std::function<bool()> want_norms = {});

    std::string name() const override { return inner_.name(); }
    const Model& model() const override { return inner_.model(); }
    // A batch of one is watched (the generator's sequence); larger batches pass through.
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection) override;
    int slot_count() const override { return inner_.slot_count(); }
    void set_slot_count(int count) override { inner_.set_slot_count(count); }
    int max_slot_count() const override { return inner_.max_slot_count(); }
    void reset(int slot = 0) override;
    RecurrentState snapshot(int slot = 0) const override { return inner_.snapshot(slot); }
    void restore(const RecurrentState& state, int slot = 0) override;
    int kv_cache_element_bytes() const override { return inner_.kv_cache_element_bytes(); }
    int64_t device_memory_in_use() const override { return inner_.device_memory_in_use(); }
    bool on_device() const override { return inner_.on_device(); }
    double last_forward_device_ms() const override { return inner_.last_forward_device_ms(); }
    std::string weights_precision() const override { return inner_.weights_precision(); }

private:
    Backend& inner_;
    Observer observer_;
    std::function<bool()> want_norms_;
    int64_t position_ = 0;  // tokens the inner backend's state has consumed
};

}  // namespace retnet
