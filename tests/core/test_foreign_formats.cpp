// SPDX-License-Identifier: GPL-3.0-or-later
// Formats beside our two families: syncdoth's HF RetNet (torchscale math under `model.` names,
// converted on load), fla's legacy `rms_norm_eps`, and the checkpoints we recognise but refuse
// with one line saying what to do (pytorch_model.bin, Flax, TensorFlow, tokenizer.json).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "retnet/config.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using robustness::ScratchDir;
using robustness::slurp;
using robustness::spit;

const fs::path kFixtures = fs::path(RETNET_TEST_DATA_DIR) / "reference";

// What syncdoth's convert_weights.py + save_pretrained make of a torchscale model: every tensor
// under `model.`, output_projection as `lm_head`, and its RetNetConfig keys (model_type "retnet",
// tie_word_embeddings instead of share_decoder_input_output_embed, use_glu, forward_impl).
void write_syncdoth_copy(const fs::path& torchscale_dir, const fs::path& out) {
    json config = json::parse(slurp(torchscale_dir / "config.json"));
    config["model_type"] = "retnet";
    config["tie_word_embeddings"] = config.value("share_decoder_input_output_embed", false);
    config.erase("share_decoder_input_output_embed");
    config["use_glu"] = true;
    config["use_lm_decay"] = false;
    config["forward_impl"] = "parallel";
    config["architectures"] = json::array({"RetNetForCausalLM"});
    spit(out / "config.json", config.dump(2));

    const SafetensorsFile file((torchscale_dir / "model.safetensors").string());
    std::vector<std::pair<std::string, Tensor>> renamed;
    for (const TensorInfo& t : file.tensors())
        renamed.emplace_back(t.name == "output_projection.weight" ? "lm_head.weight" : "model." + t.name,
                             file.read(t.name));
    std::vector<NamedTensor> named;
    for (const auto& [name, tensor] : renamed) named.push_back({name, &tensor});
    write_safetensors((out / "model.safetensors").string(), named, {{"format", "pt"}});
}

std::string load_error(const fs::path& dir) {
    try {
        load_model(dir.string());
    } catch (const Error& e) {
        return e.what();
    }
    return "(loaded)";
}

class SyncdothLayout : public ::testing::TestWithParam<std::string> {};

TEST_P(SyncdothLayout, ConvertsOnLoadWithLogitsEqualToTheOriginal) {
    ScratchDir dir("syncdoth");
    write_syncdoth_copy(kFixtures / GetParam(), dir.path());
    auto original = std::make_shared<const Model>(load_model((kFixtures / GetParam()).string()));
    auto converted = std::make_shared<const Model>(load_model(dir.path().string()));
    ASSERT_EQ(converted->config.family, Family::TorchScale);
    EXPECT_EQ(converted->config.tie_embeddings, original->config.tie_embeddings);
    const std::vector<int32_t> tokens{3, 17, 5, 0, 42, 9, 11, 2, 30, 7, 1};
    for (const Form form : {Form::Parallel, Form::Recurrent, Form::Chunkwise}) {
        ForwardOptions options;
        options.form = form;
        options.chunk_size = 4;
        const Tensor want = make_cpu_backend(original)->forward(tokens, options);
        const Tensor got = make_cpu_backend(converted)->forward(tokens, options);
        ASSERT_EQ(got.shape, want.shape);
        EXPECT_EQ(got.data, want.data) << form_name(form);  // the same weights: bit-identical
    }
}

INSTANTIATE_TEST_SUITE_P(TorchscaleFixtures, SyncdothLayout, ::testing::Values("ts_small", "ts_gelu_tied"));

TEST(SyncdothLayout, RefusesTheFeedForwardVariant) {
    ScratchDir dir("syncdoth_ffn");
    write_syncdoth_copy(kFixtures / "ts_small", dir.path());
    json config = json::parse(slurp(dir / "config.json"));
    config["use_glu"] = false;
    spit(dir / "config.json", config.dump());
    EXPECT_NE(load_error(dir.path()).find("use_glu: false"), std::string::npos) << load_error(dir.path());
}

TEST(LegacyKeys, RmsNormEpsIsTheNormEpsOfOlderFlaConfigs) {
    json config = json::parse(slurp(kFixtures / "fla_small" / "config.json"));
    config.erase("norm_eps");
    config["rms_norm_eps"] = 1e-5;
    EXPECT_DOUBLE_EQ(parse_config(config).norm_eps, 1e-5);
    config["norm_eps"] = 2e-6;  // the current key wins, as in current fla
    EXPECT_DOUBLE_EQ(parse_config(config).norm_eps, 2e-6);
    config.erase("norm_eps");
    config.erase("rms_norm_eps");
    EXPECT_DOUBLE_EQ(parse_config(config).norm_eps, 1e-6);
}

// A directory holding the fixture's config.json and only the given weight files.
void write_foreign(const fs::path& dir, const std::string& config_fixture, std::initializer_list<const char*> files) {
    fs::copy_file(kFixtures / config_fixture / "config.json", dir / "config.json");
    for (const char* f : files) spit(dir / f, "not read");
}

TEST(ForeignFormats, EachRefusalNamesTheFormatAndWhatToDo) {
    struct Case {
        std::initializer_list<const char*> files;
        const char* format;
        const char* remedy;
    };
    for (const Case& c : {Case{{"pytorch_model.bin"}, "pytorch_model.bin", "save_file("},
                          Case{{"pytorch_model.bin.index.json"}, "pytorch_model.bin", "model.safetensors"},
                          Case{{"flax_model.msgpack"}, "Flax checkpoint", "from_flax=True"},
                          Case{{"tf_model.h5"}, "TensorFlow checkpoint", "from_tf=True"}}) {
        ScratchDir dir("foreign");
        write_foreign(dir.path(), "fla_small", c.files);
        const std::string what = load_error(dir.path());
        EXPECT_NE(what.find(c.format), std::string::npos) << what;
        EXPECT_NE(what.find(c.remedy), std::string::npos) << what;
        EXPECT_EQ(what.find('\n'), std::string::npos);
    }
    // Beside model.safetensors the other files are simply not used (as on most HF repos).
    ScratchDir both("foreign_both");
    fs::copy_file(kFixtures / "fla_small" / "model.safetensors", both / "model.safetensors");
    write_foreign(both.path(), "fla_small", {"pytorch_model.bin", "flax_model.msgpack"});
    EXPECT_EQ(load_error(both.path()), "(loaded)");
}

TEST(ForeignFormats, FlaxConfigIsNamedInsteadOfMisdetectedAsFla) {
    json config = {{"hidden_size", 64}, {"num_heads", 4}, {"num_hidden_layers", 2}, {"vocab_size", 100},
                   {"hidden_act", "gelu"}, {"architectures", {"FlaxRetNetForCausalLM"}}};
    try {
        parse_config(config, "flax/config.json");
        FAIL() << "parsed";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("FlaxRetNetForCausalLM is a Flax model"), std::string::npos) << what;
        EXPECT_NE(what.find("safe_serialization=True"), std::string::npos) << what;
    }
}

TEST(ForeignFormats, TokenizerJsonIsNamed) {
    ScratchDir dir("tokenizer_json");
    spit(dir / "tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE", "vocab": {}}})");
    try {
        Tokenizer::load((dir / "tokenizer.json").string());
        FAIL() << "loaded";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("Hugging Face tokenizers file (tokenizer.json)"), std::string::npos) << what;
        EXPECT_NE(what.find("--tokens"), std::string::npos) << what;
    }
}

}  // namespace
}  // namespace retnet
