// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The paper's inference-cost panels drawn from a CostReport (retnet/cost.h): memory, throughput
// and latency against the context length at one batch size, and latency against the batch size
// at one length; RetNet and its Transformer twin as two series in each. Points that did not fit
// are drawn as crosses along the top of their panel, labelled "out of memory". Used by the Cost
// view and, through cost_plot_png.h, by `retnet cost --plot` (this file's library,
// retnet_costplot, needs QtWidgets and QCustomPlot only).
#include <QString>

#include "retnet/cost.h"

class QCPAxisRect;
class QCustomPlot;

namespace retnet::ui {

// The batch the length panels show: `wanted` when the report has it, else its smallest.
int costPlotBatch(const CostReport& report, int wanted = 0);
// The length the batch panel shows: `wanted` when the report has it, else its longest.
int costPlotLength(const CostReport& report, int wanted = 0);

// Replaces what `plot` shows with the four panels (2 × 2), each with its title, and one legend.
// Graph names: "<model>" for the measured points, "<model>: out of memory" for the crosses.
void drawCostPlot(QCustomPlot* plot, const CostReport& report, int batch = 0, int length = 0);
// Panel `index` of a drawn plot (0 memory, 1 throughput, 2 latency, 3 latency vs batch), or null.
QCPAxisRect* costPanel(const QCustomPlot* plot, int index);

// The four panels rendered offscreen into a PNG of `width` × `height` pixels. Returns false with
// `error` (one line naming the path) when the report is empty or the file cannot be written.
bool save_cost_plot_png(const CostReport& report, const QString& path, QString* error, int width = 1400,
                        int height = 1000);

}  // namespace retnet::ui
