// SPDX-License-Identifier: GPL-3.0-or-later
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "retnet/config.h"
#include "retnet/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using retnet::Activation;
using retnet::Error;
using retnet::Family;
using retnet::ModelConfig;

namespace {

// RetNetConfig as torchscale dumps it (a subset of the keys is enough; the rest have defaults).
json torchscale_json() {
    return json{{"decoder_embed_dim", 32},    {"decoder_value_embed_dim", 48}, {"decoder_retention_heads", 4},
                {"decoder_ffn_embed_dim", 40}, {"decoder_layers", 2},           {"vocab_size", 100},
                {"activation_fn", "swish"},   {"no_scale_embedding", false},   {"layernorm_embedding", true},
                {"layernorm_eps", 1e-5},      {"share_decoder_input_output_embed", true},
                {"recurrent_chunk_size", 16}, {"decoder_normalize_before", true}, {"deepnorm", false},
                {"multiway", false},          {"moe_freq", 0},                 {"dropout", 0.1}};
}

json fla_json() {
    return json{{"model_type", "retnet"}, {"architectures", {"RetNetForCausalLM"}},
                {"hidden_size", 64},      {"num_heads", 4},
                {"num_kv_heads", nullptr}, {"expand_k", 1},
                {"expand_v", 2},          {"hidden_ratio", 2},
                {"intermediate_size", nullptr}, {"num_hidden_layers", 3},
                {"hidden_act", "swish"},  {"feature_map", nullptr},
                {"use_short_conv", false}, {"use_output_gate", true},
                {"elementwise_affine", true}, {"norm_eps", 1e-6},
                {"tie_word_embeddings", false}, {"vocab_size", 1000},
                {"bos_token_id", 1},      {"eos_token_id", 2},
                {"attn", nullptr},        {"fuse_norm", true}};
}

// Runs f and returns the retnet::Error message ("" when nothing was thrown).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string parse_error(const json& j) {
    return error_of([&] { retnet::parse_config(j, "my/config.json"); });
}

fs::path temp_dir(const std::string& name) {
    fs::path dir = fs::temp_directory_path() / ("retnet_test_config_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

}  // namespace

TEST(Config, FamilyNames) {
    EXPECT_STREQ(retnet::family_name(Family::TorchScale), "torchscale");
    EXPECT_STREQ(retnet::family_name(Family::Fla), "fla");
}

TEST(Config, ParsesTorchScale) {
    const ModelConfig c = retnet::parse_config(torchscale_json());
    EXPECT_EQ(c.family, Family::TorchScale);
    EXPECT_EQ(c.d_model, 32);
    EXPECT_EQ(c.key_dim, 32);
    EXPECT_EQ(c.value_dim, 48);
    EXPECT_EQ(c.n_heads, 4);
    EXPECT_EQ(c.head_dim_k(), 8);
    EXPECT_EQ(c.head_dim_v(), 12);
    EXPECT_EQ(c.ffn_dim, 40);
    EXPECT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.vocab_size, 100);
    EXPECT_EQ(c.ffn_activation, Activation::Swish);
    EXPECT_TRUE(c.scale_embedding);
    EXPECT_TRUE(c.layernorm_embedding);
    EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
    EXPECT_TRUE(c.tie_embeddings);
    EXPECT_EQ(c.chunk_size, 16);
    EXPECT_FALSE(c.head_norm_affine);
}

TEST(Config, TorchScaleDefaultsAreRetNetConfigDefaults) {
    // RetNetConfig's own default of 3 heads does not divide 1280; 4 heads do.
    const json j{{"decoder_embed_dim", 768}, {"decoder_value_embed_dim", 1280}, {"decoder_retention_heads", 4},
                 {"decoder_ffn_embed_dim", 1280}, {"decoder_layers", 12}, {"vocab_size", 50000}};
    const ModelConfig c = retnet::parse_config(j);
    EXPECT_EQ(c.ffn_activation, Activation::Gelu);
    EXPECT_FALSE(c.scale_embedding);  // no_scale_embedding defaults to True
    EXPECT_FALSE(c.layernorm_embedding);
    EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
    EXPECT_FALSE(c.tie_embeddings);
    EXPECT_EQ(c.chunk_size, 512);
    EXPECT_EQ(c.head_dim_k(), 192);
    EXPECT_EQ(c.bos_token_id, -1);
}

TEST(Config, ParsesFlaWithDerivedIntermediateSize) {
    json j = fla_json();
    j["hidden_size"] = 2048;
    j["num_heads"] = 8;
    const ModelConfig c = retnet::parse_config(j);
    EXPECT_EQ(c.family, Family::Fla);
    EXPECT_EQ(c.key_dim, 2048);
    EXPECT_EQ(c.value_dim, 4096);
    EXPECT_EQ(c.head_dim_k(), 256);
    EXPECT_EQ(c.head_dim_v(), 512);
    EXPECT_EQ(c.ffn_dim, 2816);  // docs/spec.md §3.1: 256*ceil(int(2048*2*2/3)/256)
    EXPECT_EQ(c.chunk_size, 64);
    EXPECT_TRUE(c.head_norm_affine);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_id, 2);
    EXPECT_EQ(c.ffn_activation, Activation::Swish);
    EXPECT_FALSE(c.scale_embedding);

    j["hidden_size"] = 64;
    j["num_heads"] = 4;
    EXPECT_EQ(retnet::parse_config(j).ffn_dim, 256);  // int(85.33) = 85 rounds up to 256
    j["intermediate_size"] = 100;
    EXPECT_EQ(retnet::parse_config(j).ffn_dim, 100);
    j["expand_k"] = 0.5;
    j["expand_v"] = 1;
    EXPECT_EQ(retnet::parse_config(j).key_dim, 32);
    EXPECT_EQ(retnet::parse_config(j).value_dim, 64);
    j["elementwise_affine"] = false;
    j["hidden_act"] = "silu";
    EXPECT_FALSE(retnet::parse_config(j).head_norm_affine);
}

TEST(Config, FlaDetectedWithoutModelType) {
    json j = fla_json();
    j.erase("model_type");
    EXPECT_EQ(retnet::parse_config(j).family, Family::Fla);
}

TEST(Config, RejectsUnsupportedTorchScaleVariants) {
    const std::pair<const char*, json> cases[] = {
        {"decoder_normalize_before", false}, {"deepnorm", true}, {"multiway", true}, {"moe_freq", 2}};
    for (const auto& [key, value] : cases) {
        json j = torchscale_json();
        j[key] = value;
        const std::string msg = parse_error(j);
        EXPECT_NE(msg.find("my/config.json"), std::string::npos) << msg;
        EXPECT_NE(msg.find(key), std::string::npos) << msg;
        EXPECT_NE(msg.find("not supported"), std::string::npos) << msg;
    }
    json j = torchscale_json();
    j["activation_fn"] = "relu";
    EXPECT_NE(parse_error(j).find("activation_fn 'relu' is not supported"), std::string::npos);
}

TEST(Config, RejectsUnsupportedFlaVariants) {
    const std::pair<const char*, json> cases[] = {{"hidden_act", "gelu"},       {"use_output_gate", false},
                                                  {"num_kv_heads", 2},          {"use_short_conv", true},
                                                  {"feature_map", "elu"},       {"attn", {{"layers", {1}}}}};
    const char* expected[] = {"hidden_act 'gelu' is not supported", "use_output_gate: false is not supported",
                              "GQA", "use_short_conv: true is not supported", "feature_map \"elu\" is not supported",
                              "hybrid attention"};
    for (size_t i = 0; i < std::size(cases); ++i) {
        json j = fla_json();
        j[cases[i].first] = cases[i].second;
        const std::string msg = parse_error(j);
        EXPECT_NE(msg.find("my/config.json: "), std::string::npos) << msg;
        EXPECT_NE(msg.find(expected[i]), std::string::npos) << msg;
    }
    json j = fla_json();
    j["num_kv_heads"] = 4;  // equal to num_heads is plain multi-head retention
    EXPECT_EQ(parse_error(j), "");
}

TEST(Config, MissingAndMistypedFieldsAreNamed) {
    json j = fla_json();
    j.erase("hidden_size");
    j.erase("model_type");
    EXPECT_NE(parse_error(j).find("not a RetNet config"), std::string::npos);
    j = fla_json();
    j.erase("num_hidden_layers");
    EXPECT_EQ(parse_error(j), "my/config.json: missing field 'num_hidden_layers'");
    j = torchscale_json();
    j.erase("vocab_size");
    EXPECT_EQ(parse_error(j), "my/config.json: missing field 'vocab_size'");
    j = torchscale_json();
    j["decoder_layers"] = "two";
    EXPECT_EQ(parse_error(j), "my/config.json: field 'decoder_layers' must be an integer (got \"two\")");
    j["decoder_layers"] = 2.0;  // integral floats are accepted
    EXPECT_EQ(parse_error(j), "");
    j["decoder_layers"] = 2.5;
    EXPECT_NE(parse_error(j).find("must be an integer"), std::string::npos);
    j = fla_json();
    j["model_type"] = "mistral";
    EXPECT_NE(parse_error(j).find("model_type 'mistral' is not a RetNet (expected \"retnet\") or a Llama"),
              std::string::npos);
    EXPECT_NE(parse_error(json::array({1, 2})).find("expected a JSON object"), std::string::npos);
}

TEST(Config, RejectsAbsurdValues) {
    struct Case {
        const char* key;
        json value;
        const char* expected;
    };
    const Case cases[] = {
        {"decoder_layers", 0, "decoder_layers = 0 is outside [1, 1024]"},
        {"decoder_layers", 5000, "decoder_layers = 5000 is outside [1, 1024]"},
        {"decoder_embed_dim", -32, "decoder_embed_dim = -32 is outside"},
        {"vocab_size", 1 << 25, "vocab_size = 33554432 is outside [1, 16777216]"},
        {"decoder_ffn_embed_dim", 1 << 21, "decoder_ffn_embed_dim = 2097152 is outside"},
        {"decoder_retention_heads", 0, "decoder_retention_heads = 0 is outside"},
        {"decoder_retention_heads", 5, "decoder_retention_heads = 5 does not divide decoder_embed_dim = 32"},
        {"decoder_value_embed_dim", 50, "decoder_retention_heads = 4 does not divide decoder_value_embed_dim = 50"},
        {"layernorm_eps", -1e-6, "layernorm_eps = -0.000001 must be finite and >= 0"},
        {"recurrent_chunk_size", 0, "recurrent_chunk_size = 0 is outside"},
        {"decoder_layers", 1e12, "out of range"},
        {"vocab_size", json::parse("18446744073709551615"), "out of range"},
    };
    for (const Case& c : cases) {
        json j = torchscale_json();
        j[c.key] = c.value;
        const std::string msg = parse_error(j);
        EXPECT_NE(msg.find("my/config.json: "), std::string::npos) << msg;
        EXPECT_NE(msg.find(c.expected), std::string::npos) << c.key << ": " << msg;
    }
    // Dk = 32 / 16 = 2 is even but Dk = 48/16 = 3 is not.
    json j = torchscale_json();
    j["decoder_embed_dim"] = 48;
    j["decoder_retention_heads"] = 16;
    EXPECT_NE(parse_error(j).find("must be even"), std::string::npos);
    j = fla_json();
    j["num_heads"] = 3;
    EXPECT_NE(parse_error(j).find("num_heads = 3 does not divide hidden_size*expand_k = 64"), std::string::npos);
    j = fla_json();
    j["bos_token_id"] = 1000;
    EXPECT_NE(parse_error(j).find("bos_token_id = 1000"), std::string::npos);
}

TEST(Config, ValidateNamesTheField) {
    ModelConfig c = retnet::parse_config(fla_json());
    EXPECT_NO_THROW(c.validate());
    c.n_heads = 0;
    EXPECT_NE(error_of([&] { c.validate(); }).find("num_heads"), std::string::npos);
    c = retnet::parse_config(fla_json());
    c.norm_eps = std::numeric_limits<double>::quiet_NaN();
    EXPECT_NE(error_of([&] { c.validate(); }).find("norm_eps"), std::string::npos);
}

TEST(Config, LoadConfigErrorsNameTheFile) {
    const fs::path dir = temp_dir("load");
    const std::string missing = (dir / "absent.json").string();
    std::string msg = error_of([&] { retnet::load_config(missing); });
    EXPECT_NE(msg.find(missing + ": cannot open"), std::string::npos) << msg;

    const fs::path bad = dir / "config.json";
    std::ofstream(bad) << "{\"hidden_size\": 64,";
    msg = error_of([&] { retnet::load_config(bad.string()); });
    EXPECT_NE(msg.find(bad.string() + ": not valid JSON"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);

    json j = fla_json();
    j.erase("vocab_size");
    std::ofstream(bad, std::ios::trunc) << j.dump();
    EXPECT_EQ(error_of([&] { retnet::load_config(bad.string()); }),
              bad.string() + ": missing field 'vocab_size'");

    std::ofstream(bad, std::ios::trunc) << fla_json().dump(2);
    EXPECT_EQ(retnet::load_config(bad.string()).n_layers, 3);
    fs::remove_all(dir);
}

TEST(Config, ToJsonRoundTripsBothFamilies) {
    json ts = torchscale_json();
    ts["bos_token_id"] = 0;
    ts["eos_token_id"] = 2;
    for (const json& source : {ts, fla_json()}) {
        const ModelConfig a = retnet::parse_config(source);
        const json written = retnet::config_to_json(a);
        const ModelConfig b = retnet::parse_config(written);
        EXPECT_EQ(b.family, a.family);
        EXPECT_EQ(b.vocab_size, a.vocab_size);
        EXPECT_EQ(b.d_model, a.d_model);
        EXPECT_EQ(b.n_layers, a.n_layers);
        EXPECT_EQ(b.n_heads, a.n_heads);
        EXPECT_EQ(b.key_dim, a.key_dim);
        EXPECT_EQ(b.value_dim, a.value_dim);
        EXPECT_EQ(b.ffn_dim, a.ffn_dim);
        EXPECT_EQ(b.norm_eps, a.norm_eps);
        EXPECT_EQ(b.ffn_activation, a.ffn_activation);
        EXPECT_EQ(b.tie_embeddings, a.tie_embeddings);
        EXPECT_EQ(b.scale_embedding, a.scale_embedding);
        EXPECT_EQ(b.layernorm_embedding, a.layernorm_embedding);
        EXPECT_EQ(b.head_norm_affine, a.head_norm_affine);
        EXPECT_EQ(b.chunk_size, a.chunk_size);
        EXPECT_EQ(b.bos_token_id, a.bos_token_id);
        EXPECT_EQ(b.eos_token_id, a.eos_token_id);
    }
    const json fla = retnet::config_to_json(retnet::parse_config(fla_json()));
    EXPECT_EQ(fla.at("model_type"), "retnet");
    EXPECT_EQ(fla.at("architectures"), json::array({"RetNetForCausalLM"}));
    EXPECT_EQ(fla.at("intermediate_size"), 256);
    EXPECT_TRUE(retnet::config_to_json(retnet::parse_config(torchscale_json())).contains("decoder_embed_dim"));
}

TEST(Config, ToJsonExpressesOddWidthsExactly) {
    // 49 * (1/49) is 0.999... in double; int() would lose one column without care.
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 10;
    c.n_layers = 1;
    c.n_heads = 1;
    for (int d = 1; d < 300; ++d) {
        c.d_model = d;
        c.key_dim = 2 * ((d * 3 + 1) / 2);
        c.value_dim = d + 1;
        c.ffn_dim = 7;
        const ModelConfig back = retnet::parse_config(retnet::config_to_json(c));
        ASSERT_EQ(back.key_dim, c.key_dim) << "d = " << d;
        ASSERT_EQ(back.value_dim, c.value_dim) << "d = " << d;
    }
}
