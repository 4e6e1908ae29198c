// SPDX-License-Identifier: GPL-3.0-or-later
// Batched decoding: sequences decoded together (one forward_batch per step, each in its own slot,
// joining and leaving at different steps) give exactly what each gives alone through the
// Generator, greedy and seeded; finished and cancelled sequences free their slots (a twin's its
// KV cache too).
#include <gtest/gtest.h>

#include <map>

#include "retnet/batch_generate.h"
#include "retnet/error.h"
#include "forwarding_backend.h"
#include "test_models.h"

namespace retnet {
namespace {

struct Outcome {
    std::vector<int32_t> tokens;
    std::string text, streamed, error;
    StopReason reason = StopReason::None;
};

// Each case: prompt, max new tokens, sampler. Different lengths so sequences leave at different steps.
struct Case {
    std::vector<int32_t> prompt;
    GenerationParams params;
};

// With a repetition penalty each step sends back whole rows; without one, their best logits.
std::vector<Case> cases(int vocab, bool greedy, double repeat_penalty = 1.1) {
    std::vector<Case> out;
    for (int i = 0; i < 5; ++i) {
        Case c;
        c.prompt = test::random_tokens(1 + 7 * i, vocab, 100 + static_cast<uint64_t>(i));  // 1 token: recurrent prefill
        c.params.max_new_tokens = 6 + 5 * i;
        c.params.prefill_form = i % 2 ? Form::Chunkwise : Form::Parallel;
        c.params.n_top = 0;
        c.params.sampler.temperature = greedy ? 0.0 : 0.9;
        c.params.sampler.top_k = greedy ? 0 : 20;
        c.params.sampler.repeat_penalty = repeat_penalty;
        c.params.sampler.seed = 7 + static_cast<uint64_t>(i);
        out.push_back(c);
    }
    return out;
}

std::vector<Outcome> alone(Backend& backend, const Tokenizer* tokenizer, const std::vector<Case>& cs) {
    Generator generator(backend, tokenizer);
    std::vector<Outcome> out;
    for (const Case& c : cs) {
        Outcome o;
        const GenerationResult r =
            generator.generate(c.prompt, c.params, [&](const TokenEvent& e) { o.streamed += e.stream_text; });
        o.tokens = r.tokens;
        o.text = r.text;
        o.reason = r.stats.stop_reason;
        out.push_back(o);
    }
    return out;
}

// `slots` sequences at most at once; the others join as slots free up, one per step.
std::vector<Outcome> together(Backend& backend, const Tokenizer* tokenizer, const std::vector<Case>& cs, int slots) {
    BatchGenerator batch(backend, tokenizer, slots);
    std::vector<Outcome> out(cs.size());
    size_t next = 0;
    int done = 0;
    while (done < static_cast<int>(cs.size())) {
        if (next < cs.size() && batch.has_free_slot()) {
            Outcome& o = out[next];
            BatchRequest request{cs[next].prompt, cs[next].params, {}, {}};
            request.on_token = [&o](const TokenEvent& e) { o.streamed += e.stream_text; };
            request.on_done = [&o, &done](const GenerationResult& r, const std::string& error) {
                o.tokens = r.tokens;
                o.text = r.text;
                o.reason = r.stats.stop_reason;
                o.error = error;
                ++done;
            };
            batch.add(std::move(request));
            ++next;
        }
        EXPECT_LE(batch.active(), slots);
        batch.step();
    }
    return out;
}

void expect_same(const std::vector<Outcome>& a, const std::vector<Outcome>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        SCOPED_TRACE("sequence " + std::to_string(i));
        EXPECT_EQ(b[i].error, "");
        EXPECT_EQ(a[i].tokens, b[i].tokens);
        EXPECT_EQ(a[i].text, b[i].text);
        EXPECT_EQ(a[i].streamed, b[i].streamed);
        EXPECT_EQ(a[i].reason, b[i].reason);
    }
}

// Counts the forwards (prefills and steps) that asked for best logits and those that asked for
// whole rows, passing everything to a CPU backend.
class RowCounter final : public test::ForwardingBackend {
public:
    explicit RowCounter(std::shared_ptr<const Model> model) : ForwardingBackend(make_cpu_backend(std::move(model))) {}
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection) override {
        ++(batch.front().logits == LogitRows::LastBest ? best_steps : row_steps);
        return ForwardingBackend::forward_batch(batch, options, introspection);
    }

    int best_steps = 0, row_steps = 0;
};

TEST(BatchGenerate, GreedyAndSeededSequencesDecodedTogetherEqualEachAlone) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        SCOPED_TRACE(family_name(family));
        auto model = test::small_model(family, 3);
        auto backend = make_cpu_backend(model);
        for (bool greedy : {true, false}) {
            const std::vector<Case> cs = cases(model->config.vocab_size, greedy);
            const std::vector<Outcome> reference = alone(*backend, nullptr, cs);
            for (const Outcome& o : reference) ASSERT_FALSE(o.tokens.empty());
            for (int slots : {1, 3, 5}) {
                SCOPED_TRACE(std::to_string(slots) + " slots");
                expect_same(reference, together(*backend, nullptr, cs, slots));
            }
        }
    }
}

// Without a penalty every sampler needs only its best logits (greedy 1, top-k 20): the steps ask
// for those alone, and the tokens are still those of each sequence alone; one penalized sequence
// among them makes the steps send whole rows again while it is decoded.
TEST(BatchGenerate, StepsSendBackTheBestLogitsWhereEverySamplerAllowsIt) {
    for (Family family : {Family::Fla, Family::TorchScale}) {
        SCOPED_TRACE(family_name(family));
        auto model = test::small_model(family, 3);
        auto backend = make_cpu_backend(model);
        for (bool greedy : {true, false}) {
            std::vector<Case> cs = cases(model->config.vocab_size, greedy, 1.0);
            const std::vector<Outcome> reference = alone(*backend, nullptr, cs);
            RowCounter counter(model);
            expect_same(reference, together(counter, nullptr, cs, 3));
            EXPECT_GT(counter.best_steps, 0);
            EXPECT_EQ(counter.row_steps, 0);

            cs[4].params.sampler.repeat_penalty = 1.3;  // the longest: it joins last and ends last
            const std::vector<Outcome> mixed_reference = alone(*backend, nullptr, cs);
            RowCounter mixed(model);
            expect_same(mixed_reference, together(mixed, nullptr, cs, 3));
            EXPECT_GT(mixed.best_steps, 0);
            EXPECT_GT(mixed.row_steps, 0);
        }
    }
}

TEST(BatchGenerate, BundledModelTextAndStopsMatchTheGenerator) {
    const std::string dir = std::string(RETNET_TEST_DATA_DIR) + "/../../resources/models/default";
    auto model = std::make_shared<const Model>(load_model(dir));
    const auto tokenizer = Tokenizer::load_from_model_dir(dir);
    auto backend = make_cpu_backend(model);
    Generator encoder(*backend, tokenizer.get());
    std::vector<Case> cs;
    for (const char* prompt : {"ROMEO:", "First Citizen:\nBefore we proceed", "KING", "O"}) {
        Case c;
        c.prompt = encoder.encode_prompt(prompt, 4096);
        c.params.max_new_tokens = 40;
        c.params.prefill_form = Form::Chunkwise;
        c.params.n_top = 0;
        c.params.sampler.temperature = cs.size() % 2 ? 0.8 : 0.0;
        c.params.sampler.top_k = 40;  // with greedy ones: the steps send back each row's 40 best logits
        c.params.sampler.seed = 11;
        if (cs.size() == 2) c.params.stop_strings = {"\n"};
        cs.push_back(c);
    }
    const std::vector<Outcome> reference = alone(*backend, tokenizer.get(), cs);
    EXPECT_EQ(reference[2].reason, StopReason::StopString);  // the stop path is exercised
    expect_same(reference, together(*backend, tokenizer.get(), cs, 4));
}

TEST(BatchGenerate, CancelledAndFailedSequencesFreeTheirSlots) {
    auto model = test::small_model(Family::Fla, 5);
    auto backend = make_cpu_backend(model);
    BatchGenerator batch(*backend, nullptr, 2);
    std::atomic<bool> stop{false};
    std::map<std::string, Outcome> out;
    const auto request = [&](const std::string& name, std::vector<int32_t> prompt) {
        BatchRequest r{std::move(prompt), {}, {}, {}};
        r.params.max_new_tokens = 1000;
        r.on_done = [&out, name](const GenerationResult& g, const std::string& error) {
            out[name] = {g.tokens, g.text, "", error, g.stats.stop_reason};
        };
        return r;
    };
    BatchRequest a = request("a", {1, 2, 3});
    a.stop = &stop;
    batch.add(std::move(a));
    batch.add(request("b", {4, 5}));
    EXPECT_FALSE(batch.has_free_slot());
    EXPECT_THROW(batch.add(request("c", {6})), Error);
    batch.step();
    stop = true;
    batch.step();  // "a" leaves before the forward call
    ASSERT_EQ(out.count("a"), 1u);
    EXPECT_EQ(out["a"].reason, StopReason::Cancelled);
    EXPECT_EQ(out["a"].tokens.size(), 2u);
    EXPECT_EQ(batch.active(), 1);
    batch.add(request("bad", {1, 999}));  // outside the vocabulary: an error, the slot freed at once
    EXPECT_NE(out["bad"].error.find("outside the vocabulary"), std::string::npos) << out["bad"].error;
    EXPECT_EQ(batch.active(), 1);
    EXPECT_TRUE(batch.has_free_slot());
    BatchRequest cold = request("cold", {1});  // the sampler's params are refused the same way, not thrown
    cold.params.sampler.temperature = 1e-200;
    batch.add(std::move(cold));
    EXPECT_NE(out["cold"].error.find("temperature"), std::string::npos) << out["cold"].error;
    EXPECT_EQ(batch.active(), 1);
    EXPECT_TRUE(batch.has_free_slot());
}

// The server counts the KV caches of running requests only: a twin's finished sequence frees its
// cache at once, not when its slot is next used; the sequence beside it keeps its own.
TEST(BatchGenerate, ATwinsFinishedSequenceFreesItsKvCacheAtOnce) {
    const auto twin = std::make_shared<const Model>(make_transformer_twin(test::small_config(Family::Fla), 3));
    const auto backend = make_cpu_backend(twin);
    BatchGenerator batch(*backend, nullptr, 2);
    GenerationParams params;
    params.max_new_tokens = 2;
    params.n_top = 0;
    params.sampler.temperature = 0.0;
    bool short_done = false;
    batch.add({test::random_tokens(5, twin->config.vocab_size, 1), params, {},
               [&](const GenerationResult&, const std::string&) { short_done = true; }});
    params.max_new_tokens = 8;
    batch.add({test::random_tokens(7, twin->config.vocab_size, 2), params, {}, {}});
    while (!short_done) batch.step();
    EXPECT_EQ(backend->snapshot(0).position, 0);
    EXPECT_TRUE(backend->snapshot(0).layers[0].K.empty());
    EXPECT_EQ(backend->snapshot(1).position, 7 + 1);  // its prompt and the token the step fed
    EXPECT_EQ(batch.active(), 1);
}

}  // namespace
}  // namespace retnet
