// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The one path from a view to the engine. A view declares a request: the text to analyse and a
// job, a function that runs on the engine thread with an AnalysisContext and returns a value.
// The worker runs it (restoring the generation's state afterwards), and the controller hands the
// value to the view that asked, unless a newer request for the same view and channel has made it
// stale. Jobs and errors are named by a JobRef, never by a string.
#include <QMetaType>
#include <QString>
#include <QStringList>

#include <any>
#include <functional>
#include <vector>

#include "retnet/forward.h"
#include "retnet/model.h"
#include "view_id.h"

namespace retnet::ui {

enum class Job { OpenModel, UseModel, SetDevice, SetInterventions, Generate, Analysis, Cost };

// A kind of engine work; analysis work is told apart by the view that asked and a channel
// (a view may keep two requests in flight, e.g. the retention matrix and its overview).
struct JobRef {
    Job job = Job::Analysis;
    ViewId view = ViewId::Count;
    int channel = 0;

    bool operator==(const JobRef&) const = default;
    bool isModelJob() const { return job != Job::Generate && job != Job::Analysis && job != Job::Cost; }
};

inline constexpr int kAnalysisChannels = 2;
// Requests share a freshness slot when a newer one makes an older one pointless: every model
// change shares one, generation one, the cost measurement one, and each view's channel one.
inline constexpr int kFreshnessSlots = 3 + kViewCount * kAnalysisChannels;
inline int freshnessSlot(const JobRef& j) {
    if (j.isModelJob()) return 0;
    if (j.job == Job::Generate) return 1;
    if (j.job == Job::Cost) return 2;
    return 3 + int(j.view) * kAnalysisChannels + j.channel;
}

// The title an error is shown under, e.g. "Open model: …", "Retention: …".
QString jobTitle(const JobRef& job);

// What a job sees on the engine thread. The backend's state may be used freely: the worker
// restores the generation's state after the job.
struct AnalysisContext {
    const retnet::Model& model;
    retnet::Backend& backend;
    std::vector<int32_t> tokens;  // (T) the text to analyse: the request's text or the sequence
    QStringList labels;           // (T) display piece of each token
    std::function<QString(int32_t)> piece;
    std::function<bool()> cancelled;  // a newer request for the same view and channel arrived
};

using AnalysisJob = std::function<std::any(AnalysisContext&)>;

struct AnalysisRequest {
    JobRef job;
    QString text;  // empty: the current sequence
    AnalysisJob compute;
    // Its error handler shows a failure in place (the prompt's token count while typing): no
    // errorOccurred, so no dialog per keystroke.
    bool showsOwnErrors = false;
};

}  // namespace retnet::ui

Q_DECLARE_METATYPE(retnet::ui::JobRef)
Q_DECLARE_METATYPE(std::any)
