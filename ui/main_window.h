// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The application window: menus with shortcuts, the five views (each with its learn panel), the
// model panel, the load progress in the status bar, and the theme switch.
#include <QMainWindow>

#include "engine_controller.h"

class QAction;
class QActionGroup;
class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QStackedWidget;
class QTabWidget;
class QTextBrowser;

namespace retnet::ui {

class ViewBase;
class GenerateView;
class EquivalenceView;
class DecayView;
class RetentionView;
class StateView;
class LensView;

// Directory of the bundled default model, or "" when none is installed.
QString defaultModelDirectory();

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;

    EngineController* controller() const { return m_controller; }
    GenerateView* generateView() const { return m_generate; }
    EquivalenceView* equivalenceView() const { return m_equivalence; }
    DecayView* decayView() const { return m_decay; }
    RetentionView* retentionView() const { return m_retention; }
    StateView* stateView() const { return m_state; }
    LensView* lensView() const { return m_lens; }
    ViewBase* view(const QString& id) const;
    ViewBase* currentView() const;

    void showView(const QString& id);
    // A model directory, or ORG/NAME[@REVISION] from the Hugging Face cache (retnet/model_names.h).
    void openModelDirectory(const QString& directoryOrName);
    void openCachedModel();  // picks one of the cache's RetNet models from a list
    bool openDefaultModel();  // false when no default model is installed
    void useRandomModel(uint64_t seed = 1);
    void setDarkTheme(bool dark);
    bool darkTheme() const { return m_dark; }
    // Errors go to the status bar and stderr instead of dialogs (tests, --screenshot).
    void setQuiet(bool quiet) { m_quiet = quiet; }
    QString lastError() const { return m_lastError; }

    // Recomputes what the current view shows from the current text (F5).
    void refreshCurrentView();
    // `# key: value` lines describing the run, written into every CSV export.
    QString exportMetadata() const;

signals:
    void viewDataReady(const QString& viewId);  // an analysis result was shown

private:
    void buildMenus();
    void buildModelDock();
    QWidget* wrapWithLearnPanel(ViewBase* view);
    void connectController();
    void onModelLoaded(const ModelInfo& info);
    void updateModelPanel();
    void applyInterventions();  // parses the dock's fields and reinstalls the model with them
    void clearInterventionFields();
    void showError(const QString& title, const QString& message);
    void exportCurrent(const QString& kind);
    void markAnalysesStale();
    QString analysisText() const;
    void requestRetention(int layer);
    void showShortcuts();
    void showAbout();

    EngineController* m_controller = nullptr;
    QStackedWidget* m_stack = nullptr;  // empty state | tabs
    QTabWidget* m_tabs = nullptr;
    GenerateView* m_generate = nullptr;
    EquivalenceView* m_equivalence = nullptr;
    DecayView* m_decay = nullptr;
    RetentionView* m_retention = nullptr;
    StateView* m_state = nullptr;
    LensView* m_lens = nullptr;
    std::vector<ViewBase*> m_views;
    std::vector<QTextBrowser*> m_learnPanels;
    QLabel* m_modelPanel = nullptr;
    QComboBox* m_device = nullptr;
    QLineEdit* m_mute = nullptr;   // interventions: heads to mute, "layer.head, …"
    QLineEdit* m_gamma = nullptr;  // interventions: decay overrides, "head=γ, …"

    QLabel* m_statusModel = nullptr;
    QProgressBar* m_progress = nullptr;
    QPushButton* m_cancelLoad = nullptr;
    QAction* m_darkAction = nullptr;
    QAction* m_learnAction = nullptr;
    bool m_dark = false;
    bool m_quiet = false;
    bool m_equivalenceStale = true;
    bool m_retentionStale = true;
    bool m_overviewStale = true;
    bool m_lensStale = true;
    QString m_lastError;
};

}  // namespace retnet::ui
