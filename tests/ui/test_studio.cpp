// SPDX-License-Identifier: GPL-3.0-or-later
// GUI tests on the offscreen platform: the controller and engine thread with the CPU backend and
// a tiny random model, every view fed real engine output and checked against the engine run
// directly, exports written, the main window and --screenshot end to end.
#include <gtest/gtest.h>

#include <QDir>
#include <QFileInfo>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QProcess>
#include <QComboBox>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <cmath>
#include <any>
#include <functional>
#include <memory>
#include <optional>

#include "engine_controller.h"
#include "studio_test_util.h"
#include "main_window.h"
#include "retnet/equivalence.h"
#include "retnet/generate.h"
#include "retnet/intervention.h"
#include "retnet/lens.h"
#include "retnet/model.h"
#include "retnet/model_stats.h"
#include "retnet/sampler.h"
#include "retnet/retention_reach.h"
#include "screenshot.h"
#include "views/decay_view.h"
#include "views/equivalence_view.h"
#include "views/generate_view.h"
#include "views/lens_view.h"
#include "views/retention_view.h"
#include "views/state_view.h"

namespace {

using namespace retnet::ui;
using namespace retnet::ui::test;

// ---- controller and worker -----------------------------------------------------------------

TEST(Controller, ModelInfoDescribesTheModel) {
    Engine engine;
    const ModelInfo& info = engine.controller.modelInfo();
    EXPECT_EQ(info.family, QStringLiteral("fla"));
    EXPECT_EQ(info.layers, 2);
    EXPECT_EQ(info.heads, 2);
    EXPECT_EQ(info.headDimK, 8);
    EXPECT_EQ(info.parameters, engine.model->parameter_count());
    EXPECT_EQ(info.stateBytes, 2 * 2 * 8 * 8 * 4);
    EXPECT_EQ(info.kvCacheBytes(100), 100 * 2 * (8 + 8) * 2 * 4);
    EXPECT_EQ(info.device, QStringLiteral("cpu"));
    ASSERT_EQ(info.logDecay.size(), 2u);
    EXPECT_FLOAT_EQ(info.logDecay[0], std::log(0.96875f));
    EXPECT_FALSE(info.hasTokenizer);
}

// The app's state size is core's model_stats(), which `retnet info` prints: for torchscale it
// includes the float64 normalizer r_n of every layer and head.
TEST(Controller, StateSizeIsCoresForTorchscale) {
    Engine engine(retnet::Family::TorchScale);
    const ModelInfo& info = engine.controller.modelInfo();
    EXPECT_EQ(info.stateBytes, retnet::model_stats(*engine.model, 0).state_bytes_fp32);
    EXPECT_EQ(info.stateBytes, 2 * 2 * 8 * 8 * 4 + 2 * 2 * 8);
}

// Interventions reinstall the loaded model with the edits: generation then follows core's edited
// model, the decay shown is the override, and clearing them restores the model as loaded.
TEST(Controller, InterventionsReinstallTheEditedModel) {
    Engine engine;
    const retnet::Interventions edits = retnet::parse_interventions("0.0,1.1", "1=0.5");
    QSignalSpy ready(&engine.controller, &EngineController::modelLoaded);
    engine.controller.setInterventions(edits);
    ASSERT_TRUE(ready.wait(kWaitMs));
    const ModelInfo& info = engine.controller.modelInfo();
    EXPECT_EQ(info.interventions, QStringLiteral("mute 0.0,1.1; gamma 1=0.5"));
    EXPECT_FLOAT_EQ(info.logDecay[1], std::log(0.5f));
    EXPECT_FLOAT_EQ(info.logDecay[0], std::log(0.96875f));
    auto edited = std::make_shared<const retnet::Model>(retnet::apply_interventions(*engine.model, edits));
    const std::vector<int32_t> expected = greedyReference(edited, 8);
    ASSERT_NE(expected, greedyReference(engine.model, 8));  // the edits change this model's output
    std::vector<SequenceToken> events = engine.run(greedy(8));
    ASSERT_EQ(events.size(), kPromptIds.size() + 8);
    for (size_t i = 0; i < 8; ++i) EXPECT_EQ(events[kPromptIds.size() + i].id, expected[i]) << i;

    // A head the model does not have: an error, and the edits in force stay.
    QSignalSpy errors(&engine.controller, &EngineController::errorOccurred);
    engine.controller.setInterventions(retnet::parse_interventions("7.0", ""));
    ASSERT_TRUE(errors.wait(kWaitMs));
    EXPECT_TRUE(errors.last().at(1).toString().contains(QStringLiteral("cannot mute layer 7")));
    ASSERT_TRUE(ready.count() > 1 || ready.wait(kWaitMs));
    EXPECT_EQ(engine.controller.modelInfo().interventions, QStringLiteral("mute 0.0,1.1; gamma 1=0.5"));

    engine.controller.setInterventions({});
    ASSERT_TRUE(ready.wait(kWaitMs));
    EXPECT_TRUE(engine.controller.modelInfo().interventions.isEmpty());
    events = engine.run(greedy(8));
    const std::vector<int32_t> plain = greedyReference(engine.model, 8);
    for (size_t i = 0; i < 8; ++i) EXPECT_EQ(events[kPromptIds.size() + i].id, plain[i]) << i;
}

TEST(Controller, GreedyGenerationMatchesTheEngine) {
    Engine engine;
    GenerationStats stats;
    const std::vector<SequenceToken> events = engine.run(greedy(8), &stats);
    ASSERT_EQ(events.size(), kPromptIds.size() + 8);
    for (size_t i = 0; i < kPromptIds.size(); ++i) {
        EXPECT_TRUE(events[i].prompt);
        EXPECT_EQ(events[i].id, kPromptIds[i]);
        EXPECT_EQ(events[i].position, int64_t(i));
    }
    const std::vector<int32_t> expected = greedyReference(engine.model, 8);
    for (size_t i = 0; i < 8; ++i) {
        const SequenceToken& e = events[kPromptIds.size() + i];
        EXPECT_FALSE(e.prompt);
        EXPECT_EQ(e.id, expected[i]) << "token " << i;
        EXPECT_EQ(e.position, int64_t(kPromptIds.size() + i));
        ASSERT_FALSE(e.top.empty());
        EXPECT_EQ(e.top.front().id, e.id);  // greedy picks the most likely token
        double sum = 0.0;
        for (const TokenCandidate& c : e.top) sum += c.prob;
        EXPECT_LE(sum, 1.0 + 1e-9);
        EXPECT_EQ(e.text, QStringLiteral("[%1] ").arg(e.id));
    }
    EXPECT_TRUE(stats.finished);
    EXPECT_EQ(stats.generated, 8);
    EXPECT_EQ(stats.promptTokens, int(kPromptIds.size()));
    EXPECT_GT(stats.prefillMs, 0.0);
    EXPECT_EQ(stats.stopReason, QStringLiteral("length"));
    EXPECT_FALSE(engine.controller.isGenerating());
}

// Prompt tokens carry what the model expected there: the softmax of the prefill's logits row
// before them, with the prompt's own token included even when it is not among the top ones.
TEST(Controller, PromptTokensCarryTheModelsCandidates) {
    Engine engine;
    const std::vector<SequenceToken> events = engine.run(greedy(2));
    ASSERT_EQ(events.size(), kPromptIds.size() + 2);
    EXPECT_TRUE(events[0].top.empty());  // nothing predicts the first token
    const retnet::Tensor logits = retnet::make_backend("cpu", engine.model)->forward(kPromptIds, {});  // (T, V)
    const int64_t V = logits.dim(1);
    for (size_t i = 1; i < kPromptIds.size(); ++i) {
        const SequenceToken& e = events[i];
        ASSERT_TRUE(e.prompt);
        ASSERT_GE(e.top.size(), 10u) << "position " << i;
        const float* row = logits.data.data() + (i - 1) * size_t(V);
        double peak = row[0], sum = 0.0;
        for (int64_t v = 0; v < V; ++v) peak = std::max(peak, double(row[v]));
        for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - peak);
        bool hasOwnToken = false;
        for (const TokenCandidate& c : e.top) {
            EXPECT_NEAR(c.prob, std::exp(double(row[c.id]) - peak) / sum, 1e-6) << "position " << i << " id " << c.id;
            hasOwnToken = hasOwnToken || c.id == e.id;
        }
        EXPECT_TRUE(hasOwnToken) << "position " << i;
        for (size_t k = 1; k < 10; ++k) EXPECT_GE(e.top[k - 1].prob, e.top[k].prob);
    }
}

TEST(Controller, StopEndsALongGeneration) {
    Engine engine;
    GenerateRequest r = greedy(100000);
    QObject::connect(&engine.controller, &EngineController::tokenGenerated, &engine.controller,
                     [&](const SequenceToken& e) {
                         if (!e.prompt) engine.controller.stopGeneration();
                     });
    GenerationStats stats;
    const auto events = engine.run(r, &stats);
    EXPECT_EQ(stats.stopReason, QStringLiteral("stopped"));
    EXPECT_LT(stats.generated, 1000);
    EXPECT_GE(stats.generated, 1);
    EXPECT_EQ(int(events.size()), int(kPromptIds.size()) + stats.generated);
}

TEST(Controller, ForkReplacesATokenAndContinuesFromItsState) {
    Engine engine;
    engine.run(greedy(6));
    const int64_t p = int64_t(kPromptIds.size()) + 2;
    QSignalSpy truncated(&engine.controller, &EngineController::sequenceTruncated);
    GenerateRequest fork = greedy(4);
    fork.forkPosition = p;
    fork.forkToken = 33;
    const auto events = engine.run(fork);
    ASSERT_GE(truncated.count(), 1);
    EXPECT_EQ(truncated.last().at(0).value<int64_t>(), p);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front().position, p);
    EXPECT_EQ(events.front().id, 33);

    // The same continuation computed directly: prompt + 2 greedy tokens + 33, then greedy.
    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::Generator generator(*backend, nullptr);
    retnet::GenerationParams params;
    params.sampler.temperature = 0.0;
    params.max_new_tokens = 6;
    generator.generate(kPromptIds, params);
    params.max_new_tokens = 4;
    const auto expected = generator.fork(p, 33, params).tokens;
    ASSERT_EQ(events.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(events[i].id, expected[i]);
}

TEST(Controller, ContinueExtendsTheSequence) {
    Engine engine;
    engine.run(greedy(3));
    GenerateRequest more = greedy(3);
    more.continuePrevious = true;
    const auto events = engine.run(more);
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events.front().position, int64_t(kPromptIds.size()) + 3);
    const auto expected = greedyReference(engine.model, 6);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(events[i].id, expected[3 + i]);
}

TEST(Controller, BadPromptReportsAnError) {
    Engine engine;
    QSignalSpy errors(&engine.controller, &EngineController::errorOccurred);
    GenerateRequest r = greedy(2);
    r.prompt = QStringLiteral("hello");
    engine.run(r);
    ASSERT_GE(errors.count(), 1);
    EXPECT_TRUE(errors.last().at(1).toString().contains(QStringLiteral("token ids")));
}

TEST(Controller, StaleRetentionResultsAreDropped) {
    Engine engine;
    std::vector<int> layers;
    QObject receiver;
    auto ask = [&](int layer) {
        RetentionRequest r;
        r.layer = layer;
        engine.controller.analyse(
            AnalysisRequest{JobRef{Job::Analysis, ViewId::Retention, 0}, kPrompt,
                            [r](AnalysisContext& c) { return std::any(computeRetention(c, r)); }},
            &receiver, [&](const std::any& v) { layers.push_back(std::any_cast<const RetentionMatrix&>(v).layer); });
    };
    ask(0);
    ask(1);  // before the first can be answered
    ASSERT_TRUE(QTest::qWaitFor([&] { return !layers.empty(); }, kWaitMs));
    QTest::qWait(200);
    ASSERT_EQ(layers.size(), 1u);
    EXPECT_EQ(layers.front(), 1);
}

TEST(Controller, LoadsAModelDirectoryAndReportsBadOnes) {
    QTemporaryDir dir;
    ASSERT_TRUE(dir.isValid());
    const auto model = tinyModel();
    retnet::save_model(*model, dir.path().toStdString());
    EngineController controller;
    QSignalSpy progress(&controller, &EngineController::loadProgress);
    QSignalSpy ready(&controller, &EngineController::modelLoaded);
    controller.openModelDirectory(dir.path());
    ASSERT_TRUE(ready.wait(kWaitMs));
    EXPECT_EQ(controller.modelInfo().parameters, model->parameter_count());
    EXPECT_EQ(controller.modelInfo().directory, dir.path());

    QSignalSpy failed(&controller, &EngineController::loadFailed);
    controller.openModelDirectory(dir.path() + QStringLiteral("/missing"));
    ASSERT_TRUE(failed.wait(kWaitMs));
    EXPECT_TRUE(failed.last().at(0).toString().contains(QStringLiteral("missing")));
}

// ---- views fed real engine output ----------------------------------------------------------

TEST(Views, EquivalenceMatchesCoreAndExports) {
    Engine engine;
    EquivalenceView view;
    view.resize(900, 700);
    view.setModelInfo(engine.controller.modelInfo());
    const EquivalenceRequest request = view.request();
    EXPECT_EQ(request.chunkSize, 4);
    const auto result = analyse<EquivalenceResult>(engine.controller, ViewId::Equivalence, [request](AnalysisContext& c) {
        return computeEquivalence(c, request);
    });
    ASSERT_TRUE(result.report);
    view.setResult(result);

    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::EquivalenceOptions options;
    options.chunk_size = 4;
    const auto direct = retnet::compare_forms(*backend, kPromptIds, options);
    ASSERT_EQ(result.report->pairs.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(result.report->pairs[i].max_abs, direct.pairs[i].max_abs);
        EXPECT_EQ(view.badgeText(int(i)), direct.pairs[i].passed() ? QStringLiteral("PASS") : QStringLiteral("FAIL"));
    }
    EXPECT_EQ(result.labels.size(), qsizetype(kPromptIds.size()));
    EXPECT_EQ(result.sweep.size(), request.sweepSizes.size());

    QTemporaryDir out;
    QString error;
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("eq.png")), &error)) << error.toStdString();
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("eq.pdf")), &error)) << error.toStdString();
    ASSERT_TRUE(view.exportCsv(out.filePath(QStringLiteral("eq.csv")), QStringLiteral("model: tiny"), &error));
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("eq.png"))), 1000);
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("eq.pdf"))), 1000);
    QFile csv(out.filePath(QStringLiteral("eq.csv")));
    ASSERT_TRUE(csv.open(QIODevice::ReadOnly));
    const QString text = QString::fromUtf8(csv.readAll());
    EXPECT_TRUE(text.startsWith(QStringLiteral("# model: tiny\n")));
    // one heat row per pair, position and column (L layers + logits), plus summaries and sweep
    EXPECT_EQ(text.count(QStringLiteral("\nheat,")), 3 * 9 * 3);
}

TEST(Views, TorchscaleFormsAgreeOnlyWithZeroEps) {
    Engine engine(retnet::Family::TorchScale);
    EquivalenceView view;
    view.setModelInfo(engine.controller.modelInfo());
    view.setZeroEps(true);
    const EquivalenceRequest request = view.request();
    const auto zero = analyse<EquivalenceResult>(engine.controller, ViewId::Equivalence, [request](AnalysisContext& c) {
        return computeEquivalence(c, request);
    });
    ASSERT_TRUE(zero.report);
    EXPECT_EQ(zero.report->head_norm_eps, 0.0);
    for (const auto& p : zero.report->pairs) EXPECT_LT(p.rel, 1e-4);
}

TEST(Views, RetentionShowsTheBackendScores) {
    Engine engine;
    RetentionView view;
    view.resize(900, 700);
    view.setModelInfo(engine.controller.modelInfo());
    RetentionRequest r;
    r.layer = 1;
    const auto matrix = analyse<RetentionMatrix>(engine.controller, ViewId::Retention,
                                                 [r](AnalysisContext& c) { return computeRetention(c, r); });
    const auto overview = analyse<RetentionOverview>(engine.controller, ViewId::Retention, [](AnalysisContext& c) {
        return computeRetentionOverview(c);
    });
    ASSERT_TRUE(matrix.scores && overview.scores);
    view.setMatrix(matrix);
    view.setOverview(overview);
    EXPECT_TRUE(view.hasOverview());
    EXPECT_EQ(view.layer(), 1);
    const int T = int(kPromptIds.size());
    ASSERT_EQ(matrix.size, T);
    EXPECT_EQ(matrix.stride, 1);
    EXPECT_EQ(matrix.labels.front(), QStringLiteral("[1]"));

    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::Introspection probe;
    probe.score_layer = 1;
    probe.score_head = 0;
    probe.want_all_head_scores = true;
    backend->forward(kPromptIds, {}, &probe);
    ASSERT_EQ(probe.scores.numel(), int64_t(2 * T * T));
    for (int64_t i = 0; i < probe.scores.numel(); ++i) EXPECT_EQ((*matrix.scores)[size_t(i)], probe.scores.data[size_t(i)]);
    // Each head's reach is core's, from the full scores and that head's γ, and the note shows it.
    const std::vector<retnet::HeadReach> reach = retnet::retention_reach(probe.scores, engine.model->weights.log_decay);
    ASSERT_EQ(matrix.reach.size(), 2u);
    for (int h = 0; h < 2; ++h) {
        const retnet::HeadReach& expected = reach[size_t(h)];
        EXPECT_EQ(matrix.reach[size_t(h)].queries, expected.queries);
        EXPECT_DOUBLE_EQ(matrix.reach[size_t(h)].mean_distance, expected.mean_distance);
        EXPECT_DOUBLE_EQ(matrix.reach[size_t(h)].decay_only_distance, expected.decay_only_distance);
    }
    bool noteShowsReach = false;
    for (const QLabel* label : view.findChildren<QLabel*>())
        noteShowsReach |= label->text().contains(
            QStringLiteral("reads %1 tokens back").arg(matrix.reach[0].mean_distance, 0, 'f', 1));
    EXPECT_TRUE(noteShowsReach);

    view.setLayerHead(1, 1);
    QTemporaryDir out;
    QString error;
    ASSERT_TRUE(view.exportCsv(out.filePath(QStringLiteral("r.csv")), QString(), &error));
    QFile csv(out.filePath(QStringLiteral("r.csv")));
    ASSERT_TRUE(csv.open(QIODevice::ReadOnly));
    QStringList lines = QString::fromUtf8(csv.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    lines.removeIf([](const QString& l) { return l.startsWith(QLatin1Char('#')); });  // the view's metadata
    ASSERT_EQ(lines.size(), T + 1);
    // Row 3 of head 1, key 2.
    EXPECT_FLOAT_EQ(lines[4].split(QLatin1Char(','))[3].toFloat(), probe.scores.data[size_t(T * T + 3 * T + 2)]);
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("r.png")), &error));
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("r.png"))), 1000);
}

// The form selector: torchscale's forms normalize rows differently, so the recurrent form's
// scores differ from the parallel form's and must equal the backend's recurrent introspection.
TEST(Views, RetentionFormSelectorRequestsThatFormsScores) {
    Engine engine(retnet::Family::TorchScale);
    RetentionView view;
    view.setModelInfo(engine.controller.modelInfo());
    QSignalSpy requested(&view, &RetentionView::layerRequested);
    auto* form = view.findChild<QComboBox*>();
    ASSERT_NE(form, nullptr);
    form->setCurrentIndex(form->findText(QStringLiteral("recurrent")));
    ASSERT_EQ(requested.count(), 1);
    EXPECT_EQ(view.form(), retnet::Form::Recurrent);

    RetentionRequest r;
    r.layer = 0;
    r.form = view.form();
    r.chunkSize = view.chunkSize();
    const auto matrix = analyse<RetentionMatrix>(engine.controller, ViewId::Retention,
                                                 [r](AnalysisContext& c) { return computeRetention(c, r); });
    ASSERT_TRUE(matrix.scores);
    EXPECT_EQ(matrix.form, QStringLiteral("recurrent"));

    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::Introspection probe;
    probe.score_layer = 0;
    probe.want_all_head_scores = true;
    retnet::ForwardOptions recurrent;
    recurrent.form = retnet::Form::Recurrent;
    backend->forward(kPromptIds, recurrent, &probe);
    ASSERT_EQ(size_t(probe.scores.numel()), matrix.scores->size());
    for (int64_t i = 0; i < probe.scores.numel(); ++i) EXPECT_EQ((*matrix.scores)[size_t(i)], probe.scores.data[size_t(i)]);
}

TEST(Views, RetentionDownsamplesLongTexts) {
    Engine engine;
    QStringList ids;
    for (int i = 0; i < 100; ++i) ids << QString::number(i % 40);
    RetentionRequest r;
    r.maxCells = 32;
    const auto m = analyse<RetentionMatrix>(
        engine.controller, ViewId::Retention, [r](AnalysisContext& c) { return computeRetention(c, r); },
        ids.join(QLatin1Char(' ')));
    ASSERT_TRUE(m.scores);
    EXPECT_EQ(m.tokens, 100);
    EXPECT_EQ(m.stride, 4);
    EXPECT_EQ(m.size, 25);
    EXPECT_EQ(m.scores->size(), size_t(2 * 25 * 25));
}

TEST(Views, StateViewHoldsTheNormsOfTheGeneration) {
    Engine engine;
    StateView view;
    view.setModelInfo(engine.controller.modelInfo());
    QObject::connect(&engine.controller, &EngineController::stateNormsReady, &view, &StateView::addFrames);
    engine.run(greedy(5));
    // The last sampled token is not fed yet: the state has consumed prompt + 4 tokens.
    const auto expected = greedyReference(engine.model, 5);
    std::vector<int32_t> sequence = kPromptIds;
    sequence.insert(sequence.end(), expected.begin(), expected.end() - 1);
    ASSERT_EQ(view.positions(), int64_t(sequence.size()));

    auto backend = retnet::make_backend("cpu", engine.model);
    retnet::Introspection probe;
    probe.want_state_norms = true;
    backend->forward(sequence, {}, &probe);
    for (int64_t t = 0; t < view.positions(); ++t)
        for (int l = 0; l < 2; ++l)
            for (int h = 0; h < 2; ++h)
                EXPECT_NEAR(view.norm(t, l, h), probe.state_norms.data[size_t((t * 2 + l) * 2 + h)],
                            1e-5 * (1 + std::abs(view.norm(t, l, h))))
                    << "t=" << t << " l=" << l << " h=" << h;
    QTemporaryDir out;
    QString error;
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("s.pdf")), &error));
    ASSERT_TRUE(view.exportCsv(out.filePath(QStringLiteral("s.csv")), QString(), &error));
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("s.pdf"))), 1000);
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("s.csv"))), 100);
}

// The lens the worker sends is the core's logit_lens of the same text, and the view shows it.
TEST(Views, LensShowsTheEngineLens) {
    Engine engine;
    const LensResult r = analyse<LensResult>(engine.controller, ViewId::Lens,
                                             [](AnalysisContext& c) { return computeLens(c, 4); });
    const int T = int(kPromptIds.size()), L = engine.model->config.n_layers;
    ASSERT_EQ(r.tokens, T);
    ASSERT_EQ(r.layers, L);

    retnet::Introspection probe;
    probe.want_layer_outputs = true;
    retnet::make_backend("cpu", engine.model)->forward(kPromptIds, {}, &probe);
    const auto expected = retnet::logit_lens(*engine.model, probe.layer_outputs, kPromptIds, 4);
    for (int l = 0; l < L; ++l)
        for (int t = 0; t < T; ++t) {
            EXPECT_NEAR(r.nextProb[size_t(l) * T + t], expected[size_t(l)][size_t(t)].next_prob, 1e-12);
            ASSERT_EQ(r.cell(l, t).size(), 4u);
            for (size_t k = 0; k < 4; ++k) EXPECT_EQ(r.cell(l, t)[k].id, expected[size_t(l)][size_t(t)].top[k].id);
        }
    EXPECT_EQ(r.nextProb[size_t(L - 1) * T + T - 1], -1.0);  // nothing follows the last token

    LensView view;
    view.setResult(r);
    EXPECT_TRUE(view.hasData());
    const QStringList lines = view.csv().split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    ASSERT_EQ(lines.size(), 1 + L * T);
    EXPECT_EQ(lines.front(), QStringLiteral("layer,position,token,p_next,top1,p_top1"));
    EXPECT_TRUE(lines[1].startsWith(QStringLiteral("0,0,\"[1]\",")));
}

TEST(Views, DecayStatisticsAndExport) {
    const DecayStats s = decayStats(std::log(0.96875f), 0.01);
    EXPECT_NEAR(s.halfLife, std::log(0.5) / std::log(0.96875), 1e-4);
    EXPECT_NEAR(s.span, std::log(0.01) / std::log(0.96875), 1e-3);
    EXPECT_TRUE(std::isinf(decayStats(0.0f, 0.01).halfLife));  // γ = 1 in float32 for h ≥ 20

    DecayView view;
    view.resize(800, 600);
    view.setDecay(retnet::default_log_decay(4));
    view.setTextLength(50);
    QTemporaryDir out;
    QString error;
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("d.png")), &error));
    ASSERT_TRUE(view.exportCsv(out.filePath(QStringLiteral("d.csv")), QString(), &error));
    QFile csv(out.filePath(QStringLiteral("d.csv")));
    ASSERT_TRUE(csv.open(QIODevice::ReadOnly));
    const QStringList lines = QString::fromUtf8(csv.readAll()).split(QLatin1Char('\n'), Qt::SkipEmptyParts);
    EXPECT_EQ(lines.front(), QStringLiteral("n,head0,head1,head2,head3"));
    const QStringList second = lines[2].split(QLatin1Char(','));  // n = step
    const double n = second[0].toDouble();
    EXPECT_NEAR(second[1].toDouble(), std::pow(0.96875, n), 1e-6);
}

TEST(Views, GenerateViewShowsTokensAndForks) {
    Engine engine;
    GenerateView view;
    view.setModelInfo(engine.controller.modelInfo());
    QObject::connect(&engine.controller, &EngineController::tokenGenerated, &view, &GenerateView::appendToken);
    QObject::connect(&engine.controller, &EngineController::sequenceTruncated, &view, &GenerateView::truncate);
    view.setPrompt(kPrompt);
    GenerateRequest r = view.request();
    r.sampler.temperature = 0.0;
    r.maxTokens = 4;
    engine.run(r);
    view.flushPending();
    ASSERT_EQ(view.sequenceLength(), int64_t(kPromptIds.size() + 4));
    EXPECT_TRUE(view.outputText().startsWith(QStringLiteral("[1] [5] [9] ")));

    const int64_t p = int64_t(kPromptIds.size()) + 1;
    QSignalSpy fork(&view, &GenerateView::forkRequested);
    view.selectToken(p);
    EXPECT_EQ(view.selectedPosition(), int(p));
    QTemporaryDir out;
    QString error;
    ASSERT_TRUE(view.exportCsv(out.filePath(QStringLiteral("g.csv")), QString(), &error));
    ASSERT_TRUE(view.exportImage(out.filePath(QStringLiteral("g.png")), &error));
    EXPECT_GT(fileSize(out.filePath(QStringLiteral("g.png"))), 1000);

    view.truncate(p);
    EXPECT_EQ(view.sequenceLength(), p);
    EXPECT_EQ(view.selectedPosition(), -1);
}

// ---- main window -----------------------------------------------------------------------------

TEST(MainWindowTest, RandomModelThemesAndViews) {
    MainWindow window;
    window.setQuiet(true);
    window.show();
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    window.useRandomModel(3);
    ASSERT_TRUE(ready.wait(kWaitMs));
    QSignalSpy done(window.controller(), &EngineController::generationFinished);
    window.generateView()->setMaxTokens(6);
    emit window.generateView()->generateRequested();
    ASSERT_TRUE(done.wait(kWaitMs));
    QSignalSpy data(&window, &MainWindow::viewDataReady);
    window.showView(ViewId::Equivalence);  // stale: computes on show
    ASSERT_TRUE(data.wait(kWaitMs));
    EXPECT_EQ(data.last().at(0).value<ViewId>(), ViewId::Equivalence);
    EXPECT_TRUE(window.equivalenceView()->hasData());
    EXPECT_EQ(window.equivalenceView()->result().labels.size(), 16 + 6);

    window.setDarkTheme(true);
    EXPECT_LT(QApplication::palette().color(QPalette::Window).lightness(), 128);
    window.setDarkTheme(false);
    EXPECT_GT(QApplication::palette().color(QPalette::Window).lightness(), 128);
    EXPECT_TRUE(window.exportMetadata().contains(QStringLiteral("family: fla")));
    EXPECT_TRUE(window.lastError().isEmpty()) << window.lastError().toStdString();

    // The model dock's interventions: typed, applied, shown in the panel and the export metadata.
    auto* mute = window.findChild<QLineEdit*>(QStringLiteral("muteHeads"));
    auto* apply = window.findChild<QPushButton*>(QStringLiteral("applyInterventions"));
    ASSERT_TRUE(mute && apply);
    mute->setText(QStringLiteral("1.0"));
    apply->click();
    ASSERT_TRUE(ready.wait(kWaitMs));
    EXPECT_EQ(window.controller()->modelInfo().interventions, QStringLiteral("mute 1.0"));
    EXPECT_TRUE(window.exportMetadata().contains(QStringLiteral("interventions: mute 1.0")));
    mute->setText(QStringLiteral("1"));  // not layer.head: refused before reaching the engine
    apply->click();
    EXPECT_TRUE(window.lastError().contains(QStringLiteral("expected layer.head"))) << window.lastError().toStdString();
    window.useRandomModel(4);  // another model starts without edits, and so do the fields
    ASSERT_TRUE(ready.wait(kWaitMs));
    EXPECT_TRUE(mute->text().isEmpty());
    EXPECT_TRUE(window.controller()->modelInfo().interventions.isEmpty());
}

// The CLI and the app start from core's sampler preset: with the same prompt, seed and length
// on the bundled model they write the same tokens and the same text.
TEST(MainWindowTest, AppAndCliWriteTheSameTextWithTheSameSeed) {
    const QString dir = QStringLiteral(RETNET_DEFAULT_MODEL_DIR);
    ASSERT_TRUE(QFileInfo::exists(dir + QStringLiteral("/tokenizer.model"))) << "the bundled model is missing";
    const QString prompt = QStringLiteral("Once upon a time");
    QProcess cli;
    cli.start(QStringLiteral(RETNET_CLI_PATH), {QStringLiteral("generate"), QStringLiteral("--model"), dir,
                                                QStringLiteral("--prompt"), prompt, QStringLiteral("--max-new-tokens"),
                                                QStringLiteral("40"), QStringLiteral("--seed"), QStringLiteral("7"),
                                                QStringLiteral("--json")});
    ASSERT_TRUE(cli.waitForFinished(kWaitMs));
    ASSERT_EQ(cli.exitCode(), 0) << cli.readAllStandardError().toStdString();
    const QList<QByteArray> lines = cli.readAllStandardOutput().trimmed().split('\n');
    const QJsonObject summary = QJsonDocument::fromJson(lines.last()).object();
    ASSERT_EQ(summary.value(QStringLiteral("type")).toString(), QStringLiteral("summary"));

    MainWindow window;
    window.setQuiet(true);
    QSignalSpy ready(window.controller(), &EngineController::modelLoaded);
    window.openModelDirectory(dir);
    ASSERT_TRUE(ready.wait(kWaitMs));
    GenerateView* view = window.generateView();
    EXPECT_EQ(view->request().sampler, retnet::default_sampling());  // the widgets start at the preset
    view->setPrompt(prompt);
    view->setMaxTokens(40);
    view->setSeed(7);
    QSignalSpy done(window.controller(), &EngineController::generationFinished);
    emit view->generateRequested();
    ASSERT_TRUE(done.wait(kWaitMs));
    view->flushPending();
    QJsonArray ids;
    QString text;
    for (const SequenceToken& t : view->tokens())
        if (!t.prompt) {
            ids.append(t.id);
            text += t.text;
        }
    EXPECT_EQ(ids.size(), summary.value(QStringLiteral("generated_tokens")).toInt());
    EXPECT_EQ(ids, summary.value(QStringLiteral("tokens")).toArray());
    EXPECT_EQ(text, summary.value(QStringLiteral("text")).toString());
}

TEST(MainWindowTest, ScreenshotRunnerSavesEveryView) {
    QTemporaryDir out;
    for (int i = 0; i < kViewCount; ++i) {
        const ViewId view = ViewId(i);
        const std::string name = viewName(view).toStdString();
        MainWindow window;
        ScreenshotOptions options;
        options.path = out.filePath(viewName(view) + QStringLiteral(".png"));
        options.view = view;
        options.maxTokens = 6;
        options.timeoutMs = kWaitMs;
        options.randomModel = true;  // fast and independent of the bundled model
        ScreenshotRunner runner(&window, options);
        QSignalSpy finished(&runner, &ScreenshotRunner::finished);
        runner.start();
        ASSERT_TRUE(finished.count() > 0 || finished.wait(kWaitMs)) << name;
        EXPECT_TRUE(finished.last().at(0).toBool()) << name << ": " << finished.last().at(1).toString().toStdString();
        EXPECT_GT(fileSize(options.path), 10000) << name;
    }
}

}  // namespace
