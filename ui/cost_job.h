// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The Cost view's job: what to measure, sent to the engine thread, and the CostReport
// (retnet/cost.h, a value type) that comes back in a queued signal.
#include <QMetaType>

#include <vector>

#include "retnet/cost.h"

namespace retnet::ui {

struct CostRequest {
    std::vector<int> lengths;  // context tokens per sequence
    std::vector<int> batches;  // sequences decoded together
    int decodeSteps = 16;      // timed steps per point
};

}  // namespace retnet::ui

Q_DECLARE_METATYPE(retnet::CostReport)
