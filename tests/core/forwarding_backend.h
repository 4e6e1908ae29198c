// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A test backend that passes every call of the Backend interface's required part to another
// backend; a test derives from it and overrides what it watches or changes. The interface's
// optional answers (on_device, weights_precision, …) stay Backend's defaults unless overridden.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "retnet/forward.h"

namespace retnet::test {

class ForwardingBackend : public Backend {
public:
    explicit ForwardingBackend(Backend& inner) : inner_(inner) {}
    // Owns its inner backend.
    explicit ForwardingBackend(std::unique_ptr<Backend> owned) : owned_(std::move(owned)), inner_(*owned_) {}

    std::string name() const override { return inner_.name(); }
    const Model& model() const override { return inner_.model(); }
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection) override {
        return inner_.forward_batch(batch, options, introspection);
    }
    int slot_count() const override { return inner_.slot_count(); }
    void set_slot_count(int slots) override { inner_.set_slot_count(slots); }
    void reset(int slot) override { inner_.reset(slot); }
    RecurrentState snapshot(int slot) const override { return inner_.snapshot(slot); }
    void restore(const RecurrentState& state, int slot) override { inner_.restore(state, slot); }

protected:
    Backend& inner() const { return inner_; }

private:
    std::unique_ptr<Backend> owned_;
    Backend& inner_;
};

}  // namespace retnet::test
