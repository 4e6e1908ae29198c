// SPDX-License-Identifier: GPL-3.0-or-later
// retnet bench: prefill time of each form over a range of lengths, and batched recurrent decoding
// at chosen batch sizes and context lengths. Wall-clock medians after a warm-up; every call
// returns host logits, so every timing includes the device synchronization and the logits copy,
// as a user of the engine sees it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/cost.h"
#include "retnet/decode_timing.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"
#include "retnet/sampler.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace retnet::cli {
namespace {

// One line on stderr as each measurement starts ("[ 40%] prefill of 1024 tokens, chunkwise form"),
// as retnet cost shows its points: a 32k-token context on the CPU takes minutes.
class BenchProgress {
public:
    explicit BenchProgress(int total) : total_(std::max(total, 1)) {}
    void start(const std::string& what) {
        std::fprintf(stderr, "[%3.0f%%] %s\n", 100.0 * finished_ / total_, what.c_str());
        ++started_;
    }
    void finish() { ++finished_; }
    int started() const { return started_; }
    int finished() const { return finished_; }
    int total() const { return total_; }

private:
    int total_, started_ = 0, finished_ = 0;
};

constexpr int kDecodeWarmup = 4;  // untimed steps before the timed ones

// Prefill of T tokens from an empty state in each form, asking for the last logits row only (what
// generation needs): the median of `repeats` runs after a warm-up. Ctrl-C is polled before each
// layer (a long prompt's run takes seconds) and between runs, outside the timed calls.
// `row` holds T; each form's median is added to it as it is measured (a cancel keeps those done).
void bench_prefill(Backend& backend, int T, int repeats, int chunk, std::mt19937_64& rng, const InterruptGuard& interrupt,
                   BenchProgress& progress, nlohmann::json& row) {
    const std::vector<int32_t> tokens = random_tokens(T, backend.model().config.vocab_size, rng);
    for (Form form : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
        progress.start("prefill of " + std::to_string(T) + " token" + (T == 1 ? "" : "s") + ", " + form_name(form) +
                       " form");
        ForwardOptions o;
        o.form = form;
        o.chunk_size = chunk;
        o.cancelled = interrupt.cancelled();
        const SequenceRequest request{tokens, 0, LogitRows::Last};
        std::vector<double> ms;
        for (int r = 0; r <= repeats; ++r) {
            backend.reset();
            const auto t0 = std::chrono::steady_clock::now();
            backend.forward_batch({&request, 1}, o);
            if (r > 0) ms.push_back(ms_since(t0));  // run 0 is the warm-up
            interrupt.check();
        }
        row[form_name(form) + std::string("_ms")] = median(ms);
        progress.finish();
    }
}

// B sequences decoded together, each in its own state slot holding `context` tokens: slot 0
// prefilled in the chunkwise form (chunk `chunk`, 0 the model's), the others copies of its state
// (as retnet cost forks them: B prefills of a long context took minutes on the CPU, untimed). The
// median wall time of a step (every sequence's `best_logits` best logits to the host, as sampling
// asks for them, or with 0 its whole last logits row), and on a GPU the median of the device's own
// time for it (the copy to the host left out). Ctrl-C is polled
// before each layer of the prefill and between steps, outside the timed calls.
nlohmann::json bench_decode(Backend& backend, int B, int context, int steps, int chunk, int best_logits,
                            std::mt19937_64& rng, const InterruptGuard& interrupt, BenchProgress& progress) {
    const ModelConfig& c = backend.model().config;
    progress.start("decoding " + std::to_string(B) + " sequence" + (B == 1 ? "" : "s") + " at " +
                   std::to_string(context) + " tokens of context");
    const std::vector<int32_t> history = random_tokens(context, c.vocab_size, rng);
    prefill_and_fork(backend, history, B, chunk, interrupt.cancelled());
    const DecodeTimes times =
        time_decode_steps(backend, B, kDecodeWarmup, steps, best_logits, rng, [&] { interrupt.check(); });
    backend.set_slot_count(1);
    progress.finish();
    const double per_step = median(times.wall_ms);
    // the median step's: a KV cache then holds the context, the warm-up and half the timed tokens
    const DecodeStepBytes moved = decode_step_bytes(backend.model(), backend.weights_precision(), B,
                                                    int64_t(context) + kDecodeWarmup + steps / 2,
                                                    backend.kv_cache_element_bytes());
    const auto gb_per_s = [&](double ms) { return ms > 0 ? static_cast<double>(moved.total()) / (ms * 1e6) : 0.0; };
    nlohmann::json row = {
        {"batch", B}, {"context", context}, {"ms_per_step", per_step}, {"tokens_per_s", tokens_per_second(B, per_step)},
        {"state_bytes", B * sequence_state_bytes(c, context + steps + kDecodeWarmup, backend.kv_cache_element_bytes())},
        {"step_bytes", moved.total()}, {"step_weight_bytes", moved.weights}, {"step_state_bytes", moved.states},
        {"gb_per_s", gb_per_s(per_step)}};
    if (!times.device_ms.empty()) {
        const double device_per_step = median(times.device_ms);
        row["device_ms_per_step"] = device_per_step;
        row["device_gb_per_s"] = gb_per_s(device_per_step);
    }
    return row;
}

// Refuses, before anything is allocated, decoding timings that would pass the memory limit: the
// chunkwise prefill of the longest context, and the widest batch's states (B slots, held in host
// memory unless the backend is a GPU's) with its one-token step.
void check_decode_memory(const Backend& backend, const std::vector<int>& batches, const std::vector<int>& contexts,
                         int chunk, int steps) {
    const ModelConfig& c = backend.model().config;
    const int B = *std::max_element(batches.begin(), batches.end());
    const int C = *std::max_element(contexts.begin(), contexts.end());
    const bool host_states = !backend.on_device();
    // the tokens a sequence holds at the end: the context, the warm-up steps and the timed ones
    const int64_t held = int64_t(C) + steps + kDecodeWarmup;
    const uint64_t states = host_states ? host_state_peak_bytes(c, B, held, backend.kv_cache_element_bytes()) : 0;
    check_forward_memory(c, static_cast<int64_t>(B), Form::Recurrent, 0,
                         "decoding --batch " + std::to_string(B) + " (the states of the sequences and one step)", states);
    check_forward_memory(c, C, Form::Chunkwise, chunk, "the prefill of --contexts " + std::to_string(C), states);
}

// The retention alone at each B × T of the model's head shape, as the CUDA trainer runs it (chunk
// products and scan, forward and forward + backward): the kernel-level numbers fla's
// chunk_retention is compared with (scripts/gpu/fla_anchors.py). Ctrl-C is polled between shapes.
void bench_retention_kernels(const Backend& backend, const std::vector<int>& batches,
                             const std::vector<int>& lengths, int chunk, int repeats, const InterruptGuard& interrupt,
                             BenchProgress& progress, nlohmann::json& rows) {
#ifdef RETNET_HAVE_CUDA
    const ModelConfig& c = backend.model().config;
    if (c.is_transformer()) throw Error("--mode kernels times the RetNet's retention; this model is a Transformer");
    const bool bf16 = backend.weights_precision() == "bf16";
    for (int T : lengths)
        for (int B : batches) {
            interrupt.check();
            progress.start("retention kernels at " + std::to_string(B) + " × " + std::to_string(T));
            cuda::RetentionKernelShape shape{B, T, c.n_heads, c.head_dim_k(), c.head_dim_v(), chunk > 0 ? chunk : c.chunk_size};
            const cuda::RetentionKernelTiming t =
                cuda::cuda_module_or_throw().time_retention_kernels(
                    shape, bf16 ? cuda::TrainPrecision::Bf16 : cuda::TrainPrecision::Fp32, repeats);
            rows.push_back({{"B", B}, {"T", T}, {"H", shape.heads}, {"Dk", shape.head_dim_k}, {"Dv", shape.head_dim_v},
                            {"chunk", shape.chunk}, {"precision", bf16 ? "bf16" : "fp32"}, {"forward_ms", t.forward_ms},
                            {"forward_backward_ms", t.forward_backward_ms}});
            progress.finish();
        }
#else
    (void)backend, (void)batches, (void)lengths, (void)chunk, (void)repeats, (void)interrupt, (void)progress, (void)rows;
    throw Error("--mode kernels times the CUDA retention kernels; this retnet was built without CUDA");
#endif
}

void print_tables(const nlohmann::json& report) {
    std::printf("%s backend, %s parameters, %s weights (--dtype %s); medians after a warm-up\n",
                report["device"].get<std::string>().c_str(), format_count(report["parameters"].get<int64_t>()).c_str(),
                report["weights"].get<std::string>().c_str(), report["dtype"].get<std::string>().c_str());
    if (report.contains("prefill")) {
        std::printf("prefill (last logits row)\n%8s %14s %14s %14s\n", "T", "parallel ms", "chunkwise ms", "recurrent ms");
        for (const auto& row : report["prefill"]) {  // a form not measured (cancelled before it): "-"
            std::string line = std::to_string(row["T"].get<int>());
            line.insert(0, 8 - std::min<size_t>(8, line.size()), ' ');
            for (const char* form : {"parallel_ms", "chunkwise_ms", "recurrent_ms"}) {
                char cell[32];
                if (row.contains(form)) std::snprintf(cell, sizeof cell, " %14.3f", row[form].get<double>());
                else std::snprintf(cell, sizeof cell, " %14s", "-");
                line += cell;
            }
            std::printf("%s\n", line.c_str());
        }
    }
    if (report.contains("decode")) {
        const int best = report.value("best_logits", 0);
        const std::string sent = best > 0 ? "each sequence's " + std::to_string(best) + " best logit" + (best == 1 ? "" : "s")
                                          : std::string("each sequence's whole logits row");
        std::printf("decode (one token per sequence per step: the recurrent form, or a Transformer's cached attention; "
                    "%s to the host)\n"
                    "moved: the weights and states a step reads and writes at the least; GB/s: that over the step's time\n"
                    "%8s %9s %12s %14s %14s %12s %10s %18s %12s\n",
                    sent.c_str(), "batch", "context", "ms / step", "tokens / s", "state / cache", "moved", "GB/s",
                    "device ms / step", "device GB/s");
        for (const auto& row : report["decode"]) {
            char device[32] = "-", device_rate[32] = "-";
            if (row.contains("device_ms_per_step")) {
                std::snprintf(device, sizeof device, "%.3f", row["device_ms_per_step"].get<double>());
                std::snprintf(device_rate, sizeof device_rate, "%.1f", row["device_gb_per_s"].get<double>());
            }
            std::printf("%8d %9d %12.3f %14.1f %14s %12s %10.1f %18s %12s\n", row["batch"].get<int>(),
                        row["context"].get<int>(), row["ms_per_step"].get<double>(), row["tokens_per_s"].get<double>(),
                        format_bytes(row["state_bytes"].get<int64_t>()).c_str(),
                        format_bytes(row["step_bytes"].get<int64_t>()).c_str(), row["gb_per_s"].get<double>(), device,
                        device_rate);
        }
    }
    if (report.contains("kernels")) {
        std::printf("retention kernels (chunkwise, the trainer's path)\n%6s %8s %10s %8s %12s %16s\n", "B", "T",
                    "H×Dk×Dv", "chunk", "forward ms", "fwd + bwd ms");
        for (const auto& row : report["kernels"]) {
            const std::string heads = std::to_string(row["H"].get<int>()) + "×" + std::to_string(row["Dk"].get<int>()) +
                                      "×" + std::to_string(row["Dv"].get<int>());
            std::printf("%6d %8d %10s %8d %12.3f %16.3f\n", row["B"].get<int>(), row["T"].get<int>(), heads.c_str(),
                        row["chunk"].get<int>(), row["forward_ms"].get<double>(), row["forward_backward_ms"].get<double>());
        }
    }
    if (report.contains("device_memory_bytes"))
        std::printf("device memory in use at the end: %s\n", format_bytes(report["device_memory_bytes"].get<int64_t>()).c_str());
}

int run_bench(const std::vector<std::string>& argv) {
    const auto app = make_app("bench", "Times the prefill of each form at each length and batched recurrent decoding "
                                       "at each batch size and context length (medians after a warm-up). A decoding "
                                       "row also gives the bytes a step moves at the least (every weight once, each "
                                       "state read and written) and the GB/s that makes, to set beside the memory's "
                                       "bandwidth.");
    std::string model_dir, device = "cpu", lengths_text = "64,256,1024", batch_text = "1", contexts_text = "64";
    std::string dtype = "stored", mode = "all";
    InterventionText edits;
    int repeats = 5, decode_steps = 64, chunk = 0, best_logits = default_sampling().top_k;
    bool json = false;
    add_model_option(*app, model_dir);
    add_device_option(*app, device);
    add_text(*app, "--lengths", lengths_text, "prompt lengths of the prefill timings")->type_name("T,T,...");
    add_text(*app, "--batch", batch_text, "sequences decoded together")->type_name("B,B,...");
    add_text(*app, "--contexts", contexts_text, "tokens each sequence holds before the timed decoding")->type_name("C,C,...");
    add_text(*app, "--dtype", dtype, "precision of the projections: stored (as the checkpoint), fp32 or bf16")
        ->type_name("stored|fp32|bf16");
    add_text(*app, "--mode", mode,
             "what to time: all, prefill, decode, or kernels (CUDA: the retention alone, forward and forward + "
             "backward, B × T for each --batch and --lengths)")
        ->type_name("all|prefill|decode|kernels");
    add_int(*app, "--repeats", repeats, 1, 1000, "timed prefill runs per measurement (the median is reported)");
    add_int(*app, "--decode-steps", decode_steps, 1, 100000, "decoding steps timed per batch and context");
    add_int(*app, "--best-logits", best_logits, 0, kMaxBestLogits,
            "decoding sends back each sequence's N best logits (0 to 256), as sampling with top-k N asks (1: "
            "greedy); 0: the whole logits row")
        ->default_str(std::to_string(best_logits) + ", the default top-k");
    add_int(*app, "--chunk-size", chunk, 1, 1 << 20, "chunk length of the chunkwise form")->default_str("the model's");
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    require_one_of("--dtype", dtype, {"stored", "fp32", "bf16"});
    check_dtype_for_device(dtype, device);
    require_one_of("--mode", mode, {"all", "prefill", "decode", "kernels"});
    const std::vector<int> lengths = parse_positive_list("--lengths", lengths_text);
    const std::vector<int> batches = parse_positive_list("--batch", batch_text);
    const std::vector<int> contexts = parse_positive_list("--contexts", contexts_text);
    const bool prefill = mode == "all" || mode == "prefill", decode = mode == "all" || mode == "decode";
    // an option that the mode never reads is refused, not ignored (a user would believe it was timed)
    const auto refuse_unless = [&](bool used, std::initializer_list<const char*> options, const char* modes) {
        for (const char* option : options)
            if (!used && app->count(option) > 0)
                throw Error(std::string("option ") + option + " applies to --mode " + modes + ", not --mode " + mode);
    };
    refuse_unless(decode, {"--contexts", "--decode-steps", "--best-logits"}, "all or decode");
    refuse_unless(prefill || mode == "kernels", {"--lengths", "--repeats"}, "all, prefill or kernels");
    refuse_unless(decode || mode == "kernels", {"--batch"}, "all, decode or kernels");
    if (mode == "kernels") {  // refused before the load (a 1B model takes seconds), not after
        if (!is_gpu_device(device))
            throw Error("--mode kernels times the CUDA retention kernels: use --device cuda or cuda-bf16");
        // the kernels run on random q, k, v of the model's head shape: its weights, so its edits, are not read
        refuse_unless(false, {"--mute", "--gamma"}, "all, prefill or decode");
    }
    // Ctrl-C during the load: cancelled, exit 130, no table (with --json, a report that says so, as
    // cost's); during the timings: the table of the measurements done, then exit 130.
    const InterruptGuard interrupt;
    std::unique_ptr<Backend> backend;
    try {
        auto model = load_model_edited(model_dir, edits);
        if (mode == "kernels") {  // the kernels need the GPU itself: its absence is the error, not a fall back
            std::string chosen = device;
            backend = make_backend(chosen, apply_dtype(dtype, chosen, std::move(model)));
        } else {
            backend = make_backend_at_dtype(dtype, device, std::move(model));
        }
    } catch (const Cancelled&) {
        if (!json) throw;
        nlohmann::json nothing = {{"model", model_dir_or_default(model_dir)}, {"dtype", dtype}, {"cancelled", true}};
        if (decode) {
            nothing["decode_steps"] = decode_steps;
            nothing["best_logits"] = best_logits;  // as asked: the vocabulary is not known yet
            nothing["decode"] = nlohmann::json::array();
        }
        std::printf("%s\n", json_text(nothing, 2).c_str());
        std::fflush(stdout);
        std::fprintf(stderr, "retnet bench: cancelled while loading the model; the report holds no measurement\n");
        return cancelled_status();
    }
    const ModelConfig& config = backend->model().config;
    const int longest = *std::max_element(lengths.begin(), lengths.end());
    if (prefill)
        check_forward_memory(config, longest, Form::Parallel, 0, "the parallel form at T = " + std::to_string(longest));
    if (decode) {
        check_batch_fits(*backend, *std::max_element(batches.begin(), batches.end()));
        check_decode_memory(*backend, batches, contexts, chunk, decode_steps);
    }

    std::mt19937_64 rng(1);
    nlohmann::json report = {{"model", model_dir_or_default(model_dir)},
                             {"device", backend->name()}, {"family", format_name(config)},
                             {"parameters", backend->model().parameter_count()}, {"dtype", dtype},
                             {"weights", backend->weights_precision()},
                             {"chunk_size", chunk > 0 ? chunk : config.chunk_size}};
    if (prefill || mode == "kernels") report["repeats"] = repeats;
    if (decode) {
        report["decode_steps"] = decode_steps;
        best_logits = std::min(best_logits, config.vocab_size);  // what is sent back
        report["best_logits"] = best_logits;
    }
    const auto lengths_count = static_cast<int>(lengths.size()), pairs = static_cast<int>(contexts.size() * batches.size());
    BenchProgress progress(mode == "kernels" ? lengths_count * static_cast<int>(batches.size())
                                             : (prefill ? 3 * lengths_count : 0) + (decode ? pairs : 0));
    bool cancelled = false;
    try {
        if (mode == "kernels") {
            report["kernels"] = nlohmann::json::array();
            bench_retention_kernels(*backend, batches, lengths, chunk, repeats, interrupt, progress, report["kernels"]);
        }
        if (prefill)
            for (int T : lengths) {
                report["prefill"].push_back({{"T", T}});
                bench_prefill(*backend, T, repeats, chunk, rng, interrupt, progress, report["prefill"].back());
            }
        if (decode) {
            report["decode"] = nlohmann::json::array();  // a list even when cancelled before its first row
            for (int C : contexts)
                for (int B : batches)
                    report["decode"].push_back(bench_decode(*backend, B, C, decode_steps, chunk, best_logits, rng, interrupt, progress));
        }
    } catch (const Cancelled&) {
        cancelled = true;
    }
    if (cancelled) {  // what was finished is reported; a length none of whose forms was done has no row
        if (report.contains("prefill") && report["prefill"].back().size() == 1)
            report["prefill"].erase(report["prefill"].size() - 1);
        if (report.contains("prefill") && report["prefill"].empty()) report.erase("prefill");
        report["cancelled"] = true;
    }
    if (const int64_t in_use = backend->device_memory_in_use(); in_use >= 0) report["device_memory_bytes"] = in_use;
    if (json) std::printf("%s\n", json_text(report, 2).c_str());
    else print_tables(report);
    if (!cancelled && interrupt.raised()) return cancelled_after_whole_output("bench", json);  // after the last measurement
    if (!cancelled) return 0;
    std::fflush(stdout);
    std::fprintf(stderr, "retnet bench: cancelled during measurement %d of %d; the %s holds the %d finished before it\n",
                 progress.started(), progress.total(), json ? "report" : "table", progress.finished());
    return cancelled_status();
}

const Command reg("bench", "prefill time of each form and batched decoding speed", &run_bench);

}  // namespace
}  // namespace retnet::cli
