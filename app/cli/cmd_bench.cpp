// SPDX-License-Identifier: GPL-3.0-or-later
// retnet bench: prefill time of each form over a range of lengths, and batched recurrent decoding
// at chosen batch sizes and context lengths. Wall-clock medians after a warm-up; every call
// returns host logits, so every timing includes the device synchronization and the logits copy,
// as a user of the engine sees it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace retnet::cli {
namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

std::vector<int32_t> random_tokens(int n, int vocab, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int32_t& t : tokens) t = pick(rng);
    return tokens;
}

// Prefill of T tokens from an empty state in each form, asking for the last logits row only (what
// generation needs): the median of `repeats` runs after a warm-up. Ctrl-C is polled before each
// layer (a long prompt's run takes seconds) and between runs, outside the timed calls.
nlohmann::json bench_prefill(Backend& backend, int T, int repeats, int chunk, std::mt19937& rng,
                             const InterruptGuard& interrupt) {
    const std::vector<int32_t> tokens = random_tokens(T, backend.model().config.vocab_size, rng);
    nlohmann::json row = {{"T", T}};
    for (Form form : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
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
            if (r > 0) ms.push_back(elapsed_ms(t0));  // run 0 is the warm-up
            interrupt.check();
        }
        row[form_name(form) + std::string("_ms")] = median(ms);
    }
    return row;
}

// B sequences decoded together, each in its own state slot after a chunkwise prefill of `context`
// tokens: the median wall time of a step (last logits row of every sequence to the host). Ctrl-C
// is polled before each layer of the prefills and between steps, outside the timed calls.
nlohmann::json bench_decode(Backend& backend, int B, int context, int steps, std::mt19937& rng,
                            const InterruptGuard& interrupt) {
    const ModelConfig& c = backend.model().config;
    backend.set_slot_count(B);
    ForwardOptions prefill, step;
    prefill.form = Form::Chunkwise;
    prefill.cancelled = interrupt.cancelled();
    step.form = Form::Recurrent;
    const std::vector<int32_t> history = random_tokens(context, c.vocab_size, rng);
    for (int s = 0; s < B; ++s) {
        backend.reset(s);
        const SequenceRequest r{history, s, LogitRows::None};
        backend.forward_batch({&r, 1}, prefill);
    }
    std::vector<int32_t> next(static_cast<size_t>(B));
    std::vector<SequenceRequest> batch(static_cast<size_t>(B));
    std::vector<double> ms;
    constexpr int kWarmup = 4;
    for (int i = 0; i < steps + kWarmup; ++i) {
        next = random_tokens(B, c.vocab_size, rng);
        for (int s = 0; s < B; ++s) batch[static_cast<size_t>(s)] = {std::span(&next[static_cast<size_t>(s)], 1), s, LogitRows::Last};
        const auto t0 = std::chrono::steady_clock::now();
        backend.forward_batch(batch, step);
        if (i >= kWarmup) ms.push_back(elapsed_ms(t0));
        interrupt.check();
    }
    backend.set_slot_count(1);
    const double per_step = median(ms);
    return {{"batch", B}, {"context", context}, {"ms_per_step", per_step}, {"tokens_per_s", B * 1000.0 / per_step},
            {"state_bytes", B * sequence_state_bytes(c, context + steps + kWarmup, backend.kv_cache_element_bytes())}};
}

// Refuses, before anything is allocated, decoding timings that would pass the memory limit: the
// chunkwise prefill of the longest context, and the widest batch's states (B slots, held in host
// memory unless the backend is a GPU's) with its one-token step.
void check_decode_memory(const Backend& backend, const std::vector<int>& batches, const std::vector<int>& contexts,
                         int chunk) {
    const ModelConfig& c = backend.model().config;
    const auto B = static_cast<uint64_t>(*std::max_element(batches.begin(), batches.end()));
    const int C = *std::max_element(contexts.begin(), contexts.end());
    const bool host_states = backend.name().rfind("cuda", 0) != 0;
    const auto per_sequence = static_cast<uint64_t>(sequence_state_bytes(c, C, backend.kv_cache_element_bytes()));
    const uint64_t states = host_states ? saturating_product({B, per_sequence}) : 0;
    check_forward_memory(c, static_cast<int64_t>(B), Form::Recurrent, 0,
                         "decoding --batch " + std::to_string(B) + " (the states of the sequences and one step)", states);
    check_forward_memory(c, C, Form::Chunkwise, chunk, "the prefill of --contexts " + std::to_string(C), states);
}

// The retention alone at each B × T of the model's head shape, as the CUDA trainer runs it (chunk
// products and scan, forward and forward + backward): the kernel-level numbers fla's
// chunk_retention is compared with (scripts/gpu/fla_anchors.py). Ctrl-C is polled between shapes.
nlohmann::json bench_retention_kernels(const Backend& backend, const std::vector<int>& batches,
                                       const std::vector<int>& lengths, int chunk, int repeats,
                                       const InterruptGuard& interrupt) {
#ifdef RETNET_HAVE_CUDA
    const ModelConfig& c = backend.model().config;
    if (c.is_transformer()) throw Error("--mode kernels times the RetNet's retention; this model is a Transformer");
    if (backend.name().rfind("cuda", 0) != 0)
        throw Error("--mode kernels times the CUDA retention kernels: use --device cuda or cuda-bf16");
    const bool bf16 = backend.name() == "cuda-bf16";
    nlohmann::json rows = nlohmann::json::array();
    for (int T : lengths)
        for (int B : batches) {
            interrupt.check();
            cuda::RetentionKernelShape shape{B, T, c.n_heads, c.head_dim_k(), c.head_dim_v(), chunk > 0 ? chunk : c.chunk_size};
            const cuda::RetentionKernelTiming t =
                cuda::cuda_module_or_throw().time_retention_kernels(
                    shape, bf16 ? cuda::TrainPrecision::Bf16 : cuda::TrainPrecision::Fp32, repeats);
            rows.push_back({{"B", B}, {"T", T}, {"H", shape.heads}, {"Dk", shape.head_dim_k}, {"Dv", shape.head_dim_v},
                            {"chunk", shape.chunk}, {"precision", bf16 ? "bf16" : "fp32"}, {"forward_ms", t.forward_ms},
                            {"forward_backward_ms", t.forward_backward_ms}});
        }
    return rows;
#else
    (void)backend, (void)batches, (void)lengths, (void)chunk, (void)repeats, (void)interrupt;
    throw Error("--mode kernels times the CUDA retention kernels; this retnet was built without CUDA");
#endif
}

void print_tables(const nlohmann::json& report) {
    std::printf("%s backend, %s parameters, %s; medians after a warm-up\n", report["device"].get<std::string>().c_str(),
                format_count(report["parameters"].get<int64_t>()).c_str(), report["dtype"].get<std::string>().c_str());
    if (report.contains("prefill")) {
        std::printf("prefill (last logits row)\n%8s %14s %14s %14s\n", "T", "parallel ms", "chunkwise ms", "recurrent ms");
        for (const auto& row : report["prefill"])
            std::printf("%8d %14.3f %14.3f %14.3f\n", row["T"].get<int>(), row["parallel_ms"].get<double>(),
                        row["chunkwise_ms"].get<double>(), row["recurrent_ms"].get<double>());
    }
    if (report.contains("decode")) {
        std::printf("decode (recurrent, one token per sequence per step)\n%8s %9s %12s %14s %12s\n", "batch",
                    "context", "ms / step", "tokens / s", "state");
        for (const auto& row : report["decode"])
            std::printf("%8d %9d %12.3f %14.1f %12s\n", row["batch"].get<int>(), row["context"].get<int>(),
                        row["ms_per_step"].get<double>(), row["tokens_per_s"].get<double>(),
                        format_bytes(row["state_bytes"].get<int64_t>()).c_str());
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
                                       "at each batch size and context length (medians after a warm-up).");
    std::string model_dir, device = "cpu", lengths_text = "64,256,1024", batch_text = "1", contexts_text = "64";
    std::string dtype = "stored", mode = "all";
    InterventionText edits;
    int repeats = 5, decode_steps = 64, chunk = 0;
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
    add_int(*app, "--chunk-size", chunk, 1, 1 << 20, "chunk length of the chunkwise form")->default_str("the model's");
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    require_one_of("--dtype", dtype, {"stored", "fp32", "bf16"});
    require_one_of("--mode", mode, {"all", "prefill", "decode", "kernels"});
    const std::vector<int> lengths = parse_positive_list("--lengths", lengths_text);
    const std::vector<int> batches = parse_positive_list("--batch", batch_text);
    const std::vector<int> contexts = parse_positive_list("--contexts", contexts_text);
    // Ctrl-C from the load to the last timing: cancelled, exit 130, no table.
    const InterruptGuard interrupt;
    auto model = apply_dtype(dtype, device, load_model_edited(model_dir, edits));
    // The kernels need the GPU itself: its absence is the error, not a fall back to the CPU (a
    // device that is not CUDA is refused by bench_retention_kernels).
    auto backend = mode == "kernels" ? make_backend(device, model) : make_backend_option(device, model);
    const int longest = *std::max_element(lengths.begin(), lengths.end());
    const bool prefill = mode == "all" || mode == "prefill", decode = mode == "all" || mode == "decode";
    if (prefill)
        check_forward_memory(model->config, longest, Form::Parallel, 0, "the parallel form at T = " + std::to_string(longest));
    if (decode) check_decode_memory(*backend, batches, contexts, chunk);

    std::mt19937 rng(1);
    nlohmann::json report = {{"device", backend->name()}, {"family", family_name(model->config.family)},
                             {"parameters", model->parameter_count()}, {"dtype", dtype}, {"repeats", repeats}};
    if (mode == "kernels")
        report["kernels"] = bench_retention_kernels(*backend, batches, lengths, chunk, repeats, interrupt);
    if (prefill)
        for (int T : lengths) report["prefill"].push_back(bench_prefill(*backend, T, repeats, chunk, rng, interrupt));
    if (decode)
        for (int C : contexts)
            for (int B : batches)
                report["decode"].push_back(bench_decode(*backend, B, C, decode_steps, rng, interrupt));
    if (const int64_t in_use = backend->device_memory_in_use(); in_use >= 0) report["device_memory_bytes"] = in_use;
    if (json) std::printf("%s\n", report.dump(2).c_str());
    else print_tables(report);
    return 0;
}

const Command reg("bench", "prefill time of each form and batched decoding speed", &run_bench);

}  // namespace
}  // namespace retnet::cli
