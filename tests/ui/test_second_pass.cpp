// SPDX-License-Identifier: GPL-3.0-or-later
// GUI tests of the app's second pass (issue #14) and its robustness (issue #13), on the offscreen
// platform with the real widgets: the window fits a small laptop, the equivalence view follows
// its settings and answers in one sentence, edits and device switches keep the text, retention
// axes count positions, exports carry their context, whitespace is visible, the dark theme
// greys disabled controls, the command line is checked, bad model directories and unwritable
// export paths give one clear line.
#include <gtest/gtest.h>

#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QImage>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QProcess>
#include <QSlider>
#include <QSpinBox>
#include <QStatusBar>
#include <QTableWidget>
#include <QTemporaryDir>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>

#include <qcustomplot.h>

#include "main_window.h"
#include "plot_utils.h"
#include "retnet/model.h"
#include "studio_test_util.h"
#include "views/equivalence_view.h"
#include "views/generate_view.h"
#include "views/lens_view.h"
#include "views/recurrence_view.h"
#include "views/retention_view.h"

namespace {

using namespace retnet::ui;
using namespace retnet::ui::test;

// #14.1: every tab of the window fits 1024×700, in both themes, also after toggling them.
TEST(SecondPass, WindowFitsASmallLaptopInBothThemes) {
    Window w;
    w.generate(6);
    for (bool dark : {false, true, false, true}) {
        w.window.setDarkTheme(dark);
        for (int i = 0; i < kViewCount; ++i) {
            w.window.showView(ViewId(i));
            QApplication::processEvents();
            const QSize min = w.window.minimumSizeHint();
            const std::string where = viewName(ViewId(i)).toStdString() + (dark ? ", dark" : ", light");
            EXPECT_LE(min.width(), 1024) << where;
            EXPECT_LE(min.height(), 700) << where;
        }
        w.window.resize(1024, 700);
        QApplication::processEvents();
        EXPECT_EQ(w.window.size(), QSize(1024, 700)) << (dark ? "dark" : "light");
    }
}

// #14.2: ticking eps = 0 or changing the chunk size recomputes; the verdict is one sentence; the
// heat map has one fixed range whatever the errors, with the tolerance on its colour bar; a new
// model clears the old model's header.
TEST(SecondPass, EquivalenceFollowsItsSettingsAndSaysItsAnswer) {
    Window w(tinyModel(retnet::Family::TorchScale));
    auto* view = w.window.equivalenceView();
    w.show(ViewId::Equivalence);
    ASSERT_TRUE(view->hasData());
    EXPECT_GT(view->result().report->head_norm_eps, 0.0);
    const QString before = view->verdict();
    EXPECT_TRUE(before.startsWith(QStringLiteral("PASS")) || before.startsWith(QStringLiteral("FAIL"))) << before.toStdString();
    if (before.startsWith(QStringLiteral("FAIL"))) {
        EXPECT_TRUE(before.contains(QStringLiteral("eps"))) << before.toStdString();
    }
    auto* heat = view->findChild<QCPColorMap*>();
    ASSERT_NE(heat, nullptr);
    EXPECT_EQ(heat->dataRange(), QCPRange(-12, 2));

    QSignalSpy data(view, &ViewBase::dataReady);
    view->findChild<QCheckBox*>()->click();  // eps = 0
    ASSERT_TRUE(data.wait(kWaitMs));
    EXPECT_EQ(view->result().report->head_norm_eps, 0.0);
    EXPECT_TRUE(view->verdict().startsWith(QStringLiteral("PASS: the three forms agree"))) << view->verdict().toStdString();
    EXPECT_EQ(heat->dataRange(), QCPRange(-12, 2));
    auto* verdictLabel = view->findChild<QLabel*>(QStringLiteral("equivalenceVerdict"));
    ASSERT_NE(verdictLabel, nullptr);
    EXPECT_EQ(verdictLabel->text(), view->verdict());

    view->findChild<QSpinBox*>()->setValue(3);
    ASSERT_TRUE(data.wait(kWaitMs));
    EXPECT_EQ(view->result().report->chunk_size, 3);
    bool tolOnBar = false;
    for (QCPColorScale* scale : w.window.findChildren<QCPColorScale*>())
        for (const QString& label : qSharedPointerDynamicCast<QCPAxisTickerText>(scale->axis()->ticker())
                                        ? qSharedPointerDynamicCast<QCPAxisTickerText>(scale->axis()->ticker())->ticks().values()
                                        : QList<QString>())
            tolOnBar |= label.startsWith(QStringLiteral("tol "));
    EXPECT_TRUE(tolOnBar);

    w.window.useRandomModel(5);  // another model: nothing of the old one stays on screen
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    EXPECT_FALSE(view->hasData());
    EXPECT_FALSE(verdictLabel->text().startsWith(QStringLiteral("PASS")) || verdictLabel->text().startsWith(QStringLiteral("FAIL")))
        << verdictLabel->text().toStdString();
    // The view looked at is recomputed for the new model (an fla model: its forms agree).
    ASSERT_TRUE(data.wait(kWaitMs));
    EXPECT_TRUE(view->verdict().startsWith(QStringLiteral("PASS: the three forms agree"))) << view->verdict().toStdString();
    EXPECT_EQ(verdictLabel->text(), view->verdict());
}

// #14.3: generating in the app costs the GUI thread little (no per-token relayouts, no replots
// of hidden views), so the app decodes about as fast as `retnet generate`. Both speeds are
// printed; the check is on the GUI thread's own CPU time, which does not depend on machine load.
TEST(SecondPass, GenerationLeavesTheGuiThreadMostlyIdle) {
    const QString dir = QStringLiteral(RETNET_DEFAULT_MODEL_DIR);
    const QString prompt = QStringLiteral("Once upon a time");
    QProcess cli;
    cli.start(QStringLiteral(RETNET_CLI_PATH), {QStringLiteral("generate"), QStringLiteral("--model"), dir, QStringLiteral("--prompt"),
                                                prompt, QStringLiteral("--max-new-tokens"), QStringLiteral("1000"), QStringLiteral("--json")});
    ASSERT_TRUE(cli.waitForFinished(kWaitMs));
    const QJsonObject summary = QJsonDocument::fromJson(cli.readAllStandardOutput().trimmed().split('\n').last()).object();

    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    window.openModelDirectory(dir);
    ASSERT_TRUE(ready.wait(kWaitMs));
    GenerateView* view = window.generateView();
    view->setPrompt(prompt);
    view->setMaxTokens(1000);
    QSignalSpy done(window.controller(), &EngineController::generationFinished);
    timespec start {}, end {}, wall_start {}, wall_end {};
    const auto seconds = [](const timespec& a, const timespec& b) {
        return double(b.tv_sec - a.tv_sec) + 1e-9 * double(b.tv_nsec - a.tv_nsec);
    };
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    clock_gettime(CLOCK_MONOTONIC, &wall_start);
    emit view->generateRequested();
    ASSERT_TRUE(done.wait(kWaitMs));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end);
    clock_gettime(CLOCK_MONOTONIC, &wall_end);
    const double guiSeconds = seconds(start, end), wallSeconds = seconds(wall_start, wall_end);
    const auto stats = done.last().at(0).value<GenerationStats>();
    std::printf("decode: app %.1f tok/s (%d tokens), retnet generate %.1f tok/s (%d tokens); GUI thread CPU %.2f s "
                "over %.2f s from the request to the end (%.2f s of decoding)\n",
                stats.decodeTokensPerSecond(), stats.generated, summary.value(QStringLiteral("tokens_per_s")).toDouble(),
                summary.value(QStringLiteral("generated_tokens")).toInt(), guiSeconds, wallSeconds, stats.decodeMs / 1000.0);
    ASSERT_GT(stats.generated, 50);
    // The GUI thread's CPU over the same window as its wall time: from the request to the end, the
    // prefill and the last update included (the decoding time alone left those out, so a fast
    // decode of 300 tokens, 0.66 s in a CI run, counted that fixed work, ~0.05 s, against too short
    // a time: 18 %). 1,000 tokens: ~11 % on the CI machine, the fixed part amortized.
    EXPECT_LT(guiSeconds, 0.15 * wallSeconds);
}

// #14.4: Apply, Clear and a device switch keep the generated text; a refused edit keeps the
// retention view's data.
TEST(SecondPass, InterventionsAndDeviceSwitchKeepTheText) {
    Window w;
    w.generate(6);
    GenerateView* g = w.window.generateView();
    const QString text = g->outputText();
    const int64_t length = g->sequenceLength();
    ASSERT_EQ(length, 16 + 6);
    w.show(ViewId::Retention);
    auto* retention = static_cast<RetentionView*>(w.window.view(ViewId::Retention));
    ASSERT_TRUE(retention->hasData());

    auto* mute = w.window.findChild<QLineEdit*>(QStringLiteral("muteHeads"));
    auto* apply = w.window.findChild<QPushButton*>(QStringLiteral("applyInterventions"));
    mute->setText(QStringLiteral("1.0"));
    apply->click();
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    EXPECT_EQ(g->outputText(), text);
    EXPECT_EQ(g->sequenceLength(), length);

    mute->setText(QStringLiteral("7.0"));  // no layer 7: refused by the engine
    apply->click();
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    EXPECT_TRUE(w.window.lastError().contains(QStringLiteral("layer 7"))) << w.window.lastError().toStdString();
    EXPECT_TRUE(retention->hasData());
    EXPECT_EQ(g->outputText(), text);

    w.window.controller()->setDevice(QStringLiteral("reference"));
    ASSERT_TRUE(w.ready.wait(kWaitMs));
    EXPECT_EQ(w.window.controller()->modelInfo().device, QStringLiteral("reference"));
    EXPECT_EQ(g->outputText(), text);
    // Continue goes on from the kept sequence.
    QSignalSpy done(w.window.controller(), &EngineController::generationFinished);
    g->setMaxTokens(3);
    emit g->continueRequested();
    ASSERT_TRUE(done.wait(kWaitMs));
    g->flushPending();
    EXPECT_EQ(g->sequenceLength(), length + 3);
    EXPECT_TRUE(g->outputText().startsWith(text));
}

// #14.5: downsampled cells are drawn at the positions they cover; the hover names them.
TEST(SecondPass, RetentionAxesCountPositionsAfterDownsampling) {
    Engine engine;
    QStringList ids;
    for (int i = 0; i < 101; ++i) ids << QString::number(i % 40);
    RetentionRequest r;
    r.maxCells = 32;
    const auto m = analyse<RetentionMatrix>(
        engine.controller, ViewId::Retention, [r](AnalysisContext& c) { return computeRetention(c, r); },
        ids.join(QLatin1Char(' ')));
    ASSERT_EQ(m.stride, 4);
    ASSERT_EQ(m.size, 26);
    RetentionView view;
    view.resize(900, 700);
    view.setModelInfo(engine.controller.modelInfo());
    view.setMatrix(m);
    auto* plot = view.findChild<QCustomPlot*>();
    auto* map = view.findChild<QCPColorMap*>();
    ASSERT_TRUE(plot && map);
    EXPECT_EQ(plot->xAxis->range().upper, 100.5);
    EXPECT_EQ(plot->yAxis->range().upper, 100.5);
    EXPECT_EQ(map->data()->keyRange().lower, 1.5);           // cell 0 covers positions 0–3
    EXPECT_EQ(map->data()->keyRange().upper, 25 * 4 + 1.5);  // cell 25 starts at position 100
    double key = 0, value = 0;
    map->data()->cellToCoord(25, 0, &key, &value);
    EXPECT_EQ(key, 101.5);
    const QString hover = view.describeCell(100, 5);
    EXPECT_TRUE(hover.contains(QStringLiteral("query 100 "))) << hover.toStdString();
    EXPECT_TRUE(hover.contains(QStringLiteral("keys 4–7"))) << hover.toStdString();
    EXPECT_TRUE(view.describeCell(97, 0).contains(QStringLiteral("queries 96–99")));
    EXPECT_TRUE(view.describeCell(101, 0).isEmpty());  // past the text
}

// #14.6: the PNG, PDF and CSV of a view name the model, the view's settings and its answer.
TEST(SecondPass, ExportsCarryTheirMetadata) {
    Window w(tinyModel(retnet::Family::TorchScale));
    w.generate(4);
    w.show(ViewId::Equivalence);
    QTemporaryDir out;
    QString error;
    const QString metadata = w.window.exportMetadata();
    EquivalenceView* eq = w.window.equivalenceView();
    ASSERT_TRUE(eq->exportImage(out.filePath(QStringLiteral("eq.png")), &error, metadata)) << error.toStdString();
    const QImage png(out.filePath(QStringLiteral("eq.png")));
    EXPECT_EQ(png.text(QStringLiteral("Title")), QStringLiteral("Equivalence"));
    EXPECT_EQ(png.text(QStringLiteral("family")), QStringLiteral("torchscale"));
    EXPECT_EQ(png.text(QStringLiteral("verdict")), eq->verdict());
    EXPECT_FALSE(png.text(QStringLiteral("head_norm_eps")).isEmpty());
    EXPECT_TRUE(png.text(QStringLiteral("pair_parallel_recurrent")).contains(QStringLiteral("nmse=")));
    ASSERT_TRUE(eq->exportCsv(out.filePath(QStringLiteral("eq.csv")), metadata, &error)) << error.toStdString();
    QFile csv(out.filePath(QStringLiteral("eq.csv")));
    ASSERT_TRUE(csv.open(QIODevice::ReadOnly));
    const QString text = QString::fromUtf8(csv.readAll());
    for (const char* key : {"# model: ", "# chunk_size: 4\n", "# head_norm_eps: ", "# tolerance: 0.0001\n", "# verdict: "})
        EXPECT_TRUE(text.contains(QLatin1String(key))) << key;

    w.show(ViewId::Retention);
    auto* retention = static_cast<RetentionView*>(w.window.view(ViewId::Retention));
    retention->setLayerHead(1, 1);
    QSignalSpy data(retention, &ViewBase::dataReady);
    ASSERT_TRUE(data.wait(kWaitMs));
    ASSERT_TRUE(retention->exportCsv(out.filePath(QStringLiteral("r.csv")), metadata, &error));
    QFile rcsv(out.filePath(QStringLiteral("r.csv")));
    ASSERT_TRUE(rcsv.open(QIODevice::ReadOnly));
    const QString rtext = QString::fromUtf8(rcsv.readAll());
    for (const char* key : {"# layer: 1\n", "# head: 1\n", "# form: parallel\n", "# text_tokens: 13\n"})
        EXPECT_TRUE(rtext.contains(QLatin1String(key))) << key;
    ASSERT_TRUE(retention->exportImage(out.filePath(QStringLiteral("r.png")), &error, metadata));
    EXPECT_EQ(QImage(out.filePath(QStringLiteral("r.png"))).text(QStringLiteral("head")), QStringLiteral("1"));
    ASSERT_TRUE(retention->exportImage(out.filePath(QStringLiteral("r.pdf")), &error, metadata));
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("r.pdf"))), 1000);
}

// #14.7: in the dark theme disabled controls look disabled and plots are dark.
TEST(SecondPass, DarkThemeGreysDisabledControlsAndDarkensPlots) {
    Window w;
    w.window.setDarkTheme(true);
    const QPalette pal = QApplication::palette();
    const QColor on = pal.color(QPalette::Active, QPalette::ButtonText);
    const QColor off = pal.color(QPalette::Disabled, QPalette::ButtonText);
    EXPECT_GT(on.lightness() - off.lightness(), 60);
    EXPECT_GT(pal.color(QPalette::Active, QPalette::Text).lightness() - pal.color(QPalette::Disabled, QPalette::Text).lightness(), 60);
    w.show(ViewId::Retention);
    auto* plot = w.window.view(ViewId::Retention)->findChild<QCustomPlot*>();
    ASSERT_NE(plot, nullptr);
    const QImage image = plot->toPixmap(300, 300).toImage();
    EXPECT_LT(QColor(image.pixel(5, 5)).lightness(), 80);      // background
    EXPECT_LT(QColor(image.pixel(250, 60)).lightness(), 100);  // a masked (future) cell
    w.window.setDarkTheme(false);
}

// #14.8: spaces, newlines and empty pieces are shown as visible marks everywhere tokens are listed.
TEST(SecondPass, WhitespaceTokensAreVisible) {
    EXPECT_EQ(visibleToken(QStringLiteral(" ")), QStringLiteral("␣"));
    EXPECT_EQ(visibleToken(QStringLiteral(" a\n")), QStringLiteral("␣a↵"));
    EXPECT_EQ(visibleToken(QStringLiteral("\t")), QStringLiteral("⇥"));
    EXPECT_EQ(visibleToken(QString()), QStringLiteral("∅"));
    LensResult r;
    r.layers = 1;
    r.tokens = 2;
    r.labels = {QStringLiteral(" "), QStringLiteral("\n")};
    r.nextProb = {0.5, -1.0};
    r.top = {{{7, QStringLiteral(" "), 0.5}}, {{8, QStringLiteral("\n"), 0.25}}};
    LensView view;
    view.setResult(r);
    view.selectCell(0, 0);
    auto* table = view.findChild<QTableWidget*>();
    ASSERT_TRUE(table && table->rowCount() == 1);
    EXPECT_EQ(table->item(0, 0)->text(), QStringLiteral("␣"));
}

// #14.9: a good run clears an old error from the status bar; the model panel's memory figures
// follow the text once a generation ends.
TEST(SecondPass, NoStaleTexts) {
    Window w;
    w.window.generateView()->setPrompt(QStringLiteral("one two"));  // not token ids: refused
    w.generate(2);
    EXPECT_FALSE(w.window.statusBar()->currentMessage().isEmpty());
    w.window.generateView()->setPrompt(QStringLiteral("5"));
    w.generate(1);
    EXPECT_FALSE(w.window.statusBar()->currentMessage().contains(QStringLiteral("token ids")))
        << w.window.statusBar()->currentMessage().toStdString();
    bool updated = false;
    for (QLabel* label : w.window.findChildren<QLabel*>())
        updated |= label->text().contains(QStringLiteral("KV cache at 2 tokens"));
    EXPECT_TRUE(updated);
}

// #14.10: the command line is checked before any window opens: bad values give one line and exit
// status 2 at once; --help needs no display and lists every view.
TEST(SecondPass, CommandLineIsChecked) {
    auto run = [](const QStringList& args, bool display) {
        QProcess p;
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        if (!display) {
            env.remove(QStringLiteral("QT_QPA_PLATFORM"));
            env.remove(QStringLiteral("DISPLAY"));
            env.remove(QStringLiteral("WAYLAND_DISPLAY"));
        }
        p.setProcessEnvironment(env);
        p.start(QStringLiteral(RETNET_STUDIO_PATH), args);
        EXPECT_TRUE(p.waitForFinished(20000)) << args.join(QLatin1Char(' ')).toStdString();
        return std::make_tuple(p.exitCode(), QString::fromLocal8Bit(p.readAllStandardOutput()),
                               QString::fromLocal8Bit(p.readAllStandardError()));
    };
    const auto [helpCode, help, helpErr] = run({QStringLiteral("--help")}, false);
    EXPECT_EQ(helpCode, 0) << helpErr.toStdString();
    EXPECT_TRUE(help.startsWith(QStringLiteral("Usage: retnet-studio")));
    EXPECT_TRUE(help.simplified().contains(QStringLiteral("generate, equivalence, decay, retention, state, lens, recurrence")));
    for (const QStringList& bad : {QStringList{QStringLiteral("--screenshot"), QStringLiteral("/tmp/x.png"),
                                               QStringLiteral("--view"), QStringLiteral("bogus")},
                                   QStringList{QStringLiteral("--size"), QStringLiteral("10x10")},
                                   QStringList{QStringLiteral("--max-tokens"), QStringLiteral("-5")},
                                   QStringList{QStringLiteral("--bench-generate"), QStringLiteral("0")},
                                   QStringList{QStringLiteral("--bench-runs"), QStringLiteral("x")},
                                   QStringList{QStringLiteral("--no-such-option")}}) {
        const auto [code, out, err] = run(bad, false);
        EXPECT_EQ(code, 2) << bad.join(QLatin1Char(' ')).toStdString();
        EXPECT_EQ(err.count(QLatin1Char('\n')), 1) << err.toStdString();
        EXPECT_TRUE(err.startsWith(QStringLiteral("retnet-studio: "))) << err.toStdString();
    }
    EXPECT_TRUE(std::get<2>(run({QStringLiteral("--view"), QStringLiteral("bogus")}, false)).contains(QStringLiteral("lens")));
}

// The step-through of the recurrence: the traced states are the recurrent form's, each step's new
// term is rank one (k_nᵀ v_n), the row beside it is the parallel form's scores, and the
// controls step within the text.
TEST(SecondPass, RecurrenceStepThroughFollowsTheEngine) {
    Engine engine;
    const RecurrenceRequest request{1, 1};
    const auto t = analyse<RecurrenceTrace>(engine.controller, ViewId::Recurrence,
                                            [request](AnalysisContext& c) { return computeRecurrence(c, request); });
    ASSERT_EQ(t.tokens, 9);
    ASSERT_EQ(t.dk, 8);
    ASSERT_EQ(t.dv, 8);
    EXPECT_NEAR(t.gamma, std::exp(double(engine.model->weights.log_decay[1])), 1e-12);

    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::ForwardOptions recurrent;
    recurrent.form = retnet::Form::Recurrent;
    backend->forward(std::span(kPromptIds).first(5), recurrent);
    const retnet::RecurrentState state = backend->snapshot();
    const std::vector<float>& S = state.layers[1].S;  // (H, Dk, Dv)
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(t.state(4)[i], S[size_t(64 + i)], 1e-5f) << i;

    for (int n = 1; n < t.tokens; ++n) {  // S_n − γ S_(n−1) is an outer product: every 2×2 minor vanishes
        auto d = [&](int r, int c) { return double(t.state(n)[r * 8 + c]) - t.gamma * t.state(n - 1)[r * 8 + c]; };
        double scale = 0.0;
        for (int i = 0; i < 64; ++i) scale = std::max(scale, std::abs(d(i / 8, i % 8)));
        for (int r = 1; r < 8; ++r)
            for (int c = 1; c < 8; ++c)
                EXPECT_NEAR(d(r, c) * d(0, 0), d(r, 0) * d(0, c), 1e-4 * scale * scale) << "n=" << n;
    }
    retnet::Introspection probe;
    probe.score_layer = 1;
    probe.score_head = 1;
    retnet::make_backend("cpu", engine.model)->forward(kPromptIds, {}, &probe);
    ASSERT_EQ(t.scores->size(), probe.scores.data.size());
    for (size_t i = 0; i < probe.scores.data.size(); ++i) EXPECT_EQ((*t.scores)[i], probe.scores.data[i]);

    RecurrenceView view;
    view.setModelInfo(engine.controller.modelInfo());
    view.setTrace(t);
    view.setPosition(4);
    EXPECT_EQ(view.position(), 4);
    EXPECT_GT(view.updateMagnitude(4), 0.0);
    view.setPosition(100);
    EXPECT_EQ(view.position(), 8);
    auto* slider = view.findChild<QSlider*>();
    ASSERT_NE(slider, nullptr);
    slider->setValue(2);
    EXPECT_EQ(view.position(), 2);
    const QStringList csv = view.csv().split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    EXPECT_EQ(csv.size(), 1 + 8);
}

// #13 for the app: a FIFO where a model file belongs, weights larger than the machine's memory,
// and exports to places that cannot be written each give one clear line; the app stays usable.
TEST(SecondPass, BadModelDirectoriesAndExportPathsGiveOneClearLine) {
    Window w;
    QTemporaryDir dir;
    const QString fifoModel = dir.filePath(QStringLiteral("fifo"));
    ASSERT_TRUE(QDir().mkpath(fifoModel));
    ASSERT_EQ(mkfifo(QFile::encodeName(fifoModel + QStringLiteral("/config.json")).constData(), 0600), 0);
    QSignalSpy failed(w.window.controller(), &EngineController::loadFailed);
    w.window.openModelDirectory(fifoModel);
    ASSERT_TRUE(failed.wait(kWaitMs));
    EXPECT_TRUE(failed.last().at(0).toString().contains(QStringLiteral("config.json: not a regular file")))
        << failed.last().at(0).toString().toStdString();

    const QString huge = dir.filePath(QStringLiteral("huge"));
    retnet::save_model(*tinyModel(), huge.toStdString());
    {
        QFile weights(huge + QStringLiteral("/model.safetensors"));
        ASSERT_TRUE(weights.open(QIODevice::ReadWrite));
        const qint64 memory = qint64(sysconf(_SC_PHYS_PAGES)) * qint64(sysconf(_SC_PAGE_SIZE));
        ASSERT_TRUE(weights.resize(2 * memory));  // sparse: no disk is used
    }
    w.window.openModelDirectory(huge);
    ASSERT_TRUE(failed.wait(kWaitMs));
    EXPECT_TRUE(failed.last().at(0).toString().contains(QStringLiteral("more than this machine's memory")))
        << failed.last().at(0).toString().toStdString();
    EXPECT_TRUE(w.window.controller()->hasModel());  // the previous model is still in use
    w.generate(2);
    EXPECT_EQ(w.window.generateView()->sequenceLength(), 16 + 2);

    QString error;
    const QString unwritable = dir.filePath(QStringLiteral("no/such/dir/x.png"));
    EXPECT_FALSE(w.window.generateView()->exportImage(unwritable, &error));
    EXPECT_TRUE(error.startsWith(unwritable + QStringLiteral(": "))) << error.toStdString();
    EXPECT_FALSE(w.window.generateView()->exportCsv(dir.filePath(QStringLiteral("no/x.csv")), QString(), &error));
    EXPECT_TRUE(error.contains(QStringLiteral("x.csv: "))) << error.toStdString();
    // A FIFO (or device) as the export path is refused, not replaced by a regular file.
    const QString fifo = dir.filePath(QStringLiteral("out.csv"));
    ASSERT_EQ(mkfifo(QFile::encodeName(fifo).constData(), 0600), 0);
    EXPECT_FALSE(w.window.generateView()->exportCsv(fifo, QString(), &error));
    EXPECT_TRUE(error.contains(QStringLiteral("not a regular file"))) << error.toStdString();
    struct stat st {};
    ASSERT_EQ(stat(QFile::encodeName(fifo).constData(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

}  // namespace
