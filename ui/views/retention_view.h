// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Signed retention scores (QKᵀ ⊙ D after the form's normalization) of one layer and head, with a
// layers × heads overview grid to pick from.
#include <QComboBox>
#include <QWidget>

#include "snapshots.h"
#include "views/view_base.h"

class QLabel;
class QSpinBox;
class QCustomPlot;
class QCPColorMap;

namespace retnet::ui {

// Thumbnails of every (layer, head); click or arrow keys pick one.
class HeadGrid : public QWidget {
    Q_OBJECT
public:
    explicit HeadGrid(QWidget* parent = nullptr);
    void setOverview(const RetentionOverview& overview);
    void setSelected(int layer, int head);
    bool hasData() const { return m_overview.scores != nullptr; }
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

    QString viewId() const override { return QStringLiteral("retention"); }
    QString title() const override { return tr("Retention"); }
    bool hasData() const override { return m_matrix.scores != nullptr; }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const retnet::ui::ModelInfo& info);
    int layer() const;
    int head() const;
    retnet::Form form() const;  // the form whose normalization the scores show
    int chunkSize() const;      // chunkwise form only
    void setLayerHead(int layer, int head);
    const RetentionMatrix& matrix() const { return m_matrix; }
    bool hasOverview() const { return m_grid->hasData(); }

public slots:
    void setMatrix(const retnet::ui::RetentionMatrix& matrix);
    void setOverview(const retnet::ui::RetentionOverview& overview);

signals:
    void layerRequested(int layer);  // the view needs this layer's scores

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }

private:
    void showHead();
    void showHover(QMouseEvent* event);

    HeadGrid* m_grid = nullptr;
    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QSpinBox* m_layer = nullptr;
    QSpinBox* m_head = nullptr;
    QComboBox* m_form = nullptr;
    QSpinBox* m_chunk = nullptr;
    QLabel* m_note = nullptr;
    RetentionMatrix m_matrix;
};

}  // namespace retnet::ui
