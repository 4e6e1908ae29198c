// SPDX-License-Identifier: GPL-3.0-or-later
// measure_cost: RetNet against its Transformer twin on the CPU, every point measured or reported as
// not fitting, the memory columns exactly the state / KV-cache sizes, cancel and bad options.
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
    CostReport measure_under_limit(uint64_t bytes) {
        const uint64_t saved = memory_limit();
        const std::string source = memory_limit_source();
        set_memory_limit(bytes, "the test");
        try {
            CostReport report = measure_cost(*retnet, *transformer, options);
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
    // A limit between the RetNet's states and the twin's longest caches: the twin's big points
    // are out of memory, the ones at least as long and as wide after the first are not tried.
    // The prefill's activations count too (prefill_host_bytes): room for the longest one's.
    const int64_t fits = 64 * kv_cache_bytes(twin->config, 4 + 4) +
                         static_cast<int64_t>(prefill_host_bytes(twin->config, 20));
    const auto limit = static_cast<uint64_t>(fits);
    options.lengths = {4, 9, 20};
    options.batches = {1, 64};
    const CostReport report = measure_under_limit(limit);
    int oom = 0;
    for (const CostPoint& p : report.points) {
        const bool expect_oom = p.model == "Transformer" && p.length > 4 &&
                                p.batch * kv_cache_bytes(twin->config, p.length + 4) > fits;
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

TEST_F(CostFixture, CancelStopsWithCancelledAndLeavesTheBackendsUsable) {
    int calls = 0;
    const CostProgress cancel_third = [&](double fraction, const std::string& what) {
        EXPECT_GT(fraction, 0.0);
        EXPECT_LE(fraction, 1.0);
        EXPECT_FALSE(what.empty());
        return ++calls < 3;
    };
    EXPECT_THROW(measure_cost(*retnet, *transformer, options, cancel_third), Cancelled);
    EXPECT_EQ(retnet->slot_count(), 1);
    EXPECT_TRUE(retnet->snapshot(0).empty());
    EXPECT_NO_THROW(measure_cost(*retnet, *transformer, options));
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

}  // namespace
}  // namespace retnet
