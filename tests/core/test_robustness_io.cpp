// SPDX-License-Identifier: GPL-3.0-or-later
// Saving when the output cannot be written (issue "Robustness"): a full disk, a path that is not
// a directory, an unwritable directory. Every writer (write_npy, write_safetensors, save_model,
// the CLI's --out) fails with one line naming the file and the reason, and the file that was
// there before is left byte-for-byte intact, with no temporary file left behind.
//
// The tests run as root on CI, where permissions do not stop writes, so the failures are made
// otherwise: a file size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk),
// a directory at the writers' temporary name `<path>.tmp`, or a path below a regular file (ENOTDIR).
// The permission test runs only as non-root. (A symlink at the temporary name to /dev/full once
// made the full disk; the writers now replace such a link instead of writing through it.)
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/model.h"
#include "retnet/npy.h"
#include "retnet/safetensors.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("NOT A retnet::Error: ") + e.what();
    }
    return "(no error)";
}

void expect_error(const std::string& message, const std::string& names, const std::string& reason) {
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find(names), std::string::npos) << message;
    EXPECT_NE(message.find(reason), std::string::npos) << message;
}

// Makes `<path>.tmp` a directory: the writer cannot create its temporary file there (EISDIR).
fs::path block_temp_name_of(const fs::path& path) {
    fs::path tmp = path;
    tmp += ".tmp";
    fs::create_directory(tmp);
    return tmp;
}

bool temp_file_left(const fs::path& path) {
    fs::path tmp = path;
    tmp += ".tmp";
    return fs::exists(fs::symlink_status(tmp));
}

Tensor sample_tensor(float base) {
    Tensor t({3, 5});
    for (int64_t i = 0; i < t.numel(); ++i) t.data[static_cast<size_t>(i)] = base + static_cast<float>(i);
    return t;
}

TEST(RobustWrite, NpyOnAFullDiskKeepsThePreviousFile) {
    ScratchDir dir("npy_full");
    const fs::path file = dir / "logits.npy";
    write_npy(file.string(), sample_tensor(1.0f));
    const std::string before = slurp(file);
    {
        FileSizeLimit full(150);  // the header (128 bytes) fits, the data does not
        expect_error(error_of([&] { write_npy(file.string(), sample_tensor(100.0f)); }), file.string(),
                     "File too large");
    }
    EXPECT_EQ(slurp(file), before);
    EXPECT_FALSE(temp_file_left(file));
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(1.0f).data);
}

TEST(RobustWrite, SafetensorsOnAFullDiskKeepsThePreviousFile) {
    ScratchDir dir("st_full");
    const fs::path file = dir / "model.safetensors";
    const Tensor old_tensor = sample_tensor(1.0f), new_tensor = sample_tensor(-7.0f);
    write_safetensors(file.string(), {{"w", &old_tensor}});
    const std::string before = slurp(file);
    uint64_t header = 0;  // the JSON header's length: the limit falls inside the tensor's bytes
    std::memcpy(&header, before.data(), sizeof header);
    for (DType dtype : {DType::F32, DType::BF16}) {
        {
            FileSizeLimit full(8 + header + 10);
            expect_error(error_of([&] { write_safetensors(file.string(), {{"w", &new_tensor}}, {}, dtype); }),
                         file.string(), "File too large");
        }
        EXPECT_EQ(slurp(file), before);
        EXPECT_FALSE(temp_file_left(file));
    }
    EXPECT_EQ(SafetensorsFile(file.string()).read("w").data, old_tensor.data);
}

TEST(RobustWrite, SaveModelOnAFullDiskKeepsTheLoadableModel) {
    ScratchDir dir("save_full");
    write_small_model(dir.path(), /*with_tokenizer=*/false);
    const std::string weights_before = slurp(dir / "model.safetensors"), config_before = slurp(dir / "config.json");
    const Model other = make_random_model(small_chat_config(), 99);
    {
        FileSizeLimit full(4096);  // config.json fits, the weights do not
        ASSERT_LT(config_before.size(), 4096u);
        ASSERT_GT(weights_before.size(), 4096u);
        expect_error(error_of([&] { save_model(other, dir.path().string()); }), (dir / "model.safetensors").string(),
                     "File too large");
    }
    EXPECT_EQ(slurp(dir / "model.safetensors"), weights_before);
    EXPECT_EQ(slurp(dir / "config.json"), config_before);
    // This time config.json cannot be written: the weights must not change either, or the directory
    // would pair new weights with the old config.
    const fs::path blocked = block_temp_name_of(dir / "config.json");
    expect_error(error_of([&] { save_model(other, dir.path().string()); }), (dir / "config.json").string(),
                 "Is a directory");
    EXPECT_EQ(slurp(dir / "config.json"), config_before);
    EXPECT_EQ(slurp(dir / "model.safetensors"), weights_before);
    fs::remove(blocked);
    EXPECT_FALSE(temp_file_left(dir / "config.json"));
    EXPECT_FALSE(temp_file_left(dir / "model.safetensors"));
    EXPECT_NO_THROW(load_model(dir.path().string()));
}

TEST(RobustWrite, OutputBelowARegularFile) {
    ScratchDir dir("not_a_dir");
    const fs::path file = dir / "plain";
    spit(file, "x");
    const Tensor t = sample_tensor(0.0f);
    const std::string target = (file / "out.npy").string();
    expect_error(error_of([&] { write_npy(target, t); }), target, "Not a directory");
    expect_error(error_of([&] { write_safetensors((file / "m.safetensors").string(), {{"w", &t}}); }),
                 (file / "m.safetensors").string(), "Not a directory");
    expect_error(error_of([&] { save_model(make_random_model(small_chat_config(), 1), (file / "model").string()); }),
                 (file / "model").string(), "");
    expect_error(error_of([&] { write_npy("/dev/null/x.npy", t); }), "/dev/null/x.npy", "Not a directory");
    EXPECT_EQ(slurp(file), "x");
}

TEST(RobustWrite, TempNameTakenByADirectory) {
    ScratchDir dir("tmp_is_dir");
    const fs::path file = dir / "a.npy";
    write_npy(file.string(), sample_tensor(2.0f));
    const std::string before = slurp(file);
    fs::create_directory(dir / "a.npy.tmp");
    expect_error(error_of([&] { write_npy(file.string(), sample_tensor(3.0f)); }), file.string(), "Is a directory");
    EXPECT_EQ(slurp(file), before);
}

// A FIFO left at the temporary name (say by a killed writer's namesake) is replaced, not waited on
// (before: the write blocked forever in open(), deaf to Ctrl-C).
TEST(RobustWrite, TempNameTakenByAFifoIsReplaced) {
    ScratchDir dir("tmp_is_fifo");
    const fs::path file = dir / "a.npy";
    ASSERT_EQ(::mkfifo((dir / "a.npy.tmp").c_str(), 0600), 0);
    write_npy(file.string(), sample_tensor(3.0f));
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(3.0f).data);
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir / "a.npy.tmp")));
}

// A Unix socket as the output: open() fails with ENXIO there, which was read as "a FIFO that
// nobody reads; start its reader first". The check before the work (check_output_file, as
// `tokenizer train` makes before training) names it too.
TEST(RobustWrite, ASocketAsTheOutputIsNamedAsOne) {
    ScratchDir dir("socket_out");
    const fs::path path = dir / "a.npy";
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof address.sun_path) GTEST_SKIP() << "the scratch path is too long for a socket's name";
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(listener, 0);
    ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&address), sizeof address), 0) << std::strerror(errno);
    expect_error(error_of([&] { write_npy(path.string(), sample_tensor(1.0f)); }), path.string(),
                 "is a socket, not a file that can be written");
    expect_error(error_of([&] { check_output_file(path.string()); }), path.string(),
                 "is a socket, not a file that can be written");
    ::close(listener);
    EXPECT_TRUE(fs::is_socket(path));
}

TEST(RobustWrite, ReadOnlyDirectoryForNonRoot) {
    if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions; covered by the size limit and ENOTDIR";
    ScratchDir dir("read_only");
    const fs::path file = dir / "a.npy";
    write_npy(file.string(), sample_tensor(2.0f));
    const std::string before = slurp(file);
    fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
    expect_error(error_of([&] { write_npy(file.string(), sample_tensor(3.0f)); }), file.string(), "Permission denied");
    fs::permissions(dir.path(), fs::perms::owner_all);
    EXPECT_EQ(slurp(file), before);
}

TEST(RobustWrite, CliOutputOnAFullDiskIsOneLineAndKeepsTheOldFile) {
    ScratchDir dir("cli_full");
    write_small_model(dir / "model", /*with_tokenizer=*/false);
    const fs::path out = dir / "logits.npy";
    const std::vector<std::string> args{"logits", "--model", (dir / "model").string(), "--tokens", "1,5,6", "--out", out.string()};
    ASSERT_EQ(run_retnet(args).exit_code, 0);
    const std::string before = slurp(out);
    ASSERT_GT(before.size(), 256u);
    const CliResult r = run_retnet(args, 120, /*file_size_limit=*/256);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
    EXPECT_EQ(slurp(out), before);
    EXPECT_FALSE(temp_file_left(out));
}

// `ulimit -f` with the table already printed: the PNG's write fails with EFBIG and is named in one
// line; the table stays on stdout. Before, SIGXFSZ's default action killed the process (exit 153
// from a shell) and the table written so far was lost: only the tests ignored the signal.
TEST(RobustWrite, CostPlotPastTheFileSizeLimitIsOneLineAndKeepsTheTable) {
    ScratchDir dir("cost_plot_full");
    write_small_model(dir / "model", /*with_tokenizer=*/false);
    const fs::path plot = dir / "cost.png";
    const CliResult r = run_retnet({"cost", "--model", (dir / "model").string(), "--lengths", "3", "--batch", "1",
                                    "--decode-steps", "1", "--plot", plot.string()},
                                   120, /*file_size_limit=*/4096);
    if (r.err.find("needs the Qt build") != std::string::npos) GTEST_SKIP() << "no --plot in this build";
    EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    const size_t error = r.err.find("retnet cost: error: ");  // after the progress lines, the one line
    ASSERT_NE(error, std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n', error), r.err.size() - 1) << r.err;
    EXPECT_NE(r.err.find("File too large", error), std::string::npos) << r.err;
    EXPECT_NE(r.out.find("RetNet"), std::string::npos) << "the table: " << r.out;
    EXPECT_FALSE(fs::exists(plot));
    EXPECT_FALSE(temp_file_left(plot));
}

// One printf larger than stdio's buffer (a report of 40,000 points) into a file past `ulimit -f`:
// the write's errno is gone when the flush finds the error, and the reason is found again from the
// file and the limit. Before: "cannot write to standard output (Input/output error)".
TEST(RobustWrite, StdoutPastTheFileSizeLimitNamesTheLimit) {
    ScratchDir dir("stdout_full");
    write_small_model(dir / "model", /*with_tokenizer=*/false);
    const CliResult measured = run_retnet({"cost", "--model", (dir / "model").string(), "--lengths",
                                           counting_list(1000000000, 4000), "--batch", "1,2,3,4,5", "--json",
                                           "--max-memory", "2G"});
    ASSERT_EQ(measured.exit_code, 0) << measured.err;
    ASSERT_GT(measured.out.size(), size_t{1} << 20);
    spit(dir / "big.json", measured.out);
    const CliResult r = run_retnet({"cost", "--from", (dir / "big.json").string(), "--json"}, 120, /*file_size_limit=*/10240);
    EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err, "retnet cost: error: cannot write to standard output (File too large)\n");
    ChildSetup onto_full;
    onto_full.stdout_path = "/dev/full";
    const CliResult full = run_retnet({"cost", "--from", (dir / "big.json").string(), "--json"}, 120, 0, onto_full);
    EXPECT_EQ(full.exit_code, 1) << full.err;
    EXPECT_EQ(full.err, "retnet cost: error: cannot write to standard output (No space left on device)\n");
}

// A symbolic link left at the temporary name is replaced, not written through: the file it points to
// (here outside the output directory) keeps its bytes, and the output is a file, not the link.
TEST(RobustWrite, TempNameTakenBySymlinkIsReplacedNotFollowed) {
    ScratchDir dir("tmp_is_link");
    const fs::path outside = dir / "outside.txt", file = dir / "out" / "a.npy";
    fs::create_directories(file.parent_path());
    spit(outside, "keep me");
    fs::create_symlink(outside, dir / "out" / "a.npy.tmp");
    write_npy(file.string(), sample_tensor(3.0f));
    EXPECT_EQ(slurp(outside), "keep me");
    EXPECT_FALSE(fs::is_symlink(fs::symlink_status(file)));
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(3.0f).data);
    EXPECT_FALSE(temp_file_left(file));
    // a dangling link there, too: nothing is created where it points
    fs::create_symlink(dir / "nowhere.npy", dir / "out" / "a.npy.tmp");
    write_npy(file.string(), sample_tensor(4.0f));
    EXPECT_FALSE(fs::exists(dir / "nowhere.npy"));
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(4.0f).data);
}

// A hard link at the temporary name (the same file under two names) is replaced too: writing through
// it overwrote the file it shares, even a read-only one (as root), and left the output sharing it.
TEST(RobustWrite, TempNameTakenByAHardLinkIsReplacedNotWrittenThrough) {
    ScratchDir dir("tmp_is_hardlink");
    const fs::path outside = dir / "outside.txt", file = dir / "out" / "a.npy";
    fs::create_directories(file.parent_path());
    spit(outside, "keep me");
    fs::permissions(outside, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    fs::create_hard_link(outside, dir / "out" / "a.npy.tmp");
    write_npy(file.string(), sample_tensor(5.0f));
    EXPECT_EQ(slurp(outside), "keep me");
    EXPECT_EQ(fs::hard_link_count(outside), 1u);
    EXPECT_EQ(fs::hard_link_count(file), 1u);
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(5.0f).data);
}

// A file that is replaced keeps its permission bits: a private output stays private (it became 0644).
TEST(RobustWrite, ReplacedFileKeepsItsPermissions) {
    ScratchDir dir("keep_mode");
    const fs::path file = dir / "private.npy";
    write_npy(file.string(), sample_tensor(1.0f));
    fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
    write_npy(file.string(), sample_tensor(2.0f));
    EXPECT_EQ(fs::status(file).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_EQ(read_npy(file.string()).data, sample_tensor(2.0f).data);
}

TEST(RobustWrite, TrainingCheckpointThatCannotBeWrittenKeepsThePreviousOne) {
    ScratchDir dir("train_full");
    const fs::path out = dir / "run";
    std::vector<std::string> args = tiny_training_args(dir.path());
    args.insert(args.end(), {"--warmup", "1"});
    auto with = [&](std::vector<std::string> extra) {
        std::vector<std::string> a = args;
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    };
    ASSERT_EQ(run_retnet(with({"--steps", "2"})).exit_code, 0);
    const fs::path checkpoint = out / "checkpoint";
    const std::string weights = slurp(checkpoint / "model.safetensors"), state = slurp(checkpoint / "trainer_state.json");
    ASSERT_FALSE(weights.empty());

    // Continue to step 4 with no room for the new checkpoint's files (the optimizer state alone
    // is twice the weights): one line, and the step-2 checkpoint is untouched.
    const CliResult full = run_retnet(with({"--steps", "4", "--resume"}), 120, static_cast<long>(weights.size() / 2));
    EXPECT_EQ(full.signal, 0);
    EXPECT_EQ(full.exit_code, 1) << full.out << full.err;
    EXPECT_EQ(full.err_lines(), 1) << full.err;
    EXPECT_NE(full.err.find("File too large"), std::string::npos) << full.err;
    EXPECT_EQ(slurp(checkpoint / "model.safetensors"), weights);
    EXPECT_EQ(slurp(checkpoint / "trainer_state.json"), state);

    // With room again, the run resumes from that checkpoint and completes.
    const CliResult resumed = run_retnet(with({"--steps", "4", "--resume"}));
    EXPECT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
    EXPECT_NE(resumed.out.find("step      3/4"), std::string::npos) << resumed.out;
    EXPECT_EQ(resumed.out.find("step      2/4"), std::string::npos) << resumed.out;
}

}  // namespace
}  // namespace retnet
