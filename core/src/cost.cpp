// SPDX-License-Identifier: GPL-3.0-or-later
// RetNet against its Transformer twin at each context length × batch (retnet/cost.h).
#include "retnet/cost.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <new>
#include <random>

#include "retnet/decode_timing.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model.h"
#include "retnet/model_stats.h"

namespace retnet {
namespace {

constexpr int kUntimedSteps = 2;
constexpr int kWarmUpTokens = 64;

// Counts work units (a prefill or a decoding step) and reports them.
class Progress {
public:
    Progress(const CostProgress& callback, int64_t total) : callback_(callback), total_(std::max<int64_t>(total, 1)) {}
    void step(const std::string& what) {
        ++done_;
        if (cancelled(what)) throw Cancelled();
    }
    void skip(int64_t units) { done_ += units; }
    // Asks the callback with the fraction done so far (between the layers of a prefill).
    bool cancelled(const std::string& what) const {
        return callback_ && !callback_(static_cast<double>(done_) / static_cast<double>(total_), what);
    }

private:
    const CostProgress& callback_;
    int64_t total_, done_ = 0;
};

std::string point_name(const std::string& model, int length, int batch) {
    return model + " at " + std::to_string(length) + (length == 1 ? " token × " : " tokens × ") + std::to_string(batch);
}

// One short untimed prefill before a model's first measured point: its first call pays one-time costs
// (threads started, buffers, lazily loaded kernels) that would be counted in that point's prefill
// (a 64-token prefill took 283 ms as the first point on the CPU, 75–96 ms after it).
void warm_up(Backend& backend, std::mt19937_64& rng, const Progress& progress) {
    const std::vector<int32_t> prompt = random_tokens(kWarmUpTokens, backend.model().config.vocab_size, rng);
    prefill_and_fork(backend, prompt, 1, 0, [&progress] { return progress.cancelled("warm-up"); });
    backend.reset(0);
}

// The B sequences decoded together, one token each a step: the median step after untimed ones.
void measure_point(Backend& backend, CostPoint& point, const CostOptions& options, std::mt19937_64& rng,
                   Progress& progress) {
    const ModelConfig& c = backend.model().config;
    const std::string name = point_name(point.model, point.length, point.batch);
    const std::string prefill = "prefill of " + name;
    // the prefill is timed once: the Transformer's at 32k tokens would dominate repeated ones
    const std::vector<int32_t> prompt = random_tokens(point.length, c.vocab_size, rng);
    point.prefill_ms = prefill_and_fork(backend, prompt, point.batch, 0, [&] { return progress.cancelled(prefill); });
    progress.step(prefill);
    const DecodeTimes times = time_decode_steps(backend, point.batch, kUntimedSteps, options.decode_steps, 0, rng,
                                                [&] { progress.step("decoding " + name); });
    point.ms_per_step = median(times.wall_ms);
    point.tokens_per_s = tokens_per_second(point.batch, point.ms_per_step);
    point.state_bytes = point.batch * sequence_state_bytes(c, int64_t(point.length) + options.decode_steps + kUntimedSteps,
                                                           backend.kv_cache_element_bytes());  // it fit: no overflow
    point.device_bytes = backend.device_memory_in_use();  // while the batch's states are still held
}

void validate(const CostOptions& options) {
    if (options.lengths.empty() || options.batches.empty()) throw Error("cost: no lengths or no batch sizes to measure");
    for (int length : options.lengths)
        if (length < 1) throw Error("cost: a context length must be at least 1 token (got " + std::to_string(length) + ")");
    for (int batch : options.batches)
        if (batch < 1) throw Error("cost: a batch size must be at least 1 (got " + std::to_string(batch) + ")");
    if (options.decode_steps < 1) throw Error("cost: at least one decoding step must be timed");
}

// One model at every (length, batch). A point that does not fit is reported, and every point at
// least as long and as wide after it is reported as not fitting without being tried. `weights`: the
// host bytes both models' weights hold all along, which a point's states and buffers come beside.
// Every point asks for a cancel first, those not tried too (220,000 of them took minutes, and a
// Ctrl-C was noticed by none).
void measure_model(Backend& backend, const CostOptions& options, uint64_t weights, Progress& progress,
                   CostReport& report, const CostPointDone& point_done) {
    const ModelConfig& c = backend.model().config;
    const std::string model = c.is_transformer() ? "Transformer" : "RetNet";
    std::mt19937_64 rng(options.seed);
    bool warmed_up = false;
    std::vector<std::pair<int, int>> failed;  // (length, batch) that were tried and did not fit
    for (int length : options.lengths)
        for (int batch : options.batches) {
            if (progress.cancelled(point_name(model, length, batch))) throw Cancelled();
            CostPoint point;
            point.model = model, point.length = length, point.batch = batch;
            const int64_t units = 1 + options.decode_steps + kUntimedSteps;
            const auto larger = std::find_if(failed.begin(), failed.end(), [&](const auto& f) {
                return length >= f.first && batch >= f.second;
            });
            try {
                if (larger != failed.end())
                    throw OutOfMemory("not tried: " + std::to_string(larger->first) + " tokens × " +
                                      std::to_string(larger->second) + " did not fit");
                // In 64 bits, saturating: at the largest lengths and batches the product passes 2^63, and
                // a wrapped one could look small enough to run.
                const uint64_t state = host_state_peak_bytes(c, batch, int64_t(length) + options.decode_steps + kUntimedSteps,
                                                             backend.kv_cache_element_bytes());
                if (!backend.on_device()) {
                    const uint64_t prefill = prefill_host_bytes(c, length);
                    check_memory(state, "the state memory of " + point_name(model, length, batch));
                    check_memory(prefill, "the prefill of " + point_name(model, length, batch));
                    // the prefill's buffers stay with the backend while the states fill up
                    check_memory(saturating_sum({state, prefill}),
                                 "the state memory of " + point_name(model, length, batch) + " with its prefill's buffers");
                    check_memory(saturating_sum({state, prefill, weights}),
                                 "the state memory of " + point_name(model, length, batch) +
                                     " with its prefill's buffers, beside both models' weights");
                }
                if (!warmed_up) warm_up(backend, rng, progress);
                warmed_up = true;
                measure_point(backend, point, options, rng, progress);
            } catch (const OutOfMemory& e) {
                point.out_of_memory = true, point.note = e.what();
            } catch (const std::bad_alloc&) {
                point.out_of_memory = true, point.note = "out of host memory";
            }
            if (point.out_of_memory) {
                // one not tried is covered by the point that failed (the list stays as short as the failures)
                if (larger == failed.end()) failed.emplace_back(length, batch);
                progress.skip(units);
            }
            backend.set_slot_count(1);  // frees the batch's states before the next point
            backend.reset(0);
            report.points.push_back(std::move(point));
            if (point_done) point_done(report);
        }
}

}  // namespace

std::string size_mismatch(const Model& retnet, const Model& transformer) {
    const ModelConfig& c = retnet.config;
    const int64_t r = retnet.parameter_count(), t = transformer.parameter_count();
    const double rule_bound = static_cast<double>(int64_t(c.n_layers) * (12 * int64_t(c.d_model) + c.head_dim_v()) + c.d_model);
    const double allowed = std::max(kSameSizeTolerance, rule_bound / static_cast<double>(std::max<int64_t>(r, 1)));
    const double gap = static_cast<double>(t - r) / static_cast<double>(std::max<int64_t>(r, 1));
    if (std::abs(gap) <= allowed) return "";
    char line[256];
    std::snprintf(line, sizeof line,
                  "the Transformer has %lld parameters and the RetNet %lld (%+.1f %%), more than the %.1f %% two "
                  "models of the same size may differ by: this does not compare same-size models",
                  static_cast<long long>(t), static_cast<long long>(r), 100.0 * gap, 100.0 * allowed);
    return line;
}

int64_t sequence_state_bytes(const ModelConfig& config, int64_t tokens, int kv_element_bytes) {
    return config.is_transformer() ? kv_cache_bytes(config, tokens) / 4 * kv_element_bytes : recurrent_state_bytes(config);
}

uint64_t host_state_peak_bytes(const ModelConfig& config, int batch, int64_t tokens, int kv_element_bytes) {
    constexpr int64_t kBlock = 256;  // the CPU backend's KV block (cpu_backend.cpp, append_kv)
    // a cache restored at its length grows to at most an eighth more, rounded up to the block
    const int64_t held = config.is_transformer() ? (tokens + tokens / 8 + kBlock - 1) / kBlock * kBlock : tokens;
    const auto per_sequence = static_cast<uint64_t>(sequence_state_bytes(config, held, kv_element_bytes));
    return saturating_product({static_cast<uint64_t>(batch) + 1, per_sequence});
}

uint64_t prefill_host_bytes(const ModelConfig& c, int length) {
    const auto t = static_cast<uint64_t>(length);
    const uint64_t span = std::min<uint64_t>(t, static_cast<uint64_t>(std::max(c.chunk_size, 64)));
    const uint64_t per_token = 16ull * c.d_model + 4ull * c.ffn_dim + 2ull * c.key_dim + 2ull * c.value_dim;
    return saturating_sum({saturating_product({t, span, static_cast<uint64_t>(c.n_heads), 4}),
                           saturating_product({t, per_token, 4})});
}

CostReport measure_cost(Backend& retnet, Backend& transformer, const CostOptions& options,
                        const CostProgress& progress, const CostPointDone& point_done) {
    validate(options);
    if (retnet.model().config.is_transformer() || !transformer.model().config.is_transformer())
        throw Error("cost: needs a RetNet and a Transformer (in that order)");
    if (retnet.model().config.vocab_size != transformer.model().config.vocab_size)
        throw Error("cost: the RetNet and the Transformer have different vocabularies (" +
                    std::to_string(retnet.model().config.vocab_size) + " and " +
                    std::to_string(transformer.model().config.vocab_size) + " tokens)");
    CostReport report;
    report.device = retnet.name();
    report.weights = retnet.weights_precision();
    if (const std::string twin_weights = transformer.weights_precision(); twin_weights != report.weights)
        throw Error("cost: the RetNet computes with " + report.weights + " weights and the Transformer with " +
                    twin_weights + ": a comparison needs the same precision");
    report.retnet_parameters = retnet.model().parameter_count();
    report.transformer_parameters = transformer.model().parameter_count();
    report.decode_steps = options.decode_steps;
    report.seed = static_cast<int64_t>(std::min<uint64_t>(options.seed, INT64_MAX));
    const auto points = static_cast<int64_t>(options.lengths.size() * options.batches.size());
    Progress counter(progress, 2 * points * (1 + options.decode_steps + kUntimedSteps));
    try {
        // held in host memory on every device (a GPU backend keeps the model it uploaded)
        const uint64_t weights = saturating_sum({retnet.model().weight_bytes(), transformer.model().weight_bytes()});
        measure_model(retnet, options, weights, counter, report, point_done);
        measure_model(transformer, options, weights, counter, report, point_done);
    } catch (...) {
        for (Backend* b : {&retnet, &transformer}) {
            b->set_slot_count(1);
            b->reset(0);
        }
        throw;
    }
    return report;
}

}  // namespace retnet
