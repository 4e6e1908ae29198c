// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The application window: menus with shortcuts, one tab per view (each with its learn panel;
// ui/view_id.h lists them), the model panel, the load progress in the status bar, and the theme
// switch. Views talk to the engine themselves (ViewBase); the window only decides when a view is
// looked at and must be brought up to date.
#include <QJsonObject>
#include <QMainWindow>

#include <optional>

#include "engine_controller.h"
#include "view_id.h"

class QAction;
class QActionGroup;
class QComboBox;
class QLabel;
class QLineEdit;
class QMenu;
class QProgressBar;
class QPushButton;
class QStackedWidget;
class QTabWidget;
class QTextBrowser;

namespace retnet::ui {

class ViewBase;
class LinkedCursor;
class GenerateView;
class EquivalenceView;

// Directory of the bundled default model, or "" when none is installed.
QString defaultModelDirectory();

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;

    EngineController* controller() const { return m_controller; }
    GenerateView* generateView() const { return m_generate; }
    EquivalenceView* equivalenceView() const;
    ViewBase* view(ViewId id) const { return m_views[size_t(id)]; }
    ViewBase* currentView() const;
    LinkedCursor* linkedCursor() const { return m_cursor; }

    void showView(ViewId id);
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

    // Model directories opened lately, newest first (QSettings "recentModels").
    QStringList recentModels() const;
    // Opens one of them; one that no longer holds a model is dropped from the list, saying so.
    void openRecentModel(const QString& directory);
    // Drops the entries whose config.json is gone; returns them.
    QStringList pruneRecentModels();

    // Workspaces: the model, device, prompt, settings, the text, the interventions, the view
    // shown and the theme, in one JSON file. Saving returns false with `error` set; opening
    // reports a bad file in one line and restores the rest in steps (model, text, edits), then
    // announces workspaceRestored.
    bool saveWorkspace(const QString& path, QString* error) const;
    void openWorkspace(const QString& path);

    // Recomputes what the current view shows from the current text (F5).
    void refreshCurrentView();
    // `# key: value` lines describing the run, written into every CSV export.
    QString exportMetadata() const;

signals:
    void viewDataReady(retnet::ui::ViewId id);  // a view shows the current text's data
    void workspaceRestored(const QString& path);
    void errorShown(const QString& line);  // "title: message", also when quiet (no dialog)

private:
    void buildMenus();
    void rebuildRecentMenu();
    void rememberModel(const QString& directory);
    void continueRestore(bool sequenceKept);  // the next step of openWorkspace
    void finishRestore();
    QString checkWorkspace(const QJsonObject& workspace) const;  // the line saying what is wrong, or ""
    std::optional<GenerateRequest> restoredText(QString* error) const;
    void buildModelDock();
    QWidget* wrapWithLearnPanel(ViewBase* view);
    void connectController();
    void onModelLoaded(const ModelInfo& info);
    void updateModelPanel();
    void applyInterventions();  // parses the dock's fields and reinstalls the model with them
    void clearInterventionFields();
    void showError(const QString& title, const QString& message);
    void exportCurrent(const QString& kind);
    void markViewsStale();
    QString analysisText() const;
    void showShortcuts();
    void showAbout();

    EngineController* m_controller = nullptr;
    QStackedWidget* m_stack = nullptr;  // empty state | tabs
    QTabWidget* m_tabs = nullptr;
    GenerateView* m_generate = nullptr;  // the prompt and the sequence every view analyses
    std::vector<ViewBase*> m_views;      // by ViewId
    LinkedCursor* m_cursor = nullptr;    // the position every view marks
    std::vector<QTextBrowser*> m_learnPanels;
    QLabel* m_modelPanel = nullptr;
    QComboBox* m_device = nullptr;
    QLineEdit* m_mute = nullptr;   // interventions: heads to mute, "layer.head, …"
    QLineEdit* m_gamma = nullptr;  // interventions: decay overrides, "head=γ, …"

    QLabel* m_statusModel = nullptr;
    QProgressBar* m_progress = nullptr;
    QPushButton* m_cancelLoad = nullptr;
    QMenu* m_recentMenu = nullptr;
    QAction* m_darkAction = nullptr;
    QAction* m_learnAction = nullptr;
    bool m_dark = false;
    std::optional<uint64_t> m_randomSeed;  // the random model in use, if it is one
    // A workspace being restored, and its step: 1 model, 2 text, 3 edits.
    QJsonObject m_restore;
    QString m_restorePath;
    int m_restoreStep = 0;
    bool m_quiet = false;
    QString m_lastError;
};

}  // namespace retnet::ui
