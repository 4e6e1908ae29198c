// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A backend decorator for watching a generation from outside: every forward call is passed
// through to the real backend, asks it for the state norms as well, and reports the position
// it started at, the logits and the norms to a callback. The generator does not know it is
// watched, so the app's state view fills in while the engine prefills and decodes.
#include <functional>

#include "retnet/forward.h"

namespace retnet {

class TapBackend : public Backend {
public:
    // `logits` (T, V); `state_norms` (T, L, H) ‖S_t‖_F after each of the T tokens.
    using Observer = std::function<void(int64_t first_position, const Tensor& logits,
                                        const Tensor& state_norms)>;
    TapBackend(Backend& inner, Observer observer);

    std::string name() const override { return inner_.name(); }
    const Model& model() const override { return inner_.model(); }
    Tensor forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                   Introspection* introspection) override;
    void reset() override;
    RecurrentState snapshot() const override { return inner_.snapshot(); }
    void restore(const RecurrentState& state) override;

private:
    Backend& inner_;
    Observer observer_;
    int64_t position_ = 0;  // tokens the inner backend's state has consumed
};

}  // namespace retnet
