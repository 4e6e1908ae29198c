// SPDX-License-Identifier: GPL-3.0-or-later
// The training loop: data windows, AdamW steps, periodic validation, atomic checkpoints, resume.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/safetensors.h"
#include "retnet/train_device.h"
#include "retnet/train_ops.h"
#include "retnet/trainer.h"
#include "retnet/utf8.h"

namespace retnet::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kStateVersion = 1;

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
    io::AtomicFile f(path);
    f.write(bytes);
    f.commit();
}

// Replaces directory `final_dir` by the complete `tmp_dir` with renames only, so at every moment
// either the old or the new directory is complete under one of the two names.
void swap_in_directory(const fs::path& tmp_dir, const fs::path& final_dir) {
    const fs::path old_dir = final_dir.string() + ".old";
    fs::remove_all(old_dir);
    if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
    fs::rename(tmp_dir, final_dir);
    fs::remove_all(old_dir);
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
    // Only when on, so that checkpoints written before averaging existed still resume.
    if (o.average_decay > 0) identity["average_decay"] = o.average_decay;
    return identity;
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
};

void save_checkpoint(const fs::path& out, const ModelConfig& config, const ParamLayout& layout,
                     const TrainOptions& options, const RunState& s, const std::string& tokenizer_bytes,
                     double elapsed_s) {
    const fs::path final_dir = out / "checkpoint";
    const fs::path tmp = fresh_tmp_dir(final_dir);
    save_trained_weights(config, layout, s.params, tmp.string());
    write_file_atomic((tmp / "tokenizer.model").string(), tokenizer_bytes);
    Tensor m({layout.total}), v({layout.total}), average({layout.total});
    m.data = s.adam.m;
    v.data = s.adam.v;
    std::vector<NamedTensor> tensors = {{"adamw.m", &m}, {"adamw.v", &v}};
    if (!s.average.empty()) {
        average.data = s.average;
        tensors.push_back({"average", &average});
    }
    write_safetensors((tmp / "optimizer.safetensors").string(), tensors, {{"step", std::to_string(s.adam.step)}});
    std::ostringstream rng;
    rng << s.rng;
    json state = {{"version", kStateVersion},
                  {"step", s.adam.step},
                  {"total_steps", s.total_steps},
                  {"schedule_fixed", s.schedule_fixed},
                  {"data_rng", rng.str()},
                  {"best_val_loss", std::isfinite(s.best_val_loss) ? json(s.best_val_loss) : json(nullptr)},
                  {"best_val_bpc", std::isfinite(s.best_val_bpc) ? json(s.best_val_bpc) : json(nullptr)},
                  {"elapsed_s", elapsed_s},
                  {"data", options.data_path},
                  {"run", run_identity(options)}};
    write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
    swap_in_directory(tmp, final_dir);
}

void save_best(const fs::path& out, const ModelConfig& config, const ParamLayout& layout,
               const std::vector<float>& params, const std::string& tokenizer_bytes, int64_t step,
               double val_loss, double val_bpc) {
    const fs::path final_dir = out / "best";
    const fs::path tmp = fresh_tmp_dir(final_dir);
    save_trained_weights(config, layout, params, tmp.string());
    write_file_atomic((tmp / "tokenizer.model").string(), tokenizer_bytes);
    json info = {{"step", step}, {"val_loss", val_loss}, {"val_bits_per_char", val_bpc}};
    write_file_atomic((tmp / "training.json").string(), info.dump(2) + "\n");
    swap_in_directory(tmp, final_dir);
}

// The checkpoint directory to resume from: checkpoint/, or checkpoint.old/ when a crash hit
// between the two renames of swap_in_directory.
fs::path find_checkpoint(const fs::path& out) {
    for (const char* name : {"checkpoint", "checkpoint.old"})
        if (fs::exists(out / name / "trainer_state.json")) return out / name;
    throw Error(out.string() + ": no checkpoint to resume (checkpoint/trainer_state.json missing)");
}

void load_checkpoint(const fs::path& dir, const ModelConfig& config, const ParamLayout& layout,
                     const TrainOptions& options, RunState& s) {
    const json state = json::parse(read_file((dir / "trainer_state.json").string()));
    if (state.value("version", 0) != kStateVersion)
        throw Error((dir / "trainer_state.json").string() + ": unknown version");
    if (state.at("run") != run_identity(options))
        throw Error((dir / "trainer_state.json").string() + ": the run options differ from this command's (" +
                    state.at("run").dump() + "); resume with the same options");
    LoadedWeights w = load_trained_weights(dir.string());
    if (config_to_json(w.config) != config_to_json(config))
        throw Error((dir / "config.json").string() + ": the checkpoint's model config differs from --config");
    s.params = std::move(w.params);
    SafetensorsFile opt((dir / "optimizer.safetensors").string());
    s.adam = make_adamw_state(layout);
    for (auto [name, dst] : {std::pair{"adamw.m", &s.adam.m}, std::pair{"adamw.v", &s.adam.v}}) {
        if (opt.info(name).numel() != layout.total)
            throw Error(opt.path() + ": " + name + " does not match the model's parameter count");
        opt.read_into(name, dst->data());
    }
    if (options.average_decay > 0) {
        if (!opt.contains("average")) throw Error(opt.path() + ": no parameter average (tensor 'average') to resume");
        if (opt.info("average").numel() != layout.total)
            throw Error(opt.path() + ": average does not match the model's parameter count");
        s.average.resize(static_cast<size_t>(layout.total));
        opt.read_into("average", s.average.data());
    }
    s.adam.step = state.at("step").get<int64_t>();
    s.total_steps = state.at("total_steps").get<int64_t>();
    s.schedule_fixed = state.at("schedule_fixed").get<bool>();
    std::istringstream rng(state.at("data_rng").get<std::string>());
    rng >> s.rng;
    if (!state.at("best_val_loss").is_null()) s.best_val_loss = state.at("best_val_loss").get<double>();
    if (!state.at("best_val_bpc").is_null()) s.best_val_bpc = state.at("best_val_bpc").get<double>();
    s.elapsed_s = state.at("elapsed_s").get<double>();
}

}  // namespace

TrainResult run_training(const TrainOptions& o, const std::function<void(const TrainProgress&)>& on_progress,
                         const std::atomic<bool>* stop) {
    using clock = std::chrono::steady_clock;
    if (o.batch < 1 || o.seq_len < 1 || o.steps < 1) throw Error("batch, seq-len and steps must be at least 1");
    ops::set_num_threads(o.threads);
    const fs::path out(o.out_dir);
    fs::create_directories(out);

    // Tokenizer: the given file, else (on resume) the checkpoint's.
    std::string tokenizer_path = o.tokenizer_path;
    if (tokenizer_path.empty() && o.resume) tokenizer_path = (find_checkpoint(out) / "tokenizer.model").string();
    if (tokenizer_path.empty()) throw Error("no tokenizer: pass --tokenizer FILE (train one with `retnet tokenizer train`)");
    const std::string tokenizer_bytes = read_file(tokenizer_path);
    const Tokenizer tokenizer = Tokenizer::from_serialized(tokenizer_bytes, tokenizer_path);

    ModelConfig config = load_config(o.config_path);
    if (config.vocab_size != tokenizer.vocab_size())
        throw Error(o.config_path + ": vocab_size = " + std::to_string(config.vocab_size) + " but " +
                    tokenizer_path + " has " + std::to_string(tokenizer.vocab_size()) + " pieces");
    const ParamLayout layout = make_param_layout(config);

    // Data.
    const std::string text = read_file(o.data_path);
    check_utf8(text, o.data_path);
    // Not a structured binding: clang before 16 cannot capture those in the lambdas below.
    const std::pair<std::string_view, std::string_view> split = split_tail(text, o.validation_fraction);
    const std::string_view train_text = split.first, val_text = split.second;
    const std::vector<int32_t> train_tokens = tokenizer.encode(train_text);
    if (static_cast<int64_t>(train_tokens.size()) < o.seq_len + 2)
        throw Error(o.data_path + ": the training part has " + std::to_string(train_tokens.size()) +
                    " tokens, fewer than seq-len + 2");

    RunState s;
    if (o.resume) {
        load_checkpoint(find_checkpoint(out), config, layout, o, s);
    } else {
        s.params = flatten_weights(make_random_model(config, o.seed), layout);
        s.adam = make_adamw_state(layout);
        s.rng.seed(o.seed);
        s.total_steps = o.steps;
        if (o.average_decay > 0) s.average = s.params;
    }
    if (o.resume && !s.schedule_fixed && o.steps != s.total_steps) s.total_steps = o.steps;
    // A device other than the CPU holds the parameters and moments between host syncs (before
    // validation and checkpoints); s.adam.step mirrors its step count.
    // A device that cannot apply dropout refuses it in its factory (one line naming the device).
    std::unique_ptr<TrainDevice> device =
        make_train_device(o.device, config, layout, TrainDeviceOptions{o.chunk, o.dropout});
    if (device) device->upload(s.params, s.adam);
    if (device && !s.average.empty()) device->set_average(s.average, o.average_decay);
    auto sync_from_device = [&] {
        if (!device) return;
        device->download(s.params, s.adam);
        if (!s.average.empty()) device->download_average(s.average);
    };

    TrainResult result;
    std::vector<float> grad(static_cast<size_t>(layout.total));
    std::vector<int32_t> inputs(static_cast<size_t>(o.batch) * static_cast<size_t>(o.seq_len)),
        targets(inputs.size());
    std::uniform_int_distribution<int64_t> start_dist(0, static_cast<int64_t>(train_tokens.size()) - o.seq_len - 1);
    const auto session_start = clock::now();
    auto elapsed = [&] { return s.elapsed_s + std::chrono::duration<double>(clock::now() - session_start).count(); };
    const int64_t first_step = s.adam.step;
    const int64_t tokens_per_step = static_cast<int64_t>(o.batch) * o.seq_len;
    double window_loss = 0;
    int64_t window_steps = 0;
    auto window_start = clock::now();

    // The weights validated and kept in best/: the average when it is on.
    const bool averaging = !s.average.empty();
    auto validate = [&](int64_t step) {
        const std::vector<float>& kept = averaging ? s.average : s.params;
        EvalResult r;
        if (device) {
            if (averaging) device->swap_average();
            r = evaluate_text([&](const BatchView& v) { return device->loss(v); }, tokenizer, val_text, o.eval_window);
            if (averaging) device->swap_average();
        } else {
            r = evaluate_text(config, layout, kept.data(), tokenizer, val_text, o.eval_window);
        }
        TrainProgress p;
        p.step = step;
        p.total_steps = s.total_steps;
        p.is_validation = true;
        p.val_loss = r.loss_per_token;
        p.val_bpc = r.bits_per_char;
        p.elapsed_s = elapsed();
        if (r.loss_per_token < s.best_val_loss) {
            s.best_val_loss = r.loss_per_token;
            s.best_val_bpc = r.bits_per_char;
            save_best(out, config, layout, kept, tokenizer_bytes, step, r.loss_per_token, r.bits_per_char);
            p.message = "best so far, saved to best/";
        }
        if (on_progress) on_progress(p);
    };
    auto checkpoint = [&] {
        save_checkpoint(out, config, layout, o, s, tokenizer_bytes, elapsed());
        if (on_progress) {
            TrainProgress p;
            p.step = s.adam.step;
            p.total_steps = s.total_steps;
            p.elapsed_s = elapsed();
            p.message = "checkpoint saved";
            on_progress(p);
        }
    };

    while (s.adam.step < s.total_steps) {
        if (stop && stop->load()) {
            result.interrupted = true;
            break;
        }
        const int64_t step = s.adam.step;
        for (int b = 0; b < o.batch; ++b) {
            const int64_t start = start_dist(s.rng);
            for (int t = 0; t < o.seq_len; ++t) {
                inputs[static_cast<size_t>(b * o.seq_len + t)] = train_tokens[static_cast<size_t>(start + t)];
                targets[static_cast<size_t>(b * o.seq_len + t)] = train_tokens[static_cast<size_t>(start + t + 1)];
            }
        }
        const BatchView batch{inputs.data(), targets.data(), o.batch, o.seq_len};
        LossOptions lo;
        lo.chunk = o.chunk;
        lo.dropout = o.dropout;
        lo.dropout_seed = o.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step);
        const double lr = learning_rate(step, s.total_steps, o.warmup, o.lr, o.min_lr_ratio);
        double loss = 0, norm = 0;
        if (device) {
            loss = device->step(batch, o.grad_clip, o.adamw, lr, lo.dropout_seed, &norm);
            s.adam.step += 1;
        } else {
            loss = loss_and_gradient<float>(config, layout, s.params.data(), batch, grad.data(), lo);
        }
        if (!std::isfinite(loss)) throw Error("training diverged: loss is " + std::to_string(loss) + " at step " + std::to_string(step));
        if (!device) {
            norm = clip_grad_norm(grad, o.grad_clip);
            adamw_update(s.params, grad, s.adam, layout, o.adamw, lr);
            if (averaging) update_average(s.average, s.params, average_decay_at(o.average_decay, s.adam.step));
        }
        result.last_loss = loss;
        window_loss += loss;
        window_steps += 1;

        // Fit the schedule into the time limit once the speed is known (after 10 steps).
        const int64_t done_here = s.adam.step - first_step;
        if (o.time_limit_s > 0 && !s.schedule_fixed && done_here == 10) {
            const double per_step = std::chrono::duration<double>(clock::now() - session_start).count() / 10.0;
            // A validation pass is a forward over the validation tokens: about a third of a
            // training step's work per token; count half to stay on the safe side, plus a second
            // for the checkpoint written with it. Solve steps·per_step + evals·eval_cost ≤ budget.
            const double val_tokens = static_cast<double>(tokenizer.encode(val_text).size());
            const double eval_cost = 1.0 + per_step * 0.5 * val_tokens / static_cast<double>(tokens_per_step);
            const double budget = o.time_limit_s - elapsed() - 10.0 - eval_cost;
            const double cost_per_step = per_step + (o.eval_every > 0 ? eval_cost / static_cast<double>(o.eval_every) : 0.0);
            const int64_t fit = s.adam.step + std::max<int64_t>(0, static_cast<int64_t>(budget / cost_per_step));
            if (fit < s.total_steps) {
                s.total_steps = std::max<int64_t>(s.adam.step + 1, fit);
                if (on_progress) {
                    TrainProgress p;
                    p.step = s.adam.step;
                    p.total_steps = s.total_steps;
                    p.message = "time limit: schedule shortened to " + std::to_string(s.total_steps) + " steps";
                    on_progress(p);
                }
            }
            s.schedule_fixed = true;
        }

        const bool last = s.adam.step == s.total_steps;
        if (on_progress && (s.adam.step % std::max<int64_t>(1, o.log_every) == 0 || last)) {
            const double window_s = std::chrono::duration<double>(clock::now() - window_start).count();
            TrainProgress p;
            p.step = s.adam.step;
            p.total_steps = s.total_steps;
            p.loss = window_loss / static_cast<double>(window_steps);
            p.lr = lr;
            p.grad_norm = norm;
            p.tokens_per_s = static_cast<double>(tokens_per_step * window_steps) / std::max(window_s, 1e-9);
            p.elapsed_s = elapsed();
            p.eta_s = static_cast<double>(s.total_steps - s.adam.step) * window_s / static_cast<double>(window_steps);
            on_progress(p);
            window_loss = 0;
            window_steps = 0;
            window_start = clock::now();
        }
        // Validation and checkpoints are not training time: keep them out of tokens/s and the ETA.
        const auto pause_start = clock::now();
        const bool want_eval = (o.eval_every > 0 && s.adam.step % o.eval_every == 0) || last;
        const bool want_save = (o.save_every > 0 && s.adam.step % o.save_every == 0) || last;
        if (want_eval || want_save) sync_from_device();
        if (want_eval) validate(s.adam.step);
        if (want_save) checkpoint();
        window_start += clock::now() - pause_start;
    }
    if (result.interrupted) {
        sync_from_device();
        checkpoint();
    }
    result.steps_done = s.adam.step;
    result.total_steps = s.total_steps;
    result.best_val_loss = s.best_val_loss;
    result.best_val_bpc = s.best_val_bpc;
    result.elapsed_s = elapsed();
    return result;
}

}  // namespace retnet::train
