// SPDX-License-Identifier: GPL-3.0-or-later
// retnet-studio: the desktop app. Only this file knows whether the CUDA backend was compiled in.
#include <QApplication>
#include <QCommandLineParser>

#include <cstdio>

#include "main_window.h"
#include "screenshot.h"
#include "views/generate_view.h"

#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/backend_cuda.h"
#endif

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("RetNet Studio"));
    QApplication::setOrganizationName(QStringLiteral("retnet-studio"));
    QApplication::setApplicationVersion(QStringLiteral("0.1.0"));
#ifdef RETNET_HAVE_CUDA
    retnet::register_cuda_backend();
#endif

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("Retentive Network generation and visualization"));
    parser.addHelpOption();
    parser.addVersionOption();
    const QCommandLineOption screenshot(QStringLiteral("screenshot"),
                                        QStringLiteral("Run the prompt, render the view, save it to FILE.png and exit."),
                                        QStringLiteral("FILE.png"));
    const QCommandLineOption model(QStringLiteral("model"), QStringLiteral("Model directory to open."),
                                   QStringLiteral("DIR"));
    const QCommandLineOption prompt(QStringLiteral("prompt"), QStringLiteral("Prompt text."), QStringLiteral("TEXT"));
    const QCommandLineOption view(QStringLiteral("view"),
                                  QStringLiteral("View to show: generate, equivalence, decay, retention or state."),
                                  QStringLiteral("VIEW"), QStringLiteral("generate"));
    const QCommandLineOption tokens(QStringLiteral("max-tokens"), QStringLiteral("Tokens to generate (screenshot)."),
                                    QStringLiteral("N"), QStringLiteral("24"));
    const QCommandLineOption dark(QStringLiteral("dark"), QStringLiteral("Use the dark theme."));
    const QCommandLineOption zeroEps(QStringLiteral("zero-eps"),
                                     QStringLiteral("Equivalence with head-norm eps = 0."));
    const QCommandLineOption size(QStringLiteral("size"), QStringLiteral("Window size WxH."),
                                  QStringLiteral("WxH"), QStringLiteral("1400x900"));
    parser.addOptions({screenshot, model, prompt, view, tokens, dark, zeroEps, size});
    parser.process(app);

    retnet::ui::MainWindow window;
    const QStringList wh = parser.value(size).split(QLatin1Char('x'));
    if (wh.size() == 2 && wh[0].toInt() > 0 && wh[1].toInt() > 0) window.resize(wh[0].toInt(), wh[1].toInt());
    if (parser.isSet(dark)) window.setDarkTheme(true);

    if (parser.isSet(screenshot)) {
        retnet::ui::ScreenshotOptions options;
        options.path = parser.value(screenshot);
        options.modelDirectory = parser.value(model);
        options.prompt = parser.value(prompt);
        options.view = parser.value(view);
        options.maxTokens = parser.value(tokens).toInt();
        options.dark = parser.isSet(dark);
        options.zeroEps = parser.isSet(zeroEps);
        auto* runner = new retnet::ui::ScreenshotRunner(&window, options, &app);
        int code = 0;
        QObject::connect(runner, &retnet::ui::ScreenshotRunner::finished, &app,
                         [&code](bool ok, const QString& message) {
                             if (ok) {
                                 std::printf("%s\n", qPrintable(message));
                             } else {
                                 std::fprintf(stderr, "retnet-studio: screenshot failed: %s\n", qPrintable(message));
                                 code = 1;
                             }
                             QApplication::exit(code);
                         });
        runner->start();
        const int rc = app.exec();
        return code ? code : rc;
    }

    window.show();
    if (parser.isSet(model))
        window.openModelDirectory(parser.value(model));
    else
        window.openDefaultModel();
    if (parser.isSet(prompt)) window.generateView()->setPrompt(parser.value(prompt));
    if (parser.isSet(view)) window.showView(parser.value(view));
    return app.exec();
}
