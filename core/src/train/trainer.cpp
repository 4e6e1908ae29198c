// SPDX-License-Identifier: GPL-3.0-or-later
// The training loop: data windows, AdamW steps, periodic validation, atomic checkpoints, resume.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "retnet/communicator.h"
#include "retnet/cpu_ops.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/json_text.h"
#include "retnet/model_stats.h"
#include "retnet/run_directory.h"
#include "retnet/safetensors.h"
#include "retnet/train_device.h"
#include "retnet/trainer.h"
#include "retnet/utf8.h"

namespace retnet::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A float as its shortest exact-enough text ("-1e-30", "nan"): std::to_string prints tiny values as 0.
std::string format_value(float x) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", static_cast<double>(x));
    return text;
}

constexpr int kStateVersion = 1;

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

fs::path fresh_tmp_dir(const fs::path& final_dir) {
    const fs::path tmp = final_dir.string() + ".tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    return tmp;
}

// The parts of the options that must not change across a resume (they define the run).
json run_identity(const TrainOptions& o) {
    json identity = {{"batch", o.batch},
            {"seq_len", o.seq_len},
            {"lr", o.lr},
            {"min_lr_ratio", o.min_lr_ratio},
            {"warmup", o.warmup},
            {"beta1", o.adamw.beta1},
            {"beta2", o.adamw.beta2},
            {"eps", o.adamw.eps},
            {"weight_decay", o.adamw.weight_decay},
            {"grad_clip", o.grad_clip},
            {"dropout", o.dropout},
            {"chunk", o.chunk},
            {"seed", o.seed},
            {"validation_fraction", o.validation_fraction}};
    // Only when on, so that checkpoints written before averaging (or the twin) existed still resume.
    if (o.average_decay > 0) identity["average_decay"] = o.average_decay;
    if (o.architecture == Architecture::Transformer) identity["architecture"] = "transformer";
    return identity;
}

// Names the options of `run` (a checkpoint's run_identity) that differ from `ours` as the command
// line spells them, so a refused resume says which flag to change instead of showing both sets.
std::string identity_differences(const json& run, const json& ours) {
    static constexpr std::pair<const char*, const char*> kFlags[] = {
            {"architecture", "--arch"},   {"batch", "--batch"},         {"seq_len", "--seq-len"},
            {"lr", "--lr"},               {"min_lr_ratio", "--min-lr-ratio"}, {"warmup", "--warmup"},
            {"beta1", "--beta1"},         {"beta2", "--beta2"},         {"eps", "--adam-eps"},
            {"weight_decay", "--weight-decay"}, {"grad_clip", "--grad-clip"}, {"dropout", "--dropout"},
            {"chunk", "--chunk"},         {"seed", "--seed"},           {"validation_fraction", "--val-fraction"},
            {"average_decay", "--ema-decay"}};
    // An absent key is the option's default: run_identity writes these two only when they are on.
    const auto shown = [](const json& j, const std::string& key) -> std::string {
        if (j.is_object() && j.contains(key)) return j.at(key).is_string() ? j.at(key).get<std::string>() : j.at(key).dump();
        return key == "architecture" ? "retnet" : "0";
    };
    std::string out;
    for (const auto& [key, flag] : kFlags) {
        const std::string theirs = shown(run, key), mine = shown(ours, key);
        if (theirs == mine) continue;
        out += (out.empty() ? "" : ", ") + std::string(flag) + " " + theirs + " (this command: " + mine + ")";
    }
    return out;
}

struct RunState {
    std::vector<float> params;
    AdamWState adam;
    std::vector<float> average;  // empty unless TrainOptions::average_decay > 0
    std::mt19937_64 rng;
    int64_t total_steps = 0;
    double best_val_loss = INFINITY, best_val_bpc = INFINITY;
    double elapsed_s = 0;  // training time of earlier sessions
    bool schedule_fixed = false;  // total_steps already shrunk to the time limit
    bool validation_pending = false;  // the validation after `step` was cut short: a resume runs it first
};

// A vector of the run's state lent to a tensor for a write, given back however the write ends: the
// moments and the average are written without copies (three copies of a large model's weights made
// the save the run's peak of host memory).
class LentValues {
public:
    LentValues(std::vector<float>& owner, Tensor& borrower) : owner_(owner), borrower_(borrower) {
        borrower_.shape = {static_cast<int64_t>(owner.size())};
        borrower_.data.swap(owner_);
    }
    ~LentValues() { borrower_.data.swap(owner_); }
    LentValues(const LentValues&) = delete;
    LentValues& operator=(const LentValues&) = delete;

private:
    std::vector<float>& owner_;
    Tensor& borrower_;
};

void save_checkpoint(const fs::path& out, const ModelConfig& config, const ParamLayout& layout,
                     const TrainOptions& options, RunState& s, const std::string& tokenizer_bytes,
                     double elapsed_s) {
    const fs::path final_dir = out / "checkpoint";
    const fs::path tmp = fresh_tmp_dir(final_dir);
    save_trained_weights(config, layout, s.params, tmp.string());
    write_file_atomically((tmp / "tokenizer.model").string(), tokenizer_bytes);
    {
        Tensor m, v, average;
        const LentValues lend_m(s.adam.m, m), lend_v(s.adam.v, v);
        std::vector<NamedTensor> tensors = {{"adamw.m", &m}, {"adamw.v", &v}};
        std::optional<LentValues> lend_average;
        if (!s.average.empty()) {
            lend_average.emplace(s.average, average);
            tensors.push_back({"average", &average});
        }
        write_safetensors((tmp / "optimizer.safetensors").string(), tensors,
                          {{"step", std::to_string(s.adam.step)}});
    }
    std::ostringstream rng;
    rng << s.rng;
    json state = {{"version", kStateVersion},
                  {"step", s.adam.step},
                  {"total_steps", s.total_steps},
                  {"schedule_fixed", s.schedule_fixed},
                  {"validation_pending", s.validation_pending},
                  {"data_rng", rng.str()},
                  {"best_val_loss", std::isfinite(s.best_val_loss) ? json(s.best_val_loss) : json(nullptr)},
                  {"best_val_bpc", std::isfinite(s.best_val_bpc) ? json(s.best_val_bpc) : json(nullptr)},
                  {"elapsed_s", elapsed_s},
                  {"data", options.data_path},
                  {"run", run_identity(options)}};
    write_file_atomically((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
    swap_in_directory(tmp, final_dir);
}

void save_best(const fs::path& out, const ModelConfig& config, const ParamLayout& layout,
               const std::vector<float>& params, const std::string& tokenizer_bytes, int64_t step,
               double val_loss, double val_bpc) {
    const fs::path final_dir = out / "best";
    const fs::path tmp = fresh_tmp_dir(final_dir);
    save_trained_weights(config, layout, params, tmp.string());
    write_file_atomically((tmp / "tokenizer.model").string(), tokenizer_bytes);
    json info = {{"step", step}, {"val_loss", val_loss}, {"val_bits_per_char", val_bpc}};
    write_file_atomically((tmp / "training.json").string(), info.dump(2) + "\n");
    swap_in_directory(tmp, final_dir);
}

// A field of trainer_state.json, a file a user may have edited or a crash truncated: one line naming
// the field when it is missing or of the wrong type.
template <typename T>
T state_field(const json& state, const char* name, const std::string& path) {
    if (!state.is_object() || !state.contains(name)) throw Error(path + ": missing field '" + name + "'");
    try {
        return state.at(name).get<T>();
    } catch (const json::exception&) {
        throw Error(path + ": field '" + name + "' has the wrong type (" + state.at(name).dump().substr(0, 80) + ")");
    }
}

// A best validation number: null before the first validation.
double optional_state_number(const json& state, const char* name, const std::string& path) {
    if (state.is_object() && state.contains(name) && state.at(name).is_null()) return INFINITY;
    return state_field<double>(state, name, path);
}

json read_state(const std::string& state_path) {
    json state;
    try {
        state = parse_json_bounded(read_file(state_path));
    } catch (const json::exception& e) {
        throw Error(state_path + ": not valid JSON (" + json_error_text(e) + ")");
    }
    if (!state.is_object() || state.value("version", 0) != kStateVersion)
        throw Error(state_path + ": unknown version");
    return state;
}

// Refuses to continue the checkpoint in `dir` (its trainer_state.json `state`) with options that
// define another run: one line naming each changed option, the model config (`config`, the
// options' model) among them. A changed --arch changes the config too; only --arch is named then.
void check_same_run(const json& state, const std::string& state_path, const fs::path& dir, const TrainOptions& o,
                    const ModelConfig& config) {
    const json run = state_field<json>(state, "run", state_path), ours = run_identity(o);
    std::string differences = identity_differences(run, ours);
    const std::string config_path = (dir / "config.json").string();
    const auto architecture = [](const json& j) {
        return j.is_object() && j.contains("architecture") ? j.at("architecture") : json();
    };
    const bool same_arch = architecture(run) == architecture(ours);
    const bool same_config = !same_arch || config_to_json(load_config(config_path)) == config_to_json(config);
    if (!same_config)
        differences += (differences.empty() ? "" : ", ") + std::string("--config ") + o.config_path +
                       " (not the model of the run, " + config_path + ")";
    if (run != ours || !same_config)
        throw Error(state_path + ": the run was started with other options: " +
                    (differences.empty() ? run.dump() : differences) + "; resume with the run's options");
}

// `cancelled` is asked before each tensor of the weights and of the optimizer's state (together
// three times the model's size): true throws retnet::Cancelled.
void load_checkpoint(const fs::path& dir, const ModelConfig& config, const ParamLayout& layout,
                     const TrainOptions& options, RunState& s, const std::function<bool()>& cancelled) {
    const std::string state_path = (dir / "trainer_state.json").string();
    const json state = read_state(state_path);
    check_same_run(state, state_path, dir, options, config);
    LoadedWeights w = load_trained_weights(dir.string(), [&cancelled](double) { return !(cancelled && cancelled()); });
    s.params = std::move(w.params);
    SafetensorsFile opt((dir / "optimizer.safetensors").string());
    // Each of these is as large as the weights: allocated and read in slices with Ctrl-C between
    // them (zeroing 2 × 3 GB of fresh pages in one call kept a Ctrl-C waiting 9–12 s).
    // A value no run can have written (not finite; a negative second moment) is refused here: the
    // run would go on from it and save NaN weights, or end as "training diverged".
    const auto read_moment = [&](const char* name, std::vector<float>& dst, bool non_negative) {
        if (opt.info(name).numel() != layout.total)
            throw Error(opt.path() + ": " + name + " does not match the model's parameter count");
        const size_t n = static_cast<size_t>(layout.total);
        dst.clear();
        dst.reserve(n);
        while (dst.size() < n) {
            throw_if_cancelled(cancelled);
            const size_t first = dst.size(), count = std::min(n - first, SafetensorsFile::kReadSlice);
            dst.resize(first + count);
            opt.read_range_into(name, first, count, dst.data() + first);
            for (size_t i = first; i < dst.size(); ++i)
                if (!std::isfinite(dst[i]) || (non_negative && dst[i] < 0.0f))
                    throw Error(opt.path() + ": " + name + " holds " + format_value(dst[i]) + " at index " +
                                std::to_string(i) + (non_negative ? " (AdamW's second moments are finite and never negative)"
                                                                  : " (not a finite number)") +
                                "; the checkpoint is corrupt");
        }
    };
    read_moment("adamw.m", s.adam.m, false);
    read_moment("adamw.v", s.adam.v, true);
    if (options.average_decay > 0) {
        if (!opt.contains("average")) throw Error(opt.path() + ": no parameter average (tensor 'average') to resume");
        read_moment("average", s.average, false);
    }
    s.adam.step = state_field<int64_t>(state, "step", state_path);
    // an optimizer.safetensors copied in from another checkpoint would resume the weights of one
    // step with the moments of another
    check_optimizer_step(opt.metadata(), opt.path(), s.adam.step, state_path);
    s.total_steps = state_field<int64_t>(state, "total_steps", state_path);
    s.schedule_fixed = state_field<bool>(state, "schedule_fixed", state_path);
    // absent from the checkpoints written before 2026-12-05: none owed a validation
    s.validation_pending = state.contains("validation_pending") && state_field<bool>(state, "validation_pending", state_path);
    // A generator state that does not parse would leave the seed's generator in place and resume
    // with other batches than the run would have drawn: refused, not continued inexactly.
    std::istringstream rng(state_field<std::string>(state, "data_rng", state_path));
    rng >> s.rng;
    if (rng.fail() || !(rng >> std::ws).eof())
        throw Error(state_path + ": field 'data_rng' is not a saved data generator state");
    s.best_val_loss = optional_state_number(state, "best_val_loss", state_path);
    s.best_val_bpc = optional_state_number(state, "best_val_bpc", state_path);
    s.elapsed_s = state_field<double>(state, "elapsed_s", state_path);
}

}  // namespace

ModelConfig run_config(const TrainOptions& o) {
    return config_for_architecture(load_config(o.config_path), o.architecture, o.config_path);
}

void check_resume_options(const TrainOptions& options, const std::string& checkpoint_dir) {
    const std::string state_path = (fs::path(checkpoint_dir) / "trainer_state.json").string();
    check_same_run(read_state(state_path), state_path, checkpoint_dir, options, run_config(options));
}

namespace {

// What the options define, read once: tokenizer, model shape and the two parts of the data.
struct RunSetup {
    std::string tokenizer_bytes;
    Tokenizer tokenizer;
    ModelConfig config;
    ParamLayout layout;
    std::vector<int32_t> train_tokens;
    std::string val_text;
};

RunSetup load_run_setup(const TrainOptions& o, const fs::path& out, Communicator& comm) {
    // Tokenizer: the given file, else (on resume) the checkpoint's, which only rank 0's host may
    // hold: rank 0 reads it and sends it to the other ranks.
    std::string tokenizer_path = o.tokenizer_path, tokenizer_bytes;
    if (comm.rank() == 0) {
        if (tokenizer_path.empty() && o.resume) tokenizer_path = (resume_checkpoint(out) / "tokenizer.model").string();
        if (tokenizer_path.empty())
            throw Error("no tokenizer: pass --tokenizer FILE (train one with `retnet tokenizer train`)");
        tokenizer_bytes = read_file(tokenizer_path);
    }
    comm.broadcast(tokenizer_path, 0);
    comm.broadcast(tokenizer_bytes, 0);
    Tokenizer tokenizer = Tokenizer::from_serialized(tokenizer_bytes, tokenizer_path);
    ModelConfig config = run_config(o);
    if (config.vocab_size != tokenizer.vocab_size())
        throw Error(o.config_path + ": vocab_size = " + std::to_string(config.vocab_size) + " but " +
                    tokenizer_path + " has " + std::to_string(tokenizer.vocab_size()) + " pieces");
    ParamLayout layout = make_param_layout(config);

    const std::string text = read_file(o.data_path);
    check_utf8(text, o.data_path);
    const auto [train_text, val_text] = split_tail(text, o.validation_fraction);
    std::vector<int32_t> train_tokens = tokenizer.encode(train_text);
    if (static_cast<int64_t>(train_tokens.size()) < o.seq_len + 2)
        throw Error(o.data_path + ": the training part has " + std::to_string(train_tokens.size()) +
                    " tokens, fewer than seq-len + 2");
    return RunSetup{std::move(tokenizer_bytes), std::move(tokenizer), std::move(config), std::move(layout),
                    std::move(train_tokens), std::string(val_text)};
}

uint64_t fnv1a(std::span<const std::byte> bytes, uint64_t h = 1469598103934665603ull) {
    for (const std::byte b : bytes) h = (h ^ static_cast<uint64_t>(b)) * 1099511628211ull;
    return h;
}

// Every rank must train on the same text, model and options, or the ranks would silently train
// different models (another --data on another host). A rank that differs from rank 0 says so.
void check_same_setup(const TrainOptions& o, const RunSetup& r, Communicator& comm) {
    if (comm.size() == 1) return;
    const json what = {{"config", config_to_json(r.config)}, {"run", run_identity(o)},   {"steps", o.steps},
                       {"device", o.device},                 {"eval_every", o.eval_every},
                       {"save_every", o.save_every},         {"eval_window", o.eval_window},
                       {"time_limit_s", o.time_limit_s}};
    const std::string text = what.dump();
    uint64_t h = fnv1a(std::as_bytes(std::span(text)));
    h = fnv1a(std::as_bytes(std::span(r.train_tokens)), h);
    h = fnv1a(std::as_bytes(std::span(r.val_text)), h);
    uint64_t root = h;
    comm.broadcast(std::span(&root, 1), 0);
    if (h != root)
        throw Error("rank " + std::to_string(comm.rank()) + ": --data, --config or the options differ from rank 0's "
                    "(every rank must train on the same text, model and options)");
}

// The ranks start from rank 0's state: the same weights, moments, data position and schedule.
void share_state(Communicator& comm, const ParamLayout& layout, RunState& s) {
    if (comm.size() == 1) return;
    const auto finite_or_null = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
    std::string scalars;
    if (comm.rank() == 0) {
        std::ostringstream rng;
        rng << s.rng;
        scalars = json{{"step", s.adam.step},
                       {"total_steps", s.total_steps},
                       {"schedule_fixed", s.schedule_fixed},
                       {"validation_pending", s.validation_pending},
                       {"rng", rng.str()},
                       {"best_val_loss", finite_or_null(s.best_val_loss)},
                       {"best_val_bpc", finite_or_null(s.best_val_bpc)},
                       {"elapsed_s", s.elapsed_s},
                       {"averaging", !s.average.empty()}}
                      .dump();
    }
    comm.broadcast(scalars, 0);
    if (comm.rank() != 0) {
        const json j = json::parse(scalars);
        s.params.resize(static_cast<size_t>(layout.total));
        s.adam = make_adamw_state(layout);
        s.adam.step = j.at("step").get<int64_t>();
        s.total_steps = j.at("total_steps").get<int64_t>();
        s.schedule_fixed = j.at("schedule_fixed").get<bool>();
        s.validation_pending = j.at("validation_pending").get<bool>();
        std::istringstream rng(j.at("rng").get<std::string>());
        rng >> s.rng;
        if (!j.at("best_val_loss").is_null()) s.best_val_loss = j.at("best_val_loss").get<double>();
        if (!j.at("best_val_bpc").is_null()) s.best_val_bpc = j.at("best_val_bpc").get<double>();
        s.elapsed_s = j.at("elapsed_s").get<double>();
        if (j.at("averaging").get<bool>()) s.average.resize(s.params.size());
    }
    for (std::vector<float>* v : {&s.params, &s.adam.m, &s.adam.v, &s.average}) comm.broadcast(std::span(*v), 0);
}

// The state to start from: the checkpoint's on resume, else a random model at step 0 (rank 0's,
// shared with the other ranks). `cancelled` stops the checkpoint's load between tensors, the
// random weights between layers, and is asked once more when the state is complete
// (retnet::Cancelled).
RunState initial_state(const TrainOptions& o, const RunSetup& r, const fs::path& out, Communicator& comm,
                       const std::function<bool()>& cancelled,
                       const std::function<void(const TrainProgress&)>& on_progress) {
    RunState s;
    if (comm.rank() == 0 && o.resume) {
        load_checkpoint(resume_checkpoint(out), r.config, r.layout, o, s, cancelled);
        if (!s.schedule_fixed && o.steps != s.total_steps) s.total_steps = o.steps;
    } else if (comm.rank() == 0) {
        // seconds for a billion parameters, before the first step's line
        if (on_progress && r.layout.total >= 100'000'000) {
            TrainProgress p;
            p.total_steps = o.steps;
            p.message = "drawing the random weights of " + format_count(r.layout.total) + " parameters";
            on_progress(p);
        }
        s.params = flatten_weights(make_random_model(r.config, o.seed, cancelled), r.layout);
        s.adam = make_adamw_state(r.layout);
        s.rng.seed(o.seed);
        s.total_steps = o.steps;
        if (o.average_decay > 0) s.average = s.params;
    }
    throw_if_cancelled(cancelled);  // the last tensors, the moments' allocation
    share_state(comm, r.layout, s);
    return s;
}

// One call of run_training: the loop's steps, each a method. The device holds the parameters and
// moments between host syncs (before validation and checkpoints); s.adam.step mirrors its step count.
class Session {
public:
    using clock = std::chrono::steady_clock;

    // `setup_cancelled` stops the setup (retnet::Cancelled; see run_training): the initial state's
    // load or draw, and before the upload to the device.
    Session(const TrainOptions& o, const std::function<void(const TrainProgress&)>& on_progress,
            const std::function<bool()>& setup_cancelled)
        : o_(o), out_(o.out_dir), comm_(o.communicator ? *o.communicator : single_process_),
          shard_(batch_shard(o.batch, comm_.rank(), comm_.size())), writer_(comm_.rank() == 0),
          on_progress_(writer_ ? on_progress : std::function<void(const TrainProgress&)>()),
          setup_(load_run_setup(o, out_, comm_)),
          // Every rank checks its inputs against rank 0's before taking rank 0's state.
          s_((check_same_setup(o, setup_, comm_), initial_state(o, setup_, out_, comm_, setup_cancelled, on_progress_))),
          // A device that cannot apply dropout refuses it in its factory (one line naming the device).
          device_(make_train_device(o.device, setup_.config, setup_.layout,
                                    TrainDeviceOptions{o.chunk, o.dropout, &comm_})),
          inputs_(static_cast<size_t>(shard_.count) * static_cast<size_t>(o.seq_len)), targets_(inputs_.size()),
          start_dist_(0, static_cast<int64_t>(setup_.train_tokens.size()) - o.seq_len - 1),
          first_step_(s_.adam.step) {
        // Making a device may allocate its copies at once (seconds for a large model on a GPU); the
        // upload that follows copies into them: asked between the two.
        throw_if_cancelled(setup_cancelled);
        device_->upload(s_.params, s_.adam);
        if (averaging()) device_->set_average(s_.average, o.average_decay);
        session_start_ = steps_start_ = window_start_ = clock::now();
    }

    TrainResult run(const std::atomic<bool>* stop) {
        TrainResult result;
        stop_ = stop;
        // Ctrl-C while the inputs were read: nothing was trained, so nothing is saved (a fresh run
        // leaves no checkpoint of step 0, and the run --overwrite would replace stays).
        if (any_rank(stop && stop->load())) {
            result.interrupted = true;
            result.started = false;
        } else if (writer_ && o_.on_started) {
            o_.on_started();
        }
        if (result.started && s_.validation_pending) {
            if (!validate_owed()) result.interrupted = result.interrupted_in_validation = true;
            steps_start_ = window_start_ = clock::now();  // tokens/s, the ETA and --time-limit time steps alone
        }
        while (result.started && !result.interrupted && s_.adam.step < s_.total_steps) {
            if (any_rank(stop && stop->load())) {
                result.interrupted = true;
                break;
            }
            result.last_loss = train_step();
            ++result.steps_trained;
            fit_schedule_to_time_limit();
            report_window();
            if (!validate_and_save()) {
                result.interrupted = result.interrupted_in_validation = true;
                break;
            }
        }
        // (a checkpoint of this very step may have just been written by validate_and_save)
        if (result.interrupted && result.started && saved_step_ != s_.adam.step) {
            sync_from_device();
            check_ranks_agree();
            checkpoint();
        }
        result.steps_done = s_.adam.step;
        result.total_steps = s_.total_steps;
        result.best_val_loss = s_.best_val_loss;
        result.best_val_bpc = s_.best_val_bpc;
        result.elapsed_s = elapsed();
        return result;
    }

private:
    // The weights validated and kept in best/: the average when it is on.
    bool averaging() const { return !s_.average.empty(); }
    double elapsed() const { return s_.elapsed_s + std::chrono::duration<double>(clock::now() - session_start_).count(); }
    int64_t tokens_per_step() const { return static_cast<int64_t>(o_.batch) * o_.seq_len; }
    TrainProgress progress() const {
        TrainProgress p;
        p.step = s_.adam.step;
        p.total_steps = s_.total_steps;
        return p;
    }

    // Whether a flag is raised on any rank (Ctrl-C reaches the ranks at different moments; they
    // must stop after the same step).
    bool any_rank(bool flag) {
        double raised = flag ? 1.0 : 0.0;
        comm_.all_reduce_sum(std::span(&raised, 1));
        return raised > 0;
    }

    // The global batch: random contiguous windows of the training tokens, drawn from the run's
    // RNG. Every rank draws all of them (so the generator stays the same everywhere) and keeps
    // its shard.
    BatchView next_batch() {
        const std::vector<int32_t>& tokens = setup_.train_tokens;
        for (int b = 0; b < o_.batch; ++b) {
            const int64_t start = start_dist_(s_.rng);
            if (b < shard_.first || b >= shard_.first + shard_.count) continue;
            const int row = (b - shard_.first) * o_.seq_len;
            for (int t = 0; t < o_.seq_len; ++t) {
                inputs_[static_cast<size_t>(row + t)] = tokens[static_cast<size_t>(start + t)];
                targets_[static_cast<size_t>(row + t)] = tokens[static_cast<size_t>(start + t + 1)];
            }
        }
        return BatchView{inputs_.data(), targets_.data(), shard_.count, o_.seq_len};
    }

    // The global batch's mean loss from the shards' (of equal size).
    double mean_over_ranks(double shard_loss) {
        if (comm_.size() == 1) return shard_loss;
        comm_.all_reduce_sum(std::span(&shard_loss, 1));
        return shard_loss / comm_.size();
    }

    double train_step() {
        const int64_t step = s_.adam.step;
        const BatchView batch = next_batch();
        const uint64_t dropout_seed = o_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step);
        lr_ = learning_rate(step, s_.total_steps, o_.warmup, o_.lr, o_.min_lr_ratio);
        const double loss = mean_over_ranks(device_->step(batch, o_.grad_clip, o_.adamw, lr_, dropout_seed, &grad_norm_));
        s_.adam.step += 1;
        if (!std::isfinite(loss))
            throw Error("training diverged: loss is " + std::to_string(loss) + " at step " + std::to_string(step));
        window_loss_ += loss;
        window_steps_ += 1;
        return loss;
    }

    // Fits the schedule into the time limit once the speed is known (after 10 steps).
    void fit_schedule_to_time_limit() {
        if (!(o_.time_limit_s > 0) || s_.schedule_fixed || s_.adam.step - first_step_ != 10) return;
        const double per_step = std::chrono::duration<double>(clock::now() - steps_start_).count() / 10.0;
        // A validation pass is a forward over the validation tokens: about a third of a training
        // step's work per token; count half to stay on the safe side, plus a second for the
        // checkpoint written with it. Solve steps·per_step + evals·eval_cost ≤ budget.
        const double val_tokens = static_cast<double>(setup_.tokenizer.encode(setup_.val_text).size());
        const double eval_cost = 1.0 + per_step * 0.5 * val_tokens / static_cast<double>(tokens_per_step());
        const double budget = o_.time_limit_s - elapsed() - 10.0 - eval_cost;
        const double cost_per_step = per_step + (o_.eval_every > 0 ? eval_cost / static_cast<double>(o_.eval_every) : 0.0);
        int64_t fit = s_.adam.step + std::max<int64_t>(0, static_cast<int64_t>(budget / cost_per_step));
        comm_.broadcast(std::span(&fit, 1), 0);  // rank 0's clock decides for all
        if (fit < s_.total_steps) {
            s_.total_steps = std::max<int64_t>(s_.adam.step + 1, fit);
            if (on_progress_) {
                TrainProgress p = progress();
                p.message = "time limit: schedule shortened to " + std::to_string(s_.total_steps) + " steps";
                on_progress_(p);
            }
        }
        s_.schedule_fixed = true;
    }

    // Every log_every steps and at the end: the mean loss and the speed since the last report.
    void report_window() {
        const bool last = s_.adam.step == s_.total_steps;
        if (!on_progress_ || !(s_.adam.step % std::max<int64_t>(1, o_.log_every) == 0 || last)) return;
        const double window_s = std::chrono::duration<double>(clock::now() - window_start_).count();
        TrainProgress p = progress();
        p.loss = window_loss_ / static_cast<double>(window_steps_);
        p.lr = lr_;
        p.grad_norm = grad_norm_;
        p.tokens_per_s = static_cast<double>(tokens_per_step() * window_steps_) / std::max(window_s, 1e-9);
        p.elapsed_s = elapsed();
        p.eta_s = static_cast<double>(s_.total_steps - s_.adam.step) * window_s / static_cast<double>(window_steps_);
        on_progress_(p);
        window_loss_ = 0;
        window_steps_ = 0;
        window_start_ = clock::now();
    }

    // False where a stop cut the validation short (its checkpoint saved, owing it).
    bool validate_and_save() {
        const bool last = s_.adam.step == s_.total_steps;
        // Validation and checkpoints are not training time: keep them out of tokens/s and the ETA.
        const auto pause_start = clock::now();
        const bool want_eval = (o_.eval_every > 0 && s_.adam.step % o_.eval_every == 0) || last;
        const bool want_save = (o_.save_every > 0 && s_.adam.step % o_.save_every == 0) || last;
        if (want_eval || want_save) sync_from_device();
        if (want_save) check_ranks_agree();
        if (want_eval && !validate_or_owe_it()) return false;
        if (want_save) checkpoint();
        window_start_ += clock::now() - pause_start;
        return true;
    }

    // The validation of the current step. Where it is cut short the checkpoint of the step is saved
    // owing it (validation_pending: a resume runs it first): after a stop, between batches of
    // windows, this returns false; after a failure (out of memory, ...) the error is thrown on.
    bool validate_or_owe_it() {
        const std::string step = std::to_string(s_.adam.step);
        try {
            validate();
            return true;
        } catch (const Cancelled&) {  // every rank saw the stop after the same batch
            s_.validation_pending = true;
            check_ranks_agree();
            checkpoint();
            return false;
        } catch (const std::bad_alloc&) {
            s_.validation_pending = true;
            const std::string failure = "the validation after step " + step + " (" + std::to_string(kEvalBatch) +
                                        " windows of --eval-window " + std::to_string(o_.eval_window) +
                                        " tokens at once) ran out of memory";
            checkpoint_after(failure);  // the run ends here: its steps are not lost with it
            throw OutOfMemory(failure + "; the checkpoint of step " + step +
                              " is saved: --resume it with a lower --eval-window (it runs that validation first)");
        } catch (const std::exception& e) {
            s_.validation_pending = true;
            checkpoint_after(e.what());
            throw;
        } catch (...) {
            s_.validation_pending = true;
            checkpoint_after("the validation after step " + step + " failed");
            throw;
        }
    }

    // A resumed run that owes the validation of its step runs it before the next step (and saves
    // the checkpoint that no longer owes it). False where a stop cut it short again.
    bool validate_owed() {
        if (!validate_or_owe_it()) return false;
        s_.validation_pending = false;
        check_ranks_agree();
        checkpoint();
        return true;
    }

    void sync_from_device() {
        device_->download(s_.params, s_.adam);
        if (averaging()) device_->download_average(s_.average);
    }

    // Every rank holds the same parameters after every step (the same summed gradient, the same
    // update): checked at each checkpoint with a hash of the bits, so a rank that drifted stops the
    // job before rank 0 saves.
    void check_ranks_agree() {
        if (comm_.size() == 1) return;
        const uint64_t mine = bits_hash(s_.params);
        uint64_t root = mine;
        comm_.broadcast(std::span(&root, 1), 0);
        double differing = mine != root ? 1.0 : 0.0;
        comm_.all_reduce_sum(std::span(&differing, 1));
        if (differing > 0)
            throw Error("after step " + std::to_string(s_.adam.step) + " the parameters of " +
                        std::to_string(static_cast<int>(differing)) + " rank(s) differ from rank 0's");
    }

    // The mean loss of a batch of validation windows, the windows shared out over the ranks (as
    // evenly as they go; a rank may get none).
    double validation_loss(const BatchView& v) {
        if (comm_.size() == 1) return device_->loss(v);
        const int first = v.batch * comm_.rank() / comm_.size(), end = v.batch * (comm_.rank() + 1) / comm_.size();
        const size_t offset = static_cast<size_t>(first) * static_cast<size_t>(v.seq_len);
        double sum = 0;
        if (end > first)
            sum = device_->loss(BatchView{v.inputs + offset, v.targets + offset, end - first, v.seq_len}) *
                  (end - first) * v.seq_len;
        comm_.all_reduce_sum(std::span(&sum, 1));
        return sum / (static_cast<double>(v.batch) * v.seq_len);
    }

    // Ctrl-C is asked after each batch of windows (every rank, in step: they share each batch's
    // sum), so a long validation ends at once (retnet::Cancelled) rather than when it is done.
    void validate() {
        if (averaging()) device_->swap_average();
        // A lone process also stops inside a batch (a batch of long windows takes seconds on a CPU).
        if (comm_.size() == 1 && stop_) device_->set_loss_cancelled([stop = stop_] { return stop->load(); });
        EvalResult r;
        try {
            r = evaluate_text([&](const BatchView& v) { return validation_loss(v); }, setup_.tokenizer, setup_.val_text,
                              o_.eval_window, kEvalBatch, [this](int64_t done, int64_t total) {
                                  if (any_rank(stop_ && stop_->load())) return false;
                                  if (writer_ && o_.on_validation_progress)
                                      o_.on_validation_progress(s_.adam.step, done, total);
                                  return true;
                              });
        } catch (...) {
            device_->set_loss_cancelled({});
            if (averaging()) device_->swap_average();
            throw;
        }
        device_->set_loss_cancelled({});
        if (averaging()) device_->swap_average();
        TrainProgress p = progress();
        p.is_validation = true;
        p.val_loss = r.loss_per_token;
        p.val_bpc = r.bits_per_char;
        p.elapsed_s = elapsed();
        if (r.loss_per_token < s_.best_val_loss) {
            s_.best_val_loss = r.loss_per_token;
            s_.best_val_bpc = r.bits_per_char;
            if (writer_)
                save_best(out_, setup_.config, setup_.layout, averaging() ? s_.average : s_.params,
                          setup_.tokenizer_bytes, s_.adam.step, r.loss_per_token, r.bits_per_char);
            p.message = "best so far, saved to best/";
        }
        if (on_progress_) on_progress_(p);
    }

    // The checkpoint of a run that ends with `failure`. Where saving it runs out of memory too,
    // the error says so and which checkpoint the run directory holds (saves are atomic).
    void checkpoint_after(const std::string& failure) {
        try {
            checkpoint();
        } catch (const std::bad_alloc&) {
            const int64_t on_disk = saved_step_ >= 0 ? saved_step_ : o_.resume ? first_step_ : -1;
            throw OutOfMemory(failure + ", and saving the checkpoint of step " + std::to_string(s_.adam.step) +
                              " ran out of memory too; " +
                              (on_disk >= 0 ? (out_ / "checkpoint").string() + " holds step " + std::to_string(on_disk)
                                            : std::string("no checkpoint was saved")));
        }
    }

    void checkpoint() {
        if (writer_) save_checkpoint(out_, setup_.config, setup_.layout, o_, s_, setup_.tokenizer_bytes, elapsed());
        saved_step_ = s_.adam.step;
        if (!on_progress_) return;
        TrainProgress p = progress();
        p.elapsed_s = elapsed();
        p.message = "checkpoint saved";
        on_progress_(p);
    }

    const TrainOptions& o_;
    const fs::path out_;
    SingleProcess single_process_;  // the communicator without options.communicator
    Communicator& comm_;
    const BatchShard shard_;  // this rank's sequences of each global batch
    const bool writer_;       // rank 0: reports progress and writes out_dir
    const std::function<void(const TrainProgress&)> on_progress_;
    const std::atomic<bool>* stop_ = nullptr;  // run()'s
    RunSetup setup_;
    RunState s_;
    std::unique_ptr<TrainDevice> device_;
    std::vector<int32_t> inputs_, targets_;  // (batch, seq_len) each
    std::uniform_int_distribution<int64_t> start_dist_;
    const int64_t first_step_;
    int64_t saved_step_ = -1;  // the step of the last checkpoint this session wrote
    clock::time_point session_start_;
    clock::time_point steps_start_;  // the first step's start: after a validation the resume owed
    double lr_ = 0, grad_norm_ = 0;  // of the last step
    double window_loss_ = 0;         // summed since the last report
    int64_t window_steps_ = 0;
    clock::time_point window_start_;
};

// The result of a run whose setup was stopped: nothing trained; a resume stays at its checkpoint's
// step (read before the load that was stopped), as Session::run reports a stop seen after the setup.
TrainResult stopped_while_starting(const TrainOptions& o) {
    TrainResult r;
    r.interrupted = true;
    r.started = false;
    r.total_steps = o.steps;
    if (o.resume) {
        const std::string state_path = (resume_checkpoint(o.out_dir) / "trainer_state.json").string();
        const json state = read_state(state_path);
        r.steps_done = state_field<int64_t>(state, "step", state_path);
        if (state_field<bool>(state, "schedule_fixed", state_path))
            r.total_steps = state_field<int64_t>(state, "total_steps", state_path);
    }
    return r;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> TrainOptions::named_inputs() const {
    std::vector<std::pair<std::string, std::string>> inputs;
    for (const auto& [option, path] : {std::pair<const char*, const std::string*>{"--data", &data_path},
                                       {"--config", &config_path}, {"--tokenizer", &tokenizer_path}})
        if (!path->empty()) inputs.emplace_back(option, *path);
    return inputs;
}

TrainResult run_training(const TrainOptions& o, const std::function<void(const TrainProgress&)>& on_progress,
                         const std::atomic<bool>* stop) {
    if (o.batch < 1 || o.seq_len < 1 || o.steps < 1) throw Error("batch, seq-len and steps must be at least 1");
    cpu::set_num_threads(o.threads);
    if (!o.communicator || o.communicator->rank() == 0) fs::create_directories(o.out_dir);
    // A stop raised while the initial state loads (a large checkpoint or random model: seconds to
    // minutes) ends the load between tensors, with nothing trained or saved. Only a lone process:
    // the other ranks would wait for rank 0's state in a broadcast; they see the flag when the
    // setup ends, as the first step's poll.
    std::function<bool()> setup_cancelled;
    if (stop && (!o.communicator || o.communicator->size() == 1)) setup_cancelled = [stop] { return stop->load(); };
    std::optional<Session> session;
    try {
        session.emplace(o, on_progress, setup_cancelled);
    } catch (const Cancelled&) {
        return stopped_while_starting(o);
    }
    return session->run(stop);
}

}  // namespace retnet::train
