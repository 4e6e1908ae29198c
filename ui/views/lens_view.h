// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The logit lens: a layer × position map of the probability each layer's reading gives the token
// that actually follows, and the top tokens of the cell under the mouse or clicked.
#include <memory>

#include "plot_utils.h"
#include "snapshots.h"
#include "views/view_base.h"

class QLabel;
class QMouseEvent;
class QTableWidget;
class QCustomPlot;
class QCPColorMap;

namespace retnet::ui {

// The logit lens of a text (retnet/lens.h): each layer's reading at each position.
struct LensResult {
    int layers = 0, tokens = 0;
    QStringList labels;             // (T) the tokens
    std::vector<double> nextProb;   // (L, T) probability of the token that follows; -1 after the last
    std::vector<std::vector<TokenCandidate>> top;  // (L·T) most likely next tokens, best first
    const std::vector<TokenCandidate>& cell(int layer, int position) const {
        return top[size_t(layer) * size_t(tokens) + size_t(position)];
    }
};

// The job (engine thread): one forward with layer outputs, read through the final norm and head.
LensResult computeLens(AnalysisContext& context, int topN);

class LensView : public ViewBase {
    Q_OBJECT
public:
    explicit LensView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Lens; }
    QString title() const override { return tr("Lens"); }
    bool hasData() const override { return m_result.tokens > 0; }
    QString csv() const override;
    void updateTheme() override;

    void setResult(const retnet::ui::LensResult& result);
    const LensResult& result() const { return m_result; }
    void selectCell(int layer, int position);  // fills the table; out of range clears it
    int64_t markedPosition() const;  // the linked cursor's column, -1 when none is drawn

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void compute() override;

private:
    bool cellAt(QMouseEvent* event, int* layer, int* position) const;
    void showLinkedPosition(int64_t position) override;
    void draw();

    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QLabel* m_note = nullptr;
    QLabel* m_cellLabel = nullptr;
    QTableWidget* m_table = nullptr;
    LensResult m_result;
    std::unique_ptr<PositionMarker> m_marker;
};

}  // namespace retnet::ui
