// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet init --arch transformer` and the commands that run the twin it writes (the built CLI).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "retnet/model.h"

namespace retnet {
namespace {

namespace fs = std::filesystem;

const std::string kDefaultModel = std::string(RETNET_TEST_DATA_DIR) + "/../../resources/models/default";

using test::CliRun;
using test::run_cli;
using test::slurp;

class TwinCli : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("retnet_twin_cli_" + std::to_string(getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    fs::path dir_;
};

TEST_F(TwinCli, InitWritesTheTwinOfTheDefaultModelAndGenerateRunsIt) {
    const CliRun init = run_cli("init --arch transformer --like " + kDefaultModel + " --out " + path("twin") + " --seed 4");
    ASSERT_EQ(init.exit_code, 0) << init.err;
    EXPECT_NE(init.err.find("llama model, 12.20M parameters"), std::string::npos) << init.err;
    const nlohmann::json config = nlohmann::json::parse(slurp(path("twin") + "/config.json"));
    EXPECT_EQ(config["model_type"], "llama");
    EXPECT_EQ(config["hidden_size"], 384);
    EXPECT_EQ(config["num_attention_heads"], 6);
    EXPECT_EQ(config["intermediate_size"], 1216);  // 704 + (2·384 + 3·768 − 4·384)/3
    EXPECT_TRUE(fs::is_regular_file(path("twin") + "/tokenizer.model"));
    const Model twin = load_model(path("twin")), retnet = load_model(kDefaultModel);
    EXPECT_LE(std::abs(twin.parameter_count() - retnet.parameter_count()), 6 * 128);  // RetNet's head norms (Dv a layer)

    const CliRun generated = run_cli("generate --model " + path("twin") + " --prompt ROMEO: -n 6 --device cpu --json");
    ASSERT_EQ(generated.exit_code, 0) << generated.err;
    EXPECT_NE(generated.out.find("\"generated_tokens\":6"), std::string::npos) << generated.out;

    // eval runs the twin in windows (the trainer's forward) or as one stream (the inference backend).
    std::ofstream(path("text.txt")) << "To be, or not to be, that is the question.\n";
    const CliRun windows = run_cli("eval --model " + path("twin") + " --text " + path("text.txt"));
    const CliRun stream = run_cli("eval --model " + path("twin") + " --text " + path("text.txt") + " --stream");
    ASSERT_EQ(windows.exit_code, 0) << windows.err;
    ASSERT_EQ(stream.exit_code, 0) << stream.err;
    const auto bits = [](const std::string& out) { return out.substr(out.find("bits per char")); };
    // One window holds the whole text: the same tokens, two float computations (~1e-7 relative).
    EXPECT_EQ(bits(windows.out), bits(stream.out));

    const CliRun info = run_cli("info --model " + path("twin") + " --context 1000");
    ASSERT_EQ(info.exit_code, 0) << info.err;
    EXPECT_NE(info.out.find("family       llama"), std::string::npos) << info.out;
    // L·2·d·4 = 6·2·384·4 bytes a token; the RetNet's info names the same number for its twin.
    EXPECT_NE(info.out.find("KV cache     18 KiB per token"), std::string::npos) << info.out;
    EXPECT_NE(run_cli("info --model " + kDefaultModel).out.find("needs 18 KiB per token"), std::string::npos);

    // From the RetNet's config file, the same twin (the same seed, the same weights).
    const CliRun from_config = run_cli("init --arch transformer --config " + kDefaultModel + "/config.json --out " +
                                   path("twin2") + " --seed 4");
    ASSERT_EQ(from_config.exit_code, 0) << from_config.err;
    EXPECT_EQ(slurp(path("twin2") + "/model.safetensors"), slurp(path("twin") + "/model.safetensors"));
    // A Llama config initializes as it is.
    const CliRun llama = run_cli("init --arch transformer --config " + path("twin") + "/config.json --out " + path("twin3"));
    ASSERT_EQ(llama.exit_code, 0) << llama.err;
    EXPECT_EQ(slurp(path("twin3") + "/config.json"), slurp(path("twin") + "/config.json"));
}

TEST_F(TwinCli, BadRequestsFailInOneLine) {
    const auto one_line = [&](const std::string& arguments, const std::string& needle) {
        const CliRun r = run_cli(arguments);
        EXPECT_NE(r.exit_code, 0) << arguments;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
        EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    };
    one_line("init --arch transformer --out " + path("x"), "give either --config FILE or --like DIR");
    one_line("init --arch mamba --like " + kDefaultModel + " --out " + path("x"),
             "option --arch must be one of retnet, transformer, got 'mamba'");
    ASSERT_EQ(run_cli("init --arch transformer --like " + kDefaultModel + " --out " + path("twin")).exit_code, 0);
    one_line("init --config " + path("twin") + "/config.json --out " + path("x"),
             "describes a Llama Transformer; add --arch transformer");
    // A Llama config trains with --arch transformer only; the twin's attention has no chunkwise form.
    const std::string train = "train --data " + kDefaultModel + "/README.md --tokenizer " + path("twin") +
                              "/tokenizer.model --out " + path("t") + " --steps 1 --config ";
    one_line(train + path("twin") + "/config.json", "describes a Llama Transformer; add --arch transformer");
    one_line(train + kDefaultModel + "/config.json --arch transformer --chunk 64",
             "--chunk applies to the RetNet's retention; the Transformer twin's attention has one form");
    one_line(train + kDefaultModel + "/config.json --arch mamba", "option --arch must be one of retnet, transformer");
    one_line("inspect --model " + path("twin") + " --tokens 1,2,3 --json", "the Transformer twin has no retention");
    one_line("logits --model " + path("twin") + " --tokens 1,2 --gamma 0=0.5 --out " + path("l.npy"),
             "cannot set a head's decay: the Transformer twin has none");
}

// cost runs both models at the RetNet's precision: the default model's matrices are bf16, so its
// twin's are too (random, or a float32 --transformer narrowed), and --dtype fp32 widens both. Before,
// a bf16 RetNet was timed against a float32 twin that read twice the bytes a step.
TEST_F(TwinCli, CostRunsTheTwinAtTheRetNetsPrecision) {
    ASSERT_EQ(run_cli("init --arch transformer --like " + kDefaultModel + " --out " + path("twin")).exit_code, 0);
    const Model written = load_model(path("twin"));
    ASSERT_TRUE(written.all_f32());
    const std::string cost = "cost --model " + kDefaultModel + " --lengths 2 --batch 1 --decode-steps 1 --json";
    for (const auto& [options, weights] : std::vector<std::pair<std::string, std::string>>{
             {"", "bf16"}, {" --transformer " + path("twin"), "bf16"}, {" --dtype fp32", "fp32"}}) {
        const CliRun r = run_cli(cost + options);
        ASSERT_EQ(r.exit_code, 0) << options << ": " << r.err;
        EXPECT_EQ(nlohmann::json::parse(r.out)["weights"], weights) << options;
    }
}

// cost compares same-size models: against a Transformer of another size it warns in one line that
// names both counts and their relative difference, and measures all the same; the twin init makes
// (1.6 % smaller: the FFN width rounded to 8) gets no warning. The report records both counts.
TEST_F(TwinCli, CostWarnsWhenTheTransformerIsNotTheModelsSize) {
    const std::string fla_small = std::string(RETNET_TEST_DATA_DIR) + "/reference/fla_small/config.json";
    ASSERT_EQ(run_cli("init --config " + fla_small + " --out " + path("retnet")).exit_code, 0);
    ASSERT_EQ(run_cli("init --arch transformer --like " + path("retnet") + " --out " + path("twin")).exit_code, 0);
    nlohmann::json llama = nlohmann::json::parse(slurp(path("twin") + "/config.json"));
    llama["intermediate_size"] = 8;  // the twin's is 104
    std::ofstream(path("llama.json")) << llama.dump();
    ASSERT_EQ(run_cli("init --arch transformer --config " + path("llama.json") + " --out " + path("small")).exit_code, 0);
    const std::string cost = "cost --model " + path("retnet") + " --lengths 2 --batch 1 --decode-steps 1 --json --transformer ";

    const CliRun twin = run_cli(cost + path("twin"));
    ASSERT_EQ(twin.exit_code, 0) << twin.err;
    EXPECT_EQ(twin.err.find("warning"), std::string::npos) << twin.err;
    EXPECT_EQ(nlohmann::json::parse(twin.out)["transformer_parameters"], 34528);

    const CliRun small = run_cli(cost + path("small"));
    ASSERT_EQ(small.exit_code, 0) << small.err;
    // fla_small: 35,104 values; the small Llama 16,096 (FFN 3·8·32 a layer instead of 3·104·32).
    const std::string warning = "retnet cost: warning: the Transformer has 16096 parameters and the RetNet 35104 "
                                "(-54.1 %), more than the 5.0 % two models of the same size may differ by: this does "
                                "not compare same-size models\n";
    EXPECT_EQ(small.err.rfind(warning, 0), 0u) << small.err;  // first, before the progress lines
    EXPECT_EQ(small.err.find("warning", warning.size()), std::string::npos) << "one warning: " << small.err;
    const nlohmann::json report = nlohmann::json::parse(small.out);
    EXPECT_EQ(report["retnet_parameters"], 35104);
    EXPECT_EQ(report["transformer_parameters"], 16096);
    ASSERT_EQ(report["points"].size(), 2u);
    EXPECT_EQ(report["points"][1]["model"], "Transformer");
    EXPECT_GT(report["points"][1]["ms_per_step"].get<double>(), 0.0);

    // Another vocabulary: one line naming both, no size warning before it (it had been the first
    // of two lines). A RetNet as --transformer: named as one, with how to make its twin.
    llama = nlohmann::json::parse(slurp(path("twin") + "/config.json"));
    llama["vocab_size"] = llama["vocab_size"].get<int>() + 100;
    std::ofstream(path("llama_vocab.json")) << llama.dump();
    ASSERT_EQ(run_cli("init --arch transformer --config " + path("llama_vocab.json") + " --out " + path("vocab")).exit_code, 0);
    const CliRun vocab = run_cli(cost + path("vocab"));
    EXPECT_EQ(vocab.exit_code, 1);
    EXPECT_EQ(vocab.err, "retnet cost: error: --transformer " + path("vocab") + " has a vocabulary of " +
                             std::to_string(llama["vocab_size"].get<int>()) + " tokens and --model one of " +
                             std::to_string(llama["vocab_size"].get<int>() - 100) +
                             "; both run on the same token streams, so they need the same vocabulary\n");
    EXPECT_EQ(vocab.out, "");
    const CliRun retnet = run_cli(cost + path("retnet"));
    EXPECT_EQ(retnet.exit_code, 1);
    EXPECT_EQ(retnet.err, "retnet cost: error: --transformer " + path("retnet") +
                              " is not a Llama-format Transformer (it is a RetNet; make its twin with retnet init "
                              "--arch transformer --like DIR)\n");
}

// init writes a new model: it never replaces what a directory holds (a trained model, the --like
// model itself), and a failure leaves no directory behind.
TEST_F(TwinCli, InitNeverOverwritesADirectoryThatHoldsSomething) {
    fs::copy(kDefaultModel, path("model"), fs::copy_options::recursive);
    const std::string weights = slurp(path("model") + "/model.safetensors");
    for (const std::string& like : {kDefaultModel, path("model")}) {
        const CliRun r = run_cli("init --arch transformer --like " + like + " --out " + path("model"));
        EXPECT_EQ(r.exit_code, 1);
        EXPECT_NE(r.err.find("--out " + path("model") + " is not empty (it holds "), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    EXPECT_EQ(slurp(path("model") + "/model.safetensors"), weights);
    EXPECT_EQ(nlohmann::json::parse(slurp(path("model") + "/config.json"))["model_type"], "retnet");

    std::ofstream(path("file")) << "x";
    const CliRun file = run_cli("init --arch transformer --like " + kDefaultModel + " --out " + path("file"));
    EXPECT_EQ(file.exit_code, 1);
    EXPECT_NE(file.err.find("--out " + path("file") + " exists and is not a directory"), std::string::npos) << file.err;

    // An empty directory is fine; the tokenizer comes first and config.json last.
    fs::create_directories(path("empty"));
    ASSERT_EQ(run_cli("init --arch transformer --like " + kDefaultModel + " --out " + path("empty")).exit_code, 0);
    EXPECT_EQ(slurp(path("empty") + "/tokenizer.model"), slurp(kDefaultModel + "/tokenizer.model"));

    // A --like model whose tokenizer is broken: refused before anything is written.
    fs::copy(kDefaultModel, path("broken"), fs::copy_options::recursive);
    std::ofstream(path("broken") + "/tokenizer.model", std::ios::trunc) << "not a tokenizer";
    const CliRun broken = run_cli("init --arch transformer --like " + path("broken") + " --out " + path("twin"));
    EXPECT_EQ(broken.exit_code, 1);
    EXPECT_NE(broken.err.find("tokenizer.model"), std::string::npos) << broken.err;
    EXPECT_FALSE(fs::exists(path("twin")));
}

}  // namespace
}  // namespace retnet
