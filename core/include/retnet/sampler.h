// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Next-token sampling: greedy, temperature, top-k, top-p, min-p and repetition penalty, drawn
// with our own xoshiro256** generator so that one seed gives one output on every platform
// (std:: distributions are implementation-defined). All arithmetic is in double.
//
// Pipeline: logits -> repetition penalty -> (greedy: argmax) -> / temperature -> top-k ->
// softmax -> top-p -> min-p -> renormalize -> draw. Candidates are ordered by probability, then
// by id, so ties never depend on sort stability (top-k ranks the penalized logits before the
// temperature divides them: the same order). The draw walks the candidates best first once top-k
// or top-p has ranked them, by id otherwise, so it is the same with every standard library.
// Neither filter sorts the vocabulary: ~60 us a token for the defaults over 32k logits.
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "retnet/best_logits.h"

namespace retnet {

// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
class Rng {
public:
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed);
    uint64_t next();
    double uniform();  // [0, 1), 53 random bits
    bool operator==(const Rng&) const = default;

private:
    uint64_t s_[4] = {};
};

struct SamplerParams {
    // Below this a float logit divided by the temperature could overflow a double; the distribution
    // there is the greedy choice in all but ties anyway.
    static constexpr double kMinTemperature = 1e-100;

    double temperature = 1.0;     // <= 0 means greedy; else >= kMinTemperature
    int top_k = 0;                // 0 = off
    double top_p = 1.0;           // 1 = off; in (0, 1]
    double min_p = 0.0;           // 0 = off; in [0, 1]
    double repeat_penalty = 1.0;  // 1 = off; > 0. Divides positive logits, multiplies negative ones
    int repeat_last_n = 64;       // how many recent tokens the penalty looks at; -1 = all
    uint64_t seed = 0;

    bool greedy() const { return temperature <= 0.0; }
    // Throws retnet::Error naming the first bad field ("top-p must be in (0, 1], got 1.5").
    void validate() const;
    bool operator==(const SamplerParams&) const = default;
};

// The sampling settings the CLI (`retnet generate`) and the app start with, so the same prompt,
// seed and settings give the same text in both: temperature 0.8, top-k 40, top-p 0.95,
// min-p 0.05, no repetition penalty, seed 0. SamplerParams{} itself is plain sampling (all off).
SamplerParams default_sampling();

struct TokenProb {
    int32_t id = 0;
    double prob = 0.0;
    float logit = 0.0f;  // raw model logit
};

struct SampleDetails {
    std::vector<TokenProb> top;           // softmax of the raw logits, best first
    std::vector<TokenProb> top_filtered;  // the distribution actually drawn from, best first
    int candidates_kept = 0;              // tokens left after every filter
};

class Sampler {
public:
    explicit Sampler(SamplerParams params = {});
    const SamplerParams& params() const { return params_; }

    // Picks the next token from `logits` (V). `history` holds the sequence so far (for the
    // repetition penalty). When `details` is given, fills its lists with up to `n_top` entries.
    int32_t sample(std::span<const float> logits, std::span<const int32_t> history,
                   SampleDetails* details = nullptr, int n_top = 10);

    // How many best logits (retnet/best_logits.h) sampling with `params` needs instead of the whole
    // row: 1 when greedy, top-k when on (up to kMaxBestLogits); 0 when it needs the row (no top-k,
    // or a repetition penalty, which can lift a token from anywhere).
    static int best_logits_needed(const SamplerParams& params);
    // The same draw as sample() from the whole row with an empty history, from the row's best
    // logits alone (at least best_logits_needed of them); no details.
    int32_t sample(const BestLogits& best);

    // The generator's position, so a forked or continued generation can resume it.
    const Rng& rng() const { return rng_; }
    void set_rng(const Rng& rng) { rng_ = rng; }

private:
    int32_t draw(std::span<const float> logits, SampleDetails* details, int n_top);

    SamplerParams params_;
    Rng rng_;
    std::vector<double> work_logits_;  // (V)
    std::vector<int32_t> order_;       // (V) candidate ids
    std::vector<std::pair<double, int32_t>> nucleus_;  // top-p's (probability, id) candidates
};

// Softmax of raw logits, top `n` by probability (ties by lower id). Used for forced tokens too.
std::vector<TokenProb> top_probabilities(std::span<const float> logits, int n);
// log softmax(logits)[id], in double: a token's log-probability (loss = −this).
double log_probability(std::span<const float> logits, int32_t id);

}  // namespace retnet
