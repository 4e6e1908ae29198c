// SPDX-License-Identifier: GPL-3.0-or-later
#include "plot_utils.h"

#include <QApplication>
#include <QFile>
#include <QFileInfo>
#include <QPalette>
#include <QSaveFile>
#include <QTextStream>

#include <initializer_list>
#include <utility>

namespace retnet::ui {

bool isDarkPalette() {
    return QApplication::palette().color(QPalette::Window).lightness() < 128;
}

namespace {

void styleAxis(QCPAxis* axis, const QColor& fg) {
    axis->setBasePen(QPen(fg));
    axis->setTickPen(QPen(fg));
    axis->setSubTickPen(QPen(fg));
    axis->setTickLabelColor(fg);
    axis->setLabelColor(fg);
}

// A 256-level gradient through the given (position, colour) stops.
QCPColorGradient gradientThrough(std::initializer_list<std::pair<double, QColor>> stops) {
    QCPColorGradient g;
    g.clearColorStops();
    for (const auto& [position, colour] : stops) g.setColorStopAt(position, colour);
    g.setLevelCount(256);
    return g;
}

}  // namespace

void applyAxisTheme(QCPAxisRect* rect) {
    const QPalette pal = QApplication::palette();
    const QColor fg = pal.color(QPalette::WindowText);
    QColor grid = fg;
    grid.setAlpha(40);
    for (QCPAxis* axis : rect->axes()) {
        styleAxis(axis, fg);
        axis->grid()->setPen(QPen(grid, 1, Qt::DotLine));
        axis->grid()->setZeroLinePen(QPen(grid));
    }
}

void applyPlotTheme(QCustomPlot* plot) {
    const QPalette pal = QApplication::palette();
    plot->setBackground(pal.color(QPalette::Base));
    for (QCPAxisRect* rect : plot->axisRects()) applyAxisTheme(rect);
    if (plot->legend) {
        plot->legend->setBrush(pal.color(QPalette::Base));
        plot->legend->setTextColor(pal.color(QPalette::WindowText));
        plot->legend->setBorderPen(QPen(pal.color(QPalette::Mid)));
    }
    for (int i = 0; i < plot->plotLayout()->elementCount(); ++i) {
        if (auto* title = qobject_cast<QCPTextElement*>(plot->plotLayout()->elementAt(i)))
            title->setTextColor(pal.color(QPalette::WindowText));
        if (auto* scale = qobject_cast<QCPColorScale*>(plot->plotLayout()->elementAt(i)))
            styleAxis(scale->axis(), pal.color(QPalette::WindowText));
    }
}

QCPColorGradient divergingGradient() {
    // ColorBrewer RdBu (reversed: negative blue, positive red), white at zero.
    return gradientThrough({{0.0, QColor(5, 48, 97)},
                            {0.15, QColor(33, 102, 172)},
                            {0.3, QColor(67, 147, 195)},
                            {0.42, QColor(209, 229, 240)},
                            {0.5, QColor(247, 247, 247)},
                            {0.58, QColor(253, 219, 199)},
                            {0.7, QColor(214, 96, 77)},
                            {0.85, QColor(178, 24, 43)},
                            {1.0, QColor(103, 0, 31)}});
}

QCPColorGradient sequentialGradient() {
    return gradientThrough({{0.0, QColor(68, 1, 84)},
                            {0.25, QColor(59, 82, 139)},
                            {0.5, QColor(33, 145, 140)},
                            {0.75, QColor(94, 201, 98)},
                            {1.0, QColor(253, 231, 37)}});
}

QCPColorGradient errorGradient() {
    return gradientThrough({{0.0, QColor(0, 0, 4)},
                            {0.25, QColor(87, 16, 110)},
                            {0.5, QColor(188, 55, 84)},
                            {0.75, QColor(249, 142, 9)},
                            {1.0, QColor(252, 255, 164)}});
}

QColor seriesColor(int index) {
    static const QColor okabeIto[] = {QColor(0, 114, 178),   QColor(230, 159, 0),
                                      QColor(0, 158, 115),   QColor(204, 121, 167),
                                      QColor(86, 180, 233),  QColor(213, 94, 0),
                                      QColor(240, 228, 66),  QColor(120, 120, 120)};
    const int n = int(sizeof(okabeIto) / sizeof(okabeIto[0]));
    QColor c = okabeIto[index % n];
    if (index >= n) c = c.darker(100 + 30 * (index / n));
    return c;
}

QString axisLabel(const QString& token) {
    QString s = token;
    s.replace(QLatin1Char('\n'), QStringLiteral("\\n"));
    return s.size() > 12 ? s.left(11) + QChar(0x2026) : s;
}

QString csvField(QString text) {
    text.replace(QLatin1Char('"'), QLatin1String("\"\""));
    return QLatin1Char('"') + text + QLatin1Char('"');
}

bool savePlot(QCustomPlot* plot, const QString& path, QString* error) {
    const QString suffix = QFileInfo(path).suffix().toLower();
    bool ok = false;
    if (suffix == QLatin1String("pdf"))
        ok = plot->savePdf(path, plot->width(), plot->height());
    else if (suffix == QLatin1String("png"))
        ok = plot->savePng(path, plot->width(), plot->height(), 2.0);
    else {
        if (error) *error = QStringLiteral("%1: unknown image type (use .png or .pdf)").arg(path);
        return false;
    }
    if (!ok && error) *error = QStringLiteral("%1: could not be written").arg(path);
    return ok;
}

bool saveCsv(const QString& path, const QString& metadata, const QString& csv, QString* error) {
    QSaveFile file(path);
    if (!file.open(QIODevice::WriteOnly | QIODevice::Text)) {
        if (error) *error = QStringLiteral("%1: %2").arg(path, file.errorString());
        return false;
    }
    QTextStream out(&file);
    for (const QString& line : metadata.split(QLatin1Char('\n'), Qt::SkipEmptyParts))
        out << "# " << line << '\n';
    out << csv;
    out.flush();
    if (!file.commit()) {
        if (error) *error = QStringLiteral("%1: %2").arg(path, file.errorString());
        return false;
    }
    return true;
}

}  // namespace retnet::ui
