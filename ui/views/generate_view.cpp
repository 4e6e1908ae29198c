// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/generate_view.h"

#include <QApplication>
#include <QCheckBox>
#include <QClipboard>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHeaderView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QTextBrowser>
#include <QToolTip>
#include <QVBoxLayout>

#include <qcustomplot.h>

#include <cmath>

#include "plot_utils.h"

namespace retnet::ui {

namespace {

QString visible(const QString& piece) { return visibleToken(piece).toHtmlEscaped(); }

}  // namespace

GenerateView::GenerateView(QWidget* parent) : ViewBase(parent) {
    buildUi();
    m_flushTimer.setInterval(40);
    m_flushTimer.setSingleShot(true);
    connect(&m_flushTimer, &QTimer::timeout, this, &GenerateView::flushPending);
    m_countTimer.setInterval(200);
    m_countTimer.setSingleShot(true);
    connect(&m_countTimer, &QTimer::timeout, this, &GenerateView::countPromptTokens);
    connect(m_prompt, &QPlainTextEdit::textChanged, &m_countTimer, qOverload<>(&QTimer::start));
    setGenerating(false);
}

void GenerateView::buildUi() {
    // The candidates sit under the output rather than beside it, so the view fits a laptop.
    auto* right = new QSplitter(Qt::Vertical);
    right->addWidget(buildOutputPanel());
    right->addWidget(buildCandidatePanel());
    right->setStretchFactor(0, 3);
    right->setStretchFactor(1, 2);
    auto* splitter = new QSplitter(Qt::Horizontal);
    splitter->addWidget(buildPromptPanel());
    splitter->addWidget(right);
    splitter->setStretchFactor(0, 1);
    splitter->setStretchFactor(1, 3);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addWidget(splitter);
    updateTheme();
}

// Left: the prompt, the run buttons and the sampling settings.
QWidget* GenerateView::buildPromptPanel() {
    m_prompt = new QPlainTextEdit;
    m_prompt->setPlaceholderText(tr("Type a prompt…"));
    m_prompt->setToolTip(tr("The prompt. Generate runs it through the model (prefill) and then "
                            "samples new tokens one at a time with the recurrent form."));
    m_prompt->setTabChangesFocus(true);

    m_generate = new QPushButton(tr("Generate"));
    m_generate->setToolTip(tr("Run the prompt and generate (Ctrl+Return)"));
    m_stop = new QPushButton(tr("Stop"));
    m_stop->setToolTip(tr("Stop after the current token (Esc)"));
    m_continue = new QPushButton(tr("Continue"));
    m_continue->setToolTip(tr("Generate more from where the text ends: the recurrent state is "
                              "kept, so nothing is recomputed (Ctrl+Shift+Return)"));
    m_regenerate = new QPushButton(tr("Regenerate"));
    m_regenerate->setToolTip(tr("Run the same prompt again with the next seed (Ctrl+R)"));
    connect(m_generate, &QPushButton::clicked, this, &GenerateView::generateRequested);
    connect(m_stop, &QPushButton::clicked, this, &GenerateView::stopRequested);
    connect(m_continue, &QPushButton::clicked, this, &GenerateView::continueRequested);
    connect(m_regenerate, &QPushButton::clicked, this, &GenerateView::regenerateRequested);
    auto* buttons = new QGridLayout;
    buttons->addWidget(m_generate, 0, 0);
    buttons->addWidget(m_stop, 0, 1);
    buttons->addWidget(m_continue, 1, 0);
    buttons->addWidget(m_regenerate, 1, 1);


    auto* left = new QWidget;
    auto* leftLayout = new QVBoxLayout(left);
    leftLayout->setContentsMargins(0, 0, 0, 0);
    m_promptCount = new QLabel;
    m_promptCount->setObjectName(QStringLiteral("promptTokenCount"));
    m_promptCount->setToolTip(tr("How many tokens the prompt is, as the model's tokenizer splits it "
                                 "(with the beginning-of-text token when the model uses one)."));
    auto* promptHeader = new QHBoxLayout;
    promptHeader->addWidget(new QLabel(tr("Prompt")));
    promptHeader->addStretch();
    promptHeader->addWidget(m_promptCount);
    leftLayout->addLayout(promptHeader);
    leftLayout->addWidget(m_prompt, 1);
    leftLayout->addLayout(buttons);
    leftLayout->addWidget(buildSamplingBox());
    return left;
}

// The sampler's settings, starting at core's preset (the CLI's defaults).
QGroupBox* GenerateView::buildSamplingBox() {
    const retnet::SamplerParams preset = retnet::default_sampling();
    auto* sampling = new QGroupBox(tr("Sampling"));
    auto* form = new QFormLayout(sampling);
    m_temperature = new QDoubleSpinBox;
    m_temperature->setRange(0.0, 5.0);
    m_temperature->setSingleStep(0.05);
    m_temperature->setValue(preset.temperature);
    m_temperature->setToolTip(tr("<b>Temperature</b> T divides the logits before the softmax: "
                                 "p ∝ exp(z/T). T &lt; 1 sharpens the distribution, T &gt; 1 "
                                 "flattens it. 0 = greedy (always the most likely token)."));
    m_topK = new QSpinBox;
    m_topK->setRange(0, 100000);
    m_topK->setValue(preset.top_k);
    m_topK->setToolTip(tr("<b>Top-k</b> keeps only the k most likely tokens before drawing. "
                          "0 = off."));
    m_topP = new QDoubleSpinBox;
    m_topP->setRange(0.01, 1.0);
    m_topP->setSingleStep(0.05);
    m_topP->setValue(preset.top_p);
    m_topP->setToolTip(tr("<b>Top-p</b> (nucleus) keeps the smallest set of most likely tokens "
                          "whose probabilities add up to at least p. 1 = off."));
    m_minP = new QDoubleSpinBox;
    m_minP->setRange(0.0, 1.0);
    m_minP->setSingleStep(0.01);
    m_minP->setDecimals(3);
    m_minP->setValue(preset.min_p);
    m_minP->setToolTip(tr("<b>Min-p</b> drops tokens whose probability is below min-p × the "
                          "probability of the most likely token. 0 = off."));
    m_repeatPenalty = new QDoubleSpinBox;
    m_repeatPenalty->setRange(0.5, 3.0);
    m_repeatPenalty->setSingleStep(0.05);
    // Off by default: with a character-level model (the bundled one) the last 64 tokens hold
    // nearly every common letter, so any penalty distorts the spelling.
    m_repeatPenalty->setValue(preset.repeat_penalty);
    m_repeatPenalty->setToolTip(tr("<b>Repetition penalty</b> r makes tokens seen in the last 64 "
                                   "tokens less likely: positive logits are divided by r, "
                                   "negative ones multiplied. 1 = off. Leave it off for "
                                   "character-level models."));
    m_seed = new QSpinBox;
    m_seed->setRange(0, std::numeric_limits<int>::max());
    m_seed->setValue(int(preset.seed));
    m_seed->setToolTip(tr("<b>Seed</b> of the random generator: the same seed, prompt and "
                          "settings give the same text on every machine."));
    m_maxTokens = new QSpinBox;
    m_maxTokens->setRange(1, 100000);
    m_maxTokens->setValue(64);
    m_maxTokens->setToolTip(tr("How many tokens to generate at most."));
    m_form = new QComboBox;
    m_form->addItem(tr("parallel"), int(retnet::Form::Parallel));
    m_form->addItem(tr("recurrent"), int(retnet::Form::Recurrent));
    m_form->addItem(tr("chunkwise"), int(retnet::Form::Chunkwise));
    m_form->setToolTip(tr("Form of retention used for the prompt (prefill). All three give the "
                          "same result; they differ in cost: parallel O(T²), recurrent O(T) "
                          "steps, chunkwise O(T·C). Decoding is always recurrent."));
    m_chunk = new QSpinBox;
    m_chunk->setRange(1, 4096);
    m_chunk->setValue(64);
    m_chunk->setToolTip(tr("Chunk size C of the chunkwise form."));
    connect(m_form, &QComboBox::currentIndexChanged, this, [this] {
        m_chunk->setEnabled(m_form->currentData().toInt() == int(retnet::Form::Chunkwise));
    });
    m_chunk->setEnabled(false);
    form->addRow(tr("Temperature"), m_temperature);
    form->addRow(tr("Top-k"), m_topK);
    form->addRow(tr("Top-p"), m_topP);
    form->addRow(tr("Min-p"), m_minP);
    form->addRow(tr("Repetition penalty"), m_repeatPenalty);
    form->addRow(tr("Seed"), m_seed);
    form->addRow(tr("Max tokens"), m_maxTokens);
    form->addRow(tr("Prefill form"), m_form);
    form->addRow(tr("Chunk size"), m_chunk);
    return sampling;
}

// Centre: the streamed output and the timings.
QWidget* GenerateView::buildOutputPanel() {
    m_output = new QTextBrowser;
    m_output->setOpenLinks(false);
    m_output->setOpenExternalLinks(false);
    m_output->setObjectName(QStringLiteral("generationOutput"));
    m_output->setToolTip(QString());
    connect(m_output, &QTextBrowser::anchorClicked, this, [this](const QUrl& url) {
        bool ok = false;
        const int pos = url.path().toInt(&ok);
        if (ok) selectToken(pos);
    });
    connect(m_output, &QTextBrowser::highlighted, this, [this](const QUrl& url) {
        bool ok = false;
        const int pos = url.path().toInt(&ok);
        if (!ok || pos < 0 || pos >= int(m_tokens.size())) {
            QToolTip::hideText();
            return;
        }
        pointAt(pos);
        QToolTip::showText(QCursor::pos(), tooltipFor(m_tokens[size_t(pos)]), m_output);
    });
    m_follow = new QCheckBox(tr("Follow output"));
    m_follow->setChecked(true);
    m_follow->setToolTip(tr("Keep the newest text in view while generating. Scrolling up pauses "
                            "following until you scroll back to the end."));
    m_rate = new QLabel;
    m_rate->setObjectName(QStringLiteral("tokensPerSecond"));
    m_rate->setToolTip(tr("Decoding speed of the current generation, tokens per second"));
    // A fixed width: a changing number must not relayout the window.
    m_rate->setFixedWidth(m_rate->fontMetrics().horizontalAdvance(QStringLiteral("000000.0 tok/s ")));
    m_rate->setAlignment(Qt::AlignRight | Qt::AlignVCenter);
    auto* copy = new QPushButton(tr("Copy output"));
    copy->setObjectName(QStringLiteral("copyOutput"));
    copy->setToolTip(tr("Copy the prompt and the generated text to the clipboard (Ctrl+Shift+O)"));
    connect(copy, &QPushButton::clicked, this, &GenerateView::copyOutput);
    m_stats = new QLabel(tr("No generation yet."));
    m_stats->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_stats->setWordWrap(true);
    auto* centre = new QWidget;
    auto* centreLayout = new QVBoxLayout(centre);
    centreLayout->setContentsMargins(0, 0, 0, 0);
    auto* outputHeader = new QHBoxLayout;
    auto* outputLabel = new QLabel(tr("Output — hover a token for its candidates, click to select it"));
    outputLabel->setWordWrap(true);
    outputHeader->addWidget(outputLabel, 1);
    outputHeader->addWidget(m_follow);
    centreLayout->addLayout(outputHeader);
    // Before/after an intervention: the text as it was, beside the text now.
    m_beforeOutput = new QTextBrowser;
    m_beforeOutput->setObjectName(QStringLiteral("beforeOutput"));
    m_beforeLabel = new QLabel;
    m_beforeLabel->setWordWrap(true);
    m_beforePanel = new QWidget;
    auto* beforeLayout = new QVBoxLayout(m_beforePanel);
    beforeLayout->setContentsMargins(0, 0, 0, 0);
    beforeLayout->addWidget(m_beforeLabel);
    beforeLayout->addWidget(m_beforeOutput, 1);
    m_beforePanel->setVisible(false);
    auto* texts = new QSplitter(Qt::Horizontal);
    texts->addWidget(m_output);
    texts->addWidget(m_beforePanel);
    centreLayout->addWidget(texts, 1);
    auto* footer = new QHBoxLayout;
    footer->addWidget(m_stats, 1);
    footer->addWidget(m_rate);
    footer->addWidget(copy);
    centreLayout->addLayout(footer);
    return centre;
}

// Right: the candidates of the selected token, forking, and the probability of each token.
QWidget* GenerateView::buildCandidatePanel() {
    m_selectedLabel = new QLabel(tr("Select a token in the output."));
    m_selectedLabel->setWordWrap(true);
    m_candidates = new QTableWidget(0, 4);
    m_candidates->setHorizontalHeaderLabels({tr("Token"), tr("p model"), tr("p sampler"), tr("p before")});
    m_candidates->horizontalHeaderItem(3)->setToolTip(
        tr("The model's probability before the last intervention (Apply / Clear), same text."));
    m_candidates->setColumnHidden(3, true);
    m_candidates->horizontalHeaderItem(1)->setToolTip(
        tr("Softmax of the raw logits: what the model predicts."));
    m_candidates->horizontalHeaderItem(2)->setToolTip(
        tr("The distribution actually drawn from, after repetition penalty, temperature, top-k, "
           "top-p and min-p."));
    m_candidates->horizontalHeader()->setSectionResizeMode(0, QHeaderView::Stretch);
    m_candidates->horizontalHeader()->setSectionResizeMode(1, QHeaderView::ResizeToContents);
    m_candidates->horizontalHeader()->setSectionResizeMode(2, QHeaderView::ResizeToContents);
    m_candidates->horizontalHeader()->setSectionResizeMode(3, QHeaderView::ResizeToContents);
    m_candidates->verticalHeader()->setVisible(false);
    m_candidates->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_candidates->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_candidates->setSelectionMode(QAbstractItemView::SingleSelection);
    m_fork = new QPushButton(tr("Fork with this token"));
    m_fork->setToolTip(tr("Replace the selected token with the chosen alternative and continue "
                          "from the state snapshot taken before it (RetNet's state is O(1), "
                          "so a fork costs one state copy). Double-clicking a row does the same."));
    m_fork->setEnabled(false);
    auto fork = [this] {
        const int row = m_candidates->currentRow();
        if (m_selected < 0 || row < 0) return;
        const SequenceToken& e = m_tokens[size_t(m_selected)];
        if (!e.forkable || row >= int(e.top.size())) return;
        emit forkRequested(e.position, e.top[size_t(row)].id);
    };
    connect(m_fork, &QPushButton::clicked, this, fork);
    connect(m_candidates, &QTableWidget::cellDoubleClicked, this, fork);
    connect(m_candidates, &QTableWidget::currentCellChanged, this, [this] {
        m_fork->setEnabled(m_selected >= 0 && m_selected < int(m_tokens.size()) &&
                           m_tokens[size_t(m_selected)].forkable && m_candidates->currentRow() >= 0);
    });

    m_probPlot = new QCustomPlot;
    m_probPlot->setMinimumSize(160, 120);
    m_probPlot->xAxis->setLabel(tr("position"));
    m_probPlot->yAxis->setLabel(tr("p(token)"));
    m_probPlot->yAxis->setRange(0, 1);
    auto* bars = new QCPBars(m_probPlot->xAxis, m_probPlot->yAxis);
    bars->setWidthType(QCPBars::wtPlotCoords);
    bars->setWidth(0.8);
    bars->setName(tr("probability of the chosen token"));

    auto* table = new QWidget;
    auto* tableLayout = new QVBoxLayout(table);
    tableLayout->setContentsMargins(0, 0, 0, 0);
    tableLayout->addWidget(m_selectedLabel);
    tableLayout->addWidget(m_candidates, 1);
    tableLayout->addWidget(m_fork);
    auto* plot = new QWidget;
    auto* plotLayout = new QVBoxLayout(plot);
    plotLayout->setContentsMargins(0, 0, 0, 0);
    plotLayout->addWidget(new QLabel(tr("Model probability of each token")));
    plotLayout->addWidget(m_probPlot, 1);
    auto* right = new QSplitter(Qt::Horizontal);
    right->addWidget(table);
    right->addWidget(plot);
    return right;
}

void GenerateView::attached() {
    EngineController* c = engine();
    connect(c, &EngineController::generationStarted, this, [this] {
        m_rateClock.invalidate();  // the first figure of this generation is shown at once
        setGenerating(true);
    });
    connect(c, &EngineController::generationFinished, this, [this] { setGenerating(false); });
    connect(c, &EngineController::tokenGenerated, this, &GenerateView::appendToken);
    connect(c, &EngineController::sequenceTruncated, this, &GenerateView::truncate);
    connect(c, &EngineController::statsUpdated, this, &GenerateView::showStats);
    connect(c, &EngineController::sequenceRescored, this, &GenerateView::rescore);
    auto run = [c](const GenerateRequest& r) {
        if (c->hasModel()) c->generate(r);
    };
    connect(this, &GenerateView::generateRequested, this, [this, run] { run(request()); });
    connect(this, &GenerateView::regenerateRequested, this, [this, run] {
        setSeed(request().sampler.seed + 1);
        run(request());
    });
    connect(this, &GenerateView::continueRequested, this, [this, run] {
        GenerateRequest r = request();
        r.continuePrevious = true;
        run(r);
    });
    connect(this, &GenerateView::stopRequested, c, &EngineController::stopGeneration);
    connect(this, &GenerateView::forkRequested, this, [this, run](int64_t position, int32_t token) {
        GenerateRequest r = request();
        r.forkPosition = position;
        r.forkToken = token;
        run(r);
    });
}

void GenerateView::updateTheme() {
    applyPlotTheme(m_probPlot);
    if (m_probPlot->plottableCount() > 0) {
        auto* bars = static_cast<QCPBars*>(m_probPlot->plottable(0));
        bars->setBrush(seriesColor(0));
        bars->setPen(Qt::NoPen);
    }
    m_probPlot->replot(QCustomPlot::rpQueuedReplot);
    rebuildOutput();
}

GenerateRequest GenerateView::request() const {
    GenerateRequest r;
    r.prompt = m_prompt->toPlainText();
    r.sampler.temperature = m_temperature->value();
    r.sampler.top_k = m_topK->value();
    r.sampler.top_p = m_topP->value();
    r.sampler.min_p = m_minP->value();
    r.sampler.repeat_penalty = m_repeatPenalty->value();
    r.sampler.seed = uint64_t(m_seed->value());
    r.maxTokens = m_maxTokens->value();
    r.form = retnet::Form(m_form->currentData().toInt());
    r.chunkSize = m_chunk->value();
    return r;
}

QJsonObject GenerateView::settings() const {
    return {{QStringLiteral("prompt"), prompt()},
            {QStringLiteral("temperature"), m_temperature->value()},
            {QStringLiteral("top_k"), m_topK->value()},
            {QStringLiteral("top_p"), m_topP->value()},
            {QStringLiteral("min_p"), m_minP->value()},
            {QStringLiteral("repeat_penalty"), m_repeatPenalty->value()},
            {QStringLiteral("seed"), m_seed->value()},
            {QStringLiteral("max_tokens"), m_maxTokens->value()},
            {QStringLiteral("prefill_form"), QString::fromLatin1(retnet::form_name(retnet::Form(m_form->currentData().toInt())))},
            {QStringLiteral("chunk_size"), m_chunk->value()}};
}

void GenerateView::applySettings(const QJsonObject& s) {
    if (s.contains(QStringLiteral("prompt"))) setPrompt(s.value(QStringLiteral("prompt")).toString());
    auto number = [&](const char* key, auto* box) {
        if (s.contains(QLatin1String(key))) box->setValue(s.value(QLatin1String(key)).toDouble());
    };
    number("temperature", m_temperature);
    number("top_k", m_topK);
    number("top_p", m_topP);
    number("min_p", m_minP);
    number("repeat_penalty", m_repeatPenalty);
    number("seed", m_seed);
    number("max_tokens", m_maxTokens);
    number("chunk_size", m_chunk);
    const int form = m_form->findText(s.value(QStringLiteral("prefill_form")).toString());
    if (form >= 0) m_form->setCurrentIndex(form);
}

QString jsonValueText(const QJsonValue& v) {
    switch (v.type()) {
        case QJsonValue::String: return QStringLiteral("\"%1\"").arg(v.toString().left(40));
        case QJsonValue::Double: return QString::number(v.toDouble(), 'g', 17);
        case QJsonValue::Bool: return v.toBool() ? QStringLiteral("true") : QStringLiteral("false");
        case QJsonValue::Array: return QStringLiteral("an array");
        case QJsonValue::Object: return QStringLiteral("an object");
        default: return QStringLiteral("null");
    }
}

bool isWholeNumber(const QJsonValue& v, double low, double high) {
    const double x = v.toDouble();
    return v.isDouble() && x == std::floor(x) && x >= low && x <= high;
}

QString GenerateView::checkSettings(const QJsonObject& s) const {
    if (s.contains(QStringLiteral("prompt")) && !s.value(QStringLiteral("prompt")).isString())
        return tr("generate.prompt: expected a string, got %1").arg(jsonValueText(s.value(QStringLiteral("prompt"))));
    struct Range {
        const char* key;
        double low, high;
        bool whole;
    };
    const Range ranges[] = {
        {"temperature", m_temperature->minimum(), m_temperature->maximum(), false},
        {"top_k", double(m_topK->minimum()), double(m_topK->maximum()), true},
        {"top_p", m_topP->minimum(), m_topP->maximum(), false},
        {"min_p", m_minP->minimum(), m_minP->maximum(), false},
        {"repeat_penalty", m_repeatPenalty->minimum(), m_repeatPenalty->maximum(), false},
        {"seed", double(m_seed->minimum()), double(m_seed->maximum()), true},
        {"max_tokens", double(m_maxTokens->minimum()), double(m_maxTokens->maximum()), true},
        {"chunk_size", double(m_chunk->minimum()), double(m_chunk->maximum()), true}};
    for (const Range& r : ranges) {
        const QJsonValue v = s.value(QLatin1String(r.key));
        if (v.isUndefined()) continue;
        const bool fits = r.whole ? isWholeNumber(v, r.low, r.high)
                                  : v.isDouble() && v.toDouble() >= r.low && v.toDouble() <= r.high;
        if (!fits)
            return tr("generate.%1: expected %2 from %3 to %4, got %5")
                .arg(QLatin1String(r.key), r.whole ? tr("a whole number") : tr("a number"))
                .arg(r.low).arg(r.high).arg(jsonValueText(v));
    }
    const QJsonValue form = s.value(QStringLiteral("prefill_form"));
    if (!form.isUndefined() && m_form->findText(form.toString()) < 0)
        return tr("generate.prefill_form: expected parallel, recurrent or chunkwise, got %1").arg(jsonValueText(form));
    return {};
}

std::vector<int32_t> GenerateView::tokenIds() const {
    std::vector<int32_t> ids;
    for (const SequenceToken& e : m_tokens) ids.push_back(e.id);
    return ids;
}

int64_t GenerateView::promptLength() const {
    return std::count_if(m_tokens.begin(), m_tokens.end(), [](const SequenceToken& e) { return e.prompt; });
}

QString GenerateView::prompt() const { return m_prompt->toPlainText(); }
void GenerateView::setPrompt(const QString& text) { m_prompt->setPlainText(text); }
void GenerateView::setMaxTokens(int n) { m_maxTokens->setValue(n); }
void GenerateView::setSeed(uint64_t seed) { m_seed->setValue(int(seed)); }

QString GenerateView::samplerSummary() const {
    const GenerateRequest r = request();
    return QStringLiteral("temperature=%1 top_k=%2 top_p=%3 min_p=%4 repeat_penalty=%5 seed=%6 "
                          "prefill=%7 chunk=%8")
        .arg(r.sampler.temperature)
        .arg(r.sampler.top_k)
        .arg(r.sampler.top_p)
        .arg(r.sampler.min_p)
        .arg(r.sampler.repeat_penalty)
        .arg(r.sampler.seed)
        .arg(QString::fromLatin1(retnet::form_name(r.form)))
        .arg(r.chunkSize);
}

void GenerateView::setModelInfo(const ModelInfo& info) {
    m_countTimer.start();  // another tokenizer
    m_interventions = info.interventions;
    if (info.sequenceKept) return showBefore();  // the text stays
    m_before.clear();
    showBefore();
    m_latestStats = GenerationStats();
    m_chunk->setValue(info.chunkSize);
    truncate(0);
    m_stats->setText(info.hasTokenizer ? tr("Model ready.")
                                       : tr("This model has no tokenizer.model: type the prompt "
                                            "as token ids separated by spaces."));
}

QString GenerateView::rateText() const { return m_rate->text(); }
QString GenerateView::promptCountText() const { return m_promptCount->text(); }

bool GenerateView::copyOutput() {
    flushPending();
    const QString text = outputText();
    if (text.isEmpty()) return false;  // what the user has on the clipboard stays
    QApplication::clipboard()->setText(text);
    return true;
}

void GenerateView::countPromptTokens() {
    if (!engine() || !engine()->hasModel()) return m_promptCount->clear();
    const QString text = prompt();
    if (text.trimmed().isEmpty()) return m_promptCount->setText(tr("0 tokens"));
    // The Generate view's own channel 1 (it has no other analysis): a newer count replaces it.
    AnalysisRequest r{JobRef{Job::Analysis, id(), 1}, text,
                      [](AnalysisContext& c) { return std::any(int64_t(c.tokens.size())); }, true};
    engine()->analyse(
        std::move(r), this,
        [this](const std::any& v) {
            const int64_t n = std::any_cast<int64_t>(v);
            m_promptCount->setText(n == 1 ? tr("1 token") : tr("%1 tokens").arg(n));
            m_promptCount->setToolTip(QString());
        },
        [this](const QString& message) {
            m_promptCount->setText(tr("? tokens"));
            m_promptCount->setToolTip(message);
        });
}

void GenerateView::setGenerating(bool generating) {
    m_generate->setEnabled(!generating);
    m_regenerate->setEnabled(!generating);
    m_continue->setEnabled(!generating && !m_tokens.empty());
    m_stop->setEnabled(generating);
    if (generating) return;
    flushPending();
    updateProbabilityPlot();
}

QString GenerateView::outputText() const {
    QString text;
    for (const SequenceToken& e : m_tokens) text += e.text;
    for (const SequenceToken& e : m_pending) text += e.text;
    return text;
}

void GenerateView::appendToken(const SequenceToken& event) {
    m_pending.push_back(event);
    if (!m_flushTimer.isActive()) m_flushTimer.start();
}

void GenerateView::flushPending() {
    if (m_pending.empty()) return;
    QScrollBar* bar = m_output->verticalScrollBar();
    const bool atEnd = bar->value() >= bar->maximum() - 4;
    const int keep = bar->value();
    // One edit block: the document is laid out once per batch, not once per token.
    QTextCursor cursor(m_output->document());
    cursor.movePosition(QTextCursor::End);
    cursor.beginEditBlock();
    for (SequenceToken& e : m_pending) {
        if (e.position != int64_t(m_tokens.size())) continue;  // out of order: a truncation won
        m_tokens.push_back(std::move(e));
        insertToken(cursor, m_tokens.back());
    }
    cursor.endEditBlock();
    m_pending.clear();
    // Never steal the reader's place: follow only when asked and already at the end.
    if (m_follow->isChecked() && atEnd)
        bar->setValue(bar->maximum());
    else
        bar->setValue(keep);
    // While generating, the bar chart (which redraws every bar) and the timings (a wrapping label:
    // setting it relayouts the window) follow at 4 Hz, not per batch: a readout changing faster
    // cannot be read, and the GUI thread's time is taken from the engine on a small machine.
    const bool generating = m_stop->isEnabled();
    if (!generating || !m_plotClock.isValid() || m_plotClock.elapsed() >= 250) {
        updateProbabilityPlot();
        writeStats();
        m_plotClock.restart();
    }
    m_continue->setEnabled(!m_stop->isEnabled() && !m_tokens.empty());
    emit sequenceChanged();
}

void GenerateView::insertToken(QTextCursor& cursor, const SequenceToken& e) {
    m_tokenStart.resize(size_t(e.position) + 1, cursor.position());
    m_tokenStart[size_t(e.position)] = cursor.position();
    if (e.text.isEmpty()) return;
    QTextCharFormat format;
    format.setAnchor(true);
    format.setAnchorHref(QStringLiteral("tok:%1").arg(e.position));
    const QPalette pal = palette();
    format.setForeground(e.prompt ? pal.color(QPalette::PlaceholderText) : pal.color(QPalette::Text));
    if (e.position == m_selected) format.setBackground(pal.color(QPalette::Highlight).lighter(150));
    format.setToolTip(QString());
    cursor.insertText(e.text, format);
}

void GenerateView::rebuildOutput() {
    if (!m_output) return;
    QScrollBar* bar = m_output->verticalScrollBar();
    const int keep = bar->value();
    m_output->clear();
    m_tokenStart.clear();
    QTextCursor cursor(m_output->document());
    cursor.beginEditBlock();
    for (const SequenceToken& e : m_tokens) insertToken(cursor, e);
    cursor.endEditBlock();
    highlightMarked();
    bar->setValue(keep);
}

void GenerateView::truncate(int64_t length) {
    m_pending.erase(std::remove_if(m_pending.begin(), m_pending.end(),
                                   [length](const SequenceToken& e) { return e.position >= length; }),
                    m_pending.end());
    if (int64_t(m_tokens.size()) > length) m_tokens.resize(size_t(length));
    if (m_selected >= length) {
        m_selected = -1;
        showCandidates(-1);
    }
    rebuildOutput();
    updateProbabilityPlot();
    emit sequenceChanged();
}

void GenerateView::selectToken(int64_t position) {
    flushPending();
    if (position < 0 || position >= int64_t(m_tokens.size())) return;
    pointAt(position);
    m_selected = int(position);
    rebuildOutput();
    showCandidates(position);
}

void GenerateView::showLinkedPosition(int64_t position) {
    m_marked = position;
    highlightMarked();
}

// An extra selection, not a format change: moving the cursor does not rebuild the document.
void GenerateView::highlightMarked() {
    QList<QTextEdit::ExtraSelection> selections;
    const int64_t p = m_marked;
    if (p >= 0 && p < int64_t(m_tokens.size()) && p < int64_t(m_tokenStart.size())) {
        QTextEdit::ExtraSelection mark;
        mark.cursor = QTextCursor(m_output->document());
        mark.cursor.setPosition(m_tokenStart[size_t(p)]);
        mark.cursor.setPosition(m_tokenStart[size_t(p)] + int(m_tokens[size_t(p)].text.size()), QTextCursor::KeepAnchor);
        mark.format.setBackground(isDarkPalette() ? QColor(120, 90, 0) : QColor(255, 220, 120));
        selections << mark;
    }
    m_output->setExtraSelections(selections);
}

QString GenerateView::markedText() const {
    const QList<QTextEdit::ExtraSelection> s = m_output->extraSelections();
    return s.isEmpty() ? QString() : s.front().cursor.selectedText();
}

// The text's candidates under the model now in force replace the shown ones; the text as it was
// (with its candidates) is kept as "before". The sampler's column no longer applies.
void GenerateView::rescore(const std::vector<std::vector<TokenCandidate>>& candidates) {
    flushPending();
    m_before = m_tokens;
    m_beforeModel = m_interventions.isEmpty() ? tr("the model as loaded") : m_interventions;
    for (size_t p = 0; p < m_tokens.size() && p < candidates.size(); ++p) {
        if (p == 0 || candidates[p].empty()) continue;  // nothing predicts the first token
        m_tokens[p].top = candidates[p];
        m_tokens[p].topFiltered.clear();
    }
    showBefore();
    showCandidates(m_selected);
    updateProbabilityPlot();
}

void GenerateView::showBefore() {
    m_beforePanel->setVisible(!m_before.empty());
    m_candidates->setColumnHidden(3, m_before.empty());
    if (m_before.empty()) return;
    m_beforeLabel->setText(tr("Before (%1):").arg(m_beforeModel.toHtmlEscaped()));
    m_beforeOutput->setPlainText(beforeText());
}

QString GenerateView::beforeText() const {
    QString text;
    for (const SequenceToken& e : m_before) text += e.text;
    return text;
}

// Comparable only where the text up to and including `position` is the same as before.
double GenerateView::beforeProbability(int64_t position, int32_t token) const {
    if (position < 0 || position >= int64_t(m_before.size()) || position >= int64_t(m_tokens.size())) return -1.0;
    for (int64_t p = 0; p <= position; ++p)
        if (m_before[size_t(p)].id != m_tokens[size_t(p)].id) return -1.0;
    for (const TokenCandidate& c : m_before[size_t(position)].top)
        if (c.id == token) return c.prob;
    return -1.0;
}

void GenerateView::showCandidates(int64_t position) {
    m_candidates->setRowCount(0);
    m_fork->setEnabled(false);
    if (position < 0 || position >= int64_t(m_tokens.size())) {
        m_selectedLabel->setText(tr("Select a token in the output."));
        return;
    }
    const SequenceToken& e = m_tokens[size_t(position)];
    m_selectedLabel->setText(
        tr("Position %1: <b>%2</b> (id %3)%4")
            .arg(e.position)
            .arg(visible(e.piece))
            .arg(e.id)
            .arg(e.prompt ? tr(" — prompt token; candidates are what the model expected here")
                          : (e.forkable ? tr(" — pick an alternative to fork") : QString())));
    m_candidates->setRowCount(int(e.top.size()));
    for (size_t i = 0; i < e.top.size(); ++i) {
        const TokenCandidate& c = e.top[i];
        const QString id = QString::number(c.id);
        const QString shown = visibleToken(c.text);
        auto* token = new QTableWidgetItem(shown.contains(id) ? shown : QStringLiteral("%1  (%2)").arg(shown, id));
        if (c.id == e.id) {
            QFont f = token->font();
            f.setBold(true);
            token->setFont(f);
        }
        m_candidates->setItem(int(i), 0, token);
        m_candidates->setItem(int(i), 1, new QTableWidgetItem(QString::number(c.prob, 'f', 4)));
        double filtered = 0.0;
        for (const TokenCandidate& f : e.topFiltered)
            if (f.id == c.id) filtered = f.prob;
        m_candidates->setItem(int(i), 2, new QTableWidgetItem(
            e.prompt || e.topFiltered.empty() ? QStringLiteral("–") : QString::number(filtered, 'f', 4)));
        const double before = beforeProbability(position, c.id);
        m_candidates->setItem(int(i), 3, new QTableWidgetItem(before < 0 ? QStringLiteral("–")
                                                                         : QString::number(before, 'f', 4)));
    }
}

QString GenerateView::tooltipFor(const SequenceToken& e) const {
    QString html = QStringLiteral("<b>%1</b> (id %2, position %3)").arg(visible(e.piece)).arg(e.id).arg(e.position);
    if (e.top.empty()) return html + tr("<br>no prediction (first token)");
    html += QStringLiteral("<table>");
    for (const TokenCandidate& c : e.top) {
        const bool chosen = c.id == e.id;
        html += QStringLiteral("<tr><td>%1%2%3</td><td align=right>%4</td></tr>")
                    .arg(chosen ? QStringLiteral("<b>") : QString())
                    .arg(visible(c.text))
                    .arg(chosen ? QStringLiteral("</b>") : QString())
                    .arg(QString::number(c.prob, 'f', 4));
    }
    return html + QStringLiteral("</table>");
}

void GenerateView::showEvent(QShowEvent* event) {
    ViewBase::showEvent(event);
    if (m_plotDirty) updateProbabilityPlot();
}

void GenerateView::updateProbabilityPlot() {
    if (!m_probPlot->isVisible()) {  // drawn when shown: hidden plots cost nothing while generating
        m_plotDirty = true;
        return;
    }
    m_plotDirty = false;
    auto* bars = static_cast<QCPBars*>(m_probPlot->plottable(0));
    QVector<double> keys, values;
    for (const SequenceToken& e : m_tokens) {
        if (e.top.empty()) continue;
        double p = 0.0;
        for (const TokenCandidate& c : e.top)
            if (c.id == e.id) p = c.prob;
        keys << double(e.position);
        values << p;
    }
    bars->setData(keys, values, true);
    m_probPlot->xAxis->setRange(-0.5, std::max<double>(8.0, double(m_tokens.size())) - 0.5);
    m_probPlot->replot(QCustomPlot::rpQueuedReplot);
}

// While tokens stream in, the timings are shown with the text, at most 4 times a second.
void GenerateView::showStats(const GenerationStats& s) {
    m_latestStats = s;
    if (s.finished) writeStats();
    // The readout follows live at 4 Hz; the final figure always.
    if (!s.finished && m_rateClock.isValid() && m_rateClock.elapsed() < 250) return;
    m_rateClock.restart();
    m_rate->setText(s.generated > 0 ? tr("%1 tok/s").arg(s.decodeTokensPerSecond(), 0, 'f', 1) : QString());
}

void GenerateView::writeStats() {
    const GenerationStats& s = m_latestStats;
    if (s.requestId == 0) return;  // no generation yet
    QString text;
    if (s.promptTokens > 0)
        text += tr("Prompt: %1 tokens, prefill %2 ms (%3, %4 tok/s). ")
                    .arg(s.promptTokens)
                    .arg(s.prefillMs, 0, 'f', 1)
                    .arg(s.form)
                    .arg(s.prefillTokensPerSecond(), 0, 'f', 0);
    text += tr("Decode: %1 tokens in %2 ms, %3 tok/s (recurrent).")
                .arg(s.generated)
                .arg(s.decodeMs, 0, 'f', 1)
                .arg(s.decodeTokensPerSecond(), 0, 'f', 1);
    if (s.finished) {
        const QString reason = s.stopReason == QLatin1String("eos")       ? tr("end of text")
                               : s.stopReason == QLatin1String("stopped") ? tr("stopped")
                               : s.stopReason == QLatin1String("error")   ? tr("error")
                                                                          : tr("length limit");
        text += tr(" Finished: %1.").arg(reason);
    }
    m_stats->setText(text);
}

QString GenerateView::csv() const {
    QString out = QStringLiteral("position,id,piece,prompt,p_model,top_candidates\n");
    for (const SequenceToken& e : m_tokens) {
        double p = 0.0;
        QStringList cands;
        for (const TokenCandidate& c : e.top) {
            if (c.id == e.id) p = c.prob;
            cands << QStringLiteral("%1:%2").arg(c.id).arg(c.prob, 0, 'g', 6);
        }
        out += QStringLiteral("%1,%2,%3,%4,%5,%6\n")
                   .arg(e.position)
                   .arg(e.id)
                   .arg(csvField(e.piece))
                   .arg(e.prompt ? 1 : 0)
                   .arg(e.top.empty() ? QString() : QString::number(p, 'g', 8))
                   .arg(csvField(cands.join(QLatin1Char(' '))));
    }
    return out;
}

}  // namespace retnet::ui
