// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A step-through of the recurrence for one layer and head: at position n the state update
// S_n = γ S_(n−1) + k_nᵀ v_n drawn as three small matrices (γ S_(n−1), the new term, S_n), and
// beside them row n of the parallel form's score matrix with the decay γ^(n−m), so both forms
// can be seen computing one thing. Back, forward and play step through the text.
#include <QTimer>

#include <memory>
#include <vector>

#include "views/view_base.h"

class QCPAxisRect;
class QCPColorMap;
class QCustomPlot;
class QLabel;
class QPushButton;
class QSlider;
class QSpinBox;

namespace retnet::ui {

struct RecurrenceRequest {
    int layer = 0, head = 0;
};

struct RecurrenceTrace {
    int layer = 0, head = 0;
    int tokens = 0, dk = 0, dv = 0;  // T, and the state's shape
    double gamma = 1.0;
    QStringList labels;                                   // (T)
    std::shared_ptr<const std::vector<float>> states;     // (T, Dk, Dv): S_n after token n (recurrent form)
    std::shared_ptr<const std::vector<float>> scores;     // (T, T): the parallel form's scores of the head
    std::shared_ptr<const std::vector<float>> qk;         // (T, T): qₙ·kₘ (scaled, rotated), before the decay
    std::shared_ptr<const std::vector<float>> recurrentOut;  // (T, Dv): oₙ = qₙ Sₙ from the traced states
    std::shared_ptr<const std::vector<float>> parallelOut;   // (T, Dv): Σₘ score(n, m) vₘ
    const float* state(int n) const { return states->data() + size_t(n) * size_t(dk) * size_t(dv); }
};

// The job (engine thread): the text token by token in the recurrent form, keeping the head's
// state after each token, and one parallel pass for its scores.
RecurrenceTrace computeRecurrence(AnalysisContext& context, const RecurrenceRequest& request);

class RecurrenceView : public ViewBase {
    Q_OBJECT
public:
    explicit RecurrenceView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Recurrence; }
    QString title() const override { return tr("Recurrence"); }
    bool hasData() const override { return m_trace.states != nullptr; }
    QString csv() const override;
    void updateTheme() override;
    void setModelInfo(const ModelInfo& info) override;
    QStringList exportInfo() const override;

    void setTrace(const RecurrenceTrace& trace);
    const RecurrenceTrace& trace() const { return m_trace; }
    void setPosition(int n);
    int position() const { return m_position; }
    // max |γ S_(n−1) + (S_n − γ S_(n−1)) − S_n| is 0 by construction; this is the check shown:
    // the largest |S_n − γ S_(n−1)| entry, the size of the step's new term.
    double updateMagnitude(int n) const;
    // max over Dv of |oₙ (recurrent) − oₙ (parallel)|: 0 up to rounding where the parallel row
    // is not normalized (fla); torchscale's parallel row is also divided by its |row sum|.
    double outputDifference(int n) const;

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void compute() override;

private:
    void buildPlot();
    void draw();
    void drawOutputs();  // oₙ of both forms, in the bottom axis rect

    QSpinBox* m_layer = nullptr;
    QSpinBox* m_head = nullptr;
    QSlider* m_slider = nullptr;
    QPushButton* m_play = nullptr;
    QLabel* m_note = nullptr;
    QCustomPlot* m_plot = nullptr;
    std::vector<QCPColorMap*> m_maps;  // γ S_(n−1), update, S_n
    QCPAxisRect* m_rowRect = nullptr;  // row n of the parallel scores
    QCPAxisRect* m_outRect = nullptr;  // oₙ from both forms
    QTimer m_playTimer;
    RecurrenceTrace m_trace;
    int m_position = 0;
};

}  // namespace retnet::ui
