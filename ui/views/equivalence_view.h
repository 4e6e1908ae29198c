// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Parallel vs recurrent vs chunkwise on the same text: per-pair metrics with a pass/fail badge,
// a max-|Δ| heat map over position × layer with chunk boundaries, and error against chunk size.
#include "snapshots.h"
#include "views/view_base.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QCustomPlot;
class QCPColorMap;
class QCPAxisRect;

namespace retnet::ui {

class EquivalenceView : public ViewBase {
    Q_OBJECT
public:
    explicit EquivalenceView(QWidget* parent = nullptr);

    QString viewId() const override { return QStringLiteral("equivalence"); }
    QString title() const override { return tr("Equivalence"); }
    bool hasData() const override { return m_result.report != nullptr; }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const retnet::ui::ModelInfo& info);
    EquivalenceRequest request(const QString& text) const;
    void setZeroEps(bool on);
    void setChunkSize(int c);
    const EquivalenceResult& result() const { return m_result; }
    QString badgeText(int pair) const;

public slots:
    void setResult(const retnet::ui::EquivalenceResult& result);

signals:
    void runRequested();

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }

private:
    void showPair();

    QSpinBox* m_chunk = nullptr;
    QCheckBox* m_zeroEps = nullptr;
    QComboBox* m_tolerance = nullptr;
    QPushButton* m_run = nullptr;
    QTableWidget* m_table = nullptr;
    QComboBox* m_pair = nullptr;
    QLabel* m_summary = nullptr;
    QCustomPlot* m_plot = nullptr;
    QCPAxisRect* m_heatRect = nullptr;
    QCPAxisRect* m_sweepRect = nullptr;
    QCPColorMap* m_heat = nullptr;
    EquivalenceResult m_result;
    int m_layers = 0;
};

}  // namespace retnet::ui
