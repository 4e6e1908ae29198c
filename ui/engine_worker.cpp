// SPDX-License-Identifier: GPL-3.0-or-later
#include "engine_worker.h"

#include <QFileInfo>
#include <QRegularExpression>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>

#include "retnet/equivalence.h"
#include "retnet/error.h"
#include "retnet/lens.h"
#include "retnet/retention_reach.h"

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

// Shrinks an (n, n) block to (m, m) cells, keeping in each cell the value of largest magnitude
// (with its sign), so isolated strong scores survive downsampling.
void downsample(const float* src, int n, int stride, int m, float* dst) {
    for (int r = 0; r < m; ++r)
        for (int c = 0; c < m; ++c) {
            float best = 0.0f;
            for (int i = r * stride; i < std::min(n, (r + 1) * stride); ++i)
                for (int j = c * stride; j < std::min(n, (c + 1) * stride); ++j) {
                    const float v = src[size_t(i) * size_t(n) + size_t(j)];
                    if (std::abs(v) > std::abs(best)) best = v;
                }
            dst[size_t(r) * size_t(m) + size_t(c)] = best;
        }
}

constexpr int kMaxPromptTokens = 8192;
constexpr int kCandidates = 10;  // top tokens shown per position

// Passes every call through to the real backend and reports ‖S‖ after each token, so the state
// view fills in while the generator prefills and decodes, without the generator knowing.
class NormTap : public retnet::Backend {
public:
    using Sink = std::function<void(int64_t firstPosition, const retnet::Tensor& norms)>;
    using LogitsSink = std::function<void(int64_t firstPosition, const retnet::Tensor& logits)>;
    NormTap(retnet::Backend& inner, Sink sink, LogitsSink logitsSink)
        : m_inner(inner), m_sink(std::move(sink)), m_logitsSink(std::move(logitsSink)) {}

    std::string name() const override { return m_inner.name(); }
    const retnet::Model& model() const override { return m_inner.model(); }
    // One sequence (the generator's); every logits row is taken for the prompt candidates, and
    // the caller gets the rows it asked for.
    std::vector<retnet::Tensor> forward_batch(std::span<const retnet::SequenceRequest> batch,
                                              const retnet::ForwardOptions& options,
                                              retnet::Introspection* introspection) override {
        if (batch.size() != 1) return m_inner.forward_batch(batch, options, introspection);
        retnet::Introspection local;
        retnet::Introspection* probe = introspection ? introspection : &local;
        probe->want_state_norms = true;
        retnet::SequenceRequest all = batch[0];
        all.logits = retnet::LogitRows::All;
        retnet::Tensor logits = std::move(m_inner.forward_batch({&all, 1}, options, probe).front());
        const int64_t first = m_position;
        m_position += int64_t(all.tokens.size());
        if (m_sink && probe->state_norms.rank() == 3) m_sink(first, probe->state_norms);
        if (m_logitsSink) m_logitsSink(first, logits);
        if (batch[0].logits == retnet::LogitRows::All) return {std::move(logits)};
        const int64_t V = logits.dim(1), rows = batch[0].logits == retnet::LogitRows::Last ? 1 : 0;
        retnet::Tensor out({rows, V});
        std::copy(logits.data.end() - rows * V, logits.data.end(), out.data.begin());
        return {std::move(out)};
    }
    int slot_count() const override { return m_inner.slot_count(); }
    void set_slot_count(int count) override { m_inner.set_slot_count(count); }
    void reset(int slot = 0) override {
        m_inner.reset(slot);
        m_position = 0;
    }
    retnet::RecurrentState snapshot(int slot = 0) const override { return m_inner.snapshot(slot); }
    void restore(const retnet::RecurrentState& state, int slot = 0) override {
        m_inner.restore(state, slot);
        m_position = state.position;
    }

private:
    retnet::Backend& m_inner;
    Sink m_sink;
    LogitsSink m_logitsSink;
    int64_t m_position = 0;  // tokens the inner backend's state has consumed
};

}  // namespace

EngineWorker::EngineWorker(std::shared_ptr<JobFlags> flags) : m_flags(std::move(flags)) {}
EngineWorker::~EngineWorker() = default;

// ---- model -----------------------------------------------------------------------------------

void EngineWorker::loadModelDirectory(uint64_t id, const QString& directory, const QString& device) {
    try {
        const std::string dir = directory.toStdString();
        double lastReported = -1.0;
        auto progress = [&](double fraction) {
            if (fraction - lastReported >= 0.01 || fraction >= 1.0) {
                lastReported = fraction;
                emit loadProgress(id, fraction);
            }
            return !m_flags->cancelLoad.load();
        };
        auto model = std::make_shared<const retnet::Model>(retnet::load_model(dir, progress));
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
    } catch (const retnet::Cancelled&) {
        emit failed(id, QStringLiteral("Open model"), QStringLiteral("cancelled"));
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Open model"), QString::fromStdString(e.what()));
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
        emit failed(id, QStringLiteral("Use model"), QString::fromStdString(e.what()));
    }
}

void EngineWorker::setInterventions(uint64_t id, const retnet::Interventions& interventions) {
    if (!m_loaded) return;
    try {
        auto model = interventions.empty()
                         ? m_loaded
                         : std::make_shared<const retnet::Model>(retnet::apply_interventions(*m_loaded, interventions));
        installModel(std::move(model), m_tokenizer, m_directory, QString::fromStdString(m_backend->name()));
        m_interventions = interventions;
        emit modelReady(id, describeModel(m_notice));
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Interventions"), QString::fromStdString(e.what()));
        emit modelReady(id, describeModel(m_notice));  // the model in force is unchanged
    }
}

void EngineWorker::setDevice(uint64_t id, const QString& device) {
    if (!m_model) return;
    try {
        installModel(m_model, m_tokenizer, m_directory, device);
        emit modelReady(id, describeModel(m_notice));
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Switch device"), QString::fromStdString(e.what()));
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
    m_tap = std::make_unique<NormTap>(*m_backend, [this](int64_t first, const retnet::Tensor& norms) {
        StateNormFrames frames;
        frames.requestId = m_generateId;
        frames.reset = first == 0;
        frames.firstPosition = first;
        frames.count = int(norms.dim(0));
        frames.layers = int(norms.dim(1));
        frames.heads = int(norms.dim(2));
        frames.norms = norms.data;
        emit stateNormsReady(frames);
    }, [this](int64_t first, const retnet::Tensor& logits) {
        if (m_onPrefillLogits) m_onPrefillLogits(first, logits);
    });
    m_generator = std::make_unique<retnet::Generator>(*m_tap, m_tokenizer.get());
}

ModelInfo EngineWorker::describeModel(const QString& notice) const {
    ModelInfo info;
    const retnet::ModelConfig& c = m_model->config;
    info.directory = m_directory;
    info.name = m_directory.isEmpty() ? QStringLiteral("model in memory")
                                      : QFileInfo(m_directory).fileName();
    info.family = QString::fromLatin1(retnet::family_name(c.family));
    info.device = m_backend ? QString::fromStdString(m_backend->name()) : QString();
    for (const std::string& d : retnet::available_devices()) info.devices << QString::fromStdString(d);
    info.notice = notice;
    info.hasTokenizer = m_tokenizer != nullptr;
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
    info.weightBytes = info.parameters * int64_t(sizeof(float));
    info.stateBytes = int64_t(c.n_layers) * c.n_heads * c.head_dim_k() * c.head_dim_v() *
                      int64_t(sizeof(float));
    if (c.family == retnet::Family::TorchScale)
        info.stateBytes += int64_t(c.n_layers) * c.n_heads * int64_t(sizeof(double));
    info.logDecay = m_model->weights.log_decay;
    info.interventions = QString::fromStdString(retnet::describe(m_interventions));
    return info;
}

// ---- tokens ----------------------------------------------------------------------------------

std::vector<int32_t> EngineWorker::encode(const QString& text) const {
    if (!m_model || !m_generator) throw retnet::Error("no model is open");
    if (m_tokenizer) return m_generator->encode_prompt(text.toStdString(), kMaxPromptTokens);
    // Without tokenizer.model the prompt is a list of token ids.
    std::vector<int32_t> ids;
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

TokenEvent EngineWorker::convert(uint64_t id, const retnet::TokenEvent& in) const {
    TokenEvent e;
    e.requestId = id;
    e.position = in.position;
    e.id = in.id;
    e.piece = pieceOf(in.id);
    e.text = m_tokenizer ? QString::fromStdString(in.text) : QStringLiteral("[%1] ").arg(in.id);
    e.forkable = true;
    auto candidates = [this](const std::vector<retnet::TokenProb>& probs) {
        std::vector<TokenCandidate> out;
        out.reserve(probs.size());
        for (const retnet::TokenProb& p : probs) out.push_back({p.id, pieceOf(p.id), p.prob});
        return out;
    };
    e.top = candidates(in.top);
    e.topFiltered = candidates(in.top_filtered);
    return e;
}

void EngineWorker::scorePromptTokens(int64_t first, const retnet::Tensor& logits,
                                     std::vector<TokenEvent>& events) const {
    const int64_t rows = logits.dim(0), V = logits.dim(1);
    for (int64_t t = 0; t < rows; ++t) {
        const int64_t position = first + t + 1;  // the token that row t predicts
        if (position < 1 || position >= int64_t(events.size())) continue;
        const std::span<const float> row(logits.data.data() + t * V, size_t(V));
        TokenEvent& e = events[size_t(position)];
        e.top.clear();
        for (const retnet::TokenProb& p : retnet::top_probabilities(row, kCandidates))
            e.top.push_back({p.id, pieceOf(p.id), p.prob});
        if (std::none_of(e.top.begin(), e.top.end(), [&](const TokenCandidate& c) { return c.id == e.id; }))
            e.top.push_back({e.id, e.piece, std::exp(retnet::log_probability(row, e.id))});
    }
}

// ---- generation ------------------------------------------------------------------------------

void EngineWorker::generate(uint64_t id, const GenerateRequest& request) {
    if (m_flags->stale(Job::Generate, id)) return;
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
        params.validate();

        GenerationStats stats;
        stats.requestId = id;
        stats.form = QString::fromLatin1(retnet::form_name(request.form));
        auto onToken = [&](const retnet::TokenEvent& event) {
            if (m_flags->stale(Job::Generate, id)) m_flags->stopGeneration = true;  // a newer request
            stats.generated += 1;
            stats.decodeMs += event.step_ms;
            emit tokenGenerated(convert(id, event));
            emit statsUpdated(stats);
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
            const std::vector<int32_t> prompt = encode(request.prompt);
            emit sequenceTruncated(id, 0);
            // The prompt's tokens, with the text each adds. They are sent once the prefill has
            // given each its candidates (row t of the logits predicts token t + 1), before the
            // first generated token.
            std::vector<TokenEvent> promptEvents(prompt.size());
            std::optional<retnet::StreamDecoder> decoder;
            if (m_tokenizer) decoder.emplace(*m_tokenizer, true);
            for (size_t i = 0; i < prompt.size(); ++i) {
                TokenEvent& e = promptEvents[i];
                e.requestId = id;
                e.position = int64_t(i);
                e.id = prompt[i];
                e.piece = pieceOf(prompt[i]);
                e.text = decoder ? QString::fromStdString(decoder->push(prompt[i]))
                                 : QStringLiteral("[%1] ").arg(prompt[i]);
                e.prompt = true;
            }
            bool promptSent = false;
            auto sendPrompt = [&] {
                m_onPrefillLogits = nullptr;
                promptSent = true;
                for (const TokenEvent& e : promptEvents) emit tokenGenerated(e);
            };
            m_onPrefillLogits = [&](int64_t first, const retnet::Tensor& logits) {
                scorePromptTokens(first, logits, promptEvents);
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
        stats.promptTokens = int(result.stats.prefill_tokens);
        stats.prefillMs = result.stats.prefill_ms;
        stats.generated = int(result.stats.generated_tokens);
        stats.decodeMs = result.stats.decode_ms;
        stats.form = QString::fromLatin1(retnet::form_name(result.stats.prefill_form));
        switch (result.stats.stop_reason) {
            case retnet::StopReason::Eos: stats.stopReason = QStringLiteral("eos"); break;
            case retnet::StopReason::Cancelled: stats.stopReason = QStringLiteral("stopped"); break;
            default: stats.stopReason = QStringLiteral("length"); break;
        }
        stats.finished = true;
        emit statsUpdated(stats);
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Generate"), QString::fromStdString(e.what()));
    }
}

// ---- analysis --------------------------------------------------------------------------------

void EngineWorker::computeEquivalence(uint64_t id, const EquivalenceRequest& request) {
    if (m_flags->stale(Job::Equivalence, id)) return;
    try {
        if (!m_backend) throw retnet::Error("no model is open");
        const std::vector<int32_t> tokens = tokensFor(request.text);
        StateGuard guard(*m_backend);
        retnet::EquivalenceOptions options;
        options.chunk_size = request.chunkSize;
        options.tolerance = request.tolerance;
        if (request.zeroEps) options.head_norm_eps = 0.0;
        EquivalenceResult result;
        result.requestId = id;
        result.labels = labelsFor(tokens);
        result.tolerance = request.tolerance;
        result.report = std::make_shared<const retnet::EquivalenceReport>(
            retnet::compare_forms(*m_backend, tokens, options));
        if (!request.sweepSizes.empty() && !m_flags->stale(Job::Equivalence, id))
            result.sweep = retnet::chunk_size_sweep(*m_backend, tokens, request.sweepSizes, options);
        emit equivalenceReady(result);
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Equivalence"), QString::fromStdString(e.what()));
    }
}

void EngineWorker::computeLens(uint64_t id, const LensRequest& request) {
    if (m_flags->stale(Job::Lens, id)) return;
    try {
        if (!m_backend) throw retnet::Error("no model is open");
        const std::vector<int32_t> tokens = tokensFor(request.text);
        StateGuard guard(*m_backend);
        retnet::Introspection probe;
        probe.want_layer_outputs = true;
        m_backend->reset();
        m_backend->forward(tokens, retnet::ForwardOptions{}, &probe);
        const auto readings = retnet::logit_lens(*m_model, probe.layer_outputs, tokens, request.topN);
        LensResult result;
        result.requestId = id;
        result.layers = int(readings.size());
        result.tokens = int(tokens.size());
        result.labels = labelsFor(tokens);
        for (const auto& layer : readings)
            for (const retnet::LensReading& r : layer) {
                result.nextProb.push_back(r.next_prob);
                std::vector<TokenCandidate>& cell = result.top.emplace_back();
                for (const retnet::TokenProb& p : r.top) cell.push_back({p.id, pieceOf(p.id), p.prob});
            }
        emit lensReady(result);
    } catch (const std::exception& e) {
        emit failed(id, QStringLiteral("Logit lens"), QString::fromStdString(e.what()));
    }
}

void EngineWorker::computeRetention(uint64_t id, const RetentionRequest& request) {
    const Job job = request.overview ? Job::Overview : Job::Retention;
    if (m_flags->stale(job, id)) return;
    try {
        if (!m_backend) throw retnet::Error("no model is open");
        const std::vector<int32_t> tokens = tokensFor(request.text);
        const int T = int(tokens.size());
        const int L = m_model->config.n_layers, H = m_model->config.n_heads;
        StateGuard guard(*m_backend);
        retnet::ForwardOptions fo;
        fo.form = request.form;
        fo.chunk_size = request.chunkSize;

        auto scoresOf = [&](int layer) {
            retnet::Introspection probe;
            probe.score_layer = layer;
            probe.score_head = 0;
            probe.want_all_head_scores = true;
            m_backend->reset();
            m_backend->forward(tokens, fo, &probe);
            if (probe.scores.numel() != int64_t(H) * T * T)
                throw retnet::Error("the backend returned retention scores of shape " +
                                    probe.scores.shape_string() + ", expected (H, T, T)");
            return std::move(probe.scores);
        };

        if (request.overview) {
            const int size = std::min(T, 32);
            const int stride = (T + size - 1) / size;
            const int m = (T + stride - 1) / stride;
            auto data = std::make_shared<std::vector<float>>(size_t(L) * H * m * m);
            for (int l = 0; l < L; ++l) {
                if (m_flags->stale(job, id)) return;
                const retnet::Tensor s = scoresOf(l);
                for (int h = 0; h < H; ++h)
                    downsample(s.ptr() + size_t(h) * T * T, T, stride, m,
                               data->data() + (size_t(l) * H + h) * m * m);
            }
            RetentionOverview overview;
            overview.requestId = id;
            overview.layers = L;
            overview.heads = H;
            overview.size = m;
            overview.scores = std::move(data);
            emit overviewReady(overview);
            return;
        }

        if (request.layer < 0 || request.layer >= L)
            throw retnet::Error("layer " + std::to_string(request.layer) + " does not exist");
        const retnet::Tensor s = scoresOf(request.layer);
        const int maxCells = std::max(8, request.maxCells);
        const int stride = (T + maxCells - 1) / maxCells;
        const int n = (T + stride - 1) / stride;
        auto data = std::make_shared<std::vector<float>>(size_t(H) * n * n);
        for (int h = 0; h < H; ++h)
            downsample(s.ptr() + size_t(h) * T * T, T, stride, n, data->data() + size_t(h) * n * n);
        RetentionMatrix matrix;
        matrix.requestId = id;
        matrix.layer = request.layer;
        matrix.heads = H;
        matrix.tokens = T;
        matrix.size = n;
        matrix.stride = stride;
        matrix.form = QString::fromLatin1(retnet::form_name(request.form));
        const QStringList all = labelsFor(tokens);
        for (int i = 0; i < n; ++i) matrix.labels << all[qsizetype(i) * stride];
        matrix.scores = std::move(data);
        matrix.reach = retnet::retention_reach(s, m_model->weights.log_decay);
        emit retentionReady(matrix);
    } catch (const std::exception& e) {
        emit failed(id, request.overview ? QStringLiteral("Retention overview")
                                         : QStringLiteral("Retention"),
                    QString::fromStdString(e.what()));
    }
}

}  // namespace retnet::ui
