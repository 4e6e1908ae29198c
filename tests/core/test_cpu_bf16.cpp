// SPDX-License-Identifier: GPL-3.0-or-later
// Weights held as bf16 in memory (load_model(..., WeightStorage::AsStored)): the CPU backend
// streams them with float32 sums (cpu::gemm_bf16) and must give the logits of the same model
// widened to float32, up to the order in which float32 sums are taken; the memory they take is
// half; every other reader of weights (reference backend, interventions, lens, training, saving)
// sees the same values.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "retnet/cpu_ops.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/intervention.h"
#include "retnet/lens.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"
#include "retnet/train.h"
#include "test_models.h"

namespace fs = std::filesystem;
using namespace retnet;
using namespace retnet::test;

namespace {

// The model with its 2-D matrices rounded to bf16 and held as bf16, as the loader keeps a bf16 file.
std::shared_ptr<const Model> narrowed(const Model& m) {
    auto out = std::make_shared<Model>(m);
    for (const Tensor* t : weight_tensors(*out))
        if (t->rank() == 2) const_cast<Tensor*>(t)->narrow_to_bf16();
    return out;
}

fs::path temp_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("retnet_cpu_bf16_test_" + name);
    fs::remove_all(dir);
    return dir;
}

std::vector<float> random_floats(size_t n, std::mt19937_64& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng);
    return out;
}

}  // namespace

// C = A Bᵀ with B in bf16 against the same product in double over the widened B: both sums have
// K terms in float32, so each element may differ from the exact value by K·2⁻²⁴·Σ|a_k b_k|
// (the classical bound γ_K for recursive summation; pairwise partial sums do better).
TEST(GemmBf16, MatchesTheExactProductWithinTheFloat32SummationBound) {
    std::mt19937_64 rng(7);
    for (int64_t M : {1, 2, 5, 8, 9, 37, 130})
        for (int64_t N : {1, 7, 67, 129})
            for (int64_t K : {1, 15, 16, 33, 300})
                for (bool accumulate : {false, true}) {
                    const std::vector<float> A = random_floats(static_cast<size_t>(M * K), rng);
                    Tensor B({N, K});
                    B.data = random_floats(static_cast<size_t>(N * K), rng);
                    B.narrow_to_bf16();
                    const Tensor Bf = B.to_f32();
                    const int64_t ldc = N + 3;  // a strided output, as the backend's scratch rows are
                    std::vector<float> C = random_floats(static_cast<size_t>(M * ldc), rng);
                    const std::vector<float> C0 = C;
                    cpu::gemm_bf16(M, N, K, A.data(), K, B.bf16.data(), C.data(), ldc, accumulate);
                    for (int64_t m = 0; m < M; ++m)
                        for (int64_t n = 0; n < ldc; ++n) {
                            const size_t at = static_cast<size_t>(m * ldc + n);
                            if (n >= N) {
                                ASSERT_EQ(C[at], C0[at]) << "wrote past N";
                                continue;
                            }
                            double exact = accumulate ? C0[at] : 0.0, magnitude = std::abs(exact);
                            for (int64_t k = 0; k < K; ++k) {
                                const double p = static_cast<double>(A[static_cast<size_t>(m * K + k)]) *
                                                 Bf.data[static_cast<size_t>(n * K + k)];
                                exact += p;
                                magnitude += std::abs(p);
                            }
                            ASSERT_LE(std::abs(C[at] - exact), (K + 2) * std::ldexp(magnitude, -24) + 1e-30)
                                << "M " << M << " N " << N << " K " << K << " acc " << accumulate;
                        }
                }
}

// One row (decoding one sequence) runs four weight rows side by side; each of its sums is formed as
// a row of a several-row product forms it, so decoding a sequence alone or in a batch gives the
// same bits.
TEST(GemmBf16, OneRowIsBitForBitARowOfSeveral) {
    std::mt19937_64 rng(11);
    for (int64_t N : {1, 3, 4, 5, 67, 384})
        for (int64_t K : {1, 15, 16, 33, 384}) {
            Tensor B({N, K});
            B.data = random_floats(static_cast<size_t>(N * K), rng);
            B.narrow_to_bf16();
            const std::vector<float> row = random_floats(static_cast<size_t>(K), rng);
            std::vector<float> two_rows = row;
            two_rows.insert(two_rows.end(), row.begin(), row.end());
            std::vector<float> alone(static_cast<size_t>(N)), pair(static_cast<size_t>(2 * N));
            cpu::gemm_bf16(1, N, K, row.data(), K, B.bf16.data(), alone.data(), N, false);
            cpu::gemm_bf16(2, N, K, two_rows.data(), K, B.bf16.data(), pair.data(), N, false);
            for (int64_t n = 0; n < N; ++n) {
                ASSERT_EQ(alone[static_cast<size_t>(n)], pair[static_cast<size_t>(n)]) << "N " << N << " K " << K << " n " << n;
                ASSERT_EQ(alone[static_cast<size_t>(n)], pair[static_cast<size_t>(N + n)]) << "N " << N << " K " << K;
            }
        }
}

// The whole model, bf16-held against its float32 widening, in every form, for both families,
// on a single token, odd lengths and a length that is not a multiple of the chunk. Both run the
// same float32 arithmetic except for the order of the sums inside the projections (the dot kernel
// or the widened-tile sgemm against OpenBLAS's own blocking): a relative perturbation of a few
// K·2⁻²⁴ per product, grown by at most a few layers' Lipschitz constants; 2e-5 of max|logit| is
// a hundred times what this measures (and a bf16 rounding of the weights would be ~1e-2).
TEST(CpuBf16Model, LogitsMatchTheWidenedModelInEveryForm) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        const std::shared_ptr<const Model> bf16 = narrowed(*small_model(family, 11));
        const auto f32 = std::make_shared<const Model>(widened(*bf16));
        ASSERT_FALSE(bf16->all_f32());
        ASSERT_TRUE(f32->all_f32());
        auto a = make_backend("cpu", bf16), b = make_backend("cpu", f32);
        for (int T : {1, 7, 13, 33})
            for (Form form : {Form::Parallel, Form::Recurrent, Form::Chunkwise}) {
                const std::vector<int32_t> tokens = random_tokens(T, bf16->config.vocab_size, 100 + T);
                ForwardOptions o;
                o.form = form;
                a->reset();
                b->reset();
                const Tensor la = a->forward(tokens, o), lb = b->forward(tokens, o);  // (T, V)
                ASSERT_EQ(la.shape, lb.shape);
                const double scale = max_abs(lb);
                EXPECT_GT(scale, 0.1);
                EXPECT_LE(max_abs_diff(la, lb), 2e-5 * scale)
                    << family_name(family) << " T " << T << " form " << form_name(form);
            }
    }
}

// Decoding token by token continues the state the same way (the M = 1 dot path for every step).
TEST(CpuBf16Model, StepwiseDecodeMatchesTheWidenedModel) {
    const std::shared_ptr<const Model> bf16 = narrowed(*small_model(Family::Fla, 5));
    auto a = make_backend("cpu", bf16), b = make_backend("cpu", with_f32_weights(bf16));
    ForwardOptions o;
    o.form = Form::Recurrent;
    const std::vector<int32_t> tokens = random_tokens(9, bf16->config.vocab_size, 3);
    for (int32_t t : tokens) {
        const Tensor la = a->forward(std::span(&t, 1), o), lb = b->forward(std::span(&t, 1), o);  // (1, V)
        EXPECT_LE(max_abs_diff(la, lb), 2e-5 * max_abs(lb));
    }
}

// A bf16 file loaded as stored: its matrices stay bf16 (two bytes a value, the norms float32),
// the values are exactly the file's, and the logits are the float32 load's.
TEST(CpuBf16Model, LoadingABf16FileAsStoredHalvesTheWeightBytes) {
    const Model source = make_random_model(small_config(Family::Fla), 21);
    const fs::path dir = temp_dir("load");
    save_model(source, dir.string(), DType::BF16);
    const auto held = std::make_shared<const Model>(load_model(dir.string(), {}, WeightStorage::AsStored));
    const auto wide = std::make_shared<const Model>(load_model(dir.string()));
    uint64_t matrix_values = 0, vector_values = 0;
    for (const Tensor* t : weight_tensors(*held)) {
        if (t->empty()) continue;
        EXPECT_EQ(t->storage(), t->rank() == 2 ? Storage::BF16 : Storage::F32) << t->shape_string();
        EXPECT_EQ(t->bytes(), static_cast<uint64_t>(t->numel()) * (t->rank() == 2 ? 2 : 4));
        (t->rank() == 2 ? matrix_values : vector_values) += static_cast<uint64_t>(t->numel());
    }
    EXPECT_EQ(held->weight_bytes(), 2 * matrix_values + 4 * vector_values);
    EXPECT_EQ(wide->weight_bytes(), 4 * (matrix_values + vector_values));
    EXPECT_LT(static_cast<double>(held->weight_bytes()), 0.51 * static_cast<double>(wide->weight_bytes()));
    const Model held_widened = widened(*held);
    const auto b = weight_tensors(held_widened), c = weight_tensors(*wide);
    for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i]->data, c[i]->data) << "tensor " << i;

    const std::vector<int32_t> tokens = random_tokens(5, source.config.vocab_size, 1);
    const Tensor la = make_backend("cpu", held)->forward(tokens, {}), lb = make_backend("cpu", wide)->forward(tokens, {});
    EXPECT_LE(max_abs_diff(la, lb), 2e-5 * max_abs(lb));
    fs::remove_all(dir);
}

// A float32 file stays float32 whatever the storage asked for.
TEST(CpuBf16Model, AFloat32FileStaysFloat32) {
    const Model source = make_random_model(small_config(Family::Fla), 22);
    const fs::path dir = temp_dir("f32");
    save_model(source, dir.string());
    const Model held = load_model(dir.string(), {}, WeightStorage::AsStored);
    EXPECT_TRUE(held.all_f32());
    EXPECT_EQ(held.weight_bytes(), 4 * static_cast<uint64_t>(held.parameter_count()));
    EXPECT_EQ(held.weights.layers[1].q_proj.data, source.weights.layers[1].q_proj.data);
    fs::remove_all(dir);
}

// Saving a bf16-held model writes its values exactly, as F32 or as BF16.
TEST(CpuBf16Model, SavingABf16HeldModelIsExact) {
    const std::shared_ptr<const Model> bf16 = narrowed(make_random_model(small_config(Family::Fla), 23));
    for (DType dtype : {DType::F32, DType::BF16}) {
        const fs::path dir = temp_dir(std::string("save_") + dtype_name(dtype));
        save_model(*bf16, dir.string(), dtype);
        const Model back = load_model(dir.string()), expected = widened(*bf16);
        const auto a = weight_tensors(expected), b = weight_tensors(back);
        for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]->data, b[i]->data) << dtype_name(dtype) << " tensor " << i;
        fs::remove_all(dir);
    }
}

// The readers that want float32 get it: the reference backend (a widened copy), training's flat
// parameters (widened), unflattening (a float32 model), and raw float32 access throws clearly.
TEST(CpuBf16Model, Float32ReadersSeeTheWidenedValues) {
    const std::shared_ptr<const Model> bf16 = narrowed(*small_model(Family::Fla, 31));
    const auto f32 = with_f32_weights(bf16);
    const std::vector<int32_t> tokens = random_tokens(6, bf16->config.vocab_size, 2);
    EXPECT_EQ(make_backend("reference", bf16)->forward(tokens, {}).data,
              make_backend("reference", f32)->forward(tokens, {}).data);

    const train::ParamLayout layout = train::make_param_layout(bf16->config);
    const std::vector<float> flat = train::flatten_weights(*bf16, layout);
    EXPECT_EQ(flat, train::flatten_weights(*f32, layout));
    Model target = *bf16;
    train::unflatten_weights(flat, layout, target);
    EXPECT_TRUE(target.all_f32());
    EXPECT_EQ(target.weights.layers[0].ffn_out.data, f32->weights.layers[0].ffn_out.data);

    EXPECT_THROW((void)bf16->weights.layers[0].q_proj.ptr(), Error);
}

// Muting a head zeroes the same o_proj columns in either storage; the logit lens reads a bf16
// output matrix like its widening.
TEST(CpuBf16Model, InterventionsAndLensWorkOnBf16Weights) {
    const std::shared_ptr<const Model> bf16 = narrowed(*small_model(Family::Fla, 41));
    const Interventions edits = parse_interventions("1.2,0.0", "");
    const Model muted = apply_interventions(*bf16, edits);
    EXPECT_EQ(muted.weights.layers[1].o_proj.storage(), Storage::BF16);
    EXPECT_EQ(widened(muted).weights.layers[1].o_proj.data,
              apply_interventions(widened(*bf16), edits).weights.layers[1].o_proj.data);

    const std::vector<int32_t> tokens = random_tokens(4, bf16->config.vocab_size, 9);
    Introspection intro;
    intro.want_layer_outputs = true;
    make_backend("cpu", bf16)->forward(tokens, {}, &intro);
    const auto a = logit_lens(*bf16, intro.layer_outputs, tokens, 3);
    const auto b = logit_lens(widened(*bf16), intro.layer_outputs, tokens, 3);
    ASSERT_EQ(a.size(), b.size());
    for (size_t l = 0; l < a.size(); ++l)
        for (size_t t = 0; t < a[l].size(); ++t) {
            EXPECT_EQ(a[l][t].top.front().id, b[l][t].top.front().id);
            EXPECT_NEAR(a[l][t].next_prob, b[l][t].next_prob, 1e-5);
        }
}
