// SPDX-License-Identifier: GPL-3.0-or-later
// GUI tests of what a hostile user does to the app's newer parts (issue #14): workspaces that are
// not regular files, hold values of the wrong type or ids outside the vocabulary, or a text longer
// than a prompt may be; the model panel of a bf16 checkpoint. Offscreen, the real widgets.
#include <gtest/gtest.h>

#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QDir>
#include <QLabel>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QElapsedTimer>
#include <QProcess>
#include <QTemporaryDir>

#include <sys/stat.h>

#include "retnet/generate.h"
#include "retnet/model.h"
#include "generate_bench.h"
#include "studio_test_util.h"
#include "views/lens_view.h"
#include <qcustomplot.h>

namespace {

using namespace retnet::ui;
using namespace retnet::ui::test;

QString writeFile(const QTemporaryDir& dir, const QString& name, const QByteArray& data) {
    QFile f(dir.filePath(name));
    EXPECT_TRUE(f.open(QIODevice::WriteOnly));
    f.write(data);
    return f.fileName();
}

// A version-1 workspace on the random model (seed 3, vocabulary 64) with these members.
QByteArray workspace(const QString& members) {
    return QStringLiteral(R"({"format": "retnet-studio-workspace", "version": 1, "random_model": 3%1})").arg(members).toUtf8();
}

// Each bad file is refused with one line naming it and the problem, before anything changes:
// the text on screen stays. A FIFO or /dev/zero is not opened (it would block or never end).
TEST(Hostile, BadWorkspacesAreRefusedInOneLineAndKeepTheText) {
    Window w;
    w.generate(5);
    const std::vector<int32_t> text = w.window.generateView()->tokenIds();
    ASSERT_EQ(text.size(), size_t(16 + 5));
    QTemporaryDir dir;
    ASSERT_EQ(mkfifo(QFile::encodeName(dir.filePath(QStringLiteral("fifo.json"))).constData(), 0600), 0);
    const QString tokens = QStringLiteral(R"(, "text": {"tokens": [1, 2, 3], "prompt_length": 2})");
    const std::vector<std::pair<QString, QString>> cases = {
        {dir.path(), QStringLiteral("not a regular file")},
        {dir.filePath(QStringLiteral("fifo.json")), QStringLiteral("not a regular file")},
        {QStringLiteral("/dev/zero"), QStringLiteral("not a regular file")},
        {dir.filePath(QStringLiteral("missing.json")), QStringLiteral("no such file")},
        {writeFile(dir, QStringLiteral("cut.json"), workspace(tokens).left(60)), QStringLiteral("not JSON")},
        {writeFile(dir, QStringLiteral("v.json"), R"({"format": "retnet-studio-workspace", "version": "1", "random_model": 3})"),
         QStringLiteral("not a RetNet Studio workspace of version 1")},
        {writeFile(dir, QStringLiteral("seed.json"), R"({"format": "retnet-studio-workspace", "version": 1, "random_model": "abc"})"),
         QStringLiteral("random_model: expected a seed (a whole number, 0 or more), got \"abc\"")},
        {writeFile(dir, QStringLiteral("s.json"), workspace(QStringLiteral(R"(, "text": {"tokens": [1, "a", 3]})"))),
         QStringLiteral("text.tokens[1]: expected a token id (a whole number, 0 or more), got \"a\"")},
        {writeFile(dir, QStringLiteral("f.json"), workspace(QStringLiteral(R"(, "text": {"tokens": [1, 2.5]})"))),
         QStringLiteral("text.tokens[1]: expected a token id (a whole number, 0 or more), got 2.5")},
        {writeFile(dir, QStringLiteral("n.json"), workspace(QStringLiteral(R"(, "text": {"tokens": [1, -2]})"))),
         QStringLiteral("text.tokens[1]: expected a token id (a whole number, 0 or more), got -2")},
        {writeFile(dir, QStringLiteral("p.json"), workspace(QStringLiteral(R"(, "text": {"tokens": [1, 2, 3], "prompt_length": 4})"))),
         QStringLiteral("text.prompt_length: expected a whole number from 0 to 3 (the text's tokens), got 4")},
        {writeFile(dir, QStringLiteral("t.json"), workspace(QStringLiteral(R"(, "text": "hello")"))),
         QStringLiteral("text: expected an object, got \"hello\"")},
        {writeFile(dir, QStringLiteral("g.json"), workspace(QStringLiteral(R"(, "generate": {"temperature": "0.8"})"))),
         QStringLiteral("generate.temperature: expected a number from 0 to 5, got \"0.8\"")},
        {writeFile(dir, QStringLiteral("k.json"), workspace(QStringLiteral(R"(, "generate": {"max_tokens": 1e9})"))),
         QStringLiteral("generate.max_tokens: expected a whole number from 1 to 100000, got 1000000000")},
        {writeFile(dir, QStringLiteral("form.json"), workspace(QStringLiteral(R"(, "generate": {"prefill_form": "fast"})"))),
         QStringLiteral("generate.prefill_form: expected parallel, recurrent or chunkwise, got \"fast\"")},
        {writeFile(dir, QStringLiteral("view.json"), workspace(QStringLiteral(R"(, "view": "bogus")"))),
         QStringLiteral("view: unknown view \"bogus\"")},
        {writeFile(dir, QStringLiteral("dark.json"), workspace(QStringLiteral(R"(, "dark": 1)"))),
         QStringLiteral("dark: expected true or false, got 1")},
        {writeFile(dir, QStringLiteral("mute.json"), workspace(QStringLiteral(R"(, "interventions": {"mute": 3})"))),
         QStringLiteral("interventions.mute: expected a string, got 3")},
    };
    QSignalSpy loads(w.window.controller(), &EngineController::loadStarted);
    QSignalSpy restored(&w.window, &MainWindow::workspaceRestored);
    for (const auto& [path, expected] : cases) {
        w.window.openWorkspace(path);
        EXPECT_TRUE(w.window.lastError().startsWith(QStringLiteral("Open workspace: %1: ").arg(path))) << w.window.lastError().toStdString();
        EXPECT_TRUE(w.window.lastError().contains(expected)) << w.window.lastError().toStdString() << "\n  expected: " << expected.toStdString();
    }
    QTest::qWait(200);
    EXPECT_EQ(restored.count(), 0);
    EXPECT_EQ(loads.count(), 0) << "a bad workspace replaced the model";
    EXPECT_EQ(w.window.generateView()->tokenIds(), text);
}

// Ids the model does not have are found once the model is known: one line naming the file and
// the id, and no "restored" announcement.
TEST(Hostile, WorkspaceTokensOutsideTheVocabularyAreNamed) {
    Window w;
    QTemporaryDir dir;
    const QString path = writeFile(dir, QStringLiteral("oov.json"),
                                   workspace(QStringLiteral(R"(, "text": {"tokens": [1, 2, 64], "prompt_length": 2})")));
    QSignalSpy restored(&w.window, &MainWindow::workspaceRestored);
    w.window.openWorkspace(path);
    ASSERT_TRUE(QTest::qWaitFor([&] { return !w.window.lastError().isEmpty(); }, kWaitMs));
    EXPECT_EQ(w.window.lastError(),
              QStringLiteral("Open workspace: %1: text.tokens[2] = 64 is outside the model's vocabulary [0, 64)").arg(path));
    QTest::qWait(300);
    EXPECT_EQ(restored.count(), 0);
}

// The app writes texts longer than a typed prompt may be (8192 tokens): such a workspace opens
// again, the whole text run through the model (chunkwise, in linear memory), and the candidates
// at its last position are the model's greedy choice after the tokens before it.
TEST(Hostile, WorkspaceWithALongTextOpens) {
    QTemporaryDir dir;
    const QString model = dir.filePath(QStringLiteral("tiny"));
    retnet::save_model(*tinyModel(), model.toStdString());
    std::vector<int32_t> ids;
    QJsonArray array;
    for (int i = 0; i < 9000; ++i) {
        ids.push_back((i * 7 + i / 13) % 40);
        array.append(ids.back());
    }
    const QJsonObject w{{QStringLiteral("format"), QStringLiteral("retnet-studio-workspace")},
                        {QStringLiteral("version"), 1},
                        {QStringLiteral("model"), model},
                        {QStringLiteral("text"), QJsonObject{{QStringLiteral("tokens"), array}, {QStringLiteral("prompt_length"), 100}}}};
    const QString path = writeFile(dir, QStringLiteral("long.json"), QJsonDocument(w).toJson());
    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy done(&window, &MainWindow::workspaceRestored);
    window.openWorkspace(path);
    ASSERT_TRUE(done.wait(kWaitMs)) << window.lastError().toStdString();
    window.generateView()->flushPending();
    EXPECT_EQ(window.generateView()->tokenIds(), ids);
    EXPECT_EQ(window.generateView()->promptLength(), 100);

    auto backend = retnet::make_backend("cpu", tinyModel());
    retnet::Generator generator(*backend, nullptr);
    retnet::GenerationParams params;
    params.max_new_tokens = 1;
    params.max_prompt_tokens = int(ids.size());
    params.prefill_form = retnet::Form::Recurrent;
    params.sampler.temperature = 0.0;
    params.stop_at_eos = false;
    // A text token's candidates are what the model expected at its place: read after the rest.
    const std::vector<int32_t> before(ids.begin(), ids.end() - 1);
    const std::vector<int32_t> next = generator.generate(before, params).tokens;
    ASSERT_FALSE(window.generateView()->tokens().back().top.empty());
    EXPECT_EQ(window.generateView()->tokens().back().top.front().id, next.back());
}

// A prompt longer than the app takes says so without naming the CLI's option as if it were the
// app's; the count shows "?" with that reason.
TEST(Hostile, OverlongPromptNamesTheAppsLimit) {
    Window w(tinyModel());
    GenerateView* view = w.window.generateView();
    QString prompt;
    for (int i = 0; i < 9000; ++i) prompt += QStringLiteral("5 ");
    view->setPrompt(prompt);
    ASSERT_TRUE(QTest::qWaitFor([&] { return view->promptCountText() == QStringLiteral("? tokens"); }, kWaitMs))
        << view->promptCountText().toStdString();
    const QString reason = view->findChild<QLabel*>(QStringLiteral("promptTokenCount"))->toolTip();
    EXPECT_TRUE(reason.startsWith(QStringLiteral("the prompt has 900"))) << reason.toStdString();
    EXPECT_TRUE(reason.contains(QStringLiteral("more than the app takes (8192)"))) << reason.toStdString();
    EXPECT_TRUE(w.window.lastError().isEmpty()) << "a dialog while typing: " << w.window.lastError().toStdString();
}

// The bundled model is a bf16 checkpoint and the app keeps its matrices in bf16: the panel's
// weights are what is held, about half the float32 size, not parameters × 4.
TEST(Hostile, ModelPanelCountsBf16WeightsAsHeld) {
    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    window.openModelDirectory(QStringLiteral(RETNET_DEFAULT_MODEL_DIR));
    ASSERT_TRUE(ready.wait(kWaitMs));
    const ModelInfo& info = window.controller()->modelInfo();
    const retnet::Model held = retnet::load_model(RETNET_DEFAULT_MODEL_DIR, {}, retnet::WeightStorage::AsStored);
    EXPECT_EQ(info.weightBytes, int64_t(held.weight_bytes()));
    EXPECT_LT(info.weightBytes, info.parameters * 3);  // mostly 2 bytes a parameter
    EXPECT_GT(info.weightBytes, info.parameters * 2 - 1);
    // The device box says what the CPU holds: not "float32" for bf16 weights.
    EXPECT_TRUE(info.bf16Weights);
    EXPECT_EQ(window.findChild<QComboBox*>(QStringLiteral("device"))->currentText(), QStringLiteral("cpu — bfloat16 weights"));
}

// Copy output with no text yet leaves the clipboard as it was and says so.
TEST(Hostile, CopyOutputWithoutTextKeepsTheClipboard) {
    Window w(tinyModel());
    QApplication::clipboard()->setText(QStringLiteral("the user's own text"));
    EXPECT_FALSE(w.window.generateView()->copyOutput());
    EXPECT_EQ(QApplication::clipboard()->text(), QStringLiteral("the user's own text"));
    w.generate(3);
    EXPECT_TRUE(w.window.generateView()->copyOutput());
    EXPECT_EQ(QApplication::clipboard()->text(), w.window.generateView()->outputText());
    EXPECT_TRUE(QApplication::clipboard()->text().contains(QStringLiteral("[1] [5] [9] [2] ")));
}

struct StudioRun {
    int code = -1;
    QStringList errors;  // stderr lines of the app's own ("retnet-studio: …"), not Qt's notices
    qint64 ms = 0;
};

StudioRun studio(const QStringList& args) {
    QProcess p;
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert(QStringLiteral("QT_QPA_PLATFORM"), QStringLiteral("offscreen"));
    p.setProcessEnvironment(env);
    QElapsedTimer clock;
    clock.start();
    p.start(QStringLiteral(RETNET_STUDIO_PATH), args);
    EXPECT_TRUE(p.waitForFinished(60000)) << args.join(QLatin1Char(' ')).toStdString();
    StudioRun r;
    r.ms = clock.elapsed();
    r.code = p.exitCode();
    for (const QString& line : QString::fromLocal8Bit(p.readAllStandardError()).split(QLatin1Char('\n')))
        if (line.startsWith(QStringLiteral("retnet-studio:"))) r.errors << line;
    return r;
}

// A model name that resolves to nothing (shown by the window, not by a failed load) ends
// --bench-generate and --screenshot at once with one line, instead of waiting for their timeout.
TEST(Hostile, RunnersEndAtOnceWithOneLineOnAnyError) {
    for (const QStringList& mode : {QStringList{QStringLiteral("--bench-generate"), QStringLiteral("3")},
                                    QStringList{QStringLiteral("--screenshot"), QDir::temp().filePath(QStringLiteral("never.png"))}}) {
        const StudioRun r = studio(mode + QStringList{QStringLiteral("--model"), QStringLiteral("no-such-org/no-such-model")});
        EXPECT_EQ(r.code, 1) << mode.first().toStdString();
        ASSERT_EQ(r.errors.size(), 1) << r.errors.join(QLatin1Char('\n')).toStdString();
        EXPECT_TRUE(r.errors.front().contains(QStringLiteral("no-such-org/no-such-model is neither a directory nor in the Hugging Face cache")))
            << r.errors.front().toStdString();
        EXPECT_LT(r.ms, 30000);
        const StudioRun missing = studio(mode + QStringList{QStringLiteral("--model"), QStringLiteral("/nonexistent")});
        EXPECT_EQ(missing.code, 1);
        EXPECT_EQ(missing.errors.size(), 1) << missing.errors.join(QLatin1Char('\n')).toStdString();
    }
}

// Numbers are digits only, as the CLI takes them, and the two exiting modes are not mixed.
TEST(Hostile, BenchValuesAreDigitsAndModesDoNotMix) {
    for (const QString& bad : {QStringLiteral(" 5"), QStringLiteral("+5"), QStringLiteral("5 "), QStringLiteral("0"),
                               QStringLiteral("-3"), QStringLiteral("abc"), QStringLiteral("1e3"),
                               QStringLiteral("99999999999999999999")}) {
        const StudioRun r = studio({QStringLiteral("--bench-generate"), bad});
        EXPECT_EQ(r.code, 2) << "'" << bad.toStdString() << "'";
        ASSERT_EQ(r.errors.size(), 1);
        EXPECT_EQ(r.errors.front(), QStringLiteral("retnet-studio: --bench-generate: expected a whole number from 1 to 100000, got '%1'").arg(bad));
    }
    const StudioRun both = studio({QStringLiteral("--bench-generate"), QStringLiteral("3"), QStringLiteral("--screenshot"), QStringLiteral("x.png")});
    EXPECT_EQ(both.code, 2);
    ASSERT_EQ(both.errors.size(), 1);
    EXPECT_TRUE(both.errors.front().contains(QStringLiteral("--screenshot and --bench-generate: give one of them")));
}

// The benchmark's timeout watches progress: runs that together take longer than it still finish
// while tokens keep coming.
TEST(Hostile, BenchTimeoutIsAWatchdogNotATotalLimit) {
    MainWindow window;
    GenerateBenchOptions options;
    options.maxTokens = 300;  // the bundled model: ~1 s a run on two busy cores
    options.runs = 4;
    options.timeoutMs = 2000;
    GenerateBench bench(&window, options);
    QSignalSpy finished(&bench, &GenerateBench::finished);
    QElapsedTimer clock;
    clock.start();
    bench.start();
    ASSERT_TRUE(finished.wait(kWaitMs));
    EXPECT_TRUE(finished.last().at(0).toBool()) << finished.last().at(1).toString().toStdString();
    EXPECT_TRUE(finished.last().at(1).toString().contains(QStringLiteral("over 4 runs")));
    if (clock.elapsed() <= options.timeoutMs) GTEST_SKIP() << "the runs were faster than the watchdog: nothing shown";
}

// A new model while the Lens is looked at: the view shows the new model's lens of the prompt,
// not the old text's, and hovering where the old text was no longer moves the linked cursor.
TEST(Hostile, ShownViewFollowsANewModelAndTheCursorStaysInTheText) {
    Window w(tinyModel());
    w.generate(20);
    auto* lens = static_cast<LensView*>(w.window.view(ViewId::Lens));
    w.show(ViewId::Lens);
    const int before = lens->result().tokens;
    ASSERT_GT(before, 26);
    QSignalSpy data(&w.window, &MainWindow::viewDataReady);
    w.window.useRandomModel(5);
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    ASSERT_TRUE(data.wait(kWaitMs)) << "the Lens was not recomputed for the new model";
    EXPECT_EQ(w.window.generateView()->sequenceLength(), 0);
    EXPECT_LT(lens->result().tokens, before);  // the prompt's lens now
    EXPECT_EQ(lens->result().tokens, int(kPromptIds.size()) + (before - int(kPromptIds.size()) - 20));
    auto* plot = lens->findChild<QCustomPlot*>();
    plot->replot();
    auto hover = [&](double position) {
        const QPointF at(plot->xAxis->coordToPixel(position), plot->yAxis->coordToPixel(0.0));
        QMouseEvent move(QEvent::MouseMove, at, plot->mapToGlobal(at), Qt::NoButton, Qt::NoButton, Qt::NoModifier);
        QApplication::sendEvent(plot, &move);
    };
    hover(25.0);
    EXPECT_EQ(w.window.linkedCursor()->position(), -1);
    hover(3.0);
    EXPECT_EQ(w.window.linkedCursor()->position(), 3);
}

}  // namespace
