// SPDX-License-Identifier: GPL-3.0-or-later
// Issue #13, "Robustness, round two": one test (or more) per class of failure a hostile run found.
// Each fails on the code before its fix. Outputs that must not be destroyed, memory that must stay
// bounded, training runs that must not be clobbered, FIFOs that must not hang, stdout errors that
// must not pass silently, messages that must stay one honest line, options read strictly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/eval_stream.h"
#include "retnet/forward.h"
#include "retnet/json_text.h"
#include "retnet/memory_limit.h"
#include "retnet/npy.h"
#include "retnet/run_directory.h"
#include "retnet/train.h"
#include "retnet/trainer.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

bool stands_as_fifo(const fs::path& p) { return fs::is_fifo(fs::symlink_status(p)); }

std::vector<std::string> logits_args(const fs::path& model, const std::string& out) {
    return {"logits", "--model", model.string(), "--tokens", "1,5,6", "--out", out};
}

// ---- 1. data loss through --out --------------------------------------------------------------

TEST(RobustOutput, SymlinkIsFollowedAndItsTargetReplaced) {
    ScratchDir dir("out_link");
    write_small_model(dir / "model", false);
    spit(dir / "real.npy", "old");
    fs::create_symlink("real.npy", dir / "link.npy");
    const CliResult r = run_retnet(logits_args(dir / "model", (dir / "link.npy").string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dir / "link.npy")));
    EXPECT_EQ(read_npy((dir / "real.npy").string()).shape, (std::vector<int64_t>{3, 400}));
    EXPECT_FALSE(fs::exists(dir / "link.npy.tmp"));
    EXPECT_FALSE(fs::exists(dir / "real.npy.tmp"));
}

TEST(RobustOutput, FifoIsWrittenInPlaceAndStaysAFifo) {
    ScratchDir dir("out_fifo");
    write_small_model(dir / "model", false);
    const fs::path fifo = dir / "pipe.npy";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::string received;
    std::thread reader([&] { received = slurp(fifo); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the reader opens first
    const CliResult r = run_retnet(logits_args(dir / "model", fifo.string()), 60);
    reader.join();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(stands_as_fifo(fifo));
    EXPECT_EQ(received.substr(0, 6), "\x93NUMPY");
    EXPECT_EQ(received.size(), 128u + 3 * 400 * 4);
}

TEST(RobustOutput, FifoWithoutAReaderIsRefusedAtOnce) {
    ScratchDir dir("out_fifo_noreader");
    write_small_model(dir / "model", false);
    const fs::path fifo = dir / "pipe.npy";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const CliResult r = run_retnet(logits_args(dir / "model", fifo.string()), 30);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("FIFO (named pipe) that nobody reads"), std::string::npos) << r.err;
    EXPECT_TRUE(stands_as_fifo(fifo));
}

// A character device made in a scratch directory (never the real /dev): the null device's numbers.
TEST(RobustOutput, DeviceIsWrittenInPlaceNotReplaced) {
    ScratchDir dir("out_device");
    write_small_model(dir / "model", false);
    const fs::path device = dir / "null";
    if (::mknod(device.c_str(), S_IFCHR | 0666, ::makedev(1, 3)) != 0) GTEST_SKIP() << "mknod needs root";
    const int probe = ::open(device.c_str(), O_WRONLY);
    if (probe < 0) GTEST_SKIP() << "the scratch file system is mounted nodev";
    ::close(probe);
    const CliResult r = run_retnet(logits_args(dir / "model", device.string()));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    struct stat st {};
    ASSERT_EQ(::stat(device.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_FALSE(fs::exists(dir / "null.tmp"));
}

TEST(RobustOutput, DashAndDevStdoutWriteToStandardOutput) {
    ScratchDir dir("out_stdout");
    write_small_model(dir / "model", false);
    for (const std::string out : {"-", "/dev/stdout"}) {
        const CliResult r = run_retnet(logits_args(dir / "model", out));
        EXPECT_EQ(r.exit_code, 0) << out << r.err;
        EXPECT_EQ(r.out.substr(0, 6), "\x93NUMPY") << out;
        EXPECT_EQ(r.out.size(), 128u + 3 * 400 * 4) << out;
    }
}

TEST(RobustOutput, DirectoryAsOutputIsRefused) {
    ScratchDir dir("out_dir");
    write_small_model(dir / "model", false);
    fs::create_directory(dir / "d.npy");
    const CliResult r = run_retnet(logits_args(dir / "model", (dir / "d.npy").string()));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
    EXPECT_TRUE(fs::is_directory(dir / "d.npy"));
}

// A bad --out of convert, init and logits is refused before the work (the model's load, the random
// weights), in train's lines for its --out: the model given here cannot be loaded, so a line that
// names --out came first. Nothing is created. Before: the load's error, or with a good model the
// --out's after the work ("cannot save to …: File exists" for a link to nothing).
TEST(RobustOutput, ABadOutIsRefusedBeforeTheWork) {
    ScratchDir dir("out_bad");
    write_small_model(dir / "model");
    fs::copy(dir / "model", dir / "broken");
    fs::resize_file(dir / "broken" / "model.safetensors", 100);  // its load fails
    spit(dir / "file", "mine");
    fs::create_symlink(dir / "nowhere", dir / "dangling");
    const std::string broken = (dir / "broken").string(), config = (dir / "model" / "config.json").string();
    const std::vector<std::pair<std::string, std::string>> directories = {
        {(dir / "dangling").string(), "--out " + (dir / "dangling").string() + " is a symbolic link to " +
                                          (dir / "nowhere").string() +
                                          ", which does not exist; create that directory or give --out a directory"},
        {(dir / "file" / "sub").string(), (dir / "file" / "sub").string() + ": cannot create the model directory (" +
                                              (dir / "file").string() + " is a regular file, not a directory)"},
        {"/proc/retnet_no_such_dir/out", "/proc/retnet_no_such_dir/out: cannot create the model directory ("},
    };
    for (const auto& [out, line] : directories) {
        for (const std::vector<std::string>& args : {std::vector<std::string>{"convert", "--model", broken, "--out", out},
                                                     std::vector<std::string>{"init", "--config", config, "--out", out}}) {
            const CliResult r = run_retnet(args);
            EXPECT_EQ(r.exit_code, 1) << args[0] << " " << out;
            EXPECT_EQ(r.err.rfind("retnet " + args[0] + ": error: " + line, 0), 0u) << r.err;
            EXPECT_EQ(r.err_lines(), 1) << r.err;
        }
    }
    for (const fs::path& out : {dir / "missing" / "l.npy", fs::path("/proc/retnet_logits.npy")}) {
        const CliResult r = run_retnet({"logits", "--model", broken, "--tokens", "1,5,6", "--out", out.string()});
        EXPECT_EQ(r.exit_code, 1) << out;
        EXPECT_EQ(r.err, "retnet logits: error: " + out.string() + ": cannot create " + out.string() +
                             ".tmp (No such file or directory)\n");
    }
    // a link to nothing: written through, it would create its target elsewhere (before: it did)
    fs::create_symlink(dir / "nowhere.npy", dir / "dangling.npy");
    const CliResult r = run_retnet({"logits", "--model", broken, "--tokens", "1,5,6", "--out", (dir / "dangling.npy").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet logits: error: " + (dir / "dangling.npy").string() + " is a symbolic link to " +
                         (dir / "nowhere.npy").string() + ", which does not exist; give the file's own path\n");
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir / "nowhere.npy")));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir / "nowhere")));
    EXPECT_FALSE(fs::exists(dir / "missing"));
    EXPECT_EQ(slurp(dir / "file"), "mine");
}

// convert into a directory that holds no model (no model.safetensors) leaves what it holds as it
// was and names the file it would have replaced (before: someone's config.json and tokenizer.model
// replaced, the weights added among their files). New, empty, or holding a model: written, an
// older model replaced as a whole.
TEST(RobustOutput, ConvertReplacesOnlyAModel) {
    ScratchDir dir("convert_into");
    write_small_model(dir / "model");
    const auto convert = [&](const fs::path& out, const std::string& dtype) {
        return run_retnet({"convert", "--model", (dir / "model").string(), "--out", out.string(), "--dtype", dtype});
    };
    const auto entries = [](const fs::path& d) {
        std::vector<std::string> names;
        for (const auto& entry : fs::directory_iterator(d)) names.push_back(entry.path().filename().string());
        std::sort(names.begin(), names.end());
        return names;
    };
    fs::create_directories(dir / "project");
    spit(dir / "project" / "config.json", "{\"mine\": 1}");
    spit(dir / "project" / "tokenizer.model", "not a model's");
    CliResult r = convert(dir / "project", "f32");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: --out " + (dir / "project").string() +
                         " holds no model but a config.json that convert would replace; choose a new or empty directory\n");
    EXPECT_EQ(slurp(dir / "project" / "config.json"), "{\"mine\": 1}");
    EXPECT_EQ(slurp(dir / "project" / "tokenizer.model"), "not a model's");
    EXPECT_EQ(entries(dir / "project"), (std::vector<std::string>{"config.json", "tokenizer.model"}));

    fs::create_directories(dir / "notes");
    spit(dir / "notes" / "notes.txt", "mine");
    r = convert(dir / "notes", "f32");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: --out " + (dir / "notes").string() +
                         " is not empty (it holds notes.txt) and holds no model; choose a new or empty directory\n");
    EXPECT_EQ(entries(dir / "notes"), std::vector<std::string>{"notes.txt"});

    fs::create_directories(dir / "empty");
    ASSERT_EQ(convert(dir / "empty", "bf16").exit_code, 0);
    const auto bf16_size = fs::file_size(dir / "empty" / "model.safetensors");
    r = convert(dir / "empty", "f32");  // now a model: replaced only with --overwrite
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: --out " + (dir / "empty").string() +
                         " holds a model already (model.safetensors); pass --overwrite to replace it as a whole, or "
                         "choose a new or empty directory\n");
    EXPECT_EQ(fs::file_size(dir / "empty" / "model.safetensors"), bf16_size);
    r = run_retnet({"convert", "--model", (dir / "model").string(), "--out", (dir / "empty").string(), "--dtype", "f32",
                    "--overwrite"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GT(fs::file_size(dir / "empty" / "model.safetensors"), bf16_size);
    EXPECT_EQ(entries(dir / "empty"), (std::vector<std::string>{"config.json", "model.safetensors", "tokenizer.model"}));
}

// A carried file (tokenizer.model) that cannot be written leaves the older model whole: it is part of
// the weights' commit now (before, the weights and config were already replaced when it failed).
TEST(RobustOutput, ConvertThatCannotWriteACarriedFileLeavesTheOldModelWhole) {
    ScratchDir dir("convert_carried");
    write_small_model(dir / "model");
    const fs::path out = dir / "out";
    const auto convert = [&](const std::string& dtype) {
        return run_retnet(
            {"convert", "--model", (dir / "model").string(), "--out", out.string(), "--dtype", dtype, "--overwrite"});
    };
    ASSERT_EQ(convert("bf16").exit_code, 0);
    const std::string weights = slurp(out / "model.safetensors"), config = slurp(out / "config.json");
    fs::create_directory(out / "tokenizer.model.tmp");
    const CliResult r = convert("f32");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: " + (out / "tokenizer.model").string() + ": cannot create " +
                         (out / "tokenizer.model.tmp").string() + " (Is a directory)\n");
    EXPECT_EQ(slurp(out / "model.safetensors"), weights);
    EXPECT_EQ(slurp(out / "config.json"), config);
    EXPECT_FALSE(fs::exists(out / "model.safetensors.tmp"));
    EXPECT_FALSE(fs::exists(out / "config.json.tmp"));
    fs::remove(out / "tokenizer.model.tmp");
    EXPECT_EQ(convert("f32").exit_code, 0);
    EXPECT_NE(slurp(out / "model.safetensors"), weights);
}

// The files convert writes in --out replace what is there, never what a link there points to:
// before, a model.safetensors linking to the source model's weights overwrote them (f32 → bf16),
// one linking elsewhere overwrote or created that file. A directory at a file's name is refused
// before the load. A replaced model loses the carried files the new one lacks (before: an older
// model's tokenizer stayed beside other weights).
TEST(RobustOutput, ConvertNeverWritesThroughALinkAndReplacesAModelWhole) {
    ScratchDir dir("convert_links");
    write_small_model(dir / "model");
    const std::string source_weights = slurp(dir / "model" / "model.safetensors");
    const auto convert = [&](const fs::path& from, const fs::path& out) {
        return run_retnet({"convert", "--model", from.string(), "--out", out.string(), "--dtype", "bf16", "--overwrite"});
    };
    struct Case {
        std::string name, file;
        fs::path target;
    };
    spit(dir / "precious.bin", "mine");
    for (const Case& c : {Case{"to_source", "model.safetensors", dir / "model" / "model.safetensors"},
                          Case{"to_other", "model.safetensors", dir / "precious.bin"},
                          Case{"to_nothing", "model.safetensors", dir / "nonexistent"},
                          Case{"config_out", "config.json", dir / "precious.bin"}}) {
        const fs::path out = dir / c.name;
        ASSERT_EQ(convert(dir / "model", out).exit_code, 0);  // a model there, then one of its files a link
        fs::remove(out / c.file);
        fs::create_symlink(c.target, out / c.file);
        const CliResult r = convert(dir / "model", out);
        EXPECT_EQ(r.exit_code, 1) << c.name;
        EXPECT_EQ(r.err, "retnet convert: error: --out " + out.string() + " holds " + c.file + " as a symbolic link (to " +
                             c.target.string() + "); convert replaces a model's files, never what a link points to: "
                             "remove the link or choose another directory\n");
    }
    EXPECT_EQ(slurp(dir / "model" / "model.safetensors"), source_weights);
    EXPECT_EQ(slurp(dir / "precious.bin"), "mine");
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir / "nonexistent")));

    fs::create_directories(dir / "folder" / "model.safetensors");
    CliResult r = convert(dir / "model", dir / "folder");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: --out " + (dir / "folder").string() +
                         " holds a directory named model.safetensors where convert writes that file; remove it or "
                         "choose another directory\n");
    // a loop of links as --out, or above it: named as such, not as std::filesystem's "status: Too many levels"
    fs::create_symlink(dir / "loop_b", dir / "loop_a");
    fs::create_symlink(dir / "loop_a", dir / "loop_b");
    r = convert(dir / "model", dir / "loop_a");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: --out " + (dir / "loop_a").string() + " is a symbolic link in a loop of links\n");
    r = convert(dir / "model", dir / "loop_a" / "sub");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "retnet convert: error: " + (dir / "loop_a" / "sub").string() +
                         ": cannot create the model directory (" + (dir / "loop_a").string() +
                         " is in a loop of symbolic links)\n");

    // an older model with a tokenizer and notes, replaced by one without them
    fs::create_directories(dir / "bare");
    fs::copy_file(dir / "model" / "config.json", dir / "bare" / "config.json");
    fs::copy_file(dir / "model" / "model.safetensors", dir / "bare" / "model.safetensors");
    ASSERT_EQ(convert(dir / "model", dir / "older").exit_code, 0);
    ASSERT_TRUE(fs::exists(dir / "older" / "tokenizer.model"));
    spit(dir / "older" / "training.json", "{}");
    r = convert(dir / "bare", dir / "older");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(fs::exists(dir / "older" / "tokenizer.model"));
    EXPECT_FALSE(fs::exists(dir / "older" / "training.json"));
    EXPECT_TRUE(fs::exists(dir / "older" / "model.safetensors"));
}

// ---- 2. unbounded memory ---------------------------------------------------------------------

// The tokens of a file evaluated as they stream in give exactly what the whole text gives.
TEST(RobustMemory, StreamedEvaluationEqualsTheWholeText) {
    ScratchDir dir("eval_stream");
    write_small_model(dir / "model");
    std::string text;
    for (const std::string& line : tokenizer_corpus_lines()) text += line + "\n";
    spit(dir / "text.txt", text);
    auto model = std::make_shared<const Model>(load_model((dir / "model").string()));
    const Tokenizer tokenizer = Tokenizer::load((dir / "model" / "tokenizer.model").string());
    auto backend = make_backend("cpu", model);
    const TextScan scan = scan_text_file((dir / "text.txt").string(), 1.0);
    ASSERT_EQ(scan.characters, train::count_characters(text));
    for (const size_t block : {size_t(64), size_t(1000), size_t(1) << 20}) {
        const train::TextFileSpan part{(dir / "text.txt").string(), 0, scan.characters, block};
        const train::EvalResult whole = train::evaluate_text(train::backend_batch_loss(*backend), tokenizer, text, 48, 3);
        std::pair<int64_t, int64_t> last_progress{-1, -1};
        const train::EvalResult streamed =
            train::evaluate_file(train::backend_batch_loss(*backend), tokenizer, part, 48, 3, [&](int64_t done, int64_t total) {
                EXPECT_LE(done, total) << block;
                last_progress = {done, total};
                return true;
            });
        EXPECT_EQ(streamed.tokens, whole.tokens) << block;
        // the estimated total ends exact: the progress reaches 100 % (it stopped one short)
        EXPECT_EQ(last_progress, std::make_pair(streamed.tokens, streamed.tokens)) << block;
        int64_t carried_total = -1;
        EXPECT_EQ(streamed.characters, whole.characters) << block;
        EXPECT_NEAR(streamed.loss_per_token, whole.loss_per_token, 1e-9) << block;
        const train::EvalResult carried = train::evaluate_text_streaming(*backend, tokenizer, text, 100);
        const train::EvalResult carried_file =
            train::evaluate_file_streaming(*backend, tokenizer, part, 100, [&](int64_t, int64_t total) {
                carried_total = total;
                return true;
            });
        EXPECT_EQ(carried_file.tokens, carried.tokens) << block;
        EXPECT_EQ(carried_total, carried_file.tokens) << block;
        EXPECT_NEAR(carried_file.loss_per_token, carried.loss_per_token, 1e-6) << block;
    }
    // A tail: the same cut as train::split_tail.
    const TextScan tail = scan_text_file((dir / "text.txt").string(), 0.25);
    const std::string_view expected = train::split_tail(text, 0.25).second;
    EXPECT_EQ(tail.tail_begin, text.size() - expected.size());
    EXPECT_EQ(tail.tail_characters, train::count_characters(expected));
}

// Before: the whole text was read and tokenized at once (about 240 bytes per character), so a
// large text died of out-of-memory under a cap, and Ctrl-C was not honoured while tokenizing.
TEST(RobustMemory, LargeTextEvaluatesUnderAMemoryCapAndCancels) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("eval_large");
    write_small_model(dir / "model");
    std::string line;
    for (const std::string& l : tokenizer_corpus_lines()) line += l + "\n";
    {
        std::ofstream out(dir / "big.txt", std::ios::binary);
        for (size_t written = 0; written < (size_t(24) << 20); written += line.size()) out << line;
    }
    // OpenBLAS starts one thread per core when the library loads, each with its own buffers: on a
    // many-core machine that alone can exceed the cap, before retnet runs a line.
    setenv("OPENBLAS_NUM_THREADS", "2", 1);
    RunningRetnet run({"eval", "--model", (dir / "model").string(), "--text", (dir / "big.txt").string(), "--window",
                       "64", "--threads", "1"},
                      ChildSetup{"", "", 1536L << 20, {}});  // 24 MB of text needed about 6 GB before
    unsetenv("OPENBLAS_NUM_THREADS");
    ASSERT_TRUE(run.wait_for_stderr("eval:", 90)) << "no progress under a 1.5 GiB cap";
    run.send(SIGINT);
    const CliResult r = run.finish(30);
    EXPECT_EQ(r.exit_code, 130) << r.err;
    EXPECT_NE(r.err.find("cancelled"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("out of memory"), std::string::npos) << r.err;
}

TEST(RobustMemory, HugeAllocationsAreRefusedUpFrontWithSizeAndLimit) {
    ScratchDir dir("huge");
    const std::vector<std::string> train = tiny_training_args(dir.path());
    std::vector<std::string> big_batch = train;
    *(std::find(big_batch.begin(), big_batch.end(), "--batch") + 1) = "65536";
    *(std::find(big_batch.begin(), big_batch.end(), "--seq-len") + 1) = "1024";
    big_batch.insert(big_batch.end(), {"--steps", "1"});
    // ~60B parameters: d = 8192, 80 layers, a 256k vocabulary.
    spit(dir / "giant.json", R"({"model_type": "retnet", "hidden_size": 8192, "num_heads": 64, "num_hidden_layers": 80,
                                 "expand_k": 1, "expand_v": 2, "intermediate_size": 32768, "vocab_size": 256000})");
    std::string many(16000 * 2, ',');
    many = "1";
    for (int i = 1; i < 16000; ++i) many += ",5";
    const std::vector<std::vector<std::string>> cases = {
        big_batch,
        {"init", "--config", (dir / "giant.json").string(), "--out", (dir / "giant").string()},
        {"inspect", "--model", (dir / "model").string(), "--tokens", many, "--json", "--max-memory", "1G"},
        {"logits", "--model", (dir / "model").string(), "--tokens", many, "--out", (dir / "l.npy").string(),
         "--max-memory", "64M"},
        {"compare", "--model", (dir / "model").string(), "--tokens", many, "--max-memory=256M"},
        {"bench", "--model", (dir / "model").string(), "--lengths", "1000000"},
        {"info", "--model", (dir / "model").string(), "--max-memory", "16K"},  // the weights, from config.json
    };
    for (const auto& args : cases) {
        const auto start = std::chrono::steady_clock::now();
        const CliResult r = run_retnet(args, 60);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << args[0] << ": " << r.err;
        EXPECT_NE(r.err.find("more than the memory limit of"), std::string::npos) << args[0] << ": " << r.err;
        EXPECT_LT(seconds, 20.0) << args[0];
        EXPECT_FALSE(fs::exists(dir / "giant"));
    }
}

// The CPU trainer's device keeps its own parameters, moments and gradient beside the loop's, and
// validates and saves beside them: 10 copies of the weights on the host at the peak (a 1.3B config
// was OOM-killed under an estimate of 5). A GPU run keeps 4 on the host, so a limit of 6 lets it
// past the memory check (it then stops where this machine has no GPU, or trains).
TEST(RobustMemory, TrainingCountsTheHostCopiesOfItsDevice) {
    ScratchDir dir("host-copies");
    std::vector<std::string> args = tiny_training_args(dir.path());
    spit(dir / "wide.json", R"({"model_type": "retnet", "hidden_size": 256, "num_heads": 2, "num_hidden_layers": 4,
                                "expand_k": 1, "expand_v": 1, "intermediate_size": 512, "vocab_size": 400,
                                "bos_token_id": 1, "eos_token_id": 2})");
    *(std::find(args.begin(), args.end(), "--config") + 1) = (dir / "wide.json").string();
    const uint64_t weight_bytes =
        static_cast<uint64_t>(train::make_param_layout(load_config((dir / "wide.json").string())).total) * 4;
    args.insert(args.end(), {"--steps", "1", "--max-memory", std::to_string(6 * weight_bytes)});
    std::vector<std::string> on_cpu = args, on_gpu = args;
    on_cpu.insert(on_cpu.end(), {"--device", "cpu"});
    on_gpu.insert(on_gpu.end(), {"--device", "cuda"});
    *(std::find(on_gpu.begin(), on_gpu.end(), "--out") + 1) = (dir / "gpu-run").string();
    const CliResult cpu = run_retnet(on_cpu, 60);
    EXPECT_EQ(cpu.exit_code, 1) << cpu.err;
    EXPECT_EQ(cpu.err_lines(), 1) << cpu.err;
    EXPECT_NE(cpu.err.find("more than the memory limit of"), std::string::npos) << cpu.err;
    const CliResult gpu = run_retnet(on_gpu, 60);
    EXPECT_EQ(gpu.err.find("memory limit"), std::string::npos) << gpu.err;
}

// The ranks of a job on one machine share its memory: each rank's estimate fits, their sum does not
// (before, every rank checked its own share against the whole machine, and together they could be
// OOM-killed). Stand-in mpirun variables make this process rank 0 of 4096 ranks on this machine: the
// refusal comes before MPI is joined (a build without MPI refuses the ranks first, and is skipped).
TEST(RobustMemory, RanksOnOneMachineShareItsMemory) {
    const uint64_t machine = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    EXPECT_NO_THROW(check_host_memory(machine / 4, 2, "x"));
    EXPECT_NO_THROW(check_host_memory(UINT64_MAX, 1, "x"));  // one rank: check_memory's business alone
    try {
        check_host_memory(machine / 2 + 1, 2, "training");
        ADD_FAILURE() << "two ranks of more than half the machine were accepted";
    } catch (const OutOfMemory& e) {
        EXPECT_NE(std::string(e.what()).find("for the 2 ranks on this machine, more than its memory of"),
                  std::string::npos)
            << e.what();
    }

    ScratchDir dir("ranks-share");
    std::vector<std::string> args = tiny_training_args(dir.path());
    // ~25M parameters: about 1 GB of host state a CPU rank, 4 TB for 4096 of them
    spit(dir / "wide.json", R"({"model_type": "retnet", "hidden_size": 1024, "num_heads": 4, "num_hidden_layers": 2,
                                "expand_k": 1, "expand_v": 2, "intermediate_size": 2048, "vocab_size": 400,
                                "bos_token_id": 1, "eos_token_id": 2})");
    *(std::find(args.begin(), args.end(), "--config") + 1) = (dir / "wide.json").string();
    *(std::find(args.begin(), args.end(), "--batch") + 1) = "4096";
    args.insert(args.end(), {"--steps", "1"});
    const std::vector<std::pair<const char*, const char*>> ranks = {{"OMPI_COMM_WORLD_SIZE", "4096"},
                                                                    {"OMPI_COMM_WORLD_RANK", "0"},
                                                                    {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                                                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "4096"}};
    for (const auto& [name, value] : ranks) setenv(name, value, 1);
    const CliResult r = run_retnet(args, 60);
    for (const auto& [name, value] : ranks) unsetenv(name);
    if (r.err.find("without MPI") != std::string::npos) GTEST_SKIP() << "this build has no MPI: " << r.err;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("for the 4096 ranks on this machine, more than its memory of"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "run"));
}

// `ulimit -s 16` overflowed the stack inside printf, and `ulimit -s 64` reading a prompt from
// standard input into a 64 KiB buffer on the stack: a soft limit that low is now raised before any
// thread starts (retnet/stack_limit.h) where the hard limit allows 256 KiB, and the command is refused
// in one line naming both where it does not (raising it to a hard limit below that stopped
// OpenBLAS's threads from starting). A stack limit of 1 GiB under a 2 GiB address-space limit gave
// every thread a 1 GiB stack (OpenBLAS spun, `serve` answered nothing); threads now get 8 MiB. The
// prompt comes from standard input, through the buffer now on the heap. (Not 16 KiB itself: there
// the dynamic loader overflowed now and then, before any of retnet's code runs.)
TEST(RobustProcess, AStackLimitIsFittedOrNamed) {
    ScratchDir dir("stack-limit");
    write_small_model(dir / "model");
    {
        std::ofstream prompt(dir / "prompt.txt");
        prompt << "the quick brown fox";
    }
    const std::vector<std::string> args{"generate", "--model", (dir / "model").string(), "--prompt-file", "-", "-n", "4"};
    const std::string prompt = (dir / "prompt.txt").string();
    const CliResult raised = run_retnet(args, 60, 0, ChildSetup{"", prompt, 0, {}, 40L << 10, 0});
    EXPECT_EQ(raised.exit_code, 0) << raised.err;
    EXPECT_EQ(raised.signal, 0);
    EXPECT_FALSE(raised.out.empty());
    const CliResult refused = run_retnet(args, 60, 0, ChildSetup{"", prompt, 0, {}, 40L << 10, 64L << 10});
    EXPECT_EQ(refused.exit_code, 1) << refused.err;
    EXPECT_EQ(refused.err,
              "retnet: error: the stack limit (ulimit -s) is 40 KiB and its hard limit 64 KiB: retnet needs at least "
              "256 KiB (8192 KiB is usual)\n");
    if (kSanitized) return;  // an address-space cap cannot hold a sanitizer's shadow memory
    const CliResult large = run_retnet(args, 60, 0, ChildSetup{"", prompt, 2048L << 20, {}, 1024L << 20, 0});
    EXPECT_EQ(large.exit_code, 0) << large.err;
    EXPECT_FALSE(large.out.empty());
}

// OpenBLAS starts a thread per core as it loads, each mapping a 128 MiB buffer; under a ulimit -v
// that leaves no room for one (the libraries already map ~0.98 GB), it retried the mapping forever and
// even `retnet --version` hung, joining the thread at exit (seen at 1 GiB on 2 cores; on a many-core
// machine at any cap below ~1 GB + 136 MiB a core). The executable now executes itself again with one
// OpenBLAS thread before any library starts and fits the count to the room left in main()
// (hold_blas_threads_for_address_limit), unless the user chose one.
TEST(RobustMemory, ATightAddressLimitDoesNotHangOpenBlas) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("blas-threads");
    write_small_model(dir / "model");
    for (const char* name : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"}) unsetenv(name);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"--version"}, {"info", "--model", (dir / "model").string()}}) {
        const auto start = std::chrono::steady_clock::now();
        RunningRetnet run(args, ChildSetup{"", "", 1024L << 20, {}});
        const CliResult r = run.finish(30);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
        EXPECT_LT(seconds, 10.0) << args[0];
        EXPECT_NE(r.out.find(args[0] == "--version" ? "retnet " : "shape"), std::string::npos) << r.out;
    }
}

// Every thread that calls OpenBLAS maps a 128 MiB buffer of its own, and OpenBLAS retries a mapping
// that fails forever: a prefill whose two threads each multiplied under ulimit -v 400 MB spun (and
// a first SIGTERM only asked it to stop), and at 250 MB a worker thread that could not be started
// ended the command with "Resource temporarily unavailable". Now the callers are as many as the
// buffers that fit, a block whose thread cannot start runs on the caller's, and where not even one
// buffer fits the command says so in one line. Across caps from too small to enough, every run
// ends, in one line or with the text.
TEST(RobustMemory, BlasUnderATightAddressLimitEndsInOneLineNotAHang) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("blas-callers");
    write_small_model(dir / "model");
    for (const char* name : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"}) unsetenv(name);
    std::string prompt;
    for (int i = 0; i < 60; ++i) prompt += "the quick brown fox jumps over the lazy dog ";
    int succeeded = 0;
    for (long megabytes = 250; megabytes <= 700; megabytes += 50) {
        RunningRetnet run({"generate", "--model", (dir / "model").string(), "--mode", "chunkwise", "-p", prompt, "-n",
                           "2", "--greedy"},
                          ChildSetup{"", "", megabytes << 20, {}});
        const CliResult r = run.finish(60);
        ASSERT_EQ(r.signal, 0) << megabytes << " MiB: killed by signal " << r.signal << " (a hang?)";
        EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << megabytes << " MiB: exit " << r.exit_code << ": " << r.err;
        EXPECT_EQ(r.err.find("Resource temporarily unavailable"), std::string::npos) << megabytes << " MiB: " << r.err;
        if (r.exit_code == 0) {
            ++succeeded;
            EXPECT_NE(r.err.find("2 tokens"), std::string::npos) << megabytes << " MiB: " << r.err;
        } else {
            EXPECT_EQ(r.err_lines(), 1) << megabytes << " MiB: " << r.err;
            EXPECT_TRUE(r.err.find("work buffer and room beside it") != std::string::npos ||
                        r.err.find("out of memory") != std::string::npos ||
                        r.err.find("more than the memory limit") != std::string::npos)
                << megabytes << " MiB: " << r.err;
        }
    }
    EXPECT_GT(succeeded, 0) << "no cap up to 700 MiB was enough";
}

// A chat whose BLAS buffer cannot fit under the cap is refused before its ready line, in that
// line alone, not at its first turn after saying it is ready.
TEST(RobustMemory, AChatThatCannotRunBlasIsRefusedBeforeItIsReady) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("blas-chat");
    write_small_model(dir / "model");
    spit(dir / "lines.txt", "hello there\n");
    int refused = 0;
    for (long megabytes = 200; megabytes <= 300; megabytes += 50) {
        RunningRetnet run({"chat", "--model", (dir / "model").string(), "-n", "2", "--greedy"},
                          ChildSetup{"", (dir / "lines.txt").string(), megabytes << 20, {}});
        const CliResult r = run.finish(60);
        ASSERT_EQ(r.signal, 0) << megabytes << " MiB: killed by signal " << r.signal;
        if (r.exit_code == 0) continue;  // it fits
        ++refused;
        EXPECT_EQ(r.exit_code, 1) << megabytes << " MiB: " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << megabytes << " MiB: " << r.err;
        EXPECT_NE(r.err.find("work buffer and room beside it"), std::string::npos) << megabytes << " MiB: " << r.err;
    }
    EXPECT_GT(refused, 0) << "every cap from 200 MiB fitted: the case was not reached";
}

// SentencePiece trains in threads of its own, where a failed allocation ended the process with
// std::terminate ("terminate called after throwing an instance of 'std::bad_alloc'", exit 134) under
// ulimit -v once the text needed more than the command's estimate: a text of CJK words drawn at random
// (many distinct pairs, the trainer's worst kind) needs ~1.5× it. Across caps from too small to enough,
// each run trains or says out of memory in one line, and none dies by a signal.
TEST(RobustMemory, TokenizerTrainingUnderATightAddressLimitEndsInOneLine) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("tokenizer-memory");
    std::mt19937 random(7);
    std::string text;
    while (text.size() < 600000) {
        for (int length = 1 + static_cast<int>(random() % 6); length > 0; --length) {
            const unsigned c = 0x4E00 + random() % 2000;  // three UTF-8 bytes each
            text += {static_cast<char>(0xE0 | c >> 12), static_cast<char>(0x80 | (c >> 6 & 0x3F)),
                     static_cast<char>(0x80 | (c & 0x3F))};
        }
        text += random() % 8 == 0 ? '\n' : ' ';
    }
    spit(dir / "cjk.txt", text);
    int trained = 0, refused = 0;
    for (long megabytes = 150; megabytes <= 330; megabytes += 15) {
        RunningRetnet run({"tokenizer", "train", "--text", (dir / "cjk.txt").string(), "--vocab-size", "4000", "--out",
                           (dir / ("out" + std::to_string(megabytes))).string()},
                          ChildSetup{"", "", megabytes << 20, {}});
        const CliResult r = run.finish(120);
        ASSERT_EQ(r.signal, 0) << megabytes << " MiB: killed by signal " << r.signal << ": " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << megabytes << " MiB: " << r.err;
        if (r.exit_code == 0) {
            ++trained;
            EXPECT_NE(r.err.find("wrote"), std::string::npos) << megabytes << " MiB: " << r.err;
            continue;
        }
        ++refused;
        EXPECT_EQ(r.exit_code, 1) << megabytes << " MiB: " << r.err;
        // the estimate refused, or memory or a thread ran out: each said as such
        const bool said = r.err.find("left under the process's address-space limit") != std::string::npos ||
                          r.err.find("out of memory") != std::string::npos ||
                          r.err.find("could not start its threads") != std::string::npos;
        EXPECT_TRUE(said) << megabytes << " MiB: " << r.err;
    }
    EXPECT_GT(trained, 0) << "no cap up to 330 MiB was enough: the case was not reached";
    EXPECT_GT(refused, 0) << "every cap from 150 MiB was enough: the case was not reached";
}

// A run whose training batch fits the memory limit but whose validation batch (kEvalBatch windows
// of --eval-window tokens) does not is refused before it starts, naming the validation: it used to
// train to the end, run out of memory validating, and leave no checkpoint.
TEST(RobustMemory, AValidationThatCannotFitIsRefusedBeforeTraining) {
    ScratchDir dir("validation-fit");
    std::vector<std::string> args = tiny_training_args(dir.path());
    // a held-out half long enough for 8 windows of 4096 tokens (a token covers at least a byte)
    spit(dir / "text.txt", repeated_corpus(80000));
    *(std::find(args.begin(), args.end(), "--val-fraction") + 1) = "0.5";
    args.insert(args.end(), {"--steps", "2", "--eval-window", "4096", "--max-memory", "256M"});
    const CliResult refused = run_retnet(args, 60);
    EXPECT_EQ(refused.exit_code, 1) << refused.err;
    EXPECT_EQ(refused.err_lines(), 1) << refused.err;
    EXPECT_NE(refused.err.find("training with --batch 2 --seq-len 16 (its validation: "), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find(" tokens at once, --eval-window 4096) needs"), std::string::npos) << refused.err;
    EXPECT_FALSE(fs::exists(dir / "run" / "checkpoint"));
    // The same run with windows that fit trains, validates and saves.
    *(std::find(args.begin(), args.end(), "--eval-window") + 1) = "64";
    const CliResult trained = run_retnet(args, 120);
    EXPECT_EQ(trained.exit_code, 0) << trained.err;
    EXPECT_NE(trained.out.find("validation loss"), std::string::npos) << trained.out;
    EXPECT_TRUE(fs::exists(dir / "run" / "checkpoint" / "trainer_state.json"));
}

// The CUDA libraries are mapped only when a CUDA device is asked for (retnet/cuda/module.h): a run
// on the CPU fits a cap they alone would not (cuBLAS maps ~1 GB; the CLI failed to start below
// ~1.1 GB), and --device cuda under it falls back to the CPU with the reason.
TEST(RobustMemory, TheCpuRunsUnderACapTheCudaLibrariesWouldNotFit) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("cap-without-cuda");
    write_small_model(dir / "model");
    for (const char* device : {"cpu", "cuda"}) {
        RunningRetnet run({"generate", "--model", (dir / "model").string(), "-p", "ab", "-n", "3", "--greedy",
                           "--device", device},
                          ChildSetup{"", "", 512L << 20, {}});
        const CliResult r = run.finish(60);
        EXPECT_EQ(r.exit_code, 0) << device << ": " << r.err;
        EXPECT_NE(r.err.find("3 tokens"), std::string::npos) << device << ": " << r.err;
        if (std::string(device) == "cuda") {
            EXPECT_NE(r.err.find("retnet: CUDA unavailable ("), std::string::npos) << r.err;
        }
    }
}

TEST(RobustMemory, MemorySizesParseStrictly) {
    EXPECT_EQ(parse_bytes("8G", "x"), uint64_t(8) << 30);
    EXPECT_EQ(parse_bytes("512MiB", "x"), uint64_t(512) << 20);
    EXPECT_EQ(parse_bytes("1.5G", "x"), uint64_t(3) << 29);
    EXPECT_EQ(parse_bytes("4096", "x"), 4096u);
    EXPECT_EQ(parse_bytes("4096B", "x"), 4096u);
    EXPECT_EQ(parse_bytes("2 GB", "x"), uint64_t(2) << 30);
    EXPECT_EQ(parse_bytes(" 3k ", "x"), uint64_t(3) << 10);
    EXPECT_EQ(parse_bytes("1.5K", "x"), 1536u);
    EXPECT_EQ(parse_bytes("1e3", "x"), 1000u);
    for (const char* bad : {"", "G", "B", "iB", "8iB", "12abc", "-1G", "1e400", "0", "8 G B", "GiB", "0x10", "0x1p4G",
                            "inf", "nan", "1.5", "1.5B"})
        EXPECT_THROW(parse_bytes(bad, "x"), Error) << bad;
    EXPECT_EQ(saturating_product({uint64_t(1) << 40, uint64_t(1) << 40}), UINT64_MAX);
    EXPECT_EQ(saturating_sum({UINT64_MAX, 5}), UINT64_MAX);
    EXPECT_EQ(format_bytes(3ull << 30), "3.0 GiB");
    EXPECT_EQ(format_bytes(17), "17 bytes");
    EXPECT_EQ(format_bytes(uint64_t(48) << 20), "48 MiB");
    EXPECT_EQ(format_bytes(UINT64_MAX), "more than 16 EiB");
}

// --max-memory (or RETNET_MAX_MEMORY) above ulimit -v cannot give the process what it may not map:
// the check binds at the address-space limit and says so. Before, the asked limit replaced it, so
// init passed the check and died allocating the weights.
TEST(RobustMemory, AnAskedLimitAboveUlimitStillRefusesAtUlimit) {
    if (kSanitized) GTEST_SKIP() << "an address-space cap cannot hold a sanitizer's shadow memory";
    ScratchDir dir("asked-over-ulimit");
    // ~680M parameters: 2.7 GB of fp32 weights, over the 1.5 GiB cap, far under the 100 GiB asked for.
    spit(dir / "big.json", R"({"model_type": "retnet", "hidden_size": 2048, "num_heads": 8, "num_hidden_layers": 8,
                               "expand_k": 1, "expand_v": 2, "intermediate_size": 5632, "vocab_size": 32000})");
    setenv("OPENBLAS_NUM_THREADS", "2", 1);  // as above: thread buffers under a cap
    for (const bool by_env : {false, true}) {
        std::vector<std::string> args = {"init", "--config", (dir / "big.json").string(), "--out",
                                         (dir / "model").string()};
        if (by_env)
            setenv("RETNET_MAX_MEMORY", "100G", 1);
        else
            args.insert(args.end(), {"--max-memory", "100G"});
        RunningRetnet run(args, ChildSetup{"", "", 1536L << 20, {}});
        const CliResult r = run.finish(60);
        unsetenv("RETNET_MAX_MEMORY");
        EXPECT_EQ(r.exit_code, 1) << r.err;
        EXPECT_EQ(r.err_lines(), 1) << r.err;
        EXPECT_NE(r.err.find("more than the memory limit of 1.5 GiB (the process's address-space limit (ulimit -v), "
                             "lower than " +
                             std::string(by_env ? "RETNET_MAX_MEMORY" : "--max-memory") + "'s 100 GiB"),
                  std::string::npos)
            << r.err;
        EXPECT_FALSE(fs::exists(dir / "model"));
    }
    unsetenv("OPENBLAS_NUM_THREADS");
}

// A RETNET_MAX_MEMORY that is not a size is one line and status 1 for every command, --version
// included: it was an uncaught exception (abort, status 134) thrown before any command ran.
TEST(RobustMemory, AnEnvironmentLimitThatIsNotASizeIsOneLine) {
    for (const char* value : {"foo", "0", "-5", "99999999999999999999999"}) {
        setenv("RETNET_MAX_MEMORY", value, 1);
        for (const std::vector<std::string>& args :
             {std::vector<std::string>{"--version"}, std::vector<std::string>{"info"}}) {
            const CliResult r = run_retnet(args, 30);
            EXPECT_EQ(r.signal, 0) << value;
            EXPECT_EQ(r.exit_code, 1) << value << ": " << r.err;
            EXPECT_EQ(r.err_lines(), 1) << r.err;
            EXPECT_EQ(r.err.rfind("retnet: error: RETNET_MAX_MEMORY expects a size such as 8G", 0), 0) << r.err;
        }
    }
    unsetenv("RETNET_MAX_MEMORY");
    EXPECT_EQ(run_retnet({"--version"}, 30).exit_code, 0);
}

// A size just over the limit that rounds to the limit's own figure is told in bytes, not as
// "needs 92 MiB, more than the memory limit of 92 MiB".
TEST(RobustMemory, ARefusalJustOverTheLimitNamesTheExactCounts) {
    const uint64_t limit = uint64_t(92) << 20;
    set_memory_limit(limit, "the test");
    try {
        check_memory(limit + 1, "the thing");
        ADD_FAILURE() << "not refused";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("the thing needs 96468993 bytes, more than the memory limit of 96468992 bytes"),
                  std::string::npos)
            << e.what();
    }
    try {
        check_memory(limit * 2, "the thing");
        ADD_FAILURE() << "not refused";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("needs 184 MiB, more than the memory limit of 92 MiB"), std::string::npos)
            << e.what();
    }
    EXPECT_NO_THROW(check_memory(limit, "the thing"));
    set_memory_limit(0);
}

// ---- 3. training runs clobbered --------------------------------------------------------------

TEST(RobustTrainRun, FinishedRunIsNotOverwrittenWithoutOverwrite) {
    ScratchDir dir("clobber");
    const std::vector<std::string> args = tiny_training_args(dir.path());
    ASSERT_EQ(run_retnet(with(args, {"--steps", "2"})).exit_code, 0);
    const std::string weights = slurp(dir / "run" / "checkpoint" / "model.safetensors");
    const CliResult again = run_retnet(with(args, {"--steps", "2", "--seed", "5"}));
    EXPECT_EQ(again.exit_code, 1);
    EXPECT_EQ(again.err_lines(), 1) << again.err;
    EXPECT_NE(again.err.find("already holds a training run (checkpoint at step 2/2)"), std::string::npos) << again.err;
    EXPECT_EQ(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights);
    const CliResult replaced = run_retnet(with(args, {"--steps", "2", "--seed", "5", "--overwrite"}));
    EXPECT_EQ(replaced.exit_code, 0) << replaced.err;
    EXPECT_NE(slurp(dir / "run" / "checkpoint" / "model.safetensors"), weights);
    // A finished run resumed: said so, not "last loss 0.0000".
    const CliResult done = run_retnet(with(args, {"--steps", "2", "--seed", "5", "--resume"}));
    EXPECT_EQ(done.exit_code, 0) << done.err;
    EXPECT_NE(done.out.find("already complete at step 2/2"), std::string::npos) << done.out;
    EXPECT_EQ(done.out.find("last loss 0.0000"), std::string::npos) << done.out;
}

TEST(RobustTrainRun, ResumeRefusesOtherDataOrAnotherTokenizer) {
    ScratchDir dir("resume_inputs");
    const std::vector<std::string> args = tiny_training_args(dir.path());
    ASSERT_EQ(run_retnet(with(args, {"--steps", "1"})).exit_code, 0);
    const std::string tokenizer_before = slurp(dir / "run" / "checkpoint" / "tokenizer.model");
    // Other text under the same name.
    const std::string text = slurp(dir / "text.txt");
    spit(dir / "text.txt", text + text);
    CliResult r = run_retnet(with(args, {"--steps", "2", "--resume"}));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("is not the text the run in"), std::string::npos) << r.err;
    spit(dir / "text.txt", text);
    // Another tokenizer.
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    options.type = "unigram";
    spit(dir / "other.model", train_tokenizer(tokenizer_corpus_lines(), options));
    std::vector<std::string> other = args;
    *(std::find(other.begin(), other.end(), "--tokenizer") + 1) = (dir / "other.model").string();
    r = run_retnet(with(other, {"--steps", "2", "--resume"}));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("is not the tokenizer of the run"), std::string::npos) << r.err;
    EXPECT_EQ(slurp(dir / "run" / "checkpoint" / "tokenizer.model"), tokenizer_before);
    // The same inputs resume.
    EXPECT_EQ(run_retnet(with(args, {"--steps", "2", "--resume"})).exit_code, 0);
}

TEST(RobustTrainRun, SecondWriterIsRefused) {
    ScratchDir dir("lock");
    const std::vector<std::string> args = tiny_training_args(dir.path());
    const train::RunDirectoryLock held((dir / "run").string());  // another process's lock: flock is per open file
    const CliResult r = run_retnet(with(args, {"--steps", "1"}));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("is in use by another `retnet train` (process " + std::to_string(::getpid()) + ")"),
              std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(dir / "run" / "checkpoint"));
    // A holder that has not written its id yet (it took the lock a moment ago): no "(process ?)".
    fs::create_directories(dir / "fresh");
    const int fd = ::open((dir / "fresh" / "train.lock").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    std::vector<std::string> into_fresh = with(args, {"--steps", "1"});
    *(std::find(into_fresh.begin(), into_fresh.end(), "--out") + 1) = (dir / "fresh").string();
    const CliResult early = run_retnet(into_fresh);
    ::close(fd);
    EXPECT_EQ(early.exit_code, 1);
    EXPECT_EQ(early.err, "retnet train: error: " + (dir / "fresh").string() +
                             " is in use by another `retnet train`; wait for it or choose another --out\n");
}

TEST(RobustTrainRun, CompleteCheckpointTmpIsRecoveredAndAnIncompleteOneIgnored) {
    ScratchDir dir("recover");
    const std::vector<std::string> args = with(tiny_training_args(dir.path()), {"--warmup", "1"});
    const fs::path run = dir / "run";
    ASSERT_EQ(run_retnet(with(args, {"--steps", "2"})).exit_code, 0);
    fs::copy(run / "checkpoint", dir / "step2", fs::copy_options::recursive);
    ASSERT_EQ(run_retnet(with(args, {"--steps", "4", "--resume"})).exit_code, 0);
    // As if killed after writing the step-4 checkpoint, before renaming it into place.
    fs::rename(run / "checkpoint", run / "checkpoint.tmp");
    fs::copy(dir / "step2", run / "checkpoint", fs::copy_options::recursive);
    fs::copy(run / "checkpoint.tmp", dir / "step4", fs::copy_options::recursive);
    CliResult r = run_retnet(with(args, {"--steps", "5", "--resume"}));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("recovered the complete checkpoint of step 4"), std::string::npos) << r.err;
    EXPECT_NE(r.out.find("step      5/5"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("step      3/5"), std::string::npos) << r.out;
    // Incomplete (killed while writing it): ignored, the run continues from checkpoint/.
    fs::remove_all(run / "checkpoint");
    fs::copy(dir / "step2", run / "checkpoint", fs::copy_options::recursive);
    fs::copy(dir / "step4", run / "checkpoint.tmp", fs::copy_options::recursive);
    fs::remove(run / "checkpoint.tmp" / "trainer_state.json");
    r = run_retnet(with(args, {"--steps", "3", "--resume"}));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("step      3/3"), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find("recovered"), std::string::npos) << r.err;
    // Mixed (step 4's optimizer under a state of step 5): not complete, so ignored; checkpoint/ kept.
    fs::remove_all(run / "checkpoint");
    fs::remove_all(run / "checkpoint.tmp");
    fs::copy(dir / "step2", run / "checkpoint", fs::copy_options::recursive);
    fs::copy(dir / "step4", run / "checkpoint.tmp", fs::copy_options::recursive);
    std::string state = slurp(run / "checkpoint.tmp" / "trainer_state.json");
    const size_t at = state.find("\"step\": 4");
    ASSERT_NE(at, std::string::npos) << state;
    state.replace(at, 9, "\"step\": 5");
    spit(run / "checkpoint.tmp" / "trainer_state.json", state);
    r = run_retnet(with(args, {"--steps", "3", "--resume"}));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("step      3/3"), std::string::npos) << r.out;
    EXPECT_EQ(r.err.find("recovered"), std::string::npos) << r.err;
}

TEST(RobustTrainRun, MetadataParsersRejectMalformedInput) {
    for (const char* bad : {"", "[]", "{}", R"({"step": "2", "total_steps": 3, "schedule_fixed": false})",
                            R"({"step": -1, "total_steps": 3, "schedule_fixed": false})",
                            R"({"step": 1, "total_steps": 3, "schedule_fixed": 1})"})
        EXPECT_THROW(train::parse_checkpoint_info(bad, "s.json"), Error) << bad;
    const auto info =
        train::parse_checkpoint_info(R"({"step": 2, "total_steps": 3, "schedule_fixed": true, "data": "a.txt"})", "s");
    EXPECT_EQ(info.step, 2);
    EXPECT_EQ(info.data, "a.txt");
    train::RunInputs in{"d.txt", "t.model", 10, 20, "00ff", "ab"};
    const train::RunInputs back = train::parse_run_inputs(train::run_inputs_json(in), "run.json");
    EXPECT_EQ(back.data_hash, "00ff");
    EXPECT_EQ(back.tokenizer_bytes, 20u);
    EXPECT_THROW(train::parse_run_inputs(R"({"data": 1})", "run.json"), Error);
    // Numbers that are not integers of the field's range are refused, not converted (fuzz_run_metadata).
    const std::string rest = R"(, "data_hash": "00", "tokenizer": "t", "tokenizer_bytes": 7, "tokenizer_hash": "1"})";
    for (const char* bytes : {"4.4e28", "12.5", "-3", "18446744073709551616"})
        EXPECT_THROW(train::parse_run_inputs(std::string(R"({"data": "a", "data_bytes": )") + bytes + rest, "run.json"),
                     Error)
            << bytes;
    EXPECT_EQ(train::parse_run_inputs(std::string(R"({"data": "a", "data_bytes": 18446744073709551615)") + rest,
                                      "run.json")
                  .data_bytes,
              UINT64_MAX);
    EXPECT_THROW(train::parse_checkpoint_info(R"({"step": 1e30, "total_steps": 3, "schedule_fixed": true})", "s.json"),
                 Error);
}

// ---- 4. hangs on FIFOs -----------------------------------------------------------------------

TEST(RobustFifo, FifosAndDirectoriesWhereAFileIsExpectedGetTheirOwnLine) {
    ScratchDir dir("in_fifo");
    const std::vector<std::string> train = tiny_training_args(dir.path());
    write_small_model(dir / "fifo_config");
    fs::remove(dir / "fifo_config" / "config.json");
    ASSERT_EQ(::mkfifo((dir / "fifo_config" / "config.json").c_str(), 0600), 0);
    fs::copy(dir / "model", dir / "fifo_tok", fs::copy_options::recursive);
    fs::remove(dir / "fifo_tok" / "tokenizer.model");
    ASSERT_EQ(::mkfifo((dir / "fifo_tok" / "tokenizer.model").c_str(), 0600), 0);
    ASSERT_EQ(::mkfifo((dir / "text.fifo").c_str(), 0600), 0);
    fs::copy(dir / "model", dir / "dir_config", fs::copy_options::recursive);
    fs::remove(dir / "dir_config" / "config.json");
    fs::create_directory(dir / "dir_config" / "config.json");
    fs::copy(dir / "model", dir / "dir_weights", fs::copy_options::recursive);
    fs::remove(dir / "dir_weights" / "model.safetensors");
    fs::create_directory(dir / "dir_weights" / "model.safetensors");
    fs::copy(dir / "model", dir / "loop_weights", fs::copy_options::recursive);
    fs::remove(dir / "loop_weights" / "model.safetensors");
    fs::create_symlink("model.safetensors", dir / "loop_weights" / "model.safetensors");
    std::vector<std::string> train_fifo = train;
    *(std::find(train_fifo.begin(), train_fifo.end(), "--data") + 1) = (dir / "text.fifo").string();
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{"info", "--model", (dir / "fifo_config").string()}, "is a FIFO (named pipe), expected a regular file"},
        {{"generate", "--model", (dir / "fifo_tok").string(), "--prompt", "hi", "--max-new-tokens", "1"}, "is a FIFO"},
        {{"eval", "--model", (dir / "model").string(), "--text", (dir / "text.fifo").string()}, "is a FIFO"},
        {with(train_fifo, {"--steps", "1"}), "is a FIFO"},
        {{"tokenizer", "train", "--text", (dir / "text.fifo").string(), "--vocab-size", "300", "--out",
          (dir / "tok").string()}, "is a FIFO"},
        {{"info", "--model", (dir / "dir_config").string()}, "is a directory, expected a regular file"},
        {{"eval", "--model", (dir / "model").string(), "--text", dir.path().string()}, "is a directory"},
        {{"info", "--model", (dir / "dir_weights").string()}, "model.safetensors: is a directory"},
        {{"info", "--model", (dir / "loop_weights").string()}, "symlink loop"},
    };
    for (const auto& [args, expected] : cases) {
        const CliResult r = run_retnet(args, 30);
        EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << args[0] << ": " << r.err;
        EXPECT_NE(r.err.find(expected), std::string::npos) << args[0] << ": " << r.err;
    }
}

// ---- 5. write errors to stdout ---------------------------------------------------------------

TEST(RobustStdout, AFullStdoutIsAnErrorNotExitZero) {
    if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "/dev/full is not available";
    ScratchDir dir("stdout_full");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    const std::vector<std::vector<std::string>> cases = {
        {"info", "--model", m},
        {"generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "4"},
        {"generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "4", "--json"},
        {"tokenizer", "encode", "--model", m, "--text", "hello"},
        {"inspect", "--model", m, "--tokens", "1,5,6", "--json"},
    };
    for (const auto& args : cases) {
        const CliResult r = run_retnet(args, 60, 0, ChildSetup{"/dev/full", "", 0, {}});
        EXPECT_EQ(r.exit_code, 1) << args[0] << ": " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << args[0] << ": " << r.err;
        EXPECT_NE(r.err.find("cannot write to standard output (No space left on device)"), std::string::npos)
            << args[0] << ": " << r.err;
    }
}

TEST(RobustStdout, AClosedPipeEndsGenerationQuietly) {
    ScratchDir dir("stdout_pipe");
    write_small_model(dir / "model", false);
    RunningRetnet run({"generate", "--model", (dir / "model").string(), "--tokens", "1,5", "--max-new-tokens",
                       "16000000", "--ignore-eos", "--temperature", "1"});
    ASSERT_TRUE(run.wait_for_output(" ", 30));  // ids stream out, space-separated
    run.close_output();  // as `| head -c 10` does
    const CliResult r = run.finish(60);
    EXPECT_EQ(r.signal, 0) << "died of signal " << r.signal;
    EXPECT_EQ(r.exit_code, 141);
    EXPECT_EQ(r.err, "");
}

// A reader gone before the command writes: every command ends quietly with 141. Before: output
// larger than stdio's buffer (inspect's scores) failed inside printf, the flush after it found
// nothing to write and no errno, and the command said "Input/output error", exit 1; `logits --out -`
// said "-: cannot write (Broken pipe)".
TEST(RobustStdout, AClosedPipeEndsEveryCommandQuietly) {
    ScratchDir dir("stdout_closed");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    std::string tokens = "1";
    for (int t = 2; t <= 300; ++t) tokens.append(",").append(std::to_string(t));
    const std::vector<std::vector<std::string>> cases = {
        {"inspect", "--model", m, "--tokens", tokens, "--json"},
        {"inspect", "--model", m, "--tokens", tokens},
        {"logits", "--model", m, "--tokens", tokens, "--out", "-"},
        {"info", "--model", m},
        {"generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "4"},
    };
    for (const auto& args : cases) {
        RunningRetnet run(args);
        run.close_output();
        const CliResult r = run.finish(60);
        EXPECT_EQ(r.signal, 0) << args[0] << " died of signal " << r.signal;
        EXPECT_EQ(r.exit_code, 141) << args[0] << ": " << r.err;
        EXPECT_EQ(r.err, "") << args[0];
    }
}

// ---- 6. messages -----------------------------------------------------------------------------

TEST(RobustMessages, ControlCharactersInAPathNeverReachTheTerminal) {
    ScratchDir dir("msg_ctrl");
    std::vector<std::string> args = tiny_training_args(dir.path());
    const std::string hostile = (dir / "run\n\x1b[2Jx").string();
    *(std::find(args.begin(), args.end(), "--out") + 1) = hostile;
    const CliResult r = run_retnet(with(args, {"--steps", "1"}));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos);
    EXPECT_NE(r.out.find("run\\n\\x1b[2Jx/best"), std::string::npos) << r.out;
}

TEST(RobustMessages, BytesThatAreNotTextAndC1ControlsAreEscaped) {
    // valid UTF-8 passes (é, €, 𝄞, U+00A0); CSI as a C1 control (U+009B) and bytes that are not UTF-8
    // (a lone 0xff, an overlong '/', a surrogate, a sequence cut short) are escaped byte by byte
    EXPECT_STREQ(Error("caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xc2\xa0").what(),
                 "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xc2\xa0");
    EXPECT_STREQ(Error("a\xc2\x9b" "31mred").what(), "a\\xc2\\x9b31mred");
    // characters that reorder or break the line (U+202E, U+2028, U+2066, U+061C) as \uXXXX; their
    // neighbours (U+202F, U+2065 unassigned, U+061B) pass
    EXPECT_STREQ(Error("a\xe2\x80\xaetxt.exe \xe2\x80\xa8 \xe2\x81\xa6 \xd8\x9c|"
                       "\xe2\x80\xaf \xe2\x81\xa5 \xd8\x9b").what(),
                 "a\\u202etxt.exe \\u2028 \\u2066 \\u061c|\xe2\x80\xaf \xe2\x81\xa5 \xd8\x9b");
    EXPECT_STREQ(Error("\xff \xc0\xaf \xed\xa0\x80 end\xe2\x82").what(),
                 "\\xff \\xc0\\xaf \\xed\\xa0\\x80 end\\xe2\\x82");
    // the CLI's one line says the same for a path given on the command line
    const CliResult r = run_retnet({"info", "--model", "/nonexistent/\xff\xc2\x9b" "2J"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err.find("\xc2\x9b"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("/nonexistent/\\xff\\xc2\\x9b2J"), std::string::npos) << r.err;
}

TEST(RobustMessages, HugeValuesAreCutInTheMessage) {
    ScratchDir dir("msg_long");
    write_small_model(dir / "model", false);
    nlohmann::json config = nlohmann::json::parse(slurp(dir / "model" / "config.json"));
    config["hidden_act"] = std::string(1 << 20, 'x');  // a 1 MB activation name
    spit(dir / "model" / "config.json", config.dump());
    const CliResult r = run_retnet({"info", "--model", (dir / "model").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1);
    EXPECT_LT(r.err.size(), 5000u) << r.err.size();
    EXPECT_NE(r.err.find("bytes cut"), std::string::npos);
    EXPECT_NE(r.err.find("hidden_act"), std::string::npos) << r.err.substr(0, 300);
}

// The limit holds for the escaped line: 4 KB of control bytes (each escaped to four characters) give a
// line within kMaxLength, which keeps whole escapes at both ends and counts the bytes it cut.
TEST(RobustMessages, EscapedMessagesStayWithinTheLimit) {
    const std::string line = Error("start " + std::string(4096, '\x01') + " end").what();
    EXPECT_LE(line.size(), Error::kMaxLength) << line.size();
    EXPECT_EQ(line.rfind("start \\x01\\x01", 0), 0u) << line.substr(0, 40);
    EXPECT_EQ(line.substr(line.size() - 12), "\\x01\\x01 end");
    const size_t marker = line.find("...(");
    ASSERT_NE(marker, std::string::npos);
    EXPECT_EQ(line[marker - 4], '\\') << "the head ends with a whole escape";
    // what is kept plus what was cut is the whole message
    const size_t kept_escapes = (marker - 6) / 4 + (line.size() - line.find(")...") - 4 - 4) / 4;
    EXPECT_NE(line.find("(" + std::to_string(4096 - kept_escapes) + " bytes cut)"), std::string::npos) << line;
}

// A message that quotes a cut message and is cut again counts what both cuts removed (it counted its
// own cut only: "(23 bytes cut)" for 99,023 missing bytes).
TEST(RobustMessages, ACutMessageCutAgainCountsBothCuts) {
    const std::string inner = Error(std::string(100000, 'A')).what();
    const std::string outer = Error("while loading: " + inner).what();
    EXPECT_LE(outer.size(), Error::kMaxLength) << outer.size();
    EXPECT_EQ(outer.rfind("while loading: AAA", 0), 0u);
    const size_t kept = static_cast<size_t>(std::count(outer.begin(), outer.end(), 'A'));
    EXPECT_NE(outer.find("...(" + std::to_string(100000 - kept) + " bytes cut)..."), std::string::npos) << outer;
    EXPECT_EQ(outer.find("bytes cut"), outer.rfind("bytes cut")) << "one marker: " << outer;
}

// A huge message costs the work of its ends only (it escaped and indexed every byte: 2.4 GB of memory for
// 100 MB), and still counts every byte it cut.
TEST(RobustMessages, AHugeMessageIsCutFromItsEnds) {
    std::string huge(64u << 20, 'x');
    huge.replace(0, 5, "first");
    huge.replace(huge.size() - 4, 4, "last");
    const std::string line = Error(huge).what();
    EXPECT_LE(line.size(), Error::kMaxLength);
    EXPECT_EQ(line.rfind("firstxx", 0), 0u);
    EXPECT_EQ(line.substr(line.size() - 6), "xxlast");
    const size_t kept = line.size() - (line.find(" bytes cut)...") + 14 - line.find("...("));
    EXPECT_NE(line.find("...(" + std::to_string(huge.size() - kept) + " bytes cut)..."), std::string::npos) << line;
}

TEST(RobustMessages, MisleadingLinesNowSayWhatIsWrong) {
    ScratchDir dir("msg_misleading");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    CliResult r = run_retnet({"generate", "--model", m, "--prompt", "a", "--top-p", "0"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("must be in [1e-09, 1], got 0"), std::string::npos) << r.err;
    spit(dir / "chars.txt", "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n");
    r = run_retnet({"tokenizer", "train", "--text", (dir / "chars.txt").string(), "--type", "char", "--vocab-size", "64",
                    "--out", (dir / "tok").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err.find(".cc("), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("needs --vocab-size of at least 322"), std::string::npos) << r.err;
    // convert from a model whose tokenizer cannot be read: no half-written output.
    fs::copy(dir / "model", dir / "broken", fs::copy_options::recursive);
    spit(dir / "broken" / "tokenizer.model", "not a tokenizer");
    r = run_retnet({"convert", "--model", (dir / "broken").string(), "--out", (dir / "converted").string()});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_FALSE(fs::exists(dir / "converted")) << r.err;
}

// A JSON value nested 100,000 deep (200 KB) in any file the program reads is one line naming the
// nesting: before, the error message that quoted it (nlohmann's dump() recurses once a level) or a
// copy of it overflowed the stack, and every command that loads the model died by SIGSEGV.
TEST(RobustMessages, JsonNestedTooDeepIsOneLineNotACrash) {
    ScratchDir dir("deep_json");
    const std::string deep = std::string(100000, '[') + std::string(100000, ']');
    write_small_model(dir / "model", false);
    const std::string config = slurp(dir / "model" / "config.json");
    // config.json: a field holds the nested value.
    fs::copy(dir / "model", dir / "deep_config", fs::copy_options::recursive);
    spit(dir / "deep_config" / "config.json", "{\"bos_token_id\": " + deep + ", " + config.substr(config.find('{') + 1));
    // model.safetensors: the header's metadata holds it.
    fs::copy(dir / "model", dir / "deep_header", fs::copy_options::recursive);
    {
        const std::string file = slurp(dir / "model" / "model.safetensors");
        uint64_t length = 0;
        std::memcpy(&length, file.data(), 8);
        std::string header = file.substr(8, length);
        header = "{\"__deep__\": " + deep + ", " + header.substr(1);
        const uint64_t new_length = header.size();
        std::string out(8, '\0');
        std::memcpy(out.data(), &new_length, 8);
        spit(dir / "deep_header" / "model.safetensors", out + header + file.substr(8 + length));
    }
    // A sharded model whose index holds it.
    fs::create_directories(dir / "deep_index");
    fs::copy(dir / "model" / "config.json", dir / "deep_index" / "config.json");
    spit(dir / "deep_index" / "model.safetensors.index.json", "{\"weight_map\": " + deep + "}");
    for (const auto& [model, words] : std::vector<std::pair<std::string, std::string>>{
             {"deep_config", "not valid JSON (arrays and objects nested more than 64 levels deep)"},
             {"deep_header", "header nests arrays or objects more than 64 levels deep"},
             {"deep_index", "arrays and objects nested more than 64 levels deep"}}) {
        const CliResult r = run_retnet({"info", "--model", (dir / model).string()}, 60);
        EXPECT_EQ(r.signal, 0) << model;
        EXPECT_EQ(r.exit_code, 1) << model << ": " << r.err;
        EXPECT_EQ(r.err_lines(), 1) << r.err.substr(0, 300);
        EXPECT_NE(r.err.find(words), std::string::npos) << model << ": " << r.err.substr(0, 300);
    }
    // A cost report.
    const CliResult report = run_retnet({"cost", "--model", (dir / "model").string(), "--lengths", "4", "--batch", "1",
                                         "--decode-steps", "1", "--json"},
                                        120);
    ASSERT_EQ(report.exit_code, 0) << report.err;
    nlohmann::json j = nlohmann::json::parse(report.out);
    std::string text = j.dump();
    text.replace(text.find("\"device\":\"cpu\""), 14, "\"device\":" + deep);
    spit(dir / "deep.json", text);
    const CliResult from = run_retnet({"cost", "--from", (dir / "deep.json").string()}, 60);
    EXPECT_EQ(from.signal, 0);
    EXPECT_EQ(from.exit_code, 1) << from.err;
    EXPECT_EQ(from.err_lines(), 1) << from.err.substr(0, 300);
    EXPECT_NE(from.err.find("is not a report of retnet cost --json ("), std::string::npos) << from.err.substr(0, 300);
    EXPECT_NE(from.err.find("is not a report of retnet cost --json (arrays and objects nested more than 64 levels deep)"),
              std::string::npos)
        << from.err.substr(0, 300);  // without nlohmann's "[json.exception.other_error.501]" tag
    // 64 levels pass the depth check (the parse then names what is wrong with the value).
    EXPECT_FALSE(nests_too_deep(std::string(64, '[') + std::string(64, ']')));
    EXPECT_TRUE(nests_too_deep(std::string(65, '[') + std::string(65, ']')));
    EXPECT_FALSE(nests_too_deep("[[[ not json"));
}

// A model directory whose name is not UTF-8 (a path is bytes) is named escaped in text and with
// U+FFFD for its bad bytes in JSON: before, `info --json` and `bench --json` ended with nlohmann's
// "invalid UTF-8 byte" (type_error 316), and `info` printed the raw bytes and escapes to the terminal.
TEST(RobustMessages, AModelPathThatIsNotUtf8IsShownNotFatal) {
    ScratchDir dir("not_utf8");
    const fs::path model = dir / "bad\xff\x1b[31mdir";
    write_small_model(model, false);
    const CliResult text = run_retnet({"info", "--model", model.string()});
    EXPECT_EQ(text.exit_code, 0) << text.err;
    EXPECT_EQ(text.out.find('\x1b'), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("bad\\xff\\x1b[31mdir"), std::string::npos) << text.out;
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"info", "--json"}, {"bench", "--lengths", "4", "--repeats", "1", "--decode-steps", "2", "--json"}}) {
        std::vector<std::string> with_model = args;
        with_model.insert(with_model.end(), {"--model", model.string()});
        const CliResult r = run_retnet(with_model, 120);
        EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
        const nlohmann::json j = nlohmann::json::parse(r.out);
        const std::string named = j.contains("model") ? j["model"].get<std::string>() : j["directory"].get<std::string>();
        EXPECT_NE(named.find("bad\xef\xbf\xbd\x1b[31mdir"), std::string::npos) << args[0] << ": " << named;
    }
}

// ---- 7. options read strictly ----------------------------------------------------------------

TEST(RobustOptions2, BooleansAndNumbersAreReadStrictly) {
    ScratchDir dir("opts");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    // --greedy=0 is off: sampling at temperature 5 from different seeds differs.
    const auto gen = [&](const std::string& greedy, const std::string& seed) {
        return run_retnet({"generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "12", "--ignore-eos",
                           "--temperature", "5", "--top-k", "0", "--top-p", "1", "--min-p", "0", greedy, "--seed", seed})
            .out;
    };
    EXPECT_NE(gen("--greedy=0", "1"), gen("--greedy=false", "2"));
    EXPECT_EQ(gen("--greedy=1", "1"), gen("--greedy", "2"));
    CliResult r = run_retnet({"generate", "--model", m, "--prompt", "a", "--greedy=maybe"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("--greedy is a flag"), std::string::npos) << r.err;
    for (const char* lengths : {"1e9", "12abc", "0", "-5"}) {
        r = run_retnet({"bench", "--model", m, "--lengths", lengths, "--repeats", "1"});
        EXPECT_EQ(r.exit_code, 1) << lengths << r.out;
        EXPECT_NE(r.err.find("--lengths"), std::string::npos) << r.err;
    }
    // The kernel-level mode times CUDA kernels: on the CPU backend it says so in one line.
    r = run_retnet({"bench", "--model", m, "--mode", "kernels", "--lengths", "64"});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("--mode kernels times the CUDA retention kernels"), std::string::npos) << r.err;
    r = run_retnet({"generate", "--model", m, "--prompt", "a", "--temprature", "1"});
    EXPECT_NE(r.err.find("unknown option --temprature (did you mean --temperature?)"), std::string::npos) << r.err;
    r = run_retnet({"generate", "--help"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("--max-new-tokens"), std::string::npos);
    r = run_retnet({"--version"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out.rfind("retnet ", 0), 0u) << r.out;
}

// llama.cpp's short forms, a random seed that is printed, prompts from a file or standard input.
TEST(RobustOptions2, ShortFormsRandomSeedAndPromptFiles) {
    ScratchDir dir("opts_short");
    write_small_model(dir / "model");
    const std::string m = (dir / "model").string();
    const CliResult longs = run_retnet({"generate", "--model", m, "--prompt", "to be", "--max-new-tokens", "6",
                                        "--temperature", "0", "--seed", "3", "--ignore-eos"});
    ASSERT_EQ(longs.exit_code, 0) << longs.err;
    const CliResult shorts = run_retnet({"generate", "-m", m, "-p", "to be", "-n", "6", "--temp", "0", "-s", "3", "--ignore-eos"});
    EXPECT_EQ(shorts.exit_code, 0) << shorts.err;
    EXPECT_EQ(shorts.out, longs.out);
    spit(dir / "prompt.txt", "to be");
    const CliResult file = run_retnet({"generate", "-m", m, "-f", (dir / "prompt.txt").string(), "-n", "6", "--temp", "0",
                                       "--ignore-eos"});
    EXPECT_EQ(file.out, longs.out) << file.err;
    const CliResult piped = run_retnet({"generate", "-m", m, "--prompt-file", "-", "-n", "6", "--temp", "0", "--ignore-eos"},
                                       60, 0, ChildSetup{"", (dir / "prompt.txt").string(), 0, {}});
    EXPECT_EQ(piped.out, longs.out) << piped.err;
    const CliResult both = run_retnet({"generate", "-m", m, "-p", "a", "-f", (dir / "prompt.txt").string()});
    EXPECT_EQ(both.exit_code, 1);
    EXPECT_NE(both.err.find("either --prompt or --prompt-file"), std::string::npos) << both.err;
    // Encoding holds ~240 bytes per byte of text before the token count is known: asked for first.
    spit(dir / "long.txt", std::string(size_t(1) << 20, 'a'));
    const CliResult long_prompt = run_retnet({"generate", "-m", m, "-f", (dir / "long.txt").string(), "--max-memory", "64M"});
    EXPECT_EQ(long_prompt.exit_code, 1);
    EXPECT_EQ(long_prompt.err.rfind("retnet generate: error: encoding a prompt of 1.0 MiB needs 256 MiB, more than the "
                                    "memory limit of 64 MiB (--max-memory", 0),
              0u)
        << long_prompt.err;
    const CliResult unnamed = run_retnet({"generate", "-m", m, "-f", "", "-n", "2"});  // it ran with no prompt at all
    EXPECT_EQ(unnamed.exit_code, 1);
    EXPECT_EQ(unnamed.err, "retnet generate: error: option --prompt-file is empty (name a file, or - for standard input)\n");
    EXPECT_EQ(unnamed.out, "");
    const CliResult random = run_retnet({"generate", "-m", m, "-p", "a", "-n", "2", "--seed", "-1"});
    EXPECT_EQ(random.exit_code, 0) << random.err;
    EXPECT_NE(random.err.find("retnet generate: seed "), std::string::npos) << random.err;
}

}  // namespace
}  // namespace retnet
