// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/train_device.h"

#include <map>
#include <mutex>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "device_registry.h"

namespace retnet::train {

namespace {

struct Registry {
    std::mutex mutex;
    std::map<std::string, TrainDeviceFactory> factories;
};

Registry& registry() {
    static Registry r;
    return r;
}

}  // namespace

void register_train_device(const std::string& name, TrainDeviceFactory factory) {
    if (name == "cpu") throw Error("training device 'cpu' is built in and cannot be registered");
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    r.factories[name] = std::move(factory);
}

std::vector<std::string> train_devices() {
    load_device_modules();
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    std::vector<std::string> names{"cpu"};
    for (const auto& [name, factory] : r.factories) names.push_back(name);
    return names;
}

std::unique_ptr<TrainDevice> make_train_device(const std::string& name, const ModelConfig& config,
                                               const ParamLayout& layout, const TrainDeviceOptions& options) {
    if (name == "cpu") return std::make_unique<CpuTrainDevice>(config, layout, options);
    Registry& r = registry();
    const TrainDeviceFactory factory = find_registered(r.mutex, r.factories, name);
    if (!factory) {
        std::string known;
        for (const std::string& n : train_devices()) known += (known.empty() ? "" : ", ") + n;
        throw Error("unknown training device '" + name + "' (known: " + known + ")");
    }
    return factory(config, layout, options);
}

}  // namespace retnet::train
