// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The lookup shared by the inference and training device registries (forward.h, train_device.h):
// a device that is not registered yet may live in a module the device loader brings in.
#include <mutex>
#include <string>

#include "retnet/forward.h"

namespace retnet {

// The factory registered for `name` in `factories`, or an empty one; without one, the device
// modules are loaded (once, outside `mutex`) and `factories` is asked again.
template <typename Map>
typename Map::mapped_type find_registered(std::mutex& mutex, const Map& factories, const std::string& name) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (attempt == 1) load_device_modules();
        std::lock_guard lock(mutex);
        if (const auto it = factories.find(name); it != factories.end()) return it->second;
    }
    return {};
}

}  // namespace retnet
