// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What the GUI tests share: a tiny random model, a controller with it installed, greedy runs of
// the engine to compare with, and running one analysis job through the engine thread.
#include <QFileInfo>
#include <QSignalSpy>
#include <QTest>

#include <any>
#include <functional>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include "analysis.h"
#include "engine_controller.h"
#include "main_window.h"
#include "views/generate_view.h"
#include "retnet/generate.h"
#include "retnet/model.h"

namespace retnet::ui::test {

inline constexpr int kWaitMs = 60000;

inline retnet::ModelConfig tinyConfig(retnet::Family family) {
    retnet::ModelConfig c;
    c.family = family;
    c.vocab_size = 40;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 16;
    c.value_dim = 16;
    c.ffn_dim = 32;
    c.chunk_size = 4;
    if (family == retnet::Family::TorchScale) {
        c.head_norm_affine = false;
        c.ffn_activation = retnet::Activation::Gelu;
    }
    return c;
}

inline std::shared_ptr<const retnet::Model> tinyModel(retnet::Family family = retnet::Family::Fla) {
    return std::make_shared<const retnet::Model>(retnet::make_random_model(tinyConfig(family), 11));
}

inline const QString kPrompt = QStringLiteral("1 5 9 2 6 10 3 7 11");
inline const std::vector<int32_t> kPromptIds = {1, 5, 9, 2, 6, 10, 3, 7, 11};

inline GenerateRequest greedy(int tokens) {
    GenerateRequest r;
    r.prompt = kPrompt;
    r.sampler.temperature = 0.0;
    r.maxTokens = tokens;
    return r;
}

// A controller with the tiny model installed.
struct Engine {
    EngineController controller;
    std::shared_ptr<const retnet::Model> model;

    explicit Engine(retnet::Family family = retnet::Family::Fla) : model(tinyModel(family)) {
        QSignalSpy ready(&controller, &EngineController::modelLoaded);
        controller.useModel(model, nullptr, QStringLiteral("cpu"));
        EXPECT_TRUE(ready.wait(kWaitMs));
    }

    // Runs a request and collects its events until generationFinished.
    std::vector<SequenceToken> run(const GenerateRequest& request, GenerationStats* stats = nullptr) {
        std::vector<SequenceToken> events;
        auto c = QObject::connect(&controller, &EngineController::tokenGenerated,
                                  [&](const SequenceToken& e) { events.push_back(e); });
        QSignalSpy done(&controller, &EngineController::generationFinished);
        controller.generate(request);
        EXPECT_TRUE(done.count() > 0 || done.wait(kWaitMs));
        QObject::disconnect(c);
        if (stats && !done.isEmpty()) *stats = done.last().at(0).value<GenerationStats>();
        return events;
    }
};

inline std::vector<int32_t> greedyReference(const std::shared_ptr<const retnet::Model>& model, int tokens) {
    auto backend = retnet::make_backend("cpu", model);
    retnet::Generator generator(*backend, nullptr);
    retnet::GenerationParams params;
    params.max_new_tokens = tokens;
    params.sampler.temperature = 0.0;
    return generator.generate(kPromptIds, params).tokens;
}

inline qint64 fileSize(const QString& path) { return QFileInfo(path).size(); }

// Runs one analysis job through the controller and the engine thread, as a view's request does,
// and waits for its result.
template <typename R>
R analyse(EngineController& controller, ViewId view, std::function<R(AnalysisContext&)> job,
          const QString& text = kPrompt) {
    std::optional<R> result;
    QString error;
    QObject receiver;
    controller.analyse(AnalysisRequest{JobRef{Job::Analysis, view, 0}, text,
                                       [job](AnalysisContext& c) { return std::any(job(c)); }},
                       &receiver, [&](const std::any& v) { result = std::any_cast<const R&>(v); },
                       [&](const QString& m) { error = m; });
    EXPECT_TRUE(QTest::qWaitFor([&] { return result.has_value() || !error.isEmpty(); }, kWaitMs));
    EXPECT_TRUE(error.isEmpty()) << error.toStdString();
    return result.value_or(R());
}

// A shown window with a model installed (the tiny random one unless given).
struct Window {
    MainWindow window;
    QSignalSpy ready{window.controller(), &EngineController::modelLoaded};

    explicit Window(std::shared_ptr<const retnet::Model> model = nullptr) {
        window.setQuiet(true);
        window.show();
        if (model) {
            window.controller()->useModel(model, nullptr);
            window.generateView()->setPrompt(kPrompt);
        } else {
            window.useRandomModel(3);
        }
        EXPECT_TRUE(ready.wait(kWaitMs));
    }
    void generate(int tokens) {
        QSignalSpy done(window.controller(), &EngineController::generationFinished);
        window.generateView()->setMaxTokens(tokens);
        emit window.generateView()->generateRequested();
        ASSERT_TRUE(done.wait(kWaitMs));
        window.generateView()->flushPending();
    }
    // Shows the view and waits until it has computed what it shows.
    void show(ViewId id) {
        QSignalSpy data(&window, &MainWindow::viewDataReady);
        window.showView(id);
        if (!window.view(id)->isStale()) return;
        ASSERT_TRUE(data.wait(kWaitMs)) << viewName(id).toStdString();
    }
};

}  // namespace retnet::ui::test
