// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin through the block sequence (docs/transformer.md): the CPU backend against
// the double reference on awkward shapes, prompt + token-by-token decode against one pass,
// batches over slots, reset/snapshot/restore of the KV cache, and generation.
#include <gtest/gtest.h>

#include "retnet/analysis_tap.h"
#include "retnet/batch_generate.h"
#include "retnet/block_ops.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/generate.h"
#include "retnet/model_stats.h"
#include "test_models.h"

namespace retnet {
namespace {

using test::max_abs;
using test::max_abs_diff;
using test::random_tokens;

constexpr int kVocab = 53;

// The twin of the small fla test model (d 32, H 4, D 8, L 2), with weights large enough that the
// softmax is far from uniform (scores of a few units) and norm weights away from 1; rope_theta 100
// so that every rotary pair turns visibly within a few dozen positions.
std::shared_ptr<Model> twin_model(uint64_t seed, bool tied = true) {
    ModelConfig retnet = test::small_config(Family::Fla);
    retnet.tie_embeddings = tied;
    ModelConfig c = transformer_twin_config(retnet);
    c.rope_theta = 100.0;
    auto m = std::make_shared<Model>(make_random_model(c, seed));
    std::mt19937_64 rng(seed + 1000);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    auto perturb_norm = [&](Tensor& t) {
        for (float& x : t.data) x = 1.0f + 0.3f * n01(rng);
    };
    auto scale = [](Tensor& t, float s) {
        for (float& x : t.data) x *= s;
    };
    scale(m->weights.embed, 30.0f);
    for (LayerWeights& l : m->weights.layers) {
        perturb_norm(l.attn_norm);
        perturb_norm(l.ffn_norm);
        scale(l.q_proj, 12.0f);
        scale(l.k_proj, 12.0f);
        scale(l.v_proj, 10.0f);
    }
    perturb_norm(m->weights.final_norm);
    return m;
}

double at(const Tensor& t, int64_t row, int64_t col) { return t.data[static_cast<size_t>(row * t.dim(1) + col)]; }

// max |a − b| / max |b|
double relative_error(const Tensor& a, const Tensor& b) { return max_abs_diff(a, b) / max_abs(b); }

// Measured on this machine: ≤ 2.5e-7 relative over every case below (float against double).
constexpr double kTolerance = 2e-6;

struct FormCase {
    Form form;
    int T;
};

class TwinAgainstReference : public ::testing::TestWithParam<FormCase> {};

// One sequence of T tokens from an empty cache, then 3 more from the cache: the CPU's logits
// equal the double reference's, whatever the form (T = 1, odd, and past the 64-row query tile).
TEST_P(TwinAgainstReference, LogitsMatch) {
    const FormCase p = GetParam();
    std::shared_ptr<const Model> model = twin_model(3);
    ForwardOptions options;
    options.form = p.form;
    std::unique_ptr<Backend> cpu = make_cpu_backend(model), ref = make_reference_backend(model);
    const std::vector<int32_t> prompt = random_tokens(p.T, kVocab, 10 + p.T), more = random_tokens(3, kVocab, 99);
    for (const std::vector<int32_t>* tokens : {&prompt, &more}) {
        const Tensor expected = ref->forward(*tokens, options), got = cpu->forward(*tokens, options);
        ASSERT_EQ(got.shape, expected.shape);
        EXPECT_GT(max_abs(expected), 0.5);
        EXPECT_LT(relative_error(got, expected), kTolerance) << form_name(p.form) << " T=" << p.T;
    }
    EXPECT_EQ(cpu->snapshot().position, p.T + 3);
}

INSTANTIATE_TEST_SUITE_P(Forms, TwinAgainstReference,
                         ::testing::Values(FormCase{Form::Parallel, 1}, FormCase{Form::Parallel, 7},
                                           FormCase{Form::Parallel, 70}, FormCase{Form::Recurrent, 1},
                                           FormCase{Form::Recurrent, 9}, FormCase{Form::Chunkwise, 13},
                                           FormCase{Form::Chunkwise, 130}));

// A prompt in one pass, then the rest token by token over the cache, gives the rows of one
// parallel pass over everything, on both backends.
TEST(Twin, PromptThenDecodeEqualsOnePass) {
    std::shared_ptr<const Model> model = twin_model(5);
    const std::vector<int32_t> all = random_tokens(20, kVocab, 7);
    const std::vector<int32_t> prompt(all.begin(), all.begin() + 11);
    for (auto make : {&make_cpu_backend, &make_reference_backend}) {
        std::unique_ptr<Backend> whole = make(model), steps = make(model);
        const Tensor expected = whole->forward(all, {});
        const Tensor first = steps->forward(prompt, {});
        double worst = 0.0;
        for (int t = 0; t < 11; ++t)
            for (int j = 0; j < kVocab; ++j)
                worst = std::max(worst, std::abs(double(at(first, t, j)) - at(expected, t, j)));
        ForwardOptions recurrent;
        recurrent.form = Form::Recurrent;
        for (size_t t = 11; t < all.size(); ++t) {
            const Tensor row = steps->forward(std::span(&all[t], 1), recurrent);
            for (int j = 0; j < kVocab; ++j)
                worst = std::max(worst, std::abs(double(at(row, 0, j)) - at(expected, static_cast<int64_t>(t), j)));
        }
        EXPECT_LT(worst / max_abs(expected), kTolerance) << whole->name();
        EXPECT_EQ(steps->snapshot().position, 20);
    }
}

// The CPU cache grows in blocks of 256 tokens: a prompt of 250 and a decode across the boundary
// match the reference.
TEST(Twin, DecodeAcrossTheCacheBlockBoundary) {
    std::shared_ptr<const Model> model = twin_model(8);
    std::unique_ptr<Backend> cpu = make_cpu_backend(model), ref = make_reference_backend(model);
    const std::vector<int32_t> prompt = random_tokens(250, kVocab, 1);
    ForwardOptions chunkwise;
    chunkwise.form = Form::Chunkwise;
    const SequenceRequest request{prompt, 0, LogitRows::Last};
    const Tensor a = cpu->forward_batch({&request, 1}, chunkwise)[0], b = ref->forward_batch({&request, 1}, chunkwise)[0];
    EXPECT_LT(relative_error(a, b), kTolerance);
    ForwardOptions recurrent;
    recurrent.form = Form::Recurrent;
    for (int32_t token : random_tokens(12, kVocab, 2)) {
        const Tensor x = cpu->forward(std::span(&token, 1), recurrent), y = ref->forward(std::span(&token, 1), recurrent);
        EXPECT_LT(relative_error(x, y), kTolerance);
    }
    EXPECT_EQ(cpu->snapshot().layers[1].K.size(), size_t(262) * 32);
}

// Sequences of lengths 1, 5 and 7 in slots 2, 0 and 1 (0 and 2 after prompts of their own) give in
// one batch what each gives alone; a batch of single tokens (batched decode) too.
TEST(Twin, BatchOverSlotsEqualsEachSequenceAlone) {
    std::shared_ptr<const Model> model = twin_model(11);
    for (Form form : {Form::Parallel, Form::Recurrent}) {
        ForwardOptions options;
        options.form = form;
        const std::vector<std::vector<int32_t>> history = {random_tokens(6, kVocab, 1), {}, random_tokens(3, kVocab, 2)};
        const std::vector<std::vector<int32_t>> next = {random_tokens(5, kVocab, 3), random_tokens(7, kVocab, 4),
                                                        random_tokens(1, kVocab, 5)};
        std::unique_ptr<Backend> batched = make_cpu_backend(model);
        batched->set_slot_count(3);
        for (int s = 0; s < 3; ++s)
            if (!history[size_t(s)].empty()) {
                const SequenceRequest request{history[size_t(s)], s, LogitRows::None};
                batched->forward_batch({&request, 1}, {});
            }
        const std::vector<SequenceRequest> batch = {{next[2], 2, LogitRows::All}, {next[0], 0, LogitRows::All},
                                                    {next[1], 1, LogitRows::Last}};
        const std::vector<Tensor> together = batched->forward_batch(batch, options);
        for (size_t i = 0; i < batch.size(); ++i) {
            const size_t s = static_cast<size_t>(batch[i].slot);
            std::unique_ptr<Backend> alone = make_reference_backend(model);
            if (!history[s].empty()) alone->forward(history[s], {});
            Tensor expected = alone->forward(next[s], options);
            if (batch[i].logits == LogitRows::Last) {
                Tensor last({1, kVocab});
                std::copy(expected.data.end() - kVocab, expected.data.end(), last.data.begin());
                expected = last;
            }
            EXPECT_LT(relative_error(together[i], expected), kTolerance) << "slot " << s;
            EXPECT_EQ(batched->snapshot(batch[i].slot).position, static_cast<int64_t>(history[s].size() + next[s].size()));
        }
        // Then one token for every slot at once.
        const std::vector<int32_t> step = {4, 9, 16};
        const std::vector<SequenceRequest> decode = {{std::span(&step[0], 1), 0, LogitRows::Last},
                                                     {std::span(&step[1], 1), 1, LogitRows::Last},
                                                     {std::span(&step[2], 1), 2, LogitRows::Last}};
        const std::vector<Tensor> rows = batched->forward_batch(decode, options);
        for (int s = 0; s < 3; ++s) {
            std::unique_ptr<Backend> alone = make_reference_backend(model);
            std::vector<int32_t> seq = history[size_t(s)];
            seq.insert(seq.end(), next[size_t(s)].begin(), next[size_t(s)].end());
            seq.push_back(step[size_t(s)]);
            const SequenceRequest request{seq, 0, LogitRows::Last};
            EXPECT_LT(relative_error(rows[size_t(s)], alone->forward_batch({&request, 1}, {})[0]), kTolerance);
        }
    }
}

// snapshot() holds the KV cache ((position, H, D) per layer, the same on both backends);
// restore() continues from it, also on the other backend; reset() empties it.
TEST(Twin, SnapshotRestoreAndReset) {
    std::shared_ptr<const Model> model = twin_model(13);
    const std::vector<int32_t> prompt = random_tokens(9, kVocab, 1), next = random_tokens(4, kVocab, 2);
    std::unique_ptr<Backend> cpu = make_cpu_backend(model), ref = make_reference_backend(model);
    cpu->set_slot_count(2);
    const SequenceRequest in_slot1{prompt, 1, LogitRows::None};
    cpu->forward_batch({&in_slot1, 1}, {});
    ref->forward(prompt, {});
    const RecurrentState state = cpu->snapshot(1), ref_state = ref->snapshot();
    ASSERT_EQ(state.position, 9);
    ASSERT_EQ(state.layers.size(), 2u);
    EXPECT_TRUE(state.layers[0].S.empty());
    ASSERT_EQ(state.layers[0].K.size(), size_t(9) * 32);
    ASSERT_EQ(ref_state.layers[0].V.size(), size_t(9) * 32);
    double worst = 0.0;
    for (size_t l = 0; l < 2; ++l)
        for (size_t i = 0; i < state.layers[l].K.size(); ++i)
            worst = std::max({worst, std::abs(double(state.layers[l].K[i]) - ref_state.layers[l].K[i]),
                              std::abs(double(state.layers[l].V[i]) - ref_state.layers[l].V[i])});
    EXPECT_LT(worst, 1e-4);
    EXPECT_EQ(state.bytes(), int64_t(2 * 2 * 9 * 32 * 4));
    EXPECT_EQ(kv_cache_bytes(model->config, 9), state.bytes());

    const SequenceRequest next1{next, 1, LogitRows::All};
    const Tensor expected = cpu->forward_batch({&next1, 1}, {})[0];
    cpu->restore(state, 0);  // into the other slot
    EXPECT_EQ(max_abs_diff(cpu->forward(next, {}), expected), 0.0);
    ref->reset();
    ref->restore(state);  // the CPU's cache on the reference
    EXPECT_LT(relative_error(ref->forward(next, {}), expected), kTolerance);

    cpu->reset(1);
    EXPECT_EQ(cpu->snapshot(1).position, 0);
    EXPECT_TRUE(cpu->snapshot(1).layers[0].K.empty());
    std::unique_ptr<Backend> fresh = make_cpu_backend(model);
    const SequenceRequest again{next, 1, LogitRows::All};
    EXPECT_EQ(max_abs_diff(cpu->forward_batch({&again, 1}, {})[0], fresh->forward(next, {})), 0.0);

    RecurrentState bad = state;
    bad.layers[1].K.pop_back();
    EXPECT_THROW(cpu->restore(bad, 0), Error);
    bad = state;
    bad.position = 8;  // the cache holds 9 tokens
    EXPECT_THROW(cpu->restore(bad, 0), Error);
}

// Layer outputs and q/k/v of a layer are there for the twin; retention state norms and scores
// are refused with one line.
TEST(Twin, IntrospectionOfWhatTheTwinHas) {
    std::shared_ptr<const Model> model = twin_model(17);
    const std::vector<int32_t> tokens = random_tokens(5, kVocab, 3);
    std::unique_ptr<Backend> cpu = make_cpu_backend(model);
    Introspection intro;
    intro.want_layer_outputs = true;
    intro.qkv_layer = 1;
    cpu->forward(tokens, {}, &intro);
    ASSERT_EQ(intro.layer_outputs.size(), 2u);
    EXPECT_EQ(intro.layer_outputs[1].shape, (std::vector<int64_t>{5, 32}));
    EXPECT_EQ(intro.q.shape, (std::vector<int64_t>{5, 32}));
    EXPECT_GT(max_abs(intro.v), 0.0);
    Introspection norms;
    norms.want_state_norms = true;
    try {
        cpu->forward(tokens, {}, &norms);
        FAIL() << "state norms of a Transformer";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "the Transformer twin has no retention state or scores to show (state norms were asked for)");
    }
}

// The app's tap (TapBackend) watches a twin's generation: logits for every row, no state norms.
TEST(Twin, TapWatchesWithoutStateNorms) {
    std::shared_ptr<const Model> model = twin_model(29);
    std::unique_ptr<Backend> cpu = make_cpu_backend(model);
    int calls = 0;
    TapBackend tap(*cpu, [&](int64_t first, const Tensor& logits, const Tensor& norms) {
        EXPECT_EQ(first, calls == 0 ? 0 : 4);
        EXPECT_EQ(logits.dim(0), calls == 0 ? 4 : 1);
        EXPECT_EQ(norms.rank(), 0);
        ++calls;
    });
    const std::vector<int32_t> tokens = {3, 4, 5, 6, 7};
    const SequenceRequest prompt{std::span(tokens).first(4), 0, LogitRows::Last};
    const SequenceRequest next{std::span(tokens).subspan(4), 0, LogitRows::Last};
    tap.forward_batch({&prompt, 1}, {}, nullptr);
    const Tensor last = tap.forward_batch({&next, 1}, {}, nullptr)[0];
    EXPECT_EQ(calls, 2);
    std::unique_ptr<Backend> alone = make_reference_backend(model);
    const SequenceRequest whole{tokens, 0, LogitRows::Last};
    EXPECT_LT(relative_error(last, alone->forward_batch({&whole, 1}, {})[0]), kTolerance);
}

// A backend that has not wired the twin's attention says so in one line (the default of BlockOps).
TEST(Twin, BlockOpsDefaultAttentionThrows) {
    struct NoAttention : BlockOps {
        Rows scratch(Scratch, int64_t, int64_t) override { return {}; }
        void embed(std::span<const int32_t>, float, Rows) override {}
        void rms_norm(Rows, int, Weight, double, Rows) override {}
        void linear(Rows, int, Weight, Rows, bool) override {}
        void gated_retention(const RetentionCall&, Rows, Rows, Rows, Rows, Rows) override {}
        void glu(Rows, Rows, Activation) override {}
        void gather_rows(Rows, std::span<const int64_t>, Rows) override {}
        void download(Rows, float*) override {}
    } ops;
    try {
        ops.attention({}, {}, {}, {}, {});
        FAIL() << "no exception";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "the Transformer twin is not supported on this backend yet");
    }
}

// Making a twin asks `cancelled` before the embedding, the output matrix and each layer (retnet
// cost's Ctrl-C while a large twin is made): true stops it with Cancelled; never true, the weights
// are those made without asking.
// Asked before anything is allocated; as the tensors are allocated, after the embedding and before
// each layer; then before each layer's weights are drawn, and as each weight is filled: at its
// start and every 2^20 values (a 32000 × 1024 embedding went a second without asking).
int64_t expected_asks(const Model& m) {
    int64_t asks = 1 + (1 + m.config.n_layers) + m.config.n_layers;
    auto fills = [](const Tensor& t) { return (t.numel() + (int64_t(1) << 20) - 1) >> 20; };
    asks += fills(m.weights.embed) + fills(m.weights.lm_head);
    for (const LayerWeights& l : m.weights.layers)
        for (const Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
            asks += fills(*t);
    return asks;
}

TEST(Twin, MakingOneAsksCancelledBeforeEachLayer) {
    ModelConfig retnet = test::small_config(Family::Fla);
    int asked = 0;
    const Model asked_twin = make_transformer_twin(retnet, 9, [&asked] { return ++asked < 0; });
    EXPECT_EQ(asked, expected_asks(asked_twin));
    const Model plain = make_transformer_twin(retnet, 9);
    EXPECT_EQ(asked_twin.weights.layers[1].ffn_out.data, plain.weights.layers[1].ffn_out.data);
    EXPECT_EQ(asked_twin.weights.embed.data, plain.weights.embed.data);
    asked = 0;
    EXPECT_THROW(make_transformer_twin(retnet, 9, [&asked] { return ++asked == 3; }), Cancelled);
    EXPECT_EQ(asked, 3);  // stopped before the first layer's weights
    // An embedding of 100000 × 32 (3.2M values) asks 4 times as it is drawn, and a cancel at its
    // second ask stops inside it.
    retnet.vocab_size = 100000;
    asked = 0;
    const Model wide = make_transformer_twin(retnet, 9, [&asked] { return ++asked < 0; });
    ASSERT_EQ(wide.weights.embed.numel(), 100000 * retnet.d_model);
    EXPECT_EQ(asked, expected_asks(wide));
    const int inside = 1 + (1 + retnet.n_layers) + 2;
    asked = 0;
    EXPECT_THROW(make_transformer_twin(retnet, 9, [&](){ return ++asked == inside; }), Cancelled);
    EXPECT_EQ(asked, inside);
}

// generate() prefills and decodes a twin on the CPU: greedy tokens equal the argmax of the
// reference's logits over the growing sequence, and a fork replays from a checkpoint.
TEST(Twin, GeneratesOnTheCpu) {
    std::shared_ptr<const Model> model = twin_model(19, /*tied=*/false);
    std::unique_ptr<Backend> cpu = make_cpu_backend(model);
    Generator generator(*cpu, nullptr);
    GenerationParams params;
    params.max_new_tokens = 10;
    params.sampler.temperature = 0.0;
    params.stop_at_eos = false;
    const std::vector<int32_t> prompt = {1, 17, 5, 33, 8, 21};
    const GenerationResult result = generator.generate(prompt, params);
    ASSERT_EQ(result.tokens.size(), 10u);

    std::vector<int32_t> sequence = prompt;
    for (int32_t token : result.tokens) {
        std::unique_ptr<Backend> ref = make_reference_backend(model);
        const SequenceRequest request{sequence, 0, LogitRows::Last};
        const Tensor logits = ref->forward_batch({&request, 1}, {})[0];
        const auto best = std::max_element(logits.data.begin(), logits.data.end()) - logits.data.begin();
        EXPECT_EQ(token, best);
        sequence.push_back(token);
    }
    // Regenerating from the middle replays from a saved KV cache and gives the same greedy tail.
    const GenerationResult again = generator.fork(static_cast<int64_t>(prompt.size()) + 4, std::nullopt, params);
    ASSERT_GE(again.tokens.size(), 6u);
    EXPECT_TRUE(std::equal(again.tokens.begin(), again.tokens.begin() + 6, result.tokens.begin() + 4));
}

// Batched decoding (`retnet serve`'s path): three greedy requests in three slots, started at
// different steps so that their caches hold different lengths, give each its lone generation.
TEST(Twin, BatchedGenerationEqualsEachAlone) {
    std::shared_ptr<const Model> model = twin_model(23);
    GenerationParams params;
    params.max_new_tokens = 7;
    params.sampler.temperature = 0.0;
    params.stop_at_eos = false;
    const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {9}, {40, 41, 42, 43, 44, 45, 46, 47, 48}};
    std::unique_ptr<Backend> backend = make_cpu_backend(model);
    BatchGenerator batch(*backend, nullptr, 3);
    std::vector<std::vector<int32_t>> got(3);
    for (size_t i = 0; i < prompts.size(); ++i) {
        BatchRequest request;
        request.prompt = prompts[i];
        request.params = params;
        request.on_done = [&got, i](const GenerationResult& r, const std::string& error) {
            EXPECT_EQ(error, "");
            got[i] = r.tokens;
        };
        batch.add(std::move(request));
        batch.step();
    }
    while (batch.active() > 0) batch.step();
    for (size_t i = 0; i < prompts.size(); ++i) {
        std::unique_ptr<Backend> alone = make_cpu_backend(model);
        Generator generator(*alone, nullptr);
        EXPECT_EQ(got[i], generator.generate(prompts[i], params).tokens) << i;
        EXPECT_EQ(got[i].size(), 7u);
    }
}

}  // namespace
}  // namespace retnet
