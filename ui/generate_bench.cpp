// SPDX-License-Identifier: GPL-3.0-or-later
#include "generate_bench.h"

#include <time.h>

#include "main_window.h"
#include "retnet/decode_timing.h"
#include "views/generate_view.h"

namespace retnet::ui {

namespace {
double threadCpuSeconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}
}  // namespace

GenerateBench::GenerateBench(MainWindow* window, GenerateBenchOptions options, QObject* parent)
    : QObject(parent), m_window(window), m_options(std::move(options)) {
    m_timeout.setSingleShot(true);
    connect(&m_timeout, &QTimer::timeout, this, [this] {
        fail(QStringLiteral("timed out: no progress for %1 s").arg(m_options.timeoutMs / 1000));
    });
}

void GenerateBench::start() {
    m_window->setQuiet(true);
    m_timeout.start(m_options.timeoutMs);
    EngineController* c = m_window->controller();
    connect(c, &EngineController::modelLoaded, this, [this] {
        if (m_runs.empty() && !m_running) runOnce();
    });
    // Every error the window shows (a failed load, a model name that resolves to nothing, a job
    // that failed) ends the run at once with that line.
    connect(m_window, &MainWindow::errorShown, this, [this](const QString& line) { fail(line); });
    connect(c, &EngineController::generationFinished, this, &GenerateBench::onGenerationFinished);
    // A watchdog on progress, not a limit on the whole: N × R tokens may take longer than it.
    connect(c, &EngineController::statsUpdated, this, [this] {
        if (!m_done) m_timeout.start(m_options.timeoutMs);
    });
    m_window->show();
    m_window->showView(ViewId::Generate);
    if (!m_options.modelDirectory.isEmpty())
        m_window->openModelDirectory(m_options.modelDirectory);
    else if (!m_window->openDefaultModel())
        m_window->useRandomModel();
}

// Each run starts from the prompt, as the Generate button does.
void GenerateBench::runOnce() {
    GenerateView* view = m_window->generateView();
    if (!m_options.prompt.isEmpty()) view->setPrompt(m_options.prompt);
    view->setMaxTokens(m_options.maxTokens);
    m_running = true;
    m_clock.start();
    m_guiCpuAtStart = threadCpuSeconds();
    emit view->generateRequested();
}

void GenerateBench::onGenerationFinished(const GenerationStats& stats) {
    if (m_done || !m_running) return;
    m_running = false;
    if (stats.stopReason == QLatin1String("error")) return;  // errorOccurred says why
    GenerateBenchRun run;
    run.tokens = stats.generated;
    run.decodeTokensPerSecond = stats.decodeTokensPerSecond();
    const double seconds = double(m_clock.nsecsElapsed()) * 1e-9;
    run.wallTokensPerSecond = seconds > 0 ? stats.generated / seconds : 0.0;
    run.guiCpuShare = seconds > 0 ? (threadCpuSeconds() - m_guiCpuAtStart) / seconds : 0.0;
    m_runs.push_back(run);
    if (int(m_runs.size()) < m_options.runs) {
        QTimer::singleShot(0, this, &GenerateBench::runOnce);
        return;
    }
    m_done = true;
    m_timeout.stop();
    emit finished(true, report());
}

QString GenerateBench::report() const {
    QString text;
    std::vector<double> decode, wall, gui;
    for (size_t i = 0; i < m_runs.size(); ++i) {
        const GenerateBenchRun& r = m_runs[i];
        text += QStringLiteral("run %1: %2 tokens, decode %3 tok/s, wall %4 tok/s, GUI thread CPU %5%\n")
                    .arg(i + 1)
                    .arg(r.tokens)
                    .arg(r.decodeTokensPerSecond, 0, 'f', 1)
                    .arg(r.wallTokensPerSecond, 0, 'f', 1)
                    .arg(100.0 * r.guiCpuShare, 0, 'f', 1);
        decode.push_back(r.decodeTokensPerSecond);
        wall.push_back(r.wallTokensPerSecond);
        gui.push_back(r.guiCpuShare);
    }
    text += QStringLiteral("median: decode %1 tok/s, wall %2 tok/s, GUI thread CPU %3% over %4 runs")
                .arg(median(decode), 0, 'f', 1)
                .arg(median(wall), 0, 'f', 1)
                .arg(100.0 * median(gui), 0, 'f', 1)
                .arg(m_runs.size());
    return text;
}

void GenerateBench::fail(const QString& message) {
    if (m_done) return;
    m_done = true;
    m_timeout.stop();
    emit finished(false, message);
}

}  // namespace retnet::ui
