// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The paper's inference-cost comparison on the current device: the model against its Transformer
// twin (same size, random weights) at the chosen context lengths × batch sizes, measured in the
// engine thread with progress and cancel, drawn as the four cost panels (ui/cost_plot.h) with a
// table of the numbers, both filled point by point as the engine measures them (a cancel keeps
// the points measured). Beside it, a gauge that follows the generation: the RetNet's state
// (constant) against the KV cache the twin would hold at the current position, and the ms per
// token the RetNet has taken so far.
#include "cost_job.h"
#include <optional>

#include "views/view_base.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace retnet::ui {

class CostView : public ViewBase {
    Q_OBJECT
public:
    explicit CostView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Cost; }
    QString title() const override { return tr("Cost"); }
    bool hasData() const override { return !m_report.points.empty(); }
    QString csv() const override;
    QStringList exportInfo() const override;
    void updateTheme() override;
    void setModelInfo(const ModelInfo& info) override;

    // The fields, as typed: comma- or space-separated whole numbers.
    void setLengths(const QString& lengths);
    void setBatches(const QString& batches);
    void setDecodeSteps(int steps);
    QString lengths() const;
    QString batches() const;
    // Starts a measurement of what the fields say (a bad field: the note says which, nothing runs).
    void measure();
    void cancel();
    // Shows a report as if measured (also what a measurement ends with).
    void showReport(const CostReport& report);

    const CostReport& report() const { return m_report; }
    QString note() const;  // the one line under the controls: progress, error or summary
    QString gaugeText() const;
    bool isMeasuring() const { return m_measuring; }
    QCustomPlot* plot() const { return m_plot; }
    QTableWidget* table() const { return m_table; }

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void attached() override;

private:
    QWidget* buildControls();
    void setMeasuring(bool on);
    void setNote(const QString& line);
    void redraw();
    void showPoints(const CostReport& soFar);  // a measurement's points so far
    void fillTable();
    void fillChoices();
    void updateGauge();
    void applyDefaults(bool cuda);

    QLineEdit* m_lengths = nullptr;
    QLineEdit* m_batches = nullptr;
    QSpinBox* m_steps = nullptr;
    QPushButton* m_measure = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_note = nullptr;
    QLabel* m_gauge = nullptr;
    QComboBox* m_batchChoice = nullptr;   // the batch of the three length panels
    QComboBox* m_lengthChoice = nullptr;  // the length of the batch panel
    QCustomPlot* m_plot = nullptr;
    QTableWidget* m_table = nullptr;

    CostReport m_report;
    bool m_measuring = false;
    int m_planned = 0;         // points the running measurement will have
    bool m_partial = false;    // m_report holds the running measurement's points so far
    std::optional<bool> m_defaultsForCuda;  // which device's default lists the fields hold
    // The gauge: the model, where the text is, and the generation's timings so far.
    ModelInfo m_info;
    int64_t m_position = 0;
    int m_generated = 0;
    double m_decodeMs = 0.0;
};

}  // namespace retnet::ui
