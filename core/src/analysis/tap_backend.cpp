// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/analysis_tap.h"

namespace retnet {

TapBackend::TapBackend(Backend& inner, Observer observer) : inner_(inner), observer_(std::move(observer)) {}

Tensor TapBackend::forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                           Introspection* introspection) {
    Introspection local;
    Introspection* probe = introspection ? introspection : &local;
    probe->want_state_norms = true;
    Tensor logits = inner_.forward(tokens, options, probe);
    const int64_t first = position_;
    position_ += int64_t(tokens.size());
    if (observer_) observer_(first, logits, probe->state_norms);
    return logits;
}

void TapBackend::reset() {
    inner_.reset();
    position_ = 0;
}

void TapBackend::restore(const RecurrentState& state) {
    inner_.restore(state);
    position_ = state.position;
}

}  // namespace retnet
