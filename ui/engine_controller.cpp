// SPDX-License-Identifier: GPL-3.0-or-later
#include "engine_controller.h"

namespace retnet::ui {

namespace {
void registerMetaTypes() {
    qRegisterMetaType<uint64_t>("uint64_t");
    qRegisterMetaType<int64_t>("int64_t");
    qRegisterMetaType<ModelInfo>();
    qRegisterMetaType<SequenceToken>();
    qRegisterMetaType<GenerationStats>();
    qRegisterMetaType<StateNormFrames>();
    qRegisterMetaType<GenerationBatch>();
    qRegisterMetaType<JobRef>();
    qRegisterMetaType<ViewId>();
    qRegisterMetaType<std::any>();
    qRegisterMetaType<retnet::CostReport>();
}
}  // namespace

EngineController::EngineController(QObject* parent)
    : QObject(parent), m_flags(std::make_shared<JobFlags>()) {
    registerMetaTypes();
    m_thread.setObjectName(QStringLiteral("retnet-engine"));
    m_worker = new EngineWorker(m_flags);
    m_worker->moveToThread(&m_thread);
    connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
    connectWorker();
    m_thread.start();
}

EngineController::~EngineController() {
    // Make every running job end at its next check, then let the thread drain its queue.
    m_flags->stopGeneration = true;
    m_flags->cancelLoad = true;
    m_flags->cancelCost = true;
    for (auto& id : m_flags->latest) id = ~uint64_t(0);
    m_thread.quit();
    m_thread.wait();
}

template <typename F>
void EngineController::post(F&& call) {
    QMetaObject::invokeMethod(m_worker, std::forward<F>(call), Qt::QueuedConnection);
}

uint64_t EngineController::startJob(const JobRef& job) {
    const uint64_t id = ++m_nextId;
    m_flags->latest[size_t(freshnessSlot(job))] = id;
    return id;
}

void EngineController::connectWorker() {
    EngineWorker* w = m_worker;
    const JobRef load{Job::OpenModel}, generation{Job::Generate};
    connect(w, &EngineWorker::loadProgress, this, [=, this](uint64_t id, double f) {
        if (fresh(load, id)) emit loadProgress(f);
    });
    connect(w, &EngineWorker::modelReady, this, [=, this](uint64_t id, const ModelInfo& info) {
        if (!fresh(load, id)) return;
        m_loading = false;
        m_generating = false;
        m_hasModel = true;
        m_info = info;
        emit modelLoaded(info);
    });
    connect(w, &EngineWorker::generationBatch, this, &EngineController::onGenerationBatch);
    connect(w, &EngineWorker::sequenceTruncated, this, [=, this](uint64_t id, int64_t length) {
        if (fresh(generation, id)) emit sequenceTruncated(length);
    });
    connect(w, &EngineWorker::analysisReady, this, &EngineController::onAnalysisReady);
    connect(w, &EngineWorker::failed, this, &EngineController::onFailed);
    const JobRef cost{Job::Cost};
    connect(w, &EngineWorker::costProgress, this, [=, this](uint64_t id, double f, const QString& what) {
        if (fresh(cost, id)) emit costProgress(f, what);
    });
    connect(w, &EngineWorker::costPointReady, this, [=, this](uint64_t id, const retnet::CostReport& soFar) {
        if (fresh(cost, id)) emit costPointMeasured(soFar);
    });
    connect(w, &EngineWorker::costReady, this, [=, this](uint64_t id, const retnet::CostReport& report) {
        if (!fresh(cost, id)) return;
        m_measuringCost = false;
        emit costMeasured(report);
    });
}

// One batch, passed on in the order the engine made it: the norms, the tokens, then the timings
// (whose `finished` ends the generation).
void EngineController::onGenerationBatch(const GenerationBatch& batch) {
    if (!fresh(JobRef{Job::Generate}, batch.requestId)) return;
    if (batch.norms) emit stateNormsReady(*batch.norms);
    for (const SequenceToken& e : batch.tokens) emit tokenGenerated(e);
    if (!batch.rescored.empty()) emit sequenceRescored(batch.rescored);
    if (!batch.stats) return;
    emit statsUpdated(*batch.stats);
    if (batch.stats->finished) {
        m_generating = false;
        emit generationFinished(*batch.stats);
    }
}

void EngineController::onAnalysisReady(uint64_t id, const JobRef& job, const std::any& result) {
    if (!fresh(job, id)) return;
    Subscriber& s = m_subscribers[size_t(freshnessSlot(job))];
    if (s.id != id || !s.receiver) return;
    const ResultHandler handler = std::move(s.onResult);
    s = Subscriber();
    handler(result);
}

void EngineController::onFailed(uint64_t id, const JobRef& job, const QString& message) {
    if (!fresh(job, id)) return;
    if (job.job == Job::Analysis) {
        Subscriber& s = m_subscribers[size_t(freshnessSlot(job))];
        const ErrorHandler handler = s.id == id && s.receiver ? std::move(s.onError) : ErrorHandler();
        const bool inPlace = handler && s.showsOwnErrors;
        s = Subscriber();
        if (handler) handler(message);
        if (inPlace) return;
    } else if (job.isModelJob()) {
        m_loading = false;
        if (message == QLatin1String("cancelled")) return emit loadCancelled();
        if (job.job != Job::SetInterventions) emit loadFailed(message);
    } else if (job.job == Job::Cost) {
        m_measuringCost = false;
        return emit costFailed(message);
    } else if (job.job == Job::Generate) {
        m_generating = false;
        GenerationStats s;
        s.requestId = id;
        s.finished = true;
        s.stopReason = QStringLiteral("error");
        emit generationFinished(s);
    }
    emit errorOccurred(job, message);
}

void EngineController::openModelDirectory(const QString& directory, const QString& device) {
    const uint64_t id = startJob(JobRef{Job::OpenModel});
    m_flags->cancelLoad = false;
    m_flags->stopGeneration = true;  // a running generation must not hold the old model
    m_flags->cancelCost = true;  // so must a measurement
    m_loading = true;
    emit loadStarted(directory);
    post([w = m_worker, id, directory, device] { w->loadModelDirectory(id, directory, device); });
}

void EngineController::cancelLoad() { m_flags->cancelLoad = true; }

void EngineController::useModel(std::shared_ptr<const retnet::Model> model,
                                std::shared_ptr<const retnet::Tokenizer> tokenizer,
                                const QString& device) {
    const uint64_t id = startJob(JobRef{Job::UseModel});
    m_flags->stopGeneration = true;
    m_flags->cancelCost = true;
    m_loading = true;
    post([w = m_worker, id, model = std::move(model), tokenizer = std::move(tokenizer), device] {
        w->useModel(id, model, tokenizer, device);
    });
}

void EngineController::setDevice(const QString& device) {
    const uint64_t id = startJob(JobRef{Job::SetDevice});
    m_flags->stopGeneration = true;
    m_flags->cancelCost = true;
    m_loading = true;
    post([w = m_worker, id, device] { w->setDevice(id, device); });
}

void EngineController::setInterventions(const retnet::Interventions& interventions) {
    const uint64_t id = startJob(JobRef{Job::SetInterventions});
    m_flags->stopGeneration = true;
    m_flags->cancelCost = true;
    m_loading = true;
    post([w = m_worker, id, interventions] { w->setInterventions(id, interventions); });
}

uint64_t EngineController::generate(const GenerateRequest& request) {
    const uint64_t id = startJob(JobRef{Job::Generate});
    m_flags->stopGeneration = false;
    m_generating = true;
    emit generationStarted(id);
    post([w = m_worker, id, request] { w->generate(id, request); });
    return id;
}

void EngineController::stopGeneration() { m_flags->stopGeneration = true; }

uint64_t EngineController::analyse(AnalysisRequest request, QObject* receiver, ResultHandler onResult,
                                   ErrorHandler onError) {
    request.job.job = Job::Analysis;
    const uint64_t id = startJob(request.job);
    m_subscribers[size_t(freshnessSlot(request.job))] =
        Subscriber{id, receiver, std::move(onResult), std::move(onError), request.showsOwnErrors};
    post([w = m_worker, id, request = std::move(request)] { w->analyse(id, request); });
    return id;
}

uint64_t EngineController::measureCost(const CostRequest& request) {
    const uint64_t id = startJob(JobRef{Job::Cost});
    m_flags->cancelCost = false;
    m_measuringCost = true;
    post([w = m_worker, id, request] { w->measureCost(id, request); });
    return id;
}

}  // namespace retnet::ui
