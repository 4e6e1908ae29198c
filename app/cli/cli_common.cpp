// SPDX-License-Identifier: GPL-3.0-or-later
#include "cli_common.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <unistd.h>

#include "retnet/error.h"
#include "retnet/intervention.h"

namespace retnet::cli {
namespace fs = std::filesystem;

namespace {
fs::path executable_dir() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : exe.parent_path();
}
}  // namespace

std::string default_model_dir() {
    if (const char* env = std::getenv("RETNET_DEFAULT_MODEL"); env && *env) return env;
    const fs::path exe_dir = executable_dir();
    for (const fs::path& candidate :
         {exe_dir / "../../resources/models/default", exe_dir / "../resources/models/default",
          exe_dir / "../share/retnet-studio/models/default"}) {
        std::error_code ec;
        if (fs::exists(candidate / "config.json", ec)) return fs::weakly_canonical(candidate, ec).string();
    }
    return "";
}

std::shared_ptr<const Model> load_model_option(Args& args) {
    std::string dir = args.get_or("model", "");
    if (dir.empty()) {
        dir = default_model_dir();
        if (dir.empty())
            throw Error("no --model given and no bundled default model found (looked in "
                        "$RETNET_DEFAULT_MODEL and resources/models/default)");
    }
    return load_model_edited(args, dir);
}

Interventions interventions_option(Args& args) {
    return parse_interventions(args.get_or("mute", ""), args.get_or("gamma", ""));
}

std::shared_ptr<const Model> load_model_edited(Args& args, const std::string& dir) {
    const Interventions edits = interventions_option(args);
    Model model = load_model(dir);
    if (edits.empty()) return std::make_shared<const Model>(std::move(model));
    auto edited = std::make_shared<const Model>(apply_interventions(model, edits));
    std::fprintf(stderr, "retnet: interventions: %s\n", describe(edits).c_str());
    return edited;
}

std::unique_ptr<Backend> make_backend_option(Args& args, std::shared_ptr<const Model> model) {
    const std::string device = args.get_or("device", "cpu");
    std::string notice;
    auto backend = make_backend_or_cpu(device, std::move(model), &notice);
    if (!notice.empty()) std::fprintf(stderr, "retnet: %s\n", notice.c_str());
    return backend;
}

namespace {
std::atomic<bool> g_interrupted{false};
extern "C" void retnet_cli_on_sigint(int) { g_interrupted.store(true); }
}  // namespace

InterruptGuard::InterruptGuard() {
    g_interrupted.store(false);
    previous_ = std::signal(SIGINT, retnet_cli_on_sigint);
}
InterruptGuard::~InterruptGuard() { std::signal(SIGINT, previous_); }
const std::atomic<bool>& InterruptGuard::flag() const { return g_interrupted; }
std::atomic<bool>& InterruptGuard::flag() { return g_interrupted; }

std::vector<int32_t> tokens_option(Args& args) { return parse_token_list(args.require("tokens")); }

}  // namespace retnet::cli
