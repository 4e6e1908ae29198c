// SPDX-License-Identifier: GPL-3.0-or-later
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"
#include "retnet/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;
using retnet::Error;
using retnet::Family;
using retnet::Model;
using retnet::ModelConfig;
using retnet::SafetensorsFile;
using retnet::Tensor;

namespace {

const std::string kReference = std::string(RETNET_TEST_DATA_DIR) + "/reference/";

ModelConfig small_config(Family family, bool tied) {
    ModelConfig c;
    c.family = family;
    c.vocab_size = 13;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 16;
    c.value_dim = family == Family::Fla ? 32 : 24;
    c.ffn_dim = 20;
    c.tie_embeddings = tied;
    c.chunk_size = family == Family::Fla ? 64 : 8;
    c.head_norm_affine = family == Family::Fla;
    c.ffn_activation = family == Family::Fla ? retnet::Activation::Swish : retnet::Activation::Gelu;
    c.scale_embedding = family == Family::TorchScale;
    c.layernorm_embedding = family == Family::TorchScale && tied;
    c.norm_eps = 1e-5;
    return c;
}

// Norm weights of a random model are all ones; make them distinct so a mix-up would show.
Model random_model(const ModelConfig& c, uint64_t seed) {
    Model m = retnet::make_random_model(c, seed);
    float v = 0.5f;
    auto perturb = [&](Tensor& t) {
        for (float& x : t.data) x += (v += 0.001f);
    };
    perturb(m.weights.final_norm);
    perturb(m.weights.embed_norm);
    for (retnet::LayerWeights& l : m.weights.layers) {
        perturb(l.attn_norm);
        perturb(l.ffn_norm);
        perturb(l.head_norm);
    }
    return m;
}

bool same_bits(const Tensor& a, const Tensor& b) {
    return a.shape == b.shape && a.data.size() == b.data.size() &&
           (a.data.empty() || std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0);
}

void expect_same_model(const Model& a, const Model& b) {
    const retnet::ModelWeights &x = a.weights, &y = b.weights;
    EXPECT_TRUE(same_bits(x.embed, y.embed));
    EXPECT_TRUE(same_bits(x.embed_norm, y.embed_norm));
    EXPECT_TRUE(same_bits(x.final_norm, y.final_norm));
    EXPECT_TRUE(same_bits(x.lm_head, y.lm_head));
    EXPECT_EQ(x.log_decay, y.log_decay);
    EXPECT_EQ(x.rotary_theta, y.rotary_theta);
    ASSERT_EQ(x.layers.size(), y.layers.size());
    for (size_t i = 0; i < x.layers.size(); ++i) {
        const retnet::LayerWeights &p = x.layers[i], &q = y.layers[i];
        EXPECT_TRUE(same_bits(p.attn_norm, q.attn_norm)) << i;
        EXPECT_TRUE(same_bits(p.q_proj, q.q_proj)) << i;
        EXPECT_TRUE(same_bits(p.k_proj, q.k_proj)) << i;
        EXPECT_TRUE(same_bits(p.v_proj, q.v_proj)) << i;
        EXPECT_TRUE(same_bits(p.g_proj, q.g_proj)) << i;
        EXPECT_TRUE(same_bits(p.o_proj, q.o_proj)) << i;
        EXPECT_TRUE(same_bits(p.head_norm, q.head_norm)) << i;
        EXPECT_TRUE(same_bits(p.ffn_norm, q.ffn_norm)) << i;
        EXPECT_TRUE(same_bits(p.ffn_act, q.ffn_act)) << i;
        EXPECT_TRUE(same_bits(p.ffn_lin, q.ffn_lin)) << i;
        EXPECT_TRUE(same_bits(p.ffn_out, q.ffn_out)) << i;
    }
    const ModelConfig &c = a.config, &d = b.config;
    EXPECT_EQ(c.family, d.family);
    EXPECT_EQ(c.vocab_size, d.vocab_size);
    EXPECT_EQ(c.d_model, d.d_model);
    EXPECT_EQ(c.n_layers, d.n_layers);
    EXPECT_EQ(c.key_dim, d.key_dim);
    EXPECT_EQ(c.value_dim, d.value_dim);
    EXPECT_EQ(c.ffn_dim, d.ffn_dim);
    EXPECT_EQ(c.norm_eps, d.norm_eps);
    EXPECT_EQ(c.tie_embeddings, d.tie_embeddings);
    EXPECT_EQ(c.scale_embedding, d.scale_embedding);
    EXPECT_EQ(c.layernorm_embedding, d.layernorm_embedding);
    EXPECT_EQ(c.head_norm_affine, d.head_norm_affine);
    EXPECT_EQ(c.ffn_activation, d.ffn_activation);
}

using TensorMap = std::map<std::string, Tensor>;

TensorMap read_all(const std::string& path) {
    SafetensorsFile file(path);
    TensorMap out;
    for (const retnet::TensorInfo& t : file.tensors()) out[t.name] = file.read(t.name);
    return out;
}

void write_all(const std::string& path, const TensorMap& tensors) {
    std::vector<retnet::NamedTensor> list;
    for (const auto& [name, t] : tensors) list.push_back({name, &t});
    retnet::write_safetensors(path, list);
}

class ModelIoTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("retnet_test_model_io_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string dir(const std::string& sub) const { return (dir_ / sub).string(); }
    std::string weights(const std::string& sub) const { return (dir_ / sub / "model.safetensors").string(); }

    std::string load_error(const std::string& directory) const {
        try {
            retnet::load_model(directory);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    }

    // Saves a model, lets `edit` change its tensors, and returns the load error.
    template <class Edit>
    std::string edited_error(const Model& m, const std::string& sub, Edit edit) const {
        retnet::save_model(m, dir(sub));
        TensorMap t = read_all(weights(sub));
        edit(t);
        write_all(weights(sub), t);
        return load_error(dir(sub));
    }

    fs::path dir_;
};

}  // namespace

TEST_F(ModelIoTest, RoundTripIsExactForEveryVariant) {
    for (Family family : {Family::TorchScale, Family::Fla}) {
        for (bool tied : {false, true}) {
            const Model m = random_model(small_config(family, tied), 7);
            const std::string sub = std::string(retnet::family_name(family)) + (tied ? "_tied" : "_untied");
            retnet::save_model(m, dir(sub));
            EXPECT_FALSE(fs::exists(weights(sub) + ".tmp"));
            EXPECT_FALSE(fs::exists(dir(sub) + "/config.json.tmp"));
            const Model back = retnet::load_model(dir(sub));
            SCOPED_TRACE(sub);
            expect_same_model(m, back);
            EXPECT_EQ(back.directory, dir(sub));
            EXPECT_EQ(back.weights.lm_head.empty(), tied);
        }
    }
    ModelConfig c = small_config(Family::Fla, false);
    c.head_norm_affine = false;
    const Model m = random_model(c, 3);
    retnet::save_model(m, dir("no_affine"));
    const Model back = retnet::load_model(dir("no_affine"));
    EXPECT_TRUE(back.weights.layers[0].head_norm.empty());
    expect_same_model(m, back);
}

TEST_F(ModelIoTest, SavedFilesUseTheFamilyKeys) {
    retnet::save_model(random_model(small_config(Family::TorchScale, false), 1), dir("ts"));
    const TensorMap ts = read_all(weights("ts"));
    for (const char* key : {"embed_tokens.weight", "output_projection.weight", "layers.1.retention.out_proj.weight",
                            "layers.0.ffn.gate.weight", "layer_norm.weight", "retnet_rel_pos.angle",
                            "retnet_rel_pos.decay"})
        EXPECT_TRUE(ts.count(key)) << key;
    EXPECT_EQ(ts.at("retnet_rel_pos.angle").shape, std::vector<int64_t>{8});  // Dk, interleaved
    EXPECT_EQ(ts.size(), 2u + 10u * 2u + 1u + 2u);
    const json ts_config = json::parse(std::ifstream(dir("ts") + "/config.json"));
    EXPECT_EQ(ts_config.at("decoder_embed_dim"), 16);

    retnet::save_model(random_model(small_config(Family::Fla, true), 1), dir("fla"));
    const TensorMap fla = read_all(weights("fla"));
    for (const char* key : {"model.embeddings.weight", "model.layers.1.attn.g_norm_swish_gate.weight",
                            "model.layers.0.mlp.up_proj.weight", "model.norm.weight"})
        EXPECT_TRUE(fla.count(key)) << key;
    EXPECT_FALSE(fla.count("lm_head.weight"));  // tied: absent, as HF saves it
    EXPECT_FALSE(fla.count("retnet.log_decay"));  // fla's fixed decay is not stored
    EXPECT_EQ(fla.size(), 1u + 11u * 2u + 1u);
    EXPECT_EQ(SafetensorsFile(weights("fla")).metadata().at("format"), "pt");
    const json fla_config = json::parse(std::ifstream(dir("fla") + "/config.json"));
    EXPECT_EQ(fla_config.at("model_type"), "retnet");
    EXPECT_EQ(fla_config.at("intermediate_size"), 20);
}

TEST_F(ModelIoTest, NonDefaultDecayAndRotarySurviveNativeFiles) {
    Model m = random_model(small_config(Family::Fla, false), 5);
    m.weights.log_decay[1] = -0.125f;
    m.weights.rotary_theta[0] = 0.75f;
    retnet::save_model(m, dir("edited"));
    const Model back = retnet::load_model(dir("edited"));
    EXPECT_EQ(back.weights.log_decay, m.weights.log_decay);
    EXPECT_EQ(back.weights.rotary_theta, m.weights.rotary_theta);
}

TEST_F(ModelIoTest, LoadsTorchScaleReferenceFixture) {
    const std::string d = kReference + "ts_small";
    const Model m = retnet::load_model(d);
    EXPECT_EQ(m.config.family, Family::TorchScale);
    EXPECT_EQ(m.config.chunk_size, 8);
    EXPECT_TRUE(m.config.scale_embedding);
    SafetensorsFile file(d + "/model.safetensors");
    EXPECT_TRUE(same_bits(m.weights.layers[1].ffn_act, file.read("layers.1.ffn.fc1.weight")));
    EXPECT_TRUE(same_bits(m.weights.layers[1].ffn_lin, file.read("layers.1.ffn.gate.weight")));
    EXPECT_TRUE(same_bits(m.weights.layers[0].o_proj, file.read("layers.0.retention.out_proj.weight")));
    EXPECT_TRUE(same_bits(m.weights.lm_head, file.read("output_projection.weight")));
    EXPECT_TRUE(m.weights.layers[0].head_norm.empty());
    // The buffers torchscale computed: log γ agrees with our float32 formula to an ulp or two
    // (torch's log rounds differently from std::log); θ is bit-identical because
    // default_rotary_theta emulates torch.linspace. The file's values are the ones used.
    const std::vector<float> decay = retnet::default_log_decay(2);
    const std::vector<float> theta = retnet::default_rotary_theta(Family::TorchScale, 16);
    ASSERT_EQ(m.weights.log_decay.size(), 2u);
    ASSERT_EQ(m.weights.rotary_theta.size(), 8u);
    for (size_t h = 0; h < 2; ++h) EXPECT_NEAR(m.weights.log_decay[h], decay[h], 2e-7 * std::fabs(decay[h]));
    EXPECT_EQ(m.weights.rotary_theta, theta);
    EXPECT_EQ(file.read("retnet_rel_pos.angle").data[3], m.weights.rotary_theta[1]);

    const Model tied = retnet::load_model(kReference + "ts_gelu_tied");
    EXPECT_TRUE(tied.config.tie_embeddings);
    EXPECT_TRUE(tied.weights.lm_head.empty());
    EXPECT_EQ(tied.weights.embed_norm.numel(), 48);
    EXPECT_EQ(tied.config.ffn_activation, retnet::Activation::Gelu);
}

TEST_F(ModelIoTest, LoadsFlaReferenceFixtures) {
    const Model m = retnet::load_model(kReference + "fla_small");
    EXPECT_EQ(m.config.family, Family::Fla);
    SafetensorsFile file(kReference + "fla_small/model.safetensors");
    EXPECT_TRUE(same_bits(m.weights.layers[1].head_norm, file.read("model.layers.1.attn.g_norm_swish_gate.weight")));
    EXPECT_TRUE(same_bits(m.weights.layers[0].ffn_act, file.read("model.layers.0.mlp.gate_proj.weight")));
    EXPECT_TRUE(same_bits(m.weights.layers[0].ffn_lin, file.read("model.layers.0.mlp.up_proj.weight")));
    EXPECT_TRUE(same_bits(m.weights.lm_head, file.read("lm_head.weight")));
    EXPECT_EQ(m.weights.log_decay, retnet::default_log_decay(2));
    EXPECT_EQ(m.weights.rotary_theta, retnet::default_rotary_theta(Family::Fla, 16));

    const Model tied = retnet::load_model(kReference + "fla_tied");  // g_norm.weight, no lm_head
    SafetensorsFile tied_file(kReference + "fla_tied/model.safetensors");
    EXPECT_TRUE(same_bits(tied.weights.layers[0].head_norm, tied_file.read("model.layers.0.attn.g_norm.weight")));
    EXPECT_TRUE(tied.weights.lm_head.empty());
    EXPECT_TRUE(same_bits(tied.weights.output_matrix(), tied_file.read("model.embeddings.weight")));
}

TEST_F(ModelIoTest, AcceptsTheFamilyVariants) {
    // fla before 2025-02: one gate_proj [2F, d], gate rows first.
    const Model fla = random_model(small_config(Family::Fla, false), 11);
    retnet::save_model(fla, dir("fused"));
    TensorMap t = read_all(weights("fused"));
    for (int i = 0; i < 2; ++i) {
        const std::string l = "model.layers." + std::to_string(i) + ".mlp.";
        Tensor fused({40, 16});
        std::copy(t[l + "gate_proj.weight"].data.begin(), t[l + "gate_proj.weight"].data.end(), fused.data.begin());
        std::copy(t[l + "up_proj.weight"].data.begin(), t[l + "up_proj.weight"].data.end(), fused.data.begin() + 320);
        t[l + "gate_proj.weight"] = fused;
        t.erase(l + "up_proj.weight");
        // The unfused head-norm name.
        const std::string a = "model.layers." + std::to_string(i) + ".attn.";
        t[a + "g_norm.weight"] = t[a + "g_norm_swish_gate.weight"];
        t.erase(a + "g_norm_swish_gate.weight");
    }
    t["model.layers.0.attn.rotary.inv_freq"] = Tensor({4}, 1.0f);  // old rotary cache: ignored
    write_all(weights("fused"), t);
    expect_same_model(fla, retnet::load_model(dir("fused")));

    // fairseq: "decoder." prefix; tied file keeping only output_projection.
    const Model ts = random_model(small_config(Family::TorchScale, true), 12);
    retnet::save_model(ts, dir("fairseq"));
    TensorMap src = read_all(weights("fairseq")), prefixed;
    for (auto& [name, tensor] : src)
        prefixed["decoder." + (name == "embed_tokens.weight" ? std::string("output_projection.weight") : name)] = tensor;
    prefixed["decoder.version"] = Tensor({1}, 3.0f);
    write_all(weights("fairseq"), prefixed);
    expect_same_model(ts, retnet::load_model(dir("fairseq")));

    // Tied torchscale file holding both names (state_dict of a shared module): fine.
    src["output_projection.weight"] = src["embed_tokens.weight"];
    write_all(weights("fairseq"), src);
    expect_same_model(ts, retnet::load_model(dir("fairseq")));

    // Without the rel-pos buffers torchscale's formulas are used.
    src.erase("retnet_rel_pos.angle");
    src.erase("retnet_rel_pos.decay");
    write_all(weights("fairseq"), src);
    const Model no_buffers = retnet::load_model(dir("fairseq"));
    EXPECT_EQ(no_buffers.weights.log_decay, retnet::default_log_decay(2));
    EXPECT_EQ(no_buffers.weights.rotary_theta, retnet::default_rotary_theta(Family::TorchScale, 8));
}

TEST_F(ModelIoTest, ShardedModels) {
    const Model m = random_model(small_config(Family::Fla, false), 21);
    retnet::save_model(m, dir("sharded"));
    const TensorMap all = read_all(weights("sharded"));
    fs::remove(weights("sharded"));
    TensorMap first, second;
    json weight_map;
    for (const auto& [name, t] : all) {
        const bool in_first = name.find("layers.1.") == std::string::npos;
        (in_first ? first : second)[name] = t;
        weight_map[name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    write_all(dir("sharded") + "/model-00001-of-00002.safetensors", first);
    write_all(dir("sharded") + "/model-00002-of-00002.safetensors", second);
    const std::string index = dir("sharded") + "/model.safetensors.index.json";
    std::ofstream(index) << json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
    expect_same_model(m, retnet::load_model(dir("sharded")));

    // Saving over a sharded directory would leave the index in charge: refused.
    try {
        retnet::save_model(m, dir("sharded"));
        FAIL() << "saved over a sharded model";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("holds a sharded model"), std::string::npos);
    }

    fs::remove(dir("sharded") + "/model-00002-of-00002.safetensors");
    const std::string msg = load_error(dir("sharded"));
    EXPECT_NE(msg.find(index + ": shard 'model-00002-of-00002.safetensors'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;

    // A tensor that the index does not list is missing, named with the index file.
    weight_map.erase("model.layers.1.mlp.down_proj.weight");
    for (auto& [name, file] : weight_map.items()) file = "model-00001-of-00002.safetensors";
    write_all(dir("sharded") + "/model-00001-of-00002.safetensors", all);
    std::ofstream(index, std::ios::trunc) << json{{"weight_map", weight_map}}.dump();
    EXPECT_EQ(load_error(dir("sharded")),
              index + ": missing tensor 'model.layers.1.mlp.down_proj.weight' (expected [16, 20] from " +
                  dir("sharded") + "/config.json)");
}

TEST_F(ModelIoTest, CorruptWeightsFailWithFileAndProblem) {
    const Model ts = random_model(small_config(Family::TorchScale, false), 31);
    std::string msg = edited_error(ts, "shape", [](TensorMap& t) {
        t["layers.0.retention.q_proj.weight"] = Tensor({16, 8});
    });
    EXPECT_EQ(msg, weights("shape") + ": tensor 'layers.0.retention.q_proj.weight' has shape [16, 8], expected [16, 16] from " +
                       dir("shape") + "/config.json");

    msg = edited_error(ts, "missing", [](TensorMap& t) { t.erase("layers.1.ffn.fc2.weight"); });
    EXPECT_EQ(msg, weights("missing") + ": missing tensor 'layers.1.ffn.fc2.weight' (expected [16, 20] from " +
                       dir("missing") + "/config.json)");

    msg = edited_error(ts, "extra", [](TensorMap& t) {
        t["layers.2.retention.q_proj.weight"] = Tensor({16, 16});
        t["layers.2.retention.k_proj.weight"] = Tensor({16, 16});
    });
    EXPECT_EQ(msg, weights("extra") + ": unexpected tensor 'layers.2.retention.k_proj.weight' (and 1 more) for a "
                                      "torchscale model as described by " + dir("extra") + "/config.json");

    msg = edited_error(ts, "nan", [](TensorMap& t) {
        t["layers.1.retention.v_proj.weight"].data[17] = std::numeric_limits<float>::quiet_NaN();
    });
    EXPECT_EQ(msg, weights("nan") + ": tensor 'layers.1.retention.v_proj.weight' contains NaN at index 17");
    msg = edited_error(ts, "inf", [](TensorMap& t) {
        t["layer_norm.weight"].data[0] = -std::numeric_limits<float>::infinity();
    });
    EXPECT_EQ(msg, weights("inf") + ": tensor 'layer_norm.weight' contains Inf at index 0");

    msg = edited_error(ts, "angle", [](TensorMap& t) { t["retnet_rel_pos.angle"].data[5] += 1.0f; });
    EXPECT_NE(msg.find("'retnet_rel_pos.angle' is not of the form"), std::string::npos) << msg;
    msg = edited_error(ts, "decay", [](TensorMap& t) { t["retnet_rel_pos.decay"] = Tensor({3}); });
    EXPECT_NE(msg.find("'retnet_rel_pos.decay' has shape [3], expected [2]"), std::string::npos) << msg;

    // Untied torchscale needs both matrices.
    msg = edited_error(ts, "untied", [](TensorMap& t) { t.erase("output_projection.weight"); });
    EXPECT_NE(msg.find("missing tensor 'output_projection.weight'"), std::string::npos) << msg;

    const Model fla = random_model(small_config(Family::Fla, true), 32);
    msg = edited_error(fla, "fla_shape", [](TensorMap& t) {
        t["model.layers.1.attn.g_norm_swish_gate.weight"] = Tensor({32}, 1.0f);
    });
    EXPECT_NE(msg.find("'model.layers.1.attn.g_norm_swish_gate.weight' has shape [32], expected [16]"),
              std::string::npos) << msg;
    msg = edited_error(fla, "fla_gate", [](TensorMap& t) { t.erase("model.layers.0.mlp.up_proj.weight"); });
    EXPECT_NE(msg.find("missing tensor 'model.layers.0.mlp.up_proj.weight'"), std::string::npos) << msg;

    // A truncated weight file.
    retnet::save_model(fla, dir("truncated"));
    fs::resize_file(weights("truncated"), fs::file_size(weights("truncated")) - 100);
    msg = load_error(dir("truncated"));
    EXPECT_EQ(msg.rfind(weights("truncated") + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find("truncated file?"), std::string::npos) << msg;

    // No weights at all.
    fs::remove(weights("truncated"));
    EXPECT_EQ(load_error(dir("truncated")),
              dir("truncated") + ": no model.safetensors or model.safetensors.index.json");
}

TEST_F(ModelIoTest, BadConfigsFailBeforeWeightsAreRead) {
    const Model m = random_model(small_config(Family::Fla, false), 41);
    retnet::save_model(m, dir("cfg"));
    const std::string config = dir("cfg") + "/config.json";
    const json good = json::parse(std::ifstream(config));

    fs::remove(config);
    EXPECT_NE(load_error(dir("cfg")).find(config + ": cannot open"), std::string::npos);
    std::ofstream(config) << "not json";
    EXPECT_NE(load_error(dir("cfg")).find(config + ": not valid JSON"), std::string::npos);
    json j = good;
    j.erase("num_heads");
    j.erase("model_type");
    std::ofstream(config, std::ios::trunc) << j.dump();
    EXPECT_NE(load_error(dir("cfg")).find(config + ": not a RetNet config"), std::string::npos);
    j = good;
    j.erase("num_hidden_layers");
    std::ofstream(config, std::ios::trunc) << j.dump();
    EXPECT_EQ(load_error(dir("cfg")), config + ": missing field 'num_hidden_layers'");
    j = good;
    j["num_heads"] = 3;
    std::ofstream(config, std::ios::trunc) << j.dump();
    EXPECT_EQ(load_error(dir("cfg")), config + ": num_heads = 3 does not divide hidden_size*expand_k = 16");
    j = good;
    j["vocab_size"] = 1 << 30;
    std::ofstream(config, std::ios::trunc) << j.dump();
    EXPECT_NE(load_error(dir("cfg")).find("vocab_size = 1073741824 is outside"), std::string::npos);
    // A config that disagrees with the weights is caught by the shape check, before allocating.
    j = good;
    j["vocab_size"] = 1 << 24;
    j["hidden_size"] = 1 << 14;
    j["intermediate_size"] = 1 << 16;
    std::ofstream(config, std::ios::trunc) << j.dump();
    EXPECT_NE(load_error(dir("cfg")).find("has shape [13, 16], expected [16777216, 16384]"), std::string::npos);
}

TEST_F(ModelIoTest, ProgressAndCancellation) {
    const Model m = random_model(small_config(Family::TorchScale, false), 51);
    retnet::save_model(m, dir("p"));
    std::vector<double> seen;
    retnet::load_model(dir("p"), [&](double f) {
        seen.push_back(f);
        return true;
    });
    ASSERT_EQ(seen.size(), 1u + 2u + 10u * 2u + 1u);  // once before the first weight tensor, once after each
    EXPECT_EQ(seen.front(), 0.0);
    for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]);
    EXPECT_DOUBLE_EQ(seen.back(), 1.0);

    int calls = 0;
    EXPECT_THROW(retnet::load_model(dir("p"), [&](double) { return ++calls < 3; }), retnet::Cancelled);
    EXPECT_EQ(calls, 3);
}

// The CLI's Ctrl-C reaches the loaders as a progress callback that turns false. Raised before the
// load began (while the command checked the files), it stops the load at the first question,
// before any tensor is read; raised while loading, after the tensor under way. `retnet eval`'s
// load_trained_weights passes the callback through.
TEST_F(ModelIoTest, ACancelBeforeOrDuringTheLoadStopsIt) {
    const Model m = random_model(small_config(Family::Fla, false), 52);
    retnet::save_model(m, dir("c"));
    std::vector<double> asked;
    const retnet::ProgressCallback raised_before = [&](double f) {
        asked.push_back(f);
        return false;
    };
    EXPECT_THROW(retnet::load_model(dir("c"), raised_before, retnet::WeightStorage::AsStored), retnet::Cancelled);
    EXPECT_EQ(asked, std::vector<double>{0.0});
    asked.clear();
    EXPECT_THROW(retnet::train::load_trained_weights(dir("c"), raised_before), retnet::Cancelled);
    EXPECT_EQ(asked, std::vector<double>{0.0});

    int calls = 0;  // raised while the third tensor is read
    EXPECT_THROW(retnet::train::load_trained_weights(dir("c"), [&](double) { return ++calls < 4; }), retnet::Cancelled);
    EXPECT_EQ(calls, 4);
    // Never raised: the weights of a load without a callback.
    const auto never = [](double) { return true; };
    EXPECT_EQ(retnet::train::load_trained_weights(dir("c"), never).params, retnet::train::load_trained_weights(dir("c")).params);
}

// The bytes of every file in `directory`, by name (temporary files included).
std::map<std::string, std::string> files_in(const std::string& directory) {
    std::map<std::string, std::string> files;
    for (const auto& entry : fs::directory_iterator(directory)) {
        std::ifstream in(entry.path(), std::ios::binary);
        files[entry.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
    }
    return files;
}

// `retnet convert`'s and `init`'s Ctrl-C: save_model asks `cancelled` before each tensor and once
// more before the files replace their old versions. True at any of those questions throws
// Cancelled and leaves the directory as it was: empty when new, the old model byte for byte (in
// bf16 too, convert's default), no temporary file. Never true, the files are those of a save
// without the question.
TEST_F(ModelIoTest, ACancelWhileSavingLeavesTheDirectoryAsItWas) {
    const Model old_model = random_model(small_config(Family::Fla, false), 71);
    const Model m = random_model(small_config(Family::Fla, false), 72);
    retnet::save_model(m, dir("plain"));
    const size_t tensors = SafetensorsFile(weights("plain")).tensors().size();
    for (const retnet::DType dtype : {retnet::DType::F32, retnet::DType::BF16}) {
        retnet::save_model(old_model, dir("old"), dtype);
        const auto before = files_in(dir("old"));
        for (size_t cancel_at = 1; cancel_at <= tensors + 1; ++cancel_at) {
            size_t asked = 0;
            const auto cancelled = [&] { return ++asked == cancel_at; };
            EXPECT_THROW(retnet::save_model(m, dir("old"), dtype, cancelled), retnet::Cancelled) << cancel_at;
            EXPECT_EQ(asked, cancel_at);
            EXPECT_EQ(files_in(dir("old")), before) << "cancelled at question " << cancel_at;
            fs::create_directories(dir("new"));
            asked = 0;
            EXPECT_THROW(retnet::save_model(m, dir("new"), dtype, cancelled), retnet::Cancelled) << cancel_at;
            EXPECT_TRUE(files_in(dir("new")).empty()) << "cancelled at question " << cancel_at;
        }
        size_t asked = 0;
        retnet::save_model(m, dir("asked"), dtype, [&asked] { return ++asked == 0; });
        EXPECT_EQ(asked, tensors + 1);
        retnet::save_model(m, dir("unasked"), dtype);
        EXPECT_EQ(files_in(dir("asked")), files_in(dir("unasked")));
    }
}

TEST_F(ModelIoTest, SaveChecksTheModelAndKeepsOldFilesOnFailure) {
    Model m = random_model(small_config(Family::Fla, false), 61);
    retnet::save_model(m, dir("s"));
    const Model before = retnet::load_model(dir("s"));

    Model bad = m;
    bad.weights.layers[1].o_proj = Tensor({16, 8});
    try {
        retnet::save_model(bad, dir("s"));
        FAIL() << "saved a model whose shapes contradict its config";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "cannot save to " + dir("s") +
                                             ": tensor 'model.layers.1.attn.o_proj.weight' has shape [16, 8], "
                                             "expected [16, 32] from the config");
    }
    bad = m;
    bad.weights.layers.pop_back();
    EXPECT_THROW(retnet::save_model(bad, dir("s")), Error);
    expect_same_model(before, retnet::load_model(dir("s")));

    // Target not creatable: a file is in the way.
    std::ofstream(dir("file")) << "x";
    EXPECT_THROW(retnet::save_model(m, dir("file") + "/sub"), Error);
}
