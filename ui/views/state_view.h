// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// ‖S_t‖_F per head and layer over positions, streamed during generation, with a layer × head
// strip of the newest values.
#include <QTimer>

#include <vector>

#include "snapshots.h"
#include <memory>

#include "plot_utils.h"
#include "views/view_base.h"

class QComboBox;
class QLabel;
class QCustomPlot;
class QCPColorMap;

namespace retnet::ui {

class StateView : public ViewBase {
    Q_OBJECT
public:
    explicit StateView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::State; }
    QString title() const override { return tr("State"); }
    bool hasData() const override { return m_positions > 0; }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const retnet::ui::ModelInfo& info) override;
    int64_t positions() const { return m_positions; }
    float norm(int64_t position, int layer, int head) const;

public slots:
    void addFrames(const retnet::ui::StateNormFrames& frames);
    void truncate(int64_t length);
    void redraw();  // replot now (the timer does it at most every 40 ms)
    int64_t markedPosition() const;  // the linked cursor, -1 when none is drawn

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void attached() override;  // follows the generation's state norms
    // The norms the generation did not send while the view was hidden, in one pass over the
    // text; otherwise a redraw.
    void compute() override;

private:
    void scheduleRedraw();
    void showLinkedPosition(int64_t position) override;
    void onMouseMove(QMouseEvent* event);
    void showEvent(QShowEvent* event) override;
    void hideEvent(QHideEvent* event) override;

    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_strip = nullptr;
    std::unique_ptr<PositionMarker> m_marker;  // on the curves
    bool m_missing = true;  // hidden since the last complete set: frames may have been skipped
    QComboBox* m_layer = nullptr;
    QLabel* m_info = nullptr;
    QTimer m_redrawTimer;
    bool m_dirty = false;  // frames arrived while hidden
    int m_layers = 0, m_heads = 0;
    int64_t m_positions = 0;
    std::vector<float> m_norms;  // (positions, L, H)
    ModelInfo m_model;
};

}  // namespace retnet::ui
