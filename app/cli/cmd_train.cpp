// SPDX-License-Identifier: GPL-3.0-or-later
// retnet train: trains an fla-layout RetNet, or (--arch transformer) its Transformer twin, on a text
// file, on the CPU or a GPU, alone or as one of several data-parallel ranks (train_ranks.h). Ctrl-C saves a checkpoint and exits; --resume
// continues from it exactly.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/run_directory.h"
#include "retnet/text_stream.h"
#include "retnet/train_device.h"
#include "retnet/train_ops.h"
#include "retnet/trainer.h"
#include "train_ranks.h"
#ifdef RETNET_HAVE_CUDA
#include "retnet/cuda/module.h"
#endif

namespace retnet::cli {
namespace {

std::string format_duration(double seconds) {
    const long s = static_cast<long>(seconds + 0.5);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else
        std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    return buf;
}

// The host memory of a run, estimated before anything is allocated. The loop keeps the parameters,
// AdamW's two moments and the average when there is one (3 or 4 copies of the weights; drawing the
// random weights holds 2), and a checkpoint or best/ save adds the model it writes (1). With
// --device cpu the device adds its own parameters, moments, average and the gradient (4 or 5
// more), its validation up to 2 more (9.5 copies measured at the peak of a 2048-wide run), and the
// pass's buffers: per token train::buffer_width (what the backward keeps, the gradient scratch, the
// logits) and a residual branch before dropout; and the scores: the retention's B·H·T·span per
// layer (span = T, or the chunk size), the twin's attention a tile of at most 64 query rows per
// (sequence, head) that no layer keeps. A GPU holds those in its own memory (its allocations fail
// with one line of their own); the host keeps a batch's inputs and targets (8 bytes a token). B is
// a rank's share of the global batch. The validation runs the same pass over its own batch (a
// rank's share of kEvalBatch windows of --eval-window tokens), which can be the larger one.
struct TrainingBytes {
    uint64_t bytes;
    bool validation_binds;  // its batch, not the training batch, sets the pass's buffers
    uint64_t validation_windows, validation_length;  // at most, at once
};

// The bytes of the text's held-out tail, the last `fraction` of its characters as the trainer
// splits it (scan_text_file's tail_begin); the file's size where it cannot be scanned (the
// trainer's own read then says why).
uint64_t held_out_bytes(const std::string& path, double fraction) {
    try {
        const TextScan scan = scan_text_file(path, fraction);
        return scan.bytes - scan.tail_begin;
    } catch (const Error&) {
        std::error_code ec;
        const uint64_t size = std::filesystem::file_size(path, ec);
        return ec ? UINT64_MAX : size;
    }
}

TrainingBytes estimated_training_bytes(const ModelConfig& c, const train::TrainOptions& o, int ranks) {
    const bool on_cpu = o.device == "cpu";
    const uint64_t averaging = o.average_decay > 0 ? 1 : 0;
    const uint64_t copies = 4 + averaging + (on_cpu ? 6 + averaging : 0);
    const uint64_t state = saturating_product({copies, estimated_weight_bytes(c)});
    const auto B = static_cast<uint64_t>(o.batch / ranks), T = static_cast<uint64_t>(o.seq_len);
    if (!on_cpu) return {saturating_sum({state, saturating_product({B, T, 8})}), false, 0, 0};
    uint64_t per_token = static_cast<uint64_t>(c.d_model);
    for (int b = 0; b < static_cast<int>(train::Buf::Count); ++b) {
        const auto name = static_cast<train::Buf>(b);
        per_token += static_cast<uint64_t>(train::buffer_width(c, name)) *
                     static_cast<uint64_t>(train::per_layer(name) ? c.n_layers : 1);
    }
    const uint64_t score_layers = c.is_transformer() ? 1 : static_cast<uint64_t>(c.n_layers);
    const auto pass_bytes = [&](uint64_t sequences, uint64_t length) {
        const uint64_t span = c.is_transformer() ? std::min<uint64_t>(length, 64)
                              : o.chunk > 0      ? std::min<uint64_t>(length, static_cast<uint64_t>(o.chunk))
                                                 : length;
        return saturating_sum({saturating_product({sequences, length, per_token, 4}),
                               saturating_product({sequences, length, span, static_cast<uint64_t>(c.n_heads),
                                                   score_layers, 4})});
    };
    const uint64_t training = pass_bytes(B, T);
    // A token covers at least one byte: the held-out tail has no more tokens than its bytes (+ BOS).
    const uint64_t tail_tokens = saturating_sum({held_out_bytes(o.data_path, o.validation_fraction), 2});
    const uint64_t length = std::min<uint64_t>(static_cast<uint64_t>(o.eval_window), tail_tokens);
    const uint64_t windows = std::min<uint64_t>((train::kEvalBatch + ranks - 1) / ranks, (tail_tokens + length - 1) / length);
    const uint64_t validation = pass_bytes(windows, length);
    return {saturating_sum({state, std::max(training, validation)}), validation > training, windows, length};
}

// Every option of `retnet train`, on `o` (whose initial values are the defaults shown).
void add_train_options(CLI::App& app, train::TrainOptions& o, int64_t& seed, bool& overwrite, std::string& arch,
                       int& gpus) {
    add_text(app, "--data", o.data_path, "the UTF-8 training text")->type_name("FILE")->required();
    add_text(app, "--config", o.config_path, "the model's config.json (fla keys; llama keys with --arch transformer)")
        ->type_name("FILE")
        ->required();
    add_text(app, "--arch", arch, "retnet, or transformer: train the Transformer twin of the RetNet config (same width, "
                                  "depth, heads, vocabulary and parameter count; docs/transformer.md)")
        ->type_name("retnet|transformer");
    add_out_directory(app, o.out_dir, "the run directory (checkpoint/, best/, run.json)");
    add_text(app, "--tokenizer", o.tokenizer_path, "tokenizer.model (on --resume: the checkpoint's)")->type_name("FILE");
    add_flag(app, "--resume", o.resume, "continue the run in --out from its checkpoint");
    add_flag(app, "--overwrite", overwrite, "replace a finished run in --out");
    add_text(app, "--device", o.device, "where to train")->type_name("cpu|cuda|cuda-tf32|cuda-bf16");
    add_int(app, "--threads", o.threads, 0, 4096, "CPU threads; 0 = all cores");
    add_int(app, "--gpus", gpus, 1, 4096,
            "train on N GPUs of this host, one process each, --batch split among them (several hosts: mpirun)");
    const std::string schedule = "Schedule";
    add_int(app, "--steps", o.steps, 1, int64_t(1) << 40, "optimizer steps")->group(schedule);
    add_int(app, "--batch", o.batch, 1, 1 << 16, "sequences per step (all ranks together)")->group(schedule);
    add_int(app, "--seq-len", o.seq_len, 1, 1 << 20, "tokens per sequence")->group(schedule);
    add_number(app, "--lr", o.lr, 0.0, 10.0, "peak learning rate")->group(schedule);
    add_number(app, "--min-lr-ratio", o.min_lr_ratio, 0.0, 1.0, "final learning rate over the peak (cosine)")->group(schedule);
    add_int(app, "--warmup", o.warmup, 0, int64_t(1) << 40, "steps of linear warm-up")->group(schedule);
    add_number(app, "--time-limit", o.time_limit_s, 0.0, 1e9, "shrink the schedule to end within SECONDS; 0 = off")
        ->group(schedule);
    const std::string optimizer = "Optimizer";
    add_number(app, "--beta1", o.adamw.beta1, 0.0, 0.999999, "AdamW's first-moment decay")->group(optimizer);
    add_number(app, "--beta2", o.adamw.beta2, 0.0, 0.999999, "AdamW's second-moment decay")->group(optimizer);
    add_number(app, "--adam-eps", o.adamw.eps, 0.0, 1.0, "AdamW's epsilon")->group(optimizer);
    add_number(app, "--weight-decay", o.adamw.weight_decay, 0.0, 10.0, "decoupled weight decay")->group(optimizer);
    add_number(app, "--grad-clip", o.grad_clip, 0.0, 1e9, "clip the gradient's norm to this")->group(optimizer);
    add_number(app, "--dropout", o.dropout, 0.0, 0.95, "embedding and residual dropout")->group(optimizer);
    add_int(app, "--chunk", o.chunk, 0, 1 << 20, "chunkwise retention with this chunk size; 0 = parallel")->group(optimizer);
    add_number(app, "--ema-decay", o.average_decay, 0.0, 0.999999, "keep an average of the weights; 0 = off")
        ->group(optimizer);
    add_int(app, "-s,--seed", seed, 0, INT64_MAX, "random seed of the initialization, batches and dropout")->group(optimizer);
    const std::string evaluation = "Validation and saving";
    add_number(app, "--val-fraction", o.validation_fraction, 1e-6, 0.999999, "the text's tail held out for validation")
        ->group(evaluation);
    add_int(app, "--log-every", o.log_every, 1, int64_t(1) << 40, "steps between progress lines")->group(evaluation);
    add_int(app, "--eval-every", o.eval_every, 0, int64_t(1) << 40, "steps between validations; 0 = at the end")
        ->group(evaluation);
    add_int(app, "--save-every", o.save_every, 0, int64_t(1) << 40, "steps between checkpoints; 0 = at the end")
        ->group(evaluation);
    add_int(app, "--eval-window", o.eval_window, 1, 1 << 20, "tokens per validation window")->group(evaluation);
}

// The checks every rank makes alike, before the ranks meet: each refuses the same way and rank 0
// alone says why (one line, not one per rank; so do the options' own errors).
void check_before_ranks_meet(const train::TrainOptions& o, const dist::RankEnvironment& env, int gpus) {
    using Launcher = dist::RankEnvironment::Launcher;
    if (gpus > 1 && env.launcher == Launcher::Mpirun)
        throw Error("--gpus starts its own processes: under mpirun leave it out (mpirun -np N starts the ranks)");
    if (env.launcher == Launcher::Mpirun && env.size > 1 && !dist::mpi_available())
        throw Error("this retnet was built without MPI, so it cannot train as one of several mpirun ranks "
                    "(install libopenmpi-dev and rebuild)");
    if (env.launcher == Launcher::RetnetGpus && env.size != gpus)
        throw Error("RETNET_WORLD_SIZE=" + std::to_string(env.size) + " but --gpus " + std::to_string(gpus));
    train::batch_shard(o.batch, env.rank, env.size);
    // A misspelt device is refused before the run directory is made (the device itself is built
    // after the lock is taken). Listing the devices loads the CUDA module: not for the CPU.
    if (o.device != "cpu") require_one_of("--device", o.device, train::train_devices());
    // Inputs that are FIFOs or directories get their own line here, never a reader that blocks.
    for (const auto& input : o.named_inputs()) require_regular_file(input.second);
    const ModelConfig config = train::run_config(o);
    if (config.is_transformer() && o.chunk > 0)
        throw Error("--chunk applies to the RetNet's retention; the Transformer twin's attention has one form (leave "
                    "--chunk out)");
#ifdef RETNET_HAVE_CUDA
    // before the weights are drawn (a minute at 1.3B) rather than when the device is made
    if (is_gpu_device(o.device)) cuda::cuda_module_or_throw().require_training_device();
#endif
    const auto [per_rank, validation_binds, windows, length] = estimated_training_bytes(config, o, env.size);
    const std::string what =
        "training with --batch " + std::to_string(o.batch) + " --seq-len " + std::to_string(o.seq_len) +
        (validation_binds ? " (its validation: " + std::to_string(windows) + " window" + (windows == 1 ? "" : "s") +
                                " of " + std::to_string(length) + " tokens at once, --eval-window " +
                                std::to_string(o.eval_window) + ")"
                          : "") +
        (env.size > 1 ? " over " + std::to_string(env.size) + " ranks" : "");
    check_memory(per_rank, what);
    check_host_memory(per_rank, env.local_size, what);
}

void print_progress(const train::TrainProgress& p) {
    end_progress_line();  // a validation's, stopped or done
    if (p.is_validation) {
        std::printf("step %6lld/%lld  validation loss %.4f  bits/char %.4f%s%s\n", static_cast<long long>(p.step),
                    static_cast<long long>(p.total_steps), p.val_loss, p.val_bpc, p.message.empty() ? "" : "  ",
                    p.message.c_str());
    } else if (!p.message.empty()) {
        std::printf("step %6lld/%lld  %s\n", static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                    p.message.c_str());
    } else {
        std::printf("step %6lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s\n",
                    static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss, p.lr, p.grad_norm,
                    p.tokens_per_s, format_duration(p.elapsed_s).c_str(), format_duration(p.eta_s).c_str());
    }
    std::fflush(stdout);
}

// A validation's progress on stderr (stdout holds the run's results and may be a file of them),
// once it has run for 2 s: a short one stays out of the log.
std::function<void(int64_t, int64_t, int64_t)> validation_progress_printer() {
    return [line = std::optional<TokenProgressLine>(), line_step = int64_t{-1}](int64_t step, int64_t done,
                                                                                 int64_t total) mutable {
        if (step != line_step) line.emplace("validation after step " + std::to_string(step), 2.0);
        line_step = step;
        line->show(done, total);
    };
}

// Training as one rank (rank 0 of 1 when alone). Rank 0 owns the run directory (unless the --gpus
// launcher holds it for the job) and speaks; every rank trains.
int train_as_rank(train::TrainOptions o, bool overwrite, const TrainRanks& ranks) {
    // Ctrl-C from before the run directory is taken: while the run starts (the lock, the text, the
    // checkpoint or random weights, which the setup polls between tensors) it saves nothing and
    // leaves nothing this process made; after, it saves a checkpoint.
    InterruptGuard interrupt;
    train::Communicator& comm = *ranks.comm;
    std::optional<train::RunDirectoryLock> lock;  // held until the run ends
    int proceed = 1;  // 0: nothing to do; −1: rank 0 refused the directory and said why
    const bool launched = ranks.env.launcher == dist::RankEnvironment::Launcher::RetnetGpus;
    if (comm.rank() == 0 && launched) resolve_out_dir(o, false);  // the launcher holds it and said so
    if (comm.rank() == 0 && !launched) {
        try {
            resolve_out_dir(o, true);
            lock.emplace(o.out_dir);
            std::string notice;
            const std::optional<train::CheckpointInfo> resumed = train::prepare_run_directory(o, overwrite, &notice);
            if (!notice.empty()) std::fprintf(stderr, "retnet train: %s\n", shown(notice).c_str());
            if (resumed && already_complete(*resumed, o)) proceed = 0;
        } catch (const Error& e) {
            if (comm.size() == 1) throw;
            // The other ranks wait for the verdict: they end with rank 0, no job abort needed.
            std::fprintf(stderr, "retnet train: error: %s\n", e.what());
            proceed = -1;
        }
    }
    comm.broadcast(std::span(&proceed, 1), 0);
    if (proceed <= 0) return proceed < 0 ? 1 : 0;
    const bool speaks = comm.rank() == 0;
    if (speaks && comm.size() > 1)
        std::printf("training as %s, %d of the %d sequences of each step on each rank\n", comm.description().c_str(),
                    o.batch / comm.size(), o.batch);
    o.communicator = &comm;
    if (comm.rank() == 0 && !o.resume) o.on_started = [&o] { train::begin_fresh_run(o); };
    o.on_validation_progress = validation_progress_printer();
    const train::TrainResult r = train::run_training(o, print_progress, &interrupt.flag());
    end_progress_line();
    if (!speaks) return r.interrupted ? cancelled_status() : 0;
    // Said on stderr: stdout holds the run's results and may be a file of them.
    if (r.interrupted && !r.started) {
        if (o.resume)
            std::fprintf(stderr, "retnet train: interrupted while starting; the checkpoint in %s/checkpoint is as it was "
                                 "(continue with --resume)\n",
                         shown(o.out_dir).c_str());
        else
            std::fprintf(stderr, "retnet train: interrupted while starting; nothing was saved\n");
        return cancelled_status();
    }
    if (r.interrupted_in_validation) {
        std::fprintf(stderr, "retnet train: interrupted during the validation after step %lld/%lld; checkpoint saved in "
                             "%s/checkpoint (--resume runs that validation first%s)\n",
                     static_cast<long long>(r.steps_done), static_cast<long long>(r.total_steps), shown(o.out_dir).c_str(),
                     r.steps_done < r.total_steps ? ", then continues" : "");
        return cancelled_status();
    }
    if (r.interrupted) {
        std::fprintf(stderr, "retnet train: interrupted at step %lld/%lld; checkpoint saved in %s/checkpoint (continue with --resume)\n",
                     static_cast<long long>(r.steps_done), static_cast<long long>(r.total_steps), shown(o.out_dir).c_str());
        return cancelled_status();
    }
    char last_loss[48] = "";  // none where this call trained no step (it ran the validation it owed)
    if (r.steps_trained > 0) std::snprintf(last_loss, sizeof last_loss, ", last loss %.4f", r.last_loss);
    std::printf("done: %lld steps in %s%s, best validation loss %.4f (%.4f bits/char) in %s/best\n",
                static_cast<long long>(r.steps_done), format_duration(r.elapsed_s).c_str(), last_loss,
                r.best_val_loss, r.best_val_bpc, shown(o.out_dir).c_str());
    return 0;
}

int run_train(const std::vector<std::string>& argv) {
    const auto app = make_app("train", "Trains an fla-layout RetNet, or its Transformer twin, on a text file. Ctrl-C saves a checkpoint; --resume "
                                       "continues from it exactly. --gpus N trains on N GPUs of this host; under "
                                       "mpirun -np N each process is one rank (CPU or GPU, one host or several).");
    train::TrainOptions o;
    int64_t seed = static_cast<int64_t>(o.seed);
    bool overwrite = false;
    std::string arch = "retnet";
    int gpus = 1;
    add_train_options(*app, o, seed, overwrite, arch, gpus);
    // The launcher's environment is read first (for SIGTERM below) but a fault in it is reported
    // after the options, so that --help and an option's error come first.
    std::optional<dist::RankEnvironment> env;
    std::string env_error;
    try {
        env = dist::rank_environment();
    } catch (const Error& e) {
        env_error = e.what();
    }
    // A rank of a job of several processes is stopped by its launcher (mpirun, or --gpus N once a
    // rank failed) with SIGTERM, often while it waits in a collective for a rank that is gone and
    // polls nothing: it ends at once, and its launcher says why.
    if (env && env->size > 1) std::signal(SIGTERM, SIG_DFL);
    try {
        parse(*app, argv);
        if (!env) throw Error(env_error);
        o.seed = static_cast<uint64_t>(seed);
        o.architecture = parse_architecture(arch);
        if (gpus > 1 && env->launcher == dist::RankEnvironment::Launcher::None)
            return launch_gpu_ranks(o, gpus, overwrite, argv);
        check_before_ranks_meet(o, *env, gpus);
    } catch (const Error&) {
        if (env && env->rank != 0) return 1;  // rank 0 says it
        throw;
    }
    const TrainRanks ranks = join_train_ranks(*env);
    if (ranks.comm->size() == 1) return train_as_rank(o, overwrite, ranks);
    try {
        return train_as_rank(o, overwrite, ranks);
    } catch (const std::exception& e) {
        ranks.fail(e.what());
    }
}

const Command reg("train", "train a model on a text file (CPU or CUDA, one or several ranks), resumable", &run_train);

}  // namespace
}  // namespace retnet::cli
