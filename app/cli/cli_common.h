// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What several subcommands share: finding and loading the model, choosing the backend.
#include <atomic>
#include <csignal>
#include <memory>
#include <string>

#include "args.h"
#include "retnet/forward.h"
#include "retnet/intervention.h"
#include "retnet/model.h"

namespace retnet::cli {

// The bundled default model: $RETNET_DEFAULT_MODEL, else resources/models/default next to the
// source tree the executable was built from, else the installed share/ path. "" if none exists.
std::string default_model_dir();

// --model DIR, or the bundled default model when the option is absent; with the interventions of
// --mute L.H,… and --gamma H=G,… applied (retnet/intervention.h), announced on stderr.
std::shared_ptr<const Model> load_model_option(Args& args);
// The same for a directory already chosen.
std::shared_ptr<const Model> load_model_edited(Args& args, const std::string& dir);
// --mute and --gamma alone.
Interventions interventions_option(Args& args);

// --device cpu|cuda|reference (default cpu). A CUDA request on a machine without a usable GPU
// falls back to the CPU with a one-line notice on stderr.
std::unique_ptr<Backend> make_backend_option(Args& args, std::shared_ptr<const Model> model);

// Ctrl-C during a long command: while an InterruptGuard lives, SIGINT only raises flag(), which the
// work polls (to stop cleanly: save, print what it has, exit 130); the previous handler comes back
// when the guard ends. One guard at a time.
class InterruptGuard {
public:
    InterruptGuard();
    ~InterruptGuard();
    InterruptGuard(const InterruptGuard&) = delete;
    InterruptGuard& operator=(const InterruptGuard&) = delete;
    const std::atomic<bool>& flag() const;
    std::atomic<bool>& flag();
    bool raised() const { return flag().load(); }

private:
    void (*previous_)(int);
};

// --tokens 5,17,933 (required unless `optional`).
std::vector<int32_t> tokens_option(Args& args);

}  // namespace retnet::cli
