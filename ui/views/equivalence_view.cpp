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

}  // namespace

EquivalenceView::EquivalenceView(QWidget* parent) : ViewBase(parent) {
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
    m_run = new QPushButton(tr("Run all three forms"));
    m_run->setToolTip(tr("Run parallel, recurrent and chunkwise on the current text (F5)"));
    connect(m_run, &QPushButton::clicked, this, &EquivalenceView::runRequested);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Chunk size")));
    controls->addWidget(m_chunk);
    controls->addWidget(m_zeroEps);
    controls->addWidget(new QLabel(tr("Tolerance")));
    controls->addWidget(m_tolerance);
    controls->addStretch();
    controls->addWidget(m_run);

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
    m_table->setMaximumHeight(130);
    m_pair = new QComboBox;
    m_pair->setToolTip(tr("Pair shown in the heat map"));
    connect(m_pair, &QComboBox::currentIndexChanged, this, &EquivalenceView::showPair);
    connect(m_table, &QTableWidget::cellClicked, this, [this](int row, int) { m_pair->setCurrentIndex(row); });
    m_summary = new QLabel(tr("Press “Run all three forms” to compare them on the current text."));
    m_summary->setWordWrap(true);

    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(320);
    m_plot->plotLayout()->clear();
    m_heatRect = new QCPAxisRect(m_plot);
    m_sweepRect = new QCPAxisRect(m_plot);
    m_plot->plotLayout()->addElement(0, 0, m_heatRect);
    auto* scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, scale);
    m_plot->plotLayout()->addElement(1, 0, m_sweepRect);
    m_plot->plotLayout()->setRowStretchFactor(0, 3);
    m_plot->plotLayout()->setRowStretchFactor(1, 2);
    m_heatRect->axis(QCPAxis::atBottom)->setLabel(tr("position"));
    m_heatRect->axis(QCPAxis::atLeft)->setLabel(tr("layer output"));
    m_heat = new QCPColorMap(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
    m_heat->setGradient(errorGradient());
    m_heat->setInterpolate(false);
    m_heat->setColorScale(scale);
    scale->setGradient(errorGradient());  // the scale owns the gradient once linked
    scale->setLabel(tr("log₁₀ max |Δ|"));
    m_sweepRect->axis(QCPAxis::atBottom)->setLabel(tr("chunk size C"));
    m_sweepRect->axis(QCPAxis::atLeft)->setLabel(tr("max |Δ logits|, chunkwise vs parallel"));
    m_sweepRect->axis(QCPAxis::atBottom)->setScaleType(QCPAxis::stLogarithmic);
    QSharedPointer<QCPAxisTickerLog> xlog(new QCPAxisTickerLog);
    xlog->setLogBase(2);
    m_sweepRect->axis(QCPAxis::atBottom)->setTicker(xlog);
    m_sweepRect->axis(QCPAxis::atLeft)->setScaleType(QCPAxis::stLogarithmic);
    m_sweepRect->axis(QCPAxis::atLeft)->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    m_sweepRect->axis(QCPAxis::atLeft)->setNumberFormat(QStringLiteral("eb"));
    m_sweepRect->axis(QCPAxis::atLeft)->setNumberPrecision(0);

    auto* pairRow = new QHBoxLayout;
    pairRow->addWidget(new QLabel(tr("Heat map of")));
    pairRow->addWidget(m_pair);
    pairRow->addWidget(m_summary, 1);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(controls);
    layout->addWidget(m_table);
    layout->addLayout(pairRow);
    layout->addWidget(m_plot, 1);
    updateTheme();
}

void EquivalenceView::setModelInfo(const ModelInfo& info) {
    m_chunk->setValue(info.chunkSize);
    m_layers = info.layers;
    m_result = EquivalenceResult();
    m_table->setRowCount(0);
    m_pair->clear();
    m_heat->data()->clear();
    m_plot->clearGraphs();
    m_plot->clearItems();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void EquivalenceView::setZeroEps(bool on) { m_zeroEps->setChecked(on); }
void EquivalenceView::setChunkSize(int c) { m_chunk->setValue(c); }

EquivalenceRequest EquivalenceView::request(const QString& text) const {
    EquivalenceRequest r;
    r.text = text;
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
    m_summary->setText(tr("%1 tokens, chunk size %2, head-norm eps %3. %4")
                           .arg(result.labels.size())
                           .arg(report.chunk_size)
                           .arg(report.head_norm_eps, 0, 'g', 3)
                           .arg(timings));
    showPair();
}

void EquivalenceView::showPair() {
    m_plot->clearItems();
    m_plot->clearGraphs();
    if (!m_result.report || m_pair->currentIndex() < 0) {
        m_plot->replot(QCustomPlot::rpQueuedReplot);
        return;
    }
    const retnet::EquivalenceReport& report = *m_result.report;
    const retnet::PairReport& p = report.pairs[size_t(m_pair->currentIndex())];
    const int T = int(p.heat.dim(0)), cols = int(p.heat.dim(1));
    m_heat->data()->setSize(T, cols);
    m_heat->data()->setRange(QCPRange(0, std::max(0, T - 1)), QCPRange(0, std::max(0, cols - 1)));
    // Exact agreement (0) has no logarithm: it is drawn with the colour of the smallest error.
    double lo = 0.0, hi = -12.0;
    bool any = false;
    for (float e : p.heat.data)
        if (e > 0.0f) {
            const double v = std::log10(double(e));
            lo = any ? std::min(lo, v) : v;
            hi = std::max(hi, v);
            any = true;
        }
    if (!any) lo = hi = -12.0;
    if (hi - lo < 1.0) lo = hi - 1.0;
    for (int t = 0; t < T; ++t)
        for (int c = 0; c < cols; ++c) {
            const double e = double(p.heat.data[size_t(t) * cols + c]);
            m_heat->data()->setCell(t, c, e > 0.0 ? std::log10(e) : lo);
        }
    m_heat->setDataRange(QCPRange(lo, hi));
    QSharedPointer<QCPAxisTickerText> yt(new QCPAxisTickerText);
    for (int c = 0; c + 1 < cols; ++c) yt->addTick(c, tr("L%1").arg(c));
    yt->addTick(cols - 1, tr("logits"));
    m_heatRect->axis(QCPAxis::atLeft)->setTicker(yt);
    m_heatRect->axis(QCPAxis::atBottom)->setRange(-0.5, T - 0.5);
    m_heatRect->axis(QCPAxis::atLeft)->setRange(-0.5, cols - 0.5);

    const QColor fg = palette().color(QPalette::WindowText);
    const int C = report.chunk_size;
    if (C > 0 && C < T && T / C <= 256) {
        for (int b = C; b < T; b += C) {
            auto* line = new QCPItemStraightLine(m_plot);
            line->setClipAxisRect(m_heatRect);
            for (QCPItemPosition* pos : {line->point1, line->point2}) {
                pos->setAxes(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
                pos->setAxisRect(m_heatRect);
            }
            line->point1->setCoords(b - 0.5, 0);
            line->point2->setCoords(b - 0.5, 1);
            line->setPen(QPen(QColor(80, 200, 255), 1, Qt::DashLine));
        }
    }
    if (p.first_bad_position >= 0) {
        auto* line = new QCPItemStraightLine(m_plot);
        line->setClipAxisRect(m_heatRect);
        for (QCPItemPosition* pos : {line->point1, line->point2}) {
            pos->setAxes(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
            pos->setAxisRect(m_heatRect);
        }
        line->point1->setCoords(double(p.first_bad_position), 0);
        line->point2->setCoords(double(p.first_bad_position), 1);
        line->setPen(QPen(QColor(255, 60, 60), 2));
        auto* label = new QCPItemText(m_plot);
        label->setClipAxisRect(m_heatRect);
        label->position->setAxes(m_heatRect->axis(QCPAxis::atBottom), m_heatRect->axis(QCPAxis::atLeft));
        label->position->setAxisRect(m_heatRect);
        label->position->setCoords(double(p.first_bad_position), cols - 0.5);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
        label->setText(tr(" first over tolerance: %1").arg(p.first_bad_position));
        label->setColor(QColor(255, 90, 90));
    }

    // Error against chunk size.
    if (!m_result.sweep.empty()) {
        QCPGraph* g = m_plot->addGraph(m_sweepRect->axis(QCPAxis::atBottom), m_sweepRect->axis(QCPAxis::atLeft));
        g->setPen(QPen(seriesColor(0), 2));
        g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 6));
        g->setName(tr("max |Δ|"));
        QVector<double> xs, ys;
        double ymin = 1e300, ymax = 0;
        for (const retnet::ChunkSweepPoint& pt : m_result.sweep) {
            xs << pt.chunk_size;
            ys << std::max(pt.max_abs, 1e-12);
            ymin = std::min(ymin, ys.back());
            ymax = std::max(ymax, ys.back());
        }
        g->setData(xs, ys);
        m_sweepRect->axis(QCPAxis::atBottom)->setRange(xs.front() / 1.5, xs.back() * 1.5);
        m_sweepRect->axis(QCPAxis::atLeft)->setRange(ymin / 3, ymax * 3);
        auto* current = new QCPItemStraightLine(m_plot);
        current->setClipAxisRect(m_sweepRect);
        for (QCPItemPosition* pos : {current->point1, current->point2}) {
            pos->setAxes(m_sweepRect->axis(QCPAxis::atBottom), m_sweepRect->axis(QCPAxis::atLeft));
            pos->setAxisRect(m_sweepRect);
        }
        current->point1->setCoords(C, ymin / 3);
        current->point2->setCoords(C, ymax * 3);
        current->setPen(QPen(fg, 1, Qt::DotLine));
        if (T > 0) {
            auto* tline = new QCPItemStraightLine(m_plot);
            tline->setClipAxisRect(m_sweepRect);
            for (QCPItemPosition* pos : {tline->point1, tline->point2}) {
                pos->setAxes(m_sweepRect->axis(QCPAxis::atBottom), m_sweepRect->axis(QCPAxis::atLeft));
                pos->setAxisRect(m_sweepRect);
            }
            tline->point1->setCoords(T, ymin / 3);
            tline->point2->setCoords(T, ymax * 3);
            tline->setPen(QPen(QColor(150, 150, 150), 1, Qt::DashDotLine));
        }
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
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
