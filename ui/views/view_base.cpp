// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/view_base.h"

#include <QFileInfo>
#include <QPainter>
#include <QPdfWriter>

#include "plot_utils.h"

namespace retnet::ui {

void ViewBase::attach(const ViewContext& context) {
    m_context = context;
    connect(context.engine, &EngineController::modelLoaded, this, [this](const ModelInfo& info) {
        m_pending = 0;
        markStale();
        setModelInfo(info);
    });
    if (context.cursor) connect(context.cursor, &LinkedCursor::changed, this, &ViewBase::showLinkedPosition);
    attached();
}

void ViewBase::refresh() {
    if (!engine() || !engine()->hasModel()) return;
    m_pending = 0;
    compute();
    if (m_pending == 0) {  // nothing to ask the engine: fresh already
        m_stale = false;
        emit dataReady(id());
    }
}

// A failed request leaves the view stale (the next look at it retries) and announces nothing.
void ViewBase::answered(int channel, bool ok) {
    m_pending &= ~(1u << channel);
    if (!ok) {
        m_stale = true;
        return;
    }
    if (m_pending) return;
    m_stale = false;
    emit dataReady(id());
}

QStringList ViewBase::exportLines(const QString& metadata) const {
    QStringList lines = metadata.split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    lines << exportInfo();
    return lines;
}

bool ViewBase::exportCsv(const QString& path, const QString& metadata, QString* error) const {
    if (!hasData()) {
        if (error) *error = QStringLiteral("the %1 view has no data yet").arg(title());
        return false;
    }
    return saveCsv(path, exportLines(metadata).join(QLatin1Char('\n')), csv(), error);
}

bool ViewBase::exportImage(const QString& path, QString* error, const QString& metadata) const {
    QWidget* source = mainPlot() ? static_cast<QWidget*>(mainPlot()) : const_cast<ViewBase*>(this);
    QStringList caption = {title()};
    caption << exportLines(metadata);
    return saveImage(source, caption, path, error);
}

}  // namespace retnet::ui
