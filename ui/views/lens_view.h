// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The logit lens: a layer × position map of the probability each layer's reading gives the token
// that actually follows, and the top tokens of the cell under the mouse or clicked.
#include "snapshots.h"
#include "views/view_base.h"

class QLabel;
class QMouseEvent;
class QTableWidget;
class QCustomPlot;
class QCPColorMap;

namespace retnet::ui {

class LensView : public ViewBase {
    Q_OBJECT
public:
    explicit LensView(QWidget* parent = nullptr);

    QString viewId() const override { return QStringLiteral("lens"); }
    QString title() const override { return tr("Lens"); }
    bool hasData() const override { return m_result.tokens > 0; }
    QString csv() const override;
    void updateTheme() override;

    void setResult(const retnet::ui::LensResult& result);
    const LensResult& result() const { return m_result; }
    void selectCell(int layer, int position);  // fills the table; out of range clears it

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }

private:
    bool cellAt(QMouseEvent* event, int* layer, int* position) const;
    void draw();

    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QLabel* m_note = nullptr;
    QLabel* m_cellLabel = nullptr;
    QTableWidget* m_table = nullptr;
    LensResult m_result;
};

}  // namespace retnet::ui
