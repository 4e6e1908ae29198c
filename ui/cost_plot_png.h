// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// `retnet cost --plot F.png` without Qt in the CLI: the Cost view's four panels (ui/cost_plot.h)
// written as a PNG through a plain C++ call. Built as the library retnet_costplot when Qt is
// found; the CLI then links it and defines RETNET_HAVE_COST_PLOT.
#include <string>

#include "retnet/cost.h"

namespace retnet {

// Renders `report` offscreen (creating a QApplication on the offscreen platform when the process
// has none) and writes the PNG to `path`. Returns false with `error` set to one line naming the
// path and the reason (an empty report, a directory that does not exist, …).
bool write_cost_plot_png(const CostReport& report, const std::string& path, std::string* error);

}  // namespace retnet
