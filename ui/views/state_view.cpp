// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/state_view.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLocale>
#include <QVBoxLayout>

#include <qcustomplot.h>

#include "plot_utils.h"

namespace retnet::ui {

StateView::StateView(QWidget* parent) : ViewBase(parent) {
    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(300);
    m_plot->plotLayout()->clear();
    auto* curves = new QCPAxisRect(m_plot);
    auto* strip = new QCPAxisRect(m_plot);
    m_plot->plotLayout()->addElement(0, 0, curves);
    m_plot->plotLayout()->addElement(1, 0, strip);
    m_plot->plotLayout()->setRowStretchFactor(0, 3);
    m_plot->plotLayout()->setRowStretchFactor(1, 1);
    curves->axis(QCPAxis::atBottom)->setLabel(tr("position t"));
    curves->axis(QCPAxis::atLeft)->setLabel(tr("Frobenius norm of the state Sₜ"));
    strip->axis(QCPAxis::atBottom)->setLabel(tr("head"));
    strip->axis(QCPAxis::atLeft)->setLabel(tr("layer"));
    m_strip = new QCPColorMap(strip->axis(QCPAxis::atBottom), strip->axis(QCPAxis::atLeft));
    m_strip->setGradient(sequentialGradient());
    m_strip->setInterpolate(false);
    auto* scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(1, 1, scale);
    scale->setLabel(tr("newest ‖S‖"));
    m_strip->setColorScale(scale);
    scale->setGradient(sequentialGradient());  // the scale owns the gradient once linked
    auto* legend = new QCPLegend;
    curves->insetLayout()->addElement(legend, Qt::AlignTop | Qt::AlignLeft);
    legend->setLayer(QStringLiteral("legend"));
    m_plot->legend = legend;
    legend->setFont(QFont(font().family(), 8));
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);

    m_layer = new QComboBox;
    m_layer->setToolTip(tr("Layer whose heads are drawn as curves"));
    connect(m_layer, &QComboBox::currentIndexChanged, this, &StateView::redraw);
    m_info = new QLabel;
    m_info->setWordWrap(true);
    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel(tr("Layer")));
    top->addWidget(m_layer);
    top->addWidget(m_info, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(top);
    layout->addWidget(m_plot, 1);

    m_marker = std::make_unique<PositionMarker>(m_plot, curves->axis(QCPAxis::atBottom), curves->axis(QCPAxis::atLeft),
                                                Qt::Vertical);
    m_plot->setMouseTracking(true);
    connect(m_plot, &QCustomPlot::mouseMove, this, &StateView::onMouseMove);
    m_redrawTimer.setSingleShot(true);
    m_redrawTimer.setInterval(40);
    connect(&m_redrawTimer, &QTimer::timeout, this, &StateView::redraw);
    updateTheme();
}

namespace {

// (T, L, H) norms of the whole text, computed in one forward.
StateNormFrames computeStateNorms(AnalysisContext& c) {
    retnet::Introspection probe;
    probe.want_state_norms = true;
    c.backend.reset();
    c.backend.forward(c.tokens, retnet::ForwardOptions{}, &probe);
    StateNormFrames frames;
    frames.reset = true;
    frames.count = int(probe.state_norms.dim(0));
    frames.layers = int(probe.state_norms.dim(1));
    frames.heads = int(probe.state_norms.dim(2));
    frames.norms = std::move(probe.state_norms.data);
    return frames;
}

}  // namespace

void StateView::compute() {
    if (!m_missing || (sequenceLength() == 0 && analysisText().trimmed().isEmpty())) return redraw();
    analyse<StateNormFrames>(0, computeStateNorms, [this](const StateNormFrames& frames) {
        m_missing = false;
        addFrames(frames);
        redraw();
    });
}

void StateView::attached() {
    engine()->setLiveStateNorms(isVisible());
    connect(engine(), &EngineController::stateNormsReady, this, &StateView::addFrames);
    connect(engine(), &EngineController::sequenceTruncated, this, &StateView::truncate);
    connect(engine(), &EngineController::generationFinished, this, &StateView::redraw);
}

void StateView::setModelInfo(const ModelInfo& info) {
    m_model = info;
    if (info.sequenceKept) return;  // same shapes; edited models send their new norms
    m_layers = info.layers;
    m_heads = info.heads;
    m_norms.clear();
    m_positions = 0;
    QSignalBlocker block(m_layer);
    m_layer->clear();
    for (int l = 0; l < m_layers; ++l) m_layer->addItem(tr("layer %1").arg(l), l);
    const QLocale locale;
    m_info->setText(tr("The state is %1 whatever the length (L×H×Dk×Dv = %2×%3×%4×%5 floats); a "
                       "Transformer's KV cache grows by %6 per token.")
                        .arg(locale.formattedDataSize(info.stateBytes))
                        .arg(info.layers).arg(info.heads).arg(info.headDimK).arg(info.headDimV)
                        .arg(locale.formattedDataSize(info.kvCacheBytes(1))));
    redraw();
}

float StateView::norm(int64_t position, int layer, int head) const {
    return m_norms[(size_t(position) * size_t(m_layers) + size_t(layer)) * size_t(m_heads) + size_t(head)];
}

void StateView::addFrames(const StateNormFrames& frames) {
    if (frames.layers != m_layers || frames.heads != m_heads) return;
    if (frames.reset) {
        m_norms.clear();
        m_positions = 0;
    }
    if (frames.firstPosition != m_positions) truncate(frames.firstPosition);
    if (frames.firstPosition != m_positions) return;  // a gap: frames from a stale sequence
    m_norms.insert(m_norms.end(), frames.norms.begin(), frames.norms.end());
    m_positions += frames.count;
    scheduleRedraw();
}

void StateView::truncate(int64_t length) {
    if (length >= m_positions) return;
    m_positions = std::max<int64_t>(length, 0);
    m_norms.resize(size_t(m_positions) * size_t(m_layers) * size_t(m_heads));
    scheduleRedraw();
}

// Hidden, the view only keeps the norms: drawing waits until it is shown, so a generation does
// not pay for a plot nobody sees.
void StateView::scheduleRedraw() {
    if (!isVisible()) {
        m_dirty = true;
        return;
    }
    if (!m_redrawTimer.isActive()) m_redrawTimer.start();
}

void StateView::hideEvent(QHideEvent* event) {
    ViewBase::hideEvent(event);
    m_missing = true;
    if (engine()) engine()->setLiveStateNorms(false);
}

void StateView::showEvent(QShowEvent* event) {
    ViewBase::showEvent(event);
    if (engine()) engine()->setLiveStateNorms(true);
    if (m_dirty) redraw();
}

void StateView::updateTheme() {
    applyPlotTheme(m_plot);
    m_marker->updateTheme();
    redraw();
}

void StateView::redraw() {
    m_dirty = false;
    QCPAxisRect* curves = m_plot->axisRect(0);
    m_plot->clearGraphs();
    const int layer = std::max(0, m_layer->currentIndex());
    double top = 0.0;
    for (int h = 0; h < m_heads && m_positions > 0; ++h) {
        QVector<double> xs, ys;
        xs.reserve(int(m_positions));
        ys.reserve(int(m_positions));
        for (int64_t t = 0; t < m_positions; ++t) {
            xs << double(t);
            ys << double(norm(t, layer, h));
            top = std::max(top, ys.back());
        }
        QCPGraph* g = m_plot->addGraph(curves->axis(QCPAxis::atBottom), curves->axis(QCPAxis::atLeft));
        g->setData(xs, ys, true);
        g->setPen(QPen(seriesColor(h), 1.6));
        g->setName(tr("head %1").arg(h));
    }
    showLinkedPosition(linkedPosition());
    m_plot->legend->setVisible(m_heads > 0 && m_heads <= 16 && m_positions > 0);
    curves->axis(QCPAxis::atBottom)->setRange(0, std::max<double>(8.0, double(m_positions)));
    curves->axis(QCPAxis::atLeft)->setRange(0, top > 0 ? top * 1.08 : 1.0);

    m_strip->data()->setSize(std::max(1, m_heads), std::max(1, m_layers));
    m_strip->data()->setRange(QCPRange(0, std::max(0, m_heads - 1)), QCPRange(0, std::max(0, m_layers - 1)));
    m_strip->data()->fill(0.0);
    if (m_positions > 0)
        for (int l = 0; l < m_layers; ++l)
            for (int h = 0; h < m_heads; ++h) m_strip->data()->setCell(h, l, norm(m_positions - 1, l, h));
    m_strip->rescaleDataRange(true);
    QCPAxisRect* strip = m_plot->axisRect(1);
    for (QCPAxis* axis : {strip->axis(QCPAxis::atBottom), strip->axis(QCPAxis::atLeft)}) {
        QSharedPointer<QCPAxisTickerFixed> integers(new QCPAxisTickerFixed);
        integers->setTickStep(1.0);
        integers->setScaleStrategy(QCPAxisTickerFixed::ssMultiples);
        axis->setTicker(integers);
    }
    strip->axis(QCPAxis::atBottom)->setRange(-0.5, std::max(0, m_heads - 1) + 0.5);
    strip->axis(QCPAxis::atLeft)->setRange(-0.5, std::max(0, m_layers - 1) + 0.5);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void StateView::onMouseMove(QMouseEvent* event) {
    QCPAxisRect* curves = m_plot->axisRect(0);
    if (!curves->rect().contains(event->position().toPoint())) return;
    const int64_t t = std::lround(curves->axis(QCPAxis::atBottom)->pixelToCoord(event->position().x()));
    if (t >= 0 && t < m_positions) pointAt(t);
}

// Marked on the curves; drawn with the next replot (at once when shown, else when shown).
void StateView::showLinkedPosition(int64_t position) {
    const bool shown = m_marker->isShown();
    if (position >= 0 && position < m_positions)
        m_marker->show(double(position));
    else
        m_marker->hide();
    if (isVisible() && (shown || m_marker->isShown())) m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int64_t StateView::markedPosition() const { return m_marker->isShown() ? int64_t(std::lround(m_marker->coord())) : -1; }

QString StateView::csv() const {
    QString out = QStringLiteral("position");
    for (int l = 0; l < m_layers; ++l)
        for (int h = 0; h < m_heads; ++h) out += QStringLiteral(",L%1H%2").arg(l).arg(h);
    out += QLatin1Char('\n');
    for (int64_t t = 0; t < m_positions; ++t) {
        out += QString::number(t);
        for (int l = 0; l < m_layers; ++l)
            for (int h = 0; h < m_heads; ++h)
                out += QLatin1Char(',') + QString::number(double(norm(t, l, h)), 'g', 8);
        out += QLatin1Char('\n');
    }
    return out;
}

}  // namespace retnet::ui
