// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/recurrence_view.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QSlider>
#include <QSpinBox>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include <qcustomplot.h>

#include "plot_utils.h"
#include "retnet/analysis.h"
#include "retnet/error.h"

namespace retnet::ui {

namespace {
constexpr int kMaxSteps = 512;  // positions traced; a state snapshot is taken after each
}

namespace {

// qₙ·kₘ of the head, and oₙ from both forms: qₙ Sₙ with the traced states, Σₘ score(n, m) vₘ with
// the parallel scores.
void addOutputs(RecurrenceTrace& t, const retnet::RetentionInputs& in) {
    const int T = t.tokens, dk = t.dk, dv = t.dv, H = int(in.q.dim(1));
    auto at = [&](const retnet::Tensor& x, int n, int width) { return x.data.data() + (size_t(n) * H + size_t(t.head)) * size_t(width); };
    auto qk = std::make_shared<std::vector<float>>(size_t(T) * T, 0.0f);
    auto rec = std::make_shared<std::vector<float>>(size_t(T) * dv, 0.0f);
    auto par = std::make_shared<std::vector<float>>(size_t(T) * dv, 0.0f);
    for (int n = 0; n < T; ++n) {
        const float* q = at(in.q, n, dk);
        for (int m = 0; m <= n; ++m) {
            const float* k = at(in.k, m, dk);
            double dot = 0.0;
            for (int d = 0; d < dk; ++d) dot += double(q[d]) * k[d];
            (*qk)[size_t(n) * T + m] = float(dot);
            const float w = (*t.scores)[size_t(n) * T + m];
            const float* v = at(in.v, m, dv);
            for (int j = 0; j < dv; ++j) (*par)[size_t(n) * dv + j] += w * v[j];
        }
        const float* S = t.state(n);  // (Dk, Dv)
        for (int d = 0; d < dk; ++d)
            for (int j = 0; j < dv; ++j) (*rec)[size_t(n) * dv + j] += q[d] * S[size_t(d) * dv + j];
    }
    t.qk = std::move(qk);
    t.recurrentOut = std::move(rec);
    t.parallelOut = std::move(par);
}

}  // namespace

RecurrenceTrace computeRecurrence(AnalysisContext& c, const RecurrenceRequest& request) {
    const retnet::ModelConfig& cfg = c.model.config;
    if (request.layer < 0 || request.layer >= cfg.n_layers || request.head < 0 || request.head >= cfg.n_heads)
        throw retnet::Error("layer " + std::to_string(request.layer) + ", head " + std::to_string(request.head) +
                            " does not exist");
    RecurrenceTrace t;
    t.layer = request.layer;
    t.head = request.head;
    t.tokens = std::min<int>(int(c.tokens.size()), kMaxSteps);
    t.dk = cfg.head_dim_k();
    t.dv = cfg.head_dim_v();
    t.gamma = std::exp(double(c.model.weights.log_decay[size_t(request.head)]));
    t.labels = c.labels.mid(0, t.tokens);
    const std::span<const int32_t> tokens(c.tokens.data(), size_t(t.tokens));
    const size_t block = size_t(t.dk) * size_t(t.dv);
    auto states = std::make_shared<std::vector<float>>(size_t(t.tokens) * block);
    retnet::ForwardOptions recurrent;
    recurrent.form = retnet::Form::Recurrent;
    c.backend.reset();
    for (int n = 0; n < t.tokens && !c.cancelled(); ++n) {
        c.backend.forward(tokens.subspan(size_t(n), 1), recurrent, nullptr);
        const retnet::RecurrentState state = c.backend.snapshot();
        const std::vector<float>& S = state.layers[size_t(request.layer)].S;  // (H, Dk, Dv)
        std::copy_n(S.begin() + std::ptrdiff_t(size_t(request.head) * block), block, states->begin() + std::ptrdiff_t(size_t(n) * block));
    }
    retnet::Introspection probe;
    probe.score_layer = request.layer;
    probe.score_head = request.head;
    probe.qkv_layer = request.layer;
    c.backend.reset();
    c.backend.forward(tokens, retnet::ForwardOptions{}, &probe);  // (T, T)
    t.states = std::move(states);
    t.scores = std::make_shared<const std::vector<float>>(std::move(probe.scores.data));
    addOutputs(t, retnet::retention_inputs(c.model, probe, 0));
    return t;
}

RecurrenceView::RecurrenceView(QWidget* parent) : ViewBase(parent) {
    m_layer = new QSpinBox;
    m_head = new QSpinBox;
    m_slider = new QSlider(Qt::Horizontal);
    m_slider->setToolTip(tr("Position n (← → step)"));
    auto* back = new QPushButton(tr("◀ Back"));
    auto* forward = new QPushButton(tr("Forward ▶"));
    m_play = new QPushButton(tr("Play"));
    m_play->setCheckable(true);
    connect(back, &QPushButton::clicked, this, [this] { setPosition(m_position - 1); });
    connect(forward, &QPushButton::clicked, this, [this] { setPosition(m_position + 1); });
    connect(m_slider, &QSlider::valueChanged, this, &RecurrenceView::setPosition);
    m_playTimer.setInterval(400);
    connect(m_play, &QPushButton::toggled, this, [this](bool on) { on ? m_playTimer.start() : m_playTimer.stop(); });
    connect(&m_playTimer, &QTimer::timeout, this, [this] {
        if (m_position + 1 >= m_trace.tokens) return m_play->setChecked(false);
        setPosition(m_position + 1);
    });
    auto rerun = [this] {
        markStale();
        if (isVisible()) refresh();
    };
    connect(m_layer, &QSpinBox::valueChanged, this, rerun);
    connect(m_head, &QSpinBox::valueChanged, this, rerun);
    auto* controls = new QHBoxLayout;
    for (QWidget* w : std::initializer_list<QWidget*>{new QLabel(tr("Layer")), m_layer, new QLabel(tr("Head")), m_head, back})
        controls->addWidget(w);
    controls->addWidget(m_slider, 1);
    controls->addWidget(forward);
    controls->addWidget(m_play);
    m_note = new QLabel(tr("Pick a layer and head, then step through the text."));
    m_note->setWordWrap(true);
    m_note->setTextFormat(Qt::RichText);
    buildPlot();
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(controls);
    layout->addWidget(m_note);
    layout->addWidget(m_plot, 1);
    updateTheme();
}

// Three state matrices (Dk rows × Dv columns) on one colour scale, and the parallel row below.
void RecurrenceView::buildPlot() {
    m_plot = new QCustomPlot;
    m_plot->setMinimumSize(300, 260);
    m_plot->plotLayout()->clear();
    auto* top = new QCPLayoutGrid;  // the three matrices and their scale; the score row below
    m_plot->plotLayout()->addElement(0, 0, top);
    const QStringList titles = {tr("γ·S(n−1)"), tr("+ kₙᵀvₙ (the new term)"), tr("= Sₙ")};
    auto* scale = new QCPColorScale(m_plot);
    scale->setLabel(tr("state entry"));
    for (int i = 0; i < 3; ++i) {
        auto* rect = new QCPAxisRect(m_plot);
        top->addElement(0, i, rect);
        rect->axis(QCPAxis::atBottom)->setLabel(titles[i]);
        rect->axis(QCPAxis::atLeft)->setLabel(i == 0 ? tr("key dim (Dk)") : QString());
        rect->axis(QCPAxis::atLeft)->setRangeReversed(true);
        auto* map = new QCPColorMap(rect->axis(QCPAxis::atBottom), rect->axis(QCPAxis::atLeft));
        map->setInterpolate(false);
        map->setColorScale(scale);
        m_maps.push_back(map);
    }
    top->addElement(0, 3, scale);
    auto* row = new QCPAxisRect(m_plot);
    m_rowRect = row;
    m_plot->plotLayout()->addElement(1, 0, row);
    m_plot->plotLayout()->setRowStretchFactor(0, 3);
    m_plot->plotLayout()->setRowStretchFactor(1, 2);
    row->axis(QCPAxis::atBottom)->setLabel(tr("key position m (parallel form, row n of the score matrix)"));
    row->axis(QCPAxis::atLeft)->setLabel(tr("score"));
    m_plot->legend = new QCPLegend;
    row->insetLayout()->addElement(m_plot->legend, Qt::AlignTop | Qt::AlignLeft);
    m_plot->legend->setLayer(QStringLiteral("legend"));
    m_outRect = new QCPAxisRect(m_plot);
    m_plot->plotLayout()->addElement(2, 0, m_outRect);
    m_plot->plotLayout()->setRowStretchFactor(2, 2);
    m_outRect->axis(QCPAxis::atBottom)->setLabel(tr("value dim (Dv): oₙ = qₙ Sₙ (recurrent, bars) and Σₘ score·vₘ (parallel, dots)"));
    m_outRect->axis(QCPAxis::atLeft)->setLabel(tr("oₙ"));
}

void RecurrenceView::compute() {
    m_note->setText(tr("Tracing layer %1, head %2 token by token…").arg(m_layer->value()).arg(m_head->value()));
    analyse<RecurrenceTrace>(
        0, [r = RecurrenceRequest{m_layer->value(), m_head->value()}](AnalysisContext& c) { return computeRecurrence(c, r); },
        [this](const RecurrenceTrace& t) { setTrace(t); });
}

void RecurrenceView::setModelInfo(const ModelInfo& info) {
    QSignalBlocker a(m_layer), b(m_head);
    m_layer->setRange(0, std::max(0, info.layers - 1));
    m_head->setRange(0, std::max(0, info.heads - 1));
    if (info.sequenceKept) return;
    m_trace = RecurrenceTrace();
    m_position = 0;
    draw();
}

// A first trace opens at the last position, where the parallel row is longest; later ones keep
// the position the user stepped to.
void RecurrenceView::setTrace(const RecurrenceTrace& trace) {
    const bool first = !hasData();
    m_trace = trace;
    QSignalBlocker block(m_slider);
    m_slider->setRange(0, std::max(0, trace.tokens - 1));
    m_position = first ? std::max(0, trace.tokens - 1) : std::clamp(m_position, 0, std::max(0, trace.tokens - 1));
    m_slider->setValue(m_position);
    draw();
}

void RecurrenceView::setPosition(int n) {
    if (!hasData()) return;
    m_position = std::clamp(n, 0, m_trace.tokens - 1);
    QSignalBlocker block(m_slider);
    m_slider->setValue(m_position);
    draw();
}

double RecurrenceView::outputDifference(int n) const {
    if (!hasData() || !m_trace.recurrentOut || n < 0 || n >= m_trace.tokens) return 0.0;
    double peak = 0.0;
    for (int j = 0; j < m_trace.dv; ++j) {
        const size_t i = size_t(n) * m_trace.dv + j;
        peak = std::max(peak, std::abs(double((*m_trace.recurrentOut)[i]) - (*m_trace.parallelOut)[i]));
    }
    return peak;
}

double RecurrenceView::updateMagnitude(int n) const {
    if (!hasData() || n < 0 || n >= m_trace.tokens) return 0.0;
    const size_t block = size_t(m_trace.dk) * size_t(m_trace.dv);
    double peak = 0.0;
    for (size_t i = 0; i < block; ++i) {
        const double before = n > 0 ? m_trace.gamma * m_trace.state(n - 1)[i] : 0.0;
        peak = std::max(peak, std::abs(double(m_trace.state(n)[i]) - before));
    }
    return peak;
}

void RecurrenceView::draw() {
    m_plot->clearGraphs();
    for (QCPColorMap* m : m_maps) m->data()->clear();
    if (!hasData()) return m_plot->replot(QCustomPlot::rpQueuedReplot);
    const int n = m_position, dk = m_trace.dk, dv = m_trace.dv;
    double peak = 1e-12;
    for (int i = 0; i < 3; ++i) {
        m_maps[size_t(i)]->data()->setSize(dv, dk);
        m_maps[size_t(i)]->data()->setRange(QCPRange(0, dv - 1), QCPRange(0, dk - 1));
    }
    for (int r = 0; r < dk; ++r)
        for (int c = 0; c < dv; ++c) {
            const size_t i = size_t(r) * size_t(dv) + size_t(c);
            const double decayed = n > 0 ? m_trace.gamma * m_trace.state(n - 1)[i] : 0.0;
            const double now = m_trace.state(n)[i];
            m_maps[0]->data()->setCell(c, r, decayed);
            m_maps[1]->data()->setCell(c, r, now - decayed);
            m_maps[2]->data()->setCell(c, r, now);
            peak = std::max({peak, std::abs(decayed), std::abs(now)});
        }
    for (QCPColorMap* m : m_maps) {
        m->setDataRange(QCPRange(-peak, peak));
        m->keyAxis()->setRange(-0.5, dv - 0.5);
        m->valueAxis()->setRange(-0.5, dk - 0.5);
    }
    QCPAxisRect* row = m_rowRect;
    QCPGraph* bars = m_plot->addGraph(row->axis(QCPAxis::atBottom), row->axis(QCPAxis::atLeft));
    QCPGraph* decay = m_plot->addGraph(row->axis(QCPAxis::atBottom), row->axis(QCPAxis::atLeft));
    QVector<double> ms, scores, envelope;
    double top = 1e-12;
    for (int m = 0; m <= n; ++m) top = std::max(top, std::abs(double((*m_trace.scores)[size_t(n) * m_trace.tokens + m])));
    for (int m = 0; m <= n; ++m) {
        ms << m;
        scores << (*m_trace.scores)[size_t(n) * m_trace.tokens + m];
        envelope << top * std::pow(m_trace.gamma, n - m);
    }
    bars->setData(ms, scores, true);
    bars->setLineStyle(QCPGraph::lsImpulse);
    bars->setPen(QPen(seriesColor(0), 3));
    bars->setName(tr("qₙ·kₘ γ^(n−m) (after the form's normalization)"));
    decay->setData(ms, envelope, true);
    decay->setPen(QPen(seriesColor(1), 1.5, Qt::DashLine));
    decay->setName(tr("γ^(n−m), scaled"));
    if (m_trace.qk) {  // the raw dot products, before the decay shrinks the older ones
        QCPGraph* raw = m_plot->addGraph(row->axis(QCPAxis::atBottom), row->axis(QCPAxis::atLeft));
        QVector<double> dots;
        for (int m = 0; m <= n; ++m) dots << (*m_trace.qk)[size_t(n) * m_trace.tokens + m];
        for (double d : dots) top = std::max(top, std::abs(d));
        raw->setData(ms, dots, true);
        raw->setLineStyle(QCPGraph::lsNone);
        raw->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, seriesColor(2), 5));
        raw->setName(tr("qₙ·kₘ (before the decay)"));
    }
    row->axis(QCPAxis::atBottom)->setRange(-0.5, std::max(8, m_trace.tokens) - 0.5);
    row->axis(QCPAxis::atLeft)->setRange(-top * 1.1, top * 1.1);
    drawOutputs();
    m_note->setText(tr("Position <b>n = %1</b> ‘%2’, layer %3, head %4, γ = %5. Recurrent: S<sub>n</sub> = γ S<sub>n−1</sub> + "
                       "k<sub>n</sub><sup>T</sup>v<sub>n</sub> (largest entry of the new term %6), o<sub>n</sub> = q<sub>n</sub> "
                       "S<sub>n</sub>. Parallel: the same o<sub>n</sub> = Σ<sub>m≤n</sub> (q<sub>n</sub>·k<sub>m</sub>) "
                       "γ<sup>n−m</sup> v<sub>m</sub> — the row below holds those weights; the bottom plot "
                       "compares both o<sub>n</sub> (largest difference %7).")
                        .arg(n)
                        .arg(visibleToken(m_trace.labels.value(n)).toHtmlEscaped())
                        .arg(m_trace.layer)
                        .arg(m_trace.head)
                        .arg(m_trace.gamma, 0, 'g', 5)
                        .arg(updateMagnitude(n), 0, 'g', 3)
                        .arg(outputDifference(n), 0, 'g', 3));
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void RecurrenceView::drawOutputs() {
    if (!m_trace.recurrentOut) return;
    QCPAxis* x = m_outRect->axis(QCPAxis::atBottom);
    QCPAxis* y = m_outRect->axis(QCPAxis::atLeft);
    QCPGraph* rec = m_plot->addGraph(x, y);
    QCPGraph* par = m_plot->addGraph(x, y);
    QVector<double> js, r, p;
    double top = 1e-12;
    for (int j = 0; j < m_trace.dv; ++j) {
        const size_t i = size_t(m_position) * m_trace.dv + j;
        js << j;
        r << (*m_trace.recurrentOut)[i];
        p << (*m_trace.parallelOut)[i];
        top = std::max({top, std::abs(r.back()), std::abs(p.back())});
    }
    rec->setData(js, r, true);
    rec->setLineStyle(QCPGraph::lsImpulse);
    rec->setPen(QPen(seriesColor(0), 3));
    rec->removeFromLegend();
    par->setData(js, p, true);
    par->setLineStyle(QCPGraph::lsNone);
    par->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDisc, seriesColor(1), 6));
    par->removeFromLegend();
    x->setRange(-0.5, m_trace.dv - 0.5);
    y->setRange(-top * 1.1, top * 1.1);
}

void RecurrenceView::updateTheme() {
    applyPlotTheme(m_plot);
    for (QCPColorMap* m : m_maps) m->colorScale()->setGradient(divergingGradient());
    draw();
}

QStringList RecurrenceView::exportInfo() const {
    if (!hasData()) return {};
    return {QStringLiteral("layer: %1").arg(m_trace.layer), QStringLiteral("head: %1").arg(m_trace.head),
            QStringLiteral("position: %1").arg(m_position), QStringLiteral("gamma: %1").arg(m_trace.gamma, 0, 'g', 8)};
}

// The state S_n of the shown position, one row per key dimension.
QString RecurrenceView::csv() const {
    if (!hasData()) return {};
    QString out = QStringLiteral("dk");
    for (int c = 0; c < m_trace.dv; ++c) out += QStringLiteral(",dv%1").arg(c);
    out += QLatin1Char('\n');
    for (int r = 0; r < m_trace.dk; ++r) {
        out += QString::number(r);
        for (int c = 0; c < m_trace.dv; ++c)
            out += QLatin1Char(',') + QString::number(double(m_trace.state(m_position)[size_t(r) * m_trace.dv + c]), 'g', 8);
        out += QLatin1Char('\n');
    }
    return out;
}

}  // namespace retnet::ui
