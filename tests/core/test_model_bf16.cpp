// SPDX-License-Identifier: GPL-3.0-or-later
// Models saved with BF16 weights (save_model(..., DType::BF16), `retnet convert`): values that
// bf16 represents come back bit for bit; others come back rounded to nearest even (relative error
// at most 2^-8); the file holds two bytes per weight.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"

namespace fs = std::filesystem;
using namespace retnet;

namespace {

const std::string kReference = std::string(RETNET_TEST_DATA_DIR) + "/reference/";

ModelConfig fla_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 29;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 16;
    c.value_dim = 32;
    c.ffn_dim = 24;
    c.tie_embeddings = false;
    c.head_norm_affine = true;
    return c;
}

// Every tensor of the model, in a fixed order.
std::vector<const Tensor*> all_tensors(const Model& m) {
    const ModelWeights& w = m.weights;
    std::vector<const Tensor*> out{&w.embed, &w.final_norm, &w.lm_head};
    for (const LayerWeights& l : w.layers)
        for (const Tensor* t : {&l.attn_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.head_norm,
                                &l.ffn_norm, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
            out.push_back(t);
    return out;
}

float truncate_to_bf16(float x) { return std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0xFFFF0000u); }

fs::path temp_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("retnet_bf16_test_" + name);
    fs::remove_all(dir);
    return dir;
}

}  // namespace

TEST(ModelBf16, RepresentableValuesSurviveExactly) {
    Model m = make_random_model(fla_config(), 3);
    for (const Tensor* t : all_tensors(m))
        for (float& x : const_cast<Tensor*>(t)->data) x = truncate_to_bf16(x * 1.37f + 0.01f);
    const fs::path dir = temp_dir("exact");
    save_model(m, dir.string(), DType::BF16);
    const Model back = load_model(dir.string());
    const auto a = all_tensors(m), b = all_tensors(back);
    ASSERT_EQ(a.size(), b.size());
    int64_t values = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i]->shape, b[i]->shape);
        EXPECT_EQ(a[i]->data, b[i]->data) << "tensor " << i;
        values += a[i]->numel();
    }
    EXPECT_EQ(SafetensorsFile((dir / "model.safetensors").string()).info("model.embeddings.weight").dtype, DType::BF16);
    // Two bytes a weight plus the JSON header (a few KB at most).
    const auto bytes = static_cast<int64_t>(fs::file_size(dir / "model.safetensors"));
    EXPECT_GE(bytes, 2 * values);
    EXPECT_LT(bytes, 2 * values + 8192);
    fs::remove_all(dir);
}

TEST(ModelBf16, OtherValuesAreRoundedToNearestWithinHalfAnUlp) {
    const Model m = make_random_model(fla_config(), 4);
    const fs::path dir = temp_dir("rounded");
    save_model(m, dir.string(), DType::BF16);
    const Model back = load_model(dir.string());
    const auto a = all_tensors(m), b = all_tensors(back);
    int64_t changed = 0;
    for (size_t i = 0; i < a.size(); ++i)
        for (size_t k = 0; k < a[i]->data.size(); ++k) {
            const float x = a[i]->data[k], y = b[i]->data[k];
            // bf16 keeps 8 significant bits: half an ulp is at most 2^-8 of the value.
            EXPECT_LE(std::abs(y - x), std::ldexp(std::abs(x), -8)) << x;
            EXPECT_EQ(y, truncate_to_bf16(y));  // y is a bf16 value
            changed += x != y;
        }
    EXPECT_GT(changed, 0);  // random float32 weights are not bf16 values
    fs::remove_all(dir);
}

// The copy the CLI's --dtype bf16 and the app's cost twin run: matrices rounded to nearest bf16,
// vectors (norms) kept float32, the original untouched; a cancel between tensors throws.
TEST(ModelBf16, NarrowedCopyRoundsTheMatricesOnly) {
    const Model m = make_random_model(fla_config(), 6);
    const Model narrowed = narrowed_to_bf16(m);
    EXPECT_TRUE(m.all_f32());
    const Model back = widened(narrowed);
    const auto original = all_tensors(m), stored = all_tensors(narrowed), values = all_tensors(back);
    for (size_t i = 0; i < original.size(); ++i) {
        EXPECT_EQ(stored[i]->storage(), original[i]->rank() == 2 ? Storage::BF16 : Storage::F32) << "tensor " << i;
        for (size_t k = 0; k < original[i]->data.size(); ++k) {
            const float x = original[i]->data[k], y = values[i]->data[k];
            if (original[i]->rank() != 2) {
                EXPECT_EQ(x, y);
                continue;
            }
            EXPECT_LE(std::abs(y - x), std::ldexp(std::abs(x), -8)) << x;
            EXPECT_EQ(y, truncate_to_bf16(y));
        }
    }
    int polls = 0;
    EXPECT_THROW(narrowed_to_bf16(m, [&] { return ++polls == 3; }), Cancelled);
    EXPECT_EQ(polls, 3);
}

// The precision a backend computes with, as bench and cost report it: a model whose matrices are
// partly bf16 is "mixed" (cost then cannot give its twin the same precision, and refuses).
TEST(ModelBf16, WeightsPrecisionNamesAMixOfMatrices) {
    const auto fp32 = std::make_shared<const Model>(make_random_model(fla_config(), 7));
    const auto bf16 = std::make_shared<const Model>(narrowed_to_bf16(*fp32));
    Model mixed = *fp32;
    mixed.weights.layers[0].q_proj.narrow_to_bf16();
    EXPECT_EQ(make_cpu_backend(fp32)->weights_precision(), "fp32");
    EXPECT_EQ(make_cpu_backend(bf16)->weights_precision(), "bf16");
    EXPECT_EQ(make_cpu_backend(std::make_shared<const Model>(std::move(mixed)))->weights_precision(), "mixed");
}

TEST(ModelBf16, BuffersThatWouldBeRoundedAreRefused) {
    // torchscale files carry the decay and rotary buffers: rounding them would change the model.
    const Model ts = load_model(kReference + "ts_small");
    const fs::path dir = temp_dir("ts");
    try {
        save_model(ts, dir.string(), DType::BF16);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("BF16 storage would round"), std::string::npos) << e.what();
    }
    EXPECT_THROW(save_model(ts, dir.string(), DType::F16), Error);
    fs::remove_all(dir);
}

TEST(ModelBf16, CliConvertWritesALoadableBf16Copy) {
    const std::string src = kReference + "fla_small";
    const fs::path out = temp_dir("cli");
    const std::string cmd = std::string(RETNET_CLI_PATH) + " convert --model " + src + " --out " + out.string() +
                            " --dtype bf16 >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    const Model original = load_model(src), back = load_model(out.string());
    const auto a = all_tensors(original), b = all_tensors(back);
    for (size_t i = 0; i < a.size(); ++i)
        for (size_t k = 0; k < a[i]->data.size(); ++k)
            ASSERT_LE(std::abs(b[i]->data[k] - a[i]->data[k]), std::ldexp(std::abs(a[i]->data[k]), -8));
    EXPECT_NE(std::system((std::string(RETNET_CLI_PATH) + " convert --model " + src + " --out " + out.string() +
                           " --dtype f16 >/dev/null 2>&1").c_str()),
              0);
    fs::remove_all(out);
}
