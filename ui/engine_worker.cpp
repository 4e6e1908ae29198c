// SPDX-License-Identifier: GPL-3.0-or-later
#include "engine_worker.h"

#include <QDir>
#include <QFileInfo>
#include <QRegularExpression>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>

#include <unistd.h>

#include "retnet/analysis.h"
#include "retnet/analysis_tap.h"
#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"

namespace retnet::ui {

namespace {

// Restores the generation's state after an analysis run that needed the backend.
class StateGuard {
public:
    explicit StateGuard(retnet::Backend& backend) : m_backend(backend), m_state(backend.snapshot()) {}
    ~StateGuard() {
        try {
            m_backend.restore(m_state);
        } catch (...) {
            // The state was taken from this backend; restoring it cannot fail for a valid one.
        }
    }

private:
    retnet::Backend& m_backend;
    retnet::RecurrentState m_state;
};

// What a model directory must not be before the engine reads it: a FIFO or device would block the
// engine thread forever, and weights larger than the machine's memory would only fail after
// minutes of swapping. One line, naming the file.
void checkModelDirectory(const QString& directory) {
    const QFileInfo dir(directory);
    if (!dir.isDir())
        throw retnet::Error(directory.toStdString() + ": not a directory (open the folder that holds config.json)");
    qint64 weights = 0;
    const QDir d(directory);
    for (const QFileInfo& f : d.entryInfoList(QDir::Files | QDir::System | QDir::NoDotAndDotDot)) {
        const QString name = f.fileName();
        const bool needed = name == QLatin1String("config.json") || name == QLatin1String("tokenizer.model") ||
                            name.endsWith(QLatin1String(".safetensors"));
        if (needed && !f.isFile())
            throw retnet::Error(f.filePath().toStdString() + ": not a regular file (a FIFO, socket or device); "
                                "a model directory holds ordinary files");
        if (name.endsWith(QLatin1String(".safetensors"))) weights += f.size();
    }
    const qint64 memory = qint64(sysconf(_SC_PHYS_PAGES)) * qint64(sysconf(_SC_PAGE_SIZE));
    if (memory > 0 && weights > memory)
        throw retnet::Error(directory.toStdString() + ": the weights take " + retnet::format_bytes(weights) +
                            ", more than this machine's memory (" + retnet::format_bytes(memory) + ")");
}

// The engine's account of a finished generation, as the app shows it.
GenerationStats finalStats(uint64_t id, const retnet::GenerationStats& in) {
    GenerationStats stats;
    stats.requestId = id;
    stats.promptTokens = int(in.prefill_tokens);
    stats.prefillMs = in.prefill_ms;
    stats.generated = int(in.generated_tokens);
    stats.decodeMs = in.decode_ms;
    stats.form = QString::fromLatin1(retnet::form_name(in.prefill_form));
    switch (in.stop_reason) {
        case retnet::StopReason::Eos: stats.stopReason = QStringLiteral("eos"); break;
        case retnet::StopReason::Cancelled: stats.stopReason = QStringLiteral("stopped"); break;
        default: stats.stopReason = QStringLiteral("length"); break;
    }
    stats.finished = true;
    return stats;
}

constexpr int kMaxPromptTokens = 8192;

// A text of the app's own (a restored workspace, the text an edit replays) may be longer than a
// typed prompt. It is run whole; beyond a prompt's length chunkwise rather than parallel, whose
// T×T scores per head need T²·4 bytes (1.6 GB per head at 20k tokens).
void fitToText(retnet::GenerationParams& params, size_t tokens) {
    const int n = int(std::min<size_t>(tokens, size_t(std::numeric_limits<int>::max())));
    params.max_prompt_tokens = std::max(params.max_prompt_tokens, n);
    if (n > kMaxPromptTokens && params.prefill_form == retnet::Form::Parallel) params.prefill_form = retnet::Form::Chunkwise;
}


// The core's own message names the CLI's option, which the app does not have.
void checkPromptLength(size_t tokens) {
    if (tokens > size_t(kMaxPromptTokens))
        throw retnet::Error("the prompt has " + std::to_string(tokens) + " tokens, more than the app takes (" +
                            std::to_string(kMaxPromptTokens) + "): shorten it, or use `retnet generate "
                            "--max-prompt-tokens`");
}

// The Transformer twin of `model` (random weights), its matrices held as the model's are: with a
// bf16 checkpoint's matrices in bf16 on the CPU, a float32 twin would read twice the bytes per
// step and look slower than it is.
retnet::Model twinOf(const retnet::Model& model) {
    retnet::Model twin = retnet::make_transformer_twin(model.config, 1);
    return model.all_f32() ? twin : retnet::narrowed_to_bf16(std::move(twin));
}

constexpr int kCandidates = 10;  // top tokens shown per position
// A screen refresh is ~16 ms: batches more often than this cannot be seen, only paid for.
constexpr auto kBatchInterval = std::chrono::milliseconds(25);

}  // namespace

QString jobTitle(const JobRef& job) {
    switch (job.job) {
        case Job::OpenModel: return QStringLiteral("Open model");
        case Job::UseModel: return QStringLiteral("Use model");
        case Job::SetDevice: return QStringLiteral("Switch device");
        case Job::SetInterventions: return QStringLiteral("Interventions");
        case Job::Generate: return QStringLiteral("Generate");
        case Job::Cost: return QStringLiteral("Cost");
        case Job::Analysis: break;
    }
    QString name = viewName(job.view);
    if (!name.isEmpty()) name[0] = name[0].toUpper();
    return name;
}

EngineWorker::EngineWorker(std::shared_ptr<JobFlags> flags) : m_flags(std::move(flags)) {}
EngineWorker::~EngineWorker() = default;

// ---- model -----------------------------------------------------------------------------------

void EngineWorker::loadModelDirectory(uint64_t id, const QString& directory, const QString& device) {
    try {
        checkModelDirectory(directory);
        const std::string dir = directory.toStdString();
        double lastReported = -1.0;
        auto progress = [&](double fraction) {
            if (fraction - lastReported >= 0.01 || fraction >= 1.0) {
                lastReported = fraction;
                emit loadProgress(id, fraction);
            }
            return !m_flags->cancelLoad.load();
        };
        auto model = std::make_shared<const retnet::Model>(retnet::load_model(dir, progress, retnet::WeightStorage::AsStored));
        std::shared_ptr<const retnet::Tokenizer> tokenizer =
            retnet::Tokenizer::load_from_model_dir(dir);
        if (tokenizer && tokenizer->vocab_size() > model->config.vocab_size)
            throw retnet::Error(dir + "/tokenizer.model: the tokenizer has " +
                                std::to_string(tokenizer->vocab_size()) +
                                " tokens but the model only " +
                                std::to_string(model->config.vocab_size));
        installModel(model, std::move(tokenizer), directory, device);
        m_loaded = std::move(model);
        m_interventions = {};
        emit modelReady(id, describeModel(m_notice));
    } catch (const std::exception& e) {
        fail(id, JobRef{Job::OpenModel}, e);
    }
}

void EngineWorker::useModel(uint64_t id, std::shared_ptr<const retnet::Model> model,
                            std::shared_ptr<const retnet::Tokenizer> tokenizer,
                            const QString& device) {
    try {
        installModel(model, std::move(tokenizer), QString(), device);
        m_loaded = std::move(model);
        m_interventions = {};
        emit modelReady(id, describeModel(m_notice));
    } catch (const std::exception& e) {
        fail(id, JobRef{Job::UseModel}, e);
    }
}

void EngineWorker::setInterventions(uint64_t id, const retnet::Interventions& interventions) {
    if (!m_loaded) return;
    try {
        auto model = interventions.empty()
                         ? m_loaded
                         : std::make_shared<const retnet::Model>(retnet::apply_interventions(*m_loaded, interventions));
        const std::vector<int32_t> sequence = m_generator ? m_generator->tokens() : std::vector<int32_t>();
        installModel(std::move(model), m_tokenizer, m_directory, QString::fromStdString(m_backend->name()));
        m_interventions = interventions;
        replay(sequence);
        emit modelReady(id, describeModel(m_notice, true));
    } catch (const std::exception& e) {
        fail(id, JobRef{Job::SetInterventions}, e);
        emit modelReady(id, describeModel(m_notice, true));  // the model in force is unchanged
    }
}

// The text stays when the model is edited: its state is recomputed with the edited model (the
// state view receives the new norms), so Continue goes on from it.
void EngineWorker::replay(const std::vector<int32_t>& sequence) {
    if (sequence.empty()) return;
    retnet::GenerationParams params;
    params.max_new_tokens = 0;
    fitToText(params, sequence.size());
    // The text's candidates under the edited model, for the before/after comparison.
    std::vector<std::vector<TokenCandidate>> rescored(sequence.size());
    m_onPrefillLogits = [&](int64_t first, const retnet::Tensor& logits) {
        const auto scored = retnet::prompt_candidates(logits, first, sequence, kCandidates);
        for (size_t i = 0; i < scored.size(); ++i) rescored[size_t(first) + 1 + i] = candidates(scored[i]);
    };
    try {
        // Not stoppable: the controller raised the stop flag to end the generation this edit
        // replaces, and a replay that stopped at once would leave the state unsynced.
        m_generator->generate(sequence, params, {}, nullptr);
    } catch (...) {
        m_onPrefillLogits = nullptr;
        throw;
    }
    m_onPrefillLogits = nullptr;
    if (m_batch.empty()) m_batchStarted = std::chrono::steady_clock::now();
    m_batch.rescored = std::move(rescored);
    flushBatch();
}

void EngineWorker::setDevice(uint64_t id, const QString& device) {
    if (!m_model) return;
    try {
        // Same model, other device: the state carries over as it is (host memory).
        std::optional<retnet::GenerationCheckpoint> kept;
        if (m_generator && m_generator->length() > 0) kept = m_generator->checkpoint();
        installModel(m_model, m_tokenizer, m_directory, device);
        if (kept) m_generator->restore(*kept);
        emit modelReady(id, describeModel(m_notice, true));
    } catch (const std::exception& e) {
        fail(id, JobRef{Job::SetDevice}, e);
    }
}

void EngineWorker::installModel(std::shared_ptr<const retnet::Model> model,
                                std::shared_ptr<const retnet::Tokenizer> tokenizer,
                                const QString& directory, const QString& device) {
    std::string notice;
    auto backend = retnet::make_backend_or_cpu(device.toStdString(), model, &notice);
    m_model = std::move(model);
    m_tokenizer = std::move(tokenizer);
    m_backend = std::move(backend);
    m_directory = directory;
    m_notice = QString::fromStdString(notice);
    m_tap = std::make_unique<retnet::TapBackend>(
        *m_backend, [this](int64_t first, const retnet::Tensor& logits, const retnet::Tensor& norms) {
            if (norms.rank() == 3) {
                StateNormFrames frames;
                frames.requestId = m_generateId;
                frames.reset = first == 0;
                frames.firstPosition = first;
                frames.count = int(norms.dim(0));
                frames.layers = int(norms.dim(1));
                frames.heads = int(norms.dim(2));
                frames.norms = norms.data;
                queueNorms(std::move(frames));
            }
            if (m_onPrefillLogits) m_onPrefillLogits(first, logits);
        },
        [flags = m_flags] { return flags->liveStateNorms.load(); });
    m_generator = std::make_unique<retnet::Generator>(*m_tap, m_tokenizer.get());
}

ModelInfo EngineWorker::describeModel(const QString& notice, bool sequenceKept) const {
    ModelInfo info;
    info.sequenceKept = sequenceKept;
    const retnet::ModelConfig& c = m_model->config;
    info.directory = m_directory;
    info.name = m_directory.isEmpty() ? QStringLiteral("model in memory")
                                      : QFileInfo(m_directory).fileName();
    info.family = QString::fromLatin1(retnet::format_name(c));
    info.device = m_backend ? QString::fromStdString(m_backend->name()) : QString();
    info.onDevice = m_backend && m_backend->on_device();
    for (const std::string& d : retnet::available_devices()) info.devices << QString::fromStdString(d);
    info.notice = notice;
    info.hasTokenizer = m_tokenizer != nullptr;
    info.bf16Weights = !m_model->all_f32();
    info.vocabSize = c.vocab_size;
    info.dModel = c.d_model;
    info.layers = c.n_layers;
    info.heads = c.n_heads;
    info.headDimK = c.head_dim_k();
    info.headDimV = c.head_dim_v();
    info.ffnDim = c.ffn_dim;
    info.chunkSize = c.chunk_size;
    info.normEps = c.norm_eps;
    info.parameters = m_model->parameter_count();
    info.weightBytes = int64_t(m_model->weight_bytes());  // bf16 matrices of a bf16 checkpoint at 2 bytes
    info.stateBytes = retnet::model_stats(*m_model, 0).state_bytes_fp32;  // as `retnet info` says
    info.logDecay = m_model->weights.log_decay;
    info.interventions = QString::fromStdString(retnet::describe(m_interventions));
    return info;
}

// ---- tokens ----------------------------------------------------------------------------------

std::vector<int32_t> EngineWorker::encode(const QString& text) const {
    if (!m_model || !m_generator) throw retnet::Error("no model is open");
    std::vector<int32_t> ids;
    if (m_tokenizer) {
        ids = m_generator->encode_prompt(text.toStdString(), std::numeric_limits<int>::max());
        checkPromptLength(ids.size());
        return ids;
    }
    // Without tokenizer.model the prompt is a list of token ids.
    if (m_generator->bos_id() >= 0) ids.push_back(m_generator->bos_id());
    for (const QString& word : text.split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts)) {
        bool ok = false;
        const int v = word.toInt(&ok);
        if (!ok)
            throw retnet::Error("this model has no tokenizer.model: type the prompt as token ids "
                                "separated by spaces (\"" + word.toStdString() + "\" is not a number)");
        ids.push_back(v);
    }
    if (ids.empty()) throw retnet::Error("the prompt is empty: type some text first");
    checkPromptLength(ids.size());
    return ids;
}

std::vector<int32_t> EngineWorker::tokensFor(const QString& text) const {
    if (!text.trimmed().isEmpty()) return encode(text);
    if (!m_generator || m_generator->tokens().empty())
        throw retnet::Error("nothing to analyse: type a prompt or generate some text first");
    return m_generator->tokens();
}

QString EngineWorker::pieceOf(int32_t id) const {
    if (m_tokenizer) return QString::fromStdString(m_tokenizer->display_piece(id));
    return QStringLiteral("[%1]").arg(id);
}

QStringList EngineWorker::labelsFor(const std::vector<int32_t>& tokens) const {
    QStringList labels;
    labels.reserve(qsizetype(tokens.size()));
    for (int32_t t : tokens) labels << pieceOf(t);
    return labels;
}

std::vector<TokenCandidate> EngineWorker::candidates(const std::vector<retnet::TokenProb>& probs) const {
    std::vector<TokenCandidate> out;
    out.reserve(probs.size());
    for (const retnet::TokenProb& p : probs) out.push_back({p.id, pieceOf(p.id), p.prob});
    return out;
}

SequenceToken EngineWorker::convert(uint64_t id, const retnet::TokenEvent& in) const {
    SequenceToken e;
    e.requestId = id;
    e.position = in.position;
    e.id = in.id;
    e.piece = pieceOf(in.id);
    e.text = m_tokenizer ? QString::fromStdString(in.text) : QStringLiteral("[%1] ").arg(in.id);
    e.forkable = true;
    e.top = candidates(in.top);
    e.topFiltered = candidates(in.top_filtered);
    return e;
}

// The prompt's tokens with the text each adds; their candidates come from the prefill's logits.
std::vector<SequenceToken> EngineWorker::promptTokens(uint64_t id, const std::vector<int32_t>& prompt) const {
    std::vector<SequenceToken> tokens(prompt.size());
    std::optional<retnet::StreamDecoder> decoder;
    if (m_tokenizer) decoder.emplace(*m_tokenizer, true);
    for (size_t i = 0; i < prompt.size(); ++i) {
        SequenceToken& e = tokens[i];
        e.requestId = id;
        e.position = int64_t(i);
        e.id = prompt[i];
        e.piece = pieceOf(prompt[i]);
        e.text = decoder ? QString::fromStdString(decoder->push(prompt[i])) : QStringLiteral("[%1] ").arg(prompt[i]);
        e.prompt = true;
    }
    return tokens;
}

void EngineWorker::fail(uint64_t id, const JobRef& job, const std::exception& e) {
    QString message = QString::fromStdString(e.what());
    if (dynamic_cast<const retnet::Cancelled*>(&e)) message = QStringLiteral("cancelled");
    if (dynamic_cast<const std::bad_alloc*>(&e)) message = QStringLiteral("not enough memory for this model and text");
    emit failed(id, job, message);
}

// ---- generation ------------------------------------------------------------------------------

void EngineWorker::generate(uint64_t id, const GenerateRequest& request) {
    if (m_flags->stale(JobRef{Job::Generate}, id)) return;
    m_flags->stopGeneration = false;
    m_generateId = id;
    try {
        if (!m_model || !m_generator) throw retnet::Error("no model is open: use File › Open model…");
        retnet::GenerationParams params;
        params.max_new_tokens = request.maxTokens;
        params.prefill_form = request.form;
        params.chunk_size = request.chunkSize;
        params.sampler = request.sampler;
        params.max_prompt_tokens = kMaxPromptTokens;
        params.n_top = kCandidates;
        fitToText(params, request.tokens.size());  // a restored text
        params.validate();

        GenerationStats stats;
        stats.requestId = id;
        stats.form = QString::fromLatin1(retnet::form_name(request.form));
        auto onToken = [&](const retnet::TokenEvent& event) {
            if (m_flags->stale(JobRef{Job::Generate}, id)) m_flags->stopGeneration = true;  // a newer request
            stats.generated += 1;
            stats.decodeMs += event.step_ms;
            queueToken(convert(id, event));
            queueStats(stats);
            // The first token goes out at once: the time to it is what a user waits for.
            if (stats.generated == 1)
                flushBatch();
            else
                flushBatchIfDue();
        };

        retnet::GenerationResult result;
        if (request.forkPosition) {
            const int64_t p = *request.forkPosition;
            if (p < 1 || p > m_generator->length())
                throw retnet::Error("cannot fork at position " + std::to_string(p) + ": the text has " +
                                    std::to_string(m_generator->length()) + " tokens");
            emit sequenceTruncated(id, p);
            result = m_generator->fork(p, request.forkToken, params, onToken, &m_flags->stopGeneration);
        } else if (request.continuePrevious) {
            if (m_generator->length() == 0) throw retnet::Error("nothing to continue: generate first");
            result = m_generator->continue_generation(params, onToken, &m_flags->stopGeneration);
        } else {
            const std::vector<int32_t> prompt = request.tokens.empty() ? encode(request.prompt) : request.tokens;
            emit sequenceTruncated(id, 0);
            // Sent once the prefill has given each its candidates, before the first generated token.
            std::vector<SequenceToken> promptEvents = promptTokens(id, prompt);
            if (!request.tokens.empty())
                for (SequenceToken& e : promptEvents) e.prompt = e.position < request.promptLength;
            bool promptSent = false;
            auto sendPrompt = [&] {
                m_onPrefillLogits = nullptr;
                promptSent = true;
                for (SequenceToken& e : promptEvents) queueToken(std::move(e));
            };
            m_onPrefillLogits = [&](int64_t first, const retnet::Tensor& logits) {
                const auto scored = retnet::prompt_candidates(logits, first, prompt, kCandidates);
                for (size_t i = 0; i < scored.size(); ++i)
                    promptEvents[size_t(first) + 1 + i].top = candidates(scored[i]);
                if (first + logits.dim(0) >= int64_t(promptEvents.size())) sendPrompt();
            };
            try {
                result = m_generator->generate(prompt, params, onToken, &m_flags->stopGeneration);
            } catch (...) {
                m_onPrefillLogits = nullptr;
                throw;
            }
            if (!promptSent) sendPrompt();
        }
        queueStats(finalStats(stats.requestId, result.stats));
        flushBatch();
    } catch (const std::exception& e) {
        flushBatch();  // what was generated before the error is kept
        fail(id, JobRef{Job::Generate}, e);
    }
}

void EngineWorker::queueToken(SequenceToken token) {
    if (m_batch.empty()) m_batchStarted = std::chrono::steady_clock::now();
    m_batch.tokens.push_back(std::move(token));
}

void EngineWorker::queueNorms(StateNormFrames frames) {
    if (m_batch.empty()) m_batchStarted = std::chrono::steady_clock::now();
    std::optional<StateNormFrames>& held = m_batch.norms;
    if (held && !frames.reset && held->firstPosition + held->count == frames.firstPosition) {
        held->norms.insert(held->norms.end(), frames.norms.begin(), frames.norms.end());
        held->count += frames.count;
        return;
    }
    if (held && !frames.reset) flushBatch();  // not consecutive (a fork): the view truncates first
    if (m_batch.empty()) m_batchStarted = std::chrono::steady_clock::now();
    m_batch.norms = std::move(frames);
}

void EngineWorker::queueStats(const GenerationStats& stats) {
    if (m_batch.empty()) m_batchStarted = std::chrono::steady_clock::now();
    m_batch.stats = stats;
}

void EngineWorker::flushBatchIfDue() {
    if (!m_batch.empty() && std::chrono::steady_clock::now() - m_batchStarted >= kBatchInterval) flushBatch();
}

void EngineWorker::flushBatch() {
    if (m_batch.empty()) return;
    m_batch.requestId = m_generateId;
    emit generationBatch(m_batch);
    m_batch = GenerationBatch();
}

// ---- analysis --------------------------------------------------------------------------------

void EngineWorker::analyse(uint64_t id, const AnalysisRequest& request) {
    if (m_flags->stale(request.job, id)) return;
    try {
        if (!m_backend) throw retnet::Error("no model is open");
        StateGuard guard(*m_backend);
        std::vector<int32_t> tokens = tokensFor(request.text);
        QStringList labels = labelsFor(tokens);
        AnalysisContext context{*m_model, *m_backend, std::move(tokens), std::move(labels),
                                [this](int32_t t) { return pieceOf(t); },
                                [this, id, job = request.job] { return m_flags->stale(job, id); }};
        std::any result = request.compute(context);
        if (!m_flags->stale(request.job, id)) emit analysisReady(id, request.job, result);
    } catch (const std::exception& e) {
        fail(id, request.job, e);
    }
}

// ---- cost ------------------------------------------------------------------------------------

void EngineWorker::measureCost(uint64_t id, const CostRequest& request) {
    const JobRef job{Job::Cost};
    if (m_flags->stale(job, id)) return;
    try {
        if (!m_model || !m_backend) throw retnet::Error("no model is open");
        if (m_model->config.is_transformer())
            throw retnet::Error("this model is a Transformer: open a RetNet to compare it with its twin");
        const std::string device = m_backend->name();
        auto twin = std::make_shared<const retnet::Model>(twinOf(*m_model));
        auto retnet = retnet::make_backend(device, m_model);
        auto transformer = retnet::make_backend(device, twin);
        retnet::CostOptions options;
        options.lengths = request.lengths;
        options.batches = request.batches;
        options.decode_steps = request.decodeSteps;
        double reported = -1.0;
        auto progress = [&](double fraction, const std::string& what) {
            if (fraction - reported >= 0.005 || fraction >= 1.0) {  // a bar of ~200 steps
                reported = fraction;
                emit costProgress(id, fraction, QString::fromStdString(what));
            }
            return !m_flags->cancelCost.load() && !m_flags->stale(job, id);
        };
        auto pointDone = [&](const retnet::CostReport& soFar) { emit costPointReady(id, soFar); };
        const retnet::CostReport report = retnet::measure_cost(*retnet, *transformer, options, progress, pointDone);
        emit costReady(id, report);
    } catch (const std::exception& e) {
        fail(id, job, e);
    }
}

}  // namespace retnet::ui
