// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/view_base.h"

#include <QFileInfo>
#include <QPainter>
#include <QPdfWriter>

#include "plot_utils.h"

namespace retnet::ui {

bool ViewBase::exportImage(const QString& path, QString* error) const {
    if (QCustomPlot* plot = mainPlot()) return savePlot(plot, path, error);
    return exportWidget(const_cast<ViewBase*>(this), path, error);
}

bool ViewBase::exportCsv(const QString& path, const QString& metadata, QString* error) const {
    if (!hasData()) {
        if (error) *error = QStringLiteral("the %1 view has no data yet").arg(title());
        return false;
    }
    return saveCsv(path, metadata, csv(), error);
}

bool ViewBase::exportWidget(QWidget* widget, const QString& path, QString* error) const {
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (suffix == QLatin1String("png")) {
        if (widget->grab().save(path, "PNG")) return true;
        if (error) *error = QStringLiteral("%1: could not be written").arg(path);
        return false;
    }
    if (suffix == QLatin1String("pdf")) {
        QPdfWriter writer(path);
        writer.setPageSize(QPageSize(widget->size(), QPageSize::Point));
        writer.setPageMargins(QMarginsF(0, 0, 0, 0));
        writer.setResolution(72);
        QPainter painter(&writer);
        if (!painter.isActive()) {
            if (error) *error = QStringLiteral("%1: could not be written").arg(path);
            return false;
        }
        widget->render(&painter);
        return true;
    }
    if (error) *error = QStringLiteral("%1: unknown image type (use .png or .pdf)").arg(path);
    return false;
}

}  // namespace retnet::ui
