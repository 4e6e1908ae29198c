// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The GUI thread's handle on the engine: owns the engine thread and its EngineWorker, turns
// requests into queued calls, and forwards results, dropping those a newer request of the same
// kind has made stale ("latest wins"). An analysis result goes straight to the handler its
// request came with (ui/analysis.h); freshness is decided here and nowhere else. Nothing blocks.
#include <QObject>
#include <QThread>

#include <QPointer>

#include <functional>
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
    // Whether the generation computes ‖S‖ per token for a view that shows them live (the State
    // view while it is visible); otherwise that view computes them when it is looked at.
    void setLiveStateNorms(bool on) { m_flags->liveStateNorms = on; }
    // Runs request.compute on the engine thread; `onResult` (or `onError`) is called on this
    // thread, through `receiver`, unless a newer request for the same view and channel was made
    // in the meantime or `receiver` is gone. Returns the request's id.
    using ResultHandler = std::function<void(const std::any& result)>;
    using ErrorHandler = std::function<void(const QString& message)>;
    uint64_t analyse(AnalysisRequest request, QObject* receiver, ResultHandler onResult,
                     ErrorHandler onError = {});
    // Measures the model against its Transformer twin on the current device (retnet/cost.h):
    // costProgress and costPointMeasured (after each point) while it runs, then costMeasured or
    // costFailed ("cancelled" after cancelCost(), a new model or a newer measurement).
    uint64_t measureCost(const CostRequest& request);
    void cancelCost() { m_flags->cancelCost = true; }
    bool isMeasuringCost() const { return m_measuringCost; }

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
    void tokenGenerated(const retnet::ui::SequenceToken& token);
    void sequenceTruncated(int64_t length);
    void statsUpdated(const retnet::ui::GenerationStats& stats);
    void generationFinished(const retnet::ui::GenerationStats& stats);
    void stateNormsReady(const retnet::ui::StateNormFrames& frames);
    // The kept text's candidates under the model now in force (after interventions), by position.
    void sequenceRescored(const std::vector<std::vector<retnet::ui::TokenCandidate>>& candidates);
    // Every failure, named by its job (the load's also come as loadFailed).
    void errorOccurred(const retnet::ui::JobRef& job, const QString& message);
    void costProgress(double fraction, const QString& what);
    void costPointMeasured(const retnet::CostReport& soFar);  // the points so far, the newest last
    void costMeasured(const retnet::CostReport& report);
    void costFailed(const QString& message);  // one line; not an errorOccurred (the view shows it)

private:
    struct Subscriber {
        uint64_t id = 0;
        QPointer<QObject> receiver;
        ResultHandler onResult;
        ErrorHandler onError;
        bool showsOwnErrors = false;  // AnalysisRequest::showsOwnErrors
    };

    uint64_t startJob(const JobRef& job);
    bool fresh(const JobRef& job, uint64_t id) const { return !m_flags->stale(job, id); }
    template <typename F>
    void post(F&& call);
    void connectWorker();
    void onFailed(uint64_t id, const JobRef& job, const QString& message);
    void onGenerationBatch(const GenerationBatch& batch);
    void onAnalysisReady(uint64_t id, const JobRef& job, const std::any& result);

    std::shared_ptr<JobFlags> m_flags;
    QThread m_thread;
    EngineWorker* m_worker = nullptr;  // lives on m_thread, deleted when it finishes
    uint64_t m_nextId = 0;
    bool m_hasModel = false;
    bool m_loading = false;
    bool m_generating = false;
    bool m_measuringCost = false;
    ModelInfo m_info;
    std::array<Subscriber, kFreshnessSlots> m_subscribers;  // the latest analysis request per slot
};

}  // namespace retnet::ui
