// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The GUI thread's handle on the engine: owns the engine thread and its EngineWorker, turns
// requests into queued calls, and forwards results, dropping those a newer request of the same
// kind has made stale ("latest wins"). Nothing here blocks.
#include <QObject>
#include <QThread>

#include <memory>

#include "engine_worker.h"
#include "snapshots.h"

namespace retnet::ui {

class EngineController : public QObject {
    Q_OBJECT
public:
    explicit EngineController(QObject* parent = nullptr);
    ~EngineController() override;

    void openModelDirectory(const QString& directory, const QString& device = QStringLiteral("cpu"));
    void cancelLoad();
    void useModel(std::shared_ptr<const retnet::Model> model,
                  std::shared_ptr<const retnet::Tokenizer> tokenizer,
                  const QString& device = QStringLiteral("cpu"));
    void setDevice(const QString& device);
    // What-if edits of the loaded model (retnet/intervention.h); empty restores it as loaded.
    void setInterventions(const retnet::Interventions& interventions);

    uint64_t generate(const GenerateRequest& request);
    void stopGeneration();
    uint64_t requestEquivalence(const EquivalenceRequest& request);
    uint64_t requestRetention(const RetentionRequest& request);
    uint64_t requestLens(const LensRequest& request);

    bool hasModel() const { return m_hasModel; }
    bool isLoading() const { return m_loading; }
    bool isGenerating() const { return m_generating; }
    const ModelInfo& modelInfo() const { return m_info; }

signals:
    void loadStarted(const QString& directory);
    void loadProgress(double fraction);
    void modelLoaded(const retnet::ui::ModelInfo& info);
    void loadFailed(const QString& message);
    void loadCancelled();
    void generationStarted(uint64_t id);
    void tokenGenerated(const retnet::ui::TokenEvent& event);
    void sequenceTruncated(int64_t length);
    void statsUpdated(const retnet::ui::GenerationStats& stats);
    void generationFinished(const retnet::ui::GenerationStats& stats);
    void stateNormsReady(const retnet::ui::StateNormFrames& frames);
    void retentionReady(const retnet::ui::RetentionMatrix& matrix);
    void overviewReady(const retnet::ui::RetentionOverview& overview);
    void lensReady(const retnet::ui::LensResult& result);
    void equivalenceReady(const retnet::ui::EquivalenceResult& result);
    void errorOccurred(const QString& task, const QString& message);

private:
    uint64_t startJob(Job job);
    template <typename F>
    void post(F&& call);
    void connectWorker();

    std::shared_ptr<JobFlags> m_flags;
    QThread m_thread;
    EngineWorker* m_worker = nullptr;  // lives on m_thread, deleted when it finishes
    uint64_t m_nextId = 0;
    bool m_hasModel = false;
    bool m_loading = false;
    bool m_generating = false;
    ModelInfo m_info;
};

}  // namespace retnet::ui
