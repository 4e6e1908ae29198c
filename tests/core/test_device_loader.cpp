// SPDX-License-Identifier: GPL-3.0-or-later
// The device loader (retnet/forward.h): a module's devices are loaded once, when a device that is
// not registered is asked for or the devices are listed, never for a built-in device.
#include <gtest/gtest.h>

#include <algorithm>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/train_device.h"
#include "test_models.h"

namespace retnet {
namespace {

TEST(DeviceLoader, RunsOnceAndOnlyForADeviceThatIsNotRegistered) {
    int runs = 0;
    set_device_loader([&runs] {
        ++runs;
        register_backend("on-demand", [](std::shared_ptr<const Model> m) { return make_cpu_backend(std::move(m)); });
    });
    const auto model = test::small_model(Family::Fla, 1);
    EXPECT_EQ(make_backend("cpu", model)->name(), "cpu");
    EXPECT_EQ(make_backend("reference", model)->name(), "reference");
    std::string notice;
    EXPECT_EQ(make_backend_or_cpu("cpu", model, &notice)->name(), "cpu");
    EXPECT_EQ(runs, 0) << "a built-in device loaded the modules";

    EXPECT_EQ(make_backend("on-demand", model)->name(), "cpu");
    EXPECT_EQ(runs, 1);
    try {
        make_backend("tpu", model);
        ADD_FAILURE() << "an unknown device was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown device 'tpu' (known: cpu, on-demand, "), std::string::npos) << e.what();
    }
    const std::vector<std::string> devices = available_devices();
    EXPECT_NE(std::find(devices.begin(), devices.end(), "on-demand"), devices.end());
    const std::vector<std::string> trainers = train::train_devices();
    EXPECT_EQ(trainers.front(), "cpu");
    EXPECT_EQ(runs, 1) << "the loader ran more than once";
    set_device_loader(nullptr);
}

// The CLI's GPU-only choices (--gpus, the GPU defaults of cost, --dtype on the device) go by this.
TEST(DeviceNames, TheCudaDevicesAreTheGpus) {
    for (const char* gpu : {"cuda", "cuda-bf16", "cuda-tf32"}) EXPECT_TRUE(is_gpu_device(gpu)) << gpu;
    for (const char* host : {"cpu", "reference", "", "cud", "on-demand"}) EXPECT_FALSE(is_gpu_device(host)) << host;
    const auto model = test::small_model(Family::Fla, 1);
    for (const char* device : {"cpu", "reference"}) EXPECT_FALSE(make_backend(device, model)->on_device()) << device;
}

TEST(DeviceLoader, ATrainingDeviceIsLoadedOnDemandToo) {
    int runs = 0;
    set_device_loader([&runs] {
        ++runs;
        train::register_train_device("on-demand-trainer", [](const ModelConfig&, const train::ParamLayout&,
                                                             const train::TrainDeviceOptions&) -> std::unique_ptr<train::TrainDevice> {
            throw Error("on-demand-trainer: no such hardware");
        });
    });
    const ModelConfig config = test::small_config(Family::Fla);
    const train::ParamLayout layout = train::make_param_layout(config);
    EXPECT_NE(train::make_train_device("cpu", config, layout, {}), nullptr);
    EXPECT_EQ(runs, 0);
    try {
        train::make_train_device("on-demand-trainer", config, layout, {});
        ADD_FAILURE() << "the stand-in trainer was not found";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "on-demand-trainer: no such hardware");
    }
    EXPECT_EQ(runs, 1);
    set_device_loader(nullptr);
}

}  // namespace
}  // namespace retnet
