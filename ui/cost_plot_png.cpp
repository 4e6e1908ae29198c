// SPDX-License-Identifier: GPL-3.0-or-later
#include "cost_plot_png.h"

#include <QApplication>

#include <cstdio>
#include <memory>

#include "cost_plot.h"

namespace retnet {

bool write_cost_plot_png(const CostReport& report, const std::string& path, std::string* error) {
    // Qt's remarks about the missing desktop session (XDG_RUNTIME_DIR, fonts) are not the
    // command's output; its own error comes back as one line.
    const QtMessageHandler previous = qInstallMessageHandler([](QtMsgType type, const QMessageLogContext&, const QString& m) {
        if (type == QtCriticalMsg || type == QtFatalMsg) std::fprintf(stderr, "%s\n", qPrintable(m));
    });
    // A command-line program has no window system to count on: the offscreen platform draws
    // into memory whatever QT_QPA_PLATFORM says.
    std::unique_ptr<QApplication> app;
    if (!QApplication::instance()) {
        static int argc = 3;
        static char name[] = "retnet", option[] = "-platform", platform[] = "offscreen";
        static char* argv[] = {name, option, platform, nullptr};
        app = std::make_unique<QApplication>(argc, argv);
    }
    QString message;
    const bool ok = ui::save_cost_plot_png(report, QString::fromStdString(path), &message);
    qInstallMessageHandler(previous);
    if (!ok && error) *error = message.toStdString();
    return ok;
}

}  // namespace retnet
