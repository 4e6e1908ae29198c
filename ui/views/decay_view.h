// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// γ_h^n per head against the distance n, with each head's half-life and effective span, drawn
// over the current text length.
#include <vector>

#include "views/view_base.h"

class QCheckBox;
class QTableWidget;
class QCustomPlot;

namespace retnet::ui {

struct DecayStats {
    double gamma = 1.0;
    double halfLife = 0.0;  // n with γ^n = 1/2; +inf for γ = 1
    double span = 0.0;      // n with γ^n = ε; +inf for γ = 1
};
DecayStats decayStats(float logGamma, double epsilon);

class DecayView : public ViewBase {
    Q_OBJECT
public:
    explicit DecayView(QWidget* parent = nullptr);

    ViewId id() const override { return ViewId::Decay; }
    QString title() const override { return tr("Decay"); }
    bool hasData() const override { return !m_logDecay.empty(); }
    QString csv() const override;
    void updateTheme() override;

    void setModelInfo(const ModelInfo& info) override {
        setDecay(info.logDecay);
        setTextLength(0);
    }
    void setDecay(const std::vector<float>& logDecay);  // (H) log γ_h
    void setTextLength(int64_t tokens);
    double epsilon() const { return m_epsilon; }

protected:
    QCustomPlot* mainPlot() const override { return m_plot; }
    void compute() override { setTextLength(sequenceLength()); }

private:
    void rebuild();
    int64_t horizon() const;

    QCustomPlot* m_plot = nullptr;
    QTableWidget* m_table = nullptr;
    QCheckBox* m_logScale = nullptr;
    std::vector<float> m_logDecay;
    int64_t m_length = 0;
    double m_epsilon = 0.01;
};

}  // namespace retnet::ui
