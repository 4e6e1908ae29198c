// SPDX-License-Identifier: GPL-3.0-or-later
// measure_cost: RetNet against its Transformer twin on the CPU, every point measured or reported as
// not fitting, the memory columns exactly the state / KV-cache sizes, each point reported as it
// is measured, cancel (between a prefill's layers too) and bad options.
#include <gtest/gtest.h>

#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model.h"
#include "retnet/model_stats.h"
#include "test_models.h"

namespace retnet {
namespace {

struct CostFixture : ::testing::Test {
    std::shared_ptr<Model> retnet_model = test::small_model(Family::Fla, 3);
    std::shared_ptr<const Model> twin =
        std::make_shared<const Model>(make_transformer_twin(retnet_model->config, 4));
    std::unique_ptr<Backend> retnet = make_cpu_backend(retnet_model);
    std::unique_ptr<Backend> transformer = make_cpu_backend(twin);
    CostOptions options = [] {
        CostOptions o;
        o.lengths = {4, 9};
        o.batches = {1, 3};
        o.decode_steps = 2;
        return o;
    }();

    // measure_cost(options) under a memory limit of `bytes`; the previous limit comes back after.
    CostReport measure_under_limit(uint64_t bytes, const CostPointDone& point_done = {}) {
        const uint64_t saved = memory_limit();
        const std::string source = memory_limit_source();
        set_memory_limit(bytes, "the test");
        try {
            CostReport report = measure_cost(*retnet, *transformer, options, {}, point_done);
            set_memory_limit(saved, source);
            return report;
        } catch (...) {
            set_memory_limit(saved, source);
            throw;
        }
    }
};

TEST_F(CostFixture, MeasuresEveryPointOfBothModels) {
    const CostReport report = measure_cost(*retnet, *transformer, options);
    ASSERT_EQ(report.points.size(), 8u);
    EXPECT_EQ(report.retnet_parameters, retnet_model->parameter_count());
    EXPECT_EQ(report.transformer_parameters, twin->parameter_count());
    const int steps = options.decode_steps + 2;  // two untimed steps precede the timed ones
    for (size_t i = 0; i < report.points.size(); ++i) {
        const CostPoint& p = report.points[i];
        EXPECT_EQ(p.model, i < 4 ? "RetNet" : "Transformer");
        EXPECT_EQ(p.length, options.lengths[(i / 2) % 2]);
        EXPECT_EQ(p.batch, options.batches[i % 2]);
        EXPECT_FALSE(p.out_of_memory) << p.note;
        EXPECT_GT(p.prefill_ms, 0.0);
        EXPECT_GT(p.ms_per_step, 0.0);
        EXPECT_NEAR(p.tokens_per_s, p.batch * 1000.0 / p.ms_per_step, 1e-9 * p.tokens_per_s);
        const int64_t expected = i < 4 ? p.batch * recurrent_state_bytes(retnet_model->config)
                                       : p.batch * kv_cache_bytes(twin->config, p.length + steps);
        EXPECT_EQ(p.state_bytes, expected) << p.model << " " << p.length << "×" << p.batch;
        EXPECT_EQ(p.device_bytes, -1);  // the CPU backend measures no device memory
    }
    // RetNet's state does not grow with the length; the twin's cache grows linearly with it.
    EXPECT_EQ(report.points[0].state_bytes, report.points[2].state_bytes);
    EXPECT_EQ(report.points[6].state_bytes - report.points[4].state_bytes,
              kv_cache_bytes(twin->config, 9 - 4));
    // The backends are left with one empty slot.
    EXPECT_EQ(retnet->slot_count(), 1);
    EXPECT_EQ(transformer->slot_count(), 1);
    EXPECT_TRUE(transformer->snapshot(0).empty());
}

TEST_F(CostFixture, PointsOverTheMemoryLimitAreReportedNotTried) {
    // A limit between the RetNet's states and the twin's widest caches: the twin's big points are
    // out of memory, the ones at least as long and as wide after the first are not tried. A point
    // needs its states at their peak on the CPU (host_state_peak_bytes: a KV cache's headroom and
    // the fork's copy) and its prefill's buffers (prefill_host_bytes), which the backend keeps,
    // beside both models' weights.
    const int held = options.decode_steps + 2;  // tokens a sequence holds beyond its context
    const uint64_t weights = retnet->model().weight_bytes() + transformer->model().weight_bytes();
    const auto need = [&](const Model& m, int length, int batch) {
        return host_state_peak_bytes(m.config, batch, length + held) + prefill_host_bytes(m.config, length) + weights;
    };
    options.lengths = {4, 9, 20};
    options.batches = {1, 64};
    const uint64_t limit = need(*twin, 20, 1);  // every twin point of one sequence fits, none of 64
    ASSERT_LT(need(*twin, 20, 1), need(*twin, 4, 64));
    ASSERT_LE(need(*retnet_model, 20, 64), limit);
    const CostReport report = measure_under_limit(limit);
    int oom = 0;
    for (const CostPoint& p : report.points) {
        const bool expect_oom = p.model == "Transformer" && p.batch == 64;
        EXPECT_EQ(p.out_of_memory, expect_oom) << p.model << " " << p.length << "×" << p.batch << ": " << p.note;
        if (p.out_of_memory) {
            ++oom;
            EXPECT_FALSE(p.note.empty());
            EXPECT_EQ(p.note.find('\n'), std::string::npos);
        }
    }
    EXPECT_GT(oom, 0);
    EXPECT_EQ(report.points.back().note.rfind("not tried", 0), 0u) << report.points.back().note;
}

// A point's states and buffers come beside both models' weights, which are held all along: a limit
// that the point alone fits but not beside them reports it out of memory, naming them (before, the
// weights were left out, and the review measured both models at 77 MiB of weights plus 48 MiB of
// states and caches under an 80 MiB limit).
TEST_F(CostFixture, APointIsCountedBesideBothModelsWeights) {
    options.lengths = {4};
    options.batches = {1};
    const int held = options.decode_steps + 2;
    const Model& m = retnet->model();
    const uint64_t alone = host_state_peak_bytes(m.config, 1, 4 + held) + prefill_host_bytes(m.config, 4);
    const uint64_t weights = m.weight_bytes() + transformer->model().weight_bytes();
    const CostReport report = measure_under_limit(alone + weights - 1);
    ASSERT_EQ(report.points.size(), 2u);
    EXPECT_TRUE(report.points[0].out_of_memory);
    EXPECT_NE(report.points[0].note.find("the state memory of RetNet at 4 tokens × 1 with its prefill's buffers, "
                                         "beside both models' weights needs"),
              std::string::npos)
        << report.points[0].note;
    EXPECT_FALSE(measure_under_limit(alone + weights + (uint64_t(1) << 20)).points[0].out_of_memory);
}

TEST_F(CostFixture, APrefillOverTheMemoryLimitIsReportedNotRun) {
    // 10⁵ tokens: RetNet's state is tiny, but the prefill's activations pass a 64 MiB limit. Before,
    // the point ran (10⁶ tokens of the bundled model held 20 GB for minutes).
    const uint64_t limit = uint64_t(64) << 20;
    options.lengths = {4, 100000};
    options.batches = {1};
    const CostReport report = measure_under_limit(limit);
    ASSERT_EQ(report.points.size(), 4u);
    EXPECT_FALSE(report.points[0].out_of_memory) << report.points[0].note;
    EXPECT_TRUE(report.points[1].out_of_memory);
    EXPECT_EQ(report.points[1].note.rfind("the prefill of RetNet at 100000 tokens × 1 needs", 0), 0u)
        << report.points[1].note;
    EXPECT_TRUE(report.points[3].out_of_memory);
}

// The batch's state size in 64 bits without wrapping: 2^30 sequences of 2^34 bytes of KV cache
// each is 2^64 bytes, which wrapped to 0 and let the point run (a prefill of 2^34 / (bytes a token)
// tokens, then 2^30 copies of its cache). Now it saturates and the point is out of memory. The
// progress callback cancels any point that is tried, so a regression ends at once.
TEST_F(CostFixture, AStateLargerThan64BitsIsOutOfMemoryNotWrapped) {
    const int64_t per_token = kv_cache_bytes(twin->config, 1);
    ASSERT_EQ(per_token & (per_token - 1), 0) << per_token << " bytes a token: not a power of two";
    const int batch = 1 << 30;
    options.lengths = {static_cast<int>((int64_t(1) << 34) / per_token) - options.decode_steps - 2};
    options.batches = {batch};
    // Above the twin's prefill, below the RetNet's 2^30 states (its point is refused on those).
    const uint64_t limit = 2 * prefill_host_bytes(twin->config, options.lengths[0]);
    ASSERT_GT(uint64_t(batch) * uint64_t(recurrent_state_bytes(retnet_model->config)), limit);
    const uint64_t saved = memory_limit();
    const std::string source = memory_limit_source();
    set_memory_limit(limit, "the test");
    bool tried = false;
    const CostProgress tries = [&](double, const std::string& what) {  // every point asks first; work says what it is
        tried = what == "warm-up" || what.rfind("prefill of ", 0) == 0 || what.rfind("decoding ", 0) == 0;
        return !tried;
    };
    CostReport report;
    EXPECT_NO_THROW(report = measure_cost(*retnet, *transformer, options, tries));
    set_memory_limit(saved, source);
    EXPECT_FALSE(tried);
    ASSERT_EQ(report.points.size(), 2u);
    for (const CostPoint& p : report.points) {
        EXPECT_TRUE(p.out_of_memory) << p.model;
        EXPECT_EQ(p.note.rfind("the state memory of " + p.model + " at ", 0), 0u) << p.note;
    }
}

TEST_F(CostFixture, CancelStopsWithCancelledAndLeavesTheBackendsUsable) {
    int calls = 0;
    const CostProgress cancel_third = [&](double fraction, const std::string& what) {
        EXPECT_GE(fraction, 0.0);
        EXPECT_LE(fraction, 1.0);
        EXPECT_FALSE(what.empty());
        return ++calls < 3;
    };
    EXPECT_THROW(measure_cost(*retnet, *transformer, options, cancel_third), Cancelled);
    EXPECT_EQ(retnet->slot_count(), 1);
    EXPECT_TRUE(retnet->snapshot(0).empty());
    EXPECT_NO_THROW(measure_cost(*retnet, *transformer, options));
}

void expect_same_point(const CostPoint& a, const CostPoint& b) {
    EXPECT_EQ(a.model, b.model);
    EXPECT_EQ(a.length, b.length);
    EXPECT_EQ(a.batch, b.batch);
    EXPECT_EQ(a.prefill_ms, b.prefill_ms);
    EXPECT_EQ(a.ms_per_step, b.ms_per_step);
    EXPECT_EQ(a.tokens_per_s, b.tokens_per_s);
    EXPECT_EQ(a.state_bytes, b.state_bytes);
    EXPECT_EQ(a.device_bytes, b.device_bytes);
    EXPECT_EQ(a.out_of_memory, b.out_of_memory);
    EXPECT_EQ(a.note, b.note);
}

TEST_F(CostFixture, EachPointReachesTheCallbackInOrderWithTheReportsValues) {
    options.lengths = {4, 9, 100000};  // the last is out of memory under 64 MiB: reported as well
    std::vector<CostReport> seen;
    const CostReport report =
        measure_under_limit(uint64_t(64) << 20, [&](const CostReport& so_far) { seen.push_back(so_far); });
    ASSERT_EQ(report.points.size(), 12u);
    EXPECT_TRUE(report.points[5].out_of_memory);
    ASSERT_EQ(seen.size(), report.points.size());
    for (size_t k = 0; k < seen.size(); ++k) {
        SCOPED_TRACE(k);
        EXPECT_EQ(seen[k].device, report.device);
        EXPECT_EQ(seen[k].retnet_parameters, report.retnet_parameters);
        EXPECT_EQ(seen[k].transformer_parameters, report.transformer_parameters);
        ASSERT_EQ(seen[k].points.size(), k + 1);
        for (size_t j = 0; j <= k; ++j) expect_same_point(seen[k].points[j], report.points[j]);
    }
}

TEST_F(CostFixture, ACancelKeepsThePointsTheCallbackHasGiven) {
    CostReport kept;
    const CostProgress cancel_after_three = [&](double, const std::string&) { return kept.points.size() < 3; };
    EXPECT_THROW(measure_cost(*retnet, *transformer, options, cancel_after_three,
                              [&](const CostReport& so_far) { kept = so_far; }),
                 Cancelled);
    ASSERT_EQ(kept.points.size(), 3u);  // the fourth was cancelled in its prefill
    EXPECT_EQ(kept.points[2].model, "RetNet");
    EXPECT_EQ(kept.points[2].length, 9);
    EXPECT_EQ(kept.points[2].batch, 1);
    EXPECT_GT(kept.points[2].ms_per_step, 0.0);
}

TEST_F(CostFixture, TheProgressIsAskedBetweenThePrefillsLayers) {
    // The RetNet's two layers: asked before each, with the prefill's point (after the point itself,
    // before it starts, and the untimed warm-up prefill's two). Cancelled at the second, the prefill
    // ends before its last layer: the step after it is never reported.
    std::vector<std::string> asked;
    const CostProgress cancel_second = [&](double fraction, const std::string& what) {
        EXPECT_EQ(fraction, 0.0);
        asked.push_back(what);
        return asked.size() < 5;
    };
    ASSERT_EQ(retnet_model->config.n_layers, 2);
    EXPECT_THROW(measure_cost(*retnet, *transformer, options, cancel_second), Cancelled);
    const std::string point = "prefill of RetNet at 4 tokens × 1";
    EXPECT_EQ(asked, (std::vector<std::string>{"RetNet at 4 tokens × 1", "warm-up", "warm-up", point, point}));
    EXPECT_TRUE(retnet->snapshot(0).empty());
}

// Points that are not tried (a smaller one did not fit) ask for a cancel too: 20,000 lengths past
// the limit, cancelled at the 1,000th point, stop there (before, none asked: `retnet cost` with
// 220,000 such points ran for minutes through Ctrl-C and SIGTERM, then exited 0).
TEST_F(CostFixture, PointsNotTriedStillAskForACancel) {
    options.lengths.clear();
    for (int k = 0; k < 20000; ++k) options.lengths.push_back(1000000 + k);
    options.batches = {1};
    CostReport kept;
    int asked = 0;
    const CostProgress cancel_at_the_thousandth = [&](double, const std::string& what) {
        if (what.rfind("prefill of ", 0) == 0 || what == "warm-up") return true;
        return ++asked < 1000;
    };
    const uint64_t saved = memory_limit();
    const std::string source = memory_limit_source();
    set_memory_limit(uint64_t(64) << 20, "the test");
    EXPECT_THROW(measure_cost(*retnet, *transformer, options, cancel_at_the_thousandth,
                              [&](const CostReport& so_far) { kept.points.push_back(so_far.points.back()); }),
                 Cancelled);
    set_memory_limit(saved, source);
    EXPECT_EQ(asked, 1000);
    ASSERT_EQ(kept.points.size(), 999u);
    EXPECT_TRUE(kept.points[0].out_of_memory);
    EXPECT_EQ(kept.points.back().note.rfind("not tried: 1000000 tokens × 1 did not fit", 0), 0u) << kept.points.back().note;
}

TEST_F(CostFixture, RefusesBadOptionsAndSwappedModels) {
    CostOptions bad = options;
    bad.lengths = {};
    EXPECT_THROW(measure_cost(*retnet, *transformer, bad), Error);
    bad = options;
    bad.batches = {0};
    EXPECT_THROW(measure_cost(*retnet, *transformer, bad), Error);
    EXPECT_THROW(measure_cost(*transformer, *retnet, options), Error);
    // A Transformer of another vocabulary: both sizes named.
    ModelConfig other = twin->config;
    other.vocab_size += 1;
    const auto other_backend = make_cpu_backend(std::make_shared<const Model>(make_random_model(other, 1)));
    try {
        measure_cost(*retnet, *other_backend, options);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("different vocabularies (" + std::to_string(other.vocab_size - 1) + " and " +
                                             std::to_string(other.vocab_size) + " tokens)"),
                  std::string::npos) << e.what();
    }
}

// Both models compute at one precision, which the report names: a bf16 RetNet against a float32
// Transformer on the CPU reads half the bytes a step and is refused, not reported as faster.
TEST_F(CostFixture, ThePrecisionIsReportedAndMustBeTheSameForBothModels) {
    options.lengths = {3}, options.batches = {1}, options.decode_steps = 1;
    EXPECT_EQ(measure_cost(*retnet, *transformer, options).weights, "fp32");
    const auto bf16_retnet = make_cpu_backend(std::make_shared<const Model>(narrowed_to_bf16(*retnet_model)));
    try {
        measure_cost(*bf16_retnet, *transformer, options);
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "cost: the RetNet computes with bf16 weights and the Transformer with fp32: a comparison "
                               "needs the same precision");
    }
    const auto bf16_twin = make_cpu_backend(std::make_shared<const Model>(narrowed_to_bf16(*twin)));
    EXPECT_EQ(measure_cost(*bf16_retnet, *bf16_twin, options).weights, "bf16");
}

// The twin matches the RetNet's parameter count (2.3 % apart here: the FFN width rounded to 8); a
// Transformer 5 % or more away is named with both counts and the relative difference.
TEST_F(CostFixture, SizeMismatchNamesBothCountsBeyondTheTolerance) {
    const int64_t r = retnet_model->parameter_count();
    ASSERT_LT(std::abs(twin->parameter_count() - r), r / 20);
    EXPECT_EQ(size_mismatch(*retnet_model, *twin), "");
    ModelConfig wider = twin->config;
    wider.ffn_dim += 24;  // 3·d·24·L = 4608 values more than the twin: +17.8 % against the RetNet's 22,872
    const Model other = make_random_model(wider, 5);
    ASSERT_EQ(r, 22872);
    ASSERT_EQ(other.parameter_count(), twin->parameter_count() + 4608);
    EXPECT_EQ(size_mismatch(*retnet_model, other),
              "the Transformer has 26944 parameters and the RetNet 22872 (+17.8 %), more than the 5.0 % two models "
              "of the same size may differ by: this does not compare same-size models");
    ModelConfig narrower = twin->config;
    narrower.ffn_dim = 8;  // 3·d·56·L = 10,752 values fewer than the twin: −49.4 %
    EXPECT_NE(size_mismatch(*retnet_model, make_random_model(narrower, 5)).find("(-49.4 %)"), std::string::npos);
}

// A RetNet so small that its twin's FFN rounding alone passes 5 % (9.4 % here): the matching
// rule's bound L·(12d + Dv) + d (14.6 %) is the tolerance, so its own twin is not warned about.
TEST(CostSize, TheTwinOfATinyRetNetIsNotWarnedAbout) {
    ModelConfig tiny = test::small_config(Family::Fla);
    tiny.vocab_size = 4, tiny.d_model = 8, tiny.n_layers = 1, tiny.n_heads = 2;
    tiny.key_dim = 8, tiny.value_dim = 16, tiny.ffn_dim = 8;
    const Model retnet = make_random_model(tiny, 1), twin = make_transformer_twin(tiny, 2);
    ASSERT_EQ(retnet.parameter_count(), 768);
    ASSERT_EQ(twin.parameter_count(), 696);
    EXPECT_EQ(size_mismatch(retnet, twin), "");
    ModelConfig smaller = twin.config;
    smaller.ffn_dim = 8;  // 3·8·8 = 192 values fewer again: 264 in all, −34.4 %
    const std::string line = size_mismatch(retnet, make_random_model(smaller, 2));
    EXPECT_NE(line.find("has 504 parameters and the RetNet 768 (-34.4 %), more than the 14.6 %"), std::string::npos)
        << line;
}

}  // namespace
}  // namespace retnet
