// SPDX-License-Identifier: GPL-3.0-or-later
#include "views/retention_view.h"

#include <QComboBox>
#include <QHBoxLayout>
#include <QKeyEvent>
#include <QLabel>
#include <QMouseEvent>
#include <QPainter>
#include <QSpinBox>
#include <QSplitter>
#include <QToolTip>
#include <QVBoxLayout>

#include <cmath>

#include <qcustomplot.h>

#include "plot_utils.h"
#include "retnet/analysis.h"
#include "retnet/error.h"

namespace retnet::ui {

namespace {
constexpr int kCell = 40;  // thumbnail side in pixels
constexpr int kGap = 4;
constexpr int kLabel = 22;

}  // namespace

// ---- HeadGrid --------------------------------------------------------------------------------

HeadGrid::HeadGrid(QWidget* parent) : QWidget(parent) {
    setFocusPolicy(Qt::StrongFocus);
    setToolTip(tr("Every layer (rows) and head (columns). Click one, or use the arrow keys, to "
                  "show it large."));
}

QSize HeadGrid::sizeHint() const {
    const int L = std::max(1, m_overview.layers), H = std::max(1, m_overview.heads);
    return {kLabel + H * (kCell + kGap), kLabel + L * (kCell + kGap)};
}

QRect HeadGrid::cellRect(int layer, int head) const {
    return {kLabel + head * (kCell + kGap), kLabel + layer * (kCell + kGap), kCell, kCell};
}

void HeadGrid::setOverview(const RetentionOverview& overview) {
    m_overview = overview;
    m_images.clear();
    const int n = overview.size;
    QCPColorGradient gradient = divergingGradient();
    for (int l = 0; l < overview.layers; ++l)
        for (int h = 0; h < overview.heads; ++h) {
            const float* s = overview.scores->data() + (size_t(l) * overview.heads + h) * n * n;
            float peak = 0.0f;
            for (int i = 0; i < n * n; ++i) peak = std::max(peak, std::abs(s[i]));
            QImage image(n, n, QImage::Format_RGB32);
            QVector<QRgb> line(n);
            for (int r = 0; r < n; ++r) {
                QVector<double> row(n);
                for (int c = 0; c < n; ++c) row[c] = peak > 0 ? s[r * n + c] / peak : 0.0;
                gradient.colorize(row.constData(), QCPRange(-1, 1), line.data(), n);
                for (int c = 0; c < n; ++c) image.setPixel(c, r, line[c]);
            }
            m_images.push_back(image);
        }
    // The scroll area resizes its widget: a minimum size makes it scroll instead of clipping
    // models with more heads or layers than fit.
    setMinimumSize(sizeHint());
    updateGeometry();
    update();
}

void HeadGrid::setSelected(int layer, int head) {
    m_layer = layer;
    m_head = head;
    update();
}

void HeadGrid::paintEvent(QPaintEvent*) {
    QPainter p(this);
    p.fillRect(rect(), palette().color(QPalette::Base));
    p.setPen(palette().color(QPalette::WindowText));
    if (!hasData()) {
        p.drawText(rect(), Qt::AlignCenter | Qt::TextWordWrap, tr("Overview appears here"));
        return;
    }
    for (int h = 0; h < m_overview.heads; ++h)
        p.drawText(QRect(cellRect(0, h).left(), 0, kCell, kLabel), Qt::AlignCenter, QStringLiteral("h%1").arg(h));
    for (int l = 0; l < m_overview.layers; ++l) {
        p.drawText(QRect(0, cellRect(l, 0).top(), kLabel, kCell), Qt::AlignCenter, QStringLiteral("L%1").arg(l));
        for (int h = 0; h < m_overview.heads; ++h) {
            const QRect r = cellRect(l, h);
            p.drawImage(r, m_images[size_t(l * m_overview.heads + h)]);
            if (l == m_layer && h == m_head) {
                p.setPen(QPen(palette().color(QPalette::Highlight), 3));
                p.drawRect(r.adjusted(-2, -2, 1, 1));
                p.setPen(palette().color(QPalette::WindowText));
            }
        }
    }
}

void HeadGrid::mousePressEvent(QMouseEvent* event) {
    for (int l = 0; l < m_overview.layers; ++l)
        for (int h = 0; h < m_overview.heads; ++h)
            if (cellRect(l, h).contains(event->position().toPoint())) {
                setSelected(l, h);
                emit headClicked(l, h);
                return;
            }
}

void HeadGrid::keyPressEvent(QKeyEvent* event) {
    int l = m_layer, h = m_head;
    switch (event->key()) {
        case Qt::Key_Left: --h; break;
        case Qt::Key_Right: ++h; break;
        case Qt::Key_Up: --l; break;
        case Qt::Key_Down: ++l; break;
        default: QWidget::keyPressEvent(event); return;
    }
    if (l < 0 || h < 0 || l >= m_overview.layers || h >= m_overview.heads) return;
    setSelected(l, h);
    emit headClicked(l, h);
}

// ---- RetentionView ---------------------------------------------------------------------------

RetentionView::RetentionView(QWidget* parent) : ViewBase(parent) {
    m_grid = new HeadGrid;
    buildPlot();
    QLayout* controls = buildControls();
    auto* gridBox = new QWidget;
    auto* gridLayout = new QVBoxLayout(gridBox);
    gridLayout->setContentsMargins(0, 0, 0, 0);
    gridLayout->addWidget(new QLabel(tr("All layers × heads")));
    auto* scroll = new QScrollArea;
    scroll->setWidget(m_grid);
    scroll->setWidgetResizable(true);
    scroll->setMinimumWidth(2 * kLabel + 4 * (kCell + kGap));
    gridLayout->addWidget(scroll, 1);
    auto* splitter = new QSplitter(Qt::Horizontal);
    splitter->addWidget(gridBox);
    splitter->addWidget(m_plot);
    splitter->setStretchFactor(0, 1);
    splitter->setStretchFactor(1, 3);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(4, 4, 4, 4);
    layout->addLayout(controls);
    layout->addWidget(splitter, 1);
    updateTheme();
}

void RetentionView::buildPlot() {
    m_plot = new QCustomPlot;
    m_plot->setMinimumSize(220, 220);
    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    m_map->setGradient(divergingGradient());
    m_map->setInterpolate(false);
    auto* scale = new QCPColorScale(m_plot);
    scale->setLabel(tr("retention score (signed)"));
    m_plot->plotLayout()->addElement(0, 1, scale);
    m_map->setColorScale(scale);
    scale->setGradient(divergingGradient());  // the scale owns the gradient once linked
    auto* margins = new QCPMarginGroup(m_plot);
    m_plot->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    scale->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    m_plot->xAxis->setLabel(tr("key position m"));
    m_plot->yAxis->setLabel(tr("query position n"));
    m_plot->yAxis->setRangeReversed(true);
    m_plot->setMouseTracking(true);
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    connect(m_plot, &QCustomPlot::mouseMove, this, &RetentionView::showHover);
    connect(m_plot, &QCustomPlot::mouseDoubleClick, this, [this] {
        m_plot->xAxis->setRange(-0.5, m_matrix.tokens - 0.5);
        m_plot->yAxis->setRange(-0.5, m_matrix.tokens - 0.5);
        m_plot->replot();
    });

}

QLayout* RetentionView::buildControls() {
    m_layer = new QSpinBox;
    m_head = new QSpinBox;
    m_layer->setToolTip(tr("Layer (PgUp / PgDn)"));
    m_head->setToolTip(tr("Head ([ / ])"));
    connect(m_layer, &QSpinBox::valueChanged, this, [this](int l) {
        m_grid->setSelected(l, m_head->value());
        if (!m_matrix.scores || m_matrix.layer != l) emit layerRequested(l);
    });
    connect(m_head, &QSpinBox::valueChanged, this, [this](int h) {
        m_grid->setSelected(m_layer->value(), h);
        showHead();
    });
    connect(m_grid, &HeadGrid::headClicked, this, &RetentionView::setLayerHead);
    auto addShortcut = [this](const QKeySequence& key, auto fn) {
        auto* a = new QAction(this);
        a->setShortcut(key);
        a->setShortcutContext(Qt::WidgetWithChildrenShortcut);
        connect(a, &QAction::triggered, this, fn);
        addAction(a);
    };
    addShortcut(QKeySequence(Qt::Key_PageUp), [this] { m_layer->setValue(m_layer->value() - 1); });
    addShortcut(QKeySequence(Qt::Key_PageDown), [this] { m_layer->setValue(m_layer->value() + 1); });
    addShortcut(QKeySequence(Qt::Key_BracketLeft), [this] { m_head->setValue(m_head->value() - 1); });
    addShortcut(QKeySequence(Qt::Key_BracketRight), [this] { m_head->setValue(m_head->value() + 1); });

    // torchscale normalizes each form's rows differently (docs/spec.md §2.4–2.6): the scores of one head
    // differ by form, which is what a researcher checking the equivalence wants to see.
    m_form = new QComboBox;
    for (retnet::Form f : {retnet::Form::Parallel, retnet::Form::Recurrent, retnet::Form::Chunkwise})
        m_form->addItem(QString::fromLatin1(retnet::form_name(f)), static_cast<int>(f));
    m_form->setToolTip(tr("The form whose normalization the scores show (torchscale's forms divide each row "
                          "by a different factor; fla's are identical)"));
    m_chunk = new QSpinBox;
    m_chunk->setRange(1, 1 << 16);
    m_chunk->setValue(64);
    m_chunk->setEnabled(false);
    m_chunk->setToolTip(tr("Chunk size of the chunkwise form"));
    connect(m_form, &QComboBox::currentIndexChanged, this, [this] {
        m_chunk->setEnabled(form() == retnet::Form::Chunkwise);
        emit layerRequested(m_layer->value());
    });
    connect(m_chunk, &QSpinBox::valueChanged, this, [this] {
        if (form() == retnet::Form::Chunkwise) emit layerRequested(m_layer->value());
    });

    m_note = new QLabel(tr("No scores yet: they are computed from the prompt or the generated text when this view is shown (F5)."));
    m_note->setWordWrap(true);
    auto* controls = new QHBoxLayout;
    controls->addWidget(new QLabel(tr("Layer")));
    controls->addWidget(m_layer);
    controls->addWidget(new QLabel(tr("Head")));
    controls->addWidget(m_head);
    controls->addWidget(new QLabel(tr("Form")));
    controls->addWidget(m_form);
    controls->addWidget(new QLabel(tr("Chunk")));
    controls->addWidget(m_chunk);
    controls->addWidget(m_note, 1);
    return controls;
}

namespace {

// The backend's scores of one layer, all heads (H, T, T), in the given form.
retnet::Tensor layerScores(AnalysisContext& c, int layer, const retnet::ForwardOptions& options) {
    retnet::Introspection probe;
    probe.score_layer = layer;
    probe.score_head = 0;
    probe.want_all_head_scores = true;
    c.backend.reset();
    c.backend.forward(c.tokens, options, &probe);
    const int64_t T = int64_t(c.tokens.size());
    if (probe.scores.numel() != int64_t(c.model.config.n_heads) * T * T)
        throw retnet::Error("the backend returned retention scores of shape " + probe.scores.shape_string() +
                            ", expected (H, T, T)");
    return std::move(probe.scores);
}

}  // namespace

RetentionMatrix computeRetention(AnalysisContext& c, const RetentionRequest& request) {
    const int L = c.model.config.n_layers;
    if (request.layer < 0 || request.layer >= L)
        throw retnet::Error("layer " + std::to_string(request.layer) + " does not exist");
    retnet::ForwardOptions options;
    options.form = request.form;
    options.chunk_size = request.chunkSize;
    retnet::Tensor scores = layerScores(c, request.layer, options);
    retnet::DownsampledScores shown = retnet::downsample_scores(scores, std::max(8, request.maxCells));
    RetentionMatrix m;
    m.layer = request.layer;
    m.heads = shown.heads;
    m.tokens = shown.tokens;
    m.size = shown.size;
    m.stride = shown.stride;
    m.form = QString::fromLatin1(retnet::form_name(request.form));
    m.labels = c.labels;
    m.scores = std::make_shared<const std::vector<float>>(std::move(shown.data));
    m.reach = retnet::retention_reach(scores, c.model.weights.log_decay);
    return m;
}

RetentionOverview computeRetentionOverview(AnalysisContext& c) {
    const int L = c.model.config.n_layers, H = c.model.config.n_heads;
    const int T = int(c.tokens.size());
    RetentionOverview o;
    o.layers = L;
    o.heads = H;
    auto data = std::make_shared<std::vector<float>>();
    for (int l = 0; l < L && !c.cancelled(); ++l) {
        const retnet::DownsampledScores d = retnet::downsample_scores(layerScores(c, l, {}), std::min(T, 32));
        o.size = d.size;
        data->insert(data->end(), d.data.begin(), d.data.end());  // (H, size, size) per layer
    }
    o.scores = std::move(data);
    return o;
}

void RetentionView::attached() {
    connect(this, &RetentionView::layerRequested, this, &RetentionView::requestLayer);
}

void RetentionView::requestLayer(int layer) {
    RetentionRequest r;
    r.layer = layer;
    r.form = form();
    r.chunkSize = chunkSize();
    analyse<RetentionMatrix>(
        0, [r](AnalysisContext& c) { return computeRetention(c, r); },
        [this](const RetentionMatrix& m) { setMatrix(m); });
}

void RetentionView::compute() {
    requestLayer(layer());
    analyse<RetentionOverview>(
        1, [](AnalysisContext& c) { return computeRetentionOverview(c); },
        [this](const RetentionOverview& o) { setOverview(o); });
}

void RetentionView::setModelInfo(const ModelInfo& info) {
    if (info.sequenceKept) return;  // shown until recomputed from the same text
    m_matrix = RetentionMatrix();
    QSignalBlocker a(m_layer), b(m_head);
    m_layer->setRange(0, std::max(0, info.layers - 1));
    m_head->setRange(0, std::max(0, info.heads - 1));
    m_layer->setValue(0);
    m_head->setValue(0);
    {
        QSignalBlocker c(m_chunk);
        m_chunk->setValue(std::max(1, info.chunkSize));
    }
    m_grid->setOverview(RetentionOverview());
    m_map->data()->clear();
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int RetentionView::layer() const { return m_layer->value(); }
int RetentionView::head() const { return m_head->value(); }
retnet::Form RetentionView::form() const { return static_cast<retnet::Form>(m_form->currentData().toInt()); }
int RetentionView::chunkSize() const { return m_chunk->value(); }

void RetentionView::setLayerHead(int layer, int head) {
    QSignalBlocker block(m_head);
    m_head->setValue(head);
    if (m_layer->value() != layer)
        m_layer->setValue(layer);  // requests the layer
    else
        showHead();
    m_grid->setSelected(layer, head);
}

void RetentionView::setMatrix(const RetentionMatrix& matrix) {
    m_matrix = matrix;
    if (matrix.layer != m_layer->value()) {
        QSignalBlocker block(m_layer);
        m_layer->setValue(matrix.layer);
    }
    showHead();
}

void RetentionView::setOverview(const RetentionOverview& overview) {
    m_grid->setOverview(overview);
    m_grid->setSelected(m_layer->value(), m_head->value());
}

void RetentionView::updateTheme() {
    if (m_row) {
        m_row->updateTheme();
        m_column->updateTheme();
    }
    applyPlotTheme(m_plot);
    if (m_map->colorScale()) m_map->colorScale()->setGradient(divergingGradient());
    if (m_grid->hasData()) m_grid->setOverview(m_grid->overview());  // recolour the thumbnails
    m_plot->replot(QCustomPlot::rpQueuedReplot);
    m_grid->update();
}

// Cells are drawn at the positions they cover, so the axes count tokens whatever the stride.
void RetentionView::showHead() {
    if (!m_matrix.scores) return;
    const int n = m_matrix.size, T = m_matrix.tokens, stride = m_matrix.stride;
    const int h = std::clamp(m_head->value(), 0, m_matrix.heads - 1);
    const float* s = m_matrix.scores->data() + size_t(h) * n * n;
    const double centre0 = (stride - 1) / 2.0;  // the centre of cell 0, in positions
    m_map->data()->setSize(n, n);
    m_map->data()->setRange(QCPRange(centre0, centre0 + (n - 1) * stride), QCPRange(centre0, centre0 + (n - 1) * stride));
    float peak = 0.0f;
    for (int q = 0; q < n; ++q)
        for (int k = 0; k < n; ++k) {
            const float v = s[q * n + k];
            // Causal: scores above the diagonal do not exist; leave them at 0 (white).
            m_map->data()->setCell(k, q, double(v));
            peak = std::max(peak, std::abs(v));
        }
    m_map->setDataRange(QCPRange(-std::max(peak, 1e-12f), std::max(peak, 1e-12f)));
    setAxisTicks();
    m_plot->xAxis->setRange(-0.5, T - 0.5);
    m_plot->yAxis->setRange(-0.5, T - 0.5);
    m_note->setText(noteFor(h));
    showLinkedPosition(linkedPosition());  // the stride may have changed
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

// Token labels when every position has its own cell and they fit; else position numbers.
void RetentionView::setAxisTicks() {
    const int T = m_matrix.tokens;
    if (m_matrix.stride == 1 && T <= 48 && m_matrix.labels.size() == T) {
        QSharedPointer<QCPAxisTickerText> xt(new QCPAxisTickerText), yt(new QCPAxisTickerText);
        for (int i = 0; i < T; ++i) {
            xt->addTick(i, axisLabel(m_matrix.labels[i]));
            yt->addTick(i, axisLabel(m_matrix.labels[i]));
        }
        m_plot->xAxis->setTicker(xt);
        m_plot->yAxis->setTicker(yt);
        m_plot->xAxis->setTickLabelRotation(60);
    } else {
        m_plot->xAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
        m_plot->xAxis->setTickLabelRotation(0);
    }
}

QString RetentionView::noteFor(int h) const {
    QString note = tr("Layer %1, head %2, %3 form, %4 tokens. Red = positive, blue = negative: no "
                      "softmax, so scores are signed. Drag to pan, wheel to zoom, double-click to reset.")
                       .arg(m_matrix.layer).arg(h).arg(m_matrix.form).arg(m_matrix.tokens);
    if (size_t(h) < m_matrix.reach.size() && m_matrix.reach[size_t(h)].queries > 0) {
        const retnet::HeadReach& r = m_matrix.reach[size_t(h)];
        note += tr(" Reach: this head reads %1 tokens back on average; its decay alone would give %2.")
                    .arg(r.mean_distance, 0, 'f', 1)
                    .arg(r.decay_only_distance, 0, 'f', 1);
    }
    if (m_matrix.stride > 1)
        note += tr(" Downsampled: each cell covers %1×%1 positions and shows the score of largest "
                   "magnitude in it.").arg(m_matrix.stride);
    return note;
}

// "query 5 ‘a’" for one position, "queries 96–99 ‘a’…" for a downsampled cell.
QString RetentionView::describeCell(int queryPosition, int keyPosition) const {
    if (!m_matrix.scores) return {};
    const int T = m_matrix.tokens, stride = m_matrix.stride, n = m_matrix.size;
    if (queryPosition < 0 || keyPosition < 0 || queryPosition >= T || keyPosition >= T) return {};
    const int q = queryPosition / stride, k = keyPosition / stride;
    auto span = [&](int cell, const QString& one, const QString& many) {
        const int first = cell * stride, last = std::min(T, first + stride) - 1;
        const QString label = axisLabel(m_matrix.labels.value(first)).toHtmlEscaped();
        return first == last ? QStringLiteral("%1 %2 ‘%3’").arg(one).arg(first).arg(label)
                             : QStringLiteral("%1 %2–%3 ‘%4’…").arg(many).arg(first).arg(last).arg(label);
    };
    const int h = std::clamp(m_head->value(), 0, m_matrix.heads - 1);
    const float v = (*m_matrix.scores)[size_t(h) * n * n + size_t(q) * n + size_t(k)];
    QString text = tr("%1 ← %2<br>score %3")
                       .arg(span(q, tr("query"), tr("queries")), span(k, tr("key"), tr("keys")))
                       .arg(double(v), 0, 'g', 5);
    if (k > q) text += tr("<br>(future key: masked by D)");
    return text;
}

void RetentionView::showHover(QMouseEvent* event) {
    const double x = m_plot->xAxis->pixelToCoord(event->position().x());
    const double y = m_plot->yAxis->pixelToCoord(event->position().y());
    const QString text = describeCell(int(std::lround(y)), int(std::lround(x)));
    if (!text.isEmpty()) pointAt(std::lround(y));  // the query: the row is what it retains
    if (text.isEmpty())
        QToolTip::hideText();
    else
        QToolTip::showText(event->globalPosition().toPoint(), text, m_plot);
}

void RetentionView::showLinkedPosition(int64_t position) {
    if (!m_row) {
        m_row = std::make_unique<PositionMarker>(m_plot, m_plot->xAxis, m_plot->yAxis, Qt::Horizontal);
        m_column = std::make_unique<PositionMarker>(m_plot, m_plot->xAxis, m_plot->yAxis, Qt::Vertical);
    }
    if (position >= 0 && position < m_matrix.tokens) {
        // The cell that holds the position: its centre, as the downsampled map draws it.
        const int stride = std::max(1, m_matrix.stride);
        const double centre = double(position / stride * stride) + 0.5 * double(stride - 1);
        m_row->show(centre);
        m_column->show(centre);
        m_marked = position;
    } else {
        m_row->hide();
        m_column->hide();
        m_marked = -1;
    }
    if (isVisible()) m_plot->replot(QCustomPlot::rpQueuedReplot);
}


QStringList RetentionView::exportInfo() const {
    if (!m_matrix.scores) return {};
    return {QStringLiteral("layer: %1").arg(m_matrix.layer), QStringLiteral("head: %1").arg(head()),
            QStringLiteral("form: %1").arg(m_matrix.form), QStringLiteral("text_tokens: %1").arg(m_matrix.tokens),
            QStringLiteral("cell_stride: %1").arg(m_matrix.stride)};
}

QString RetentionView::csv() const {
    if (!m_matrix.scores) return {};
    const int n = m_matrix.size;
    const int h = std::clamp(m_head->value(), 0, m_matrix.heads - 1);
    QString out = QStringLiteral("query\\key");
    for (int k = 0; k < n; ++k) out += QStringLiteral(",%1").arg(k * m_matrix.stride);
    out += QLatin1Char('\n');
    for (int q = 0; q < n; ++q) {
        out += QString::number(q * m_matrix.stride);
        for (int k = 0; k < n; ++k)
            out += QLatin1Char(',') +
                   QString::number(double((*m_matrix.scores)[size_t(h) * n * n + size_t(q) * n + size_t(k)]), 'g', 8);
        out += QLatin1Char('\n');
    }
    return out;
}

}  // namespace retnet::ui
