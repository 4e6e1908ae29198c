// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The app's views, named once. The name is what `--view`, export file names, learn-panel files
// (resources/ui/learn/NAME.html) and object names use; the enum is what code compares.
#include <QMetaType>
#include <QString>
#include <QStringList>

#include <array>
#include <optional>

namespace retnet::ui {

enum class ViewId { Generate, Equivalence, Decay, Retention, State, Lens, Recurrence, Cost, Count };
inline constexpr int kViewCount = int(ViewId::Count);

inline constexpr std::array<const char*, kViewCount> kViewNames = {
    "generate", "equivalence", "decay", "retention", "state", "lens", "recurrence", "cost"};

inline QString viewName(ViewId id) { return QString::fromLatin1(kViewNames[size_t(id)]); }

inline std::optional<ViewId> viewFromName(const QString& name) {
    for (int i = 0; i < kViewCount; ++i)
        if (name == QLatin1String(kViewNames[size_t(i)])) return ViewId(i);
    return std::nullopt;
}

// Every view's name in tab order, e.g. for `--view` help and error lines.
inline QStringList viewNames() {
    QStringList names;
    for (const char* n : kViewNames) names << QString::fromLatin1(n);
    return names;
}

}  // namespace retnet::ui

Q_DECLARE_METATYPE(retnet::ui::ViewId)
