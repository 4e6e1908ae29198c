// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The only object that touches the engine. It lives on the engine thread (EngineController owns
// that thread); its slots run there, one at a time, and results leave as value snapshots in
// signals. Long jobs check the shared JobFlags between tokens, so "stop" and "a newer request of
// the same kind arrived" both end them early. Analysis is generic: the worker runs a view's job
// (ui/analysis.h) and sends back whatever value it returns.
#include <QObject>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>

#include "retnet/forward.h"
#include "retnet/generate.h"
#include "retnet/model.h"
#include "retnet/sampler.h"
#include "retnet/tokenizer.h"
#include "analysis.h"
#include "cost_job.h"
#include "snapshots.h"

namespace retnet::ui {

// Shared between the GUI thread (writes) and the engine thread (reads).
struct JobFlags {
    std::atomic<bool> stopGeneration{false};
    std::atomic<bool> cancelLoad{false};
    std::atomic<bool> cancelCost{false};
    std::atomic<bool> liveStateNorms{true};  // a view shows ‖S‖ while generating: compute them
    std::array<std::atomic<uint64_t>, kFreshnessSlots> latest{};  // by freshnessSlot()

    bool stale(const JobRef& job, uint64_t id) const { return latest[size_t(freshnessSlot(job))].load() != id; }
};

class EngineWorker : public QObject {
    Q_OBJECT
public:
    explicit EngineWorker(std::shared_ptr<JobFlags> flags);
    ~EngineWorker() override;

    // All of these run on the engine thread (called through queued invocations).
    void loadModelDirectory(uint64_t id, const QString& directory, const QString& device);
    void useModel(uint64_t id, std::shared_ptr<const retnet::Model> model,
                  std::shared_ptr<const retnet::Tokenizer> tokenizer, const QString& device);
    void setDevice(uint64_t id, const QString& device);
    // Reinstalls the model as loaded with these edits (none: the model as loaded), same device.
    void setInterventions(uint64_t id, const retnet::Interventions& interventions);
    void generate(uint64_t id, const GenerateRequest& request);
    void analyse(uint64_t id, const AnalysisRequest& request);
    // RetNet against its Transformer twin (random weights, same size) on the current device, in
    // backends of their own: the generation's state is left as it is.
    void measureCost(uint64_t id, const CostRequest& request);

signals:
    void loadProgress(uint64_t id, double fraction);
    void modelReady(uint64_t id, const retnet::ui::ModelInfo& info);
    void sequenceTruncated(uint64_t id, int64_t length);  // tokens at ≥ length were dropped
    // Tokens, state norms and timings of a generation (or of a replay after an edit).
    void generationBatch(const retnet::ui::GenerationBatch& batch);
    void analysisReady(uint64_t id, const retnet::ui::JobRef& job, const std::any& result);
    void costProgress(uint64_t id, double fraction, const QString& what);
    // After each point: the report so far (a copy), its newest point last.
    void costPointReady(uint64_t id, const retnet::CostReport& soFar);
    void costReady(uint64_t id, const retnet::CostReport& report);
    void failed(uint64_t id, const retnet::ui::JobRef& job, const QString& message);

private:
    void installModel(std::shared_ptr<const retnet::Model> model,
                      std::shared_ptr<const retnet::Tokenizer> tokenizer, const QString& directory,
                      const QString& device);
    ModelInfo describeModel(const QString& notice, bool sequenceKept = false) const;
    void replay(const std::vector<int32_t>& sequence);
    std::vector<int32_t> encode(const QString& text) const;
    std::vector<int32_t> tokensFor(const QString& text) const;  // text, or the current sequence
    QString pieceOf(int32_t id) const;
    QStringList labelsFor(const std::vector<int32_t>& tokens) const;
    std::vector<TokenCandidate> candidates(const std::vector<retnet::TokenProb>& probs) const;
    SequenceToken convert(uint64_t id, const retnet::TokenEvent& event) const;
    std::vector<SequenceToken> promptTokens(uint64_t id, const std::vector<int32_t>& prompt) const;
    void fail(uint64_t id, const JobRef& job, const std::exception& e);
    // Batching of the generation stream: queue*() gather, flushBatch() sends; a batch goes out
    // at most every kBatchInterval while tokens flow, and always before the job ends.
    void queueToken(SequenceToken token);
    void queueNorms(StateNormFrames frames);
    void queueStats(const GenerationStats& stats);
    void flushBatchIfDue();
    void flushBatch();

    std::shared_ptr<JobFlags> m_flags;
    std::shared_ptr<const retnet::Model> m_loaded;  // as loaded, before interventions
    retnet::Interventions m_interventions;         // applied to m_loaded to give m_model
    std::shared_ptr<const retnet::Model> m_model;
    std::shared_ptr<const retnet::Tokenizer> m_tokenizer;
    std::unique_ptr<retnet::Backend> m_backend;
    // Wraps m_backend for the generator: every forward also reports ‖S‖ per layer and head
    // (retnet/analysis_tap.h).
    std::unique_ptr<retnet::Backend> m_tap;
    std::unique_ptr<retnet::Generator> m_generator;
    uint64_t m_generateId = 0;  // the request the tap's frames belong to
    // Set by generate() while the prompt is prefilled: receives the logits of each forward call
    // (from position `first`), to give the prompt's tokens their candidates.
    std::function<void(int64_t first, const retnet::Tensor& logits)> m_onPrefillLogits;
    GenerationBatch m_batch;
    std::chrono::steady_clock::time_point m_batchStarted;  // when its first item was queued
    QString m_directory;
    QString m_notice;  // why the requested device was not used
};

}  // namespace retnet::ui
