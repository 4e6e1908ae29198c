// SPDX-License-Identifier: GPL-3.0-or-later
#include "main_window.h"

#include <QAction>
#include <QActionGroup>
#include <QApplication>
#include <QComboBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDir>
#include <QDockWidget>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QJsonArray>
#include <QJsonDocument>
#include <QSaveFile>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QSettings>
#include <QSplitter>
#include <QStackedWidget>
#include <QStatusBar>
#include <QStyleFactory>
#include <QTabWidget>
#include <QTableWidget>
#include <QTextBrowser>
#include <QVBoxLayout>

#include <cstdio>
#include <limits>
#include <optional>

#include "retnet/error.h"
#include "retnet/intervention.h"
#include "retnet/model.h"
#include "retnet/model_names.h"
#include "views/cost_view.h"
#include "views/decay_view.h"
#include "views/equivalence_view.h"
#include "views/generate_view.h"
#include "views/retention_view.h"
#include "views/lens_view.h"
#include "views/recurrence_view.h"
#include "views/state_view.h"

namespace retnet::ui {

namespace {
const QString kRecentKey = QStringLiteral("recentModels");
constexpr int kRecentMax = 8;
bool holdsModel(const QString& directory) { return QFileInfo::exists(directory + QStringLiteral("/config.json")); }
}  // namespace

QString defaultModelDirectory() {
    const QStringList candidates = {
        qEnvironmentVariable("RETNET_STUDIO_MODEL"),
        QCoreApplication::applicationDirPath() + QStringLiteral("/../share/retnet-studio/models/default"),
        QStringLiteral(RETNET_DEFAULT_MODEL_DIR),
    };
    for (const QString& dir : candidates)
        if (!dir.isEmpty() && QFileInfo::exists(dir + QStringLiteral("/config.json")))
            return QDir(dir).absolutePath();
    return {};
}

namespace {

// One of each view, in ViewId order.
std::vector<ViewBase*> makeViews() {
    std::vector<ViewBase*> views(size_t(kViewCount), nullptr);
    for (ViewBase* v : std::initializer_list<ViewBase*>{new GenerateView, new EquivalenceView, new DecayView,
                                                        new RetentionView, new StateView, new LensView,
                                                        new RecurrenceView, new CostView})
        views[size_t(v->id())] = v;
    return views;
}

}  // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
    setWindowTitle(tr("RetNet Studio"));
    resize(1400, 900);
    m_controller = new EngineController(this);

    m_views = makeViews();
    m_generate = static_cast<GenerateView*>(view(ViewId::Generate));
    m_cursor = new LinkedCursor(this);
    const ViewContext context{m_controller, [this] { return analysisText(); },
                              [this] { return m_generate->sequenceLength(); }, m_cursor};
    m_tabs = new QTabWidget;
    m_tabs->setDocumentMode(true);
    for (ViewBase* v : m_views) {
        v->attach(context);
        connect(v, &ViewBase::dataReady, this, &MainWindow::viewDataReady);
        m_tabs->addTab(wrapWithLearnPanel(v), v->title());
    }

    auto* empty = new QWidget;
    auto* emptyLayout = new QVBoxLayout(empty);
    auto* emptyText = new QLabel(
        tr("<h2>No model is open</h2><p>Open a model directory (config.json + "
           "model.safetensors, torchscale or fla layout), or try the views with a small random "
           "model.</p>"));
    emptyText->setAlignment(Qt::AlignCenter);
    emptyText->setWordWrap(true);
    auto* openButton = new QPushButton(tr("Open model…"));
    auto* randomButton = new QPushButton(tr("Use a small random model"));
    connect(openButton, &QPushButton::clicked, this, [this] {
        const QString dir = QFileDialog::getExistingDirectory(this, tr("Open model directory"));
        if (!dir.isEmpty()) openModelDirectory(dir);
    });
    connect(randomButton, &QPushButton::clicked, this, [this] { useRandomModel(); });
    emptyLayout->addStretch();
    emptyLayout->addWidget(emptyText);
    auto* emptyButtons = new QHBoxLayout;
    emptyButtons->addStretch();
    emptyButtons->addWidget(openButton);
    emptyButtons->addWidget(randomButton);
    emptyButtons->addStretch();
    emptyLayout->addLayout(emptyButtons);
    emptyLayout->addStretch();

    m_stack = new QStackedWidget;
    m_stack->addWidget(empty);
    m_stack->addWidget(m_tabs);
    setCentralWidget(m_stack);

    m_statusModel = new QLabel(tr("No model"));
    m_progress = new QProgressBar;
    m_progress->setRange(0, 1000);
    m_progress->setMaximumWidth(220);
    m_progress->setVisible(false);
    m_cancelLoad = new QPushButton(tr("Cancel"));
    m_cancelLoad->setVisible(false);
    connect(m_cancelLoad, &QPushButton::clicked, m_controller, &EngineController::cancelLoad);
    statusBar()->addPermanentWidget(m_progress);
    statusBar()->addPermanentWidget(m_cancelLoad);
    statusBar()->addPermanentWidget(m_statusModel);

    buildModelDock();
    buildMenus();
    connectController();
    setDarkTheme(false);
}

MainWindow::~MainWindow() = default;

QWidget* MainWindow::wrapWithLearnPanel(ViewBase* view) {
    auto* learn = new QTextBrowser;
    learn->setOpenExternalLinks(true);
    learn->setObjectName(QStringLiteral("learn-") + view->name());
    QFile file(QStringLiteral(":/retnet/learn/%1.html").arg(view->name()));
    if (file.open(QIODevice::ReadOnly))
        learn->setHtml(QString::fromUtf8(file.readAll()));
    else
        learn->setPlainText(tr("No explanation for this view."));
    learn->setMinimumWidth(150);
    m_learnPanels.push_back(learn);
    auto* splitter = new QSplitter(Qt::Horizontal);
    splitter->addWidget(view);
    splitter->addWidget(learn);
    splitter->setStretchFactor(0, 4);
    splitter->setStretchFactor(1, 1);
    splitter->setSizes({1100, 260});
    return splitter;
}

void MainWindow::buildModelDock() {
    auto* dock = new QDockWidget(tr("Model"), this);
    dock->setObjectName(QStringLiteral("modelDock"));
    auto* body = new QWidget;
    auto* layout = new QVBoxLayout(body);
    m_device = new QComboBox;
    m_device->setObjectName(QStringLiteral("device"));
    // Long device labels are elided rather than widening the dock.
    m_device->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_device->setMinimumContentsLength(12);
    m_device->setToolTip(tr("Where and in which precision the engine runs: cpu and cuda compute "
                            "in float32; reference is the naive float64 CPU implementation "
                            "(slow, for checking)."));
    connect(m_device, &QComboBox::activated, this, [this] {
        m_controller->setDevice(m_device->currentData().toString());
    });
    auto* form = new QFormLayout;
    form->addRow(tr("Device / precision"), m_device);
    layout->addLayout(form);
    // What-if edits (retnet/intervention.h): the model is reinstalled with them on Apply.
    auto* edits = new QGroupBox(tr("Interventions"));
    auto* editsForm = new QFormLayout(edits);
    m_mute = new QLineEdit;
    m_mute->setObjectName(QStringLiteral("muteHeads"));
    m_mute->setPlaceholderText(tr("layer.head, … e.g. 2.3, 0.1"));
    m_mute->setToolTip(tr("Mute heads: their output no longer reaches the residual stream (their "
                          "columns of o_proj are zeroed); their scores and state still evolve."));
    m_gamma = new QLineEdit;
    m_gamma->setObjectName(QStringLiteral("gammaOverrides"));
    m_gamma->setPlaceholderText(tr("head=γ, … e.g. 0=0.9"));
    m_gamma->setToolTip(tr("Give head h another decay γ in (0, 1]. γ is one value per head index "
                           "shared by all layers, so this changes head h of every layer."));
    editsForm->addRow(tr("Mute"), m_mute);
    editsForm->addRow(tr("γ"), m_gamma);
    auto* apply = new QPushButton(tr("Apply"));
    apply->setObjectName(QStringLiteral("applyInterventions"));
    auto* clear = new QPushButton(tr("Clear"));
    auto* buttons = new QHBoxLayout;
    buttons->addWidget(apply);
    buttons->addWidget(clear);
    editsForm->addRow(buttons);
    connect(apply, &QPushButton::clicked, this, &MainWindow::applyInterventions);
    connect(m_mute, &QLineEdit::returnPressed, this, &MainWindow::applyInterventions);
    connect(m_gamma, &QLineEdit::returnPressed, this, &MainWindow::applyInterventions);
    connect(clear, &QPushButton::clicked, this, [this] {
        clearInterventionFields();
        applyInterventions();
    });
    layout->addWidget(edits);
    m_modelPanel = new QLabel(tr("No model is open."));
    m_modelPanel->setWordWrap(true);
    m_modelPanel->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_modelPanel->setAlignment(Qt::AlignTop | Qt::AlignLeft);
    layout->addWidget(m_modelPanel, 1);
    dock->setWidget(body);
    addDockWidget(Qt::LeftDockWidgetArea, dock);
    resizeDocks({dock}, {250}, Qt::Horizontal);
}

void MainWindow::buildMenus() {
    auto add = [this](QMenu* menu, const QString& text, const QKeySequence& key, auto slot) {
        QAction* a = menu->addAction(text);
        if (!key.isEmpty()) a->setShortcut(key);
        a->setShortcutVisibleInContextMenu(true);
        connect(a, &QAction::triggered, this, slot);
        return a;
    };
    QMenu* file = menuBar()->addMenu(tr("&File"));
    add(file, tr("&Open model…"), QKeySequence::Open, [this] {
        const QString dir = QFileDialog::getExistingDirectory(this, tr("Open model directory"));
        if (!dir.isEmpty()) openModelDirectory(dir);
    });
    m_recentMenu = file->addMenu(tr("Open &recent"));
    connect(m_recentMenu, &QMenu::aboutToShow, this, &MainWindow::rebuildRecentMenu);
    add(file, tr("Open from the Hugging Face &cache…"), QKeySequence(), [this] { openCachedModel(); });
    add(file, tr("Open &default model"), QKeySequence(), [this] {
        if (!openDefaultModel()) showError(tr("Open default model"), tr("No default model is installed."));
    });
    add(file, tr("Use a small &random model"), QKeySequence(), [this] { useRandomModel(); });
    file->addSeparator();
    add(file, tr("Open &workspace…"), QKeySequence(tr("Ctrl+Shift+W")), [this] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Open workspace"), QString(), tr("RetNet Studio workspace (*.json)"));
        if (!path.isEmpty()) openWorkspace(path);
    });
    add(file, tr("&Save workspace…"), QKeySequence::Save, [this] {
        QString path = QFileDialog::getSaveFileName(this, tr("Save workspace"), QStringLiteral("workspace.json"),
                                                    tr("RetNet Studio workspace (*.json)"));
        if (path.isEmpty()) return;
        QString error;
        if (saveWorkspace(path, &error))
            statusBar()->showMessage(tr("Saved %1").arg(path), 5000);
        else
            showError(tr("Save workspace"), error);
    });
    file->addSeparator();
    add(file, tr("Export view as &PNG…"), QKeySequence(tr("Ctrl+E")), [this] { exportCurrent(QStringLiteral("png")); });
    add(file, tr("Export view as P&DF…"), QKeySequence(tr("Ctrl+Shift+E")), [this] { exportCurrent(QStringLiteral("pdf")); });
    add(file, tr("Export view data as &CSV…"), QKeySequence(tr("Ctrl+Shift+C")), [this] { exportCurrent(QStringLiteral("csv")); });
    file->addSeparator();
    add(file, tr("&Quit"), QKeySequence::Quit, [this] { close(); });

    QMenu* gen = menuBar()->addMenu(tr("&Generate"));
    add(gen, tr("&Generate"), QKeySequence(tr("Ctrl+Return")), [this] { emit m_generate->generateRequested(); });
    add(gen, tr("&Stop"), QKeySequence(Qt::Key_Escape), [this] { m_controller->stopGeneration(); });
    add(gen, tr("&Continue"), QKeySequence(tr("Ctrl+Shift+Return")), [this] { emit m_generate->continueRequested(); });
    add(gen, tr("&Regenerate (next seed)"), QKeySequence(tr("Ctrl+R")), [this] { emit m_generate->regenerateRequested(); });
    add(gen, tr("C&opy output"), QKeySequence(tr("Ctrl+Shift+O")), [this] {
        statusBar()->showMessage(m_generate->copyOutput() ? tr("Output copied to the clipboard.")
                                                          : tr("Nothing to copy yet: generate first."), 3000);
    });

    QMenu* view = menuBar()->addMenu(tr("&View"));
    for (size_t i = 0; i < m_views.size(); ++i) {
        const ViewId id = m_views[i]->id();
        add(view, m_views[i]->title(), QKeySequence(QStringLiteral("Ctrl+%1").arg(i + 1)), [this, id] { showView(id); });
    }
    view->addSeparator();
    add(view, tr("&Recompute this view"), QKeySequence(Qt::Key_F5), [this] { refreshCurrentView(); });
    m_learnAction = add(view, tr("Show &learn panel"), QKeySequence(Qt::Key_F1), [this](bool on) {
        for (QTextBrowser* b : m_learnPanels) b->setVisible(on);
    });
    m_learnAction->setCheckable(true);
    m_learnAction->setChecked(true);
    m_darkAction = add(view, tr("&Dark theme"), QKeySequence(tr("Ctrl+T")), [this](bool on) { setDarkTheme(on); });
    m_darkAction->setCheckable(true);

    QMenu* help = menuBar()->addMenu(tr("&Help"));
    add(help, tr("&Keyboard shortcuts"), QKeySequence(tr("Ctrl+/")), [this] { showShortcuts(); });
    add(help, tr("&About RetNet Studio"), QKeySequence(), [this] { showAbout(); });
}

QStringList MainWindow::recentModels() const { return QSettings().value(kRecentKey).toStringList(); }

void MainWindow::rememberModel(const QString& directory) {
    if (directory.isEmpty()) return;
    QStringList list = recentModels();
    list.removeAll(directory);
    list.prepend(directory);
    while (list.size() > kRecentMax) list.removeLast();
    QSettings().setValue(kRecentKey, list);
}

QStringList MainWindow::pruneRecentModels() {
    QStringList kept, gone;
    for (const QString& dir : recentModels()) (holdsModel(dir) ? kept : gone) << dir;
    if (!gone.isEmpty()) QSettings().setValue(kRecentKey, kept);
    return gone;
}

void MainWindow::rebuildRecentMenu() {
    const QStringList gone = pruneRecentModels();
    if (!gone.isEmpty())
        statusBar()->showMessage(tr("Removed from the recent models (no config.json any more): %1")
                                     .arg(gone.join(QStringLiteral(", "))), 10000);
    m_recentMenu->clear();
    const QStringList list = recentModels();
    for (const QString& dir : list)
        m_recentMenu->addAction(QDir::toNativeSeparators(dir), this, [this, dir] { openRecentModel(dir); });
    if (list.isEmpty()) m_recentMenu->addAction(tr("(none yet)"))->setEnabled(false);
}

void MainWindow::openRecentModel(const QString& directory) {
    if (holdsModel(directory)) return openModelDirectory(directory);
    QStringList list = recentModels();
    list.removeAll(directory);
    QSettings().setValue(kRecentKey, list);
    showError(tr("Open recent"), tr("%1 no longer holds a model (config.json is missing); it was removed "
                                    "from the recent models.").arg(directory));
}

void MainWindow::connectController() {
    EngineController* c = m_controller;
    connect(c, &EngineController::loadStarted, this, [this](const QString& dir) {
        m_progress->setValue(0);
        m_progress->setVisible(true);
        m_cancelLoad->setVisible(true);
        statusBar()->showMessage(tr("Loading %1…").arg(dir));
    });
    connect(c, &EngineController::loadProgress, this, [this](double f) { m_progress->setValue(int(f * 1000)); });
    auto loadEnded = [this] {
        m_progress->setVisible(false);
        m_cancelLoad->setVisible(false);
    };
    connect(c, &EngineController::modelLoaded, this, [this, loadEnded](const ModelInfo& info) {
        loadEnded();
        onModelLoaded(info);
    });
    connect(c, &EngineController::loadFailed, this, [this, loadEnded](const QString& message) {
        loadEnded();
        showError(tr("Could not open the model"), message);
    });
    connect(c, &EngineController::loadCancelled, this, [this, loadEnded] {
        loadEnded();
        statusBar()->showMessage(tr("Loading cancelled."), 5000);
    });
    connect(c, &EngineController::errorOccurred, this, [this](const JobRef& job, const QString& message) {
        // A failed load, device switch or model swap is shown by loadFailed.
        if (job.isModelJob() && job.job != Job::SetInterventions) return;
        showError(jobTitle(job), message);
    });
    connect(c, &EngineController::generationStarted, this, [this] { statusBar()->clearMessage(); });
    connect(c, &EngineController::generationFinished, this, [this](const GenerationStats& stats) {
        // A text that failed to run (errorOccurred says why) or was stopped is not restored.
        if (m_restoreStep == 2 && stats.stopReason == QLatin1String("error"))
            m_restoreStep = 0;
        else if (m_restoreStep == 2 && stats.stopReason == QLatin1String("stopped"))
            showError(tr("Open workspace"), tr("%1: stopped before its text was restored").arg(m_restorePath));
        else if (m_restoreStep == 2)
            continueRestore(false);
        updateModelPanel();
        markViewsStale();
        if (ViewBase* v = currentView()) v->refresh();
    });
    connect(m_generate, &GenerateView::generateRequested, this, [this] {
        if (!m_controller->hasModel()) showError(tr("Generate"), tr("Open a model first."));
    });
    // The panel's memory figures follow the text length; while generating they wait for the end.
    connect(m_generate, &GenerateView::sequenceChanged, this, [this] {
        if (!m_controller->isGenerating()) updateModelPanel();
    });
    connect(m_tabs, &QTabWidget::currentChanged, this, [this] {
        ViewBase* v = currentView();
        if (v && v->isStale() && m_controller->hasModel() && !m_controller->isGenerating()) v->refresh();
    });
}

void MainWindow::onModelLoaded(const ModelInfo& info) {
    m_stack->setCurrentIndex(1);
    if (!info.sequenceKept) {
        rememberModel(info.directory);
        m_cursor->set(-1);  // a new text
    }
    {
        QSignalBlocker block(m_device);
        m_device->clear();
        for (const QString& d : info.devices) {
            const QString label = d == QLatin1String("reference") ? tr("reference — float64 (exact, slow)")
                                  : d.contains(QLatin1String("bf16")) || (d == QLatin1String("cpu") && info.bf16Weights)
                                      ? tr("%1 — bfloat16 weights").arg(d)
                                                                      : tr("%1 — float32").arg(d);
            m_device->addItem(label, d);
        }
        m_device->setCurrentIndex(std::max(0, m_device->findData(info.device)));
    }
    updateModelPanel();
    // Bring what is looked at up to date: the same text on an edited model or another device, or
    // the prompt on a new model (left as it was, the view would show the old model's data and
    // point the linked cursor at positions of the old text). Without a prompt there is nothing to
    // analyse yet.
    if (ViewBase* v = currentView(); v && (info.sequenceKept || !m_generate->prompt().trimmed().isEmpty())) v->refresh();
    m_statusModel->setText(tr("%1 · %2").arg(info.name, info.device));
    statusBar()->showMessage(info.notice.isEmpty() ? tr("Model ready.") : info.notice, 8000);
    if (m_restoreStep > 0) continueRestore(info.sequenceKept);
}

// A newly opened model starts without edits, and so do the fields.
void MainWindow::clearInterventionFields() {
    m_mute->clear();
    m_gamma->clear();
}

void MainWindow::applyInterventions() {
    if (!m_controller->hasModel()) return showError(tr("Interventions"), tr("Open a model first."));
    try {
        m_controller->setInterventions(
            retnet::parse_interventions(m_mute->text().toStdString(), m_gamma->text().toStdString()));
    } catch (const std::exception& e) {
        showError(tr("Interventions"), QString::fromStdString(e.what()));
    }
}

void MainWindow::updateModelPanel() {
    if (!m_controller->hasModel()) return;
    const ModelInfo& i = m_controller->modelInfo();
    const QLocale locale;
    const int64_t T = std::max<int64_t>(m_generate->sequenceLength(), 1);
    auto row = [](const QString& k, const QString& v) {
        return QStringLiteral("<tr><td><b>%1</b></td><td>%2</td></tr>").arg(k, v);
    };
    QString html = QStringLiteral("<table cellspacing=3>");
    html += row(tr("Model"), i.name.toHtmlEscaped());
    if (!i.directory.isEmpty())  // elided in the middle: a long path must not widen the dock
        html += row(tr("Directory"), QFontMetrics(font()).elidedText(i.directory, Qt::ElideMiddle, 160).toHtmlEscaped());
    html += row(tr("Family"), i.family);
    html += row(tr("Device"), i.device);
    html += row(tr("Parameters"), locale.toString(qlonglong(i.parameters)));
    html += row(tr("Layers × heads"), QStringLiteral("%1 × %2").arg(i.layers).arg(i.heads));
    html += row(tr("d_model"), QString::number(i.dModel));
    html += row(tr("Head dims Dk, Dv"), QStringLiteral("%1, %2").arg(i.headDimK).arg(i.headDimV));
    html += row(tr("FFN width"), QString::number(i.ffnDim));
    html += row(tr("Vocabulary"), locale.toString(i.vocabSize) + (i.hasTokenizer ? QString() : tr(" (no tokenizer)")));
    html += row(tr("Norm eps"), QString::number(i.normEps, 'g', 3));
    html += row(tr("Chunk size"), QString::number(i.chunkSize));
    html += row(tr("Weights"), locale.formattedDataSize(i.weightBytes));
    html += row(tr("State (fixed)"), locale.formattedDataSize(i.stateBytes));
    const QString tokens = T == 1 ? tr("1 token") : tr("%1 tokens").arg(T);
    html += row(tr("KV cache at %1").arg(tokens), locale.formattedDataSize(i.kvCacheBytes(T)) +
                    tr(" (a Transformer of the same shape)"));
    html += row(tr("Estimated memory"), locale.formattedDataSize(i.estimatedBytes(T)) +
                    tr(" (weights + state + parallel prefill of %1)").arg(tokens));
    html += QStringLiteral("</table>");
    if (!i.interventions.isEmpty())
        html += tr("<p><b>Interventions:</b> %1 (Clear restores the model as loaded)</p>").arg(i.interventions.toHtmlEscaped());
    if (!i.notice.isEmpty()) html += QStringLiteral("<p><i>%1</i></p>").arg(i.notice.toHtmlEscaped());
    m_modelPanel->setText(html);
}

EquivalenceView* MainWindow::equivalenceView() const {
    return static_cast<EquivalenceView*>(view(ViewId::Equivalence));
}

ViewBase* MainWindow::currentView() const {
    const int i = m_tabs->currentIndex();
    return i >= 0 && i < int(m_views.size()) ? m_views[size_t(i)] : nullptr;
}

void MainWindow::showView(ViewId id) { m_tabs->setCurrentIndex(int(id)); }

void MainWindow::openModelDirectory(const QString& directoryOrName) {
    QString directory;  // ORG/NAME[@REVISION] names a snapshot of the Hugging Face cache
    try {
        directory = QString::fromStdString(retnet::resolve_model_path(directoryOrName.toStdString()));
    } catch (const retnet::Error& e) {
        return showError(tr("Could not open the model"), QString::fromUtf8(e.what()));
    }
    clearInterventionFields();
    m_randomSeed.reset();
    m_controller->openModelDirectory(directory, m_device->count() ? m_device->currentData().toString()
                                                                  : QStringLiteral("cpu"));
}

void MainWindow::openCachedModel() {
    const std::vector<retnet::CachedModel> models = retnet::list_cached_models();
    const QString cache = QString::fromStdString(retnet::hub_cache_dir());
    if (models.empty())
        return showError(tr("Open from the Hugging Face cache"),
                         tr("No RetNet model in %1. Download one with: huggingface-cli download ORG/NAME").arg(cache));
    QStringList names;
    for (const retnet::CachedModel& m : models)
        names << QStringLiteral("%1  (%2)").arg(QString::fromStdString(m.name), QString::fromStdString(m.family));
    bool ok = false;
    const QString pick = QInputDialog::getItem(this, tr("Open from the Hugging Face cache"),
                                               tr("RetNet models in %1:").arg(cache), names, 0, false, &ok);
    if (ok) openModelDirectory(QString::fromStdString(models[size_t(names.indexOf(pick))].directory));
}

bool MainWindow::openDefaultModel() {
    const QString dir = defaultModelDirectory();
    if (dir.isEmpty()) return false;
    openModelDirectory(dir);
    return true;
}

void MainWindow::useRandomModel(uint64_t seed) {
    retnet::ModelConfig c;
    c.family = retnet::Family::Fla;
    c.vocab_size = 64;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.key_dim = 32;
    c.value_dim = 64;
    c.ffn_dim = 64;
    c.chunk_size = 8;
    auto model = std::make_shared<const retnet::Model>(retnet::make_random_model(c, seed));
    clearInterventionFields();
    m_controller->useModel(model, nullptr);
    m_randomSeed = seed;
    if (m_generate->prompt().isEmpty())
        m_generate->setPrompt(QStringLiteral("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16"));
}

void MainWindow::setDarkTheme(bool dark) {
    m_dark = dark;
    if (m_darkAction && m_darkAction->isChecked() != dark) m_darkAction->setChecked(dark);
    qApp->setStyle(QStyleFactory::create(QStringLiteral("Fusion")));
    QPalette pal;
    if (dark) {
        pal.setColor(QPalette::Window, QColor(37, 37, 40));
        pal.setColor(QPalette::WindowText, QColor(225, 225, 228));
        pal.setColor(QPalette::Base, QColor(28, 28, 30));
        pal.setColor(QPalette::AlternateBase, QColor(45, 45, 48));
        pal.setColor(QPalette::Text, QColor(225, 225, 228));
        pal.setColor(QPalette::PlaceholderText, QColor(140, 140, 150));
        pal.setColor(QPalette::Button, QColor(50, 50, 54));
        pal.setColor(QPalette::ButtonText, QColor(225, 225, 228));
        pal.setColor(QPalette::Highlight, QColor(42, 130, 218));
        pal.setColor(QPalette::HighlightedText, Qt::white);
        pal.setColor(QPalette::ToolTipBase, QColor(50, 50, 54));
        pal.setColor(QPalette::ToolTipText, QColor(225, 225, 228));
        pal.setColor(QPalette::Mid, QColor(80, 80, 85));
        pal.setColor(QPalette::Link, QColor(100, 170, 255));
        // Disabled controls must look disabled: dimmed text and flatter buttons.
        for (QPalette::ColorRole role : {QPalette::WindowText, QPalette::Text, QPalette::ButtonText})
            pal.setColor(QPalette::Disabled, role, QColor(112, 112, 118));
        pal.setColor(QPalette::Disabled, QPalette::Button, QColor(42, 42, 45));
        pal.setColor(QPalette::Disabled, QPalette::Base, QColor(34, 34, 36));
    } else {
        pal = qApp->style()->standardPalette();
        pal.setColor(QPalette::PlaceholderText, QColor(120, 120, 130));
    }
    qApp->setPalette(pal);
    QFile qss(dark ? QStringLiteral(":/retnet/dark.qss") : QStringLiteral(":/retnet/light.qss"));
    qApp->setStyleSheet(qss.open(QIODevice::ReadOnly) ? QString::fromUtf8(qss.readAll()) : QString());
    for (ViewBase* v : m_views) v->updateTheme();
}

bool MainWindow::saveWorkspace(const QString& path, QString* error) const {
    if (!m_controller->hasModel()) {
        *error = tr("no model is open: a workspace starts from one");
        return false;
    }
    const ModelInfo& info = m_controller->modelInfo();
    QJsonObject w{{QStringLiteral("format"), QStringLiteral("retnet-studio-workspace")},
                  {QStringLiteral("version"), 1},
                  {QStringLiteral("model"), info.directory},
                  {QStringLiteral("device"), info.device},
                  {QStringLiteral("generate"), m_generate->settings()},
                  {QStringLiteral("interventions"), QJsonObject{{QStringLiteral("mute"), m_mute->text()},
                                                                {QStringLiteral("gamma"), m_gamma->text()}}},
                  {QStringLiteral("view"), currentView() ? currentView()->name() : QString()},
                  {QStringLiteral("dark"), m_dark}};
    if (info.directory.isEmpty() && m_randomSeed) w.insert(QStringLiteral("random_model"), qint64(*m_randomSeed));
    QJsonArray ids;
    for (int32_t id : m_generate->tokenIds()) ids.append(id);
    w.insert(QStringLiteral("text"), QJsonObject{{QStringLiteral("tokens"), ids},
                                                 {QStringLiteral("prompt_length"), qint64(m_generate->promptLength())}});
    QSaveFile file(path);
    if (!file.open(QIODevice::WriteOnly) || file.write(QJsonDocument(w).toJson()) < 0 || !file.commit()) {
        *error = tr("%1: %2").arg(path, file.errorString());
        return false;
    }
    return true;
}

namespace {

constexpr qint64 kMaxWorkspaceBytes = 256ll << 20;  // far above any text the app can hold

// The file as a JSON object, or the line saying why not. Only a regular file is opened: a FIFO
// would block the GUI thread in open(), a device such as /dev/zero would be read forever.
std::optional<QJsonObject> readWorkspaceFile(const QString& path, QString* error) {
    const QFileInfo info(path);
    if (!info.exists()) {
        *error = QObject::tr("no such file");
        return std::nullopt;
    }
    if (!info.isFile()) {
        *error = QObject::tr("not a regular file (a directory, FIFO or device)");
        return std::nullopt;
    }
    if (info.size() > kMaxWorkspaceBytes) {
        *error = QObject::tr("%1 bytes: larger than any workspace (at most %2 MiB)").arg(info.size()).arg(kMaxWorkspaceBytes >> 20);
        return std::nullopt;
    }
    QFile file(path);
    if (!file.open(QIODevice::ReadOnly)) {
        *error = file.errorString();
        return std::nullopt;
    }
    QJsonParseError parse{};
    const QJsonDocument doc = QJsonDocument::fromJson(file.read(kMaxWorkspaceBytes), &parse);
    if (parse.error != QJsonParseError::NoError) {
        *error = QObject::tr("not JSON (%1 at byte %2)").arg(parse.errorString()).arg(parse.offset);
        return std::nullopt;
    }
    return doc.object();
}

// The saved text: an array of token ids and how many of them are the prompt.
QString checkWorkspaceText(const QJsonValue& text) {
    if (text.isUndefined()) return {};
    if (!text.isObject()) return QObject::tr("text: expected an object, got %1").arg(jsonValueText(text));
    const QJsonValue tokens = text.toObject().value(QStringLiteral("tokens"));
    if (!tokens.isUndefined() && !tokens.isArray())
        return QObject::tr("text.tokens: expected an array of token ids, got %1").arg(jsonValueText(tokens));
    const QJsonArray ids = tokens.toArray();
    for (qsizetype i = 0; i < ids.size(); ++i)
        if (!isWholeNumber(ids[i], 0, std::numeric_limits<int32_t>::max()))
            return QObject::tr("text.tokens[%1]: expected a token id (a whole number, 0 or more), got %2")
                .arg(i).arg(jsonValueText(ids[i]));
    const QJsonValue length = text.toObject().value(QStringLiteral("prompt_length"));
    if (!length.isUndefined() && !isWholeNumber(length, 0, double(ids.size())))
        return QObject::tr("text.prompt_length: expected a whole number from 0 to %1 (the text's tokens), got %2")
            .arg(ids.size()).arg(jsonValueText(length));
    return {};
}

}  // namespace

QString MainWindow::checkWorkspace(const QJsonObject& w) const {
    if (w.value(QStringLiteral("format")).toString() != QLatin1String("retnet-studio-workspace") ||
        !isWholeNumber(w.value(QStringLiteral("version")), 1, 1))
        return tr("not a RetNet Studio workspace of version 1");
    for (const char* key : {"model", "device", "view"})
        if (w.contains(QLatin1String(key)) && !w.value(QLatin1String(key)).isString())
            return tr("%1: expected a string, got %2").arg(QLatin1String(key), jsonValueText(w.value(QLatin1String(key))));
    if (w.contains(QStringLiteral("dark")) && !w.value(QStringLiteral("dark")).isBool())
        return tr("dark: expected true or false, got %1").arg(jsonValueText(w.value(QStringLiteral("dark"))));
    const QString model = w.value(QStringLiteral("model")).toString();
    const QJsonValue seed = w.value(QStringLiteral("random_model"));
    if (model.isEmpty() && seed.isUndefined()) return tr("names no model");
    if (model.isEmpty() && !isWholeNumber(seed, 0, double(1ll << 53)))
        return tr("random_model: expected a seed (a whole number, 0 or more), got %1").arg(jsonValueText(seed));
    if (!model.isEmpty() && !holdsModel(model)) return tr("its model %1 no longer exists").arg(model);
    const QString view = w.value(QStringLiteral("view")).toString();
    if (!view.isEmpty() && !viewFromName(view))
        return tr("view: unknown view \"%1\" (expected one of %2)").arg(view, viewNames().join(QStringLiteral(", ")));
    const QJsonValue settings = w.value(QStringLiteral("generate"));
    if (!settings.isUndefined() && !settings.isObject())
        return tr("generate: expected an object, got %1").arg(jsonValueText(settings));
    if (QString e = m_generate->checkSettings(settings.toObject()); !e.isEmpty()) return e;
    const QJsonValue edits = w.value(QStringLiteral("interventions"));
    if (!edits.isUndefined() && !edits.isObject())
        return tr("interventions: expected an object, got %1").arg(jsonValueText(edits));
    for (const char* key : {"mute", "gamma"})
        if (const QJsonValue v = edits.toObject().value(QLatin1String(key)); !v.isUndefined() && !v.isString())
            return tr("interventions.%1: expected a string, got %2").arg(QLatin1String(key), jsonValueText(v));
    return checkWorkspaceText(w.value(QStringLiteral("text")));
}

void MainWindow::openWorkspace(const QString& path) {
    QString error;
    const std::optional<QJsonObject> w = readWorkspaceFile(path, &error);
    if (w) error = checkWorkspace(*w);
    if (!error.isEmpty()) return showError(tr("Open workspace"), tr("%1: %2").arg(path, error));
    m_restore = *w;
    m_restorePath = path;
    m_restoreStep = 1;
    setDarkTheme(w->value(QStringLiteral("dark")).toBool());
    const QString model = w->value(QStringLiteral("model")).toString();
    if (model.isEmpty()) {
        useRandomModel(uint64_t(w->value(QStringLiteral("random_model")).toInteger()));
    } else {
        const int device = m_device->findData(w->value(QStringLiteral("device")).toString());
        if (device >= 0) m_device->setCurrentIndex(device);
        openModelDirectory(model);
    }
}

// The saved text as a request that runs it through the model loaded for it, or the line saying
// why it does not fit that model.
std::optional<GenerateRequest> MainWindow::restoredText(QString* error) const {
    const QJsonObject text = m_restore.value(QStringLiteral("text")).toObject();
    const QJsonArray ids = text.value(QStringLiteral("tokens")).toArray();
    const int64_t vocab = m_controller->modelInfo().vocabSize;
    GenerateRequest r = m_generate->request();
    for (qsizetype i = 0; i < ids.size(); ++i) {
        const int64_t id = ids[i].toInteger();
        if (id >= vocab) {
            *error = tr("%1: text.tokens[%2] = %3 is outside the model's vocabulary [0, %4)")
                         .arg(m_restorePath).arg(i).arg(id).arg(vocab);
            return std::nullopt;
        }
        r.tokens.push_back(int32_t(id));
    }
    r.promptLength = text.value(QStringLiteral("prompt_length")).toInteger();
    r.maxTokens = 0;
    return r;
}

// Step 1 (model loaded): settings, then the text is run again; step 2 (text back): the edits;
// step 3 (edits in force): the view.
void MainWindow::continueRestore(bool sequenceKept) {
    if (m_restoreStep == 1 && !sequenceKept) {
        m_generate->applySettings(m_restore.value(QStringLiteral("generate")).toObject());
        QString error;
        const std::optional<GenerateRequest> r = restoredText(&error);
        if (!r) return showError(tr("Open workspace"), error);
        m_restoreStep = 2;
        if (r->tokens.empty()) return continueRestore(false);
        m_controller->generate(*r);
    } else if (m_restoreStep == 2) {
        const QJsonObject edits = m_restore.value(QStringLiteral("interventions")).toObject();
        m_mute->setText(edits.value(QStringLiteral("mute")).toString());
        m_gamma->setText(edits.value(QStringLiteral("gamma")).toString());
        m_restoreStep = 3;
        if (m_mute->text().trimmed().isEmpty() && m_gamma->text().trimmed().isEmpty()) return finishRestore();
        applyInterventions();
    } else if (m_restoreStep == 3 && sequenceKept) {
        finishRestore();
    }
}

void MainWindow::finishRestore() {
    m_restoreStep = 0;
    if (const auto v = viewFromName(m_restore.value(QStringLiteral("view")).toString())) showView(*v);
    statusBar()->showMessage(tr("Workspace %1 restored.").arg(m_restorePath), 5000);
    emit workspaceRestored(m_restorePath);
}

QString MainWindow::analysisText() const {
    // The generated sequence when there is one (the worker keeps it), else the prompt.
    return m_generate->sequenceLength() > 0 ? QString() : m_generate->prompt();
}

void MainWindow::markViewsStale() {
    for (ViewBase* v : m_views) v->markStale();
}

void MainWindow::refreshCurrentView() {
    if (ViewBase* v = currentView()) v->refresh();
}

QString MainWindow::exportMetadata() const {
    QStringList lines;
    lines << QStringLiteral("tool: RetNet Studio %1").arg(QCoreApplication::applicationVersion());
    if (m_controller->hasModel()) {
        const ModelInfo& i = m_controller->modelInfo();
        lines << QStringLiteral("model: %1").arg(i.directory.isEmpty() ? i.name : i.directory);
        lines << QStringLiteral("family: %1").arg(i.family);
        lines << QStringLiteral("device: %1").arg(i.device);
        if (!i.interventions.isEmpty()) lines << QStringLiteral("interventions: %1").arg(i.interventions);
    }
    if (ViewBase* v = currentView()) lines << QStringLiteral("view: %1").arg(v->name());
    lines << QStringLiteral("sampler: %1").arg(m_generate->samplerSummary());
    lines << QStringLiteral("tokens: %1").arg(m_generate->sequenceLength());
    return lines.join(QLatin1Char('\n'));
}

void MainWindow::exportCurrent(const QString& kind) {
    ViewBase* v = currentView();
    if (!v) return;
    const QString filter = kind == QLatin1String("png")   ? tr("PNG image (*.png)")
                           : kind == QLatin1String("pdf") ? tr("PDF document (*.pdf)")
                                                          : tr("CSV data (*.csv)");
    QString path = QFileDialog::getSaveFileName(this, tr("Export %1").arg(v->title()),
                                                QStringLiteral("retnet-%1.%2").arg(v->name(), kind), filter);
    if (path.isEmpty()) return;
    if (QFileInfo(path).suffix().isEmpty()) path += QLatin1Char('.') + kind;
    QString error;
    const bool ok = kind == QLatin1String("csv") ? v->exportCsv(path, exportMetadata(), &error)
                                                 : v->exportImage(path, &error, exportMetadata());
    if (ok)
        statusBar()->showMessage(tr("Saved %1").arg(path), 5000);
    else
        showError(tr("Export"), error);
}

void MainWindow::showError(const QString& title, const QString& message) {
    m_restoreStep = 0;  // a workspace being restored stops at the step that failed
    m_lastError = title + QStringLiteral(": ") + message;
    statusBar()->showMessage(m_lastError, 10000);
    emit errorShown(m_lastError);
    if (m_quiet) return;  // the screenshot and benchmark runners report it, once
    auto* box = new QMessageBox(QMessageBox::Warning, title, message, QMessageBox::Ok, this);
    box->setAttribute(Qt::WA_DeleteOnClose);
    box->open();
}

void MainWindow::showShortcuts() {
    auto* dialog = new QDialog(this);
    dialog->setWindowTitle(tr("Keyboard shortcuts"));
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    auto* table = new QTableWidget(0, 2);
    table->setHorizontalHeaderLabels({tr("Action"), tr("Shortcut")});
    table->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    table->verticalHeader()->setVisible(false);
    table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    auto addRow = [table](const QString& action, const QString& keys) {
        const int r = table->rowCount();
        table->insertRow(r);
        table->setItem(r, 0, new QTableWidgetItem(action));
        table->setItem(r, 1, new QTableWidgetItem(keys));
    };
    for (QAction* menu : menuBar()->actions())
        for (QAction* a : menu->menu()->actions())
            if (!a->shortcut().isEmpty())
                addRow(a->text().remove(QLatin1Char('&')), a->shortcut().toString(QKeySequence::NativeText));
    addRow(tr("Retention: previous / next layer"), tr("PgUp / PgDn"));
    addRow(tr("Retention: previous / next head"), tr("[ / ]"));
    addRow(tr("Retention overview: move selection"), tr("Arrow keys"));
    auto* layout = new QVBoxLayout(dialog);
    layout->addWidget(table);
    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Close);
    connect(buttons, &QDialogButtonBox::rejected, dialog, &QDialog::close);
    layout->addWidget(buttons);
    dialog->resize(480, 480);
    dialog->open();
}

void MainWindow::showAbout() {
    QString devices;
    for (const std::string& d : retnet::available_devices()) devices += QString::fromStdString(d) + QLatin1Char(' ');
    QMessageBox::about(this, tr("About RetNet Studio"),
                       tr("<h3>RetNet Studio %1</h3><p>Retentive Networks (Sun et al. 2023) in "
                          "their three forms: parallel, recurrent and chunkwise.</p>"
                          "<p>Backends in this build: %2</p><p>GPL-3.0-or-later.</p>")
                           .arg(QCoreApplication::applicationVersion(), devices.toHtmlEscaped()));
}

}  // namespace retnet::ui
