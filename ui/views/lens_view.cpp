// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/lens_view.h"

#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QSplitter>
#include <QTableWidget>
#include <QToolTip>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include <qcustomplot.h>

#include "plot_utils.h"
#include "retnet/lens.h"

namespace retnet::ui {

LensResult computeLens(AnalysisContext& context, int topN) {
    retnet::Introspection probe;
    probe.want_layer_outputs = true;
    context.backend.reset();
    context.backend.forward(context.tokens, retnet::ForwardOptions{}, &probe);
    const auto readings = retnet::logit_lens(context.model, probe.layer_outputs, context.tokens, topN);
    LensResult result;
    result.layers = int(readings.size());
    result.tokens = int(context.tokens.size());
    result.labels = context.labels;
    for (const auto& layer : readings)
        for (const retnet::LensReading& r : layer) {
            result.nextProb.push_back(r.next_prob);
            std::vector<TokenCandidate>& cell = result.top.emplace_back();
            for (const retnet::TokenProb& p : r.top) cell.push_back({p.id, context.piece(p.id), p.prob});
        }
    return result;
}

void LensView::compute() {
    analyse<LensResult>(
        0, [](AnalysisContext& c) { return computeLens(c, 5); },
        [this](const LensResult& result) { setResult(result); });
}

LensView::LensView(QWidget* parent) : ViewBase(parent) {
    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(260);
    m_plot->xAxis->setLabel(tr("position (the token read there)"));
    m_plot->yAxis->setLabel(tr("layer"));
    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    m_map->setInterpolate(false);
    auto* scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, scale);
    scale->setLabel(tr("p(next token) read at this layer"));
    m_map->setColorScale(scale);
    scale->setGradient(sequentialGradient());
    m_map->setDataRange(QCPRange(0.0, 1.0));
    m_marker = std::make_unique<PositionMarker>(m_plot, m_plot->xAxis, m_plot->yAxis, Qt::Vertical);
    m_plot->setMouseTracking(true);
    connect(m_plot, &QCustomPlot::mouseMove, this, [this](QMouseEvent* event) {
        int layer = 0, position = 0;
        if (!cellAt(event, &layer, &position)) {
            QToolTip::hideText();
            return;
        }
        pointAt(position);
        const std::vector<TokenCandidate>& top = m_result.cell(layer, position);
        QString text = tr("layer %1, position %2 ‘%3’").arg(layer).arg(position)
                           .arg(axisLabel(m_result.labels.value(position)).toHtmlEscaped());
        if (!top.empty())
            text += tr("<br>reads ‘%1’ (%2)").arg(axisLabel(top.front().text).toHtmlEscaped())
                        .arg(top.front().prob, 0, 'f', 3);
        const double p = m_result.nextProb[size_t(layer) * size_t(m_result.tokens) + size_t(position)];
        if (p >= 0)
            text += tr("<br>p(‘%1’, the token that follows) = %2")
                        .arg(axisLabel(m_result.labels.value(position + 1)).toHtmlEscaped()).arg(p, 0, 'f', 3);
        QToolTip::showText(event->globalPosition().toPoint(), text, m_plot);
    });
    connect(m_plot, &QCustomPlot::mousePress, this, [this](QMouseEvent* event) {
        int layer = 0, position = 0;
        if (cellAt(event, &layer, &position)) selectCell(layer, position);
    });

    m_note = new QLabel(tr("Open a model and type a prompt: each layer's residual stream is read out "
                           "through the final norm and the output matrix."));
    m_note->setWordWrap(true);
    m_cellLabel = new QLabel(tr("Click a cell for its top tokens."));
    m_cellLabel->setWordWrap(true);
    m_table = new QTableWidget(0, 2);
    m_table->setHorizontalHeaderLabels({tr("Token"), tr("p")});
    m_table->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    auto* side = new QWidget;
    auto* sideLayout = new QVBoxLayout(side);
    sideLayout->setContentsMargins(0, 0, 0, 0);
    sideLayout->addWidget(m_cellLabel);
    sideLayout->addWidget(m_table, 1);
    auto* splitter = new QSplitter(Qt::Horizontal);
    splitter->addWidget(m_plot);
    splitter->addWidget(side);
    splitter->setStretchFactor(0, 4);
    splitter->setStretchFactor(1, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addWidget(m_note);
    layout->addWidget(splitter, 1);
    updateTheme();
}

void LensView::setResult(const LensResult& result) {
    m_result = result;
    showLinkedPosition(linkedPosition());  // the text may have another length
    draw();
    selectCell(m_result.layers - 1, m_result.tokens - 1);
}

void LensView::draw() {
    const int L = m_result.layers, T = m_result.tokens;
    if (L == 0 || T == 0) return;
    m_map->data()->setSize(T, L);
    m_map->data()->setRange(QCPRange(0, T - 1), QCPRange(0, L - 1));
    for (int l = 0; l < L; ++l)
        for (int t = 0; t < T; ++t) {
            const double p = m_result.nextProb[size_t(l) * size_t(T) + size_t(t)];
            m_map->data()->setCell(t, l, std::max(p, 0.0));
            if (p < 0) m_map->data()->setAlpha(t, l, 0);  // nothing follows the last token: blank
        }
    if (T <= 64 && m_result.labels.size() == T) {
        QSharedPointer<QCPAxisTickerText> xt(new QCPAxisTickerText);
        bool shortLabels = true;
        for (int t = 0; t < T; ++t) {
            xt->addTick(t, axisLabel(m_result.labels[t]));
            shortLabels = shortLabels && m_result.labels[t].size() <= 3;
        }
        m_plot->xAxis->setTicker(xt);
        m_plot->xAxis->setTickLabelRotation(shortLabels ? 0 : 60);  // characters stay upright
    } else {
        m_plot->xAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_plot->xAxis->setTickLabelRotation(0);
    }
    QSharedPointer<QCPAxisTickerText> yt(new QCPAxisTickerText);
    for (int l = 0; l < L; ++l) yt->addTick(l, QString::number(l));
    m_plot->yAxis->setTicker(yt);
    m_plot->xAxis->setRange(-0.5, T - 0.5);
    m_plot->yAxis->setRange(-0.5, L - 0.5);
    m_note->setText(tr("%1 tokens, %2 layers. Cell (position t, layer l): the probability that layer "
                       "l's residual stream, read out through the final norm and the output matrix, "
                       "gives the token at t + 1. The top row is the model's own prediction.")
                        .arg(T).arg(L));
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void LensView::showLinkedPosition(int64_t position) {
    if (position >= 0 && position < m_result.tokens)
        m_marker->show(double(position));
    else
        m_marker->hide();
    if (isVisible()) m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int64_t LensView::markedPosition() const { return m_marker->isShown() ? int64_t(std::lround(m_marker->coord())) : -1; }

bool LensView::cellAt(QMouseEvent* event, int* layer, int* position) const {
    if (m_result.tokens == 0) return false;
    *position = int(std::lround(m_plot->xAxis->pixelToCoord(event->position().x())));
    *layer = int(std::lround(m_plot->yAxis->pixelToCoord(event->position().y())));
    return *position >= 0 && *position < m_result.tokens && *layer >= 0 && *layer < m_result.layers;
}

void LensView::selectCell(int layer, int position) {
    m_table->setRowCount(0);
    if (layer < 0 || layer >= m_result.layers || position < 0 || position >= m_result.tokens) {
        m_cellLabel->setText(tr("Click a cell for its top tokens."));
        return;
    }
    const QString next = position + 1 < m_result.tokens
                             ? tr("; the next token is ‘%1’").arg(axisLabel(m_result.labels[position + 1]).toHtmlEscaped())
                             : QString();
    m_cellLabel->setText(tr("Layer %1 at position %2 ‘%3’%4:")
                             .arg(layer).arg(position)
                             .arg(axisLabel(m_result.labels.value(position)).toHtmlEscaped(), next));
    const std::vector<TokenCandidate>& top = m_result.cell(layer, position);
    m_table->setRowCount(int(top.size()));
    for (size_t i = 0; i < top.size(); ++i) {
        m_table->setItem(int(i), 0, new QTableWidgetItem(axisLabel(top[i].text)));
        m_table->setItem(int(i), 1, new QTableWidgetItem(QString::number(top[i].prob, 'f', 4)));
    }
}

void LensView::updateTheme() {
    applyPlotTheme(m_plot);
    if (m_marker) m_marker->updateTheme();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QString LensView::csv() const {
    QString out = QStringLiteral("layer,position,token,p_next,top1,p_top1\n");
    for (int l = 0; l < m_result.layers; ++l)
        for (int t = 0; t < m_result.tokens; ++t) {
            const double p = m_result.nextProb[size_t(l) * size_t(m_result.tokens) + size_t(t)];
            const std::vector<TokenCandidate>& top = m_result.cell(l, t);
            out += QStringLiteral("%1,%2,%3,%4,%5,%6\n")
                       .arg(l)
                       .arg(t)
                       .arg(csvField(m_result.labels.value(t)))
                       .arg(p >= 0 ? QString::number(p, 'g', 8) : QString())
                       .arg(top.empty() ? QString() : csvField(top.front().text))
                       .arg(top.empty() ? QString() : QString::number(top.front().prob, 'g', 8));
        }
    return out;
}

}  // namespace retnet::ui
