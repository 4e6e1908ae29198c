// SPDX-License-Identifier: GPL-3.0-or-later
#include "cost_plot.h"

#include <QApplication>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include <qcustomplot.h>

#include "plot_utils.h"

namespace retnet::ui {

namespace {

const char* const kModels[] = {"RetNet", "Transformer"};

// Okabe–Ito blue and vermillion: told apart in every common kind of colour blindness.
QColor modelColor(int model) { return model == 0 ? QColor(0, 114, 178) : QColor(213, 94, 0); }

// "512", "4k", "32k": lengths and batch sizes as axis ticks.
QString countLabel(int n) {
    if (n >= 1024 && n % 1024 == 0) return QStringLiteral("%1k").arg(n / 1024);
    return QString::number(n);
}

// Tick labels in bytes ("64 MiB") on either kind of axis.
template <typename Base>
class BytesTicker : public Base {
protected:
    QString getTickLabel(double tick, const QLocale&, QChar, int) override {
        return QLocale::c().formattedDataSize(qint64(tick + 0.5), 0, QLocale::DataSizeIecFormat);
    }
};

// On a linear axis, steps of a power of two bytes (4 MiB, not 5 000 000 bytes shown as "5 MiB").
class LinearBytesTicker : public BytesTicker<QCPAxisTicker> {
protected:
    double getTickStep(const QCPRange& range) override {
        return std::exp2(std::ceil(std::log2(std::max(range.size() / double(tickCount()), 1.0))));
    }
};

// What one panel plots: a point's key and value, and which points belong in it.
struct Panel {
    QString title, keyLabel, valueLabel;
    bool bytes = false;  // the values are sizes in bytes
    std::function<bool(const CostPoint&)> shows;
    std::function<double(const CostPoint&)> key, value;
};

std::vector<Panel> panels(int batch, int length) {
    auto atBatch = [batch](const CostPoint& p) { return p.batch == batch; };
    auto byLength = [](const CostPoint& p) { return double(p.length); };
    const QString lengthLabel = QStringLiteral("context length (tokens)");
    // Nothing measured yet: the panels without the batch and length they do not have.
    const QString atB = batch > 0 ? QStringLiteral(" (batch %1)").arg(batch) : QString();
    const QString atT = length > 0 ? QStringLiteral(" (%1 tokens)").arg(length) : QString();
    return {
        {QStringLiteral("Memory: state vs KV cache") + atB, lengthLabel,
         QStringLiteral("held by the batch (computed)"), true, atBatch, byLength,
         [](const CostPoint& p) { return double(p.state_bytes); }},
        {QStringLiteral("Throughput") + atB, lengthLabel, QStringLiteral("tokens / s"), false, atBatch,
         byLength, [](const CostPoint& p) { return p.tokens_per_s; }},
        {QStringLiteral("Latency per step") + atB, lengthLabel, QStringLiteral("ms / step"), false, atBatch,
         byLength, [](const CostPoint& p) { return p.ms_per_step; }},
        {QStringLiteral("Latency per step vs batch") + atT, QStringLiteral("batch size"),
         QStringLiteral("ms / step"), false, [length](const CostPoint& p) { return p.length == length; },
         [](const CostPoint& p) { return double(p.batch); }, [](const CostPoint& p) { return p.ms_per_step; }},
    };
}

// Measured keys as ticks; a logarithmic axis once they span a factor of 4 (1k … 32k), where a
// linear one would crowd the short lengths into a corner.
void setupKeyAxis(QCPAxis* axis, const std::set<double>& keys) {
    auto ticker = QSharedPointer<QCPAxisTickerText>::create();
    for (double k : keys) ticker->addTick(k, countLabel(int(k)));
    axis->setTicker(ticker);
    const double lo = keys.empty() ? 1.0 : *keys.begin(), hi = keys.empty() ? 2.0 : *keys.rbegin();
    if (hi >= 4.0 * lo) {
        axis->setScaleType(QCPAxis::stLogarithmic);
        axis->setRange(lo / 1.3, hi * 1.3);
    } else {
        axis->setScaleType(QCPAxis::stLinear);
        const double pad = hi > lo ? 0.08 * (hi - lo) : std::max(1.0, 0.1 * lo);
        axis->setRange(lo - pad, hi + pad);
    }
}

// The value axis over the measured values, with room above them for the out-of-memory row;
// logarithmic when they span more than a factor of 20. Returns where the crosses go.
double setupValueAxis(QCPAxis* axis, const std::vector<double>& values, bool bytes) {
    double lo = 0, hi = 0;
    for (double v : values)
        if (v > 0) lo = lo > 0 ? std::min(lo, v) : v, hi = std::max(hi, v);
    if (hi <= 0) lo = 1.0, hi = 10.0;
    if (hi > 20.0 * lo) {
        axis->setScaleType(QCPAxis::stLogarithmic);
        auto ticker = bytes ? QSharedPointer<QCPAxisTickerLog>(new BytesTicker<QCPAxisTickerLog>)
                            : QSharedPointer<QCPAxisTickerLog>::create();
        if (bytes) ticker->setLogBase(4.0);  // 64 MiB, 256 MiB, 1 GiB rather than 954 MiB
        axis->setTicker(ticker);
        axis->setNumberFormat(QStringLiteral("eb"));  // 10³ rather than 1e+03
        axis->setNumberPrecision(0);
        axis->setRange(lo / 2.0, hi * 6.0);
        return hi * 3.0;
    }
    axis->setScaleType(QCPAxis::stLinear);
    axis->setTicker(bytes ? QSharedPointer<QCPAxisTicker>(new LinearBytesTicker)
                          : QSharedPointer<QCPAxisTicker>::create());
    axis->setNumberFormat(QStringLiteral("gb"));
    axis->setNumberPrecision(6);
    axis->setRange(0.0, hi * 1.25);
    return hi * 1.15;
}

QCPGraph* addSeries(QCustomPlot* plot, QCPAxisRect* rect, const QString& name, const QColor& color) {
    QCPGraph* g = plot->addGraph(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
    g->setName(name);
    g->setPen(QPen(color, 2));
    g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, color, color, 6));
    g->removeFromLegend();
    return g;
}

// One model's out-of-memory points: crosses on a row near the top, labelled beside them where the
// panel has room: left of the first cross, else right of the last (the first at the panel's left
// edge would cut the label there), else under the row from the first.
void addOutOfMemory(QCustomPlot* plot, QCPAxisRect* rect, int model, const QVector<double>& keys, double row,
                    const std::set<double>& panelKeys) {
    if (keys.isEmpty()) return;  // (and panelKeys holds them)
    const double firstKey = *panelKeys.begin(), lastKey = *panelKeys.rbegin();
    const QColor color = modelColor(model);
    QCPGraph* g = addSeries(plot, rect, QStringLiteral("%1: out of memory").arg(QLatin1String(kModels[model])), color);
    g->setLineStyle(QCPGraph::lsNone);
    g->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCross, QPen(color, 2.5), Qt::NoBrush, 11));
    g->setData(keys, QVector<double>(keys.size(), row), true);
    auto* label = new QCPItemText(plot);
    label->setClipAxisRect(rect);
    label->position->setAxes(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
    if (keys.front() > firstKey) {
        label->position->setCoords(keys.front(), row);
        label->setPositionAlignment(Qt::AlignRight | Qt::AlignVCenter);
        label->setPadding(QMargins(0, 0, 10, 0));
    } else if (keys.back() < lastKey) {
        label->position->setCoords(keys.back(), row);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignVCenter);
        label->setPadding(QMargins(10, 0, 0, 0));
    } else {
        label->position->setCoords(keys.front(), row);
        label->setPositionAlignment(Qt::AlignLeft | Qt::AlignTop);
        label->setPadding(QMargins(0, 10, 0, 0));
    }
    label->setText(QStringLiteral("%1: out of memory").arg(QLatin1String(kModels[model])));
    label->setColor(color);
}

void drawPanel(QCustomPlot* plot, QCPAxisRect* rect, const Panel& panel, const CostReport& report) {
    QVector<double> keys[2], values[2], oom[2];
    std::set<double> allKeys;
    std::vector<double> measured;
    for (const CostPoint& p : report.points) {
        if (!panel.shows(p)) continue;
        const int m = p.model == kModels[0] ? 0 : 1;
        allKeys.insert(panel.key(p));
        if (p.out_of_memory) {
            oom[m] << panel.key(p);
            continue;
        }
        keys[m] << panel.key(p);
        values[m] << panel.value(p);
        measured.push_back(panel.value(p));
    }
    QCPAxis* x = rect->axis(QCPAxis::atBottom);
    QCPAxis* y = rect->axis(QCPAxis::atLeft);
    x->setLabel(panel.keyLabel);
    y->setLabel(panel.valueLabel);
    setupKeyAxis(x, allKeys);
    const double row = setupValueAxis(y, measured, panel.bytes);
    for (int m = 0; m < 2; ++m) {
        QCPGraph* g = addSeries(plot, rect, QLatin1String(kModels[m]), modelColor(m));
        g->setData(keys[m], values[m], true);
        addOutOfMemory(plot, rect, m, oom[m], row, allKeys);
    }
}

// A panel: its title above its axis rect.
QCPAxisRect* addPanel(QCustomPlot* plot, QCPLayoutGrid* grid, int index, const QString& title) {
    auto* cell = new QCPLayoutGrid;
    grid->addElement(index / 2, index % 2, cell);
    QFont font = QApplication::font();
    font.setBold(true);
    cell->addElement(0, 0, new QCPTextElement(plot, title, font));
    auto* rect = new QCPAxisRect(plot);
    rect->setObjectName(QStringLiteral("costPanel%1").arg(index));
    cell->addElement(1, 0, rect);
    cell->setRowStretchFactor(0, 0.01);
    cell->setRowSpacing(0);
    applyAxisTheme(rect);
    return rect;
}

void addLegend(QCustomPlot* plot, QCPAxisRect* rect) {
    auto* legend = new QCPLegend;
    // Top left: where the memory panel stays empty (the KV cache grows towards the top right).
    rect->insetLayout()->addElement(legend, Qt::AlignTop | Qt::AlignLeft);
    legend->setLayer(QStringLiteral("legend"));
    const QPalette pal = QApplication::palette();
    legend->setBrush(pal.color(QPalette::Base));
    legend->setTextColor(pal.color(QPalette::WindowText));
    legend->setBorderPen(QPen(pal.color(QPalette::Mid)));
    for (int i = 0; i < plot->graphCount(); ++i)
        if (plot->graph(i)->keyAxis()->axisRect() == rect) plot->graph(i)->addToLegend(legend);
}

}  // namespace

int costPlotBatch(const CostReport& report, int wanted) {
    int smallest = 0;
    for (const CostPoint& p : report.points) {
        if (p.batch == wanted) return wanted;
        if (smallest == 0 || p.batch < smallest) smallest = p.batch;
    }
    return smallest;
}

int costPlotLength(const CostReport& report, int wanted) {
    int longest = 0;
    for (const CostPoint& p : report.points) {
        if (p.length == wanted) return wanted;
        longest = std::max(longest, p.length);
    }
    return longest;
}

void drawCostPlot(QCustomPlot* plot, const CostReport& report, int batch, int length) {
    plot->clearGraphs();  // before the axis rects they refer to
    plot->clearItems();
    plot->plotLayout()->clear();
    plot->setBackground(QApplication::palette().color(QPalette::Base));
    auto* grid = new QCPLayoutGrid;
    plot->plotLayout()->addElement(0, 0, grid);
    const std::vector<Panel> all = panels(costPlotBatch(report, batch), costPlotLength(report, length));
    for (size_t i = 0; i < all.size(); ++i) {
        QCPAxisRect* rect = addPanel(plot, grid, int(i), all[i].title);
        drawPanel(plot, rect, all[i], report);
        if (i == 0) addLegend(plot, rect);
    }
    plot->replot(QCustomPlot::rpQueuedReplot);
}

QCPAxisRect* costPanel(const QCustomPlot* plot, int index) {
    for (QCPAxisRect* rect : plot->axisRects())
        if (rect->objectName() == QStringLiteral("costPanel%1").arg(index)) return rect;
    return nullptr;
}

bool save_cost_plot_png(const CostReport& report, const QString& path, QString* error, int width, int height) {
    if (report.points.empty()) {
        if (error) *error = QStringLiteral("%1: nothing to plot (the report has no points)").arg(path);
        return false;
    }
    QCustomPlot plot;
    plot.resize(width, height);
    drawCostPlot(&plot, report, 0, 0);
    QStringList caption = {
        QStringLiteral("Inference cost: RetNet and its Transformer twin"),
        QStringLiteral("device: %1").arg(QString::fromStdString(report.device)),
        QStringLiteral("weights: %1").arg(report.weights.empty() ? QStringLiteral("not recorded")
                                                                 : QString::fromStdString(report.weights)),
        QStringLiteral("RetNet parameters: %1").arg(report.retnet_parameters),
        QStringLiteral("Transformer parameters: %1").arg(report.transformer_parameters),
    };
    if (report.cancelled) caption << QStringLiteral("cancelled: the points measured before it");
    return saveImage(&plot, caption, path, error);
}

}  // namespace retnet::ui
