// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Shared plotting conventions: one colour meaning per kind of quantity (diverging for signed
// scores, sequential for norms, log-sequential for errors), theme colours taken from the
// application palette, and the image/data exports every view offers.
#include <QColor>
#include <QString>

#include <qcustomplot.h>

namespace retnet::ui {

bool isDarkPalette();
void applyPlotTheme(QCustomPlot* plot);
void applyAxisTheme(QCPAxisRect* rect);

QCPColorGradient divergingGradient();   // signed: blue – white – red (RdBu, colour-blind safe)
QCPColorGradient sequentialGradient();  // norms, probabilities (viridis)
QCPColorGradient errorGradient();       // errors on a log scale (inferno-like)
QColor seriesColor(int index);          // Okabe–Ito palette, repeating

// A token as an axis label: a newline shown as "\n", labels longer than 12 characters cut with "…".
QString axisLabel(const QString& token);
// A CSV field: quoted, inner quotes doubled.
QString csvField(QString text);

// Saves the plot as PNG or PDF, chosen by the file's suffix. Returns false with `error` set.
bool savePlot(QCustomPlot* plot, const QString& path, QString* error);
// Writes `csv` preceded by `# key: value` metadata lines. Returns false with `error` set.
bool saveCsv(const QString& path, const QString& metadata, const QString& csv, QString* error);

}  // namespace retnet::ui
