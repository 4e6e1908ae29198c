// SPDX-License-Identifier: GPL-3.0-or-later
// retnet-studio: the desktop app. Only this file knows whether the CUDA backend was compiled in.
// The command line is checked before any window system is touched, so --help, --version and a
// bad option work without a display and end with one line and exit status 2.
#include <QApplication>
#include <QCommandLineParser>
#include <QRegularExpression>
#include <QTimer>

#include <csignal>
#include <cstdio>
#include <optional>

#include "generate_bench.h"
#include "main_window.h"
#include "retnet/cpu_ops.h"
#include "retnet/memory_limit.h"
#include "retnet/stack_limit.h"
#include "screenshot.h"
#include "views/generate_view.h"

#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace {

// Before any library's initializer: OpenBLAS's threads held at one under a ulimit -v, where their
// buffers might not map and it would hang; main() fits them to the room left (retnet/memory_limit.h).
// The stack limit is fitted before any thread starts (retnet/stack_limit.h).
void hold_blas_threads_first(int, char** argv, char** envp) {
    retnet::hold_blas_threads_for_address_limit(argv, envp);
    retnet::fit_stack_limit();
}
__attribute__((section(".preinit_array"), used)) void (*g_hold_blas_threads_first)(int, char**, char**) =
    hold_blas_threads_first;

using retnet::ui::ScreenshotOptions;

struct Options {
    QCommandLineOption screenshot{QStringLiteral("screenshot"),
                                  QStringLiteral("Run the prompt, render the view, save it to FILE.png and exit."),
                                  QStringLiteral("FILE.png")};
    QCommandLineOption model{QStringLiteral("model"), QStringLiteral("Model directory to open."), QStringLiteral("DIR")};
    QCommandLineOption prompt{QStringLiteral("prompt"), QStringLiteral("Prompt text."), QStringLiteral("TEXT")};
    QCommandLineOption view{QStringLiteral("view"),
                            QStringLiteral("View to show: %1.").arg(retnet::ui::viewNames().join(QStringLiteral(", "))),
                            QStringLiteral("VIEW"), retnet::ui::viewName(retnet::ui::ViewId::Generate)};
    QCommandLineOption tokens{QStringLiteral("max-tokens"), QStringLiteral("Tokens to generate (screenshot), 1 to 100000."),
                              QStringLiteral("N"), QStringLiteral("24")};
    QCommandLineOption dark{QStringLiteral("dark"), QStringLiteral("Use the dark theme.")};
    QCommandLineOption zeroEps{QStringLiteral("zero-eps"), QStringLiteral("Equivalence with head-norm eps = 0.")};
    QCommandLineOption size{QStringLiteral("size"), QStringLiteral("Window size WxH, at least 640x480."),
                            QStringLiteral("WxH"), QStringLiteral("1400x900")};
    QCommandLineOption bench{QStringLiteral("bench-generate"),
                             QStringLiteral("Generate N tokens from the prompt in the window, several times, print "
                                            "each run's tok/s and the median, and exit (compare with `retnet "
                                            "generate` on the same model, prompt and -n)."),
                             QStringLiteral("N")};
    QCommandLineOption benchRuns{QStringLiteral("bench-runs"), QStringLiteral("Runs of --bench-generate, 1 to 100."),
                                 QStringLiteral("R"), QStringLiteral("5")};
};

struct Checked {
    retnet::ui::ViewId view = retnet::ui::ViewId::Generate;
    int width = 0, height = 0;
    int maxTokens = 24;
    int benchTokens = 0;  // 0: no benchmark
    int benchRuns = 5;
};

// A whole number in [low, high] from an option's value, or the line saying what is wrong.
std::optional<int> wholeNumber(const QCommandLineParser& parser, const QCommandLineOption& option, int low, int high,
                               QString* error) {
    // Digits only, as the CLI takes them: QString::toInt alone would also read " 5" and "+5".
    static const QRegularExpression digits(QStringLiteral("^-?[0-9]+$"));
    bool ok = false;
    const int v = parser.value(option).toInt(&ok);
    if (ok && digits.match(parser.value(option)).hasMatch() && v >= low && v <= high) return v;
    *error = QStringLiteral("--%1: expected a whole number from %2 to %3, got '%4'")
                 .arg(option.names().first()).arg(low).arg(high).arg(parser.value(option));
    return std::nullopt;
}

// The option values a window needs, or the one line saying what is wrong.
std::optional<Checked> check(const QCommandLineParser& parser, const Options& o, QString* error) {
    Checked c;
    const auto view = retnet::ui::viewFromName(parser.value(o.view));
    if (!view) {
        *error = QStringLiteral("--view: unknown view '%1' (expected one of %2)")
                     .arg(parser.value(o.view), retnet::ui::viewNames().join(QStringLiteral(", ")));
        return std::nullopt;
    }
    c.view = *view;
    const QStringList wh = parser.value(o.size).split(QLatin1Char('x'));
    bool okW = false, okH = false;
    if (wh.size() == 2) {
        c.width = wh[0].toInt(&okW);
        c.height = wh[1].toInt(&okH);
    }
    if (!okW || !okH || c.width < 640 || c.height < 480 || c.width > 16384 || c.height > 16384) {
        *error = QStringLiteral("--size: expected WxH between 640x480 and 16384x16384, got '%1'").arg(parser.value(o.size));
        return std::nullopt;
    }
    const auto tokens = wholeNumber(parser, o.tokens, 1, 100000, error);
    const auto runs = wholeNumber(parser, o.benchRuns, 1, 100, error);
    const auto bench = parser.isSet(o.bench) ? wholeNumber(parser, o.bench, 1, 100000, error) : std::optional<int>(0);
    if (!tokens || !runs || !bench) return std::nullopt;
    if (*bench > 0 && parser.isSet(o.screenshot)) {
        *error = QStringLiteral("--screenshot and --bench-generate: give one of them (each runs the window and exits)");
        return std::nullopt;
    }
    c.maxTokens = *tokens;
    c.benchRuns = *runs;
    c.benchTokens = *bench;
    return c;
}

int runScreenshot(QApplication& app, retnet::ui::MainWindow& window, ScreenshotOptions options) {
    auto* runner = new retnet::ui::ScreenshotRunner(&window, std::move(options), &app);
    int code = 0;
    QObject::connect(runner, &retnet::ui::ScreenshotRunner::finished, &app, [&code](bool ok, const QString& message) {
        if (ok) {
            std::printf("%s\n", qPrintable(message));
        } else {
            std::fprintf(stderr, "retnet-studio: screenshot failed: %s\n", qPrintable(message));
            code = 1;
        }
        QApplication::exit(code);
    });
    // Started from the event loop: a failure found at once (a model name that resolves to
    // nothing) calls QApplication::exit, which does nothing before exec().
    QTimer::singleShot(0, runner, &retnet::ui::ScreenshotRunner::start);
    const int rc = app.exec();
    return code ? code : rc;
}

int runBench(QApplication& app, retnet::ui::MainWindow& window, retnet::ui::GenerateBenchOptions options) {
    auto* bench = new retnet::ui::GenerateBench(&window, std::move(options), &app);
    int code = 0;
    QObject::connect(bench, &retnet::ui::GenerateBench::finished, &app, [&code](bool ok, const QString& message) {
        if (ok) {
            std::printf("%s\n", qPrintable(message));
        } else {
            std::fprintf(stderr, "retnet-studio: benchmark failed: %s\n", qPrintable(message));
            code = 1;
        }
        QApplication::exit(code);
    });
    QTimer::singleShot(0, bench, &retnet::ui::GenerateBench::start);  // as the screenshot's runner
    const int rc = app.exec();
    return code ? code : rc;
}

}  // namespace

int main(int argc, char** argv) {
    // An export past `ulimit -f` fails with EFBIG, which the export names, instead of SIGXFSZ
    // ending the app with the session's unsaved work.
    std::signal(SIGXFSZ, SIG_IGN);
    try {
        retnet::check_memory_setting();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet-studio: error: %s\n", e.what());
        return 1;
    }
    retnet::cpu::fit_blas_threads_to_address_limit();
    QCoreApplication::setApplicationName(QStringLiteral("retnet-studio"));
    QCoreApplication::setOrganizationName(QStringLiteral("retnet-studio"));
    QCoreApplication::setApplicationVersion(QStringLiteral("0.1.0"));

    QStringList arguments;
    for (int i = 0; i < argc; ++i) arguments << QString::fromLocal8Bit(argv[i]);
    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("Retentive Network generation and visualization"));
    const QCommandLineOption help = parser.addHelpOption();
    const QCommandLineOption version = parser.addVersionOption();
    const Options o;
    parser.addOptions({o.screenshot, o.model, o.prompt, o.view, o.tokens, o.dark, o.zeroEps, o.size, o.bench, o.benchRuns});
    QString error;
    std::optional<Checked> checked;
    if (parser.parse(arguments)) checked = check(parser, o, &error);
    if (!parser.errorText().isEmpty()) error = parser.errorText();
    const bool wantsHelp = parser.isSet(help) || parser.isSet(QStringLiteral("help-all"));
    if (wantsHelp || parser.isSet(version)) {
        // No application object exists yet, so the parser cannot know the program's name.
        const QString text = wantsHelp ? parser.helpText().replace(QStringLiteral("<executable_name>"), QStringLiteral("retnet-studio"))
                                       : QStringLiteral("retnet-studio %1\n").arg(QCoreApplication::applicationVersion());
        std::printf("%s", qPrintable(text));
        return 0;
    }
    if (!checked) {
        std::fprintf(stderr, "retnet-studio: %s\n", qPrintable(error));
        return 2;
    }

    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("RetNet Studio"));
#ifdef RETNET_HAVE_CUDA
    retnet::cuda::install_cuda_module_loader();
#endif
    retnet::ui::MainWindow window;
    window.resize(checked->width, checked->height);
    if (parser.isSet(o.dark)) window.setDarkTheme(true);

    if (parser.isSet(o.screenshot)) {
        ScreenshotOptions options;
        options.path = parser.value(o.screenshot);
        options.modelDirectory = parser.value(o.model);
        options.prompt = parser.value(o.prompt);
        options.view = checked->view;
        options.maxTokens = checked->maxTokens;
        options.dark = parser.isSet(o.dark);
        options.zeroEps = parser.isSet(o.zeroEps);
        return runScreenshot(app, window, options);
    }
    if (checked->benchTokens > 0) {
        retnet::ui::GenerateBenchOptions options;
        options.modelDirectory = parser.value(o.model);
        options.prompt = parser.value(o.prompt);
        options.maxTokens = checked->benchTokens;
        options.runs = checked->benchRuns;
        return runBench(app, window, options);
    }
    window.show();
    if (parser.isSet(o.model))
        window.openModelDirectory(parser.value(o.model));
    else
        window.openDefaultModel();
    if (parser.isSet(o.prompt)) window.generateView()->setPrompt(parser.value(o.prompt));
    window.showView(checked->view);
    return app.exec();
}
