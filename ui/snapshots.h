// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Value types of the model and the generation stream that cross from the engine thread to the UI
// in queued signals. They own their data; nothing in them points into the engine. Each carries
// the id of the request it answers, so the controller can drop what a newer request made stale.
// (An analysis view's own request and result types live beside the view: ui/analysis.h.)
#include <QMetaType>
#include <QString>
#include <QStringList>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "retnet/forward.h"
#include "retnet/intervention.h"
#include "retnet/sampler.h"

namespace retnet::ui {

struct ModelInfo {
    QString directory;  // "" for a model made in memory
    QString name;       // directory name or "random model"
    QString family;
    QString device;     // backend name in use
    bool onDevice = false;  // that backend runs in a GPU's memory (Backend::on_device)
    QStringList devices;
    QString notice;     // e.g. "CUDA unavailable; using the CPU backend"
    bool hasTokenizer = false;
    bool bf16Weights = false;  // the CPU holds some matrices in bf16 (a bf16 checkpoint), computing in float32
    int vocabSize = 0, dModel = 0, layers = 0, heads = 0, headDimK = 0, headDimV = 0, ffnDim = 0;
    int chunkSize = 64;
    double normEps = 0.0;
    int64_t parameters = 0;
    int64_t weightBytes = 0;   // the weights in memory, as held (bf16 or float32)
    int64_t stateBytes = 0;    // the whole recurrent state (all layers), fixed size
    std::vector<float> logDecay;  // (H) log γ_h
    QString interventions;        // retnet::describe() of the edits in force; empty for none
    // The text on screen is still the engine's sequence (a device switch or interventions, not a
    // new model): views keep it and recompute what they show from it.
    bool sequenceKept = false;

    // The model's Transformer twin (docs/transformer.md: H heads of d/H) keeps K and V of every
    // token: retnet::kv_cache_bytes(), as `retnet info` prints it.
    int64_t kvCacheBytes(int64_t tokens) const { return tokens * layers * 2 * int64_t(dModel) * int64_t(sizeof(float)); }
    // Weights + state + the largest transient buffers of a parallel prefill of `tokens`.
    int64_t estimatedBytes(int64_t tokens) const {
        const int64_t scores = int64_t(heads) * tokens * tokens * int64_t(sizeof(float));
        const int64_t activations = tokens * (4 * int64_t(dModel) + ffnDim + vocabSize) * 4;
        return weightBytes + stateBytes + scores + activations;
    }
};

struct TokenCandidate {
    int32_t id = 0;
    QString text;  // display piece
    double prob = 0.0;
};

// One token of the sequence (prompt or generated), as the app shows it.
struct SequenceToken {
    uint64_t requestId = 0;
    int64_t position = 0;  // index in the whole sequence
    int32_t id = 0;
    QString piece;       // as shown in candidate lists
    QString text;        // the text it adds to the output (may be empty for a split character)
    bool prompt = false; // part of the prompt (no candidates)
    bool forkable = false;  // a state snapshot exists before this token
    std::vector<TokenCandidate> top;          // model distribution (softmax of raw logits)
    std::vector<TokenCandidate> topFiltered;  // after the sampler's filters
};

struct GenerationStats {
    uint64_t requestId = 0;
    QString form;
    int promptTokens = 0;
    double prefillMs = 0.0;
    int generated = 0;
    double decodeMs = 0.0;
    bool finished = false;
    QString stopReason;  // "length", "eos", "stopped"
    double decodeTokensPerSecond() const { return decodeMs > 0 ? generated * 1000.0 / decodeMs : 0.0; }
    double prefillTokensPerSecond() const {
        return prefillMs > 0 ? promptTokens * 1000.0 / prefillMs : 0.0;
    }
};

// ‖S‖_F per layer and head for consecutive positions.
struct StateNormFrames {
    uint64_t requestId = 0;
    bool reset = false;        // a new sequence starts (drop earlier frames)
    int64_t firstPosition = 0;
    int count = 0, layers = 0, heads = 0;
    std::vector<float> norms;  // (count, L, H)
};

// What the engine thread sends while generating, gathered over a few milliseconds: one queued
// signal (one wake-up of the GUI thread) per batch instead of three per token.
struct GenerationBatch {
    uint64_t requestId = 0;
    std::optional<StateNormFrames> norms;  // consecutive positions
    std::vector<SequenceToken> tokens;     // by position
    std::optional<GenerationStats> stats;  // the latest
    // After an intervention (or clearing it), the candidates of every position of the kept text
    // under the model now in force, by position (position 0 predicts nothing: empty).
    std::vector<std::vector<TokenCandidate>> rescored;
    bool empty() const { return !norms && tokens.empty() && !stats && rescored.empty(); }
};

struct GenerateRequest {
    QString prompt;
    retnet::SamplerParams sampler = retnet::default_sampling();
    int maxTokens = 64;
    retnet::Form form = retnet::Form::Parallel;  // of the prefill
    int chunkSize = 0;
    bool continuePrevious = false;  // continue from the current end of the sequence
    std::optional<int64_t> forkPosition;  // replace the token at this position…
    int32_t forkToken = -1;               // …with this one, then continue
    // A restored text (workspaces): these tokens instead of the encoded prompt, the first
    // promptLength of them shown as the prompt, the rest as generated.
    std::vector<int32_t> tokens;
    int64_t promptLength = 0;
};

}  // namespace retnet::ui

Q_DECLARE_METATYPE(retnet::ui::ModelInfo)
Q_DECLARE_METATYPE(retnet::ui::SequenceToken)
Q_DECLARE_METATYPE(retnet::ui::GenerationStats)
Q_DECLARE_METATYPE(retnet::ui::StateNormFrames)
Q_DECLARE_METATYPE(retnet::ui::GenerationBatch)
