// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Parallel vs recurrent vs chunkwise on the same text: the answer in one sentence, per-pair
// metrics with a pass/fail badge, a max-|Δ| heat map over position × layer on a fixed colour range
// whose colour bar marks the tolerance, and the error against the chunk size. Changing the chunk
// size, eps or tolerance recomputes (after a short pause, so typing a number runs once).
#include <QTimer>

#include "retnet/equivalence.h"
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
class QCPColorScale;
class QLayout;

namespace retnet::ui {

struct EquivalenceRequest {
    int chunkSize = 0;
    bool zeroEps = false;
    double tolerance = 1e-4;
    std::vector<int> sweepSizes;
};

struct EquivalenceResult {
    QStringList labels;  // (T)
    double tolerance = 0.0;
    std::shared_ptr<const retnet::EquivalenceReport> report;
    std::vector<retnet::ChunkSweepPoint> sweep;
};

// The job (engine thread): the three forms on the context's text, and the chunk-size sweep.
EquivalenceResult computeEquivalence(AnalysisContext& context, const EquivalenceRequest& request);

class EquivalenceView : public ViewBase {
    Q_OBJECT
public:
    explicit EquivalenceView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Equivalence; }
    QString title() const override { return tr("Equivalence"); }
    bool hasData() const override { return m_result.report != nullptr; }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const retnet::ui::ModelInfo& info) override;
    EquivalenceRequest request() const;
    void setZeroEps(bool on);
    void setChunkSize(int c);
    const EquivalenceResult& result() const { return m_result; }
    QString badgeText(int pair) const;
    QString verdict() const;  // the answer in one sentence; "" before a result
    QStringList exportInfo() const override;

    void setResult(const EquivalenceResult& result);

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void compute() override;

private:
    QLayout* buildControls();
    void buildPlot();
    void settingsChanged();
    void showPair();
    void drawHeat(const retnet::PairReport& p);
    void drawMarkers(const retnet::PairReport& p, int T, int cols);
    void drawSweep(int T);

    QSpinBox* m_chunk = nullptr;
    QCheckBox* m_zeroEps = nullptr;
    QComboBox* m_tolerance = nullptr;
    QPushButton* m_run = nullptr;
    QTableWidget* m_table = nullptr;
    QComboBox* m_pair = nullptr;
    QLabel* m_summary = nullptr;
    QLabel* m_verdict = nullptr;
    QCPColorScale* m_scale = nullptr;
    QTimer m_rerun;  // settles settings changes before recomputing
    QString m_family;
    QCustomPlot* m_plot = nullptr;
    QCPAxisRect* m_heatRect = nullptr;
    QCPAxisRect* m_sweepRect = nullptr;
    QCPColorMap* m_heat = nullptr;
    EquivalenceResult m_result;
    int m_layers = 0;
};

}  // namespace retnet::ui
