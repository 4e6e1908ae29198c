// SPDX-License-Identifier: GPL-3.0-or-later
#include "plot_utils.h"

#include <QApplication>
#include <QBuffer>
#include <QFile>
#include <QFileInfo>
#include <QImageWriter>
#include <QPdfWriter>
#include <QPalette>
#include <QSaveFile>

#include <cerrno>
#include <cstring>
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
                            // zero: the plot's background, so masked cells vanish in both themes
                            {0.5, isDarkPalette() ? QColor(28, 28, 30) : QColor(247, 247, 247)},
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

QString visibleToken(const QString& token) {
    if (token.isEmpty()) return QStringLiteral("∅");
    QString s;
    for (QChar c : token) {
        switch (c.unicode()) {
            case ' ': s += QChar(0x2423); break;   // ␣
            case '\n': s += QChar(0x21B5); break;  // ↵
            case '\t': s += QChar(0x21E5); break;  // ⇥
            case '\r': s += QChar(0x240D); break;  // ␍
            default: s += c.isSpace() || c.category() == QChar::Other_Control ? QChar(0x2423) : c;
        }
    }
    return s;
}

QString axisLabel(const QString& token) {
    const QString s = visibleToken(token);
    return s.size() > 12 ? s.left(11) + QChar(0x2026) : s;
}

QString csvField(QString text) {
    text.replace(QLatin1Char('"'), QLatin1String("\"\""));
    return QLatin1Char('"') + text + QLatin1Char('"');
}

namespace {

// Paints the caption (first line bold) over the picture of `source`, on the theme's base colour.
void paintExport(QCPPainter& p, QWidget* source, const QStringList& caption, int width) {
    const QPalette pal = QApplication::palette();
    const QFont font = QApplication::font();
    const QFontMetrics fm(font);
    const int line = fm.lineSpacing(), pad = 8;
    const int top = pad * 2 + line * int(caption.size());
    p.fillRect(QRect(0, 0, width, top + source->height()), pal.color(QPalette::Base));
    p.setPen(pal.color(QPalette::Text));
    for (int i = 0; i < caption.size(); ++i) {
        QFont f = font;
        f.setBold(i == 0);
        p.setFont(f);
        p.drawText(QRect(pad, pad + i * line, width - 2 * pad, line), Qt::AlignLeft | Qt::AlignVCenter,
                   fm.elidedText(caption[i], Qt::ElideRight, width - 2 * pad));
    }
    p.translate(0, top);
    if (auto* plot = qobject_cast<QCustomPlot*>(source))
        plot->toPainter(&p, source->width(), source->height());
    else
        source->render(&p);
}

bool fail(QString* error, const QString& message) {
    if (error) *error = message;
    return false;
}

// Exports are written to a temporary file renamed over the target, so a failed or partial write
// never leaves a broken file. Only regular files (or new names) are written: renaming over a
// device or FIFO would replace it; a symbolic link is followed and its target replaced.
bool openExport(QSaveFile& file, const QString& path, QString* error) {
    const QFileInfo info(path);
    if (info.exists() && !info.isFile())
        return fail(error, QStringLiteral("%1: not a regular file (a directory, device or FIFO); choose a file name").arg(path));
    if (info.isSymLink()) file.setFileName(info.canonicalFilePath());
    // unbuffered: a failed write is seen at write(), where errno still names it
    if (!file.open(QIODevice::WriteOnly | QIODevice::Unbuffered))
        return fail(error, QStringLiteral("%1: %2").arg(path, file.errorString()));
    return true;
}

// All of `bytes`, then the rename over the target; on failure the reason the system gave (Qt's own
// string for a short write is "Unknown error") and the target untouched.
bool writeExport(QSaveFile& file, const QByteArray& bytes, const QString& path, QString* error) {
    errno = 0;
    if (file.write(bytes) == bytes.size() && file.commit()) return true;
    const int reason = errno;
    file.cancelWriting();
    return fail(error, QStringLiteral("%1: %2").arg(
                           path, reason != 0 ? QString::fromLocal8Bit(std::strerror(reason)) : file.errorString()));
}

}  // namespace

// The image is made in memory and only then written: an encoder writing straight to the file met
// a full disk half-way (libpng printed its own line, the PDF writer none and left a cut-off file
// that commit() then renamed over the old one).
bool saveImage(QWidget* source, const QStringList& caption, const QString& path, QString* error) {
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (suffix != QLatin1String("png") && suffix != QLatin1String("pdf"))
        return fail(error, QStringLiteral("%1: unknown image type (use .png or .pdf)").arg(path));
    const int width = source->width();
    const int height = 16 + QFontMetrics(QApplication::font()).lineSpacing() * int(caption.size()) + source->height();
    QSaveFile file(path);
    if (!openExport(file, path, error)) return false;
    QByteArray bytes;
    QBuffer buffer(&bytes);
    buffer.open(QIODevice::WriteOnly);
    if (suffix == QLatin1String("png")) {
        QImage image(QSize(width, height) * 2, QImage::Format_ARGB32_Premultiplied);
        image.setDevicePixelRatio(2.0);
        {
            QCPPainter p(&image);
            p.setRenderHint(QPainter::Antialiasing);
            paintExport(p, source, caption, width);
        }
        image.setText(QStringLiteral("Title"), caption.value(0));
        for (const QString& line : caption.mid(1)) {
            const qsizetype colon = line.indexOf(QStringLiteral(": "));
            if (colon > 0) image.setText(line.left(colon), line.mid(colon + 2));
        }
        QImageWriter writer(&buffer, "png");
        if (!writer.write(image)) return fail(error, QStringLiteral("%1: %2").arg(path, writer.errorString()));
    } else {
        QPdfWriter writer(&buffer);
        writer.setPageSize(QPageSize(QSizeF(width, height), QPageSize::Point));
        writer.setPageMargins(QMarginsF(0, 0, 0, 0));
        writer.setResolution(72);
        writer.setTitle(caption.value(0));
        QCPPainter p(&writer);
        if (!p.isActive()) return fail(error, QStringLiteral("%1: could not be written").arg(path));
        p.setMode(QCPPainter::pmVectorized);
        p.setMode(QCPPainter::pmNoCaching);
        paintExport(p, source, caption, width);
        p.end();  // the PDF's last objects and its trailer, into the buffer
    }
    return writeExport(file, bytes, path, error);
}

bool saveCsv(const QString& path, const QString& metadata, const QString& csv, QString* error) {
    QSaveFile file(path);
    if (!openExport(file, path, error)) return false;
    QByteArray bytes;
    for (const QString& line : metadata.split(QLatin1Char('\n'), Qt::SkipEmptyParts))
        bytes += "# " + line.toUtf8() + '\n';
    bytes += csv.toUtf8();
    return writeExport(file, bytes, path, error);
}

PositionMarker::PositionMarker(QCustomPlot* plot, QCPAxis* keyAxis, QCPAxis* valueAxis, Qt::Orientation orientation)
    : m_line(new QCPItemStraightLine(plot)), m_orientation(orientation) {
    for (QCPItemPosition* p : {m_line->point1, m_line->point2}) {
        p->setAxes(keyAxis, valueAxis);
        p->setAxisRect(keyAxis->axisRect());
    }
    m_line->setClipAxisRect(keyAxis->axisRect());
    m_line->setSelectable(false);
    m_line->setVisible(false);
    updateTheme();
}

void PositionMarker::show(double coord) {
    if (m_orientation == Qt::Vertical) {
        m_line->point1->setCoords(coord, 0.0);
        m_line->point2->setCoords(coord, 1.0);
    } else {
        m_line->point1->setCoords(0.0, coord);
        m_line->point2->setCoords(1.0, coord);
    }
    m_line->setVisible(true);
}

void PositionMarker::hide() { m_line->setVisible(false); }

double PositionMarker::coord() const {
    return m_orientation == Qt::Vertical ? m_line->point1->coords().x() : m_line->point1->coords().y();
}

void PositionMarker::updateTheme() {
    m_line->setPen(QPen(isDarkPalette() ? QColor(255, 200, 60) : QColor(200, 80, 0), 1.4, Qt::DashLine));
}

}  // namespace retnet::ui
