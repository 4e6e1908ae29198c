// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the main window needs from every view: an id, an image export (PNG/PDF), a data export
// (CSV), theme updates, the learn-panel topic shown beside it, and the engine connection.
//
// A view with engine work overrides compute() and declares its requests there with request():
// a job that runs on the engine thread and a handler that shows its result. The base keeps the
// view's freshness (stale after a new model or text, fresh once every request it made has
// answered) and announces dataReady; views that follow the generation stream connect to the
// controller's signals in attached().
#include <QWidget>

#include <any>
#include <functional>

#include "analysis.h"
#include "engine_controller.h"
#include "view_id.h"

class QCustomPlot;

namespace retnet::ui {

// The linked cursor: the position of the text the user points at in any view, shown in all of
// them (-1: none). Setting the same position again announces nothing, so views may set it from
// their own hover without echoing.
class LinkedCursor : public QObject {
    Q_OBJECT
public:
    using QObject::QObject;
    int64_t position() const { return m_position; }
    void set(int64_t position) {
        if (position == m_position) return;
        m_position = position;
        emit changed(position);
    }

signals:
    void changed(int64_t position);

private:
    int64_t m_position = -1;
};

// What a view may ask of the window it sits in.
struct ViewContext {
    EngineController* engine = nullptr;
    std::function<QString()> analysisText;    // the prompt, or "" for the generated sequence
    std::function<int64_t()> sequenceLength;  // tokens of the current text
    LinkedCursor* cursor = nullptr;
};

class ViewBase : public QWidget {
    Q_OBJECT
public:
    using QWidget::QWidget;

    virtual ViewId id() const = 0;
    QString name() const { return viewName(id()); }
    virtual QString title() const = 0;
    virtual bool hasData() const = 0;
    virtual QString csv() const = 0;  // the view's data, header line first
    virtual void updateTheme() {}
    virtual void setModelInfo(const ModelInfo&) {}

    // `key: value` lines naming what the view shows (layer, head, form, eps, verdict…). Every
    // export carries them after the window's `metadata` lines: as `# ` lines in a CSV, as a
    // caption above the picture and as text chunks in a PNG.
    virtual QStringList exportInfo() const { return {}; }
    // PNG or PDF by suffix: the view's main plot, or the whole view when it has none.
    bool exportImage(const QString& path, QString* error, const QString& metadata = {}) const;
    bool exportCsv(const QString& path, const QString& metadata, QString* error) const;

    void attach(const ViewContext& context);
    bool isStale() const { return m_stale; }
    void markStale() { m_stale = true; }
    // Recomputes what the view shows from the current text (F5); dataReady follows.
    void refresh();

signals:
    void dataReady(retnet::ui::ViewId id);  // every request of the last refresh has answered

protected:
    virtual QCustomPlot* mainPlot() const { return nullptr; }

    virtual void attached() {}  // connect to the controller's streams here
    virtual void compute() {}   // declare this view's requests here
    virtual void showError(const QString&) {}  // one of its requests failed
    // The linked cursor moved (-1: none); views that show positions mark it.
    virtual void showLinkedPosition(int64_t) {}
    // The user points at `position` here: every view marks it.
    void pointAt(int64_t position) {
        if (m_context.cursor) m_context.cursor->set(position);
    }
    int64_t linkedPosition() const { return m_context.cursor ? m_context.cursor->position() : -1; }

    EngineController* engine() const { return m_context.engine; }
    QString analysisText() const { return m_context.analysisText ? m_context.analysisText() : QString(); }
    int64_t sequenceLength() const { return m_context.sequenceLength ? m_context.sequenceLength() : 0; }

    // Runs `job` (Result(AnalysisContext&), on the engine thread) on the current text and hands
    // its result to `show` (void(const Result&), here) unless a newer request on the same
    // channel has replaced it.
    template <typename Result>
    void analyse(int channel, std::function<Result(AnalysisContext&)> job, std::function<void(const Result&)> show) {
        if (!engine() || !engine()->hasModel()) return;
        m_pending |= 1u << channel;
        AnalysisRequest r{JobRef{Job::Analysis, id(), channel}, analysisText(),
                          [job = std::move(job)](AnalysisContext& c) { return std::any(job(c)); }};
        engine()->analyse(std::move(r), this,
                          [this, channel, show = std::move(show)](const std::any& value) {
                              show(std::any_cast<const Result&>(value));
                              answered(channel, true);
                          },
                          [this, channel](const QString& message) {
                              showError(message);
                              answered(channel, false);
                          });
    }

private:
    void answered(int channel, bool ok);
    QStringList exportLines(const QString& metadata) const;

    ViewContext m_context;
    bool m_stale = true;
    unsigned m_pending = 0;  // channels with a request in flight
};

}  // namespace retnet::ui
