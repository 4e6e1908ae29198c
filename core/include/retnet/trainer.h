// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The training loop behind `retnet train`, and the evaluation behind `retnet eval`.
//
// Data: a UTF-8 text file; the last `validation_fraction` of its characters is the validation
// part, the rest is the training part; each is tokenized on its own. Batches are random
// contiguous windows of seq_len + 1 tokens of the training part.
//
// Output directory:
//   checkpoint/  config.json, model.safetensors, tokenizer.model (a loadable model directory)
//                + optimizer.safetensors (AdamW moments) + trainer_state.json (step, schedule,
//                data RNG, options). Written as checkpoint.tmp/ and swapped in by rename, so a
//                crash leaves the previous complete checkpoint.
//   best/        the model files at the lowest validation loss seen so far (same swap).
#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "retnet/communicator.h"
#include "retnet/forward.h"
#include "retnet/model.h"
#include "retnet/tokenizer.h"
#include "retnet/train.h"

namespace retnet::train {

// Number of Unicode code points of valid UTF-8 text.
int64_t count_characters(std::string_view text);
// Splits text so that the second part holds the last `tail_fraction` of its characters
// (the cut falls on a character boundary). fraction in (0, 1).
std::pair<std::string_view, std::string_view> split_tail(std::string_view text, double tail_fraction);

struct EvalResult {
    double loss_per_token = 0;   // nats, mean over predicted tokens
    double bits_per_char = 0;    // total bits / characters those tokens cover
    int64_t tokens = 0;          // predicted tokens
    int64_t characters = 0;      // characters covered by the predicted tokens
};

// Called after each piece of an evaluation with the predicted tokens done so far and in all;
// returning false cancels it (the evaluation throws retnet::Cancelled).
using EvalProgress = std::function<bool(int64_t done, int64_t total)>;

// Windows evaluated at once, by default and in a training run's validation.
inline constexpr int kEvalBatch = 8;

// Loss of predicting tokens[1..] of `text`'s tokenization, in consecutive windows of `window`
// tokens (each window starts from an empty state; window w predicts its tokens from the ones
// before it inside the window). The first token is context only: its characters are not counted.
EvalResult evaluate_text(const ModelConfig& config, const ParamLayout& layout, const float* params,
                         const Tokenizer& tokenizer, std::string_view text, int window, int batch = kEvalBatch,
                         const EvalProgress& progress = {});
// The same with the mean loss of each batch of windows computed by `batch_loss` (a training device).
using BatchLoss = std::function<double(const BatchView&)>;
EvalResult evaluate_text(const BatchLoss& batch_loss, const Tokenizer& tokenizer, std::string_view text,
                         int window, int batch = kEvalBatch, const EvalProgress& progress = {});

// The mean loss of each batch of windows through an inference backend (parallel form, each window
// from an empty state), for models the trainer's forward does not cover (e.g. with interventions).
// `cancelled` is polled before each layer of each window (ForwardOptions::cancelled).
BatchLoss backend_batch_loss(Backend& backend, std::function<bool()> cancelled = {});

// The whole text as one sequence, the recurrent way: the backend's state is carried from the first
// token to the last (forward() on pieces of `piece` tokens in the chunkwise form), so every
// prediction sees all the text before it, not only its window. Same token and character counts
// as evaluate_text. Resets the backend first and leaves it at the end of the text.
EvalResult evaluate_text_streaming(Backend& backend, const Tokenizer& tokenizer, std::string_view text,
                                   int piece = 1024, const EvalProgress& progress = {});

// Reads an fla model directory written by the trainer (config.json + model.safetensors) into the
// flat parameter vector of `layout` (made from the returned config). `progress` as for load_model.
struct LoadedWeights {
    ModelConfig config;
    ParamLayout layout;
    std::vector<float> params;
};
LoadedWeights load_trained_weights(const std::string& directory, const ProgressCallback& progress = {});
// Writes config.json + model.safetensors (F32, fla state_dict names) into `directory`.
void save_trained_weights(const ModelConfig& config, const ParamLayout& layout,
                          std::span<const float> params, const std::string& directory);

struct TrainOptions {
    std::string data_path;       // UTF-8 text
    std::string config_path;     // model config.json (fla keys); vocab_size must match the tokenizer
    // Transformer: train the Transformer twin of config_path's RetNet (or the Llama config it is),
    // config_for_architecture in retnet/model.h.
    Architecture architecture = Architecture::RetNet;
    std::string tokenizer_path;  // tokenizer.model (on --resume: the checkpoint's when empty)
    std::string out_dir;
    bool resume = false;

    // The files the run reads, each with the option that names it: --data, --config, and
    // --tokenizer when given (an empty path is left out). Every check of the inputs walks this one
    // list, so that none of them forgets one.
    std::vector<std::pair<std::string, std::string>> named_inputs() const;

    int64_t steps = 1000;
    int batch = 16;
    int seq_len = 256;
    double lr = 1e-3;
    double min_lr_ratio = 0.1;
    int64_t warmup = 100;
    AdamWConfig adamw;
    double grad_clip = 1.0;
    double dropout = 0;  // training-only: embedding and residual-branch dropout (see LossOptions)
    int chunk = 0;  // 0: parallel retention; > 0: chunkwise with this chunk size (RetNet only)
    // > 0: keep an exponential moving average of the weights (update_average in train.h) and
    // validate and save it to best/ instead of the raw weights.
    double average_decay = 0;
    uint64_t seed = 1;
    double validation_fraction = 0.1;

    int64_t log_every = 10;
    int64_t eval_every = 100;     // 0: only at the end
    int64_t save_every = 100;     // 0: only at the end (and on interruption)
    int eval_window = 256;        // tokens per validation window
    double time_limit_s = 0;      // > 0: shrink the schedule so training ends within this time
    int threads = 0;              // element-wise and per-head threads (0 = all cores)
    std::string device = "cpu";   // "cpu" or a registered training device (retnet/train_device.h)
    // Data parallelism (retnet/communicator.h): every rank runs run_training with the same options
    // and trains on its shard of each global batch of `batch` sequences (batch / ranks each, so the
    // ranks must divide it). Rank 0 sets the initial state (fresh or from the checkpoint) and sends
    // it to the others, and alone reports progress and writes to out_dir. Null: one process.
    Communicator* communicator = nullptr;
    // Called on the writer (rank 0) once the inputs are read, the initial state is made and the
    // device has started, just before the first step: `retnet train` writes a fresh run's run.json
    // and removes the run --overwrite replaces only here (begin_fresh_run in
    // retnet/run_directory.h), so a start that fails, or is interrupted, leaves that run as it was.
    std::function<void()> on_started;
    // Called on the writer after each batch of a validation's windows: the step it follows, the
    // predicted tokens done and in all.
    std::function<void(int64_t step, int64_t done, int64_t total)> on_validation_progress;
};

struct TrainProgress {
    int64_t step = 0, total_steps = 0;
    double loss = 0, lr = 0, grad_norm = 0;
    double tokens_per_s = 0, elapsed_s = 0, eta_s = 0;
    bool is_validation = false;  // val_loss and val_bpc are set
    double val_loss = 0, val_bpc = 0;
    std::string message;  // "checkpoint saved", "schedule set to N steps", ...
};

struct TrainResult {
    int64_t steps_done = 0, total_steps = 0;
    int64_t steps_trained = 0;  // by this call (0: a resume that only ran the validation it owed)
    double last_loss = 0;       // of the last step trained by this call
    double best_val_loss = 0, best_val_bpc = 0;
    double elapsed_s = 0;
    bool interrupted = false;
    bool interrupted_in_validation = false;  // the validation after steps_done was stopped (its checkpoint saved)
    bool started = true;  // false: interrupted before the first step, while the inputs were read (nothing saved)
};

// The config a run trains: config_path's, made the options' architecture (config_for_architecture).
ModelConfig run_config(const TrainOptions& options);

// Refuses (retnet::Error, one line naming each option that differs, as the command line spells it)
// to continue the checkpoint in `checkpoint_dir` with options that define another run: batch,
// seq-len, the schedule, AdamW, clipping, dropout, chunk, seed, validation fraction, weight
// average, architecture, model config. Reads only trainer_state.json and config.json, so a
// finished run is checked as cheaply as one that continues; run_training checks the same.
void check_resume_options(const TrainOptions& options, const std::string& checkpoint_dir);

// Runs (or, with options.resume, continues) training. `stop` is polled after every step and after
// each batch of a validation's windows: when it becomes true the loop saves a checkpoint and
// returns with interrupted = true (and interrupted_in_validation where a validation was stopped:
// the checkpoint holds the steps before it and owes that validation, which a resume runs first); raised before the
// first step (while the inputs were read) it saves nothing and returns with started = false too.
// A lone process also polls it while the initial state is made: between the tensors of the
// checkpoint a resume loads, between the layers of a fresh run's random weights.
TrainResult run_training(const TrainOptions& options,
                         const std::function<void(const TrainProgress&)>& on_progress,
                         const std::atomic<bool>* stop = nullptr);

}  // namespace retnet::train
