// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/decay_view.h"

#include <QCheckBox>
#include <QHeaderView>
#include <QLabel>
#include <QTableWidget>
#include <QVBoxLayout>

#include <cmath>
#include <limits>

#include <qcustomplot.h>

#include "plot_utils.h"

namespace retnet::ui {

DecayStats decayStats(float logGamma, double epsilon) {
    DecayStats s;
    const double lg = double(logGamma);
    s.gamma = std::exp(lg);
    if (lg >= 0.0) {
        s.halfLife = s.span = std::numeric_limits<double>::infinity();
    } else {
        s.halfLife = std::log(0.5) / lg;
        s.span = std::log(epsilon) / lg;
    }
    return s;
}

DecayView::DecayView(QWidget* parent) : ViewBase(parent) {
    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(260);
    m_plot->xAxis->setLabel(tr("distance n = t − m (tokens)"));
    m_plot->yAxis->setLabel(tr("decay γₕⁿ"));
    m_plot->legend->setVisible(true);
    m_plot->legend->setFont(QFont(font().family(), 8));
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_logScale = new QCheckBox(tr("Logarithmic y axis"));
    m_logScale->setToolTip(tr("On a log scale γⁿ = exp(n·ln γ) is a straight line of slope ln γ."));
    connect(m_logScale, &QCheckBox::toggled, this, &DecayView::rebuild);
    m_table = new QTableWidget(0, 4);
    m_table->setHorizontalHeaderLabels({tr("head"), tr("γ"), tr("half-life (tokens)"),
                                        tr("effective span, γⁿ < 1% (tokens)")});
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addWidget(m_plot, 3);
    layout->addWidget(m_logScale);
    layout->addWidget(m_table, 2);
    updateTheme();
}

void DecayView::setDecay(const std::vector<float>& logDecay) {
    m_logDecay = logDecay;
    rebuild();
}

void DecayView::setTextLength(int64_t tokens) {
    if (tokens == m_length) return;
    m_length = tokens;
    rebuild();
}

int64_t DecayView::horizon() const {
    // Show the text and the slowest finite decay's half-life, bounded so curves stay readable.
    double longest = 0.0;
    for (float lg : m_logDecay) {
        const DecayStats s = decayStats(lg, m_epsilon);
        if (std::isfinite(s.halfLife)) longest = std::max(longest, 2.0 * s.halfLife);
    }
    return std::max<int64_t>({m_length + m_length / 10, int64_t(std::min(longest, 8192.0)), 32});
}

void DecayView::updateTheme() {
    applyPlotTheme(m_plot);
    rebuild();
}

void DecayView::rebuild() {
    m_plot->clearGraphs();
    m_plot->clearItems();
    const int64_t N = horizon();
    const int points = 400;
    m_table->setRowCount(int(m_logDecay.size()));
    for (size_t h = 0; h < m_logDecay.size(); ++h) {
        const double lg = double(m_logDecay[h]);
        QVector<double> xs, ys;
        for (int i = 0; i <= points; ++i) {
            const double n = double(N) * i / points;
            xs << n;
            ys << std::max(std::exp(n * lg), 1e-12);
        }
        QCPGraph* g = m_plot->addGraph();
        g->setData(xs, ys, true);
        g->setPen(QPen(seriesColor(int(h)), 2));
        g->setName(tr("head %1").arg(h));
        const DecayStats s = decayStats(m_logDecay[h], m_epsilon);
        if (std::isfinite(s.halfLife) && s.halfLife <= double(N)) {
            auto* marker = new QCPItemTracer(m_plot);
            marker->setGraph(g);
            marker->setGraphKey(s.halfLife);
            marker->setStyle(QCPItemTracer::tsCircle);
            marker->setSize(7);
            marker->setPen(QPen(seriesColor(int(h))));
            marker->setBrush(seriesColor(int(h)));
        }
        auto fmt = [](double v) {
            return std::isfinite(v) ? QString::number(v, 'f', 1) : QStringLiteral("∞ (γ = 1)");
        };
        m_table->setItem(int(h), 0, new QTableWidgetItem(QString::number(h)));
        m_table->setItem(int(h), 1, new QTableWidgetItem(QString::number(s.gamma, 'g', 10)));
        m_table->setItem(int(h), 2, new QTableWidgetItem(fmt(s.halfLife)));
        auto* span = new QTableWidgetItem(fmt(s.span));
        if (m_length > 0 && std::isfinite(s.span) && s.span < double(m_length))
            span->setToolTip(tr("Shorter than the text (%1 tokens): this head hardly sees its "
                                "beginning.").arg(m_length));
        m_table->setItem(int(h), 3, span);
    }
    if (m_length > 0) {
        auto* line = new QCPItemStraightLine(m_plot);
        line->point1->setCoords(double(m_length), 0);
        line->point2->setCoords(double(m_length), 1);
        QPen pen(palette().color(QPalette::WindowText), 1, Qt::DashLine);
        line->setPen(pen);
        auto* label = new QCPItemText(m_plot);
        label->position->setType(QCPItemPosition::ptPlotCoords);
        label->position->setCoords(double(m_length), m_logScale->isChecked() ? 1e-3 : 0.95);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);  // right of the line: never clipped by the axis
        label->setText(tr("text length %1").arg(m_length));
        label->setColor(palette().color(QPalette::WindowText));
        label->setBrush(palette().color(QPalette::Base));  // readable where it crosses the curves
        label->setPadding(QMargins(3, 1, 3, 1));
    }
    if (m_logScale->isChecked()) {
        m_plot->yAxis->setScaleType(QCPAxis::stLogarithmic);
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
        m_plot->yAxis->setRange(1e-4, 1.05);
    } else {
        m_plot->yAxis->setScaleType(QCPAxis::stLinear);
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_plot->yAxis->setRange(0, 1.02);
    }
    m_plot->xAxis->setRange(0, double(N));
    m_plot->xAxis->ticker()->setTickCount(6);  // long horizons: labels must not run together
    m_plot->legend->setVisible(m_logDecay.size() <= 16);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QString DecayView::csv() const {
    QString out = QStringLiteral("n");
    for (size_t h = 0; h < m_logDecay.size(); ++h) out += QStringLiteral(",head%1").arg(h);
    out += QLatin1Char('\n');
    const int64_t N = horizon();
    const int64_t step = std::max<int64_t>(1, N / 1000);
    for (int64_t n = 0; n <= N; n += step) {
        out += QString::number(n);
        for (float lg : m_logDecay) out += QLatin1Char(',') + QString::number(std::exp(double(n) * lg), 'g', 10);
        out += QLatin1Char('\n');
    }
    return out;
}

}  // namespace retnet::ui
