// SPDX-License-Identifier: GPL-3.0-or-later
// retnet train: trains an fla-layout RetNet on a text file with the CPU trainer. Ctrl-C saves a
// checkpoint and exits; --resume continues from it exactly.
#include <algorithm>
#include <cstdio>
#include <optional>

#include "args.h"
#include "cli_common.h"
#include "command.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/run_directory.h"
#include "retnet/trainer.h"

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

// The host memory of a run, estimated before anything is allocated: weights, gradient, AdamW's two
// moments and the average (5 copies), and the activations the backward pass keeps for a batch,
// retention scores included (B·H·T·span per layer, span = T, or the chunk size).
uint64_t estimated_training_bytes(const ModelConfig& c, const train::TrainOptions& o) {
    const auto B = static_cast<uint64_t>(o.batch), T = static_cast<uint64_t>(o.seq_len);
    const uint64_t span = o.chunk > 0 ? std::min<uint64_t>(T, static_cast<uint64_t>(o.chunk)) : T;
    const uint64_t per_token = 2ull * c.vocab_size + static_cast<uint64_t>(c.n_layers) *
                               (20ull * c.d_model + 4ull * c.ffn_dim + 2ull * c.key_dim + 2ull * c.value_dim);
    return saturating_sum({saturating_product({5, estimated_weight_bytes(c)}), saturating_product({B, T, per_token, 4}),
                           saturating_product({B, T, span, static_cast<uint64_t>(c.n_heads), static_cast<uint64_t>(c.n_layers), 4})});
}

// --resume of a run whose checkpoint is already at its last step: say so instead of a "done" line
// with no loss.
bool already_complete(const train::CheckpointInfo& info, const train::TrainOptions& o) {
    const int64_t total = info.schedule_fixed ? info.total_steps : o.steps;
    if (info.step < total) return false;
    std::printf("the run in %s is already complete at step %lld/%lld; nothing to do (raise --steps to train further)\n",
                shown(o.out_dir).c_str(), static_cast<long long>(info.step), static_cast<long long>(total));
    return true;
}

int run_train(const std::vector<std::string>& argv) {
    Args args(argv, {"resume", "overwrite"});
    train::TrainOptions o;
    o.data_path = args.require("data");
    o.config_path = args.require("config");
    o.out_dir = args.require("out");
    o.resume = args.has("resume");
    o.tokenizer_path = args.get_or("tokenizer", "");
    o.steps = args.get_int("steps", o.steps, 1, int64_t(1) << 40);
    o.batch = static_cast<int>(args.get_int("batch", o.batch, 1, 1 << 16));
    o.seq_len = static_cast<int>(args.get_int("seq-len", o.seq_len, 1, 1 << 20));
    o.lr = args.get_double("lr", o.lr, 0.0, 10.0);
    o.min_lr_ratio = args.get_double("min-lr-ratio", o.min_lr_ratio, 0.0, 1.0);
    o.warmup = args.get_int("warmup", o.warmup, 0, int64_t(1) << 40);
    o.adamw.beta1 = args.get_double("beta1", o.adamw.beta1, 0.0, 0.999999);
    o.adamw.beta2 = args.get_double("beta2", o.adamw.beta2, 0.0, 0.999999);
    o.adamw.eps = args.get_double("adam-eps", o.adamw.eps, 0.0, 1.0);
    o.adamw.weight_decay = args.get_double("weight-decay", o.adamw.weight_decay, 0.0, 10.0);
    o.grad_clip = args.get_double("grad-clip", o.grad_clip, 0.0, 1e9);
    o.dropout = args.get_double("dropout", 0.0, 0.0, 0.95);
    o.chunk = static_cast<int>(args.get_int("chunk", o.chunk, 0, 1 << 20));
    o.average_decay = args.get_double("ema-decay", 0.0, 0.0, 0.999999);
    o.seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, INT64_MAX));
    o.validation_fraction = args.get_double("val-fraction", o.validation_fraction, 1e-6, 0.999999);
    o.log_every = args.get_int("log-every", o.log_every, 1, int64_t(1) << 40);
    o.eval_every = args.get_int("eval-every", o.eval_every, 0, int64_t(1) << 40);
    o.save_every = args.get_int("save-every", o.save_every, 0, int64_t(1) << 40);
    o.eval_window = static_cast<int>(args.get_int("eval-window", o.eval_window, 1, 1 << 20));
    o.time_limit_s = args.get_double("time-limit", 0.0, 0.0, 1e9);
    o.threads = static_cast<int>(args.get_int("threads", 0, 0, 4096));
    o.device = args.get_or("device", "cpu");
    const bool overwrite = args.has("overwrite");
    args.finish();
    // Inputs that are FIFOs or directories get their own line here, never a reader that blocks.
    for (const std::string& path : {o.data_path, o.config_path, o.tokenizer_path})
        if (!path.empty()) require_regular_file(path);
    check_memory(estimated_training_bytes(load_config(o.config_path), o),
                 "training with --batch " + std::to_string(o.batch) + " --seq-len " + std::to_string(o.seq_len));
    const train::RunDirectoryLock lock(o.out_dir);  // held until the run ends
    std::string notice;
    const std::optional<train::CheckpointInfo> resumed = train::prepare_run_directory(o, overwrite, &notice);
    if (!notice.empty()) std::fprintf(stderr, "retnet train: %s\n", shown(notice).c_str());
    if (resumed && already_complete(*resumed, o)) return 0;

    InterruptGuard interrupt;
    const auto on_progress = [](const train::TrainProgress& p) {
        if (p.is_validation) {
            std::printf("step %6lld/%lld  validation loss %.4f  bits/char %.4f%s%s\n",
                        static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.val_loss,
                        p.val_bpc, p.message.empty() ? "" : "  ", p.message.c_str());
        } else if (!p.message.empty()) {
            std::printf("step %6lld/%lld  %s\n", static_cast<long long>(p.step),
                        static_cast<long long>(p.total_steps), p.message.c_str());
        } else {
            std::printf("step %6lld/%lld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s\n",
                        static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss, p.lr,
                        p.grad_norm, p.tokens_per_s, format_duration(p.elapsed_s).c_str(),
                        format_duration(p.eta_s).c_str());
        }
        std::fflush(stdout);
    };
    const train::TrainResult r = train::run_training(o, on_progress, &interrupt.flag());
    if (r.interrupted) {
        std::printf("interrupted at step %lld/%lld; checkpoint saved in %s/checkpoint (continue with --resume)\n",
                    static_cast<long long>(r.steps_done), static_cast<long long>(r.total_steps), shown(o.out_dir).c_str());
        return 130;
    }
    std::printf("done: %lld steps in %s, last loss %.4f, best validation loss %.4f (%.4f bits/char) in %s/best\n",
                static_cast<long long>(r.steps_done), format_duration(r.elapsed_s).c_str(), r.last_loss,
                r.best_val_loss, r.best_val_bpc, shown(o.out_dir).c_str());
    return 0;
}

const Command reg("train",
                  "retnet train --data FILE --config CONFIG.json --out DIR [--tokenizer MODEL] [--steps N] "
                  "[--batch B] [--seq-len T] [--lr LR] [--warmup N] [--weight-decay W] [--grad-clip C] [--dropout P] [--ema-decay D] "
                  "[--chunk C] [--device cpu|cuda|cuda-tf32|cuda-bf16] [--eval-every N] [--save-every N] [--time-limit SECONDS] [--threads N] [--resume | --overwrite]",
                  &run_train);

}  // namespace
}  // namespace retnet::cli
