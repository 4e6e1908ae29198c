// SPDX-License-Identifier: GPL-3.0-or-later
// Plot and table exports on a full disk: a file size limit (RLIMIT_FSIZE; SIGXFSZ ignored) makes
// every write past it fail with EFBIG, as writes fail with ENOSPC on a full disk. The export must
// fail with one line naming the file and the reason, and an older file of that name must stay as it
// was. Before, a PDF was cut at the limit and renamed over the old file with success reported, and a
// PNG's failure was "Unknown error" after libpng's own line on stderr.
#include <gtest/gtest.h>

#include <QDir>
#include <QFile>
#include <QTemporaryDir>
#include <cmath>

#include "../core/file_size_limit.h"
#include "plot_utils.h"

namespace retnet::ui {
namespace {

QByteArray contents(const QString& path) {
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

TEST(ExportOnAFullDisk, FailsInOneLineAndKeepsTheOlderFile) {
    QCustomPlot plot;
    plot.resize(800, 600);
    QVector<double> x, y;
    for (int i = 0; i < 2000; ++i) x.push_back(i), y.push_back(std::sin(i * 0.01) * i);
    plot.addGraph()->setData(x, y);
    plot.rescaleAxes();
    plot.replot();
    const QStringList caption{QStringLiteral("a plot"), QStringLiteral("model: tiny")};
    QTemporaryDir dir;
    QString csv;
    for (int i = 0; i < 5000; ++i) csv += QStringLiteral("%1,%2\n").arg(i).arg(i * 0.5);
    for (const QString& name : {QStringLiteral("p.png"), QStringLiteral("p.pdf"), QStringLiteral("t.csv")}) {
        const QString path = dir.filePath(name);
        QString error;
        const bool is_csv = name.endsWith(QLatin1String(".csv"));
        ASSERT_TRUE(is_csv ? saveCsv(path, QStringLiteral("model: tiny"), csv, &error)
                           : saveImage(&plot, caption, path, &error))
            << error.toStdString();
        const QByteArray before = contents(path);
        ASSERT_GT(before.size(), 20000) << name.toStdString();  // past the limit below
        {
            FileSizeLimit full(16384);
            const bool ok = is_csv ? saveCsv(path, QStringLiteral("model: tiny"), csv, &error)
                                   : saveImage(&plot, caption, path, &error);
            EXPECT_FALSE(ok) << name.toStdString();
        }
        EXPECT_EQ(error, path + QStringLiteral(": File too large")) << error.toStdString();
        EXPECT_EQ(contents(path), before) << name.toStdString() << ": the older file was replaced";
        EXPECT_EQ(QDir(dir.path()).entryList(QDir::Files | QDir::Hidden).size(),
                  qsizetype(name == QLatin1String("p.png") ? 1 : name == QLatin1String("p.pdf") ? 2 : 3))
            << "a temporary file was left";
    }
}

}  // namespace
}  // namespace retnet::ui
