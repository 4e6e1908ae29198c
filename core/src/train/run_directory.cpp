// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/run_directory.h"

#include <algorithm>
#include <limits>
#include <type_traits>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "retnet/config.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/json_text.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"

namespace retnet::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kRunFiles[] = {"checkpoint", "checkpoint.old", "checkpoint.tmp", "best", "best.old", "best.tmp"};
constexpr const char* kCheckpointFiles[] = {"config.json", "model.safetensors", "tokenizer.model",
                                            "optimizer.safetensors", "trainer_state.json"};

// 64-bit FNV-1a of a file, read in blocks (memory stays bounded for any size).
std::pair<uint64_t, std::string> file_hash(const std::string& path) {
    require_regular_file(path);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    uint64_t hash = 1469598103934665603ull, bytes = 0;
    std::vector<char> block(1 << 20);
    while (in) {
        in.read(block.data(), static_cast<std::streamsize>(block.size()));
        const auto n = static_cast<size_t>(in.gcount());
        for (size_t i = 0; i < n; ++i) hash = (hash ^ static_cast<unsigned char>(block[i])) * 1099511628211ull;
        bytes += n;
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    return {bytes, hex};
}

// An integer field must hold an integer that fits T: the library's own conversion of 4e28 or of
// 2^64 − 1 to a narrower type would be undefined or wrap silently (found by fuzz_run_metadata).
template <typename T>
bool fits(const json& v) {
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        if (!v.is_number_integer()) return false;
        if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
        const int64_t x = v.get<int64_t>();
        return x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
               (std::is_unsigned_v<T> || x <= static_cast<int64_t>(std::numeric_limits<T>::max()));
    }
    return true;
}

template <typename T>
T field(const json& j, const char* name, const std::string& source) {
    if (!j.is_object() || !j.contains(name)) throw Error(source + ": missing field '" + name + "'");
    const json& v = j.at(name);
    try {
        if (fits<T>(v)) return v.get<T>();
    } catch (const json::exception&) {
    }
    throw Error(source + ": field '" + name + "' has the wrong type or is out of range (" + v.dump().substr(0, 80) + ")");
}

json parse_json(const std::string& text, const std::string& source) {
    try {
        return parse_json_bounded(text);
    } catch (const json::exception& e) {
        throw Error(source + ": not valid JSON (" + json_error_text(e) + ")");
    }
}

bool holds_run(const fs::path& out) {
    std::error_code ec;
    for (const char* name : kRunFiles)
        if (fs::exists(fs::symlink_status(out / name, ec))) return true;
    return false;
}

// The checkpoint directory's progress after checking that each file is present and readable: the
// state parses, both safetensors files have valid headers and sizes, the config and tokenizer load.
CheckpointInfo verify_checkpoint(const fs::path& dir) {
    for (const char* name : kCheckpointFiles) require_regular_file((dir / name).string());
    const std::string state_path = (dir / "trainer_state.json").string();
    CheckpointInfo info = parse_checkpoint_info(read_regular_file(state_path, 1 << 20), state_path);
    SafetensorsFile((dir / "model.safetensors").string());
    const SafetensorsFile optimizer((dir / "optimizer.safetensors").string());
    check_optimizer_step(optimizer.metadata(), optimizer.path(), info.step, state_path);
    load_config((dir / "config.json").string());
    Tokenizer::load((dir / "tokenizer.model").string());
    return info;
}

std::optional<CheckpointInfo> checkpoint_step(const fs::path& dir) {
    try {
        const std::string path = (dir / "trainer_state.json").string();
        return parse_checkpoint_info(read_regular_file(path, 1 << 20), path);
    } catch (const Error&) {
        return std::nullopt;
    }
}

// checkpoint.tmp/'s progress when it is complete (a kill came between writing it and renaming it);
// nothing when there is none or it was cut off while written.
std::optional<CheckpointInfo> complete_checkpoint_tmp(const fs::path& out) {
    const fs::path tmp = out / "checkpoint.tmp";
    std::error_code ec;
    if (!fs::is_directory(tmp, ec)) return std::nullopt;
    try {
        return verify_checkpoint(tmp);
    } catch (const Error&) {
        return std::nullopt;
    }
}

// A complete checkpoint.tmp/ is taken when it is newer than the one in place (an incomplete one is
// left: checkpoint/ is then the last good one).
void recover_checkpoint_tmp(const fs::path& out, std::string* notice) {
    const fs::path tmp = out / "checkpoint.tmp", final_dir = out / "checkpoint";
    const std::optional<CheckpointInfo> recovered = complete_checkpoint_tmp(out);
    if (!recovered) return;
    const CheckpointInfo& info = *recovered;
    std::optional<CheckpointInfo> current = checkpoint_step(final_dir);
    if (!current) current = checkpoint_step(out / "checkpoint.old");
    if (current && current->step >= info.step) return;
    swap_in_directory(tmp, final_dir);
    if (notice)
        *notice = "recovered the complete checkpoint of step " + std::to_string(info.step) + " from " + tmp.string() +
                  " (the previous run ended before renaming it)";
}

}  // namespace

void check_optimizer_step(const std::map<std::string, std::string>& optimizer_metadata,
                          const std::string& optimizer_path, int64_t step, const std::string& state_path) {
    const auto written_at = optimizer_metadata.find("step");
    if (written_at != optimizer_metadata.end() && written_at->second != std::to_string(step))
        throw Error(optimizer_path + ": written at step " + written_at->second.substr(0, 40) + ", but " + state_path +
                    " is at step " + std::to_string(step) + "; the checkpoint mixes files of two steps");
}

void swap_in_directory(const fs::path& tmp_dir, const fs::path& final_dir) {
    const fs::path old_dir = final_dir.string() + ".old";
    fs::remove_all(old_dir);
    if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
    fs::rename(tmp_dir, final_dir);
    fs::remove_all(old_dir);
}

namespace {

// The checkpoint --resume would take, by its state file; one that cannot be looked at (no
// permission) is taken, so that the error reading it names the problem.
std::optional<fs::path> resumable_checkpoint(const fs::path& out) {
    for (const char* name : {"checkpoint", "checkpoint.old"}) {
        std::error_code ec;
        if (fs::exists(out / name / "trainer_state.json", ec) || ec) return out / name;
    }
    return std::nullopt;
}

// True when --resume has something to continue or to name: a checkpoint directory (one without
// its state file too: --resume then names what is missing, where --overwrite would throw away the
// weights it still holds), or a complete checkpoint.tmp/ that it would recover (a kill between
// writing the first checkpoint and renaming it).
bool resume_has_checkpoint(const fs::path& out) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(out / "checkpoint", ec)) || fs::exists(fs::symlink_status(out / "checkpoint.old", ec)))
        return true;
    return complete_checkpoint_tmp(out).has_value();
}

}  // namespace

fs::path resume_checkpoint(const fs::path& out) {
    if (const auto found = resumable_checkpoint(out)) return *found;
    std::error_code ec;
    if (fs::exists(fs::symlink_status(out / "checkpoint.tmp", ec)))
        throw Error(out.string() + ": no checkpoint to resume: the run stopped while writing its first one (" +
                    (out / "checkpoint.tmp").string() + " is incomplete); start it again with --overwrite");
    if (fs::exists(fs::symlink_status(out / "checkpoint", ec)))  // its weights may be worth keeping
        throw Error(out.string() + ": no checkpoint to resume (checkpoint/trainer_state.json missing); copy out of " +
                    (out / "checkpoint").string() + " what you want to keep, then start again with --overwrite");
    if (!holds_run(out))
        throw Error(out.string() + ": no checkpoint to resume (no run was started there); start one without --resume");
    throw Error(out.string() + ": no checkpoint to resume (none is left); start the run again with --overwrite, "
                "which removes what it holds, or choose another --out");
}

namespace {

void check_same_inputs(const TrainOptions& o, const fs::path& checkpoint) {
    const fs::path run_file = fs::path(o.out_dir) / "run.json";
    if (!o.tokenizer_path.empty()) {
        const std::string ours = (checkpoint / "tokenizer.model").string();
        if (file_hash(o.tokenizer_path) != file_hash(ours))
            throw Error("--tokenizer " + o.tokenizer_path + " is not the tokenizer of the run in " + o.out_dir + " (" +
                        ours + "); resume without --tokenizer, or start a new run");
    }
    std::error_code ec;
    if (fs::exists(run_file, ec)) {
        const RunInputs run = parse_run_inputs(read_regular_file(run_file.string(), 1 << 20), run_file.string());
        const std::pair<uint64_t, std::string> data = file_hash(o.data_path);
        if (data.first != run.data_bytes || data.second != run.data_hash)
            throw Error("--data " + o.data_path + " is not the text the run in " + o.out_dir + " started with (" +
                        run.data + ": " + std::to_string(run.data_bytes) + " bytes, hash " + run.data_hash + "; now " +
                        std::to_string(data.first) + " bytes, hash " + data.second + ")");
        return;
    }
    // A run from before run.json: the checkpoint names its data file.
    const std::string state_path = (checkpoint / "trainer_state.json").string();
    const CheckpointInfo info = parse_checkpoint_info(read_regular_file(state_path, 1 << 20), state_path);
    if (fs::weakly_canonical(info.data, ec) != fs::weakly_canonical(o.data_path, ec))
        throw Error("--data " + o.data_path + " is not the text the run in " + o.out_dir + " started with (" +
                    info.data + ")");
}

// The names a run writes in its directory besides the complete checkpoints, in the order a failed
// start removes them: train.lock last.
constexpr const char* kMadeByARun[] = {"run.json", "checkpoint.tmp", "best.tmp", "train.lock"};

bool stands(const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));  // a dangling symlink stands there too
}

// `dir` and those of its parents that do not exist, innermost first: what create_directories makes.
std::vector<std::string> missing_directories(const std::string& dir) {
    std::vector<std::string> missing;
    fs::path p(dir);
    if (!p.has_filename()) p = p.parent_path();  // "run/" names "run"
    for (; !p.empty() && !stands(p); p = p.parent_path()) missing.push_back(p.string());
    return missing;
}

// An open lock file still named train.lock: another process's failed start may have removed the
// name between our open() and flock(); the lock on the removed file would guard nothing.
bool still_named(int fd, const std::string& path) {
    struct stat opened {}, named {};
    return ::fstat(fd, &opened) == 0 && ::stat(path.c_str(), &named) == 0 && opened.st_dev == named.st_dev &&
           opened.st_ino == named.st_ino;
}

}  // namespace

// The filesystem root is a directory, but a run there would put train.lock, run.json and its
// checkpoints among the system's directories (and --overwrite would clear them from there).
void refuse_the_root(const std::string& out_dir) {
    std::error_code ec;
    const fs::path full = fs::weakly_canonical(fs::absolute(out_dir, ec), ec);
    if (ec || full != full.root_path()) return;
    throw Error("--out " + out_dir + " is the filesystem root" + (out_dir == full.string() ? "" : " (" + full.string() + ")") +
                "; give the run a directory of its own, e.g. --out runs/NAME");
}

std::string resolve_run_directory(const std::string& out_dir) {
    if (out_dir.empty()) throw Error("--out is empty; give the run directory");
    refuse_the_root(out_dir);  // however it is spelt: "/", "//", "/tmp/..", a link to "/"
    return follow_output_directory(out_dir);
}

RunDirectoryLock::RunDirectoryLock(const std::string& out_dir) : dir_(out_dir) {
    const std::string path = (fs::path(out_dir) / "train.lock").string();
    check_output_directory(out_dir, "the run directory");
    for (int attempt = 0; fd_ < 0; ++attempt) {
        for (std::string& dir : missing_directories(out_dir))
            if (std::find(made_dirs_.begin(), made_dirs_.end(), dir) == made_dirs_.end())
                made_dirs_.push_back(std::move(dir));
        std::error_code ec;
        fs::create_directories(out_dir, ec);
        if (ec) {  // what check_output_directory saw has changed since
            remove_made_directories();
            throw Error(out_dir + ": cannot create the run directory (" + ec.message() + ")");
        }
        new_names_.clear();
        for (const char* name : kMadeByARun)
            if (!stands(fs::path(out_dir) / name)) new_names_.push_back(name);
        fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd_ < 0) {
            const std::string reason = std::strerror(errno);
            remove_made_directories();
            throw Error(path + ": cannot create the lock file (" + reason + ")");
        }
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = {};
            const ssize_t n = ::pread(fd_, pid, sizeof pid - 1, 0);
            ::close(fd_);
            fd_ = -1;
            std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "";
            if (holder.find_first_not_of("0123456789") != std::string::npos) holder.clear();
            // No id yet when the holder has only just taken the lock (two starts at once).
            throw Error(out_dir + " is in use by another `retnet train`" +
                        (holder.empty() ? std::string() : " (process " + holder + ")") +
                        "; wait for it or choose another --out");
        }
        if (!still_named(fd_, path)) {
            ::close(fd_);
            fd_ = -1;
            if (attempt == 10)
                throw Error(path + ": the lock file keeps being removed; is another process cleaning " + out_dir + "?");
        }
    }
    const std::string me = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) < 0) {
        // The lock holds without the pid; only the message of a second writer loses it.
    }
}

RunDirectoryLock::~RunDirectoryLock() {
    if (fd_ < 0) return;
    const fs::path out(dir_);
    bool saved = false;
    for (const char* name : {"checkpoint", "checkpoint.old", "best", "best.old"}) saved = saved || stands(out / name);
    // Removed while the lock is held (train.lock last), so a process that takes the directory
    // meanwhile finds it locked or finds none of these.
    if (!saved) remove_what_this_process_made();
    ::close(fd_);  // closing releases the flock
}

// What this process made, when the directory holds no run: train.lock is removed last and the
// directories only when empty, so a process that took the directory meanwhile keeps its files.
void RunDirectoryLock::remove_what_this_process_made() const {
    std::error_code ec;
    for (const std::string& name : new_names_) fs::remove_all(fs::path(dir_) / name, ec);  // kMadeByARun's order
    remove_made_directories();
}

void RunDirectoryLock::remove_made_directories() const {
    std::error_code ec;
    for (const std::string& dir : made_dirs_) fs::remove(dir, ec);  // rmdir: only when empty
}

CheckpointInfo parse_checkpoint_info(const std::string& json_text, const std::string& source) {
    const json j = parse_json(json_text, source);
    CheckpointInfo info;
    info.step = field<int64_t>(j, "step", source);
    info.total_steps = field<int64_t>(j, "total_steps", source);
    info.schedule_fixed = field<bool>(j, "schedule_fixed", source);
    info.validation_pending = j.contains("validation_pending") && field<bool>(j, "validation_pending", source);
    info.data = j.is_object() && j.contains("data") ? field<std::string>(j, "data", source) : "";
    if (info.step < 0 || info.total_steps < 1)
        throw Error(source + ": step " + std::to_string(info.step) + " of " + std::to_string(info.total_steps) +
                    " is impossible");
    return info;
}

RunInputs fingerprint_inputs(const std::string& data_path, const std::string& tokenizer_path) {
    RunInputs r;
    r.data = data_path;
    std::tie(r.data_bytes, r.data_hash) = file_hash(data_path);
    r.tokenizer = tokenizer_path;
    if (!tokenizer_path.empty()) std::tie(r.tokenizer_bytes, r.tokenizer_hash) = file_hash(tokenizer_path);
    return r;
}

RunInputs parse_run_inputs(const std::string& json_text, const std::string& source) {
    const json j = parse_json(json_text, source);
    RunInputs r;
    r.data = field<std::string>(j, "data", source);
    r.data_bytes = field<uint64_t>(j, "data_bytes", source);
    r.data_hash = field<std::string>(j, "data_hash", source);
    r.tokenizer = field<std::string>(j, "tokenizer", source);
    r.tokenizer_bytes = field<uint64_t>(j, "tokenizer_bytes", source);
    r.tokenizer_hash = field<std::string>(j, "tokenizer_hash", source);
    return r;
}

std::string run_inputs_json(const RunInputs& r) {
    const json j = {{"data", r.data},           {"data_bytes", r.data_bytes},           {"data_hash", r.data_hash},
                    {"tokenizer", r.tokenizer}, {"tokenizer_bytes", r.tokenizer_bytes}, {"tokenizer_hash", r.tokenizer_hash}};
    return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// --overwrite removes the old run's checkpoints once the new run has started: an input of the new
// run kept inside them (a tokenizer taken from the old run's best/) would go with them.
void refuse_inputs_inside_run(const TrainOptions& o, const fs::path& out) {
    for (const auto& [option, path] : o.named_inputs()) {
        std::error_code ec;
        const fs::path input = fs::weakly_canonical(path, ec);
        if (ec) continue;
        for (const char* name : kRunFiles) {
            const fs::path held = fs::weakly_canonical(out / name, ec);
            if (ec) continue;
            const auto [end, _] = std::mismatch(held.begin(), held.end(), input.begin(), input.end());
            if (end == held.end())
                throw Error(option + " " + path + " is inside the run that --overwrite would replace (" +
                            (out / name).string() + "); copy it out of " + out.string() + " first");
        }
    }
}

}  // namespace

std::optional<CheckpointInfo> prepare_run_directory(const TrainOptions& o, bool overwrite, std::string* notice) {
    const fs::path out(o.out_dir);
    if (o.resume && overwrite) throw Error("--resume and --overwrite exclude each other");
    if (o.resume) {
        recover_checkpoint_tmp(out, notice);
        const fs::path checkpoint = resume_checkpoint(out);
        check_same_inputs(o, checkpoint);
        // Before anything looks at the step: a finished run resumed with other options is refused
        // like an unfinished one, not called complete.
        check_resume_options(o, checkpoint.string());
        const std::string state_path = (checkpoint / "trainer_state.json").string();
        return parse_checkpoint_info(read_regular_file(state_path, 1 << 20), state_path);
    }
    if (holds_run(out)) {
        if (overwrite) refuse_inputs_inside_run(o, out);
        if (!overwrite && !resume_has_checkpoint(out))
            throw Error(o.out_dir + " already holds a training run with no checkpoint to resume (it stopped before "
                        "saving one); replace it with --overwrite, which removes what it holds, or choose another --out");
        if (!overwrite) {
            const auto info = checkpoint_step(out / "checkpoint");
            throw Error(o.out_dir + " already holds a training run" +
                        (info ? " (checkpoint at step " + std::to_string(info->step) + "/" +
                                    std::to_string(info->total_steps) + ")"
                              : std::string()) +
                        "; continue it with --resume, replace it with --overwrite, or choose another --out");
        }
    }
    return std::nullopt;  // the replaced run stays until begin_fresh_run
}

void begin_fresh_run(const TrainOptions& o) {
    const fs::path out(o.out_dir);
    for (const char* name : kRunFiles) fs::remove_all(out / name);
    io::AtomicFile file((out / "run.json").string());
    file.write(run_inputs_json(fingerprint_inputs(o.data_path, o.tokenizer_path)));
    file.commit();
}

}  // namespace retnet::train
