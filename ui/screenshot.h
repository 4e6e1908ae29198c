// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// `retnet-studio --screenshot`: open a model, run the prompt, show one view with its data, save
// the window as PNG, and report success. Drives the real window through its public API, so a
// screenshot is also an end-to-end check.
#include <QObject>
#include <QTimer>

#include "view_id.h"

namespace retnet::ui {

class MainWindow;

struct ScreenshotOptions {
    QString path;
    QString modelDirectory;  // "" = the default model, else a small random model
    bool randomModel = false;  // skip the default model
    QString prompt;
    ViewId view = ViewId::Generate;
    int maxTokens = 24;
    bool dark = false;
    bool zeroEps = false;
    int timeoutMs = 300000;
};

class ScreenshotRunner : public QObject {
    Q_OBJECT
public:
    ScreenshotRunner(MainWindow* window, ScreenshotOptions options, QObject* parent = nullptr);
    void start();

signals:
    void finished(bool ok, const QString& message);

private:
    void onModelLoaded();
    void onGenerationFinished();
    void onViewData(ViewId id);
    void measureCost();
    void capture();
    void fail(const QString& message);

    MainWindow* m_window;
    ScreenshotOptions m_options;
    QTimer m_timeout;
    bool m_done = false;
    bool m_waitingForView = false;
    bool m_captureScheduled = false;
};

}  // namespace retnet::ui
