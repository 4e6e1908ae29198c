// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/analysis_tap.h"

#include "retnet/error.h"

namespace retnet {

TapBackend::TapBackend(Backend& inner, Observer observer, std::function<bool()> want_norms)
    : inner_(inner), observer_(std::move(observer)), want_norms_(std::move(want_norms)) {}

std::vector<Tensor> TapBackend::forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                              Introspection* introspection) {
    if (batch.size() != 1) return inner_.forward_batch(batch, options, introspection);
    // The inner backend sees an All request: what only the caller's request asks is checked here,
    // before the slot advances.
    check_batch(inner_.model(), batch, inner_.slot_count(), options, introspection);
    Introspection local;
    Introspection* probe = introspection ? introspection : &local;
    // The Transformer twin has no retention state: its observer gets no norms (rank 0).
    probe->want_state_norms = !inner_.model().config.is_transformer() && (!want_norms_ || want_norms_());
    SequenceRequest all = batch[0];
    all.logits = LogitRows::All;  // the observer sees every row (the prompt's candidates)
    Tensor logits;
    try {
        logits = std::move(inner_.forward_batch({&all, 1}, options, probe).front());
    } catch (const Cancelled&) {
        position_ = 0;  // a cancelled forward leaves the slot empty (ForwardOptions::cancelled)
        throw;
    }
    const int64_t first = position_;
    position_ += int64_t(all.tokens.size());
    if (observer_) observer_(first, logits, probe->state_norms);
    return {logits_as_asked(batch[0], std::move(logits))};
}

void TapBackend::reset(int slot) {
    inner_.reset(slot);
    position_ = 0;
}

void TapBackend::restore(const RecurrentState& state, int slot) {
    inner_.restore(state, slot);
    position_ = state.position;
}

}  // namespace retnet
