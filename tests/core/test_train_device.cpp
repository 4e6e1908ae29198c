// SPDX-License-Identifier: GPL-3.0-or-later
// The training-device registry, the "cpu" device (the CPU trainer's functions on its own copy of
// the state), and the loop's device path checked through a registered twin of it that counts the
// loop's calls: the loop must give the same bits as "cpu", including across an interruption and
// resume, uploading once and downloading the parameters and moments before every validation and
// checkpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>

#include "retnet/error.h"
#include "retnet/run_directory.h"
#include "retnet/safetensors.h"
#include "retnet/train_device.h"
#include "retnet/trainer.h"
#include "test_train_workspace.h"

namespace fs = std::filesystem;
using namespace retnet;
using namespace retnet::train;

namespace {

struct TwinCounters {
    int uploads = 0, downloads = 0, steps = 0, losses = 0;
    std::atomic<bool>* raise_on_loss = nullptr;  // a Ctrl-C during the first validation batch
    bool loss_out_of_memory = false;             // every validation batch fails to allocate
};

// Another device for the loop: the CPU device behind a counter of the loop's calls.
class HostTwinDevice final : public TrainDevice {
public:
    HostTwinDevice(const ModelConfig& config, const ParamLayout& layout, const TrainDeviceOptions& options,
                   TwinCounters* counters)
        : cpu_(config, layout, options), counters_(counters) {}
    std::string description() const override { return "host twin"; }
    void upload(std::span<const float> params, const AdamWState& state) override {
        counters_->uploads += 1;
        cpu_.upload(params, state);
    }
    void download(std::vector<float>& params, AdamWState& state) override {
        counters_->downloads += 1;
        cpu_.download(params, state);
    }
    double loss(const BatchView& batch) override {
        counters_->losses += 1;
        if (counters_->raise_on_loss) *counters_->raise_on_loss = true;
        if (counters_->loss_out_of_memory) throw std::bad_alloc();
        return cpu_.loss(batch);
    }
    double step(const BatchView& batch, double max_norm, const AdamWConfig& adamw, double lr,
                uint64_t dropout_seed, double* grad_norm) override {
        counters_->steps += 1;
        return cpu_.step(batch, max_norm, adamw, lr, dropout_seed, grad_norm);
    }
    void set_average(std::span<const float> average, double decay) override { cpu_.set_average(average, decay); }
    void download_average(std::vector<float>& average) override { cpu_.download_average(average); }
    void swap_average() override { cpu_.swap_average(); }
    void set_loss_cancelled(std::function<bool()> cancelled) override { cpu_.set_loss_cancelled(std::move(cancelled)); }

private:
    CpuTrainDevice cpu_;
    TwinCounters* counters_;
};

TwinCounters g_twin;

void register_twin() {
    register_train_device("host-twin", [](const ModelConfig& c, const ParamLayout& l, const TrainDeviceOptions& o) {
        return std::unique_ptr<TrainDevice>(new HostTwinDevice(c, l, o, &g_twin));
    });
    // A device without dropout refuses it in its factory, as the contract says.
    register_train_device("host-twin-no-dropout", [](const ModelConfig& c, const ParamLayout& l, const TrainDeviceOptions& o) {
        if (o.dropout > 0) throw Error("--dropout is not implemented by host-twin-no-dropout");
        return std::unique_ptr<TrainDevice>(new HostTwinDevice(c, l, o, &g_twin));
    });
}

// The first 20,000 characters, BPE 320, d 16 × 1 layer.
struct Workspace : test::TrainWorkspace {
    Workspace() : TrainWorkspace("retnet_train_device_test", {20000, 320, 16, 1, 32}) {}
    TrainOptions options(const std::string& out, const std::string& device) const {
        TrainOptions o;
        o.data_path = text.string();
        o.config_path = config.string();
        o.tokenizer_path = tokenizer.string();
        o.out_dir = (dir / out).string();
        o.device = device;
        o.steps = 8;
        o.batch = 2;
        o.seq_len = 16;
        o.chunk = 4;
        o.lr = 1e-2;
        o.warmup = 2;
        o.eval_every = 3;
        o.save_every = 3;
        o.eval_window = 32;
        o.log_every = 1;
        o.threads = 1;
        return o;
    }
};

// Two sequences of 12 tokens, the same every time.
struct FixedBatch {
    std::vector<int32_t> inputs, targets;
    explicit FixedBatch(const ModelConfig& config) : inputs(2 * 12), targets(inputs.size()) {
        for (size_t i = 0; i < inputs.size(); ++i) {
            inputs[i] = static_cast<int32_t>((i * 37 + 3) % static_cast<size_t>(config.vocab_size));
            targets[i] = static_cast<int32_t>((i * 11 + 5) % static_cast<size_t>(config.vocab_size));
        }
    }
    BatchView view() const { return BatchView{inputs.data(), targets.data(), 2, 12}; }
};

CheckpointInfo checkpoint_info(const TrainOptions& o) {
    const fs::path state = fs::path(o.out_dir) / "checkpoint" / "trainer_state.json";
    std::ifstream in(state);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return parse_checkpoint_info(text, state.string());
}

std::vector<float> checkpoint_params(const TrainOptions& o) {
    return load_trained_weights((fs::path(o.out_dir) / "checkpoint").string()).params;
}

std::vector<float> checkpoint_moment(const TrainOptions& o, const char* name) {
    return SafetensorsFile((fs::path(o.out_dir) / "checkpoint" / "optimizer.safetensors").string()).read(name).data;
}

}  // namespace

TEST(TrainDevice, RegistryListsCpuFirstAndNamesTheKnownDevicesOnError) {
    register_twin();
    const std::vector<std::string> names = train_devices();
    ASSERT_GE(names.size(), 2u);
    EXPECT_EQ(names.front(), "cpu");
    EXPECT_NE(std::find(names.begin(), names.end(), "host-twin"), names.end());
    const ModelConfig config = load_config(Workspace().config.string());
    const ParamLayout layout = make_param_layout(config);
    const std::unique_ptr<TrainDevice> cpu = make_train_device("cpu", config, layout, {});
    ASSERT_NE(dynamic_cast<CpuTrainDevice*>(cpu.get()), nullptr);
    EXPECT_EQ(cpu->description(), "cpu");
    try {
        make_train_device("tpu", config, layout, {});
        FAIL() << "no error for an unknown device";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown training device 'tpu' (known: cpu, "), std::string::npos) << e.what();
    }
    EXPECT_THROW(register_train_device("cpu", {}), Error);
}

// The "cpu" device runs the CPU trainer's own functions: two steps with dropout and an average
// give the bits of loss_and_gradient + clip_grad_norm + adamw_update + update_average on the
// same state, and loss() is the parallel form's loss without dropout.
TEST(TrainDevice, CpuDeviceStepsAreTheCpuTrainersFunctions) {
    const ModelConfig config = load_config(Workspace().config.string());
    const ParamLayout layout = make_param_layout(config);
    std::vector<float> params = flatten_weights(make_random_model(config, 5), layout);
    const FixedBatch fixed(config);
    const BatchView batch = fixed.view();
    const TrainDeviceOptions options{4, 0.3};
    const std::unique_ptr<TrainDevice> device = make_train_device("cpu", config, layout, options);
    AdamWState state = make_adamw_state(layout);
    device->upload(params, state);
    std::vector<float> average = params;
    device->set_average(average, 0.9);
    const AdamWConfig adamw;
    std::vector<float> grad(params.size());
    for (uint64_t seed = 7; seed < 9; ++seed) {
        LossOptions lo;
        lo.chunk = options.chunk;
        lo.dropout = options.dropout;
        lo.dropout_seed = seed;
        const double loss = loss_and_gradient<float>(config, layout, params.data(), batch, grad.data(), lo);
        const double norm = clip_grad_norm(grad, 0.5);
        adamw_update(params, grad, state, layout, adamw, 1e-2);
        update_average(average, params, average_decay_at(0.9, state.step));
        double device_norm = 0;
        EXPECT_EQ(device->step(batch, 0.5, adamw, 1e-2, seed, &device_norm), loss);
        EXPECT_EQ(device_norm, norm);
    }
    std::vector<float> got_params, got_average;
    AdamWState got_state;
    device->download(got_params, got_state);
    device->download_average(got_average);
    EXPECT_EQ(got_params, params);
    EXPECT_EQ(got_state.m, state.m);
    EXPECT_EQ(got_state.v, state.v);
    EXPECT_EQ(got_state.step, 2);
    EXPECT_EQ(got_average, average);
    EXPECT_EQ(device->loss(batch), loss_and_gradient<float>(config, layout, params.data(), batch, nullptr));
    device->swap_average();
    EXPECT_EQ(device->loss(batch), loss_and_gradient<float>(config, layout, average.data(), batch, nullptr));
    EXPECT_THROW(make_train_device("cpu", config, layout, TrainDeviceOptions{0, 1.0}), Error);
}

// The loop on the twin device against the CPU loop, interrupted after step 4 and resumed.
void expect_device_loop_gives_cpu_bits(double dropout, double average_decay = 0) {
    register_twin();
    Workspace ws;
    TrainOptions cpu = ws.options("cpu", "cpu");
    cpu.dropout = dropout;
    cpu.average_decay = average_decay;
    std::vector<double> cpu_losses;
    run_training(cpu, [&](const TrainProgress& p) {
        if (!p.is_validation && p.message.empty()) cpu_losses.push_back(p.loss);
    });

    g_twin = {};
    TrainOptions dev = ws.options("dev", "host-twin");
    dev.dropout = dropout;
    dev.average_decay = average_decay;
    std::atomic<bool> stop{false};
    std::vector<double> dev_losses;
    const auto on_progress = [&](const TrainProgress& p) {
        if (!p.is_validation && p.message.empty()) {
            dev_losses.push_back(p.loss);
            if (p.step == 4) stop = true;
        }
    };
    const TrainResult first = run_training(dev, on_progress, &stop);
    EXPECT_TRUE(first.interrupted);
    EXPECT_EQ(first.steps_done, 4);
    EXPECT_EQ(g_twin.uploads, 1);
    EXPECT_EQ(g_twin.steps, 4);
    EXPECT_GT(g_twin.losses, 0);  // the step-3 validation ran on the device
    EXPECT_EQ(g_twin.downloads, 2);  // the step-3 validation + checkpoint, the interruption checkpoint
    stop = false;
    dev.resume = true;
    const TrainResult second = run_training(dev, on_progress, &stop);
    EXPECT_EQ(second.steps_done, 8);
    EXPECT_EQ(g_twin.uploads, 2);  // the resumed state went back to the device
    EXPECT_EQ(g_twin.steps, 8);

    EXPECT_EQ(dev_losses, cpu_losses);
    EXPECT_EQ(checkpoint_params(dev), checkpoint_params(cpu));
    EXPECT_EQ(checkpoint_moment(dev, "adamw.m"), checkpoint_moment(cpu, "adamw.m"));
    EXPECT_EQ(checkpoint_moment(dev, "adamw.v"), checkpoint_moment(cpu, "adamw.v"));
    if (average_decay > 0) {
        EXPECT_EQ(checkpoint_moment(dev, "average"), checkpoint_moment(cpu, "average"));
    }
    EXPECT_EQ(load_trained_weights((fs::path(dev.out_dir) / "best").string()).params,
              load_trained_weights((fs::path(cpu.out_dir) / "best").string()).params);
}

TEST(TrainDevice, LoopOnADeviceGivesTheCpuLoopsBitsAcrossInterruptionAndResume) {
    expect_device_loop_gives_cpu_bits(0.0);
}

// The per-step mask seed reaches the device: with dropout the losses would differ from step 0 on
// if the device drew other masks (or none).
TEST(TrainDevice, LoopOnADeviceWithDropoutGivesTheCpuLoopsBits) {
    expect_device_loop_gives_cpu_bits(0.3);
}

// The device keeps and validates the parameter average (swap_average around the validation).
TEST(TrainDevice, LoopOnADeviceWithAParameterAverageGivesTheCpuLoopsBits) {
    expect_device_loop_gives_cpu_bits(0.0, 0.8);
}

TEST(TrainDevice, ADeviceWithoutDropoutRefusesIt) {
    register_twin();
    Workspace ws;
    TrainOptions o = ws.options("nodrop", "host-twin-no-dropout");
    o.dropout = 0.2;
    try {
        run_training(o, {});
        FAIL() << "no error for --dropout on a device without it";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("--dropout is not implemented by host-twin-no-dropout"), std::string::npos)
            << e.what();
    }
    o.dropout = 0;
    o.steps = 1;
    EXPECT_EQ(run_training(o, {}).steps_done, 1);
}

// A stop raised during a validation is seen after that batch of windows: the validation ends
// there (one batch of the step-3 validation's many), the step's checkpoint is saved owing it (no
// best/), and a resume runs that validation first, then continues to the end: the same
// validations, best/ and final weights as a run that was never stopped.
TEST(TrainDevice, AStopDuringAValidationEndsItAtOnceAndKeepsTheStep) {
    register_twin();
    Workspace ws;
    TrainOptions o = ws.options("stop_in_validation", "host-twin");
    o.eval_window = 8;  // the held-out tail in many batches of 8 windows
    o.save_every = 0;
    std::atomic<bool> stop{false};
    g_twin = {};
    g_twin.raise_on_loss = &stop;
    const TrainResult r = run_training(o, {}, &stop);
    EXPECT_TRUE(r.interrupted);
    EXPECT_TRUE(r.interrupted_in_validation);
    EXPECT_EQ(r.steps_done, 3);
    EXPECT_EQ(g_twin.losses, 1);
    EXPECT_EQ(checkpoint_info(o).step, 3);
    EXPECT_TRUE(checkpoint_info(o).validation_pending);
    EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "best"));

    g_twin.raise_on_loss = nullptr;
    stop = false;
    o.resume = true;
    std::vector<std::pair<int64_t, double>> validations;
    const auto record = [&](const TrainProgress& p) {
        if (p.is_validation) validations.emplace_back(p.step, p.val_loss);
    };
    const TrainResult resumed = run_training(o, record, &stop);
    EXPECT_FALSE(resumed.interrupted);
    EXPECT_EQ(resumed.steps_done, 8);
    EXPECT_EQ(checkpoint_info(o).step, 8);
    EXPECT_FALSE(checkpoint_info(o).validation_pending);

    TrainOptions whole = ws.options("never_stopped", "cpu");
    whole.eval_window = 8;
    whole.save_every = 0;
    std::vector<std::pair<int64_t, double>> whole_validations;
    run_training(whole, [&](const TrainProgress& p) {
        if (p.is_validation) whole_validations.emplace_back(p.step, p.val_loss);
    });
    ASSERT_EQ(whole_validations.size(), 3u);  // steps 3, 6 and 8
    EXPECT_EQ(validations, whole_validations);
    EXPECT_EQ(checkpoint_params(o), checkpoint_params(whole));
    EXPECT_EQ(load_trained_weights((fs::path(o.out_dir) / "best").string()).params,
              load_trained_weights((fs::path(whole.out_dir) / "best").string()).params);
}

// A validation that runs out of memory writes the step's checkpoint first (whatever save_every
// says) and says how to go on, in one line.
TEST(TrainDevice, AValidationOutOfMemorySavesTheStepAndSaysHowToGoOn) {
    register_twin();
    Workspace ws;
    TrainOptions o = ws.options("oom_in_validation", "host-twin");
    o.save_every = 0;
    g_twin = {};
    g_twin.loss_out_of_memory = true;
    try {
        run_training(o, {});
        FAIL() << "no error for a validation out of memory";
    } catch (const OutOfMemory& e) {
        EXPECT_EQ(std::string(e.what()), "the validation after step 3 (8 windows of --eval-window 32 tokens at once) ran out "
                                         "of memory; the checkpoint of step 3 is saved: --resume it with a lower "
                                         "--eval-window (it runs that validation first)");
    }
    EXPECT_EQ(checkpoint_info(o).step, 3);
    EXPECT_TRUE(checkpoint_info(o).validation_pending);
    g_twin.loss_out_of_memory = false;
    o.resume = true;
    o.eval_window = 16;  // a lower --eval-window continues the run
    std::vector<int64_t> validated;
    const TrainResult resumed = run_training(o, [&](const TrainProgress& p) {
        if (p.is_validation) validated.push_back(p.step);
    });
    EXPECT_EQ(resumed.steps_done, 8);
    EXPECT_EQ(validated, (std::vector<int64_t>{3, 6, 8}));
}

// The CPU device's loss asks its cancel callback between layers (a validation's batch of long
// windows takes seconds): true ends it with retnet::Cancelled; cleared, the loss is the trainer's.
TEST(TrainDevice, TheCpuDevicesLossStopsWhenAskedTo) {
    const ModelConfig config = load_config(Workspace().config.string());
    const ParamLayout layout = make_param_layout(config);
    const std::vector<float> params = flatten_weights(make_random_model(config, 5), layout);
    const FixedBatch fixed(config);
    const BatchView batch = fixed.view();
    const std::unique_ptr<TrainDevice> device = make_train_device("cpu", config, layout, {});
    device->upload(params, make_adamw_state(layout));
    int asked = 0;
    device->set_loss_cancelled([&asked] { return ++asked >= 1; });
    EXPECT_THROW(device->loss(batch), Cancelled);
    EXPECT_EQ(asked, 1);
    device->set_loss_cancelled({});
    EXPECT_EQ(device->loss(batch), loss_and_gradient<float>(config, layout, params.data(), batch, nullptr));
}
