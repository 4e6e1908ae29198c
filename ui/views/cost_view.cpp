// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/cost_view.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QRegularExpression>
#include <QSpinBox>
#include <QTableWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <set>

#include <qcustomplot.h>

#include "cost_plot.h"
#include "plot_utils.h"

namespace retnet::ui {

namespace {

// Small enough to finish in seconds on a laptop's CPU; the sizes where a GPU makes them so.
const QString kCpuLengths = QStringLiteral("64, 256, 1024");
const QString kCpuBatches = QStringLiteral("1, 4");
const QString kCudaLengths = QStringLiteral("1024, 4096, 16384, 32768");
const QString kCudaBatches = QStringLiteral("1, 8, 16, 64");
constexpr int kMaxListValue = 1 << 20;

QString bytes(int64_t n) { return QLocale::c().formattedDataSize(n, 1, QLocale::DataSizeIecFormat); }

// "64, 256 1024" → {64, 256, 1024}; a word that is not a whole number in [1, 2²⁰] gives the line
// saying so in `error`.
std::vector<int> parseList(const QString& text, const QString& what, QString* error) {
    std::vector<int> values;
    for (const QString& word : text.split(QRegularExpression(QStringLiteral("[,;\\s]+")), Qt::SkipEmptyParts)) {
        bool ok = false;
        const int v = word.toInt(&ok);
        if (!ok || v < 1 || v > kMaxListValue) {
            *error = QStringLiteral("%1: \"%2\" is not a whole number from 1 to %3").arg(what, word).arg(kMaxListValue);
            return {};
        }
        values.push_back(v);
    }
    if (values.empty()) *error = QStringLiteral("%1: type at least one number").arg(what);
    return values;
}

QTableWidgetItem* cell(const QString& text) {
    auto* item = new QTableWidgetItem(text);
    item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
    return item;
}

}  // namespace

CostView::CostView(QWidget* parent) : ViewBase(parent) {
    m_plot = new QCustomPlot;
    m_plot->setMinimumHeight(280);
    m_table = new QTableWidget(0, 9);
    m_table->setHorizontalHeaderLabels({tr("model"), tr("length"), tr("batch"), tr("prefill (ms)"),
                                        tr("ms / step"), tr("tokens / s"), tr("state / KV cache (computed)"),
                                        tr("GPU memory in use (measured)"), tr("note")});
    m_table->horizontalHeaderItem(6)->setToolTip(
        tr("The batch's RetNet states or Transformer KV caches, computed from the tokens they hold at the "
           "backend's element size. Not measured: the allocator may hold more."));
    m_table->horizontalHeaderItem(7)->setToolTip(
        tr("The GPU's memory in use after the timed steps, as the device reports it: the whole GPU's, other "
           "processes' included. The CPU backend reports none, so the column is hidden there."));
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->verticalHeader()->setVisible(false);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_gauge = new QLabel;
    m_gauge->setObjectName(QStringLiteral("costGauge"));
    m_gauge->setWordWrap(true);
    m_gauge->setTextInteractionFlags(Qt::TextSelectableByMouse);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addWidget(buildControls());
    layout->addWidget(m_gauge);
    layout->addWidget(m_plot, 4);
    layout->addWidget(m_table, 1);
    applyDefaults(false);
    setMeasuring(false);
    updateGauge();
    redraw();
}

QWidget* CostView::buildControls() {
    auto* box = new QWidget;
    m_lengths = new QLineEdit;
    m_lengths->setToolTip(tr("Context lengths to measure (tokens of text before the timed steps), "
                             "separated by commas."));
    m_batches = new QLineEdit;
    m_batches->setToolTip(tr("Batch sizes: sequences decoded together, separated by commas."));
    m_steps = new QSpinBox;
    m_steps->setRange(1, 100000);
    m_steps->setValue(16);
    m_steps->setToolTip(tr("Decoding steps timed at each point (their median is the latency)."));
    m_measure = new QPushButton(tr("Measure"));
    m_measure->setObjectName(QStringLiteral("costMeasure"));
    m_cancel = new QPushButton(tr("Cancel"));
    connect(m_measure, &QPushButton::clicked, this, &CostView::measure);
    connect(m_cancel, &QPushButton::clicked, this, &CostView::cancel);
    m_batchChoice = new QComboBox;
    m_batchChoice->setToolTip(tr("The batch size of the memory, throughput and latency panels."));
    m_lengthChoice = new QComboBox;
    m_lengthChoice->setToolTip(tr("The context length of the latency-against-batch panel."));
    for (QComboBox* c : {m_batchChoice, m_lengthChoice})
        connect(c, &QComboBox::activated, this, &CostView::redraw);
    m_progress = new QProgressBar;
    m_progress->setRange(0, 1000);
    m_note = new QLabel;
    m_note->setObjectName(QStringLiteral("costNote"));
    m_note->setTextInteractionFlags(Qt::TextSelectableByMouse);

    auto* row = new QHBoxLayout;
    row->setContentsMargins(0, 0, 0, 0);
    row->addWidget(new QLabel(tr("Lengths")));
    row->addWidget(m_lengths, 2);
    row->addWidget(new QLabel(tr("Batches")));
    row->addWidget(m_batches, 1);
    row->addWidget(new QLabel(tr("Steps")));
    row->addWidget(m_steps);
    row->addWidget(m_measure);
    row->addWidget(m_cancel);
    auto* second = new QHBoxLayout;
    second->setContentsMargins(0, 0, 0, 0);
    second->addWidget(m_progress, 1);
    second->addWidget(new QLabel(tr("Panels at batch")));
    second->addWidget(m_batchChoice);
    second->addWidget(new QLabel(tr("and length")));
    second->addWidget(m_lengthChoice);
    auto* layout = new QVBoxLayout(box);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(row);
    layout->addLayout(second);
    layout->addWidget(m_note);
    return box;
}

void CostView::attached() {
    EngineController* e = engine();
    connect(e, &EngineController::costProgress, this, [this](double fraction, const QString& what) {
        if (!m_measuring) return;
        m_progress->setValue(int(std::lround(fraction * 1000.0)));
        setNote(what);
    });
    connect(e, &EngineController::costPointMeasured, this, [this](const CostReport& soFar) {
        if (m_measuring) showPoints(soFar);
    });
    connect(e, &EngineController::costMeasured, this, [this](const CostReport& report) {
        setMeasuring(false);
        showReport(report);
    });
    connect(e, &EngineController::costFailed, this, [this](const QString& message) {
        setMeasuring(false);
        m_progress->setValue(0);
        if (m_partial)
            return setNote(message == QLatin1String("cancelled")
                               ? tr("Cancelled after %1 of %2 points; the table and the curves keep those measured.")
                                     .arg(m_report.points.size())
                                     .arg(m_planned)
                               : tr("Not measured beyond %1 of %2 points: %3")
                                     .arg(m_report.points.size())
                                     .arg(m_planned)
                                     .arg(message));
        const QString kept = hasData() ? tr("; the table keeps the last results") : QString();
        setNote(message == QLatin1String("cancelled") ? tr("Cancelled%1.").arg(kept)
                                                      : tr("Not measured: %1").arg(message));
    });
    // The gauge follows the text: its length and the generation's timings.
    connect(e, &EngineController::tokenGenerated, this,
            [this](const SequenceToken& t) { m_position = std::max(m_position, t.position + 1); });
    connect(e, &EngineController::sequenceTruncated, this, [this](int64_t length) {
        m_position = length;
        updateGauge();
    });
    connect(e, &EngineController::generationStarted, this, [this] { m_generated = 0, m_decodeMs = 0.0; });
    connect(e, &EngineController::statsUpdated, this, [this](const GenerationStats& s) {
        m_generated = s.generated;
        m_decodeMs = s.decodeMs;
        updateGauge();
    });
}

void CostView::setModelInfo(const ModelInfo& info) {
    const bool cuda = info.onDevice;
    if (m_defaultsForCuda != cuda) applyDefaults(cuda);
    if (!info.sequenceKept) {  // another model: neither its numbers nor its text are this one's
        m_report = CostReport();
        m_partial = false;
        m_position = 0;
        m_generated = 0;
        m_decodeMs = 0.0;
        fillChoices();
        fillTable();
        redraw();
        setNote(tr("Measure times this model against its Transformer twin on %1.").arg(info.device));
    }
    m_info = info;
    updateGauge();
}

void CostView::applyDefaults(bool cuda) {
    m_lengths->setText(cuda ? kCudaLengths : kCpuLengths);
    m_batches->setText(cuda ? kCudaBatches : kCpuBatches);
    m_defaultsForCuda = cuda;
}

void CostView::setLengths(const QString& lengths) { m_lengths->setText(lengths); }
void CostView::setBatches(const QString& batches) { m_batches->setText(batches); }
void CostView::setDecodeSteps(int steps) { m_steps->setValue(steps); }
QString CostView::lengths() const { return m_lengths->text(); }
QString CostView::batches() const { return m_batches->text(); }
QString CostView::note() const { return m_note->text(); }
QString CostView::gaugeText() const { return m_gauge->text(); }

void CostView::setNote(const QString& line) { m_note->setText(line); }

void CostView::setMeasuring(bool on) {
    m_measuring = on;
    m_measure->setEnabled(!on);
    m_cancel->setEnabled(on);
    for (QWidget* w : std::initializer_list<QWidget*>{m_lengths, m_batches, m_steps}) w->setEnabled(!on);
}

void CostView::measure() {
    if (!engine() || !engine()->hasModel()) return setNote(tr("Not measured: no model is open"));
    QString error;
    CostRequest request;
    request.lengths = parseList(m_lengths->text(), tr("lengths"), &error);
    if (error.isEmpty()) request.batches = parseList(m_batches->text(), tr("batches"), &error);
    if (!error.isEmpty()) return setNote(tr("Not measured: %1").arg(error));
    request.decodeSteps = m_steps->value();
    m_planned = int(2 * request.lengths.size() * request.batches.size());
    m_partial = false;  // the last results stay until the first new point replaces them
    setMeasuring(true);
    m_progress->setValue(0);
    setNote(tr("Building the Transformer twin…"));
    engine()->measureCost(request);
}

void CostView::cancel() {
    if (m_measuring && engine()) engine()->cancelCost();
}

void CostView::showPoints(const CostReport& soFar) {
    m_report = soFar;
    m_partial = true;
    fillChoices();
    fillTable();
    redraw();
    updateGauge();
}

void CostView::showReport(const CostReport& report) {
    m_report = report;
    m_partial = false;
    fillChoices();
    fillTable();
    redraw();
    m_progress->setValue(hasData() ? 1000 : 0);
    int oom = 0;
    for (const CostPoint& p : m_report.points) oom += p.out_of_memory ? 1 : 0;
    setNote(tr("Measured on %1 with %2 weights: RetNet %3 parameters, Transformer twin %4%5")
                .arg(QString::fromStdString(report.device))
                .arg(QString::fromStdString(report.weights))
                .arg(report.retnet_parameters)
                .arg(report.transformer_parameters)
                .arg(oom ? tr("; %n point(s) did not fit", nullptr, oom) : QString()));
    updateGauge();
}

// The batches and lengths measured, keeping the user's choice where it still exists.
void CostView::fillChoices() {
    std::set<int> batches, lengths;
    for (const CostPoint& p : m_report.points) batches.insert(p.batch), lengths.insert(p.length);
    auto fill = [](QComboBox* box, const std::set<int>& values, int preferred) {
        const int kept = box->currentData().isValid() ? box->currentData().toInt() : preferred;
        box->clear();
        for (int v : values) box->addItem(QString::number(v), v);
        const int at = box->findData(values.count(kept) ? kept : preferred);
        box->setCurrentIndex(std::max(at, 0));
    };
    fill(m_batchChoice, batches, costPlotBatch(m_report));
    fill(m_lengthChoice, lengths, costPlotLength(m_report));
}

void CostView::redraw() {
    const int batch = m_batchChoice->currentData().isValid() ? m_batchChoice->currentData().toInt() : 0;
    const int length = m_lengthChoice->currentData().isValid() ? m_lengthChoice->currentData().toInt() : 0;
    drawCostPlot(m_plot, m_report, batch, length);
}

void CostView::updateTheme() { redraw(); }

void CostView::fillTable() {
    m_table->setRowCount(int(m_report.points.size()));
    const bool gpu = std::any_of(m_report.points.begin(), m_report.points.end(),
                                 [](const CostPoint& p) { return p.device_bytes >= 0; });
    m_table->setColumnHidden(7, !gpu);
    for (int r = 0; r < int(m_report.points.size()); ++r) {
        const CostPoint& p = m_report.points[size_t(r)];
        const bool ok = !p.out_of_memory;
        m_table->setItem(r, 0, new QTableWidgetItem(QString::fromStdString(p.model)));
        m_table->setItem(r, 1, cell(QString::number(p.length)));
        m_table->setItem(r, 2, cell(QString::number(p.batch)));
        m_table->setItem(r, 3, cell(ok ? QString::number(p.prefill_ms, 'f', 2) : QString()));
        m_table->setItem(r, 4, cell(ok ? QString::number(p.ms_per_step, 'f', 3) : QString()));
        m_table->setItem(r, 5, cell(ok ? QString::number(p.tokens_per_s, 'f', 1) : QString()));
        m_table->setItem(r, 6, cell(ok ? bytes(p.state_bytes) : QString()));
        m_table->setItem(r, 7, cell(p.device_bytes >= 0 ? bytes(p.device_bytes) : QString()));
        m_table->setItem(r, 8, new QTableWidgetItem(ok ? QString::fromStdString(p.note)
                                                       : tr("out of memory: %1").arg(QString::fromStdString(p.note))));
    }
}

// RetNet's state beside the twin's KV cache at the current position, and the time per token.
void CostView::updateGauge() {
    if (m_info.layers == 0) return m_gauge->setText(tr("Open a model to compare its state with a KV cache."));
    const int64_t kv = m_info.kvCacheBytes(m_position);
    if (m_info.family == QLatin1String("llama"))  // a Transformer was opened: it has no state to compare
        return m_gauge->setText(tr("<b>At position %1</b>: this Transformer's KV cache <b>%2</b>; open a RetNet to "
                                   "compare it with its twin").arg(m_position).arg(bytes(kv)));
    QString text = tr("<b>At position %1</b>: RetNet state <b>%2</b> (the same at every position) · "
                      "Transformer twin's KV cache <b>%3</b>")
                       .arg(m_position)
                       .arg(bytes(m_info.stateBytes), bytes(kv));
    if (m_info.stateBytes > 0 && kv > 0)
        text += tr(" (%1× the state)").arg(double(kv) / double(m_info.stateBytes), 0, 'g', 3);
    if (m_generated > 0)
        text += tr(" · RetNet %1 ms/token over %2 generated").arg(m_decodeMs / m_generated, 0, 'f', 2).arg(m_generated);
    // The twin's time per token where it was measured nearest to this length (batch 1).
    const CostPoint* nearest = nullptr;
    for (const CostPoint& p : m_report.points)
        if (p.model == "Transformer" && p.batch == 1 && !p.out_of_memory &&
            (!nearest || std::llabs(p.length - m_position) < std::llabs(nearest->length - m_position)))
            nearest = &p;
    if (nearest)
        text += tr(" · Transformer %1 ms/step measured at %2 tokens").arg(nearest->ms_per_step, 0, 'f', 2).arg(nearest->length);
    m_gauge->setText(text);
}

QString CostView::csv() const {
    QString out = QStringLiteral("model,length,batch,prefill_ms,ms_per_step,tokens_per_s,state_bytes,device_bytes,"
                                 "out_of_memory,note\n");
    for (const CostPoint& p : m_report.points)
        out += QStringLiteral("%1,%2,%3,%4,%5,%6,%7,%8,%9,%10\n")
                   .arg(QString::fromStdString(p.model))
                   .arg(p.length)
                   .arg(p.batch)
                   .arg(p.prefill_ms, 0, 'g', 8)
                   .arg(p.ms_per_step, 0, 'g', 8)
                   .arg(p.tokens_per_s, 0, 'g', 8)
                   .arg(p.state_bytes)
                   .arg(p.device_bytes)
                   .arg(p.out_of_memory ? 1 : 0)
                   .arg(csvField(QString::fromStdString(p.note)));
    return out;
}

QStringList CostView::exportInfo() const {
    return {QStringLiteral("cost device: %1").arg(QString::fromStdString(m_report.device)),
            QStringLiteral("cost weights: %1").arg(QString::fromStdString(m_report.weights)),
            QStringLiteral("RetNet parameters: %1").arg(m_report.retnet_parameters),
            QStringLiteral("Transformer parameters: %1").arg(m_report.transformer_parameters),
            QStringLiteral("timed steps per point: %1").arg(m_steps->value())};
}

}  // namespace retnet::ui
