// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What several subcommands share: finding and loading the model, choosing the backend.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "shared_options.h"
#include "retnet/forward.h"
#include "retnet/intervention.h"
#include "retnet/model.h"

namespace retnet::cli {

// The bundled default model: $RETNET_DEFAULT_MODEL, else resources/models/default next to the
// source tree the executable was built from, else the installed share/ path. "" if none exists.
std::string default_model_dir();

// The --model directory, or the bundled default model's when the option was not given (throws
// retnet::Error naming where it looked when there is none).
std::string model_dir_or_default(const std::string& dir);

// load_model with Ctrl-C caught while it reads (InterruptGuard): a Ctrl-C stops it between tensors
// with retnet::Cancelled, which main() reports as "retnet COMMAND: cancelled" with status 130.
Model load_model_interruptible(const std::string& dir, WeightStorage storage = WeightStorage::F32);

// The model in `dir` (or the bundled default model), with the interventions of --mute L.H,… and
// --gamma H=G,… applied (retnet/intervention.h), announced on stderr. Interruptible as
// load_model_interruptible (bf16 weights kept as stored).
std::shared_ptr<const Model> load_model_edited(const std::string& dir, const InterventionText& edits = {});

// The backend of --device (cpu|cuda|reference). A CUDA request on a machine without a usable GPU
// falls back to the CPU with a one-line notice on stderr. A Ctrl-C while the weights are copied
// (to a GPU: seconds for a large model) throws retnet::Cancelled once they are.
std::unique_ptr<Backend> make_backend_option(const std::string& device, std::shared_ptr<const Model> model);

// A list option such as --lengths 64,256,1024, strictly ("1e9" or "12abc" are refused); every
// value ≥ 1, none twice.
std::vector<int> parse_positive_list(const std::string& option, const std::string& text);
// Throws one line ("option --mode must be one of all, prefill, decode, got 'x'") unless value is known.
void require_one_of(const std::string& option, const std::string& value, const std::vector<std::string>& known);
// The value of --arch: "retnet" or "transformer" (else one line naming the option).
Architecture parse_architecture(const std::string& arch);

// Refuses a --dtype the --device cannot compute with, before any load: bf16 on the reference
// backend, which computes in double from float32 weights (before, the request was dropped: "fp32
// weights (--dtype bf16)").
void check_dtype_for_device(const std::string& dtype, const std::string& device);
// --dtype stored|fp32|bf16: the projections' precision. On CUDA it picks cuda or cuda-bf16 (and
// changes `device`); on the CPU it widens a bf16 checkpoint to float32 or narrows a float32 one to
// bf16 in memory (a Ctrl-C stops the copy between tensors: retnet::Cancelled).
std::shared_ptr<const Model> apply_dtype(const std::string& dtype, std::string& device, std::shared_ptr<const Model> model);
// The backend of --device (make_backend_option: a GPU that is not there falls back to the CPU,
// with a notice) for the model at --dtype: on a GPU the backend converts the weights; on the CPU,
// also after a fall back from the GPU, they are converted here (the fall back kept them as stored).
std::unique_ptr<Backend> make_backend_at_dtype(const std::string& dtype, const std::string& device,
                                               std::shared_ptr<const Model> model);
// Refuses, before any work, decoding `batch` sequences at once on a backend that keeps fewer.
void check_batch_fits(const Backend& backend, int batch, const std::string& option = "--batch");

// Ctrl-C and SIGTERM, from the process's first moment: one handler, installed before the
// libraries' own start-up code runs (main.cpp), serves the whole process and takes both signals
// alike. While no InterruptGuard lives, either ends the process at once with "retnet COMMAND:
// cancelled" on stderr and status 128 + the signal (130, 143): nothing polls then, and nothing has
// been written that a clean stop would remove. The command is named from argv[1] until main()
// confirms it with name_interrupted_command.
void install_interrupt_handler(const char* command);
void name_interrupted_command(const std::string& command);

// The exit status of a command that stopped for a signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM,
// as a shell reports a process the signal ended. Called once the command has said its cancel: a
// signal after it ends the process without saying it again.
int cancelled_status();
// For a signal that came once the work was done and was held until the output was whole: says so
// ("retnet COMMAND: cancelled after the report (json) or table was complete") and gives
// cancelled_status(). Before, such a signal was dropped and the exit was 0.
int cancelled_after_whole_output(const char* command, bool json);

// Ctrl-C (or SIGTERM) during a long command: while an InterruptGuard lives, the signal only raises
// flag(), which the work polls (to stop cleanly: save, print what it has, exit cancelled_status()).
// A second SIGTERM before the work has stopped ends the process at once: it is stuck where it
// cannot poll (a write to a reader that stopped reading). A command whose work polls holds one from
// before its model loads; the loading helpers above hold their own for the load alone, so that
// work that does not poll is ended at once again. Guards nest (all on the main thread): an inner
// one shares the outer one's flag, which only the outermost clears.
class InterruptGuard {
public:
    InterruptGuard();
    ~InterruptGuard();
    InterruptGuard(const InterruptGuard&) = delete;
    InterruptGuard& operator=(const InterruptGuard&) = delete;
    const std::atomic<bool>& flag() const;
    std::atomic<bool>& flag();
    bool raised() const { return flag().load(); }
    // Throws retnet::Cancelled once Ctrl-C came: between steps that do not poll the flag.
    void check() const;
    // For load_model and its kin, asked between tensors: false once Ctrl-C came.
    ProgressCallback progress() const;
    // For make_random_model, asked between layers: true once Ctrl-C came.
    std::function<bool()> cancelled() const;
};

// Progress of work over tokens on stderr: one updating line on a terminal, a line at the start and
// per tenth otherwise (the total may be an estimate that grows while a text streams in), as
// "LABEL: 1200/4096 tokens (29%), 3 s, ETA 7 s" (no ETA before the first piece is done). Nothing
// until `quiet_seconds` have passed, so that short work leaves no lines; on a terminal at most ten
// redraws a second.
class TokenProgressLine {
public:
    explicit TokenProgressLine(std::string label, double quiet_seconds = 0.0);
    void show(int64_t done, int64_t total);

private:
    std::string label_;
    bool terminal_;
    double quiet_seconds_;
    std::chrono::steady_clock::time_point start_;
    double last_drawn_ = -1.0;  // seconds after start_
    int64_t last_tenth_ = -1;
};

// Ends a progress line left open on a terminal (the work was stopped, or its total was an estimate
// it did not reach), so that what is printed next starts a line of its own. Called before any
// other output of a command that shows one: its results, its error or cancel line.
void end_progress_line();

// The bytes of the weights the command holds while it computes, which check_forward_memory counts:
// noted by load_model_edited and make_backend_at_dtype (the copy the backend computes with). Before,
// a forward's working memory was checked alone: generate of a 38 MiB model with a 47 MiB prompt
// passed a 60M limit.
void note_weights_held(uint64_t bytes);

// Refuses (retnet::Error naming `what`, the size and the limit) a forward pass over T tokens whose
// working memory would pass the memory limit (retnet/memory_limit.h): logits (T, V), activations
// (T, d) per layer, and the retention scores (T, T) per head that the parallel form holds
// (chunkwise: (T, chunk)), plus `extra_bytes` the caller keeps besides (inspect's JSON), beside the
// weights the command holds (note_weights_held).
void check_forward_memory(const ModelConfig& config, int64_t T, Form form, int chunk, const std::string& what,
                          uint64_t extra_bytes = 0);
// The bytes check_forward_memory counts for those T tokens, `extra_bytes` aside.
uint64_t forward_memory_bytes(const ModelConfig& config, int64_t T, Form form, int chunk);

// check_forward_memory for a prompt of T tokens prefilled in `form` (generate, a chat turn), naming
// the prompt; the parallel form's refusal points to the forms that need less.
void check_prompt_memory(const ModelConfig& config, int64_t T, Form form, int chunk);

// About how many bytes a model of `config` takes as float32 weights (embedding, output matrix,
// projections and FFN of every layer), before anything is allocated.
uint64_t estimated_weight_bytes(const ModelConfig& config);

// Refuses a model directory whose weights as loaded with `storage` (times `copies`), with
// `held_beside` bytes already in memory, would pass the memory limit: from its config.json (and
// the dtype its safetensors header gives the matrices), before any weight is read.
void check_model_memory(const std::string& dir, uint64_t copies = 1, WeightStorage storage = WeightStorage::F32,
                        uint64_t held_beside = 0);

// Text from a user (a path, a value) fit to print in one line: control characters escaped, long
// text cut in the middle (as in retnet::Error).
std::string shown(const std::string& text);

// A temporary file of a model's write (save_model's `<file>.tmp` for config.json, model.safetensors,
// tokenizer.model, training.json): what a convert or init ended outright (a second SIGTERM) leaves
// behind. It is no one's file: the next write there unlinks and replaces it.
bool is_model_write_leftover(const std::string& name);
// Removes those in `dir` (a link among them is removed, not its target).
void remove_model_write_leftovers(const std::string& dir);
// The name of the first entry of the output directory `out` that is not such a leftover, or "" when
// it holds nothing else; an unreadable directory is an Error naming --out.
std::string first_entry_besides_leftovers(const std::string& out);

// JSON output (indent < 0: one line). Text that is not UTF-8 (a path's bytes) is written with U+FFFD
// for its bad bytes: nlohmann's dump() throws on it, and `info --json` of such a directory failed.
std::string json_text(const nlohmann::json& value, int indent = -1);


// Standard output could not be written: a closed pipe (`retnet generate | head`) or a full disk.
// main() exits quietly with 141 for the pipe (what a shell reports for a tool ended by SIGPIPE)
// and with one line and 1 otherwise.
struct StdoutFailed {
    int error;  // errno of the failed write or flush
};
// Flushes stdout; throws StdoutFailed when that or any earlier write to it failed.
void check_stdout();
// The same without throwing: 0, or the errno of the failure.
int stdout_error();
// Throws StdoutFailed{EPIPE} when standard output is a pipe whose reader has gone: for a failed
// write to descriptor 1 that did not go through stdio (logits --out -).
void check_stdout_reader();

}  // namespace retnet::cli
