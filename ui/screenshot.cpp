// SPDX-License-Identifier: GPL-3.0-or-later
#include "screenshot.h"

#include <QApplication>
#include <QDir>
#include <QFileInfo>
#include <QPixmap>

#include "main_window.h"
#include "views/equivalence_view.h"
#include "views/generate_view.h"

namespace retnet::ui {

ScreenshotRunner::ScreenshotRunner(MainWindow* window, ScreenshotOptions options, QObject* parent)
    : QObject(parent), m_window(window), m_options(std::move(options)) {
    m_timeout.setSingleShot(true);
    connect(&m_timeout, &QTimer::timeout, this, [this] { fail(QStringLiteral("timed out")); });
}

void ScreenshotRunner::start() {
    static const QStringList views = {QStringLiteral("generate"), QStringLiteral("equivalence"),
                                      QStringLiteral("decay"), QStringLiteral("retention"),
                                      QStringLiteral("state"), QStringLiteral("lens")};
    if (!views.contains(m_options.view))
        return fail(QStringLiteral("unknown view '%1' (expected %2)").arg(m_options.view, views.join(QStringLiteral(", "))));
    m_window->setQuiet(true);
    m_window->setDarkTheme(m_options.dark);
    m_timeout.start(m_options.timeoutMs);
    EngineController* c = m_window->controller();
    connect(c, &EngineController::modelLoaded, this, &ScreenshotRunner::onModelLoaded);
    connect(c, &EngineController::loadFailed, this, [this](const QString& m) { fail(m); });
    connect(c, &EngineController::generationFinished, this, &ScreenshotRunner::onGenerationFinished);
    connect(c, &EngineController::errorOccurred, this, [this](const QString& task, const QString& m) {
        fail(task + QStringLiteral(": ") + m);
    });
    connect(m_window, &MainWindow::viewDataReady, this, &ScreenshotRunner::onViewData);
    m_window->show();
    if (!m_options.modelDirectory.isEmpty())
        m_window->openModelDirectory(m_options.modelDirectory);
    else if (m_options.randomModel || !m_window->openDefaultModel())
        m_window->useRandomModel();
}

void ScreenshotRunner::onModelLoaded() {
    if (m_done) return;
    if (!m_options.prompt.isEmpty()) m_window->generateView()->setPrompt(m_options.prompt);
    m_window->generateView()->setMaxTokens(m_options.maxTokens);
    m_window->equivalenceView()->setZeroEps(m_options.zeroEps);
    m_window->controller()->generate(m_window->generateView()->request());
}

void ScreenshotRunner::onGenerationFinished() {
    if (m_done || m_waitingForView) return;
    m_waitingForView = true;
    m_window->generateView()->flushPending();
    const QString v = m_options.view;
    if (v == QLatin1String("retention"))
        m_pending = {QStringLiteral("retention"), QStringLiteral("retention-overview")};
    else
        m_pending = {v};
    if (v == QLatin1String("generate")) {
        // Show the candidates of the first generated token.
        const auto& tokens = m_window->generateView()->tokens();
        for (const TokenEvent& e : tokens)
            if (!e.prompt) {
                m_window->generateView()->selectToken(e.position);
                break;
            }
    }
    m_window->showView(v);  // may already start the view's computation
    m_window->refreshCurrentView();
}

void ScreenshotRunner::onViewData(const QString& viewId) {
    if (m_done || !m_waitingForView) return;
    m_pending.removeAll(viewId);
    if (m_pending.isEmpty()) QTimer::singleShot(300, this, &ScreenshotRunner::capture);
}

void ScreenshotRunner::capture() {
    if (m_done) return;
    QApplication::processEvents();
    const QPixmap image = m_window->grab();
    const QString dir = QFileInfo(m_options.path).absolutePath();
    QDir().mkpath(dir);
    if (!image.save(m_options.path, "PNG")) return fail(QStringLiteral("%1: could not be written").arg(m_options.path));
    m_done = true;
    m_timeout.stop();
    emit finished(true, m_options.path);
}

void ScreenshotRunner::fail(const QString& message) {
    if (m_done) return;
    m_done = true;
    m_timeout.stop();
    emit finished(false, message);
}

}  // namespace retnet::ui
