// SPDX-License-Identifier: GPL-3.0-or-later
#include "engine_controller.h"

namespace retnet::ui {

namespace {
void registerMetaTypes() {
    qRegisterMetaType<uint64_t>("uint64_t");
    qRegisterMetaType<int64_t>("int64_t");
    qRegisterMetaType<ModelInfo>();
    qRegisterMetaType<TokenEvent>();
    qRegisterMetaType<GenerationStats>();
    qRegisterMetaType<StateNormFrames>();
    qRegisterMetaType<RetentionMatrix>();
    qRegisterMetaType<RetentionOverview>();
    qRegisterMetaType<EquivalenceResult>();
    qRegisterMetaType<LensResult>();
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
    for (auto& id : m_flags->latest) id = ~uint64_t(0);
    m_thread.quit();
    m_thread.wait();
}

template <typename F>
void EngineController::post(F&& call) {
    QMetaObject::invokeMethod(m_worker, std::forward<F>(call), Qt::QueuedConnection);
}

uint64_t EngineController::startJob(Job job) {
    const uint64_t id = ++m_nextId;
    m_flags->latest[size_t(job)] = id;
    return id;
}

void EngineController::connectWorker() {
    EngineWorker* w = m_worker;
    auto fresh = [this](Job job, uint64_t id) { return !m_flags->stale(job, id); };

    connect(w, &EngineWorker::loadProgress, this, [=, this](uint64_t id, double f) {
        if (fresh(Job::Load, id)) emit loadProgress(f);
    });
    connect(w, &EngineWorker::modelReady, this, [=, this](uint64_t id, const ModelInfo& info) {
        if (!fresh(Job::Load, id)) return;
        m_loading = false;
        m_generating = false;
        m_hasModel = true;
        m_info = info;
        emit modelLoaded(info);
    });
    connect(w, &EngineWorker::tokenGenerated, this, [=, this](const TokenEvent& e) {
        if (fresh(Job::Generate, e.requestId)) emit tokenGenerated(e);
    });
    connect(w, &EngineWorker::sequenceTruncated, this, [=, this](uint64_t id, int64_t length) {
        if (fresh(Job::Generate, id)) emit sequenceTruncated(length);
    });
    connect(w, &EngineWorker::statsUpdated, this, [=, this](const GenerationStats& s) {
        if (!fresh(Job::Generate, s.requestId)) return;
        emit statsUpdated(s);
        if (s.finished) {
            m_generating = false;
            emit generationFinished(s);
        }
    });
    connect(w, &EngineWorker::stateNormsReady, this, [=, this](const StateNormFrames& f) {
        if (fresh(Job::Generate, f.requestId)) emit stateNormsReady(f);
    });
    connect(w, &EngineWorker::retentionReady, this, [=, this](const RetentionMatrix& m) {
        if (fresh(Job::Retention, m.requestId)) emit retentionReady(m);
    });
    connect(w, &EngineWorker::overviewReady, this, [=, this](const RetentionOverview& o) {
        if (fresh(Job::Overview, o.requestId)) emit overviewReady(o);
    });
    connect(w, &EngineWorker::equivalenceReady, this, [=, this](const EquivalenceResult& r) {
        if (fresh(Job::Equivalence, r.requestId)) emit equivalenceReady(r);
    });
    connect(w, &EngineWorker::lensReady, this, [=, this](const LensResult& r) {
        if (fresh(Job::Lens, r.requestId)) emit lensReady(r);
    });
    connect(w, &EngineWorker::failed, this,
            [=, this](uint64_t id, const QString& task, const QString& message) {
                if (task == QLatin1String("Open model") || task == QLatin1String("Use model") ||
                    task == QLatin1String("Switch device")) {
                    if (!fresh(Job::Load, id)) return;
                    m_loading = false;
                    if (message == QLatin1String("cancelled")) {
                        emit loadCancelled();
                        return;
                    }
                    emit loadFailed(message);
                } else if (task == QLatin1String("Generate")) {
                    if (!fresh(Job::Generate, id)) return;
                    m_generating = false;
                    GenerationStats s;
                    s.requestId = id;
                    s.finished = true;
                    s.stopReason = QStringLiteral("error");
                    emit generationFinished(s);
                }
                emit errorOccurred(task, message);
            });
}

void EngineController::openModelDirectory(const QString& directory, const QString& device) {
    const uint64_t id = startJob(Job::Load);
    m_flags->cancelLoad = false;
    m_flags->stopGeneration = true;  // a running generation must not hold the old model
    m_loading = true;
    emit loadStarted(directory);
    post([w = m_worker, id, directory, device] { w->loadModelDirectory(id, directory, device); });
}

void EngineController::cancelLoad() { m_flags->cancelLoad = true; }

void EngineController::useModel(std::shared_ptr<const retnet::Model> model,
                                std::shared_ptr<const retnet::Tokenizer> tokenizer,
                                const QString& device) {
    const uint64_t id = startJob(Job::Load);
    m_flags->stopGeneration = true;
    m_loading = true;
    post([w = m_worker, id, model = std::move(model), tokenizer = std::move(tokenizer), device] {
        w->useModel(id, model, tokenizer, device);
    });
}

void EngineController::setDevice(const QString& device) {
    const uint64_t id = startJob(Job::Load);
    m_flags->stopGeneration = true;
    m_loading = true;
    post([w = m_worker, id, device] { w->setDevice(id, device); });
}

void EngineController::setInterventions(const retnet::Interventions& interventions) {
    const uint64_t id = startJob(Job::Load);
    m_flags->stopGeneration = true;
    m_loading = true;
    post([w = m_worker, id, interventions] { w->setInterventions(id, interventions); });
}

uint64_t EngineController::generate(const GenerateRequest& request) {
    const uint64_t id = startJob(Job::Generate);
    m_flags->stopGeneration = false;
    m_generating = true;
    emit generationStarted(id);
    post([w = m_worker, id, request] { w->generate(id, request); });
    return id;
}

void EngineController::stopGeneration() { m_flags->stopGeneration = true; }

uint64_t EngineController::requestEquivalence(const EquivalenceRequest& request) {
    const uint64_t id = startJob(Job::Equivalence);
    post([w = m_worker, id, request] { w->computeEquivalence(id, request); });
    return id;
}

uint64_t EngineController::requestRetention(const RetentionRequest& request) {
    const uint64_t id = startJob(request.overview ? Job::Overview : Job::Retention);
    post([w = m_worker, id, request] { w->computeRetention(id, request); });
    return id;
}

uint64_t EngineController::requestLens(const LensRequest& request) {
    const uint64_t id = startJob(Job::Lens);
    post([w = m_worker, id, request] { w->computeLens(id, request); });
    return id;
}

}  // namespace retnet::ui
