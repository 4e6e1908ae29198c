// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the main window needs from every view: a name, an image export (PNG/PDF), a data export
// (CSV), theme updates, and the learn-panel topic shown beside it.
#include <QWidget>

class QCustomPlot;

namespace retnet::ui {

class ViewBase : public QWidget {
    Q_OBJECT
public:
    using QWidget::QWidget;

    virtual QString viewId() const = 0;  // "generate", "equivalence", "decay", "retention", "state", "lens"
    virtual QString title() const = 0;
    virtual bool hasData() const = 0;
    virtual QString csv() const = 0;  // the view's data, header line first
    virtual void updateTheme() {}

    // PNG or PDF by suffix. The default exports the view's main plot; views without one grab
    // themselves.
    virtual bool exportImage(const QString& path, QString* error) const;
    bool exportCsv(const QString& path, const QString& metadata, QString* error) const;

protected:
    virtual QCustomPlot* mainPlot() const { return nullptr; }
    bool exportWidget(QWidget* widget, const QString& path, QString* error) const;
};

}  // namespace retnet::ui
