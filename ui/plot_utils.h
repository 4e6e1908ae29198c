// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Shared plotting conventions: one colour meaning per kind of quantity (diverging for signed
// scores, sequential for norms, log-sequential for errors), theme colours taken from the
// application palette, and the image/data exports every view offers.
#include <QColor>
#include <QString>
#include <QStringList>

#include <qcustomplot.h>

namespace retnet::ui {

bool isDarkPalette();
void applyPlotTheme(QCustomPlot* plot);
void applyAxisTheme(QCPAxisRect* rect);

QCPColorGradient divergingGradient();   // signed: blue – white – red (RdBu, colour-blind safe)
QCPColorGradient sequentialGradient();  // norms, probabilities (viridis)
QColor seriesColor(int index);          // Okabe–Ito palette, repeating

// A token with its whitespace made visible: space ␣, newline ↵, tab ⇥, carriage return ␍, other
// blanks and control characters ␣, the empty token ∅. Every token label in the app goes through it.
QString visibleToken(const QString& token);
// visibleToken(), cut to 12 characters with "…" for axes.
QString axisLabel(const QString& token);
// A CSV field: quoted, inner quotes doubled.
QString csvField(QString text);

// A dashed line across an axis rect at one position of the text (the linked cursor): vertical
// for a position on the key axis, horizontal for one on the value axis.
class PositionMarker {
public:
    PositionMarker(QCustomPlot* plot, QCPAxis* keyAxis, QCPAxis* valueAxis, Qt::Orientation orientation);
    void show(double coord);  // in the axis' coordinates
    void hide();
    bool isShown() const { return m_line->visible(); }
    double coord() const;
    void updateTheme();

private:
    QCPItemStraightLine* m_line;
    Qt::Orientation m_orientation;
};

// Saves `source` (a plot or any widget) as PNG or PDF, chosen by the file's suffix, under a
// caption: its first line is the title, the others `key: value` lines that a PNG also keeps as
// text chunks. Written atomically; returns false with `error` naming the path and the reason.
bool saveImage(QWidget* source, const QStringList& caption, const QString& path, QString* error);
// Writes `csv` preceded by `# key: value` metadata lines. Returns false with `error` set.
bool saveCsv(const QString& path, const QString& metadata, const QString& csv, QString* error);

}  // namespace retnet::ui
