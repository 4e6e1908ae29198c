// SPDX-License-Identifier: GPL-3.0-or-later
// The best logits of a row (retnet/best_logits.h): the selection against a full sort, the packed
// form, a sampler given only them drawing exactly what it draws from the whole row, and the
// backends' LastBest requests against their own Last rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>

#include "retnet/analysis_tap.h"
#include "retnet/best_logits.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/sampler.h"
#include "test_models.h"

namespace retnet {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Every id, best first, by a full stable sort on the float values (−0 == +0, lower id first).
std::vector<int32_t> sorted_ids(const std::vector<float>& row) {
    std::vector<int32_t> ids(row.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    std::stable_sort(ids.begin(), ids.end(), [&row](int32_t a, int32_t b) {
        return row[static_cast<size_t>(a)] > row[static_cast<size_t>(b)];
    });
    return ids;
}

// Rows of many equal values, masks and signed zeros, from a small set.
std::vector<float> tie_heavy_row(size_t V, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const float values[] = {-kInf, -2.5f, -0.0f, 0.0f, 0.5f, 1.25f, 3.0f, 3.0f};
    std::uniform_int_distribution<int> pick(0, 7);
    std::vector<float> row(V);
    for (float& v : row) v = values[pick(rng)];
    return row;
}

std::vector<float> random_row(size_t V, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> row(V);
    for (float& v : row) v = normal(rng);
    return row;
}

TEST(BestLogits, KeysFollowTheLogitsOrderWithSignedZerosEqual) {
    const float ordered[] = {-kInf, -1e30f, -1.0f, -1e-40f, 0.0f, 1e-40f, 1.0f, 1e30f, kInf};
    for (size_t i = 0; i + 1 < std::size(ordered); ++i)
        EXPECT_LT(best_logits_key(ordered[i]), best_logits_key(ordered[i + 1])) << ordered[i] << " < " << ordered[i + 1];
    EXPECT_EQ(best_logits_key(-0.0f), best_logits_key(0.0f));
}

TEST(BestLogits, SelectionIsTheFullSortsPrefix) {
    for (size_t V : {1u, 2u, 7u, 100u, 1000u}) {
        for (int count : {1, 3, 40, 256}) {
            for (uint64_t seed : {1u, 2u, 3u}) {
                SCOPED_TRACE("V " + std::to_string(V) + ", count " + std::to_string(count) + ", seed " + std::to_string(seed));
                for (const std::vector<float>& row : {tie_heavy_row(V, seed), random_row(V, seed)}) {
                    const BestLogits best = select_best_logits(row, count);
                    const std::vector<int32_t> all = sorted_ids(row);
                    const size_t kept = std::min(static_cast<size_t>(count), V);
                    ASSERT_EQ(best.ids.size(), kept);
                    EXPECT_EQ(best.ids, std::vector<int32_t>(all.begin(), all.begin() + static_cast<ptrdiff_t>(kept)));
                    for (size_t i = 0; i < kept; ++i)
                        EXPECT_EQ(std::bit_cast<uint32_t>(best.logits[i]),
                                  std::bit_cast<uint32_t>(row[static_cast<size_t>(best.ids[i])]));
                    EXPECT_EQ(best.masked, std::count(row.begin(), row.end(), -kInf));
                    EXPECT_EQ(best.first_non_finite, -1);
                    EXPECT_EQ(best.vocab_size, static_cast<int64_t>(V));
                }
            }
        }
    }
}

TEST(BestLogits, PackedRowsNameTheFirstNonFiniteLogitAndPadPastTheVocabulary) {
    const std::vector<float> row = {1.0f, -kInf, 2.0f, std::nanf(""), kInf, -kInf};
    std::vector<float> packed(static_cast<size_t>(best_logits_packed_width(8)));
    pack_best_logits(row, 8, packed);
    EXPECT_EQ(std::bit_cast<int32_t>(packed[6]), -1);  // ids past V = 6
    EXPECT_EQ(std::bit_cast<int32_t>(packed[7]), -1);
    EXPECT_EQ(std::bit_cast<int32_t>(packed[16]), 2);   // masked
    EXPECT_EQ(std::bit_cast<int32_t>(packed[17]), 3);   // the NaN comes first
    EXPECT_TRUE(std::isnan(packed[18]));
    const BestLogits best = unpack_best_logits(packed, 8, 6);
    EXPECT_EQ(best.ids.size(), 6u);
    EXPECT_EQ(best.first_non_finite, 3);

    EXPECT_THROW(select_best_logits(row, 0), Error);
    EXPECT_THROW(select_best_logits(row, kMaxBestLogits + 1), Error);
    EXPECT_THROW(pack_best_logits(row, 2, packed), Error);      // the packed row's width
    packed.assign(static_cast<size_t>(best_logits_packed_width(2)), 0.0f);
    packed[0] = std::bit_cast<float>(int32_t{9});                // an id outside the vocabulary
    EXPECT_THROW(unpack_best_logits(packed, 2, 6), Error);
}

TEST(BestLogits, SamplersNeedTheRowOnlyWithoutTopKOrWithAPenalty) {
    SamplerParams p;
    p.temperature = 0.0;
    EXPECT_EQ(Sampler::best_logits_needed(p), 1);
    p = default_sampling();
    EXPECT_EQ(Sampler::best_logits_needed(p), 40);
    p.top_k = kMaxBestLogits;
    EXPECT_EQ(Sampler::best_logits_needed(p), kMaxBestLogits);
    p.top_k = kMaxBestLogits + 1;
    EXPECT_EQ(Sampler::best_logits_needed(p), 0);
    p.top_k = 0;
    EXPECT_EQ(Sampler::best_logits_needed(p), 0);
    p = default_sampling();
    p.repeat_penalty = 1.1;
    EXPECT_EQ(Sampler::best_logits_needed(p), 0);
    p.temperature = 0.0;  // greedy with a penalty: a penalized token can fall below any other
    EXPECT_EQ(Sampler::best_logits_needed(p), 0);
}

// The same seed draws the same tokens, draw after draw, from the best logits as from the row:
// every filter (top-k, top-p, min-p, temperature), ties, and rows with fewer finite logits than k.
TEST(BestLogits, SamplerDrawsFromTheBestAsFromTheWholeRow) {
    std::vector<SamplerParams> settings;
    for (double temperature : {0.0, 0.3, 1.0, 2.5})
        for (int top_k : {1, 5, 40, 256})
            for (double top_p : {1.0, 0.9, 0.5})
                for (double min_p : {0.0, 0.05}) {
                    SamplerParams p;
                    p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
                    p.seed = settings.size();
                    settings.push_back(p);
                }
    std::vector<std::vector<float>> rows = {random_row(1000, 5), tie_heavy_row(300, 6), random_row(3, 7)};
    std::vector<float> mostly_masked(500, -kInf);  // 3 finite logits: top-k keeps every one of them
    mostly_masked[17] = 1.0f, mostly_masked[400] = 1.0f, mostly_masked[3] = 0.5f;
    rows.push_back(mostly_masked);
    for (const SamplerParams& p : settings) {
        SCOPED_TRACE("temperature " + std::to_string(p.temperature) + ", top-k " + std::to_string(p.top_k) +
                     ", top-p " + std::to_string(p.top_p) + ", min-p " + std::to_string(p.min_p));
        Sampler from_row(p), from_best(p);
        const int count = Sampler::best_logits_needed(p);
        ASSERT_GT(count, 0);
        for (int draw = 0; draw < 20; ++draw)
            for (const std::vector<float>& row : rows) {
                const int32_t expected = from_row.sample(row, {}, nullptr, 0);
                // more than it needs on odd draws, as a batch's step gives it the most any sequence needs
                const int given = draw % 2 ? kMaxBestLogits : count;
                ASSERT_EQ(from_best.sample(select_best_logits(row, given)), expected) << "draw " << draw;
            }
        EXPECT_EQ(from_row.rng(), from_best.rng());
    }
}

TEST(BestLogits, SamplerRefusesBadRowsAsFromTheWholeRow) {
    SamplerParams p = default_sampling();
    Sampler sampler(p);
    const auto message = [&](const std::vector<float>& row, bool best) {
        try {
            if (best) sampler.sample(select_best_logits(row, 40));
            else sampler.sample(row, {}, nullptr, 0);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    for (const std::vector<float>& row : {std::vector<float>{1.0f, std::nanf(""), kInf},
                                          std::vector<float>{1.0f, 2.0f, kInf}, std::vector<float>(4, -kInf)}) {
        const std::string expected = message(row, false);
        EXPECT_NE(expected, "no error");
        EXPECT_EQ(message(row, true), expected);
    }
    BestLogits too_few = select_best_logits(random_row(100, 1), 5);
    EXPECT_THROW(sampler.sample(too_few), Error);  // top-k 40 needs 40
    p.repeat_penalty = 1.2;
    Sampler penalized(p);
    EXPECT_THROW(penalized.sample(select_best_logits(random_row(100, 1), 40)), Error);
}

// A backend's LastBest rows are the selection of the rows it returns for Last; batches ask for
// them all together or not at all.
TEST(BestLogits, BackendsSelectTheBestOfTheirOwnLastRows) {
    auto model = test::small_model(Family::Fla, 3);
    const int V = model->config.vocab_size;
    for (const std::string device : {"cpu", "reference"}) {
        SCOPED_TRACE(device);
        auto backend = make_backend(device, model);
        const std::vector<int32_t> prompt = test::random_tokens(5, V, 3);
        const SequenceRequest last{prompt, 0, LogitRows::Last};
        const Tensor row = backend->forward_batch({&last, 1}, ForwardOptions{}).front();
        backend->reset();
        BestLogits best;
        const SequenceRequest asked{prompt, 0, LogitRows::LastBest, 7, &best};
        const Tensor none = backend->forward_batch({&asked, 1}, ForwardOptions{}).front();
        EXPECT_EQ(none.dim(0), 0);
        EXPECT_EQ(none.dim(1), V);
        const BestLogits expected = select_best_logits(row.data, 7);
        EXPECT_EQ(best.ids, expected.ids);
        EXPECT_EQ(best.logits, expected.logits);
        EXPECT_EQ(best.vocab_size, V);
        EXPECT_EQ(backend->snapshot().position, 5);  // the forward ran

        SequenceRequest bad = asked;
        bad.best_count = 0;
        EXPECT_THROW(backend->forward_batch({&bad, 1}, ForwardOptions{}), Error);
        bad.best_count = kMaxBestLogits + 1;
        EXPECT_THROW(backend->forward_batch({&bad, 1}, ForwardOptions{}), Error);
        bad = asked;
        bad.best = nullptr;
        EXPECT_THROW(backend->forward_batch({&bad, 1}, ForwardOptions{}), Error);
    }
    {  // the app's tap asks its inner backend for every row: the request is checked before that runs
        auto inner = make_cpu_backend(model);
        TapBackend tap(*inner, nullptr);
        const std::vector<int32_t> prompt = test::random_tokens(4, V, 4);
        BestLogits best;
        SequenceRequest asked{prompt, 0, LogitRows::LastBest, 5, nullptr};
        EXPECT_THROW(tap.forward_batch({&asked, 1}, ForwardOptions{}, nullptr), Error);
        EXPECT_EQ(inner->snapshot().position, 0);
        asked.best = &best;
        EXPECT_EQ(tap.forward_batch({&asked, 1}, ForwardOptions{}, nullptr).front().dim(0), 0);
        inner->reset();
        const SequenceRequest last{prompt, 0, LogitRows::Last};
        EXPECT_EQ(best.ids, select_best_logits(inner->forward_batch({&last, 1}, ForwardOptions{}).front().data, 5).ids);
    }
    auto backend = make_cpu_backend(model);
    backend->set_slot_count(2);
    ForwardOptions recurrent;
    recurrent.form = Form::Recurrent;
    const std::vector<int32_t> a = {1}, b = {2};
    BestLogits best_a, best_b;
    const SequenceRequest mixed[] = {{a, 0, LogitRows::LastBest, 3, &best_a}, {b, 1, LogitRows::Last}};
    EXPECT_THROW(backend->forward_batch(mixed, recurrent), Error);
    const SequenceRequest counts[] = {{a, 0, LogitRows::LastBest, 3, &best_a}, {b, 1, LogitRows::LastBest, 4, &best_b}};
    EXPECT_THROW(backend->forward_batch(counts, recurrent), Error);
    EXPECT_EQ(backend->snapshot(0).position, 0);  // refused before anything ran
}

}  // namespace
}  // namespace retnet
