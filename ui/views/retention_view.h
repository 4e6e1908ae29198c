// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Signed retention scores (QKᵀ ⊙ D after the form's normalization) of one layer and head, with a
// layers × heads overview grid to pick from.
#include <QComboBox>
#include <QWidget>

#include <memory>

#include "plot_utils.h"
#include "retnet/retention_reach.h"
#include "snapshots.h"
#include "views/view_base.h"

class QLabel;
class QSpinBox;
class QCustomPlot;
class QCPColorMap;

class QLayout;

namespace retnet::ui {

struct RetentionRequest {
    int layer = 0;
    retnet::Form form = retnet::Form::Parallel;
    int chunkSize = 0;
    int maxCells = 256;  // per side, before downsampling
};

// Signed retention scores of one layer, all heads, maybe downsampled.
struct RetentionMatrix {
    int layer = 0, heads = 0;
    int tokens = 0;  // T of the text
    int size = 0;    // n shown (≤ T)
    int stride = 1;  // each shown cell covers stride × stride positions (max |·| kept, with sign)
    QString form;
    QStringList labels;  // (T) the token at every position
    std::shared_ptr<const std::vector<float>> scores;  // (H, n, n)
    std::vector<retnet::HeadReach> reach;               // (H) from the full-resolution scores
};

// Small thumbnails of every layer and head.
struct RetentionOverview {
    int layers = 0, heads = 0, size = 0;  // each thumbnail is size × size
    std::shared_ptr<const std::vector<float>> scores;  // (L, H, size, size)
};

// The jobs (engine thread): one layer's scores, and thumbnails of all of them.
RetentionMatrix computeRetention(AnalysisContext& context, const RetentionRequest& request);
RetentionOverview computeRetentionOverview(AnalysisContext& context);

// Thumbnails of every (layer, head); click or arrow keys pick one.
class HeadGrid : public QWidget {
    Q_OBJECT
public:
    explicit HeadGrid(QWidget* parent = nullptr);
    void setOverview(const RetentionOverview& overview);
    void setSelected(int layer, int head);
    bool hasData() const { return m_overview.scores != nullptr; }
    const RetentionOverview& overview() const { return m_overview; }
    QSize sizeHint() const override;

signals:
    void headClicked(int layer, int head);

protected:
    void paintEvent(QPaintEvent* event) override;
    void mousePressEvent(QMouseEvent* event) override;
    void keyPressEvent(QKeyEvent* event) override;

private:
    QRect cellRect(int layer, int head) const;
    RetentionOverview m_overview;
    std::vector<QImage> m_images;  // (L·H)
    int m_layer = 0, m_head = 0;
};

class RetentionView : public ViewBase {
    Q_OBJECT
public:
    explicit RetentionView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Retention; }
    QString title() const override { return tr("Retention"); }
    bool hasData() const override { return m_matrix.scores != nullptr; }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const retnet::ui::ModelInfo& info) override;
    int layer() const;
    int head() const;
    retnet::Form form() const;  // the form whose normalization the scores show
    int chunkSize() const;      // chunkwise form only
    void setLayerHead(int layer, int head);
    const RetentionMatrix& matrix() const { return m_matrix; }
    bool hasOverview() const { return m_grid->hasData(); }
    QString describeCell(int queryPosition, int keyPosition) const;  // the hover text
    QStringList exportInfo() const override;
    int64_t markedPosition() const { return m_marked; }  // the linked cursor (its query row and key column), -1: none

public slots:
    void setMatrix(const retnet::ui::RetentionMatrix& matrix);
    void setOverview(const retnet::ui::RetentionOverview& overview);

signals:
    void layerRequested(int layer);  // the view needs this layer's scores (and asks for them)

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void compute() override;  // the current layer and the overview
    void attached() override;

private:
    void buildPlot();
    QLayout* buildControls();
    void requestLayer(int layer);
    void showHead();
    void setAxisTicks();
    QString noteFor(int head) const;
    void showHover(QMouseEvent* event);
    void showLinkedPosition(int64_t position) override;

    HeadGrid* m_grid = nullptr;
    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QSpinBox* m_layer = nullptr;
    QSpinBox* m_head = nullptr;
    QComboBox* m_form = nullptr;
    QSpinBox* m_chunk = nullptr;
    QLabel* m_note = nullptr;
    RetentionMatrix m_matrix;
    std::unique_ptr<PositionMarker> m_row, m_column;  // the linked cursor as query and as key
    int64_t m_marked = -1;
};

}  // namespace retnet::ui
