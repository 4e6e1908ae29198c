// SPDX-License-Identifier: GPL-3.0-or-later
// The sampling pipeline of sampler.h. One RNG draw per sampled token (none when greedy), so a
// seed fixes the whole sequence of draws whatever the filters keep.
#include "retnet/sampler.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "gen/select_best.h"
#include "retnet/error.h"

namespace retnet {
namespace {

uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// 1e-101, not to_string's 0.000000.
std::string shortest(double x) {
    char text[32];
    const auto end = std::to_chars(text, text + sizeof text, x).ptr;
    return std::string(text, end);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// As the model's fault, in the words of every sampling path.
[[noreturn]] void refuse_non_finite(float logit, int64_t id) {
    throw Error("sampler: the model produced a non-finite logit (" + std::to_string(logit) + ") for token " +
                std::to_string(id));
}

// Throws on a NaN or +inf logit; returns how many are -inf (masked tokens).
size_t check_logits(std::span<const float> logits) {
    if (logits.empty()) throw Error("sampler: no logits (empty vocabulary)");
    const LogitScan scan = scan_logits(logits);
    if (scan.first_non_finite >= 0) refuse_non_finite(logits[static_cast<size_t>(scan.first_non_finite)], scan.first_non_finite);
    return static_cast<size_t>(scan.masked);
}

// Higher value first, then lower id: a total order, so results never depend on sort stability.
struct ByValueThenId {
    const double* values;
    bool operator()(int32_t a, int32_t b) const {
        if (values[a] != values[b]) return values[a] > values[b];
        return a < b;
    }
};

// The `count` best ids of values[0..n) by higher value, then lower id, best first, in `out`.
template <typename Value>
void select_best(const Value* values, int32_t n, size_t count, std::vector<int32_t>& out) {
    gen::select_best(n, count, [values](int32_t id) { return values[id]; }, out);
}

}  // namespace

void Rng::reseed(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t& word : s_) word = splitmix64(x);
}

uint64_t Rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

SamplerParams default_sampling() {
    SamplerParams p;
    p.temperature = 0.8;
    p.top_k = 40;
    p.top_p = 0.95;
    p.min_p = 0.05;
    p.repeat_penalty = 1.0;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

void SamplerParams::validate() const {
    if (!std::isfinite(temperature)) throw Error("temperature must be a finite number");
    if (temperature > 0.0 && temperature < kMinTemperature)
        throw Error("temperature must be 0 (greedy) or at least " + shortest(kMinTemperature) + ", got " +
                    shortest(temperature));
    if (top_k < 0) throw Error("top-k must be >= 0 (0 = off), got " + std::to_string(top_k));
    if (!(top_p > 0.0 && top_p <= 1.0)) throw Error("top-p must be in (0, 1], got " + std::to_string(top_p));
    if (!(min_p >= 0.0 && min_p <= 1.0)) throw Error("min-p must be in [0, 1], got " + std::to_string(min_p));
    if (!(repeat_penalty > 0.0) || !std::isfinite(repeat_penalty))
        throw Error("repeat penalty must be > 0 (1 = off), got " + std::to_string(repeat_penalty));
    if (repeat_last_n < -1) throw Error("repeat-last-n must be >= -1 (-1 = whole sequence)");
}

double log_probability(std::span<const float> logits, int32_t id) {
    check_logits(logits);
    if (id < 0 || static_cast<size_t>(id) >= logits.size())
        throw Error("token " + std::to_string(id) + " is outside the logits [0, " + std::to_string(logits.size()) + ")");
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - max_logit);
    return static_cast<double>(logits[static_cast<size_t>(id)]) - max_logit - std::log(sum);
}

std::vector<TokenProb> top_probabilities(std::span<const float> logits, int n) {
    check_logits(logits);
    const auto V = static_cast<int32_t>(logits.size());
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - max_logit);

    const auto count = static_cast<size_t>(std::clamp(n, 0, V));
    std::vector<int32_t> best;
    select_best(logits.data(), V, count, best);
    std::vector<TokenProb> out;
    out.reserve(count);
    for (int32_t id : best) {
        const float logit = logits[static_cast<size_t>(id)];
        out.push_back({id, std::exp(static_cast<double>(logit) - max_logit) / sum, logit});
    }
    return out;
}

Sampler::Sampler(SamplerParams params) : params_(params), rng_(params.seed) { params_.validate(); }

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history,
                        SampleDetails* details, int n_top) {
    size_t masked = check_logits(logits);
    const auto V = static_cast<int32_t>(logits.size());
    work_logits_.assign(logits.begin(), logits.end());

    if (params_.repeat_penalty != 1.0) {
        const size_t window = params_.repeat_last_n < 0
                                  ? history.size()
                                  : std::min(history.size(), static_cast<size_t>(params_.repeat_last_n));
        std::unordered_set<int32_t> seen(history.end() - static_cast<ptrdiff_t>(window), history.end());
        for (int32_t id : seen) {
            if (id < 0 || id >= V) continue;
            double& logit = work_logits_[static_cast<size_t>(id)];
            const bool was_masked = logit == -HUGE_VAL;
            logit = logit > 0.0 ? logit / params_.repeat_penalty : logit * params_.repeat_penalty;
            masked += !was_masked && logit == -HUGE_VAL;  // a huge penalty can overflow a logit
        }
    }
    const size_t finite_count = logits.size() - masked;
    if (finite_count == 0) throw Error("sampler: every token is masked (all logits are -inf)");
    if (details) {
        details->top = top_probabilities(logits, n_top);
        details->top_filtered.clear();
    }

    if (params_.greedy()) {
        int32_t best = 0;
        for (int32_t i = 1; i < V; ++i)
            if (work_logits_[static_cast<size_t>(i)] > work_logits_[static_cast<size_t>(best)]) best = i;
        if (details) {
            details->top_filtered = {{best, 1.0, logits[static_cast<size_t>(best)]}};
            details->candidates_kept = 1;
        }
        return best;
    }

    // Candidates: every token with a finite logit (a -inf logit is a hard mask). With top-k only
    // the k best are kept, chosen on the penalized logits before the temperature scales them (the
    // same order: dividing by a positive number keeps it), by a heap over the vocabulary instead
    // of partitioning 32k ids (~0.3 ms a token, a quarter of a GPU decoding step).
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < finite_count) {
        // Fewer than the finite candidates are kept, so the masked ones never are.
        select_best(work_logits_.data(), V, static_cast<size_t>(params_.top_k), order_);
        for (int32_t id : order_) work_logits_[static_cast<size_t>(id)] /= params_.temperature;
    } else {
        order_.clear();
        for (int32_t i = 0; i < V; ++i) {
            double& value = work_logits_[static_cast<size_t>(i)];
            if (value > -HUGE_VAL) {
                value /= params_.temperature;
                order_.push_back(i);
            }
        }
    }
    return draw(logits, details, n_top);
}

int Sampler::best_logits_needed(const SamplerParams& params) {
    if (params.repeat_penalty != 1.0) return 0;  // penalized tokens can rise from anywhere in the row
    if (params.greedy()) return 1;
    return params.top_k > 0 && params.top_k <= kMaxBestLogits ? params.top_k : 0;
}

int32_t Sampler::sample(const BestLogits& best) {
    const int needed = best_logits_needed(params_);
    if (needed == 0 || static_cast<int64_t>(best.ids.size()) < std::min<int64_t>(needed, best.vocab_size))
        throw Error("sampler: these settings need " +
                    (needed == 0 ? std::string("the whole logits row") : std::to_string(needed) + " best logits") +
                    ", given " + std::to_string(best.ids.size()) + " (internal error)");
    if (best.first_non_finite >= 0) refuse_non_finite(best.non_finite_value, best.first_non_finite);
    if (best.vocab_size < 1) throw Error("sampler: no logits (empty vocabulary)");
    const int64_t finite_count = best.vocab_size - best.masked;
    if (finite_count <= 0) throw Error("sampler: every token is masked (all logits are -inf)");
    if (params_.greedy()) return best.ids.front();  // the highest logit, the lowest id among equals

    // The candidates sample() would keep, with the same values: the top-k best first, or every
    // finite token by id (all of them are among the best when there are no more than k).
    if (work_logits_.size() < static_cast<size_t>(best.vocab_size)) work_logits_.resize(static_cast<size_t>(best.vocab_size));
    order_.clear();
    const auto keep = [this, &best](size_t i) {
        order_.push_back(best.ids[i]);
        work_logits_[static_cast<size_t>(best.ids[i])] = static_cast<double>(best.logits[i]) / params_.temperature;
    };
    if (params_.top_k < finite_count) {
        for (size_t i = 0; i < static_cast<size_t>(params_.top_k); ++i) keep(i);
    } else {
        for (size_t i = 0; i < best.ids.size(); ++i)
            if (best.logits[i] > -HUGE_VALF) keep(i);
        std::sort(order_.begin(), order_.end());
    }
    return draw({}, nullptr, 0);
}

// The candidates are order_, their logits ÷ temperature in work_logits_[id]: softmax, top-p, min-p,
// then the draw. `logits` (the raw row) only names the details' logits.
int32_t Sampler::draw(std::span<const float> logits, SampleDetails* details, int n_top) {
    const bool top_p_active = params_.top_p < 1.0;

    // Softmax over the candidates; probabilities overwrite the scaled logits in place.
    double max_value = -std::numeric_limits<double>::infinity();
    for (int32_t id : order_) max_value = std::max(max_value, work_logits_[static_cast<size_t>(id)]);
    double sum = 0.0;
    for (int32_t id : order_) {
        double& value = work_logits_[static_cast<size_t>(id)];
        value = std::exp(value - max_value);
        sum += value;
    }
    for (int32_t id : order_) work_logits_[static_cast<size_t>(id)] /= sum;

    if (top_p_active) {
        // The nucleus is the shortest best-first prefix whose mass reaches top-p. Once the tokens
        // of probability >= t hold that mass, the prefix lies among them: so only those are
        // sorted, t falling 16-fold a pass from the top probability (1/sum) until they do (a
        // partial sort of the whole vocabulary cost ~1 ms a token).
        double threshold = 1.0 / sum;
        for (;;) {
            // Past 1e-30 of the top token's probability only zeros and underflows are left: all then.
            threshold = threshold > 1e-30 / sum ? threshold / 16.0 : 0.0;
            nucleus_.clear();
            double mass = 0.0;
            for (int32_t id : order_) {
                const double prob = work_logits_[static_cast<size_t>(id)];
                if (prob >= threshold) {
                    nucleus_.push_back({prob, id});
                    mass += prob;
                }
            }
            const bool everything = nucleus_.size() == order_.size();
            if (mass < params_.top_p && !everything) continue;
            std::sort(nucleus_.begin(), nucleus_.end(), [](const auto& a, const auto& b) {
                return a.first != b.first ? a.first > b.first : a.second < b.second;
            });
            double cumulative = 0.0;
            size_t keep = 0;
            while (keep < nucleus_.size() && cumulative < params_.top_p) cumulative += nucleus_[keep++].first;
            // The sums in another order can differ in the last bit: then look further down.
            if (cumulative < params_.top_p && !everything) continue;
            order_.resize(keep);
            for (size_t i = 0; i < keep; ++i) order_[i] = nucleus_[i].second;
            break;
        }
    }
    if (params_.min_p > 0.0) {
        double max_prob = 0.0;
        for (int32_t id : order_) max_prob = std::max(max_prob, work_logits_[static_cast<size_t>(id)]);
        const double threshold = params_.min_p * max_prob;
        std::erase_if(order_, [&](int32_t id) { return work_logits_[static_cast<size_t>(id)] < threshold; });
    }

    double total = 0.0;
    for (int32_t id : order_) total += work_logits_[static_cast<size_t>(id)];
    const double target = rng_.uniform() * total;
    int32_t chosen = order_.back();
    double cumulative = 0.0;
    for (int32_t id : order_) {
        cumulative += work_logits_[static_cast<size_t>(id)];
        if (target < cumulative) {
            chosen = id;
            break;
        }
    }

    if (details) {
        details->candidates_kept = static_cast<int>(order_.size());
        const auto count = std::min(order_.size(), static_cast<size_t>(std::max(n_top, 0)));
        std::partial_sort(order_.begin(), order_.begin() + static_cast<ptrdiff_t>(count), order_.end(),
                          ByValueThenId{work_logits_.data()});
        for (size_t i = 0; i < count; ++i) {
            const int32_t id = order_[i];
            details->top_filtered.push_back(
                {id, work_logits_[static_cast<size_t>(id)] / total, logits[static_cast<size_t>(id)]});
        }
    }
    return chosen;
}

}  // namespace retnet
