// SPDX-License-Identifier: GPL-3.0-or-later
#include "screenshot.h"

#include <QApplication>
#include <QDir>
#include <QFileInfo>
#include <QPixmap>

#include "main_window.h"
#include "views/cost_view.h"
#include "views/equivalence_view.h"
#include "views/generate_view.h"

namespace retnet::ui {

ScreenshotRunner::ScreenshotRunner(MainWindow* window, ScreenshotOptions options, QObject* parent)
    : QObject(parent), m_window(window), m_options(std::move(options)) {
    m_timeout.setSingleShot(true);
    connect(&m_timeout, &QTimer::timeout, this, [this] { fail(QStringLiteral("timed out")); });
}

void ScreenshotRunner::start() {
    m_window->setQuiet(true);
    m_window->setDarkTheme(m_options.dark);
    m_timeout.start(m_options.timeoutMs);
    EngineController* c = m_window->controller();
    connect(c, &EngineController::modelLoaded, this, &ScreenshotRunner::onModelLoaded);
    // Every error the window shows (a failed load, a model name that resolves to nothing, a job
    // that failed) ends the run at once with that line.
    connect(m_window, &MainWindow::errorShown, this, [this](const QString& line) { fail(line); });
    connect(c, &EngineController::generationFinished, this, &ScreenshotRunner::onGenerationFinished);
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
    const ViewId v = m_options.view;
    if (v == ViewId::Generate) {
        // Show the candidates of the first generated token.
        const auto& tokens = m_window->generateView()->tokens();
        for (const SequenceToken& e : tokens)
            if (!e.prompt) {
                m_window->generateView()->selectToken(e.position);
                break;
            }
    }
    m_window->showView(v);  // may already start the view's computation
    m_window->refreshCurrentView();
}

void ScreenshotRunner::onViewData(ViewId id) {
    if (m_done || !m_waitingForView || m_captureScheduled || id != m_options.view) return;
    m_captureScheduled = true;  // the view may announce its data twice (end of generation, refresh)
    if (id == ViewId::Cost) return measureCost();
    QTimer::singleShot(300, this, &ScreenshotRunner::capture);
}

// The Cost view measures only when asked (it may take minutes on a GPU's lists): the picture
// shows one measurement of its default lengths and batches.
void ScreenshotRunner::measureCost() {
    EngineController* c = m_window->controller();
    connect(c, &EngineController::costMeasured, this, [this] { QTimer::singleShot(300, this, &ScreenshotRunner::capture); });
    connect(c, &EngineController::costFailed, this, [this](const QString& message) { fail(QStringLiteral("Cost: ") + message); });
    static_cast<CostView*>(m_window->view(ViewId::Cost))->measure();
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
