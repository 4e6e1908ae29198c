// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Protection of a training run's output directory (`retnet train --out DIR`), checked before the
// trainer writes anything:
// - one writer: an exclusive lock (flock on DIR/train.lock, released when the process ends, even by
//   kill -9), a second `retnet train` on DIR is refused naming the first one's process id;
// - no silent clobbering: a directory that holds a run is only replaced with --overwrite, and only
//   once the new run has started;
// - an honest resume: the data and tokenizer must be the ones the run started with
//   (DIR/run.json records their size and hash), and so must the options that define the run,
//   else the difference is named — also when the run is already finished;
// - nothing lost to a badly timed kill: a complete checkpoint.tmp/ newer than checkpoint/ (the
//   process died between writing it and renaming it) is verified and taken;
// - no debris from a failed start: a run that fails before its first save removes what it created;
// - one directory: --out given as a symbolic link is resolved once, before anything else.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "retnet/trainer.h"

namespace retnet::train {

// --out as given, or, when it is a symbolic link, the directory it leads to (absolute, every link
// followed), as the project follows a symlink wherever it writes. Resolved once, before the lock is
// taken, so that the lock, run.json and the checkpoints' renames all act in that one directory even
// if the link is changed while the run trains. A link to nothing, to something other than a
// directory, or a loop of links is refused in one line, and so is the filesystem root however it
// is named ("/", "/tmp/..", a link to it).
std::string resolve_run_directory(const std::string& out_dir);

class RunDirectoryLock {
public:
    explicit RunDirectoryLock(const std::string& out_dir);  // creates out_dir; throws if it is taken
    // Releases the lock. A start that failed leaves nothing behind: when the directory then holds
    // no run (no checkpoint/ or best/ was ever saved), what this process created there is removed
    // first — run.json, an unfinished checkpoint.tmp/ or best.tmp/, train.lock, and the directories
    // it made for out_dir. Nothing that stood there before is touched.
    ~RunDirectoryLock();
    RunDirectoryLock(const RunDirectoryLock&) = delete;
    RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

private:
    void remove_what_this_process_made() const;
    void remove_made_directories() const;

    std::string dir_;
    int fd_ = -1;
    std::vector<std::string> made_dirs_;  // out_dir and the parents this lock created, innermost first
    std::vector<std::string> new_names_;  // the run's file names that were absent when the lock was taken
};

// What a checkpoint's trainer_state.json says about the run's progress.
struct CheckpointInfo {
    int64_t step = 0, total_steps = 0;
    bool schedule_fixed = false;  // total_steps was set by --time-limit and stays
    bool validation_pending = false;  // the validation after `step` was cut short: a resume runs it first
    std::string data;             // --data of the run that wrote it
};
// Parses trainer_state.json's text; throws retnet::Error naming `source` for anything malformed.
CheckpointInfo parse_checkpoint_info(const std::string& json_text, const std::string& source);
// Both files of a checkpoint are written for one step: throws retnet::Error where the step that
// optimizer.safetensors records (its metadata "step"; files written before it had one pass) is not
// `step`, that of trainer_state.json at `state_path` (an optimizer copied in from another checkpoint).
void check_optimizer_step(const std::map<std::string, std::string>& optimizer_metadata,
                          const std::string& optimizer_path, int64_t step, const std::string& state_path);

// The fingerprint of a run's inputs kept in DIR/run.json.
struct RunInputs {
    std::string data, tokenizer;        // paths as given
    uint64_t data_bytes = 0, tokenizer_bytes = 0;
    std::string data_hash, tokenizer_hash;  // 64-bit FNV-1a, hex
};
RunInputs fingerprint_inputs(const std::string& data_path, const std::string& tokenizer_path);
// Parses run.json's text; throws retnet::Error naming `source` for anything malformed.
RunInputs parse_run_inputs(const std::string& json_text, const std::string& source);
std::string run_inputs_json(const RunInputs& inputs);

// Before training into options.out_dir (call with the lock held). Fresh run: refuses a directory
// holding a run unless `overwrite` (the old run is removed later, by begin_fresh_run).
// Resume: takes a complete newer checkpoint.tmp, refuses other data, another tokenizer or other
// options (check_resume_options), finished or not.
// Returns the progress of the checkpoint a resume continues from; nullopt for a fresh run. Lines
// worth telling the user (a recovered checkpoint) go to `notice`.
std::optional<CheckpointInfo> prepare_run_directory(const TrainOptions& options, bool overwrite, std::string* notice);

// A fresh run once its trainer has started (TrainOptions::on_started, with the lock held): removes
// the run --overwrite replaces and records run.json. Not before: a start that fails (text that is
// not UTF-8, a config that does not fit the tokenizer, a device that cannot start) keeps that run.
void begin_fresh_run(const TrainOptions& options);

// Replaces directory `final_dir` by the complete `tmp_dir` with renames only, so at every moment
// either the old or the new directory is complete under one of the two names (a crash between the
// two renames leaves it as final_dir.old, which resume_checkpoint takes).
void swap_in_directory(const std::filesystem::path& tmp_dir, const std::filesystem::path& final_dir);

// The checkpoint directory a resume continues from: DIR/checkpoint, or DIR/checkpoint.old when a
// crash hit between the two renames of swap_in_directory; throws when neither holds one.
std::filesystem::path resume_checkpoint(const std::filesystem::path& out);

}  // namespace retnet::train
