// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin's config and files (docs/transformer.md): transformers' LlamaConfig keys,
// LlamaForCausalLM tensor names (f32, bf16, tied), one-line errors for what we do not run, and the
// parameter-matching rule of the twin of a RetNet.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"
#include "test_models.h"

namespace retnet {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A config.json as LlamaForCausalLM.save_pretrained writes it (transformers 4.4x).
json llama_json() {
    return json::parse(R"({
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 1, "eos_token_id": 2, "head_dim": 8, "hidden_act": "silu", "hidden_size": 32,
      "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 2048,
      "mlp_bias": false, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
      "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null,
      "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
      "transformers_version": "4.46.0", "use_cache": true, "vocab_size": 53})");
}

std::string parse_error(const json& j) {
    try {
        parse_config(j, "my/config.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(TwinConfig, ReadsAndWritesLlamaKeys) {
    const ModelConfig c = parse_config(llama_json());
    EXPECT_TRUE(c.is_transformer());
    EXPECT_EQ(c.family, Family::Fla);
    EXPECT_STREQ(format_name(c), "llama");
    EXPECT_EQ(c.d_model, 32);
    EXPECT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.n_heads, 4);
    EXPECT_EQ(c.key_dim, 32);
    EXPECT_EQ(c.value_dim, 32);
    EXPECT_EQ(c.ffn_dim, 64);
    EXPECT_EQ(c.vocab_size, 53);
    EXPECT_EQ(c.norm_eps, 1e-5);
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_FALSE(c.tie_embeddings);
    EXPECT_FALSE(c.head_norm_affine);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_id, 2);

    const json back = config_to_json(c);
    EXPECT_EQ(back["model_type"], "llama");
    EXPECT_EQ(back["num_key_value_heads"], 4);
    EXPECT_EQ(back["intermediate_size"], 64);
    EXPECT_EQ(back["rope_theta"], 500000.0);
    const ModelConfig again = parse_config(back);
    EXPECT_EQ(config_to_json(again), back);

    json j = llama_json();
    j.erase("head_dim");  // older transformers: d / H
    j["eos_token_id"] = json::array({2, 7});  // Llama 3 lists several: the first ends generation
    j["tie_word_embeddings"] = true;
    const ModelConfig d = parse_config(j);
    EXPECT_EQ(d.key_dim, 32);
    EXPECT_EQ(d.eos_token_id, 2);
    EXPECT_TRUE(d.tie_embeddings);
    j["head_dim"] = 16;  // wider heads than d / H: q, k, v of H·16
    EXPECT_EQ(parse_config(j).key_dim, 64);
}

TEST(TwinConfig, RefusesWhatItDoesNotRunInOneLine) {
    struct Case {
        const char* key;
        json value;
        const char* expected;
    };
    const Case cases[] = {
        {"num_key_value_heads", 2,
         "my/config.json: num_key_value_heads = 2 differs from num_attention_heads = 4: grouped-query attention "
         "(GQA) is not supported"},
        {"rope_scaling", json{{"rope_type", "llama3"}, {"factor", 8.0}},
         "my/config.json: rope_scaling {\"factor\":8.0,\"rope_type\":\"llama3\"} is not supported (expected null)"},
        {"hidden_act", "gelu", "my/config.json: hidden_act 'gelu' is not supported (expected \"silu\")"},
        {"attention_bias", true, "my/config.json: attention_bias: true is not supported"},
        {"mlp_bias", true, "my/config.json: mlp_bias: true is not supported"},
        {"rope_theta", -1.0, "my/config.json: rope_theta = -1.000000 must be finite and > 0"},
        {"head_dim", 7, "my/config.json: head_dim = 7 must be even (rotary rotates pairs)"},
        {"num_hidden_layers", 0, "my/config.json: num_hidden_layers = 0 is outside [1, 1024]"},
        {"intermediate_size", "big", "my/config.json: field 'intermediate_size' must be an integer (got \"big\")"},
    };
    for (const Case& c : cases) {
        json j = llama_json();
        j[c.key] = c.value;
        EXPECT_EQ(parse_error(j), c.expected) << c.key;
    }
    json j = llama_json();
    j.erase("num_attention_heads");
    EXPECT_EQ(parse_error(j), "my/config.json: missing field 'num_attention_heads'");
    j = llama_json();
    j.erase("head_dim");
    j["num_attention_heads"] = 5;
    j["num_key_value_heads"] = 5;
    EXPECT_EQ(parse_error(j), "my/config.json: num_attention_heads = 5 does not divide hidden_size = 32");
}

// ---- the twin of a RetNet --------------------------------------------------------------------

ModelConfig retnet_config(Family family, int d, int H, int L, int key_dim, int value_dim, int ffn) {
    ModelConfig c = test::small_config(family);
    c.d_model = d;
    c.n_heads = H;
    c.n_layers = L;
    c.key_dim = key_dim;
    c.value_dim = value_dim;
    c.ffn_dim = ffn;
    c.vocab_size = 101;
    return c;
}

// F' = F + (2K + 3Vd − 4d)/3 to the nearest multiple of 8; the counts then agree within
// L·(12d + Dv) + d (the rule's bound, stated in model.h).
TEST(Twin, ParameterCountMatchesTheRetNet) {
    struct Case {
        ModelConfig retnet;
        int expected_ffn;
    };
    const Case cases[] = {
        {test::small_config(Family::Fla), 64},         // 40 + (64 + 144 − 128)/3 = 66.7
        {test::small_config(Family::TorchScale), 64},  // the same shapes, GELU and an embedding norm
        {retnet_config(Family::Fla, 384, 6, 6, 384, 768, 704), 1216},   // the bundled default: 704 + 512
        {retnet_config(Family::Fla, 256, 4, 2, 256, 512, 688), 1032},   // 688 + 341.3
        {retnet_config(Family::TorchScale, 192, 3, 3, 192, 192, 96), 160},  // Vd = d: 96 + 64
    };
    for (const Case& c : cases) {
        const ModelConfig& r = c.retnet;
        EXPECT_EQ(transformer_twin_ffn_dim(r), c.expected_ffn) << r.d_model;
        const Model retnet = make_random_model(r, 1), twin = make_transformer_twin(r, 1);
        const ModelConfig& t = twin.config;
        EXPECT_TRUE(t.is_transformer());
        EXPECT_EQ(t.d_model, r.d_model);
        EXPECT_EQ(t.n_layers, r.n_layers);
        EXPECT_EQ(t.n_heads, r.n_heads);
        EXPECT_EQ(t.vocab_size, r.vocab_size);
        EXPECT_EQ(t.tie_embeddings, r.tie_embeddings);
        EXPECT_EQ(t.norm_eps, r.norm_eps);
        EXPECT_EQ(t.key_dim, r.d_model);
        EXPECT_EQ(t.ffn_dim, c.expected_ffn);
        const int64_t diff = std::abs(twin.parameter_count() - retnet.parameter_count());
        const int64_t bound = int64_t(r.n_layers) * (12 * r.d_model + r.head_dim_v()) + r.d_model;
        EXPECT_LE(diff, bound) << "d = " << r.d_model << ": " << twin.parameter_count() << " against "
                               << retnet.parameter_count();
        if (r.d_model >= 256) EXPECT_LT(static_cast<double>(diff) / retnet.parameter_count(), 0.005);
    }
}

TEST(Twin, RandomInitIsLlamas) {
    const Model twin = make_transformer_twin(retnet_config(Family::Fla, 256, 4, 2, 256, 512, 688), 5);
    double sum = 0, sum2 = 0;
    const std::vector<float>& w = twin.weights.layers[1].ffn_lin.data;
    for (float x : w) sum += x, sum2 += double(x) * x;
    const double n = static_cast<double>(w.size()), mean = sum / n;
    EXPECT_NEAR(mean, 0.0, 0.001);
    EXPECT_NEAR(std::sqrt(sum2 / n - mean * mean), 0.02, 0.0005);
    for (float x : twin.weights.layers[0].attn_norm.data) EXPECT_EQ(x, 1.0f);
    EXPECT_TRUE(twin.weights.layers[0].g_proj.empty());
    EXPECT_TRUE(twin.weights.layers[0].head_norm.empty());
    EXPECT_TRUE(twin.weights.log_decay.empty());
    EXPECT_EQ(twin.weights.rotary_theta, default_rotary_theta(Family::Fla, 64));
    EXPECT_EQ(make_transformer_twin(test::small_config(Family::Fla), 5).weights.embed.data,
              make_transformer_twin(test::small_config(Family::Fla), 5).weights.embed.data);

    ModelConfig odd = test::small_config(Family::Fla);
    odd.n_heads = 3;  // 32 / 3
    odd.key_dim = 33;
    odd.value_dim = 48;
    EXPECT_THROW(transformer_twin_config(odd), Error);
}

// ---- Llama files -----------------------------------------------------------------------------

class TwinFiles : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("retnet_test_twin_io_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string dir(const std::string& sub) const { return (dir_ / sub).string(); }
    std::string load_error(const std::string& directory) const {
        try {
            load_model(directory);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    }
    fs::path dir_;
};

// Every value distinct, so that a tensor read into the wrong place would show.
Model distinct_twin(bool tied) {
    ModelConfig r = test::small_config(Family::Fla);
    r.tie_embeddings = tied;
    Model m = make_transformer_twin(r, 3);
    float v = 0.5f;
    for (Tensor* t : {&m.weights.final_norm})
        for (float& x : t->data) x += (v += 0.001f);
    for (LayerWeights& l : m.weights.layers)
        for (Tensor* t : {&l.attn_norm, &l.ffn_norm})
            for (float& x : t->data) x += (v += 0.001f);
    return m;
}

void expect_same_weights(const Model& a, const Model& b) {
    const std::vector<const Tensor*> x = weight_tensors(a), y = weight_tensors(b);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_EQ(x[i]->shape, y[i]->shape) << i;
        EXPECT_EQ(x[i]->data, y[i]->data) << i;
        EXPECT_EQ(x[i]->bf16, y[i]->bf16) << i;
    }
    EXPECT_EQ(a.weights.rotary_theta, b.weights.rotary_theta);
    EXPECT_EQ(config_to_json(a.config), config_to_json(b.config));
}

TEST_F(TwinFiles, RoundTripF32Bf16AndTied) {
    for (bool tied : {false, true}) {
        const Model m = distinct_twin(tied);
        const std::string f32 = dir(tied ? "tied" : "untied");
        save_model(m, f32);
        expect_same_weights(load_model(f32), m);

        const SafetensorsSet set = SafetensorsSet::open_directory(f32);
        std::vector<std::string> expected = {"model.embed_tokens.weight", "model.norm.weight"};
        if (!tied) expected.push_back("lm_head.weight");
        for (int l = 0; l < 2; ++l)
            for (const char* name : {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                                     "mlp.down_proj"})
                expected.push_back("model.layers." + std::to_string(l) + "." + name + ".weight");
        std::sort(expected.begin(), expected.end());
        EXPECT_EQ(set.names(), expected);
        EXPECT_EQ(set.info("model.layers.1.mlp.gate_proj.weight").shape, (std::vector<int64_t>{64, 32}));

        // bf16: the matrices stay bf16 when loaded AsStored, and widen back exactly either way.
        const std::string bf16 = dir(tied ? "tied_bf16" : "untied_bf16");
        save_model(m, bf16, DType::BF16);
        const Model as_stored = load_model(bf16, {}, WeightStorage::AsStored), widened_model = load_model(bf16);
        EXPECT_EQ(as_stored.weights.layers[0].q_proj.storage(), Storage::BF16);
        EXPECT_EQ(as_stored.weights.layers[0].attn_norm.storage(), Storage::F32);
        EXPECT_TRUE(widened_model.all_f32());
        expect_same_weights(widened(as_stored), widened_model);
        const float x = m.weights.layers[1].o_proj.data[5], y = widened_model.weights.layers[1].o_proj.data[5];
        EXPECT_NEAR(y, x, std::abs(x) / 128);
        save_model(as_stored, dir("again"), DType::BF16);  // a bf16 model saves as it is held
        expect_same_weights(load_model(dir("again"), {}, WeightStorage::AsStored), as_stored);
    }
}

// A directory written the way transformers writes it (its names, our tensors in them) loads into
// the right places.
TEST_F(TwinFiles, ReadsTransformersNames) {
    const Model m = distinct_twin(false);
    fs::create_directories(dir("hf"));
    std::ofstream(dir("hf") + "/config.json") << llama_json().dump(2);
    std::map<std::string, const Tensor*> names = {{"model.embed_tokens.weight", &m.weights.embed},
                                                  {"model.norm.weight", &m.weights.final_norm},
                                                  {"lm_head.weight", &m.weights.lm_head}};
    for (int i = 0; i < 2; ++i) {
        const LayerWeights& l = m.weights.layers[size_t(i)];
        const std::string p = "model.layers." + std::to_string(i) + ".";
        names[p + "input_layernorm.weight"] = &l.attn_norm;
        names[p + "self_attn.q_proj.weight"] = &l.q_proj;
        names[p + "self_attn.k_proj.weight"] = &l.k_proj;
        names[p + "self_attn.v_proj.weight"] = &l.v_proj;
        names[p + "self_attn.o_proj.weight"] = &l.o_proj;
        names[p + "post_attention_layernorm.weight"] = &l.ffn_norm;
        names[p + "mlp.gate_proj.weight"] = &l.ffn_act;
        names[p + "mlp.up_proj.weight"] = &l.ffn_lin;
        names[p + "mlp.down_proj.weight"] = &l.ffn_out;
    }
    Tensor inv_freq({4});  // older checkpoints keep the rotary buffer: ignored
    names["model.layers.0.self_attn.rotary_emb.inv_freq"] = &inv_freq;
    std::vector<NamedTensor> list;
    for (const auto& [name, t] : names) list.push_back({name, t});
    write_safetensors(dir("hf") + "/model.safetensors", list);
    const Model loaded = load_model(dir("hf"));
    EXPECT_EQ(loaded.config.rope_theta, 500000.0);
    EXPECT_EQ(loaded.weights.rotary_theta, default_rotary_theta(Family::Fla, 8, 500000.0));
    EXPECT_NE(loaded.weights.rotary_theta, default_rotary_theta(Family::Fla, 8));
    Model expected = m;
    expected.config = loaded.config;
    expected.weights.rotary_theta = loaded.weights.rotary_theta;
    expect_same_weights(loaded, expected);
}

TEST_F(TwinFiles, BadTensorsFailInOneLine) {
    const Model m = distinct_twin(false);
    save_model(m, dir("base"));
    const std::string config = dir("base") + "/config.json";
    const auto edited = [&](const std::string& sub, auto edit) {
        fs::create_directories(dir(sub));
        fs::copy_file(config, dir(sub) + "/config.json");
        SafetensorsFile file(dir("base") + "/model.safetensors");
        std::map<std::string, Tensor> tensors;
        for (const TensorInfo& t : file.tensors()) tensors[t.name] = file.read(t.name);
        edit(tensors);
        std::vector<NamedTensor> list;
        for (const auto& [name, t] : tensors) list.push_back({name, &t});
        write_safetensors(dir(sub) + "/model.safetensors", list);
        const std::string error = load_error(dir(sub));
        EXPECT_EQ(error.find('\n'), std::string::npos) << error;
        return error;
    };
    const std::string cfg = dir("missing") + "/config.json";
    EXPECT_EQ(edited("missing", [](auto& t) { t.erase("model.layers.1.mlp.up_proj.weight"); }),
              dir("missing") + "/model.safetensors: missing tensor 'model.layers.1.mlp.up_proj.weight' (expected "
                               "[64, 32] from " + cfg + ")");
    EXPECT_NE(edited("shape", [](auto& t) { t["model.layers.0.self_attn.k_proj.weight"] = Tensor({16, 32}); })
                  .find("tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 32], expected [32, 32]"),
              std::string::npos);
    EXPECT_NE(edited("extra", [](auto& t) { t["model.layers.0.attn.g_proj.weight"] = Tensor({32, 32}); })
                  .find("unexpected tensor 'model.layers.0.attn.g_proj.weight' for a llama model"),
              std::string::npos);
    EXPECT_NE(edited("nan", [](auto& t) { t["model.norm.weight"].data[3] = NAN; })
                  .find("tensor 'model.norm.weight' contains NaN at index 3"),
              std::string::npos);
    // A RetNet file under a Llama config is refused at its first Llama name.
    save_model(make_random_model(test::small_config(Family::Fla), 1), dir("retnet"));
    std::ofstream(dir("retnet") + "/config.json") << config_to_json(m.config).dump();
    EXPECT_NE(load_error(dir("retnet")).find("missing tensor 'model.embed_tokens.weight'"), std::string::npos);
}

}  // namespace
}  // namespace retnet
