// SPDX-License-Identifier: GPL-3.0-or-later
// Sampler: the PRNG's reference values, each filter's effect on the drawn distribution
// (chi-square goodness of fit with fixed seeds, so the tests are deterministic), and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <algorithm>
#include <map>
#include <random>

#include "retnet/error.h"
#include "retnet/sampler.h"

namespace retnet {
namespace {

std::vector<float> logits_from_probs(const std::vector<double>& probs) {
    std::vector<float> logits;
    for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
    return logits;
}

std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) ++counts[static_cast<size_t>(sampler.sample(logits, {}))];
    return counts;
}

// Pearson's chi-square of observed counts against expected probabilities; tokens with
// probability 0 must never be drawn.
double chi_square(const std::vector<int>& counts, const std::vector<double>& expected, int draws) {
    double chi2 = 0.0;
    for (size_t i = 0; i < counts.size(); ++i) {
        if (expected[i] == 0.0) {
            EXPECT_EQ(counts[i], 0) << "token " << i << " should have been filtered out";
            continue;
        }
        const double e = expected[i] * draws;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi2;
}

// Critical values of chi-square at p = 0.001 by degrees of freedom: a correct sampler passes with
// probability 0.999 per test, and the fixed seeds make the outcome fixed.
double critical_001(int dof) {
    const double table[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46};
    return table[dof];
}

std::vector<double> normalized(std::vector<double> v) {
    double sum = 0;
    for (double x : v) sum += x;
    for (double& x : v) x /= sum;
    return v;
}

const std::vector<double> kProbs = {0.40, 0.25, 0.15, 0.10, 0.06, 0.04};
constexpr int kDraws = 40000;

TEST(Rng, MatchesReferenceXoshiro256StarStar) {
    // Values from an independent implementation of splitmix64 seeding + xoshiro256**.
    Rng zero(0);
    EXPECT_EQ(zero.next(), 0x99ec5f36cb75f2b4ull);
    EXPECT_EQ(zero.next(), 0xbf6e1f784956452aull);
    EXPECT_EQ(zero.next(), 0x1a5f849d4933e6e0ull);
    Rng answer(42);
    EXPECT_EQ(answer.next(), 0x15780b2e0c2ec716ull);
    EXPECT_EQ(answer.next(), 0x6104d9866d113a7eull);
}

TEST(Rng, UniformIsInUnitIntervalWithMeanOneHalf) {
    Rng rng(7);
    double sum = 0;
    for (int i = 0; i < 100000; ++i) {
        const double u = rng.uniform();
        ASSERT_GE(u, 0.0);
        ASSERT_LT(u, 1.0);
        sum += u;
    }
    // Standard error of the mean is sqrt(1/12/1e5) ≈ 0.0009; 5 sigma.
    EXPECT_NEAR(sum / 100000, 0.5, 0.0046);
}

TEST(Sampler, LogProbabilityIsTheLogSoftmax) {
    const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 80.0f, 79.0f};  // large values: no overflow
    double sum = 0;
    for (float z : logits) sum += std::exp(double(z) - 80.0);
    for (int32_t id = 0; id < 5; ++id)
        EXPECT_NEAR(log_probability(logits, id), double(logits[size_t(id)]) - 80.0 - std::log(sum), 1e-12) << id;
    EXPECT_THROW(log_probability(logits, 5), Error);
    EXPECT_THROW(log_probability(logits, -1), Error);
    const std::vector<float> bad = {1.0f, std::nanf("")};
    EXPECT_THROW(log_probability(bad, 0), Error);
}

TEST(Sampler, PlainSamplingFollowsTheSoftmax) {
    Sampler sampler({.temperature = 1.0, .seed = 1});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, kProbs, kDraws), critical_001(5));
}

TEST(Sampler, TemperatureSharpensAsPowerOfProbabilities) {
    // softmax(log p / T) ∝ p^(1/T); T = 0.5 squares the probabilities.
    Sampler sampler({.temperature = 0.5, .seed = 2});
    std::vector<double> expected;
    for (double p : kProbs) expected.push_back(p * p);
    expected = normalized(expected);
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, expected, kDraws), critical_001(5));
}

TEST(Sampler, TopKKeepsTheKBestRenormalized) {
    Sampler sampler({.top_k = 3, .seed = 3});
    const auto expected = normalized({0.40, 0.25, 0.15, 0, 0, 0});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, expected, kDraws), critical_001(2));
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
    // Cumulative: 0.40, 0.65, 0.80, 0.90 -> p = 0.7 keeps three tokens.
    Sampler sampler({.top_p = 0.7, .seed = 4});
    const auto expected = normalized({0.40, 0.25, 0.15, 0, 0, 0});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, expected, kDraws), critical_001(2));
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
    // threshold = 0.3 * 0.40 = 0.12 -> keeps 0.40, 0.25, 0.15.
    Sampler sampler({.min_p = 0.3, .seed = 5});
    const auto expected = normalized({0.40, 0.25, 0.15, 0, 0, 0});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, expected, kDraws), critical_001(2));
}

TEST(Sampler, FiltersCompose) {
    // T = 0.5 squares: .16 .0625 .0225 .01 .0036 .0016. top-k 4 keeps .16 .0625 .0225 .01,
    // renormalized .6275 .2451 .0882 .0392 (cumulative .6275, .8725): top-p 0.85 keeps two.
    Sampler sampler({.temperature = 0.5, .top_k = 4, .top_p = 0.85, .seed = 6});
    const auto expected = normalized({0.16, 0.0625, 0, 0, 0, 0});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    EXPECT_LT(chi_square(counts, expected, kDraws), critical_001(1));
}

TEST(Sampler, ADistributionWrongByTwoPercentFailsTheTest) {
    // Guards the statistical tests themselves: with 40000 draws, moving 2% of mass from the first
    // token to the last is detected.
    Sampler sampler({.seed = 1});
    const auto counts = histogram(sampler, logits_from_probs(kProbs), kDraws);
    std::vector<double> wrong = kProbs;
    wrong[0] -= 0.02;
    wrong[5] += 0.02;
    EXPECT_GT(chi_square(counts, wrong, kDraws), critical_001(5));
}

TEST(Sampler, GreedyTakesTheArgmaxAndBreaksTiesByLowestId) {
    Sampler sampler({.temperature = 0.0});
    EXPECT_EQ(sampler.sample(std::vector<float>{0.1f, 3.0f, -2.0f, 3.0f}, {}), 1);
    SampleDetails details;
    EXPECT_EQ(sampler.sample(std::vector<float>{0.0f, 1.0f, 5.0f}, {}, &details), 2);
    ASSERT_EQ(details.top_filtered.size(), 1u);
    EXPECT_EQ(details.top_filtered[0].id, 2);
    EXPECT_DOUBLE_EQ(details.top_filtered[0].prob, 1.0);
    // Greedy never touches the random stream.
    EXPECT_EQ(sampler.rng(), Rng(0));
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
    Sampler sampler({.temperature = 0.0, .repeat_penalty = 2.0});
    const std::vector<float> logits = {2.0f, 1.9f, -1.0f, -1.1f};
    const std::vector<int32_t> used_first = {0};
    EXPECT_EQ(sampler.sample(logits, used_first), 1);  // 2.0 / 2 = 1.0 < 1.9
    const std::vector<float> negative = {-5.0f, -5.0f, -1.0f, -1.1f};
    const std::vector<int32_t> used_third = {2};
    EXPECT_EQ(sampler.sample(negative, used_third), 3);  // -1.0 * 2 = -2.0 < -1.1
    // The window only looks at the last repeat_last_n tokens.
    Sampler windowed({.temperature = 0.0, .repeat_penalty = 2.0, .repeat_last_n = 1});
    const std::vector<int32_t> old_use = {0, 3};
    EXPECT_EQ(windowed.sample(logits, old_use), 0);
}

TEST(Sampler, DetailsListRawAndFilteredDistributions) {
    Sampler sampler({.top_k = 2, .seed = 9});
    SampleDetails details;
    const auto logits = logits_from_probs(kProbs);
    const int32_t id = sampler.sample(logits, {}, &details, 4);
    ASSERT_EQ(details.top.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(details.top[i].id, static_cast<int32_t>(i));
        EXPECT_NEAR(details.top[i].prob, kProbs[i], 1e-6);  // float logits: ~1e-7 relative
        EXPECT_EQ(details.top[i].logit, logits[i]);
    }
    ASSERT_EQ(details.top_filtered.size(), 2u);
    EXPECT_EQ(details.candidates_kept, 2);
    EXPECT_NEAR(details.top_filtered[0].prob, 0.40 / 0.65, 1e-6);
    EXPECT_NEAR(details.top_filtered[1].prob, 0.25 / 0.65, 1e-6);
    EXPECT_TRUE(id == 0 || id == 1);
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDifferentSequence) {
    std::vector<float> logits(500);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(std::sin(i * 0.37) * 3);
    auto run = [&](uint64_t seed) {
        Sampler sampler({.temperature = 0.9, .top_p = 0.95, .min_p = 0.01, .seed = seed});
        std::vector<int32_t> out;
        for (int i = 0; i < 300; ++i) out.push_back(sampler.sample(logits, out));
        return out;
    };
    EXPECT_EQ(run(1234), run(1234));
    EXPECT_NE(run(1234), run(1235));
}

TEST(Sampler, MaskedTokensAreNeverDrawnAndNanIsAnError) {
    const float inf = std::numeric_limits<float>::infinity();
    Sampler sampler({.temperature = 5.0, .seed = 11});
    const std::vector<float> logits = {-inf, 0.0f, -inf, 0.0f};
    for (int i = 0; i < 1000; ++i) {
        const int32_t id = sampler.sample(logits, {});
        ASSERT_TRUE(id == 1 || id == 3);
    }
    const std::vector<float> nan_logits = {0.0f, std::nanf(""), 1.0f};
    EXPECT_THROW(sampler.sample(nan_logits, {}), Error);
    const std::vector<float> all_masked = {-inf, -inf};
    EXPECT_THROW(sampler.sample(all_masked, {}), Error);
    Sampler greedy({.temperature = 0.0});
    EXPECT_THROW(greedy.sample(all_masked, {}), Error);  // not token 0
    // A penalty so large that it overflows the only finite logit masks it as well.
    Sampler penalized({.temperature = 0.0, .repeat_penalty = 1e300});
    const std::vector<int32_t> history = {1};
    EXPECT_THROW(penalized.sample(std::vector<float>{-inf, -1e30f}, history), Error);
}

TEST(Sampler, InvalidParamsAreRejectedWithTheFieldName) {
    auto message = [](SamplerParams params) {
        try {
            Sampler sampler(params);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_EQ(message({.top_p = 1.5}).rfind("top-p must be in (0, 1]", 0), 0u);
    EXPECT_EQ(message({.top_p = 0.0}).rfind("top-p must be in (0, 1]", 0), 0u);
    EXPECT_EQ(message({.top_k = -1}).rfind("top-k must be >= 0", 0), 0u);
    EXPECT_EQ(message({.min_p = -0.1}).rfind("min-p must be in [0, 1]", 0), 0u);
    EXPECT_EQ(message({.repeat_penalty = 0.0}).rfind("repeat penalty must be > 0", 0), 0u);
    EXPECT_EQ(message({.temperature = std::nan("")}), "temperature must be a finite number");
    EXPECT_EQ(message({.temperature = 0.7, .top_k = 40, .top_p = 0.9, .min_p = 0.05}), "no error");
    EXPECT_EQ(message({.temperature = 1e-101}), "temperature must be 0 (greedy) or at least 1e-100, got 1e-101");
    EXPECT_EQ(message({.temperature = 1e-100}), "no error");
}

TEST(Sampler, AnExtremeTemperatureGivesAnEvenOrAGreedyDraw) {
    // 1e300: every scaled logit underflows towards 0, so the kept tokens are equally likely (no NaN).
    Sampler flat({.temperature = 1e300, .top_k = 3, .seed = 4});
    const std::vector<float> logits = {3.0f, -1.0f, 0.5f, 9.0f, -20.0f};
    std::map<int32_t, int> seen;
    for (int i = 0; i < 300; ++i) ++seen[flat.sample(logits, {})];
    ASSERT_EQ(seen.size(), 3u);  // the three best: 3, 0 and 2
    EXPECT_TRUE(seen.count(3) && seen.count(0) && seen.count(2));
    Sampler sharp({.temperature = 1e-100, .seed = 4});
    for (int i = 0; i < 50; ++i) ASSERT_EQ(sharp.sample(logits, {}), 3);
}

// The naive twin of Sampler::sample: every candidate sorted, best first, by (scaled logit, id),
// then the filters of sampler.h in order. Sums run in the order the sampler documents: over the
// ranked list once top-k or top-p has ranked it, over ids otherwise.
int32_t naive_sample(const SamplerParams& p, const std::vector<float>& logits, const std::vector<int32_t>& history,
                     Rng& rng) {
    const auto V = static_cast<int32_t>(logits.size());
    std::vector<double> value(logits.begin(), logits.end());
    if (p.repeat_penalty != 1.0) {
        const size_t window = p.repeat_last_n < 0 ? history.size()
                                                  : std::min(history.size(), static_cast<size_t>(p.repeat_last_n));
        std::vector<bool> penalized(logits.size(), false);
        for (size_t i = history.size() - window; i < history.size(); ++i) {
            const int32_t id = history[i];
            if (id < 0 || id >= V || penalized[static_cast<size_t>(id)]) continue;
            penalized[static_cast<size_t>(id)] = true;
            double& v = value[static_cast<size_t>(id)];
            v = v > 0.0 ? v / p.repeat_penalty : v * p.repeat_penalty;
        }
    }
    std::vector<int32_t> kept;
    for (int32_t i = 0; i < V; ++i)
        if (value[static_cast<size_t>(i)] > -HUGE_VAL) kept.push_back(i);
    for (int32_t id : kept) value[static_cast<size_t>(id)] /= p.temperature;
    std::vector<int32_t> ranked = kept;
    std::sort(ranked.begin(), ranked.end(), [&](int32_t a, int32_t b) {
        const double va = value[static_cast<size_t>(a)], vb = value[static_cast<size_t>(b)];
        return va != vb ? va > vb : a < b;
    });
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < kept.size()) {
        ranked.resize(static_cast<size_t>(p.top_k));
        kept = ranked;
    }
    double max_value = -HUGE_VAL, sum = 0.0;
    for (int32_t id : kept) max_value = std::max(max_value, value[static_cast<size_t>(id)]);
    std::vector<double> prob(logits.size(), 0.0);
    for (int32_t id : kept) sum += prob[static_cast<size_t>(id)] = std::exp(value[static_cast<size_t>(id)] - max_value);
    for (int32_t id : kept) prob[static_cast<size_t>(id)] /= sum;
    if (p.top_p < 1.0) {
        double cumulative = 0.0;
        size_t n = 0;
        while (n < ranked.size() && cumulative < p.top_p) cumulative += prob[static_cast<size_t>(ranked[n++])];
        kept.assign(ranked.begin(), ranked.begin() + static_cast<ptrdiff_t>(n));
    }
    if (p.min_p > 0.0) {
        double max_prob = 0.0;
        for (int32_t id : kept) max_prob = std::max(max_prob, prob[static_cast<size_t>(id)]);
        std::erase_if(kept, [&](int32_t id) { return prob[static_cast<size_t>(id)] < p.min_p * max_prob; });
    }
    double total = 0.0;
    for (int32_t id : kept) total += prob[static_cast<size_t>(id)];
    const double target = rng.uniform() * total;
    double cumulative = 0.0;
    for (int32_t id : kept)
        if (target < (cumulative += prob[static_cast<size_t>(id)])) return id;
    return kept.back();
}

TEST(Sampler, DrawsWhatTheNaiveTwinDraws) {
    // The sampler selects top-k with a heap and top-p above a falling threshold instead of sorting
    // the vocabulary; the draws must be the twin's, token for token. Logits on a grid of 0.5 make
    // ties at every cut, and some tokens are masked.
    std::mt19937 gen(7);
    const int sizes[] = {1, 2, 7, 50, 1000, 32000};
    const int top_ks[] = {0, 1, 3, 40, 999, 40000};
    const double top_ps[] = {1.0, 0.5, 0.95}, min_ps[] = {0.0, 0.05}, temperatures[] = {0.3, 0.8, 2.5};
    int compared = 0, expected = 0;
    for (int config = 0; config < 240; ++config) {
        const int V = sizes[config % 6];
        SamplerParams p;
        p.temperature = temperatures[gen() % 3];
        p.top_k = top_ks[gen() % 6];
        p.top_p = top_ps[gen() % 3];
        p.min_p = min_ps[gen() % 2];
        p.repeat_penalty = gen() % 2 ? 1.0 : 1.3;
        p.seed = gen();
        std::vector<float> logits(static_cast<size_t>(V));
        for (float& x : logits) x = gen() % 11 == 0 ? -HUGE_VALF : 0.5f * static_cast<float>(gen() % 24) - 6.0f;
        logits[gen() % logits.size()] = 1.0f;  // never every token masked
        Sampler sampler(p);
        Rng twin_rng(p.seed);
        std::vector<int32_t> history, twin_history;
        const int draws = V > 5000 ? 3 : 12;  // the twin sorts the whole vocabulary every draw
        expected += draws;
        for (int draw = 0; draw < draws; ++draw) {
            const int32_t id = sampler.sample(logits, history);
            const int32_t twin = naive_sample(p, logits, twin_history, twin_rng);
            ASSERT_EQ(id, twin) << "V " << V << " T " << p.temperature << " top-k " << p.top_k << " top-p "
                                << p.top_p << " min-p " << p.min_p << " draw " << draw;
            ASSERT_GT(logits[static_cast<size_t>(id)], -HUGE_VALF);
            history.push_back(id);
            twin_history.push_back(twin);
            ++compared;
        }
    }
    EXPECT_EQ(compared, expected);
}

}  // namespace
}  // namespace retnet
