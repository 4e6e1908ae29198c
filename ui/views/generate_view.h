// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Prompt editor, sampling controls, streamed output with per-token candidates, forks, timings.
#include <QElapsedTimer>
#include <QJsonObject>
#include <QTimer>

#include <vector>

#include "snapshots.h"
#include "views/view_base.h"

class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QGroupBox;
class QLabel;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;
class QTableWidget;
class QTextBrowser;
class QTextCursor;
class QCustomPlot;

namespace retnet::ui {

// A JSON value as an error line quotes it: "abc", 3.5, an array, null.
QString jsonValueText(const QJsonValue& v);
// A JSON number without a fraction in [low, high] (a token id, a length, a seed).
bool isWholeNumber(const QJsonValue& v, double low, double high);

class GenerateView : public ViewBase {
    Q_OBJECT
public:
    explicit GenerateView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Generate; }
    QString title() const override { return tr("Generate"); }
    bool hasData() const override { return !m_tokens.empty(); }
    QString csv() const override;
    void updateTheme() override;

    GenerateRequest request() const;  // a fresh generation from the prompt
    // Workspaces: the prompt and the sampling settings as JSON, and back (unknown keys ignored,
    // missing ones left as they are); the text's token ids and how many are the prompt.
    QJsonObject settings() const;
    void applySettings(const QJsonObject& settings);
    // What applySettings would not take as it is, in one line: a value of the wrong type or
    // outside its control's range (the control would clamp it); empty when all fit.
    QString checkSettings(const QJsonObject& settings) const;
    std::vector<int32_t> tokenIds() const;
    int64_t promptLength() const;
    QString prompt() const;
    void setPrompt(const QString& text);
    void setMaxTokens(int n);
    void setSeed(uint64_t seed);
    QString outputText() const;         // prompt + generated text as shown
    int64_t sequenceLength() const { return int64_t(m_tokens.size()); }
    const std::vector<SequenceToken>& tokens() const { return m_tokens; }
    QString samplerSummary() const;     // for export metadata
    int selectedPosition() const { return m_selected; }
    QString rateText() const;         // the live tok/s readout
    QString promptCountText() const;  // the prompt's token count, as shown under the prompt
    bool copyOutput();                // prompt + generated text to the clipboard; false: no text (clipboard kept)
    int64_t markedPosition() const { return m_marked; }  // the linked cursor, highlighted
    QString markedText() const;                           // the highlighted token's text
    // Before/after an intervention: the text and candidates as they were before the last change
    // of the model's edits (empty when there was none), and what that model was.
    const std::vector<SequenceToken>& beforeTokens() const { return m_before; }
    QString beforeModel() const { return m_beforeModel; }
    QString beforeText() const;
    void selectToken(int64_t position);

public slots:
    void setModelInfo(const retnet::ui::ModelInfo& info) override;
    void appendToken(const retnet::ui::SequenceToken& token);
    void truncate(int64_t length);
    void showStats(const retnet::ui::GenerationStats& stats);
    void setGenerating(bool generating);
    void flushPending();  // append buffered tokens now (the timer does it every 40 ms)

signals:
    void generateRequested();
    void stopRequested();
    void continueRequested();
    void regenerateRequested();
    void forkRequested(int64_t position, int32_t token);
    void sequenceChanged();  // tokens were appended or dropped (throttled)

protected:
    QCustomPlot* mainPlot() const override { return nullptr; }
    void attached() override;  // follows the generation stream and sends this view's requests

private:
    void buildUi();
    QWidget* buildPromptPanel();
    QGroupBox* buildSamplingBox();
    QWidget* buildOutputPanel();
    QWidget* buildCandidatePanel();  // returns a splitter
    void rebuildOutput();
    void insertToken(QTextCursor& cursor, const SequenceToken& e);  // at the cursor, which moves on
    void showCandidates(int64_t position);
    void updateProbabilityPlot();
    void writeStats();
    void countPromptTokens();
    void showLinkedPosition(int64_t position) override;
    void rescore(const std::vector<std::vector<TokenCandidate>>& candidates);  // keeps the before
    void showBefore();
    double beforeProbability(int64_t position, int32_t token) const;  // -1: not comparable
    void highlightMarked();  // the marked token's background, as an extra selection  // asks the engine (its tokenizer) how many tokens the prompt is
    void showEvent(QShowEvent* event) override;
    QString tooltipFor(const SequenceToken& e) const;

    QPlainTextEdit* m_prompt = nullptr;
    QDoubleSpinBox* m_temperature = nullptr;
    QSpinBox* m_topK = nullptr;
    QDoubleSpinBox* m_topP = nullptr;
    QDoubleSpinBox* m_minP = nullptr;
    QDoubleSpinBox* m_repeatPenalty = nullptr;
    QSpinBox* m_seed = nullptr;
    QSpinBox* m_maxTokens = nullptr;
    QComboBox* m_form = nullptr;
    QSpinBox* m_chunk = nullptr;
    QPushButton* m_generate = nullptr;
    QPushButton* m_stop = nullptr;
    QPushButton* m_continue = nullptr;
    QPushButton* m_regenerate = nullptr;
    QTextBrowser* m_output = nullptr;
    QCheckBox* m_follow = nullptr;
    QLabel* m_stats = nullptr;
    QLabel* m_rate = nullptr;         // live decode tok/s
    QLabel* m_promptCount = nullptr;  // tokens in the prompt, updated as the user types
    QTimer m_countTimer;              // waits for a pause in typing
    QLabel* m_selectedLabel = nullptr;
    QTableWidget* m_candidates = nullptr;
    QPushButton* m_fork = nullptr;
    QCustomPlot* m_probPlot = nullptr;

    std::vector<SequenceToken> m_tokens;   // the whole sequence, by position
    std::vector<SequenceToken> m_pending;  // received, not yet shown
    std::vector<int> m_tokenStart;         // by position: where its text starts in the document
    int64_t m_marked = -1;
    std::vector<SequenceToken> m_before;  // the text before the last intervention change
    QString m_beforeModel;                // "the model as loaded" or its edits then
    QString m_interventions;              // the edits in force now
    QTextBrowser* m_beforeOutput = nullptr;
    QLabel* m_beforeLabel = nullptr;
    QWidget* m_beforePanel = nullptr;
    QTimer m_flushTimer;
    QElapsedTimer m_plotClock;  // when the bar chart was last redrawn
    QElapsedTimer m_rateClock;  // when the readout was last set
    GenerationStats m_latestStats;
    bool m_plotDirty = false;  // tokens arrived while the plot was hidden
    int m_selected = -1;
};

}  // namespace retnet::ui
