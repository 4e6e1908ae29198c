// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/equivalence_view.h"

#include <QCheckBox>
#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPushButton>
#include <QSpinBox>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include <qcustomplot.h>

#include "plot_utils.h"

namespace retnet::ui {

namespace {

QString pairName(const retnet::PairReport& p) {
    return QStringLiteral("%1 – %2").arg(QString::fromLatin1(retnet::form_name(p.a)),
                                         QString::fromLatin1(retnet::form_name(p.b)));
}

QString sci(double v) { return std::isfinite(v) ? QString::number(v, 'e', 2) : QStringLiteral("∞"); }

constexpr double kLogLow = -12.0, kLogHigh = 2.0;  // the heat map's fixed range, log₁₀ |Δ|

// Cool (agreement) below the tolerance at `at` ∈ [0, 1], warm (disagreement) above it.
QCPColorGradient toleranceGradient(double at) {
    at = std::clamp(at, 0.02, 0.98);
    QCPColorGradient g;
    g.clearColorStops();
    g.setColorStopAt(0.0, QColor(8, 48, 107));
    g.setColorStopAt(at * 0.6, QColor(33, 113, 181));
    g.setColorStopAt(at - 0.001, QColor(158, 202, 225));
    g.setColorStopAt(at, QColor(254, 224, 139));
    g.setColorStopAt(at + (1 - at) * 0.5, QColor(244, 109, 67));
    g.setColorStopAt(1.0, QColor(165, 0, 38));
    g.setLevelCount(512);
    return g;
}

}  // namespace

EquivalenceView::EquivalenceView(QWidget* parent) : ViewBase(parent) {
    m_table = new QTableWidget(0, 7);
    m_table->setHorizontalHeaderLabels({tr("pair"), tr("max |Δ|"), tr("NMSE"), tr("relative"),
                                        tr("first > tol."), tr("state max |Δ|"),
                                        tr("verdict")});
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_table->horizontalHeaderItem(3)->setToolTip(tr("max |Δ| / max|logit|"));
    m_table->horizontalHeaderItem(4)->setToolTip(tr("first position whose logits differ by more than the tolerance"));
    m_table->horizontalHeaderItem(5)->setToolTip(tr("largest difference of the final recurrent states"));
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->setMaximumHeight(120);
    m_pair = new QComboBox;
    m_pair->setToolTip(tr("Pair shown in the heat map"));
    m_pair->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    connect(m_pair, &QComboBox::currentIndexChanged, this, &EquivalenceView::showPair);
    connect(m_table, &QTableWidget::cellClicked, this, [this](int row, int) { m_pair->setCurrentIndex(row); });
    m_verdict = new QLabel;
    m_verdict->setObjectName(QStringLiteral("equivalenceVerdict"));
    m_verdict->setWordWrap(true);
    QFont big = m_verdict->font();
    big.setBold(true);
    big.setPointSizeF(big.pointSizeF() * 1.15);
    m_verdict->setFont(big);
    m_summary = new QLabel;
    m_summary->setWordWrap(true);
    buildPlot();

    auto* pairRow = new QHBoxLayout;
    pairRow->addWidget(new QLabel(tr("Heat map of")));
    pairRow->addWidget(m_pair);
    pairRow->addWidget(m_summary, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(buildControls());
    layout->addWidget(m_verdict);
    layout->addWidget(m_table);
    layout->addLayout(pairRow);
    layout->addWidget(m_plot, 1);
    m_rerun.setSingleShot(true);
    m_rerun.setInterval(300);
    connect(&m_rerun, &QTimer::timeout, this, [this] {
        if (isVisible()) refresh();
    });
    setModelInfo(ModelInfo());
    updateTheme();
}

QLayout* EquivalenceView::buildControls() {
    m_chunk = new QSpinBox;
    m_chunk->setRange(1, 4096);
    m_chunk->setValue(64);
    m_chunk->setToolTip(tr("Chunk size C of the chunkwise form"));
    m_zeroEps = new QCheckBox(tr("Head-norm eps = 0"));
    m_zeroEps->setToolTip(
        tr("torchscale's three forms differ by a positive factor per row before the per-head "
           "RMSNorm; RMSNorm(x/s) = x/√(mean x² + eps·s²) cancels s only when eps = 0. Tick to "
           "see the forms agree (docs/spec.md §2.7, torchscale#40)."));
    m_tolerance = new QComboBox;
    for (double t : {1e-6, 1e-5, 1e-4, 1e-3, 1e-2}) m_tolerance->addItem(sci(t), t);
    m_tolerance->setCurrentIndex(2);
    m_tolerance->setToolTip(tr("Pass if every logit differs by at most tolerance × max|logit|"));
    m_run = new QPushButton(tr("Run"));
    m_run->setToolTip(tr("Run parallel, recurrent and chunkwise on the current text (F5)"));
    connect(m_run, &QPushButton::clicked, this, &ViewBase::refresh);
    connect(m_chunk, &QSpinBox::valueChanged, this, &EquivalenceView::settingsChanged);
    connect(m_zeroEps, &QCheckBox::toggled, this, &EquivalenceView::settingsChanged);
    connect(m_tolerance, &QComboBox::currentIndexChanged, this, &EquivalenceView::settingsChanged);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Chunk size")));
    controls->addWidget(m_chunk);
    controls->addWidget(m_zeroEps);
    controls->addWidget(new QLabel(tr("Tolerance")));
    controls->addWidget(m_tolerance);
    controls->addStretch();
    controls->addWidget(m_run);
    return controls;
}

void EquivalenceView::buildPlot() {
    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(240);
    m_plot->plotLayout()->clear();
    m_heatRect = new QCPAxisRect(m_plot);
    m_sweepRect = new QCPAxisRect(m_plot);
    m_plot->plotLayout()->addElement(0, 0, m_heatRect);
    m_scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, m_scale);
    m_plot->plotLayout()->addElement(1, 0, m_sweepRect);
    m_plot->plotLayout()->setRowStretchFactor(0, 3);
    m_plot->plotLayout()->setRowStretchFactor(1, 2);
    m_heatRect->axis(QCPAxis::atBottom)->setLabel(tr("position"));
    m_heatRect->axis(QCPAxis::atLeft)->setLabel(tr("layer output"));
    m_heat = new QCPColorMap(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
    m_heat->setInterpolate(false);
    m_heat->setColorScale(m_scale);
    m_scale->setLabel(tr("log₁₀ max |Δ| (exact 0 at −12)"));
    m_sweepRect->axis(QCPAxis::atBottom)->setLabel(tr("chunk size C"));
    m_sweepRect->axis(QCPAxis::atLeft)->setLabel(tr("max |Δ logits|"));
    m_sweepRect->axis(QCPAxis::atBottom)->setScaleType(QCPAxis::stLogarithmic);
    QSharedPointer<QCPAxisTickerLog> xlog(new QCPAxisTickerLog);
    xlog->setLogBase(2);
    m_sweepRect->axis(QCPAxis::atBottom)->setTicker(xlog);
    m_sweepRect->axis(QCPAxis::atLeft)->setScaleType(QCPAxis::stLogarithmic);
    m_sweepRect->axis(QCPAxis::atLeft)->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    m_sweepRect->axis(QCPAxis::atLeft)->setNumberFormat(QStringLiteral("eb"));
    m_sweepRect->axis(QCPAxis::atLeft)->setNumberPrecision(0);
    m_plot->legend = new QCPLegend;
    m_sweepRect->insetLayout()->addElement(m_plot->legend, Qt::AlignTop | Qt::AlignRight);
    m_plot->legend->setLayer(QStringLiteral("legend"));
    m_plot->legend->setVisible(true);
}

// A new chunk size, eps or tolerance: what is shown no longer answers the question asked.
void EquivalenceView::settingsChanged() {
    markStale();
    if (engine() && engine()->hasModel()) m_rerun.start();
}

void EquivalenceView::setModelInfo(const ModelInfo& info) {
    if (info.sequenceKept) return;  // shown until recomputed from the same text
    {
        QSignalBlocker block(m_chunk);
        m_chunk->setValue(std::max(1, info.chunkSize));
    }
    m_layers = info.layers;
    m_family = info.family;
    m_result = EquivalenceResult();
    m_table->setRowCount(0);
    m_pair->clear();
    m_verdict->clear();
    m_summary->setText(tr("Press Run (F5) to compare the three forms on the current text."));
    m_heat->data()->clear();
    m_plot->clearGraphs();
    m_plot->clearItems();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void EquivalenceView::setZeroEps(bool on) { m_zeroEps->setChecked(on); }
void EquivalenceView::setChunkSize(int c) { m_chunk->setValue(c); }

EquivalenceResult computeEquivalence(AnalysisContext& context, const EquivalenceRequest& request) {
    retnet::EquivalenceOptions options;
    options.chunk_size = request.chunkSize;
    options.tolerance = request.tolerance;
    if (request.zeroEps) options.head_norm_eps = 0.0;
    EquivalenceResult result;
    result.labels = context.labels;
    result.tolerance = request.tolerance;
    result.report = std::make_shared<const retnet::EquivalenceReport>(
        retnet::compare_forms(context.backend, context.tokens, options));
    if (!request.sweepSizes.empty() && !context.cancelled())
        result.sweep = retnet::chunk_size_sweep(context.backend, context.tokens, request.sweepSizes, options);
    return result;
}

void EquivalenceView::compute() {
    m_rerun.stop();
    m_verdict->setText(tr("Computing the three forms…"));
    analyse<EquivalenceResult>(
        0, [r = request()](AnalysisContext& c) { return computeEquivalence(c, r); },
        [this](const EquivalenceResult& result) { setResult(result); });
}

EquivalenceRequest EquivalenceView::request() const {
    EquivalenceRequest r;
    r.chunkSize = m_chunk->value();
    r.zeroEps = m_zeroEps->isChecked();
    r.tolerance = m_tolerance->currentData().toDouble();
    for (int c = 1; c <= 512; c *= 2) r.sweepSizes.push_back(c);
    return r;
}

QString EquivalenceView::badgeText(int pair) const {
    if (!m_result.report || pair < 0 || pair >= int(m_result.report->pairs.size())) return {};
    return m_result.report->pairs[size_t(pair)].passed() ? tr("PASS") : tr("FAIL");
}

void EquivalenceView::setResult(const EquivalenceResult& result) {
    m_result = result;
    const retnet::EquivalenceReport& report = *result.report;
    m_table->setRowCount(int(report.pairs.size()));
    const int keep = std::max(0, m_pair->currentIndex());
    QSignalBlocker block(m_pair);
    m_pair->clear();
    for (size_t i = 0; i < report.pairs.size(); ++i) {
        const retnet::PairReport& p = report.pairs[i];
        const int r = int(i);
        m_table->setItem(r, 0, new QTableWidgetItem(pairName(p)));
        m_table->setItem(r, 1, new QTableWidgetItem(sci(p.max_abs)));
        m_table->setItem(r, 2, new QTableWidgetItem(sci(p.nmse)));
        m_table->setItem(r, 3, new QTableWidgetItem(sci(p.rel)));
        m_table->setItem(r, 4, new QTableWidgetItem(p.first_bad_position < 0
                                                        ? tr("none")
                                                        : QString::number(p.first_bad_position)));
        m_table->setItem(r, 5, new QTableWidgetItem(sci(p.state_max_abs)));
        auto* badge = new QTableWidgetItem(p.passed() ? tr("✔ PASS") : tr("✘ FAIL"));
        badge->setTextAlignment(Qt::AlignCenter);
        badge->setForeground(Qt::white);
        badge->setBackground(p.passed() ? QColor(0, 140, 80) : QColor(190, 30, 45));
        QFont f = badge->font();
        f.setBold(true);
        badge->setFont(f);
        badge->setToolTip(tr("tolerance %1 in logit units (%2 × max|logit|)")
                              .arg(sci(p.tolerance_abs), sci(result.tolerance)));
        m_table->setItem(r, 6, badge);
        m_pair->addItem(pairName(p));
    }
    m_pair->setCurrentIndex(std::min(keep, m_pair->count() - 1));
    QString timings;
    for (const retnet::FormRun& run : report.runs)
        timings += QStringLiteral("%1 %2 ms  ").arg(QString::fromLatin1(retnet::form_name(run.form)))
                       .arg(run.seconds * 1e3, 0, 'f', 1);
    m_summary->setText(tr("%1 tokens, chunk size %2, head-norm eps %3, tolerance %4. %5")
                           .arg(result.labels.size())
                           .arg(report.chunk_size)
                           .arg(report.head_norm_eps, 0, 'g', 3)
                           .arg(sci(result.tolerance))
                           .arg(timings));
    m_verdict->setText(verdict());
    showPair();
}

QString EquivalenceView::verdict() const {
    if (!m_result.report) return {};
    const retnet::EquivalenceReport& report = *m_result.report;
    double worst = 0.0;
    for (const retnet::PairReport& p : report.pairs) worst = std::max(worst, p.rel);
    if (report.passed())
        return tr("PASS: the three forms agree to %1 of the largest logit (tolerance %2).")
            .arg(sci(worst), sci(m_result.tolerance));
    for (const retnet::PairReport& p : report.pairs) {
        if (p.passed()) continue;
        QString s = tr("FAIL: %1 differs from %2 from position %3 on (relative error %4 > tolerance %5)")
                        .arg(QString::fromLatin1(retnet::form_name(p.b)), QString::fromLatin1(retnet::form_name(p.a)))
                        .arg(p.first_bad_position)
                        .arg(sci(p.rel), sci(m_result.tolerance));
        if (report.head_norm_eps != 0.0 && m_family == QLatin1String("torchscale"))
            return s + tr(" because head-norm eps ≠ 0: tick “Head-norm eps = 0” to see them agree.");
        return s + QLatin1Char('.');
    }
    return {};
}

QStringList EquivalenceView::exportInfo() const {
    if (!m_result.report) return {};
    const retnet::EquivalenceReport& report = *m_result.report;
    QStringList info = {QStringLiteral("verdict: %1").arg(verdict()),
                        QStringLiteral("chunk_size: %1").arg(report.chunk_size),
                        QStringLiteral("head_norm_eps: %1").arg(report.head_norm_eps, 0, 'g', 6),
                        QStringLiteral("tolerance: %1").arg(m_result.tolerance, 0, 'g', 6),
                        QStringLiteral("tokens: %1").arg(m_result.labels.size())};
    for (const retnet::PairReport& p : report.pairs)
        info << QStringLiteral("pair_%1_%2: %3 max_abs=%4 nmse=%5 rel=%6")  // ASCII keys: PNG text chunks
                    .arg(QString::fromLatin1(retnet::form_name(p.a)), QString::fromLatin1(retnet::form_name(p.b)),
                         p.passed() ? QStringLiteral("PASS") : QStringLiteral("FAIL"))
                    .arg(p.max_abs, 0, 'g', 6)
                    .arg(p.nmse, 0, 'g', 6)
                    .arg(p.rel, 0, 'g', 6);
    return info;
}

void EquivalenceView::showPair() {
    m_plot->clearItems();
    m_plot->clearGraphs();
    if (!m_result.report || m_pair->currentIndex() < 0) {
        m_plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const retnet::PairReport& p = m_result.report->pairs[size_t(m_pair->currentIndex())];
    drawHeat(p);
    const int T = int(p.heat.dim(0)), cols = int(p.heat.dim(1));
    drawMarkers(p, T, cols);
    drawSweep(T);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

// The heat map on one fixed range, 10⁻¹² … 10², for every run, so a PASS and a FAIL never look
// alike; the colour bar turns from cool to warm at the tolerance, which it names.
void EquivalenceView::drawHeat(const retnet::PairReport& p) {
    const int T = int(p.heat.dim(0)), cols = int(p.heat.dim(1));
    m_heat->data()->setSize(T, cols);
    m_heat->data()->setRange(QCPRange(0, std::max(0, T - 1)), QCPRange(0, std::max(0, cols - 1)));
    for (int t = 0; t < T; ++t)
        for (int c = 0; c < cols; ++c) {
            const double e = double(p.heat.data[size_t(t) * cols + c]);
            m_heat->data()->setCell(t, c, e > 0.0 ? std::clamp(std::log10(e), kLogLow, kLogHigh) : kLogLow);
        }
    const double tol = std::clamp(std::log10(std::max(p.tolerance_abs, 1e-300)), kLogLow, kLogHigh);
    m_scale->setGradient(toleranceGradient((tol - kLogLow) / (kLogHigh - kLogLow)));
    m_heat->setDataRange(QCPRange(kLogLow, kLogHigh));
    QSharedPointer<QCPAxisTickerText> st(new QCPAxisTickerText);
    for (int e = int(kLogLow); e <= int(kLogHigh); e += 3)
        if (std::abs(e - tol) > 1.2) st->addTick(e, QString::number(e));
    st->addTick(tol, tr("tol %1").arg(sci(p.tolerance_abs)));
    m_scale->axis()->setTicker(st);
    QSharedPointer<QCPAxisTickerText> yt(new QCPAxisTickerText);
    for (int c = 0; c + 1 < cols; ++c) yt->addTick(c, tr("L%1").arg(c));
    yt->addTick(cols - 1, tr("logits"));
    m_heatRect->axis(QCPAxis::atLeft)->setTicker(yt);
    m_heatRect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
    m_heatRect->axis(QCPAxis::atLeft)->setRange(-0.5, cols - 0.5);
}

// Chunk boundaries (dashed, labelled once) and the first position over the tolerance.
void EquivalenceView::drawMarkers(const retnet::PairReport& p, int T, int cols) {
    auto verticalLine = [this](double x, const QPen& pen) {
        auto* line = new QCPItemStraightLine(m_plot);
        line->setClipAxisRect(m_heatRect);
        for (QCPItemPosition* pos : {line->point1, line->point2}) {
            pos->setAxes(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
            pos->setAxisRect(m_heatRect);
        }
        line->point1->setCoords(x, 0);
        line->point2->setCoords(x, 1);
        line->setPen(pen);
    };
    auto label = [this](double x, double y, const QString& text, const QColor& colour) {
        auto* item = new QCPItemText(m_plot);
        item->setClipAxisRect(m_heatRect);
        item->position->setAxes(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
        item->position->setAxisRect(m_heatRect);
        item->position->setCoords(x, y);
        item->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
        item->setText(text);
        item->setColor(colour);
        item->setBrush(palette().color(QPalette::Base));  // legible on any cell
        item->setPadding(QMargins(3, 1, 3, 1));
    };
    const int C = m_result.report->chunk_size;
    const QColor boundary(40, 150, 220);
    if (C > 0 && C < T && T / C <= 256) {
        for (int b = C; b < T; b += C) verticalLine(b - 0.5, QPen(boundary, 1, Qt::DashLine));
        label(C - 0.5, -0.5 + 0.35 * cols, tr("chunk boundary"), boundary);
    }
    if (p.first_bad_position >= 0) {
        const QColor bad(220, 40, 40);
        verticalLine(double(p.first_bad_position), QPen(bad, 2));
        label(double(p.first_bad_position), cols - 0.5, tr("first over tolerance: %1").arg(p.first_bad_position), bad);
    }
}

// Error against chunk size, with the chunk size in use and the text length marked.
void EquivalenceView::drawSweep(int T) {
    m_plot->legend->setVisible(!m_result.sweep.empty());
    if (m_result.sweep.empty()) return;
    QCPAxis* x = m_sweepRect->axis(QCPAxis::atBottom);
    QCPAxis* y = m_sweepRect->axis(QCPAxis::atLeft);
    QCPGraph* g = m_plot->addGraph(x, y);
    g->setPen(QPen(seriesColor(0), 2));
    g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 6));
    g->setName(tr("chunkwise vs parallel"));
    QVector<double> xs, ys;
    for (const retnet::ChunkSweepPoint& pt : m_result.sweep) {
        xs << pt.chunk_size;
        ys << std::max(pt.max_abs, 1e-12);
    }
    g->setData(xs, ys);
    const double ymin = *std::min_element(ys.begin(), ys.end()) / 3, ymax = *std::max_element(ys.begin(), ys.end()) * 3;
    x->setRange(xs.front() / 1.5, xs.back() * 1.5);
    y->setRange(ymin, ymax);
    auto marker = [&](double at, const QPen& pen, const QString& name) {
        QCPGraph* line = m_plot->addGraph(x, y);  // a two-point graph, so the legend names it
        line->setData(QVector<double>{at, at}, QVector<double>{ymin, ymax});
        line->setPen(pen);
        line->setName(name);
    };
    marker(m_result.report->chunk_size, QPen(palette().color(QPalette::WindowText), 1, Qt::DotLine),
           tr("C in use (%1)").arg(m_result.report->chunk_size));
    if (T > 0) marker(T, QPen(QColor(150, 150, 150), 1, Qt::DashDotLine), tr("text length T = %1").arg(T));
}

void EquivalenceView::updateTheme() {
    applyPlotTheme(m_plot);
    showPair();
}

QString EquivalenceView::csv() const {
    if (!m_result.report) return {};
    const retnet::EquivalenceReport& report = *m_result.report;
    QString out = QStringLiteral("section,pair,position,layer,max_abs\n");
    for (const retnet::PairReport& p : report.pairs) {
        const QString name = pairName(p);
        out += QStringLiteral("summary,%1,,,%2\n").arg(name).arg(p.max_abs, 0, 'g', 8);
        const int T = int(p.heat.dim(0)), cols = int(p.heat.dim(1));
        for (int t = 0; t < T; ++t)
            for (int c = 0; c < cols; ++c)
                out += QStringLiteral("heat,%1,%2,%3,%4\n")
                           .arg(name)
                           .arg(t)
                           .arg(c + 1 == cols ? QStringLiteral("logits") : QString::number(c))
                           .arg(double(p.heat.data[size_t(t) * cols + c]), 0, 'g', 8);
    }
    for (const retnet::ChunkSweepPoint& pt : m_result.sweep)
        out += QStringLiteral("sweep,parallel – chunkwise,%1,,%2\n").arg(pt.chunk_size).arg(pt.max_abs, 0, 'g', 8);
    return out;
}

}  // namespace retnet::ui
