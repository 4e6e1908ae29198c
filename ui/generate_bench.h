// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// `retnet-studio --bench-generate N`: the app's generation speed, measured the way a user gets it
// (the window shown on the Generate view, every token streamed to it), to compare with
// `retnet generate` on the same model, prompt, seed and token count. Runs the generation
// several times and reports each run and the median decode tok/s.
#include <QElapsedTimer>
#include <QObject>
#include <QTimer>

#include <vector>

#include "snapshots.h"

namespace retnet::ui {

class MainWindow;

struct GenerateBenchOptions {
    QString modelDirectory;  // "" = the default model, else a small random model
    QString prompt;          // "" = the prompt box as it is
    int maxTokens = 256;
    int runs = 5;
    int timeoutMs = 600000;
};

struct GenerateBenchRun {
    int tokens = 0;
    double decodeTokensPerSecond = 0.0;  // as the engine timed it (the CLI's tok/s)
    double wallTokensPerSecond = 0.0;    // request to the last token shown, on the GUI thread
    double guiCpuShare = 0.0;            // the GUI thread's CPU time / the run's wall time
};

class GenerateBench : public QObject {
    Q_OBJECT
public:
    GenerateBench(MainWindow* window, GenerateBenchOptions options, QObject* parent = nullptr);
    void start();
    const std::vector<GenerateBenchRun>& results() const { return m_runs; }
    // One line per run and the medians.
    QString report() const;

signals:
    void finished(bool ok, const QString& message);

private:
    void runOnce();
    void onGenerationFinished(const GenerationStats& stats);
    void fail(const QString& message);

    MainWindow* m_window;
    GenerateBenchOptions m_options;
    std::vector<GenerateBenchRun> m_runs;
    QElapsedTimer m_clock;
    double m_guiCpuAtStart = 0.0;  // seconds
    QTimer m_timeout;
    bool m_running = false;
    bool m_done = false;
};

}  // namespace retnet::ui
