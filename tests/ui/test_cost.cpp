// SPDX-License-Identifier: GPL-3.0-or-later
// The Cost view (issue #17), offscreen with the real widgets and engine thread: a measurement of
// the tiny model against its Transformer twin on the CPU fills both series and the table with
// the engine's numbers, point by point as they come; cancel (which keeps the points measured)
// and bad input leave one line and a usable view; out-of-memory
// points are drawn as such; the PNG of `retnet cost --plot` is written, or its error named; the
// gauge follows the generation.
#include <gtest/gtest.h>

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QImage>
#include <QProcess>
#include <QPushButton>
#include <QTableWidget>
#include <QTemporaryDir>

#include <qcustomplot.h>

#include "cost_plot.h"
#include "cost_plot_png.h"
#include "studio_test_util.h"
#include "views/cost_view.h"
#include "retnet/cost.h"

namespace {

using namespace retnet::ui;
using namespace retnet::ui::test;

CostView* costView(MainWindow& window) { return static_cast<CostView*>(window.view(ViewId::Cost)); }

// The graph of that name drawn in panel `panel` (0 memory, 1 throughput, 2 latency, 3 vs batch).
QCPGraph* graphIn(QCustomPlot* plot, int panel, const QString& name) {
    QCPAxisRect* rect = costPanel(plot, panel);
    if (!rect) return nullptr;
    for (int i = 0; i < plot->graphCount(); ++i)
        if (plot->graph(i)->keyAxis()->axisRect() == rect && plot->graph(i)->name() == name) return plot->graph(i);
    return nullptr;
}

std::vector<double> keysOf(const QCPGraph* g) {
    std::vector<double> keys;
    for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it) keys.push_back(it->key);
    return keys;
}

bool measureAndWait(EngineController* controller, CostView* view) {
    QSignalSpy measured(controller, &EngineController::costMeasured);
    view->measure();
    return measured.wait(kWaitMs);
}

TEST(CostView, MeasuresTheModelAndItsTwinAndShowsBoth) {
    Window w(tinyModel());
    CostView* view = costView(w.window);
    w.window.showView(ViewId::Cost);
    EXPECT_EQ(view->lengths(), QStringLiteral("64, 256, 1024"));  // the CPU's defaults
    view->setLengths(QStringLiteral("4, 8"));
    view->setBatches(QStringLiteral("1 2"));
    view->setDecodeSteps(3);
    ASSERT_TRUE(measureAndWait(w.window.controller(), view)) << view->note().toStdString();

    const retnet::CostReport& r = view->report();
    const ModelInfo& info = w.window.controller()->modelInfo();
    ASSERT_EQ(r.points.size(), 8u);
    EXPECT_EQ(r.device, "cpu");
    EXPECT_EQ(r.retnet_parameters, info.parameters);
    EXPECT_GT(r.transformer_parameters, 0);
    const int steps = 3 + 2;  // timed and untimed decoding steps after the prompt
    for (const retnet::CostPoint& p : r.points) {
        SCOPED_TRACE(p.model + " " + std::to_string(p.length) + "×" + std::to_string(p.batch));
        EXPECT_FALSE(p.out_of_memory);
        EXPECT_GT(p.ms_per_step, 0.0);
        EXPECT_NEAR(p.tokens_per_s, p.batch * 1000.0 / p.ms_per_step, 1e-6 * p.tokens_per_s);
        // RetNet's state is the same at every length; the twin's cache holds every token.
        const int64_t perSequence = p.model == "RetNet" ? info.stateBytes : info.kvCacheBytes(p.length + steps);
        EXPECT_EQ(p.state_bytes, p.batch * perSequence);
    }
    EXPECT_EQ(r.points.front().model, "RetNet");
    EXPECT_EQ(r.points.back().model, "Transformer");

    // Both series in every panel: the length panels at batch 1, the batch panel at length 8.
    for (int panel = 0; panel < 4; ++panel)
        for (const char* model : {"RetNet", "Transformer"}) {
            SCOPED_TRACE(std::to_string(panel) + model);
            const QCPGraph* g = graphIn(view->plot(), panel, QLatin1String(model));
            ASSERT_NE(g, nullptr);
            EXPECT_EQ(keysOf(g), panel < 3 ? std::vector<double>({4, 8}) : std::vector<double>({1, 2}));
            EXPECT_EQ(graphIn(view->plot(), panel, QStringLiteral("%1: out of memory").arg(QLatin1String(model))),
                      nullptr);
        }
    // The memory panel's values are the report's bytes.
    const QCPGraph* kv = graphIn(view->plot(), 0, QStringLiteral("Transformer"));
    EXPECT_EQ(kv->data()->at(1)->value, double(info.kvCacheBytes(8 + steps)));

    QTableWidget* table = view->table();
    ASSERT_EQ(table->rowCount(), 8);
    EXPECT_EQ(table->item(0, 0)->text(), QStringLiteral("RetNet"));
    EXPECT_EQ(table->item(7, 0)->text(), QStringLiteral("Transformer"));
    EXPECT_EQ(table->item(7, 1)->text(), QStringLiteral("8"));
    EXPECT_EQ(table->item(7, 2)->text(), QStringLiteral("2"));
    EXPECT_EQ(table->item(7, 4)->text(), QString::number(r.points[7].ms_per_step, 'f', 3));
    EXPECT_TRUE(view->note().startsWith(QStringLiteral("Measured on cpu with fp32 weights: "))) << view->note().toStdString();
    EXPECT_TRUE(view->csv().startsWith(QStringLiteral("model,length,batch,")));
    EXPECT_EQ(view->csv().count(QLatin1Char('\n')), 9);
}

TEST(CostView, CancelMidwayLeavesTheViewUsableWithOneLine) {
    Window w(tinyModel());
    CostView* view = costView(w.window);
    view->setLengths(QStringLiteral("4"));
    view->setBatches(QStringLiteral("1"));
    view->setDecodeSteps(100000);  // minutes: only a cancel ends it in time
    double cancelledAt = -1.0;
    QObject::connect(w.window.controller(), &EngineController::costProgress, view, [&](double fraction) {
        if (cancelledAt < 0) cancelledAt = fraction, view->cancel();
    });
    QSignalSpy failed(w.window.controller(), &EngineController::costFailed);
    view->measure();
    EXPECT_TRUE(view->isMeasuring());
    ASSERT_TRUE(failed.wait(kWaitMs));
    EXPECT_GE(cancelledAt, 0.0);  // 0: asked within the first prefill
    EXPECT_LT(cancelledAt, 0.5);
    EXPECT_FALSE(view->isMeasuring());
    EXPECT_EQ(view->note(), QStringLiteral("Cancelled."));
    EXPECT_FALSE(view->hasData());
    EXPECT_TRUE(w.window.lastError().isEmpty()) << w.window.lastError().toStdString();  // no dialog

    // Still usable: the next measurement runs to its end.
    view->setDecodeSteps(2);
    ASSERT_TRUE(measureAndWait(w.window.controller(), view));
    EXPECT_EQ(view->report().points.size(), 2u);
    EXPECT_TRUE(view->findChild<QPushButton*>(QStringLiteral("costMeasure"))->isEnabled());
}

// Each point reaches the table and the curves as the engine measures it, while the rest runs; a
// cancel then keeps the points measured and says how many of how many.
TEST(CostView, ShowsEachPointAsItComesAndACancelKeepsThem) {
    Window w(tinyModel());
    CostView* view = costView(w.window);
    w.window.showView(ViewId::Cost);
    view->setLengths(QStringLiteral("4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15"));
    view->setBatches(QStringLiteral("1"));
    view->setDecodeSteps(5000);  // 24 points of 5002 steps: far longer than the cancel takes to arrive
    EngineController* controller = w.window.controller();
    retnet::CostPoint first;
    int rowsAtFirst = -1;
    bool measuringAtFirst = false;
    std::vector<double> retnetKeys, transformerKeys;
    QString msCell;
    // Connected after the view's own handler, so it sees what the view made of the point.
    const auto connection = QObject::connect(controller, &EngineController::costPointMeasured, view,
                                             [&](const retnet::CostReport& soFar) {
        if (rowsAtFirst >= 0) return;
        first = soFar.points.front();
        rowsAtFirst = view->table()->rowCount();
        measuringAtFirst = view->isMeasuring();
        msCell = view->table()->item(0, 4)->text();
        retnetKeys = keysOf(graphIn(view->plot(), 0, QStringLiteral("RetNet")));
        transformerKeys = keysOf(graphIn(view->plot(), 0, QStringLiteral("Transformer")));
        view->cancel();
    });
    QSignalSpy failed(controller, &EngineController::costFailed);
    view->measure();
    ASSERT_TRUE(failed.wait(kWaitMs));
    QObject::disconnect(connection);

    EXPECT_EQ(rowsAtFirst, 1);
    EXPECT_TRUE(measuringAtFirst);
    EXPECT_EQ(first.model, "RetNet");
    EXPECT_EQ(first.length, 4);
    EXPECT_EQ(msCell, QString::number(first.ms_per_step, 'f', 3));
    EXPECT_EQ(retnetKeys, std::vector<double>({4}));
    EXPECT_TRUE(transformerKeys.empty());

    const retnet::CostReport& kept = view->report();
    ASSERT_GE(kept.points.size(), 1u);
    EXPECT_LT(kept.points.size(), 24u);
    EXPECT_EQ(kept.points.front().ms_per_step, first.ms_per_step);
    EXPECT_EQ(view->table()->rowCount(), int(kept.points.size()));
    EXPECT_EQ(keysOf(graphIn(view->plot(), 0, QStringLiteral("RetNet"))).size(), std::min<size_t>(kept.points.size(), 12));
    EXPECT_EQ(view->note(), QStringLiteral("Cancelled after %1 of 24 points; the table and the curves keep those "
                                           "measured.").arg(kept.points.size()));
    EXPECT_FALSE(view->isMeasuring());
    EXPECT_TRUE(view->hasData());
    EXPECT_TRUE(view->table()->isColumnHidden(7));  // the CPU measures no GPU memory
    EXPECT_TRUE(w.window.lastError().isEmpty()) << w.window.lastError().toStdString();
}

TEST(CostView, BadListsAreNamedInOneLineAndNothingRuns) {
    Window w(tinyModel());
    CostView* view = costView(w.window);
    view->setLengths(QStringLiteral("4, x"));
    view->measure();
    EXPECT_FALSE(view->isMeasuring());
    EXPECT_EQ(view->note(), QStringLiteral("Not measured: lengths: \"x\" is not a whole number from 1 to 1048576"));
    view->setLengths(QStringLiteral("4"));
    view->setBatches(QStringLiteral(" , "));
    view->measure();
    EXPECT_EQ(view->note(), QStringLiteral("Not measured: batches: type at least one number"));
    EXPECT_FALSE(w.window.controller()->isMeasuringCost());
}

// A report as `retnet cost` on a small GPU might give it: the twin's 32k point does not fit.
retnet::CostReport handMadeReport() {
    retnet::CostReport r;
    r.device = "cuda:0";
    r.retnet_parameters = 1000;
    r.transformer_parameters = 1004;
    for (const char* model : {"RetNet", "Transformer"})
        for (int length : {1024, 4096, 32768})
            for (int batch : {1, 8}) {
                retnet::CostPoint p;
                p.model = model, p.length = length, p.batch = batch;
                const bool retnet = p.model == "RetNet";
                if (!retnet && length == 32768) {
                    p.out_of_memory = true;
                    p.note = "CUDA out of memory";
                } else {
                    p.ms_per_step = retnet ? 1.0 : 1.0 + length / 4096.0;
                    p.tokens_per_s = batch * 1000.0 / p.ms_per_step;
                    p.state_bytes = batch * (retnet ? 1 << 20 : int64_t(length) * 4096);
                }
                r.points.push_back(p);
            }
    return r;
}

TEST(CostPlot, OutOfMemoryPointsAreCrossesAtTheTopWithALabel) {
    QCustomPlot plot;
    plot.resize(1000, 800);
    const retnet::CostReport report = handMadeReport();
    drawCostPlot(&plot, report);
    EXPECT_EQ(costPlotBatch(report), 1);
    EXPECT_EQ(costPlotLength(report), 32768);
    for (int panel = 0; panel < 4; ++panel) {
        SCOPED_TRACE(panel);
        const QCPGraph* oom = graphIn(&plot, panel, QStringLiteral("Transformer: out of memory"));
        ASSERT_NE(oom, nullptr);
        EXPECT_EQ(oom->lineStyle(), QCPGraph::lsNone);
        EXPECT_EQ(oom->scatterStyle().shape(), QCPScatterStyle::ssCross);
        // At 32k in the length panels; at every batch in the batch panel (which shows 32k).
        EXPECT_EQ(keysOf(oom), panel < 3 ? std::vector<double>({32768}) : std::vector<double>({1, 8}));
        const QCPGraph* measured = graphIn(&plot, panel, QStringLiteral("Transformer"));
        ASSERT_NE(measured, nullptr);
        EXPECT_EQ(measured->data()->size(), panel < 3 ? 2 : 0);
        // Above every measured value, inside the panel.
        const QCPRange range = oom->valueAxis()->range();
        for (const QCPGraph* g : std::initializer_list<const QCPGraph*>{measured, graphIn(&plot, panel, QStringLiteral("RetNet"))})
            for (auto it = g->data()->constBegin(); it != g->data()->constEnd(); ++it)
                EXPECT_GT(oom->data()->at(0)->value, it->value);
        EXPECT_TRUE(range.contains(oom->data()->at(0)->value));
        EXPECT_EQ(graphIn(&plot, panel, QStringLiteral("RetNet: out of memory")), nullptr);
    }
    // 1k … 32k and batches 1 … 8 on logarithmic axes; 1 … 2 ms on a linear one.
    EXPECT_EQ(costPanel(&plot, 0)->axis(QCPAxis::atBottom)->scaleType(), QCPAxis::stLogarithmic);
    EXPECT_EQ(costPanel(&plot, 3)->axis(QCPAxis::atBottom)->scaleType(), QCPAxis::stLogarithmic);
    EXPECT_EQ(costPanel(&plot, 2)->axis(QCPAxis::atLeft)->scaleType(), QCPAxis::stLinear);
    int labels = 0;
    for (int i = 0; i < plot.itemCount(); ++i)
        if (auto* t = qobject_cast<QCPItemText*>(plot.item(i)); t && t->text() == QLatin1String("Transformer: out of memory"))
            ++labels;
    EXPECT_EQ(labels, 4);

    // The view shows the same report, and its table says which points did not fit.
    Window w(tinyModel());
    CostView* view = costView(w.window);
    view->showReport(report);
    EXPECT_NE(graphIn(view->plot(), 0, QStringLiteral("Transformer: out of memory")), nullptr);
    EXPECT_EQ(view->table()->item(10, 8)->text(), QStringLiteral("out of memory: CUDA out of memory"));
    EXPECT_TRUE(view->note().endsWith(QStringLiteral("2 point(s) did not fit"))) << view->note().toStdString();
}

// An out-of-memory label stays inside its panel wherever the crosses are: at the last length (left
// of them), at the first (right of them: before, the label ran off the panel's left edge and read
// "mory"), or at every length (under them).
TEST(CostPlot, OutOfMemoryLabelsStayInsideTheirPanel) {
    for (const std::vector<int>& oom_lengths : std::vector<std::vector<int>>{{32768}, {1024}, {1024, 4096, 32768}}) {
        retnet::CostReport report = handMadeReport();
        for (retnet::CostPoint& p : report.points) {
            if (p.model != "Transformer") continue;
            p.out_of_memory = std::find(oom_lengths.begin(), oom_lengths.end(), p.length) != oom_lengths.end();
            if (!p.out_of_memory) p.ms_per_step = 1.5, p.tokens_per_s = 1000.0, p.state_bytes = 1 << 20;
        }
        QCustomPlot plot;
        plot.resize(1000, 800);
        drawCostPlot(&plot, report);
        plot.replot();
        int labels = 0;
        for (int i = 0; i < plot.itemCount(); ++i) {
            auto* t = qobject_cast<QCPItemText*>(plot.item(i));
            if (!t || t->text() != QLatin1String("Transformer: out of memory")) continue;
            ++labels;
            const QRectF panel = t->clipAxisRect()->rect();
            const QRectF text(t->topLeft->pixelPosition(), t->bottomRight->pixelPosition());
            EXPECT_TRUE(panel.contains(text)) << "out of memory at " << oom_lengths.front() << "…: label at "
                                              << text.left() << ".." << text.right() << ", panel " << panel.left()
                                              << ".." << panel.right();
        }
        // one a panel that shows an out-of-memory point: the batch panel shows 32k only
        const bool at_32k = std::find(oom_lengths.begin(), oom_lengths.end(), 32768) != oom_lengths.end();
        EXPECT_EQ(labels, at_32k ? 4 : 3);
    }
}

TEST(CostPlot, PngIsWrittenAndABadPathIsNamedInOneLine) {
    QTemporaryDir dir;
    const QString path = dir.filePath(QStringLiteral("cost.png"));
    QString error;
    ASSERT_TRUE(save_cost_plot_png(handMadeReport(), path, &error)) << error.toStdString();
    QFile file(path);
    ASSERT_TRUE(file.open(QIODevice::ReadOnly));
    EXPECT_EQ(file.read(8), QByteArray("\x89PNG\r\n\x1a\n", 8));
    const QImage image(path);
    EXPECT_GE(image.width(), 1400);
    EXPECT_GE(image.height(), 1000);
    EXPECT_EQ(image.text(QStringLiteral("device")), QStringLiteral("cuda:0"));

    // The CLI's entry point, without Qt types.
    std::string message;
    const std::string cliPath = dir.filePath(QStringLiteral("cli.png")).toStdString();
    EXPECT_TRUE(retnet::write_cost_plot_png(handMadeReport(), cliPath, &message)) << message;
    EXPECT_GT(fileSize(QString::fromStdString(cliPath)), 1000);

    const std::string bad = "/nonexistent-directory-of-the-test/cost.png";
    EXPECT_FALSE(retnet::write_cost_plot_png(handMadeReport(), bad, &message));
    EXPECT_EQ(message.rfind(bad + ": ", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_FALSE(save_cost_plot_png(retnet::CostReport(), path + QStringLiteral("2.png"), &error));
    EXPECT_TRUE(error.endsWith(QStringLiteral("nothing to plot (the report has no points)"))) << error.toStdString();
}

TEST(CostView, GaugeFollowsTheGeneration) {
    auto model = tinyModel();
    Window w(model);
    w.generate(5);
    CostView* view = costView(w.window);
    const ModelInfo& info = w.window.controller()->modelInfo();
    const int64_t position = int64_t(kPromptIds.size()) + 5;
    // The app's KV-cache figure is the twin's, as the engine counts it.
    const retnet::ModelConfig twin = retnet::transformer_twin_config(model->config);
    EXPECT_EQ(info.kvCacheBytes(position), retnet::sequence_state_bytes(twin, position));
    EXPECT_EQ(info.stateBytes, retnet::sequence_state_bytes(model->config, position));
    const QString gauge = view->gaugeText();
    const auto bytes = [](int64_t n) { return QLocale::c().formattedDataSize(n, 1, QLocale::DataSizeIecFormat); };
    EXPECT_TRUE(gauge.contains(QStringLiteral("At position %1").arg(position))) << gauge.toStdString();
    EXPECT_TRUE(gauge.contains(QStringLiteral("RetNet state <b>%1</b>").arg(bytes(info.stateBytes))));
    EXPECT_TRUE(gauge.contains(QStringLiteral("KV cache <b>%1</b>").arg(bytes(info.kvCacheBytes(position)))));
    EXPECT_TRUE(gauge.contains(QStringLiteral("over 5 generated"))) << gauge.toStdString();
}

// The lists a model opens with are sized for where it runs: the GPU's when the backend says it
// runs on one (whatever its name), the CPU's otherwise; a list the user typed stays.
TEST(CostView, DefaultListsFollowWhereTheBackendRuns) {
    CostView view;
    ModelInfo info;
    info.device = QStringLiteral("gpu-of-another-name");
    info.onDevice = true;
    view.setModelInfo(info);
    EXPECT_EQ(view.lengths(), QStringLiteral("1024, 4096, 16384, 32768"));
    EXPECT_EQ(view.batches(), QStringLiteral("1, 8, 16, 64"));
    info.device = QStringLiteral("cuda-named-but-on-the-host");
    info.onDevice = false;
    view.setModelInfo(info);
    EXPECT_EQ(view.lengths(), QStringLiteral("64, 256, 1024"));
    EXPECT_EQ(view.batches(), QStringLiteral("1, 4"));
    view.setLengths(QStringLiteral("8, 16"));
    view.setModelInfo(info);
    EXPECT_EQ(view.lengths(), QStringLiteral("8, 16"));
}

}  // namespace

namespace {

// A Transformer opened in the app has no twin to measure against: one line, and the gauge says so.
TEST(CostView, ATransformerModelIsNamedInOneLine) {
    auto twin = std::make_shared<const retnet::Model>(
        retnet::make_transformer_twin(tinyConfig(retnet::Family::Fla), 5));
    Window w(twin);
    CostView* view = costView(w.window);
    view->setLengths(QStringLiteral("4"));
    view->setBatches(QStringLiteral("1"));
    QSignalSpy failed(w.window.controller(), &EngineController::costFailed);
    view->measure();
    ASSERT_TRUE(failed.wait(kWaitMs));
    EXPECT_EQ(view->note(), QStringLiteral("Not measured: this model is a Transformer: open a RetNet to compare it "
                                           "with its twin"));
    EXPECT_FALSE(view->isMeasuring());
    EXPECT_TRUE(view->gaugeText().contains(QStringLiteral("this Transformer's KV cache"))) << view->gaugeText().toStdString();
}

}  // namespace

namespace {

// `retnet cost --plot` of this build (Qt on): the PNG is written with the app's panels, the CLI's
// stderr holds only its own progress, and an unwritable path is one error line and status 1.
TEST(CostPlot, CliPlotWritesThePngOrNamesThePath) {
    QTemporaryDir dir;
    const QString png = dir.filePath(QStringLiteral("cost.png"));
    const QStringList args = {QStringLiteral("cost"), QStringLiteral("--model"), QStringLiteral(RETNET_DEFAULT_MODEL_DIR),
                              QStringLiteral("--lengths"), QStringLiteral("8,16"), QStringLiteral("--batch"),
                              QStringLiteral("1,2"), QStringLiteral("--decode-steps"), QStringLiteral("2"),
                              QStringLiteral("--plot")};
    QProcess cli;
    cli.start(QStringLiteral(RETNET_CLI_PATH), args + QStringList{png});
    ASSERT_TRUE(cli.waitForFinished(kWaitMs));
    const QString err = QString::fromUtf8(cli.readAllStandardError());
    EXPECT_EQ(cli.exitCode(), 0) << err.toStdString();
    EXPECT_FALSE(err.contains(QStringLiteral("QStandardPaths"))) << err.toStdString();
    const QImage image(png);
    EXPECT_GE(image.width(), 1400);
    EXPECT_EQ(image.text(QStringLiteral("device")), QStringLiteral("cpu"));

    // A path that cannot take the picture is refused before anything is measured: one line, no table.
    const auto refused = [&](const QString& path, const QString& line) {
        cli.start(QStringLiteral(RETNET_CLI_PATH), args + QStringList{path});
        ASSERT_TRUE(cli.waitForFinished(kWaitMs));
        EXPECT_EQ(cli.exitCode(), 1) << path.toStdString();
        EXPECT_TRUE(cli.readAllStandardOutput().isEmpty()) << path.toStdString();
        EXPECT_EQ(QString::fromUtf8(cli.readAllStandardError()), line + QLatin1Char('\n'));
    };
    refused(QStringLiteral("/nonexistent-directory-of-the-test/c.png"),
            QStringLiteral("retnet cost: error: --plot /nonexistent-directory-of-the-test/c.png: "
                           "/nonexistent-directory-of-the-test does not exist"));
    ASSERT_TRUE(QDir(dir.path()).mkdir(QStringLiteral("folder.png")));
    refused(dir.filePath(QStringLiteral("folder.png")),
            QStringLiteral("retnet cost: error: --plot %1 is a directory").arg(dir.filePath(QStringLiteral("folder.png"))));
    // A symlink named .png that points to another kind of file (say /etc/passwd) leaves that file alone.
    const QString precious = dir.filePath(QStringLiteral("passwd")), link = dir.filePath(QStringLiteral("link.png"));
    {
        QFile f(precious);
        ASSERT_TRUE(f.open(QIODevice::WriteOnly));
        f.write("root:x:0:0:root:/root:/bin/bash\n");
    }
    ASSERT_TRUE(QFile::link(precious, link));
    refused(link, QStringLiteral("retnet cost: error: --plot %1 is a symlink to %2, not to a .png or .pdf file; it is "
                                 "not overwritten").arg(link, QFileInfo(precious).canonicalFilePath()));
    QFile kept(precious);
    ASSERT_TRUE(kept.open(QIODevice::ReadOnly));
    EXPECT_EQ(kept.readAll(), QByteArray("root:x:0:0:root:/root:/bin/bash\n"));
}

}  // namespace
