// SPDX-License-Identifier: GPL-3.0-or-later
// The `retnet` executable end to end: outputs of the happy paths, and for every broken input a
// non-zero exit with exactly one line on stderr that names the problem.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "cli_test_util.h"
#include "retnet/npy.h"
#include "retnet/retention_reach.h"
#include "retnet/safetensors.h"

namespace retnet {
namespace {
namespace fs = std::filesystem;

const std::string kFixtures = std::string(RETNET_TEST_DATA_DIR) + "/reference/";

using test::CliRun;
using test::run_cli;
using test::slurp;

using test::expect_one_line_error;

// A copy of a fixture model whose files the test may break.
fs::path copy_fixture(const std::string& name, const std::string& tag) {
    const fs::path dst = test::process_scratch_dir() / ("model_" + tag);
    fs::remove_all(dst);
    fs::create_directories(dst);
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(kFixtures + name + "/" + f, dst / f);
    return dst;
}

void rewrite_weights(const fs::path& dir, const std::string& drop, const std::string& reshape) {
    SafetensorsFile file((dir / "model.safetensors").string());
    std::vector<Tensor> kept;
    std::vector<std::string> names;
    for (const TensorInfo& info : file.tensors()) {
        if (info.name == drop) continue;
        Tensor t = file.read(info.name);
        if (info.name == reshape) t = Tensor({t.numel()});
        kept.push_back(std::move(t));
        names.push_back(info.name);
    }
    std::vector<NamedTensor> named;
    for (size_t i = 0; i < kept.size(); ++i) named.push_back({names[i], &kept[i]});
    write_safetensors((dir / "model.safetensors").string(), named);
}

// retnet cost measures a RetNet against its twin; --json round-trips through --from.
TEST(Cli, CostJsonRoundTripsThroughFrom) {
    const CliRun r = run_cli("cost --model " + kFixtures + "fla_small --lengths 3,5 --batch 1,2 --decode-steps 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json report = nlohmann::json::parse(r.out);
    ASSERT_EQ(report["points"].size(), 8u);
    EXPECT_EQ(report["points"][0]["model"], "RetNet");
    EXPECT_EQ(report["points"][7]["model"], "Transformer");
    EXPECT_EQ(report["points"][7]["length"], 5);
    EXPECT_EQ(report["points"][7]["batch"], 2);
    EXPECT_EQ(report["weights"], "fp32");
    EXPECT_FALSE(report.contains("cancelled"));  // complete
    EXPECT_EQ(report["decode_steps"], 1);  // what a KV cache's size and the token streams depend on
    EXPECT_EQ(report["seed"], 1);
    const fs::path saved = fs::temp_directory_path() / ("retnet_cost_" + std::to_string(getpid()) + ".json");
    std::ofstream(saved) << r.out;
    const CliRun again = run_cli("cost --from " + saved.string() + " --json");
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(nlohmann::json::parse(again.out), report);
    // The report's tree is asked room for before it is built (a bad_alloc while it is built ended the
    // process with SIGABRT: the tree frees itself with allocations); --max-memory caps it too.
    expect_one_line_error(run_cli("cost --from " + saved.string() + " --max-memory 1K"),
                          "retnet cost: error: --from: " + saved.string() + ": a JSON document of ");
    const CliRun table = run_cli("cost --from " + saved.string());
    EXPECT_NE(table.out.find("Transformer"), std::string::npos) << table.out;
    EXPECT_EQ(table.out.rfind("cpu backend, fp32 weights; RetNet ", 0), 0u) << table.out;
    // Each memory column says what it is; the CPU measured no GPU memory, so that column is absent.
    EXPECT_NE(table.out.find("state / cache: the batch's RetNet states or KV caches, computed from the tokens they "
                             "hold\n"),
              std::string::npos)
        << table.out;
    EXPECT_EQ(table.out.find("GPU in use"), std::string::npos) << table.out;
    nlohmann::json on_gpu = report;
    for (nlohmann::json& point : on_gpu["points"]) point["device_bytes"] = int64_t(3) << 30;
    std::ofstream(saved) << on_gpu.dump();
    const CliRun gpu_table = run_cli("cost --from " + saved.string());
    EXPECT_NE(gpu_table.out.find("GPU in use\n"), std::string::npos) << gpu_table.out;
    EXPECT_NE(gpu_table.out.find("        3.0 GiB\n"), std::string::npos) << gpu_table.out;
    EXPECT_NE(gpu_table.out.find("; GPU in use: measured after the steps, the whole device's (other processes' too)\n"),
              std::string::npos)
        << gpu_table.out;
    // Text is kept as written through --from --json (before, it came back escaped, and escaped again
    // at each round); the table shows it escaped once.
    nlohmann::json noted = report;
    noted["device"] = "cpu \x1b[1mbold\x1b[0m";
    noted["points"][1] = {{"model", "RetNet"}, {"length", 9}, {"batch", 1}, {"out_of_memory", true},
                          {"note", "needs 9 TiB\nof \"memory\""}};
    std::ofstream(saved) << noted.dump();
    const CliRun noted_json = run_cli("cost --from " + saved.string() + " --json");
    ASSERT_EQ(noted_json.exit_code, 0) << noted_json.err;
    EXPECT_EQ(nlohmann::json::parse(noted_json.out), noted);
    const CliRun noted_table = run_cli("cost --from " + saved.string());
    EXPECT_EQ(noted_table.out.rfind("cpu \\x1b[1mbold\\x1b[0m backend, fp32 weights;", 0), 0u) << noted_table.out;
    EXPECT_NE(noted_table.out.find("   out of memory: needs 9 TiB\\nof \"memory\"\n"), std::string::npos) << noted_table.out;
    std::ofstream(saved) << "[]";  // before: the JSON library's words, "cannot use at() with array"
    expect_one_line_error(run_cli("cost --from " + saved.string()), ": it is [], not a report (a JSON object)");
    std::ofstream(saved) << R"({"device": "cpu", "points": []})";
    expect_one_line_error(run_cli("cost --from " + saved.string()), "is not a report of retnet cost --json");
    expect_one_line_error(run_cli("cost --from " + fs::temp_directory_path().string()),
                          "--from: " + fs::temp_directory_path().string() + ": is a directory, expected a regular file");
    // Values no report holds are named, never converted: before, 3e9 as a length wrapped to
    // -1294967296, 1e300 to INT_MIN, and a negative state size printed as 16 EiB.
    const auto with_point = [&](const std::string& field, const nlohmann::json& value) {
        nlohmann::json broken = report;
        broken["points"][0][field] = value;
        std::ofstream(saved) << broken.dump();
        return run_cli("cost --from " + saved.string());
    };
    expect_one_line_error(with_point("length", 3000000000LL), "field 'length' = 3000000000 is not an integer in [1, 2147483647]");
    expect_one_line_error(with_point("length", 1e300), "field 'length' = 1e+300 is not an integer in [1, 2147483647]");
    expect_one_line_error(with_point("batch", 0), "field 'batch' = 0 is not an integer in [1, 2147483647]");
    expect_one_line_error(with_point("state_bytes", -5), "field 'state_bytes' = -5 is not an integer in [0, ");
    expect_one_line_error(with_point("ms_per_step", -1.5), "field 'ms_per_step' = -1.5 is not a finite number >= 0");
    // Times a clock cannot give, a rate that is not the step's, a point twice: edited, refused
    // (before, 1e300 drew an empty panel and a second point of the same length and batch a zigzag).
    expect_one_line_error(with_point("ms_per_step", 1e300),
                          "field 'ms_per_step' = 1e+300 is not a time in milliseconds from 1e-06 (a nanosecond)");
    expect_one_line_error(with_point("prefill_ms", 1e-300), "field 'prefill_ms' = 1e-300 is not a time in milliseconds");
    expect_one_line_error(with_point("tokens_per_s", 1e300), "field 'tokens_per_s' = 1e+300 is not batch × 1000 / ms_per_step (");
    {
        nlohmann::json twice = report;
        twice["points"].push_back(twice["points"][0]);
        std::ofstream(saved) << twice.dump();
        const std::string p0 = report["points"][0]["model"].get<std::string>() + " at length " +
                               std::to_string(report["points"][0]["length"].get<int>()) + ", batch " +
                               std::to_string(report["points"][0]["batch"].get<int>());
        expect_one_line_error(run_cli("cost --from " + saved.string()), "two points of " + p0 + " (retnet cost measures each once)");
        twice["points"] = twice["points"][0];  // one point where the list goes
        std::ofstream(saved) << twice.dump();
        expect_one_line_error(run_cli("cost --from " + saved.string()), "field 'points' = {");
        twice["points"] = nlohmann::json::array({5});
        std::ofstream(saved) << twice.dump();
        expect_one_line_error(run_cli("cost --from " + saved.string()), "a point = 5 is not an object");
    }
    // The precision is one retnet cost writes, named when it is not (it is printed in the header).
    for (const nlohmann::json& weights : {nlohmann::json(5), nlohmann::json(nullptr), nlohmann::json("fp64; fake")}) {
        nlohmann::json broken = report;
        broken["weights"] = weights;
        std::ofstream(saved) << broken.dump();
        expect_one_line_error(run_cli("cost --from " + saved.string()),
                              "field 'weights' = " + weights.dump() + " is not fp32, bf16 or mixed");
    }
    // A field of the wrong type is named, not left to the JSON library's words.
    for (const auto& [field, value, expected] :
         std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
             {"cancelled", "yes", "field 'cancelled' = \"yes\" is not true or false"},
             {"device", 5, "field 'device' = 5 is not a string"},
             {"decode_steps", 0, "field 'decode_steps' = 0 is not an integer in [1, 100000]"},
             {"seed", -2, "field 'seed' = -2 is not an integer in [0, "},
             {"weights", std::string(100, 'x'), "field 'weights' = \"" + std::string(39, 'x') + "… is not fp32"}}) {
        nlohmann::json broken = report;
        broken[field] = value;
        std::ofstream(saved) << broken.dump();
        expect_one_line_error(run_cli("cost --from " + saved.string()), expected);
    }
    // What only a report cancelled before its first point lacks is refused beside points (before,
    // the header read " backend; RetNet 0 parameters").
    for (const auto& [field, value, expected] :
         std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
             {"device", "", "field 'device' is empty, in a report with points"},
             {"device", " \t", "field 'device' is empty, in a report with points"},
             {"weights", "", "field 'weights' is empty, in a report with points"},
             {"retnet_parameters", 0, "a parameter count is 0, in a report with points"},
             {"transformer_parameters", 0, "a parameter count is 0, in a report with points"}}) {
        nlohmann::json broken = report;
        broken[field] = value;
        std::ofstream(saved) << broken.dump();
        expect_one_line_error(run_cli("cost --from " + saved.string()), expected);
    }
    expect_one_line_error(with_point("out_of_memory", 1), "field 'out_of_memory' = 1 is not true or false");
    expect_one_line_error(with_point("model", nullptr), "field 'model' = null is not a string");
    nlohmann::json older = report;  // before 2026-12-05 a report had no precision: it still prints
    for (const char* field : {"weights", "decode_steps", "seed"}) older.erase(field);
    std::ofstream(saved) << older.dump();
    const CliRun older_table = run_cli("cost --from " + saved.string());
    EXPECT_EQ(older_table.exit_code, 0) << older_table.err;
    EXPECT_EQ(older_table.out.rfind("cpu backend; RetNet ", 0), 0u) << older_table.out;
    // A truncated report, a FIFO (nobody writes it: before, --from waited forever), a missing file.
    std::ofstream(saved) << r.out.substr(0, r.out.size() / 2);
    expect_one_line_error(run_cli("cost --from " + saved.string()), "is not a report of retnet cost --json (");
    fs::remove(saved);
    ASSERT_EQ(::mkfifo(saved.c_str(), 0600), 0);
    expect_one_line_error(run_cli("cost --from " + saved.string()), saved.string() + ": is a FIFO (named pipe), expected a regular file");
    fs::remove(saved);
    expect_one_line_error(run_cli("cost --from " + saved.string()), saved.string() + ": cannot open (No such file or directory)");
}

// convert names float32 fp32, as bench, cost and generate do; f32 (its first name, safetensors')
// still works. Another value is refused naming the choices.
TEST(Cli, ConvertTakesFp32AndItsOlderNameF32) {
    const fs::path out = fs::temp_directory_path() / ("retnet_convert_fp32_" + std::to_string(getpid()));
    for (const char* name : {"fp32", "f32"}) {
        fs::remove_all(out);
        const CliRun r = run_cli("convert --model " + kFixtures + "fla_small --out " + out.string() + " --dtype " + name);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out.rfind("wrote " + out.string() + " (fp32 weights, model.safetensors ", 0), 0u) << r.out;
        EXPECT_EQ(SafetensorsFile((out / "model.safetensors").string()).info("model.embeddings.weight").dtype, DType::F32);
    }
    expect_one_line_error(run_cli("convert --model " + kFixtures + "fla_small --out " + out.string() + " --dtype f16"),
                          "option --dtype must be one of bf16, fp32, got 'f16'");
    fs::remove_all(out);
}

// A bf16 checkpoint is held as stored (two bytes a matrix value) by the commands that compute with
// it, so the memory check counts it so: before, it was counted at float32 and refused under a limit
// it fits in. Converting weights (--dtype, the reference backend) holds both copies at its peak,
// which is refused in one line naming the conversion.
TEST(Cli, ABf16CheckpointIsCountedAtTheBytesItIsHeldIn) {
    const fs::path dir = fs::temp_directory_path() / ("retnet_bf16_memory_" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    // 10.0M parameters: 40 MB (38 MiB) as float32, half with bf16 matrices.
    std::ofstream(dir / "config.json") << R"({"model_type": "retnet", "hidden_size": 256, "num_heads": 2,
        "num_hidden_layers": 2, "expand_k": 1, "expand_v": 2, "intermediate_size": 512, "vocab_size": 16000})";
    ASSERT_EQ(run_cli("init --config " + (dir / "config.json").string() + " --out " + (dir / "fp32").string()).exit_code, 0);
    const CliRun converted = run_cli("convert --model " + (dir / "fp32").string() + " --out " + (dir / "bf16").string() +
                                     " --dtype bf16");
    ASSERT_EQ(converted.exit_code, 0) << converted.err;
    const std::string bf16 = " --model " + (dir / "bf16").string() + " --max-memory 30M";
    const CliRun info = run_cli("info" + bf16);
    EXPECT_EQ(info.exit_code, 0) << info.err;
    expect_one_line_error(run_cli("info --model " + (dir / "fp32").string() + " --max-memory 30M"),
                          "loading the weights of " + (dir / "fp32").string() + " needs 38 MiB, more than the memory limit of 30 MiB");
    for (const char* widening : {"bench --dtype fp32 --lengths 4 --batch 1", "compare --device reference --tokens 1,2,3"})
        expect_one_line_error(run_cli(std::string(widening) + bf16),
                              "widening the model's bf16 weights to float32 needs 57 MiB, more than the memory limit");
    // Narrowing makes a float32 copy first; cost makes or loads its twin beside the RetNet's weights
    // and converts a twin stored at another precision (before, none of these was counted).
    expect_one_line_error(run_cli("bench --dtype bf16 --lengths 4 --repeats 1 --model " + (dir / "fp32").string() +
                                  " --max-memory 60M"),
                          "narrowing the model's weights to bf16 needs 77 MiB, more than the memory limit of 60 MiB");
    ASSERT_EQ(run_cli("init --arch transformer --like " + (dir / "fp32").string() + " --out " + (dir / "twin").string())
                  .exit_code,
              0);
    const std::string cost = "cost --lengths 4 --batch 1 --decode-steps 1 --model " + (dir / "bf16").string();
    expect_one_line_error(run_cli(cost + " --max-memory 39M"),
                          "the Transformer twin (beside the RetNet's 19 MiB of weights) needs 58 MiB, more than the "
                          "memory limit of 39 MiB");
    const std::string with_twin = cost + " --transformer " + (dir / "twin").string();
    expect_one_line_error(run_cli(with_twin + " --max-memory 39M"),
                          "loading the weights of " + (dir / "twin").string() +
                              " (beside the 19 MiB of weights already held) needs 58 MiB, more than the memory limit");
    expect_one_line_error(run_cli(with_twin + " --max-memory 80M"),
                          "the Transformer twin converted to bf16 (beside the RetNet's 19 MiB of weights) needs 96 MiB");
    const CliRun fits = run_cli(cost + " --max-memory 80M");
    EXPECT_EQ(fits.exit_code, 0) << fits.err;
    // A forward's working memory (47 MiB here) comes beside the weights: before, it was checked alone,
    // and passed a limit with 38 MiB of weights beside it. The bf16 copy leaves room for it.
    std::string tokens = "0";
    for (int i = 1; i < 500; ++i) tokens.append(",").append(std::to_string(i));
    const std::string prompt = " --tokens " + tokens + " -n 2 --max-memory 70M --model ";
    expect_one_line_error(run_cli("generate" + prompt + (dir / "fp32").string()),
                          "the parallel form over a prompt of 500 tokens beside the model's 38 MiB of weights needs 85 "
                          "MiB, more than the memory limit of 70 MiB");
    const CliRun bf16_prompt = run_cli("generate" + prompt + (dir / "bf16").string());
    EXPECT_EQ(bf16_prompt.exit_code, 0) << bf16_prompt.err;
    fs::remove_all(dir);
}

// '-' means standard output to the commands that write files; where --out names a directory it
// is refused in one line (before: a directory named '-' was made in the current one).
TEST(Cli, DashAsAnOutputDirectoryIsRefused) {
    for (const char* command : {"convert --model m", "init --config c.json", "train --data d.txt"}) {
        const CliRun r = run_cli(std::string(command) + " --out -");
        expect_one_line_error(r, "--out: '-' is standard output, not a directory");
    }
}

// The cost table's columns are as wide as their widest cell: a 10-digit length, a 6-digit batch and
// a slow point's 7-digit prefill stay under their headers (before, fixed widths of 8, 6 and 12
// pushed such a row's later cells to the right). Usual values keep the usual widths.
TEST(Cli, CostTableColumnsFitTheirContent) {
    const nlohmann::json point = {{"model", "RetNet"}, {"length", 1024}, {"batch", 1}, {"out_of_memory", false},
                                  {"prefill_ms", 12.5}, {"ms_per_step", 0.25}, {"tokens_per_s", 4000.0},
                                  {"state_bytes", 65536}};
    nlohmann::json report = {{"device", "cpu"}, {"retnet_parameters", 1000}, {"transformer_parameters", 1000},
                             {"points", nlohmann::json::array({point})}};
    nlohmann::json wide = point;
    wide["model"] = "Transformer";
    wide["length"] = 2147483647;
    wide["batch"] = 100000;
    wide["prefill_ms"] = 1234567.0;
    wide["tokens_per_s"] = 100000 * 1000.0 / 0.25;  // the batch's rate at the same step
    report["points"].push_back(wide);
    report["points"].push_back({{"model", "Transformer"}, {"length", 2147483647}, {"batch", 1},
                                {"out_of_memory", true}, {"note", "needs 9 TiB"}});
    const fs::path saved = fs::temp_directory_path() / ("retnet_cost_table_" + std::to_string(getpid()) + ".json");
    std::ofstream(saved) << report.dump();
    const CliRun table = run_cli("cost --from " + saved.string());
    fs::remove(saved);
    ASSERT_EQ(table.exit_code, 0) << table.err;
    std::vector<std::string> lines;
    std::istringstream in(table.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    ASSERT_GE(lines.size(), 5u) << table.out;
    const std::string& header = lines[1];
    // Each header ends where its column's cells end (right-aligned), in every row.
    const std::vector<std::pair<std::string, std::vector<std::string>>> columns = {
        {"length", {"1024", "2147483647", "2147483647"}},
        {"batch", {"1", "100000", "1"}},
        {"prefill ms", {"12.50", "1234567.00"}},
        {"state / cache", {"64 KiB", "64 KiB"}},
    };
    for (const auto& [name, cells] : columns) {
        const size_t end = header.find(name) + name.size();
        for (size_t r = 0; r < cells.size(); ++r)
            EXPECT_EQ(lines[2 + r].substr(end - cells[r].size() - 1, cells[r].size() + 1), " " + cells[r])
                << name << " in\n" << table.out;
    }
    EXPECT_EQ(lines[2].size(), header.size()) << table.out;
    EXPECT_EQ(lines[3].size(), header.size()) << table.out;
    EXPECT_NE(lines[4].find("   out of memory: needs 9 TiB"), std::string::npos) << table.out;
    // Text from the report is shown escaped: no terminal control sequence, no extra line.
    report["device"] = "cpu\x1b[31mRED\nx";
    report["points"][0]["model"] = "Ret\x1bNet";
    std::ofstream(saved) << report.dump();
    const CliRun escaped = run_cli("cost --from " + saved.string());
    fs::remove(saved);
    EXPECT_EQ(escaped.out.find('\x1b'), std::string::npos) << escaped.out;
    EXPECT_EQ(escaped.out.substr(0, escaped.out.find("medians")).find('\n'), std::string::npos) << escaped.out;
    // Usual values: the usual widths (model 12, length 8, batch 6, then 12, 11, 13 and 14).
    report["points"] = nlohmann::json::array({point});  // not {point}: one element may copy instead
    std::ofstream(saved) << report.dump();
    const CliRun usual = run_cli("cost --from " + saved.string());
    fs::remove(saved);
    EXPECT_NE(usual.out.find("\nmodel          length  batch   prefill ms   ms / step    tokens / s  state / cache\n"
                             "RetNet           1024      1        12.50       0.250        4000.0         64 KiB\n"),
              std::string::npos)
        << usual.out;
}

// --plot onto a folder that cannot take the picture (/proc: no file can be made there) or onto a
// FIFO is refused before anything is measured: one line, no table (before: the table, then the
// error, after what may be minutes of measuring).
TEST(Cli, CostPlotThatCannotBeWrittenIsRefusedBeforeMeasuring) {
    const std::string cost = "cost --model " + kFixtures + "fla_small --lengths 3 --batch 1 --decode-steps 1 --plot ";
    // An empty name was taken for no --plot at all: the table, and no picture without a word.
    expect_one_line_error(run_cli(cost + "''"), "option --plot is empty (name the PNG to draw, or leave it out)");
    const fs::path fifo = fs::temp_directory_path() / ("retnet_cost_plot_" + std::to_string(getpid()) + ".png");
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const CliRun into_fifo = run_cli(cost + fifo.string());
    fs::remove(fifo);
    if (into_fifo.err.find("needs the Qt build") != std::string::npos) GTEST_SKIP() << "no --plot in this build";
    expect_one_line_error(into_fifo, "--plot " + fifo.string() + " is not a regular file (a device or FIFO); choose a file name");
    EXPECT_EQ(into_fifo.out, "");
    const CliRun into_proc = run_cli(cost + "/proc/cost.png");
    expect_one_line_error(into_proc, "retnet cost: error: --plot /proc/cost.png: cannot write in /proc (");
    EXPECT_EQ(into_proc.out, "");
    // A link to nothing has nothing for the picture to replace (the writer refused it after the table).
    const fs::path dangling = fs::temp_directory_path() / ("retnet_cost_link_" + std::to_string(getpid()) + ".png");
    fs::create_symlink(fs::temp_directory_path() / "retnet_no_such_file.png", dangling);
    const CliRun into_nothing = run_cli(cost + dangling.string());
    fs::remove(dangling);
    expect_one_line_error(into_nothing, "--plot " + dangling.string() + " is a symbolic link to nothing (" +
                                            (fs::temp_directory_path() / "retnet_no_such_file.png").string() +
                                            "); name a file, or a link to one");
    EXPECT_EQ(into_nothing.out, "");
}

// bench on a Transformer twin reports its KV cache, which grows with the context.
TEST(Cli, BenchReportsTheTwinsGrowingCache) {
    const CliRun r = run_cli("bench --model " + kFixtures + "llama_small --mode decode --batch 2 --contexts 4,20 "
                             "--decode-steps 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json report = nlohmann::json::parse(r.out);
    ASSERT_EQ(report["decode"].size(), 2u);
    EXPECT_EQ(report["family"], "llama");  // its format, not the RetNet family its config defaults to
    EXPECT_EQ(report["decode_steps"], 1);
    EXPECT_FALSE(report.contains("repeats"));  // a prefill option: no prefill was timed
    // llama_small: 2 layers, d 32 → 2·2·32·4 = 512 bytes a token, for context + 1 + 4 warm-up tokens
    EXPECT_EQ(report["decode"][0]["state_bytes"], 2 * 512 * (4 + 1 + 4));
    EXPECT_EQ(report["decode"][1]["state_bytes"], 2 * 512 * (20 + 1 + 4));
    EXPECT_FALSE(report["decode"][0].contains("device_ms_per_step"));  // the CPU has no device clock
    // what a step moves: the cache of its median step read (context + 4 warm-up + 0 of the one timed step)
    // and one token's row written, twice for the batch of 2; the weights the same at both contexts
    EXPECT_EQ(report["decode"][0]["step_state_bytes"], 2 * 512 * (4 + 4 + 1));
    EXPECT_EQ(report["decode"][1]["step_state_bytes"], 2 * 512 * (20 + 4 + 1));
    EXPECT_EQ(report["decode"][0]["step_weight_bytes"], report["decode"][1]["step_weight_bytes"]);
    EXPECT_GT(report["decode"][0]["step_weight_bytes"].get<int64_t>(), 0);
    for (const auto& row : report["decode"]) {
        EXPECT_EQ(row["step_bytes"], row["step_weight_bytes"].get<int64_t>() + row["step_state_bytes"].get<int64_t>());
        EXPECT_NEAR(row["gb_per_s"].get<double>(), row["step_bytes"].get<double>() / (row["ms_per_step"].get<double>() * 1e6),
                    1e-9 * row["gb_per_s"].get<double>());
        EXPECT_FALSE(row.contains("device_gb_per_s"));
    }
}

// A batch the device cannot hold (the reference backend keeps one state) is refused before any
// timing: it was said after every prefill had run (minutes with the default lengths).
TEST(Cli, BenchRefusesABatchTheDeviceCannotHoldBeforeTiming) {
    const CliRun r = run_cli("bench --model " + kFixtures + "fla_small --device reference --batch 1,2 --lengths 3");
    expect_one_line_error(r, "retnet bench: error: --batch 2: the reference backend decodes at most 1 sequence at "
                             "once; use --device cpu or cuda for batches");
    EXPECT_EQ(r.out, "");
    const CliRun cost = run_cli("cost --model " + kFixtures + "fla_small --device reference --batch 1,2 --lengths 3");
    expect_one_line_error(cost, "retnet cost: error: --batch 2: the reference backend decodes at most 1 sequence at once");
    EXPECT_EQ(cost.out, "");
}

// A list option names each measurement once: a repeated value is refused, not measured again.
TEST(Cli, ListOptionsRefuseARepeatedValue) {
    expect_one_line_error(run_cli("bench --model " + kFixtures + "fla_small --lengths 3,5,3"),
                          "retnet bench: error: --lengths lists 3 twice");
    expect_one_line_error(run_cli("cost --model " + kFixtures + "fla_small --batch 1,1 --lengths 3"),
                          "retnet cost: error: --batch lists 1 twice");
    // leading zeros neither make a value large nor hide a repeat
    expect_one_line_error(run_cli("bench --model " + kFixtures + "fla_small --lengths 00000000003,3"),
                          "retnet bench: error: --lengths lists 3 twice");
    expect_one_line_error(run_cli("bench --model " + kFixtures + "fla_small --batch 0003000000000"),
                          "retnet bench: error: --batch value 0003000000000 is out of range (at most 2147483647)");
}

// An option that the chosen --mode never reads is refused before the load, not silently ignored
// (`--mode prefill --best-logits 5` used to run and print a table that did not use it).
TEST(Cli, BenchRefusesOptionsItsModeDoesNotRead) {
    const std::string bench = "bench --model " + kFixtures + "fla_small ";
    const std::string decode_only = "applies to --mode all or decode", timed = "applies to --mode all, prefill or kernels";
    const std::vector<std::pair<std::string, std::string>> refused{
        {"--mode prefill --best-logits 5", "option --best-logits " + decode_only + ", not --mode prefill"},
        {"--mode kernels --decode-steps 4", "option --decode-steps " + decode_only + ", not --mode kernels"},
        {"--mode prefill --contexts 8", "option --contexts " + decode_only + ", not --mode prefill"},
        {"--mode decode --lengths 8", "option --lengths " + timed + ", not --mode decode"},
        {"--mode decode --repeats 2", "option --repeats " + timed + ", not --mode decode"},
        {"--mode prefill --batch 2", "option --batch applies to --mode all, decode or kernels, not --mode prefill"},
        // the kernels time random q, k, v on the GPU: a CPU device and the model's edits are refused before the load
        {"--mode kernels", "--mode kernels times the CUDA retention kernels: use --device cuda or cuda-bf16"},
        {"--mode kernels --device cuda --mute 0.0",
         "option --mute applies to --mode all, prefill or decode, not --mode kernels"},
    };
    for (const auto& [args, message] : refused) expect_one_line_error(run_cli(bench + args), "retnet bench: error: " + message);
    // what each mode reads is taken (the chunk size by every mode)
    const CliRun decode = run_cli(bench + "--mode decode --batch 2 --contexts 4 --decode-steps 2 --best-logits 3 --chunk-size 2 --json");
    EXPECT_EQ(decode.exit_code, 0) << decode.err;
    const CliRun prefill = run_cli(bench + "--mode prefill --lengths 3 --repeats 1 --chunk-size 2 --json");
    EXPECT_EQ(prefill.exit_code, 0) << prefill.err;
}

// The reference backend computes in double from float32 weights: --dtype bf16 there is refused
// before the load, not dropped (it printed "fp32 weights (--dtype bf16)").
TEST(Cli, Bf16OnTheReferenceBackendIsRefused) {
    for (const char* command : {"bench", "cost"})
        expect_one_line_error(
            run_cli(std::string(command) + " --model " + kFixtures + "fla_small --device reference --dtype bf16"),
            "retnet " + std::string(command) + ": error: --dtype bf16 with --device reference: the reference backend "
            "computes in double from float32 weights; use --device cpu or cuda for bf16");
}

// cost --from prints a saved report: options of a measurement beside it are refused, not ignored;
// an empty --transformer is a mistake, not a request for the random twin.
TEST(Cli, CostRefusesMeasuringOptionsWithFromAndAnEmptyTransformer) {
    expect_one_line_error(run_cli("cost --from report.json --lengths 5"),
                          "retnet cost: error: --lengths is for a measurement, and --from measures nothing");
    expect_one_line_error(run_cli("cost --from report.json --model " + kFixtures + "fla_small"),
                          "retnet cost: error: --model is for a measurement");
    expect_one_line_error(run_cli("cost --from ''"), "retnet cost: error: option --from is empty");
    expect_one_line_error(run_cli("cost --transformer ''"),
                          "retnet cost: error: option --transformer is empty (leave it out for a random twin of the model)");
}

TEST(Cli, LogitsWritesTheNpyOfTheRequestedShape) {
    const std::string out = (test::process_scratch_dir() / "logits.npy").string();
    const CliRun r = run_cli("logits --model " + kFixtures + "fla_small --tokens 3,1,4,1,5 --mode chunkwise --chunk-size 2 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Tensor t = read_npy(out);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{5, 97}));
}

TEST(Cli, CompareJsonReportsThePairsAndTheirVerdicts) {
    const CliRun r = run_cli("compare --model " + kFixtures + "ts_eps_sensitive --tokens 1,2,3,4,5,6,7,8,9,10,11 --chunk-size 4 --head-norm-eps 0 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"passed\": true"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"per_layer_max_abs\""), std::string::npos);
    const CliRun with_eps = run_cli("compare --model " + kFixtures + "ts_eps_sensitive --tokens 1,2,3,4,5,6,7,8,9,10,11 --chunk-size 4");
    ASSERT_EQ(with_eps.exit_code, 0);
    EXPECT_NE(with_eps.out.find("FAIL"), std::string::npos) << with_eps.out;
}

TEST(Cli, InfoPrintsFamilyAndStateSize) {
    const CliRun r = run_cli("info --model " + kFixtures + "ts_small");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("torchscale"), std::string::npos);
    EXPECT_NE(r.out.find("6.0 KiB"), std::string::npos) << r.out;  // 2 layers × 2 heads × 16 × 24 × 4 B
}

TEST(Cli, InspectJsonHasTheScoresOfTheChosenHead) {
    const CliRun r = run_cli("inspect --model " + kFixtures + "fla_small --tokens 1,2,3 --layer 1 --head 1 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"scores\":[["), std::string::npos);
    EXPECT_NE(r.out.find("\"state_norms\""), std::string::npos);
    // The head's reach is retention_reach of the printed scores with that head's γ.
    const auto j = nlohmann::json::parse(r.out);
    std::vector<float> scores;
    for (const auto& row : j.at("scores"))
        for (const auto& x : row) scores.push_back(x.get<float>());
    const HeadReach expected = retention_reach(scores, 3, j.at("decay")[1].at("gamma").get<double>());
    EXPECT_EQ(j.at("reach").at("queries").get<int>(), expected.queries);
    EXPECT_NEAR(j["reach"].at("mean_distance").get<double>(), expected.mean_distance, 1e-12);
    EXPECT_NEAR(j["reach"].at("decay_only_distance").get<double>(), expected.decay_only_distance, 1e-12);
    EXPECT_GT(expected.decay_only_distance, 0.0);
}

TEST(Cli, InterventionsChangeTheModelTheCommandsRun) {
    const std::string base = "inspect --model " + kFixtures + "fla_small --tokens 1,2,3 --json";
    const CliRun plain = run_cli(base);
    const CliRun edited = run_cli(base + " --gamma 0=0.5 --mute 1.1");
    ASSERT_EQ(edited.exit_code, 0) << edited.err;
    EXPECT_NE(edited.err.find("retnet: interventions: mute 1.1; gamma 0=0.5"), std::string::npos) << edited.err;
    const auto j = nlohmann::json::parse(edited.out), p = nlohmann::json::parse(plain.out);
    EXPECT_NEAR(j.at("decay")[0].at("gamma").get<double>(), 0.5, 1e-7);  // stored as float log γ
    EXPECT_EQ(j["decay"][1], p.at("decay")[1]);
    // Layer 1, head 1 is muted, not silenced: its scores are still computed and unchanged.
    const CliRun head = run_cli("inspect --model " + kFixtures + "fla_small --tokens 1,2,3 --layer 1 --head 1 --json --mute 1.1");
    const CliRun head_plain = run_cli("inspect --model " + kFixtures + "fla_small --tokens 1,2,3 --layer 1 --head 1 --json");
    EXPECT_EQ(nlohmann::json::parse(head.out).at("scores"), nlohmann::json::parse(head_plain.out).at("scores"));
    // generate reads the same options: a muted layer changes the greedy continuation's logits.
    const CliRun g0 = run_cli("generate --model " + kFixtures + "fla_small --tokens 1,2,3 --greedy --max-new-tokens 4 --json");
    const CliRun g1 = run_cli("generate --model " + kFixtures + "fla_small --tokens 1,2,3 --greedy --max-new-tokens 4 --json --mute 0.0,0.1,1.0,1.1");
    ASSERT_EQ(g1.exit_code, 0) << g1.err;
    EXPECT_NE(g0.out, g1.out);

    expect_one_line_error(run_cli(base + " --mute 9.0"), "cannot mute layer 9");
    expect_one_line_error(run_cli(base + " --gamma 0=2"), "gamma must be in (0, 1]");
    expect_one_line_error(run_cli(base + " --mute 1"), "expected layer.head");
}

TEST(Cli, InspectLensReadsEveryLayerAtEveryPosition) {
    const CliRun r = run_cli("inspect --model " + kFixtures + "fla_small --tokens 1,2,3,4 --lens --lens-top 3 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    const auto& lens = j.at("lens");
    ASSERT_EQ(lens.size(), 2u);  // layers
    for (const auto& layer : lens) {
        ASSERT_EQ(layer.size(), 4u);  // positions
        for (size_t t = 0; t < 4; ++t) {
            ASSERT_EQ(layer[t].at("top").size(), 3u);
            EXPECT_GE(layer[t]["top"][0]["p"].get<double>(), layer[t]["top"][2]["p"].get<double>());
            EXPECT_EQ(layer[t].at("p_next").is_null(), t == 3);  // nothing follows the last token
        }
    }
}

TEST(CliErrors, MissingModelDirectory) {
    expect_one_line_error(run_cli("info --model /nonexistent/model"), "config.json");
}

TEST(CliErrors, ConfigIsNotJson) {
    const fs::path dir = copy_fixture("fla_small", "badjson");
    std::ofstream(dir / "config.json") << "{ \"hidden_size\": 32,";
    expect_one_line_error(run_cli("info --model " + dir.string()), "config.json");
}

TEST(CliErrors, UnknownFamily) {
    const fs::path dir = copy_fixture("fla_small", "family");
    std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\", \"hidden_size\": 32}";
    expect_one_line_error(run_cli("info --model " + dir.string()), "config.json");
}

TEST(CliErrors, MissingTensor) {
    const fs::path dir = copy_fixture("fla_small", "missing");
    rewrite_weights(dir, "model.layers.1.attn.k_proj.weight", "");
    expect_one_line_error(run_cli("info --model " + dir.string()), "model.layers.1.attn.k_proj.weight");
}

TEST(CliErrors, MisshapenTensor) {
    const fs::path dir = copy_fixture("ts_small", "shape");
    rewrite_weights(dir, "", "layers.0.retention.q_proj.weight");
    expect_one_line_error(run_cli("info --model " + dir.string()), "layers.0.retention.q_proj.weight");
}

TEST(CliErrors, TruncatedWeights) {
    const fs::path dir = copy_fixture("fla_small", "truncated");
    fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") / 2);
    expect_one_line_error(run_cli("info --model " + dir.string()), "model.safetensors");
}

TEST(CliErrors, BadOptions) {
    const std::string model = "--model " + kFixtures + "fla_small ";
    expect_one_line_error(run_cli("logits " + model + "--tokens 1,2 --mode sideways --out /tmp/x.npy"), "unknown mode");
    expect_one_line_error(run_cli("logits " + model + "--tokens 1,x --out /tmp/x.npy"), "bad token list");
    expect_one_line_error(run_cli("logits " + model + "--tokens 1,97 --out /tmp/x.npy"), "outside the vocabulary");
    // beyond int32 (before: "is not an integer id")
    expect_one_line_error(run_cli("logits " + model + "--tokens 1,99999999999 --out /tmp/x.npy"),
                          "'99999999999' is outside the vocabulary");
    expect_one_line_error(run_cli("logits " + model + "--tokens -99999999999 --out /tmp/x.npy"), "outside the vocabulary");
    expect_one_line_error(run_cli("logits " + model + "--tokens 1,2 --mode chunkwise --chunk-size 0 --out /tmp/x.npy"), "chunk-size");
    expect_one_line_error(run_cli("info " + model + "--bogus 1"), "unknown option --bogus");
    expect_one_line_error(run_cli("inspect " + model + "--tokens 1 --layer 9"), "--layer 9");
    expect_one_line_error(run_cli("logits " + model + "--tokens 1 --device tpu --out /tmp/x.npy"), "unknown device 'tpu'");
}

}  // namespace
}  // namespace retnet
