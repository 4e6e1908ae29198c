// SPDX-License-Identifier: GPL-3.0-or-later
// GUI tests of what issue #14 adds beyond the fixes, on the offscreen platform with the real
// widgets: the generation stream reaches the GUI thread in batches, a live tok/s readout, the
// prompt's token count while typing, copying the output, recent models, --bench-generate.
#include <gtest/gtest.h>

#include <QApplication>

#include <cmath>
#include <QClipboard>
#include <QDir>
#include <QFile>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QTableWidget>
#include <QTextBrowser>
#include <QProcess>
#include <QPushButton>
#include <QRegularExpression>
#include <QSettings>
#include <QStatusBar>
#include <QTemporaryDir>

#include <qcustomplot.h>

#include "generate_bench.h"
#include "studio_test_util.h"
#include "views/lens_view.h"
#include "views/recurrence_view.h"
#include "views/retention_view.h"
#include "views/state_view.h"

namespace {

using namespace retnet::ui;
using namespace retnet::ui::test;

// The engine sends tokens, norms and timings together every few milliseconds: far fewer timing
// updates reach the GUI than tokens, every token still arrives in order, and the readout shows
// the final speed.
TEST(AppExtras, GenerationStreamIsBatchedAndTheReadoutShowsItsSpeed) {
    Window w(tinyModel());
    QSignalSpy stats(w.window.controller(), &EngineController::statsUpdated);
    std::vector<int64_t> positions;
    QObject::connect(w.window.controller(), &EngineController::tokenGenerated, &w.window,
                     [&](const SequenceToken& e) { positions.push_back(e.position); });
    w.generate(400);
    const auto last = stats.last().at(0).value<GenerationStats>();
    ASSERT_TRUE(last.finished);
    ASSERT_EQ(last.generated, 400);
    ASSERT_EQ(positions.size(), size_t(last.promptTokens + 400));
    for (size_t i = 0; i < positions.size(); ++i) EXPECT_EQ(positions[i], int64_t(i));
    EXPECT_LT(stats.count(), 400 / 4) << "timings were sent per token, not per batch";
    EXPECT_EQ(w.window.generateView()->rateText(),
              QStringLiteral("%1 tok/s").arg(last.decodeTokensPerSecond(), 0, 'f', 1));
}

// The count under the prompt follows the text as typed, through the model's tokenizer (here: a
// model without one, whose prompt is token ids, plus its BOS), and says what is wrong.
TEST(AppExtras, PromptTokenCountFollowsTheText) {
    Window w(tinyModel());
    GenerateView* view = w.window.generateView();
    auto backend = retnet::make_backend("cpu", tinyModel());
    const int bos = retnet::Generator(*backend, nullptr).bos_id() >= 0 ? 1 : 0;
    auto countIs = [&](const QString& expected) {
        return QTest::qWaitFor([&] { return view->promptCountText() == expected; }, kWaitMs);
    };
    EXPECT_TRUE(countIs(QStringLiteral("%1 tokens").arg(int(kPromptIds.size()) + bos))) << view->promptCountText().toStdString();
    view->setPrompt(QStringLiteral("3 4"));
    EXPECT_TRUE(countIs(QStringLiteral("%1 tokens").arg(2 + bos))) << view->promptCountText().toStdString();
    view->setPrompt(QStringLiteral("3 four"));
    EXPECT_TRUE(countIs(QStringLiteral("? tokens")));
    EXPECT_TRUE(view->findChild<QLabel*>(QStringLiteral("promptTokenCount"))->toolTip().contains(QStringLiteral("\"four\" is not a number")));
    view->setPrompt(QString());
    EXPECT_TRUE(countIs(QStringLiteral("0 tokens")));
}

// The same count as `retnet generate` reports for the bundled model's prompt.
TEST(AppExtras, PromptTokenCountMatchesTheCli) {
    const QString dir = QStringLiteral(RETNET_DEFAULT_MODEL_DIR);
    const QString prompt = QStringLiteral("Once upon a time, in a land");
    QProcess cli;
    cli.start(QStringLiteral(RETNET_CLI_PATH), {QStringLiteral("generate"), QStringLiteral("--model"), dir, QStringLiteral("--prompt"),
                                                prompt, QStringLiteral("-n"), QStringLiteral("1"), QStringLiteral("--json")});
    ASSERT_TRUE(cli.waitForFinished(kWaitMs));
    const QString out = QString::fromUtf8(cli.readAllStandardOutput());
    const QRegularExpressionMatch m = QRegularExpression(QStringLiteral("\"prompt_tokens\":\\s*(\\d+)")).match(out);
    ASSERT_TRUE(m.hasMatch()) << out.toStdString();
    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    window.openModelDirectory(dir);
    ASSERT_TRUE(ready.wait(kWaitMs));
    window.generateView()->setPrompt(prompt);
    const QString expected = QStringLiteral("%1 tokens").arg(m.captured(1));
    EXPECT_TRUE(QTest::qWaitFor([&] { return window.generateView()->promptCountText() == expected; }, kWaitMs))
        << window.generateView()->promptCountText().toStdString() << " vs " << expected.toStdString();
}

TEST(AppExtras, CopyOutputPutsTheWholeTextOnTheClipboard) {
    Window w(tinyModel());
    w.generate(12);
    const QString text = w.window.generateView()->outputText();
    ASSERT_TRUE(text.contains(QStringLiteral("[1] [5] [9] [2] "))) << text.toStdString();
    QApplication::clipboard()->clear();
    w.window.generateView()->findChild<QPushButton*>(QStringLiteral("copyOutput"))->click();
    EXPECT_EQ(QApplication::clipboard()->text(), text);
}

// A model directory with links to the bundled model's files and its own config.json.
QString modelCopy(const QTemporaryDir& scratch, const QString& name) {
    const QString src = QStringLiteral(RETNET_DEFAULT_MODEL_DIR);
    const QString dir = scratch.filePath(name);
    EXPECT_TRUE(QDir().mkpath(dir));
    for (const QString& f : {QStringLiteral("model.safetensors"), QStringLiteral("tokenizer.model")})
        EXPECT_TRUE(QFile::link(src + QLatin1Char('/') + f, dir + QLatin1Char('/') + f));
    EXPECT_TRUE(QFile::copy(src + QStringLiteral("/config.json"), dir + QStringLiteral("/config.json")));
    return QDir(dir).absolutePath();
}

// Opened models are remembered across sessions (QSettings), newest first; one whose config.json
// is gone is dropped with a message naming it.
TEST(AppExtras, RecentModelsArePersistedAndMissingOnesPruned) {
    QSettings().remove(QStringLiteral("recentModels"));
    QTemporaryDir scratch;
    const QString a = modelCopy(scratch, QStringLiteral("a")), b = modelCopy(scratch, QStringLiteral("b"));
    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    for (const QString& dir : {a, b}) {
        window.openModelDirectory(dir);
        ASSERT_TRUE(ready.wait(kWaitMs));
    }
    EXPECT_EQ(window.recentModels(), (QStringList{b, a}));
    EXPECT_EQ(QSettings().value(QStringLiteral("recentModels")).toStringList(), (QStringList{b, a}));
    window.openRecentModel(a);  // back to the front
    ASSERT_TRUE(ready.wait(kWaitMs));
    EXPECT_EQ(window.recentModels(), (QStringList{a, b}));

    ASSERT_TRUE(QFile::remove(b + QStringLiteral("/config.json")));
    window.openRecentModel(b);
    EXPECT_TRUE(window.lastError().contains(b + QStringLiteral(" no longer holds a model"))) << window.lastError().toStdString();
    EXPECT_EQ(window.recentModels(), QStringList{a});

    const QString c = modelCopy(scratch, QStringLiteral("c"));
    window.openModelDirectory(c);
    ASSERT_TRUE(ready.wait(kWaitMs));
    ASSERT_TRUE(QFile::remove(c + QStringLiteral("/config.json")));
    EXPECT_EQ(window.pruneRecentModels(), QStringList{c});
    EXPECT_EQ(window.recentModels(), QStringList{a});
}

// Pointing at a position in one view marks it in all the others: a click on a token of the
// output, a hover over the lens; a new model clears it.
TEST(AppExtras, LinkedCursorMarksThePositionInEveryView) {
    Window w(tinyModel());
    w.generate(20);
    auto* retention = static_cast<RetentionView*>(w.window.view(ViewId::Retention));
    auto* state = static_cast<StateView*>(w.window.view(ViewId::State));
    auto* lens = static_cast<LensView*>(w.window.view(ViewId::Lens));
    GenerateView* text = w.window.generateView();
    for (ViewId id : {ViewId::Retention, ViewId::State, ViewId::Lens}) w.show(id);
    EXPECT_EQ(w.window.linkedCursor()->position(), -1);
    EXPECT_EQ(retention->markedPosition(), -1);

    text->selectToken(5);
    EXPECT_EQ(w.window.linkedCursor()->position(), 5);
    EXPECT_EQ(retention->markedPosition(), 5);
    EXPECT_EQ(state->markedPosition(), 5);
    EXPECT_EQ(lens->markedPosition(), 5);
    EXPECT_EQ(text->markedText(), text->tokens()[5].text);

    auto* plot = lens->findChild<QCustomPlot*>();
    ASSERT_NE(plot, nullptr);
    plot->replot();
    const QPointF at(plot->xAxis->coordToPixel(7.0), plot->yAxis->coordToPixel(0.0));
    QMouseEvent move(QEvent::MouseMove, at, plot->mapToGlobal(at), Qt::NoButton, Qt::NoButton, Qt::NoModifier);
    QApplication::sendEvent(plot, &move);
    EXPECT_EQ(w.window.linkedCursor()->position(), 7);
    EXPECT_EQ(retention->markedPosition(), 7);
    EXPECT_EQ(state->markedPosition(), 7);
    EXPECT_EQ(text->markedText(), text->tokens()[7].text);

    w.window.useRandomModel(5);
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    EXPECT_EQ(w.window.linkedCursor()->position(), -1);
    EXPECT_EQ(lens->markedPosition(), -1);
    EXPECT_TRUE(text->markedText().isEmpty());
}

// Apply keeps the text and its candidates from before the edit beside the ones after it: the
// candidate table gets a "p before" column, the old text a pane of its own; clearing the edit
// gives back exactly the candidates of the model as loaded.
TEST(AppExtras, InterventionsShowBeforeAndAfter) {
    Window w(tinyModel());
    w.generate(16);
    GenerateView* view = w.window.generateView();
    const std::vector<SequenceToken> original = view->tokens();
    ASSERT_TRUE(view->beforeTokens().empty());
    auto apply = [&](const QString& mute) {
        w.window.findChild<QLineEdit*>(QStringLiteral("muteHeads"))->setText(mute);
        w.window.findChild<QPushButton*>(QStringLiteral("applyInterventions"))->click();
        ASSERT_TRUE(w.ready.wait(kWaitMs));
    };
    apply(QStringLiteral("0.0, 1.1"));
    ASSERT_EQ(view->beforeTokens().size(), original.size());
    EXPECT_EQ(view->beforeModel(), QStringLiteral("the model as loaded"));
    EXPECT_EQ(view->beforeText(), view->outputText());  // the same text, rescored
    EXPECT_TRUE(w.window.findChild<QTextBrowser*>(QStringLiteral("beforeOutput"))->isVisibleTo(&w.window));
    double change = 0.0;
    for (size_t p = 1; p < original.size(); ++p) {
        ASSERT_EQ(view->tokens()[p].id, original[p].id);
        EXPECT_EQ(view->beforeTokens()[p].top.front().prob, original[p].top.front().prob);
        double sum = 0.0;
        for (const TokenCandidate& c : view->tokens()[p].top) sum += c.prob;
        EXPECT_LE(sum, 1.0 + 1e-9);
        change = std::max(change, std::abs(view->tokens()[p].top.front().prob - original[p].top.front().prob));
    }
    EXPECT_GT(change, 1e-4) << "muting two heads changed no candidate";

    const int64_t p = int64_t(original.size()) - 1;
    view->selectToken(p);
    auto* table = view->findChild<QTableWidget*>();
    ASSERT_FALSE(table->isColumnHidden(3));
    const TokenCandidate& first = view->tokens()[size_t(p)].top.front();
    double expected = -1.0;
    for (const TokenCandidate& c : original[size_t(p)].top)
        if (c.id == first.id) expected = c.prob;
    EXPECT_EQ(table->item(0, 3)->text(), expected < 0 ? QStringLiteral("–") : QString::number(expected, 'f', 4));
    EXPECT_EQ(table->item(0, 1)->text(), QString::number(first.prob, 'f', 4));

    apply(QString());  // Clear: back to the model as loaded
    EXPECT_EQ(view->beforeModel().isEmpty(), false);
    EXPECT_NE(view->beforeModel(), QStringLiteral("the model as loaded"));
    for (size_t q = 1; q < original.size(); ++q)
        for (size_t k = 0; k < original[q].top.size(); ++k) {
            EXPECT_EQ(view->tokens()[q].top[k].id, original[q].top[k].id);
            EXPECT_NEAR(view->tokens()[q].top[k].prob, original[q].top[k].prob, 1e-6);
        }
}

// The step-through's q·k row and oₙ panel: qₙ·kₘ γ^(n−m) is the parallel score (fla does not
// normalize the row), and oₙ = qₙ Sₙ from the traced states equals Σₘ score(n, m) vₘ.
TEST(AppExtras, RecurrenceShowsQkAndBothOutputs) {
    Window w(tinyModel());
    w.generate(10);
    auto* view = static_cast<RecurrenceView*>(w.window.view(ViewId::Recurrence));
    w.show(ViewId::Recurrence);
    const RecurrenceTrace& t = view->trace();
    ASSERT_TRUE(t.qk && t.recurrentOut && t.parallelOut);
    ASSERT_GT(t.tokens, 10);
    double largest = 0.0;
    for (int n = 0; n < t.tokens; ++n) {
        for (int m = 0; m <= n; ++m) {
            const double score = (*t.scores)[size_t(n) * t.tokens + m];
            EXPECT_NEAR((*t.qk)[size_t(n) * t.tokens + m] * std::pow(t.gamma, n - m), score, 1e-4 * (1.0 + std::abs(score)))
                << n << ", " << m;
        }
        for (int j = 0; j < t.dv; ++j) largest = std::max(largest, double(std::abs((*t.recurrentOut)[size_t(n) * t.dv + j])));
        EXPECT_LT(view->outputDifference(n), 1e-4 * (1.0 + largest)) << "position " << n;
    }
    EXPECT_GT(largest, 1e-3);
}

// A saved workspace brings back the model, the settings, the text (same tokens, same prompt
// part), the interventions and the view in a new window; a bad file says what is wrong.
TEST(AppExtras, WorkspaceRoundTrip) {
    QTemporaryDir scratch;
    const QString path = scratch.filePath(QStringLiteral("w.json"));
    Window w;  // the random model, seed 3
    GenerateView* view = w.window.generateView();
    view->applySettings(QJsonObject{{QStringLiteral("temperature"), 0.5}, {QStringLiteral("seed"), 42},
                                    {QStringLiteral("prefill_form"), QStringLiteral("chunkwise")}});
    w.generate(12);
    w.window.findChild<QLineEdit*>(QStringLiteral("muteHeads"))->setText(QStringLiteral("0.1"));
    w.window.findChild<QPushButton*>(QStringLiteral("applyInterventions"))->click();
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    w.show(ViewId::Decay);
    QString error;
    ASSERT_TRUE(w.window.saveWorkspace(path, &error)) << error.toStdString();

    MainWindow restored;
    restored.setQuiet(true);
    restored.show();
    QSignalSpy done(&restored, &MainWindow::workspaceRestored);
    restored.openWorkspace(path);
    ASSERT_TRUE(done.wait(kWaitMs)) << restored.lastError().toStdString();
    GenerateView* again = restored.generateView();
    EXPECT_EQ(again->tokenIds(), view->tokenIds());
    EXPECT_EQ(again->promptLength(), view->promptLength());
    EXPECT_EQ(again->outputText(), view->outputText());
    EXPECT_EQ(again->settings(), view->settings());
    EXPECT_EQ(again->settings().value(QStringLiteral("seed")).toInt(), 42);
    EXPECT_EQ(restored.controller()->modelInfo().interventions, w.window.controller()->modelInfo().interventions);
    EXPECT_FALSE(restored.controller()->modelInfo().interventions.isEmpty());
    EXPECT_EQ(restored.currentView()->id(), ViewId::Decay);
    // The restored text continues like the original: its state was rebuilt.
    EXPECT_EQ(again->tokens().back().top.front().id, view->tokens().back().top.front().id);

    QFile bad(scratch.filePath(QStringLiteral("bad.json")));
    ASSERT_TRUE(bad.open(QIODevice::WriteOnly));
    bad.write("{\"format\": ");
    bad.close();
    restored.openWorkspace(bad.fileName());
    EXPECT_TRUE(restored.lastError().contains(QStringLiteral("not JSON"))) << restored.lastError().toStdString();
    QFile gone(scratch.filePath(QStringLiteral("gone.json")));
    ASSERT_TRUE(gone.open(QIODevice::WriteOnly));
    gone.write(R"({"format": "retnet-studio-workspace", "version": 1, "model": "/nonexistent/model"})");
    gone.close();
    restored.openWorkspace(gone.fileName());
    EXPECT_TRUE(restored.lastError().contains(QStringLiteral("/nonexistent/model no longer exists"))) << restored.lastError().toStdString();
}

// ‖S‖ per token costs the engine a pass over every state: it is computed live only while the
// State view is shown; otherwise the view computes the whole text's norms when looked at, the
// same as the engine's.
TEST(AppExtras, StateNormsAreComputedLiveOnlyWhileShown) {
    Window w(tinyModel());
    auto* state = static_cast<StateView*>(w.window.view(ViewId::State));
    QSignalSpy live(w.window.controller(), &EngineController::stateNormsReady);
    w.generate(30);
    EXPECT_EQ(live.count(), 0) << "norms were computed for a hidden view";
    w.show(ViewId::State);
    const std::vector<int32_t> ids = w.window.generateView()->tokenIds();
    ASSERT_EQ(state->positions(), int64_t(ids.size()));
    retnet::Introspection probe;
    probe.want_state_norms = true;
    retnet::make_backend("cpu", tinyModel())->forward(ids, {}, &probe);  // (T, L, H)
    const int L = int(probe.state_norms.dim(1)), H = int(probe.state_norms.dim(2));
    for (int64_t t = 0; t < int64_t(ids.size()); ++t)
        for (int l = 0; l < L; ++l)
            for (int h = 0; h < H; ++h) {
                const float e = probe.state_norms.data[size_t((t * L + l) * H + h)];
                EXPECT_NEAR(state->norm(t, l, h), e, 1e-4f * (1.0f + e)) << t << ", " << l << ", " << h;
            }

    QSignalSpy done(w.window.controller(), &EngineController::generationFinished);
    emit w.window.generateView()->generateRequested();  // shown: the norms arrive while generating
    ASSERT_TRUE(done.wait(kWaitMs));
    EXPECT_GT(live.count(), 0);
    w.window.generateView()->flushPending();
    // Live, the state is the one after each token fed to the model: the last one sampled is not yet.
    EXPECT_EQ(state->positions(), w.window.generateView()->sequenceLength() - 1);
}

// --bench-generate prints one line per run and the medians, with the token count asked for.
TEST(AppExtras, BenchGenerateReportsEachRunAndTheMedian) {
    QProcess p;
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert(QStringLiteral("QT_QPA_PLATFORM"), QStringLiteral("offscreen"));
    p.setProcessEnvironment(env);
    p.start(QStringLiteral(RETNET_STUDIO_PATH),
            {QStringLiteral("--model"), QStringLiteral(RETNET_DEFAULT_MODEL_DIR), QStringLiteral("--prompt"),
             QStringLiteral("The king"), QStringLiteral("--bench-generate"), QStringLiteral("40"),
             QStringLiteral("--bench-runs"), QStringLiteral("3")});
    ASSERT_TRUE(p.waitForFinished(kWaitMs));
    const QString out = QString::fromUtf8(p.readAllStandardOutput());
    EXPECT_EQ(p.exitCode(), 0) << p.readAllStandardError().toStdString();
    const QRegularExpression run(QStringLiteral("^run (\\d): 40 tokens, decode ([0-9.]+) tok/s, wall ([0-9.]+) tok/s, "
                                                "GUI thread CPU ([0-9.]+)%$"),
                                 QRegularExpression::MultilineOption);
    int runs = 0;
    for (auto it = run.globalMatch(out); it.hasNext(); ++runs) {
        const auto m = it.next();
        EXPECT_GT(m.captured(2).toDouble(), 0.0);
        EXPECT_GT(m.captured(3).toDouble(), 0.0);
        EXPECT_LE(m.captured(3).toDouble(), m.captured(2).toDouble() * 1.01) << "wall time includes the decode";
    }
    EXPECT_EQ(runs, 3) << out.toStdString();
    EXPECT_TRUE(QRegularExpression(QStringLiteral("median: decode [0-9.]+ tok/s, wall [0-9.]+ tok/s, GUI thread CPU "
                                                  "[0-9.]+% over 3 runs"))
                    .match(out)
                    .hasMatch())
        << out.toStdString();
}

}  // namespace
