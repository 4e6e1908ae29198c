// SPDX-License-Identifier: GPL-3.0-or-later
// The training loop end to end on a small slice of tinyshakespeare: the loss falls, an
// interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted one, and
// `retnet eval` reads what `retnet train` wrote.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "forwarding_backend.h"
#include "retnet/error.h"
#include "retnet/eval_stream.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"
#include "retnet/trainer.h"
#include "test_robustness_util.h"
#include "test_train_workspace.h"

namespace fs = std::filesystem;
using namespace retnet;
using namespace retnet::train;

namespace {

// The first 40,000 characters (~1,000 lines of verse), BPE 400, d 32 × 2 layers.
struct Workspace : test::TrainWorkspace {
    Workspace() : TrainWorkspace("retnet_train_test", {40000, 400, 32, 2, 64}) {}

    TrainOptions options(const std::string& out) const {
        TrainOptions o;
        o.data_path = text.string();
        o.config_path = config.string();
        o.tokenizer_path = tokenizer.string();
        o.out_dir = (dir / out).string();
        o.batch = 4;
        o.seq_len = 32;
        o.lr = 1e-2;
        o.warmup = 5;
        o.eval_every = 0;
        o.save_every = 0;
        o.log_every = 1;
        o.eval_window = 64;
        o.threads = 2;
        return o;
    }
};

std::vector<float> read_params(const fs::path& dir) { return load_trained_weights(dir.string()).params; }

// A random model whose weights are 8× the 0.02 init's (sharper, so that context matters), and the
// same weights flat in the trainer's layout.
struct SharpModel {
    Model model;
    std::vector<float> params;
};
SharpModel sharp_random_model(const ModelConfig& config, const ParamLayout& layout) {
    SharpModel sharp{make_random_model(config, 7), {}};
    sharp.params = flatten_weights(sharp.model, layout);
    for (float& p : sharp.params) p *= 8.0f;
    unflatten_weights(sharp.params, layout, sharp.model);
    return sharp;
}

// The first `bytes` bytes of the file at `path`.
std::string text_prefix(const fs::path& path, size_t bytes) {
    std::ifstream in(path, std::ios::binary);
    std::string text(bytes, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    return text;
}

// The options of a run that trained 2 steps in the workspace, set to resume it to step 4.
TrainOptions trained_run_to_resume(const Workspace& ws) {
    TrainOptions o = ws.options("run");
    o.steps = 2;
    run_training(o, {});
    o.resume = true;
    o.steps = 4;
    return o;
}

// Writes `bytes` to `file` (one of the checkpoint's) and resumes: the error's line, or "accepted".
std::string resume_with(const TrainOptions& o, const fs::path& file, const std::string& bytes) {
    std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
    try {
        run_training(o, {});
    } catch (const Error& e) {
        return e.what();
    }
    return "accepted";
}

}  // namespace

TEST(TrainLoop, SplitTailCutsTheLastFractionOfCharacters) {
    const std::string text = "abcdefghij";
    auto [head, tail] = split_tail(text, 0.1);
    EXPECT_EQ(head, "abcdefghi");
    EXPECT_EQ(tail, "j");
    const std::string utf8 = "a\xC3\xA9\xC3\xA9\xC3\xA9z";  // a é é é z: 5 characters
    EXPECT_EQ(count_characters(utf8), 5);
    auto [h2, t2] = split_tail(utf8, 0.4);
    EXPECT_EQ(h2, "a\xC3\xA9\xC3\xA9");
    EXPECT_EQ(t2, "\xC3\xA9z");
    EXPECT_THROW(split_tail(text, 1.0), Error);
}

TEST(TrainLoop, LossFallsOnASmallCorpus) {
    Workspace ws;
    TrainOptions o = ws.options("run");
    o.steps = 60;
    std::vector<double> losses;
    std::vector<double> val;
    const TrainResult r = run_training(o, [&](const TrainProgress& p) {
        if (p.is_validation) val.push_back(p.val_loss);
        else if (p.message.empty()) losses.push_back(p.loss);
    });
    ASSERT_EQ(r.steps_done, 60);
    ASSERT_EQ(losses.size(), 60u);
    // Untrained, the loss is about log V (≈ 6.0); the unigram statistics alone bring it below 5.
    EXPECT_NEAR(losses.front(), std::log(400.0), 0.3);
    double last5 = 0;
    for (size_t i = losses.size() - 5; i < losses.size(); ++i) last5 += losses[i] / 5;
    EXPECT_LT(last5, losses.front() - 1.2);
    ASSERT_EQ(val.size(), 1u);  // the final validation
    EXPECT_LT(val[0], std::log(400.0) - 1.0);
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "best" / "model.safetensors"));
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "checkpoint" / "optimizer.safetensors"));
    // The evaluation of the saved best model reproduces the validation loss the loop reported.
    const LoadedWeights w = load_trained_weights((fs::path(o.out_dir) / "best").string());
    const Tokenizer tok = Tokenizer::load((fs::path(o.out_dir) / "best" / "tokenizer.model").string());
    const std::string text = robustness::slurp(ws.text);
    const EvalResult e = evaluate_text(w.config, w.layout, w.params.data(), tok, split_tail(text, 0.1).second, 64);
    EXPECT_NEAR(e.loss_per_token, val[0], 1e-9);
    EXPECT_GT(e.bits_per_char, 0.5);
}

TEST(TrainLoop, InterruptedAndResumedRunEqualsUninterruptedRun) {
    Workspace ws;
    TrainOptions full = ws.options("full"), part = ws.options("part");
    full.steps = part.steps = 8;
    full.dropout = part.dropout = 0.1;  // the masks depend on (seed, step) only: resume must reproduce them
    test::expect_resume_equals_uninterrupted(full, part);
}

// Ctrl-C raised while the inputs are read (before the first step): nothing is trained, nothing is
// saved, and on_started (where `retnet train` removes the run --overwrite replaces) is not called;
// a resumed run's checkpoint is left byte for byte. Otherwise on_started comes once, before the
// first step's report. Before, the loop saved a checkpoint of step 0 (a fresh run now "held a run"
// that needed --resume or --overwrite).
TEST(TrainLoop, AStopRaisedWhileStartingSavesNothing) {
    Workspace ws;
    TrainOptions o = ws.options("start");
    o.steps = 2;
    int started = 0, reports_before_start = 0;
    o.on_started = [&] { ++started; };
    const auto follow = [&](const TrainProgress&) { reports_before_start += started == 0 ? 1 : 0; };
    std::atomic<bool> stop{true};
    const TrainResult early = run_training(o, follow, &stop);
    EXPECT_TRUE(early.interrupted);
    EXPECT_FALSE(early.started);
    EXPECT_EQ(early.steps_done, 0);
    EXPECT_EQ(started, 0);
    EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "checkpoint"));
    EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "best"));

    stop = false;
    const TrainResult done = run_training(o, follow, &stop);
    EXPECT_TRUE(done.started);
    EXPECT_EQ(done.steps_done, 2);
    EXPECT_EQ(started, 1);
    EXPECT_EQ(reports_before_start, 0);

    const fs::path weights = fs::path(o.out_dir) / "checkpoint" / "model.safetensors";
    const std::string saved = robustness::slurp(weights);
    const auto saved_time = fs::last_write_time(weights);
    o.resume = true;
    o.on_started = nullptr;
    o.steps = 4;
    stop = true;
    const TrainResult resumed = run_training(o, follow, &stop);
    EXPECT_TRUE(resumed.interrupted);
    EXPECT_FALSE(resumed.started);
    EXPECT_EQ(resumed.steps_done, 2);
    EXPECT_EQ(robustness::slurp(weights), saved);
    EXPECT_EQ(fs::last_write_time(weights), saved_time);
}

// Ctrl-C right after a step that wrote its checkpoint: that checkpoint is the interrupted run's, so
// it is neither written a second time (seconds for a large model) nor reported twice.
TEST(TrainLoop, AStopAfterASavedStepDoesNotSaveItAgain) {
    Workspace ws;
    TrainOptions o = ws.options("saved");
    o.steps = 6;
    o.save_every = 2;
    std::atomic<bool> stop{false};
    std::vector<int64_t> saved_at;
    const auto follow = [&](const TrainProgress& p) {
        if (p.message != "checkpoint saved") return;
        saved_at.push_back(p.step);
        if (p.step == 2) stop = true;
    };
    const TrainResult r = run_training(o, follow, &stop);
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.steps_done, 2);
    EXPECT_EQ(saved_at, std::vector<int64_t>{2});
    // and a stop between saves still saves the step it stopped at
    o.resume = true;
    saved_at.clear();
    stop = false;
    const auto stop_at_3 = [&](const TrainProgress& p) {
        if (p.message == "checkpoint saved") saved_at.push_back(p.step);
        if (p.step == 3 && !p.is_validation && p.message.empty()) stop = true;
    };
    const TrainResult again = run_training(o, stop_at_3, &stop);
    EXPECT_TRUE(again.interrupted);
    EXPECT_EQ(again.steps_done, 3);
    EXPECT_EQ(saved_at, std::vector<int64_t>{3});
}

// Ctrl-C while a resume loads its checkpoint (seconds for a large model: three times its weights):
// the load stops at its first question, before any tensor is read, instead of reading them all and
// being told when the setup ends. Shown with a checkpoint whose last weight is NaN, which a load
// that read everything refuses: stopped, the run is interrupted before it started, with the
// checkpoint left byte for byte.
TEST(TrainLoop, AStopRaisedWhileTheCheckpointLoadsEndsTheLoad) {
    Workspace ws;
    TrainOptions o = ws.options("load");
    o.steps = 2;
    std::atomic<bool> stop{false};
    ASSERT_EQ(run_training(o, nullptr, &stop).steps_done, 2);
    const fs::path weights = fs::path(o.out_dir) / "checkpoint" / "model.safetensors";
    {
        std::fstream f(weights, std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(-4, std::ios::end);  // the last value of the last tensor (the data section ends the file)
        const float nan = std::nanf("");
        f.write(reinterpret_cast<const char*>(&nan), 4);
    }
    std::map<std::string, std::string> before;
    for (const auto& entry : fs::directory_iterator(fs::path(o.out_dir) / "checkpoint"))
        before[entry.path().filename().string()] = robustness::slurp(entry.path());
    o.resume = true;
    o.steps = 4;
    stop = true;
    const TrainResult stopped = run_training(o, nullptr, &stop);
    EXPECT_TRUE(stopped.interrupted);
    EXPECT_FALSE(stopped.started);
    for (const auto& [name, bytes] : before)
        EXPECT_EQ(robustness::slurp(fs::path(o.out_dir) / "checkpoint" / name), bytes) << name;
    stop = false;
    try {
        run_training(o, nullptr, &stop);
        FAIL() << "resumed from a checkpoint holding a NaN weight";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("contains NaN"), std::string::npos) << e.what();
    }
}

// With --ema-decay the loop keeps average_t = average_{t−1} + (1 − d_t)(params_t − average_{t−1})
// from the initial weights, resumes it exactly, and validates and saves it (not the raw weights).
TEST(TrainLoop, ParameterAverageFollowsItsDefinitionAndResumes) {
    EXPECT_DOUBLE_EQ(average_decay_at(0.999, 1), 2.0 / 11.0);
    EXPECT_DOUBLE_EQ(average_decay_at(0.9, 1000), 0.9);
    Workspace ws;
    TrainOptions o = ws.options("avg");
    o.steps = 6;
    o.save_every = 1;  // a checkpoint after every step: the raw weights of each step
    o.average_decay = 0.5;
    const ModelConfig config = load_config(ws.config.string());
    const ParamLayout layout = make_param_layout(config);
    std::vector<float> expected = flatten_weights(make_random_model(config, o.seed), layout);
    std::atomic<bool> stop{false};
    int64_t followed = 0;  // the interruption saves step 3 a second time
    const auto follow = [&](const TrainProgress& p) {
        if (p.message != "checkpoint saved" || p.step == followed) return;
        followed = p.step;
        const std::vector<float> raw = read_params(fs::path(o.out_dir) / "checkpoint");
        update_average(expected, raw, average_decay_at(o.average_decay, p.step));
        if (p.step == 3) stop = true;
    };
    EXPECT_TRUE(run_training(o, follow, &stop).interrupted);
    stop = false;
    o.resume = true;
    EXPECT_EQ(run_training(o, follow, &stop).steps_done, 6);

    const fs::path checkpoint = fs::path(o.out_dir) / "checkpoint";
    const std::vector<float> average = SafetensorsFile((checkpoint / "optimizer.safetensors").string()).read("average").data;
    EXPECT_EQ(average, expected);
    EXPECT_NE(average, read_params(checkpoint));
    EXPECT_EQ(read_params(fs::path(o.out_dir) / "best"), average);  // the final validation kept it

    o.average_decay = 0;  // a different run: refused
    EXPECT_THROW(run_training(o, {}), Error);
}

// Streaming evaluation carries the state through the text: with any piece size it equals one
// window over the whole text (chunkwise float inference vs the parallel training forward, both
// float: agreement to ~1e-6 relative), and differs from short windows that restart the state.
TEST(TrainLoop, StreamingEvaluationEqualsOneWindowOverTheWholeText) {
    Workspace ws;
    const ModelConfig config = load_config(ws.config.string());
    const ParamLayout layout = make_param_layout(config);
    const SharpModel sharp = sharp_random_model(config, layout);
    const Model& model = sharp.model;
    const std::vector<float>& params = sharp.params;
    const Tokenizer tok = Tokenizer::load(ws.tokenizer.string());
    const std::string text = text_prefix(ws.text, 600);
    const EvalResult whole = evaluate_text(config, layout, params.data(), tok, text, 100000);
    const EvalResult windows = evaluate_text(config, layout, params.data(), tok, text, 8);
    auto backend = make_cpu_backend(std::make_shared<const Model>(model));
    for (int piece : {1, 7, 64, 4096}) {
        const EvalResult stream = evaluate_text_streaming(*backend, tok, text, piece);
        EXPECT_EQ(stream.tokens, whole.tokens);
        EXPECT_EQ(stream.characters, whole.characters);
        EXPECT_NEAR(stream.loss_per_token, whole.loss_per_token, 1e-5 * whole.loss_per_token) << "piece " << piece;
        EXPECT_NEAR(stream.bits_per_char, whole.bits_per_char, 1e-5 * whole.bits_per_char) << "piece " << piece;
    }
    EXPECT_GT(std::abs(windows.loss_per_token - whole.loss_per_token), 1e-3) << "windows of 8 must lose context";
    EXPECT_THROW(evaluate_text_streaming(*backend, tok, "", 16), Error);

    // Progress reaches the total in increasing steps; returning false cancels.
    for (const bool streaming : {true, false}) {
        std::vector<int64_t> seen;
        const EvalProgress record = [&](int64_t done, int64_t total) {
            EXPECT_EQ(total, whole.tokens);
            seen.push_back(done);
            return true;
        };
        if (streaming) evaluate_text_streaming(*backend, tok, text, 64, record);
        else evaluate_text(config, layout, params.data(), tok, text, 16, 2, record);
        ASSERT_GE(seen.size(), 2u);
        EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
        EXPECT_EQ(seen.back(), whole.tokens);
        int calls = 0;
        const EvalProgress cancel = [&](int64_t, int64_t) { return ++calls < 2; };
        if (streaming) EXPECT_THROW(evaluate_text_streaming(*backend, tok, text, 64, cancel), Cancelled);
        else EXPECT_THROW(evaluate_text(config, layout, params.data(), tok, text, 16, 2, cancel), Cancelled);
        EXPECT_EQ(calls, 2);
    }
}

// `retnet eval`'s Ctrl-C without --stream: a batch of windows of a large model takes seconds, so
// the trainer's forward asks LossOptions::cancelled before each layer (the inference backend's
// windows ForwardOptions::cancelled, through backend_batch_loss). Raised at the first batch's
// second layer, the evaluation ends with Cancelled before that batch's progress report; never
// raised, it gives the loss of an evaluation without the question.
TEST(TrainLoop, WindowedEvaluationAsksCancelledBeforeEachLayerOfABatch) {
    Workspace ws;
    const ModelConfig config = load_config(ws.config.string());
    const ParamLayout layout = make_param_layout(config);
    const SharpModel sharp = sharp_random_model(config, layout);
    const Tokenizer tok = Tokenizer::load(ws.tokenizer.string());
    const std::string text = text_prefix(ws.text, 600);
    const fs::path file = ws.dir / "eval.txt";
    robustness::spit(file, text);
    const TextFileSpan part{file.string(), 0, count_characters(text)};
    auto backend = make_cpu_backend(std::make_shared<const Model>(sharp.model));
    int asked = 0, reports = 0;
    const EvalProgress count_reports = [&reports](int64_t, int64_t) { return ++reports > 0; };
    LossOptions polled;
    const BatchLoss trainer_loss = [&](const BatchView& view) {
        return loss_and_gradient<float>(config, layout, sharp.params.data(), view, nullptr, polled);
    };
    for (const bool trainer : {true, false}) {
        const std::function<bool()> at_second = [&asked] { return ++asked == 2; };
        const std::function<bool()> never = [&asked] { return ++asked < 0; };
        asked = reports = 0;
        polled.cancelled = at_second;
        EXPECT_THROW(evaluate_file(trainer ? trainer_loss : backend_batch_loss(*backend, at_second), tok, part, 16, 2,
                                   count_reports),
                     Cancelled);
        EXPECT_EQ(asked, 2);
        EXPECT_EQ(reports, 0) << "the first batch of windows never ended";

        asked = reports = 0;
        polled.cancelled = never;
        const EvalResult r = evaluate_file(trainer ? trainer_loss : backend_batch_loss(*backend, never), tok, part, 16,
                                           2, count_reports);
        polled.cancelled = {};
        const EvalResult plain =
            evaluate_file(trainer ? trainer_loss : backend_batch_loss(*backend), tok, part, 16, 2);
        EXPECT_EQ(r.loss_per_token, plain.loss_per_token);
        // The trainer asks once per layer of each batch of 2 windows, the backend per layer of each window.
        EXPECT_EQ(asked, config.n_layers * (trainer ? reports : static_cast<int>((r.tokens + 15) / 16)));
    }
}

// Passes every call through and records what the backend was asked to compute: the resets, and
// per forward call its new tokens and the position of slot 0 before and after.
class CountingBackend : public test::ForwardingBackend {
public:
    explicit CountingBackend(Backend& inner) : ForwardingBackend(inner) {}
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection) override {
        const int64_t before = inner().snapshot(0).position;
        std::vector<Tensor> out = inner().forward_batch(batch, options, introspection);
        calls.push_back({static_cast<int64_t>(batch[0].tokens.size()), before, inner().snapshot(0).position});
        return out;
    }
    void reset(int slot) override {
        ++resets;
        ForwardingBackend::reset(slot);
    }

    struct Call {
        int64_t tokens, position_before, position_after;
    };
    std::vector<Call> calls;
    int resets = 0;
};

// `retnet eval --stream` on the Transformer twin: each token goes through the model once, each
// piece continuing from the KV cache the pieces before it left (its position is every token fed so
// far), so the work per token is the attention over its context and never a prefill of the prefix
// again. The loss equals one window over the whole text (the trainer's forward; float both ways,
// ~1e-6 relative).
TEST(TrainLoop, TheTwinsStreamedEvaluationFeedsEachTokenOnceThroughItsCache) {
    Workspace ws;
    const ModelConfig config = transformer_twin_config(load_config(ws.config.string()));
    const ParamLayout layout = make_param_layout(config);
    const SharpModel sharp = sharp_random_model(config, layout);
    const Model& model = sharp.model;
    const std::vector<float>& params = sharp.params;
    const Tokenizer tok = Tokenizer::load(ws.tokenizer.string());
    const std::string text = text_prefix(ws.text, 2000);
    const fs::path part_path = ws.dir / "part.txt";
    std::ofstream(part_path, std::ios::binary) << text;
    const EvalResult whole = evaluate_text(config, layout, params.data(), tok, text, 100000);
    ASSERT_GT(whole.tokens, 300);
    auto cpu = make_cpu_backend(std::make_shared<const Model>(model));
    for (const int piece : {7, 64}) {
        SCOPED_TRACE(piece);
        CountingBackend counting(*cpu);
        const TextFileSpan part{part_path.string(), 0, count_characters(text), 100};  // 100-byte blocks
        const EvalResult stream = evaluate_file_streaming(counting, tok, part, piece);
        EXPECT_EQ(stream.tokens, whole.tokens);
        EXPECT_NEAR(stream.loss_per_token, whole.loss_per_token, 1e-5 * whole.loss_per_token);
        EXPECT_EQ(counting.resets, 1);
        ASSERT_EQ(static_cast<int64_t>(counting.calls.size()), (whole.tokens + piece - 1) / piece);
        int64_t fed = 0;
        for (const CountingBackend::Call& call : counting.calls) {
            EXPECT_EQ(call.tokens, std::min<int64_t>(piece, whole.tokens - fed));
            EXPECT_EQ(call.position_before, fed);
            fed += call.tokens;
            EXPECT_EQ(call.position_after, fed);
        }
        EXPECT_EQ(fed, whole.tokens);  // n tokens computed for n predictions
    }
}

TEST(TrainLoop, ResumeRejectsChangedOptions) {
    Workspace ws;
    TrainOptions o = ws.options("run");
    o.steps = 2;
    run_training(o, {});
    o.resume = true;
    o.lr = 5e-3;
    o.architecture = Architecture::Transformer;
    // The line names each option that changed as the command line spells it.
    try {
        run_training(o, {});
        ADD_FAILURE() << "a resume with other options was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("--arch retnet (this command: transformer), --lr 0.01 (this command: 0.005)"),
                  std::string::npos)
                << e.what();
    }
}

// trainer_state.json is a file on disk: an edited or damaged field is one line naming it, never a
// library exception or a resume that silently draws other batches.
TEST(TrainLoop, ResumeRefusesADamagedTrainerState) {
    Workspace ws;
    const TrainOptions o = trained_run_to_resume(ws);
    const fs::path state_path = fs::path(o.out_dir) / "checkpoint" / "trainer_state.json";
    const std::string good = robustness::slurp(state_path);
    const auto damaged = [&](const std::string& from, const std::string& to) {
        std::string text = good;
        const size_t at = text.find(from);
        EXPECT_NE(at, std::string::npos) << from;
        text.replace(at, from.size(), to);
        return resume_with(o, state_path, text);
    };
    EXPECT_NE(damaged("\"data_rng\": \"", "\"data_rng\": \"garbage ").find("field 'data_rng' is not a saved data generator state"),
              std::string::npos);
    EXPECT_NE(damaged("\"elapsed_s\"", "\"elapsed\"").find("trainer_state.json: missing field 'elapsed_s'"),
              std::string::npos);
    EXPECT_NE(damaged("\"best_val_loss\": ", "\"best_val_loss\": \"x\", \"_\": ").find("field 'best_val_loss' has the wrong type"),
              std::string::npos);
    // The intact file still resumes.
    std::ofstream(state_path, std::ios::binary | std::ios::trunc) << good;
    EXPECT_EQ(run_training(o, {}).steps_done, 4);
}

// Moments no run can have written (NaN; a negative second moment) are refused when the run resumes:
// it went on from them, saved NaN weights as "best so far", or ended as "training diverged".
TEST(TrainLoop, ResumeRefusesMomentsNoRunCanHaveWritten) {
    Workspace ws;
    const TrainOptions o = trained_run_to_resume(ws);
    const fs::path optimizer = fs::path(o.out_dir) / "checkpoint" / "optimizer.safetensors";
    const std::string good = robustness::slurp(optimizer);
    const auto with_value = [&](const std::string& name, int64_t index, float value) {
        uint64_t header = 0;
        std::memcpy(&header, good.data(), sizeof header);
        const TensorInfo info = SafetensorsFile(optimizer.string()).info(name);
        EXPECT_EQ(info.dtype, DType::F32);
        std::string bytes = good;
        std::memcpy(bytes.data() + 8 + header + info.begin + 4 * index, &value, sizeof value);
        return resume_with(o, optimizer, bytes);
    };
    EXPECT_NE(with_value("adamw.v", 3, -1.0f).find("optimizer.safetensors: adamw.v holds -1 at index 3"),
              std::string::npos);
    EXPECT_NE(with_value("adamw.m", 0, std::nanf("")).find("adamw.m holds nan at index 0 (not a finite number)"),
              std::string::npos);
    EXPECT_NE(with_value("adamw.v", 1, INFINITY).find("adamw.v holds inf at index 1"), std::string::npos);
    EXPECT_NE(with_value("adamw.v", 2, -1e-30f).find("adamw.v holds -1e-30 at index 2"), std::string::npos);
    std::ofstream(optimizer, std::ios::binary | std::ios::trunc) << good;
    EXPECT_EQ(run_training(o, {}).steps_done, 4);
}

// optimizer.safetensors records the step it was written at: one copied in from another checkpoint
// (here: trainer_state.json edited to another step) is refused instead of resuming weights and
// moments of different steps.
TEST(TrainLoop, ResumeRefusesAnOptimizerStateOfAnotherStep) {
    Workspace ws;
    const TrainOptions o = trained_run_to_resume(ws);
    const fs::path state_path = fs::path(o.out_dir) / "checkpoint" / "trainer_state.json";
    const std::string good = robustness::slurp(state_path);
    EXPECT_EQ(SafetensorsFile((state_path.parent_path() / "optimizer.safetensors").string()).metadata().at("step"), "2");
    std::string text = good;
    const size_t at = text.find("\"step\": 2");
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, 9, "\"step\": 1");
    EXPECT_NE(resume_with(o, state_path, text)
                      .find("optimizer.safetensors: written at step 2, but " + state_path.string() +
                            " is at step 1; the checkpoint mixes files of two steps"),
              std::string::npos);
    std::ofstream(state_path, std::ios::binary | std::ios::trunc) << good;
    EXPECT_EQ(run_training(o, {}).steps_done, 4);
}

// A misspelt --device is one line, and leaves no run directory behind to clean up.
TEST(TrainLoop, CliRefusesAnUnknownDeviceBeforeMakingTheRunDirectory) {
    Workspace ws;
    const fs::path out = ws.dir / "typo";
    const auto r = robustness::run_retnet({"train", "--data", ws.text.string(), "--config", ws.config.string(),
                                           "--tokenizer", ws.tokenizer.string(), "--out", out.string(), "--device",
                                           "gpu", "--steps", "1", "--batch", "2", "--seq-len", "16"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err.rfind("retnet train: error: option --device must be one of cpu", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(", got 'gpu'\n"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out));
}

TEST(TrainLoop, CliTrainThenEval) {
    using robustness::run_retnet;
    Workspace ws;
    const fs::path out = ws.dir / "cli";
    const auto train = run_retnet({"train", "--data", ws.text.string(), "--config", ws.config.string(), "--tokenizer",
                                   ws.tokenizer.string(), "--out", out.string(), "--steps", "3", "--batch", "2",
                                   "--seq-len", "16", "--threads", "1"});
    ASSERT_EQ(train.exit_code, 0) << train.err;
    const std::string log = train.out + train.err;
    EXPECT_NE(log.find("step      3/3  loss"), std::string::npos) << log;
    EXPECT_NE(log.find("tok/s"), std::string::npos);
    auto eval = [&](std::vector<std::string> extra) {
        std::vector<std::string> args{"eval", "--model", (out / "checkpoint").string(), "--text", ws.text.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        return run_retnet(args);
    };
    const auto windows = eval({"--tail", "0.1"});
    ASSERT_EQ(windows.exit_code, 0) << windows.err;
    EXPECT_NE(windows.out.find("bits per char"), std::string::npos) << windows.out;
    // --stream: the same tokens and characters, one sequence; it excludes --window.
    const auto stream = eval({"--tail", "0.1", "--stream"});
    ASSERT_EQ(stream.exit_code, 0) << stream.err;
    EXPECT_NE(stream.out.find("one sequence (state carried, cpu backend)"), std::string::npos) << stream.out;
    const auto both = eval({"--stream", "--window", "64"});
    EXPECT_NE(both.exit_code, 0);
    EXPECT_EQ(both.err, "retnet eval: error: --stream and --window exclude each other (--stream has no windows)\n");

    // With an intervention, the windows run through the inference backend: overriding γ of head 0
    // with its own value (1 − 2⁻⁵) must give the trainer path's loss (both float; printed to 4
    // decimals), announced on stderr.
    auto eval_loss = [&](std::vector<std::string> extra, std::string* err = nullptr) {
        extra.insert(extra.begin(), {"--tail", "0.1", "--window", "64"});
        const auto r = eval(extra);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        if (err) *err = r.err;
        const size_t at = r.out.find("loss per token");
        if (at == std::string::npos) {
            ADD_FAILURE() << "no loss line in: " << r.out;
            return -1.0;
        }
        return std::stod(r.out.substr(at + 15));
    };
    const double plain = eval_loss({});
    std::string same_gamma_err;
    EXPECT_NEAR(eval_loss({"--gamma", "0=0.96875"}, &same_gamma_err), plain, 2e-4);
    EXPECT_NE(same_gamma_err.find("retnet: interventions: gamma 0=0.96875"), std::string::npos) << same_gamma_err;
    EXPECT_GT(eval_loss({"--mute", "0.0,0.1", "--gamma", "1=0.5"}), 0.0);
}
