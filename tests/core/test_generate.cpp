// SPDX-License-Identifier: GPL-3.0-or-later
// The generation loop: prefill/decode split, determinism, continue, cancellation, stop strings,
// EOS, checkpoints and forks. Loop logic runs on a fake backend whose state is the token history
// (so states compare exactly); the real CPU and reference backends check the form handoff.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"
#include "retnet/error.h"
#include "retnet/generate.h"
#include "test_models.h"

namespace retnet {
namespace {

// The state is the token history itself; logits are a hash of it, or, with a script, peaked on
// script[position] (then EOS after the script ends).
class HistoryBackend : public Backend {
public:
    struct Call {
        size_t tokens;
        Form form;
    };

    explicit HistoryBackend(int vocab, std::vector<int32_t> script = {}) : script_(std::move(script)) {
        model_.config.vocab_size = vocab;
        model_.config.bos_token_id = 1;
        model_.config.eos_token_id = 2;
    }

    std::string name() const override { return "history"; }
    const Model& model() const override { return model_; }

    // One sequence in slot 0; the logits rows it returns are the ones asked for.
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* = nullptr) override {
        const std::span<const int32_t> tokens = batch[0].tokens;
        calls.push_back({tokens.size(), options.form});
        const int V = model_.config.vocab_size;
        Tensor logits({static_cast<int64_t>(tokens.size()), V});
        for (size_t t = 0; t < tokens.size(); ++t) {
            if (tokens[t] < 0 || tokens[t] >= V) throw Error("token outside the vocabulary");
            history_.push_back(tokens[t]);
            fill_logits(logits.ptr() + t * static_cast<size_t>(V));
        }
        if (batch[0].logits == LogitRows::All) return {logits};
        Tensor last({1, V});
        std::copy(logits.data.end() - V, logits.data.end(), last.data.begin());
        return {last};
    }

    int slot_count() const override { return 1; }
    void set_slot_count(int) override {}
    void reset(int = 0) override { history_.clear(); }
    RecurrentState snapshot(int = 0) const override {
        RecurrentState state;
        state.position = static_cast<int64_t>(history_.size());
        state.layers.resize(1);
        state.layers[0].S.assign(history_.begin(), history_.end());  // ids < 2^24 are exact in float
        return state;
    }
    void restore(const RecurrentState& state, int = 0) override {
        history_.assign(state.layers.at(0).S.begin(), state.layers.at(0).S.end());
    }

    const std::vector<int32_t>& history() const { return history_; }
    std::vector<Call> calls;

private:
    void fill_logits(float* row) const {
        const int V = model_.config.vocab_size;
        uint64_t h = 1469598103934665603ull;
        for (int32_t id : history_) h = (h ^ static_cast<uint64_t>(id)) * 1099511628211ull;
        for (int v = 0; v < V; ++v) {
            uint64_t x = h ^ (static_cast<uint64_t>(v) * 0x9E3779B97F4A7C15ull);
            x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
            row[v] = static_cast<float>(static_cast<double>(x >> 11) * 0x1.0p-53 * 4.0 - 2.0);
        }
        if (!script_.empty()) {
            const size_t n = history_.size();
            row[n < script_.size() ? script_[n] : model_.config.eos_token_id] = 20.0f;
        }
    }

    Model model_;
    std::vector<int32_t> script_;
    std::vector<int32_t> history_;
};

const Tokenizer& test_tokenizer() {
    static const Tokenizer tokenizer = [] {
        std::ifstream in(std::string(RETNET_TEST_DATA_DIR) + "/tokenizer/corpus.txt");
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) lines.push_back(line);
        TokenizerTrainOptions options;
        options.vocab_size = 420;
        return Tokenizer::from_serialized(train_tokenizer(lines, options));
    }();
    return tokenizer;
}

GenerationParams sampling_params(int max_new_tokens, uint64_t seed = 7) {
    GenerationParams params;
    params.max_new_tokens = max_new_tokens;
    params.sampler.temperature = 0.8;
    params.sampler.top_p = 0.95;
    params.sampler.seed = seed;
    params.stop_at_eos = false;
    return params;
}

GenerationParams greedy_params(int max_new_tokens) {
    GenerationParams params;
    params.max_new_tokens = max_new_tokens;
    params.sampler.temperature = 0.0;
    params.stop_at_eos = false;
    return params;
}

const std::vector<int32_t> kPrompt = {1, 17, 5, 33, 8, 21};

TEST(Generate, PrefillsOnceThenDecodesOneTokenPerRecurrentStep) {
    for (Form form : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
        HistoryBackend backend(64);
        Generator generator(backend, nullptr);
        GenerationParams params = sampling_params(12);
        params.prefill_form = form;
        std::vector<TokenEvent> events;
        const GenerationResult result = generator.generate(kPrompt, params, [&](const TokenEvent& e) { events.push_back(e); });

        ASSERT_EQ(result.tokens.size(), 12u);
        EXPECT_EQ(result.stats.stop_reason, StopReason::MaxTokens);
        EXPECT_EQ(result.stats.prefill_tokens, 6);
        EXPECT_EQ(result.stats.generated_tokens, 12);
        ASSERT_EQ(backend.calls.size(), 12u);  // the prompt, then 11 fed-back tokens (the last is pending)
        EXPECT_EQ(backend.calls[0].tokens, kPrompt.size());
        EXPECT_EQ(backend.calls[0].form, form);
        for (size_t i = 1; i < backend.calls.size(); ++i) {
            EXPECT_EQ(backend.calls[i].tokens, 1u);
            EXPECT_EQ(backend.calls[i].form, Form::Recurrent);
        }
        ASSERT_EQ(events.size(), 12u);
        for (size_t i = 0; i < events.size(); ++i) {
            EXPECT_EQ(events[i].position, static_cast<int64_t>(kPrompt.size() + i));
            EXPECT_EQ(events[i].id, result.tokens[i]);
            EXPECT_FALSE(events[i].forced);
            EXPECT_EQ(events[i].top.size(), 10u);
            EXPECT_FALSE(events[i].top_filtered.empty());
            EXPECT_GE(events[i].step_ms, 0.0);
        }
        std::vector<int32_t> expected = kPrompt;
        expected.insert(expected.end(), result.tokens.begin(), result.tokens.end());
        EXPECT_EQ(generator.tokens(), expected);
        EXPECT_EQ(generator.prompt_length(), 6);
    }
}

TEST(Generate, SameSeedSameTokensWhateverThePrefillForm) {
    auto run = [](Form form, uint64_t seed) {
        HistoryBackend backend(64);
        Generator generator(backend, nullptr);
        GenerationParams params = sampling_params(40, seed);
        params.prefill_form = form;
        return generator.generate(kPrompt, params).tokens;
    };
    const auto reference = run(Form::Parallel, 99);
    EXPECT_EQ(run(Form::Chunkwise, 99), reference);
    EXPECT_EQ(run(Form::Recurrent, 99), reference);
    EXPECT_NE(run(Form::Parallel, 100), reference);
}

TEST(Generate, ContinueCarriesTheRandomStream) {
    HistoryBackend backend_a(64), backend_b(64);
    Generator whole(backend_a, nullptr), parts(backend_b, nullptr);
    const auto all = whole.generate(kPrompt, sampling_params(30)).tokens;
    auto first = parts.generate(kPrompt, sampling_params(12)).tokens;
    const auto rest = parts.continue_generation(sampling_params(18)).tokens;
    first.insert(first.end(), rest.begin(), rest.end());
    EXPECT_EQ(first, all);
    EXPECT_EQ(parts.tokens(), whole.tokens());
}

// A chat turn: the backend runs only the new tokens and the pending last reply token, and the reply
// equals a fresh generate() over the whole conversation with the same seed.
TEST(Generate, ExtendRunsOnlyTheNewTokensAndEqualsGenerateOverTheWholeSequence) {
    const std::vector<int32_t> turn2 = {40, 41, 42};
    HistoryBackend backend(64), reference_backend(64);
    Generator chat(backend, nullptr), reference(reference_backend, nullptr);
    const auto reply1 = chat.extend(kPrompt, sampling_params(9)).tokens;  // empty sequence: generate()
    ASSERT_EQ(reply1.size(), 9u);
    const size_t calls_before = backend.calls.size();
    const GenerationResult reply2 = chat.extend(turn2, sampling_params(11));
    ASSERT_EQ(reply2.tokens.size(), 11u);
    EXPECT_EQ(reply2.stats.prefill_tokens, 4);  // the last reply token and the 3 new ones
    EXPECT_EQ(backend.calls.at(calls_before).tokens, 4u);

    std::vector<int32_t> whole = kPrompt;
    whole.insert(whole.end(), reply1.begin(), reply1.end());
    whole.insert(whole.end(), turn2.begin(), turn2.end());
    const GenerationResult expected = reference.generate(whole, sampling_params(11));
    EXPECT_EQ(reply2.tokens, expected.tokens);
    EXPECT_EQ(chat.tokens(), reference.tokens());
    EXPECT_THROW(chat.extend(std::vector<int32_t>{}, sampling_params(1)), Error);
    EXPECT_THROW(chat.extend(std::vector<int32_t>{64}, sampling_params(1)), Error);
}

TEST(Generate, CancellationStopsBetweenTokensAndCanBeContinued) {
    HistoryBackend backend(64), reference_backend(64);
    Generator generator(backend, nullptr), reference(reference_backend, nullptr);
    const auto expected = reference.generate(kPrompt, sampling_params(20)).tokens;

    std::atomic<bool> stop{false};
    int seen = 0;
    const auto result = generator.generate(kPrompt, sampling_params(20), [&](const TokenEvent&) {
        if (++seen == 5) stop = true;
    }, &stop);
    EXPECT_EQ(result.stats.stop_reason, StopReason::Cancelled);
    ASSERT_EQ(result.tokens.size(), 5u);

    // Already set before the call: nothing runs at all.
    const auto none = generator.continue_generation(sampling_params(10), {}, &stop);
    EXPECT_EQ(none.stats.stop_reason, StopReason::Cancelled);
    EXPECT_TRUE(none.tokens.empty());

    stop = false;
    auto tokens = result.tokens;
    const auto rest = generator.continue_generation(sampling_params(15), {}, &stop).tokens;
    tokens.insert(tokens.end(), rest.begin(), rest.end());
    EXPECT_EQ(tokens, expected);
}

TEST(Generate, StopsAtEosAndIncludesIt) {
    HistoryBackend backend(64, {1, 10, 11, 12, 13, 14});  // then EOS (2)
    Generator generator(backend, nullptr);
    GenerationParams params = greedy_params(50);
    params.stop_at_eos = true;
    const auto result = generator.generate(std::vector<int32_t>{1, 10, 11}, params);
    EXPECT_EQ(result.tokens, (std::vector<int32_t>{12, 13, 14, 2}));
    EXPECT_EQ(result.stats.stop_reason, StopReason::Eos);
}

TEST(Generate, StreamedTextIsValidUtf8AtEveryPrefixAndMatchesDecode) {
    const Tokenizer& tokenizer = test_tokenizer();
    const std::string text = "The robot \xF0\x9F\xA4\x96 counted e\xCC\x81 \xE4\xB8\xAD\xE6\x96\x87 and said \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!";
    std::vector<int32_t> script = {1};
    for (int32_t id : tokenizer.encode(text)) script.push_back(id);
    HistoryBackend backend(tokenizer.vocab_size(), script);
    Generator generator(backend, &tokenizer);
    std::string streamed;
    int empty_events = 0;
    const auto result = generator.generate(std::vector<int32_t>{1}, greedy_params(static_cast<int>(script.size()) - 1),
                                           [&](const TokenEvent& e) {
                                               ASSERT_TRUE(is_valid_utf8(e.text));
                                               streamed += e.text;
                                               ASSERT_TRUE(is_valid_utf8(streamed));
                                               empty_events += e.text.empty();
                                           });
    EXPECT_EQ(streamed, text);
    EXPECT_EQ(result.text, text);
    EXPECT_EQ(generator.text(1), text);
    EXPECT_GE(empty_events, 3 + 3 + 3);  // three 4-byte characters arrive byte by byte at least
}

TEST(Generate, StopStringEndsGenerationAndIsNeverStreamed) {
    const Tokenizer& tokenizer = test_tokenizer();
    const std::string text = "one ST two STOP three STOP four";
    std::vector<int32_t> script = {1};
    for (int32_t id : tokenizer.encode(text)) script.push_back(id);
    HistoryBackend backend(tokenizer.vocab_size(), script);
    Generator generator(backend, &tokenizer);
    GenerationParams params = greedy_params(100);
    params.stop_strings = {"STOP", "never"};
    std::string streamed;
    const auto result = generator.generate(std::vector<int32_t>{1}, params, [&](const TokenEvent& e) {
        streamed += e.stream_text;
        EXPECT_EQ(streamed.find("ST", 8), std::string::npos) << "held-back text leaked: " << streamed;
    });
    EXPECT_EQ(result.stats.stop_reason, StopReason::StopString);
    EXPECT_EQ(result.stats.stop_string, "STOP");
    EXPECT_EQ(result.text, "one ST two ");
    EXPECT_EQ(streamed, "one ST two ");
    // The token that completed the stop string is part of the sequence.
    EXPECT_NE(generator.text(1).find("STOP"), std::string::npos);
}

TEST(Generate, HeldBackTextIsReleasedWhenTheStopStringDoesNotComplete) {
    const Tokenizer& tokenizer = test_tokenizer();
    std::vector<int32_t> script = {1};
    for (int32_t id : tokenizer.encode("robots say STO")) script.push_back(id);
    HistoryBackend backend(tokenizer.vocab_size(), script);
    Generator generator(backend, &tokenizer);
    GenerationParams params = greedy_params(static_cast<int>(script.size()) - 1);
    params.stop_strings = {"STOP"};
    std::string streamed;
    const auto result = generator.generate(std::vector<int32_t>{1}, params,
                                           [&](const TokenEvent& e) { streamed += e.stream_text; });
    EXPECT_EQ(result.stats.stop_reason, StopReason::MaxTokens);
    EXPECT_EQ(streamed, "robots say ");  // "STO" might have become "STOP"
    EXPECT_EQ(result.text, "robots say STO");
}

TEST(Generate, StateAtAnyPositionMatchesAFreshRun) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    GenerationParams params = sampling_params(30);
    params.checkpoint_interval = 8;
    generator.generate(kPrompt, params);
    const std::vector<int32_t> sequence = generator.tokens();
    for (int64_t position : {0, 3, 6, 7, 8, 16, 17, 35, 36}) {
        const RecurrentState state = generator.state_at(position);
        EXPECT_EQ(state.position, position);
        HistoryBackend fresh(64);
        if (position > 0) fresh.forward(std::span(sequence).first(static_cast<size_t>(position)), {});
        EXPECT_EQ(state.layers[0].S, fresh.snapshot().layers[0].S) << "position " << position;
    }
}

TEST(Generate, RewindingReplaysAtMostTheCheckpointInterval) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    GenerationParams params = sampling_params(40);
    params.checkpoint_interval = 16;
    generator.generate(kPrompt, params);  // checkpoints at 6 (prompt end), 16, 32
    backend.calls.clear();
    generator.state_at(30);
    ASSERT_EQ(backend.calls.size(), 1u);
    EXPECT_EQ(backend.calls[0].tokens, 14u);  // from the checkpoint at 16
    backend.calls.clear();
    generator.state_at(32);
    EXPECT_TRUE(backend.calls.empty());  // exactly on a checkpoint
}

// A long generation keeps its checkpoints within the memory budget; rewinding stays exact and
// only replays more tokens.
TEST(Generate, CheckpointsStayWithinTheirMemoryBudget) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    GenerationParams params = sampling_params(200);
    params.checkpoint_interval = 4;
    params.checkpoint_budget_bytes = 0;  // the floor: three checkpoints' worth
    generator.generate(kPrompt, params);
    EXPECT_LE(generator.checkpoint_count(), 4u);
    const std::vector<int32_t> sequence = generator.tokens();
    for (int64_t position : {1, 6, 7, 50, 101, 150, 205}) {
        const RecurrentState state = generator.state_at(position);
        HistoryBackend fresh(64);
        fresh.forward(std::span(sequence).first(static_cast<size_t>(position)), {});
        EXPECT_EQ(state.layers[0].S, fresh.snapshot().layers[0].S) << "position " << position;
    }
    EXPECT_LE(generator.checkpoint_count(), 4u);
}

TEST(Generate, ForkWithTheOriginalTokenReproducesTheContinuation) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    GenerationParams params = greedy_params(25);
    params.checkpoint_interval = 5;
    const auto original = generator.generate(kPrompt, params).tokens;
    const std::vector<int32_t> sequence = generator.tokens();

    const int64_t position = 15;
    std::vector<TokenEvent> events;
    const auto forked = generator.fork(position, sequence[position], greedy_params(16),
                                       [&](const TokenEvent& e) { events.push_back(e); });
    ASSERT_EQ(forked.tokens.size(), 16u);
    EXPECT_EQ(generator.tokens(), sequence);
    EXPECT_TRUE(events[0].forced);
    EXPECT_EQ(events[0].position, position);
    EXPECT_TRUE(events[0].top_filtered.empty());
    EXPECT_EQ(events[0].top[0].id, sequence[position]);  // greedy picked the most likely token
    EXPECT_FALSE(events[1].forced);
}

TEST(Generate, ForkWithAnAlternativeTokenBranches) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    const auto original = generator.generate(kPrompt, greedy_params(20)).tokens;
    const int64_t position = 10;
    const int32_t alternative = (generator.tokens()[position] + 1) % 64;
    const auto branch = generator.fork(position, alternative, greedy_params(10)).tokens;
    ASSERT_EQ(branch.size(), 10u);
    EXPECT_EQ(branch[0], alternative);
    EXPECT_EQ(generator.length(), position + 10);

    // The branch equals a fresh generation from the prefix plus the alternative.
    std::vector<int32_t> prefix(generator.tokens().begin(), generator.tokens().begin() + position + 1);
    HistoryBackend fresh_backend(64);
    Generator fresh(fresh_backend, nullptr);
    const auto expected = fresh.generate(prefix, greedy_params(9)).tokens;
    EXPECT_EQ(std::vector<int32_t>(branch.begin() + 1, branch.end()), expected);
}

TEST(Generate, RegenerateResamplesWithTheGivenSeed) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    const auto first = generator.generate(kPrompt, sampling_params(20, 1)).tokens;
    const auto again_same_seed = generator.fork(generator.prompt_length(), std::nullopt, sampling_params(20, 1)).tokens;
    EXPECT_EQ(again_same_seed, first);
    const auto other_seed = generator.fork(generator.prompt_length(), std::nullopt, sampling_params(20, 2)).tokens;
    EXPECT_NE(other_seed, first);
}

TEST(Generate, CheckpointRestoredInAnotherGeneratorContinuesIdentically) {
    HistoryBackend backend_a(64), backend_b(64);
    Generator a(backend_a, nullptr), b(backend_b, nullptr);
    a.generate(kPrompt, greedy_params(12));
    const GenerationCheckpoint saved = a.checkpoint(14);
    EXPECT_EQ(saved.tokens.size(), 14u);
    EXPECT_EQ(saved.state.position, 14);
    EXPECT_EQ(saved.prompt_length, 6);
    const auto continued_a = a.continue_generation(greedy_params(10)).tokens;

    b.restore(saved);
    EXPECT_EQ(b.length(), 14);
    const auto continued_b = b.continue_generation(greedy_params(18)).tokens;
    // a continued from 18 tokens, b from 14: b's tokens 4..14 are a's continuation.
    EXPECT_EQ(std::vector<int32_t>(continued_b.begin() + 4, continued_b.begin() + 14), continued_a);
    EXPECT_EQ(std::vector<int32_t>(b.tokens().begin(), b.tokens().begin() + 18),
              std::vector<int32_t>(a.tokens().begin(), a.tokens().begin() + 18));
}

TEST(Generate, StateRebuiltAfterSomeoneElseUsedTheBackend) {
    HistoryBackend backend(64), reference_backend(64);
    Generator generator(backend, nullptr), reference(reference_backend, nullptr);
    const auto expected = reference.generate(kPrompt, greedy_params(20)).tokens;
    auto tokens = generator.generate(kPrompt, greedy_params(8)).tokens;
    backend.reset();  // an analysis ran other tokens on the same backend
    backend.forward(std::vector<int32_t>{9, 9, 9}, {});
    generator.backend_state_changed();
    const auto rest = generator.continue_generation(greedy_params(12)).tokens;
    tokens.insert(tokens.end(), rest.begin(), rest.end());
    EXPECT_EQ(tokens, expected);
}

TEST(Generate, EncodePromptHandlesBosEmptyInvalidAndLongPrompts) {
    const Tokenizer& tokenizer = test_tokenizer();
    HistoryBackend backend(tokenizer.vocab_size());
    Generator generator(backend, &tokenizer);
    EXPECT_EQ(generator.bos_id(), 1);
    EXPECT_EQ(generator.eos_id(), 2);
    EXPECT_EQ(generator.encode_prompt("", 100), std::vector<int32_t>{1});
    const auto ids = generator.encode_prompt("the robot", 100);
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(tokenizer.decode(ids), "the robot");
    EXPECT_EQ(generator.encode_prompt("the robot", 100, /*add_bos=*/false).front(), ids[1]);
    // Controls and tabs pass through the tokenizer (byte fallback) and come back unchanged.
    EXPECT_EQ(tokenizer.decode(generator.encode_prompt("a\x07\tb\x1b", 100)), "a\x07\tb\x1b");

    auto message = [&](auto&& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_EQ(message([&] { generator.encode_prompt("caf\xC3", 100); }),
              "prompt: invalid UTF-8 at byte offset 3 (byte 0xC3)");
    EXPECT_EQ(message([&] { generator.encode_prompt("the robot counted tokens", 3); }).rfind("the prompt has", 0), 0u);
    EXPECT_EQ(message([&] { generator.encode_prompt("", 100, false); }),
              "the prompt is empty and the model has no BOS token to start from");

    Generator no_tokenizer(backend, nullptr);
    EXPECT_EQ(message([&] { no_tokenizer.encode_prompt("text", 100); }).rfind("this model has no tokenizer.model", 0), 0u);
    EXPECT_EQ(no_tokenizer.encode_prompt("", 100), std::vector<int32_t>{1});
}

TEST(Generate, BadArgumentsAreOneLineErrors) {
    HistoryBackend backend(64);
    Generator generator(backend, nullptr);
    EXPECT_THROW(generator.generate(std::vector<int32_t>{}, greedy_params(3)), Error);
    EXPECT_THROW(generator.generate(std::vector<int32_t>{1, 64}, greedy_params(3)), Error);
    GenerationParams short_limit = greedy_params(3);
    short_limit.max_prompt_tokens = 4;
    EXPECT_THROW(generator.generate(kPrompt, short_limit), Error);
    EXPECT_THROW(generator.continue_generation(greedy_params(3)), Error);  // nothing generated yet
    generator.generate(kPrompt, greedy_params(3));
    EXPECT_THROW(generator.fork(0, 5, greedy_params(3)), Error);
    EXPECT_THROW(generator.fork(10, 5, greedy_params(3)), Error);  // length is 9
    EXPECT_THROW(generator.fork(7, 64, greedy_params(3)), Error);
    GenerationParams empty_stop = greedy_params(3);
    empty_stop.stop_strings = {""};
    EXPECT_THROW(generator.continue_generation(empty_stop), Error);
    GenerationParams bad_sampler = greedy_params(3);
    bad_sampler.sampler.top_p = 2.0;
    EXPECT_THROW(generator.continue_generation(bad_sampler), Error);
    // Zero new tokens only prefills.
    const auto nothing = generator.generate(kPrompt, greedy_params(0));
    EXPECT_TRUE(nothing.tokens.empty());
    EXPECT_EQ(nothing.stats.prefill_tokens, 6);
}

// ---- real backends ------------------------------------------------------------------------

class GenerateOnRealBackend : public ::testing::TestWithParam<std::tuple<std::string, Family>> {};

TEST_P(GenerateOnRealBackend, GreedyOutputIsTheSameWhicheverFormPrefilled) {
    const auto [device, family] = GetParam();
    auto model = test::small_model(family, 5);
    const std::vector<int32_t> prompt = test::random_tokens(21, model->config.vocab_size, 3);  // 2.6 chunks of 8
    std::vector<int32_t> reference;
    for (Form form : {Form::Parallel, Form::Chunkwise, Form::Recurrent}) {
        auto backend = make_backend(device, model);
        Generator generator(*backend, nullptr);
        GenerationParams params = greedy_params(24);
        params.prefill_form = form;
        const auto tokens = generator.generate(prompt, params).tokens;
        ASSERT_EQ(tokens.size(), 24u);
        if (reference.empty()) reference = tokens;
        EXPECT_EQ(tokens, reference) << form_name(form) << " prefill on " << device;
    }
}

TEST_P(GenerateOnRealBackend, SnapshotRestoreGivesTheSameContinuation) {
    const auto [device, family] = GetParam();
    auto model = test::small_model(family, 6);
    const std::vector<int32_t> prompt = test::random_tokens(9, model->config.vocab_size, 4);
    auto backend = make_backend(device, model);
    Generator generator(*backend, nullptr);
    GenerationParams params = sampling_params(30, 17);
    params.checkpoint_interval = 7;
    generator.generate(prompt, params);
    const std::vector<int32_t> sequence = generator.tokens();

    // The state rebuilt from checkpoints equals a straight recurrent run to the same position.
    auto straight = make_backend(device, model);
    ForwardOptions recurrent;
    recurrent.form = Form::Recurrent;
    straight->forward(std::span(sequence).first(25), recurrent);
    const RecurrentState rebuilt = generator.state_at(25);
    const RecurrentState expected = straight->snapshot();
    ASSERT_EQ(rebuilt.layers.size(), expected.layers.size());
    for (size_t l = 0; l < expected.layers.size(); ++l)
        for (size_t i = 0; i < expected.layers[l].S.size(); ++i)
            ASSERT_NEAR(rebuilt.layers[l].S[i], expected.layers[l].S[i],
                        1e-4 * (1.0 + std::abs(expected.layers[l].S[i])));  // float forms differ by rounding

    // Forking at 20 with the original token, greedy, twice: identical branches.
    const auto first = generator.fork(20, sequence[20], greedy_params(12)).tokens;
    const auto second = generator.fork(20, sequence[20], greedy_params(12)).tokens;
    EXPECT_EQ(first, second);
    const GenerationCheckpoint saved = generator.checkpoint(22);
    auto other_backend = make_backend(device, model);
    Generator other(*other_backend, nullptr);
    other.restore(saved);
    const auto resumed = other.continue_generation(greedy_params(10)).tokens;
    EXPECT_EQ(std::vector<int32_t>(generator.tokens().begin() + 22, generator.tokens().end()), resumed);
}

INSTANTIATE_TEST_SUITE_P(Backends, GenerateOnRealBackend,
                         ::testing::Combine(::testing::Values("cpu", "reference"),
                                            ::testing::Values(Family::Fla, Family::TorchScale)),
                         [](const auto& test_info) {
                             return std::get<0>(test_info.param) + "_" +
                                    (std::get<1>(test_info.param) == Family::Fla ? "fla" : "torchscale");
                         });


// ---- the CLI ------------------------------------------------------------------------------

using test::CliRun;
using test::run_cli;
using test::shell_quote;

class GenerateCli : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        // One directory per process: ctest -j runs the tests of this suite side by side.
        dir_ = std::filesystem::temp_directory_path() / ("retnet_test_generate_cli_" + std::to_string(getpid()));
        std::filesystem::remove_all(dir_);
        ModelConfig config = test::small_config(Family::Fla);
        config.vocab_size = test_tokenizer().vocab_size();
        config.bos_token_id = 1;
        config.eos_token_id = 2;
        model_ = std::make_shared<Model>(make_random_model(config, 11));
        save_model(*model_, (dir_ / "model").string());
        std::ofstream(dir_ / "model" / "tokenizer.model", std::ios::binary) << test_tokenizer().serialized();
    }
    static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

    static std::string model_arg() { return "generate --model " + shell_quote((dir_ / "model").string()); }

    static inline std::filesystem::path dir_;
    static inline std::shared_ptr<Model> model_;
};

TEST_F(GenerateCli, StreamsTheSameTextAsTheLibraryAndSummarizesOnStderr) {
    const CliRun r = run_cli(model_arg() + " --prompt 'the robot' --max-new-tokens 20 --greedy --ignore-eos");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto backend = make_backend("cpu", model_);
    Generator generator(*backend, &test_tokenizer());
    GenerationParams params = greedy_params(20);
    const auto expected = generator.generate(generator.encode_prompt("the robot", 4096), params);
    EXPECT_EQ(r.out, expected.text + "\n");
    EXPECT_NE(r.err.find("20 tokens"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("stopped: max-tokens"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(GenerateCli, JsonEmitsOneObjectPerTokenThenASummary) {
    const CliRun r = run_cli(model_arg() + " --prompt 'Once upon a time' --max-new-tokens 12 --seed 5 --top-n 4 "
                                       "--ignore-eos --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines(r.out);
    std::vector<nlohmann::json> objects;
    for (std::string line; std::getline(lines, line);) objects.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(objects.size(), 13u);
    std::string text;
    for (size_t i = 0; i < 12; ++i) {
        const auto& token = objects[i];
        EXPECT_EQ(token["type"], "token");
        EXPECT_EQ(token["top"].size(), 4u);
        EXPECT_FALSE(token["top_filtered"].empty());
        EXPECT_TRUE(token["top"][0].contains("piece"));
        EXPECT_EQ(token["id"], objects.back()["tokens"][i]);
        text += token["text"].get<std::string>();
    }
    const auto& summary = objects.back();
    EXPECT_EQ(summary["type"], "summary");
    EXPECT_EQ(summary["generated_tokens"], 12);
    EXPECT_EQ(summary["stop_reason"], "max-tokens");
    EXPECT_EQ(summary["text"], text);
    EXPECT_GT(summary["tokens_per_s"].get<double>(), 0.0);
}

TEST_F(GenerateCli, SameSeedSameOutputOnEveryFormAndDevice) {
    const std::string common = model_arg() + " --prompt 'The decay of each head' --max-new-tokens 16 --seed 42 "
                                             "--temperature 0.9 --ignore-eos --chunk-size 3";
    const CliRun reference = run_cli(common + " --mode parallel");
    ASSERT_EQ(reference.exit_code, 0) << reference.err;
    // "cuda" runs on the GPU where there is one and falls back to the CPU (with a notice) elsewhere.
    for (const std::string variant : {" --mode chunkwise", " --mode recurrent", " --device reference",
                                      " --device cuda", " --device cuda --mode recurrent"}) {
        const CliRun r = run_cli(common + variant);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(r.out, reference.out) << variant;
    }
    EXPECT_NE(run_cli(model_arg() + " --prompt 'The decay of each head' --max-new-tokens 16 --seed 43 --temperature 0.9 "
                                "--ignore-eos").out,
              reference.out);
}

TEST_F(GenerateCli, BadInputsGiveOneClearLine) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {" --prompt \"$(printf 'caf\\303')\"", "prompt: invalid UTF-8 at byte offset 3 (byte 0xC3)"},
        {" --prompt 'the robot counted' --max-prompt-tokens 2", "more than the limit of 2"},
        {" --prompt x --mode sideways", "unknown mode 'sideways'"},
        {" --prompt x --device tpu", "unknown device 'tpu'"},
        {" --prompt x --tokens 1,2", "give either --prompt or --tokens, not both"},
        {" --tokens 1,2,99999", "outside the vocabulary"},
        {" --prompt x --stop ''", "empty stop string"},
        {" --prompt x --top-p 1.5", "--top-p"},
        {" --prompt x --bogus 1", "unknown option --bogus"},
    };
    for (const auto& [arguments, expected] : cases) {
        const CliRun direct = run_cli(model_arg() + arguments);
        EXPECT_EQ(direct.exit_code, 1) << arguments;
        EXPECT_NE(direct.err.find(expected), std::string::npos) << arguments << " -> " << direct.err;
        EXPECT_EQ(std::count(direct.err.begin(), direct.err.end(), '\n'), 1) << direct.err;
    }
}

TEST_F(GenerateCli, EmptyPromptStartsFromBosAndStopStringsEndTheOutput) {
    const CliRun r = run_cli(model_arg() + " --prompt '' --max-new-tokens 5 --greedy --ignore-eos");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("prefill 1 token in "), std::string::npos) << r.err;

    // Whatever the model writes first becomes the stop string: the output is then empty.
    const CliRun first = run_cli(model_arg() + " --prompt 'the' --max-new-tokens 3 --greedy --ignore-eos --json");
    std::istringstream lines(first.out);
    std::string line;
    std::getline(lines, line);
    const std::string first_text = nlohmann::json::parse(line)["text"];
    ASSERT_FALSE(first_text.empty());
    const CliRun stopped = run_cli(model_arg() + " --prompt 'the' --max-new-tokens 3 --greedy --ignore-eos --stop " +
                               shell_quote(first_text));
    EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
    EXPECT_EQ(stopped.out, "\n");
    EXPECT_NE(stopped.err.find("stopped: stop-string"), std::string::npos) << stopped.err;
}

TEST_F(GenerateCli, MissingDefaultModelIsAClearError) {
    // Where the CLI looks, relative to its own executable (a build outside the tree finds none).
    const auto exe_dir = std::filesystem::path(RETNET_CLI_PATH).parent_path();
    bool bundled = false;
    for (const char* relative : {"../../resources/models/default", "../resources/models/default",
                                 "../share/retnet-studio/models/default"})
        bundled = bundled || std::filesystem::exists(exe_dir / relative / "config.json");
    const CliRun r = run_cli("generate --prompt hello --max-new-tokens 2", "env -u RETNET_DEFAULT_MODEL");
    if (bundled) {
        EXPECT_EQ(r.exit_code, 0) << r.err;
    } else {
        EXPECT_EQ(r.exit_code, 1);
        EXPECT_NE(r.err.find("no --model given and no bundled default model found at"), std::string::npos) << r.err;
    }
}

TEST_F(GenerateCli, TokenizerTrainEncodeDecode) {
    const auto out = dir_ / "trained";
    const CliRun train = run_cli("tokenizer train --text " + shell_quote(std::string(RETNET_TEST_DATA_DIR) + "/tokenizer/corpus.txt") +
                             " --vocab-size 400 --out " + shell_quote(out.string()));
    ASSERT_EQ(train.exit_code, 0) << train.err;
    EXPECT_TRUE(std::filesystem::exists(out / "tokenizer.model"));
    const std::string text = "the robot \xF0\x9F\xA4\x96 counted";
    const CliRun encode = run_cli("tokenizer encode --model " + shell_quote(out.string()) + " --text " + shell_quote(text));
    ASSERT_EQ(encode.exit_code, 0) << encode.err;
    std::string ids = encode.out;
    ids.pop_back();  // newline
    const CliRun decode = run_cli("tokenizer decode --model " + shell_quote(out.string()) + " --tokens " + ids);
    ASSERT_EQ(decode.exit_code, 0) << decode.err;
    EXPECT_EQ(decode.out, text + "\n");
    const CliRun bad = run_cli("tokenizer train --text /nonexistent.txt --vocab-size 400 --out " + shell_quote(out.string()));
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_NE(bad.err.find("/nonexistent.txt: cannot open (No such file or directory)"), std::string::npos) << bad.err;
    const std::string corpus = shell_quote(std::string(RETNET_TEST_DATA_DIR) + "/tokenizer/corpus.txt");
    const std::string model = " --model " + shell_quote(out.string());
    // what a hostile session found: each one line, naming the option
    const auto refused = [](const CliRun& r, const std::string& message) {
        test::expect_one_line_error(r, "retnet tokenizer: error: " + message);
    };
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out -"),
            "option --out: a tokenizer is a directory (tokenizer.model inside), not standard output");
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out ''"), "option --out is empty");
    refused(run_cli("tokenizer encode -m '' --text hi"), "option --model is empty (a model directory or a tokenizer.model)");
    refused(run_cli("tokenizer decode -m - --tokens 1"),
            "option --model: a tokenizer is read from a file (a model directory or a tokenizer.model), not standard input");
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out " + shell_quote((dir_ / "t2").string()) +
                    " --max-memory 1M"),
            "training a tokenizer on ");
    EXPECT_FALSE(std::filesystem::exists(dir_ / "t2"));
    // a unigram model smaller than asked says so (it said only "wrote … (unigram, 1373 pieces …)")
    const CliRun short_of = run_cli("tokenizer train --type unigram --text " + corpus + " --vocab-size 5000 --out " +
                                    shell_quote((dir_ / "u").string()));
    ASSERT_EQ(short_of.exit_code, 0) << short_of.err;
    EXPECT_NE(short_of.err.find(" pieces, byte fallback; fewer than --vocab-size 5000: the text holds no more pieces "
                                "for this model)\n"),
              std::string::npos)
        << short_of.err;
    // a file, or a device, as --out: refused before the training (it used to train, then fail to write)
    std::ofstream(dir_ / "a-file") << "x";
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out " + shell_quote((dir_ / "a-file").string())),
            "--out " + (dir_ / "a-file").string() + " is a regular file, not a directory; give --out a directory");
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out /dev/null"),
            "--out /dev/null is a character device, not a directory; give --out a directory");
    const std::string long_name = (dir_ / std::string(256, 'x')).string();  // one name past NAME_MAX
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out " + shell_quote(long_name)),
            long_name + ": cannot create the tokenizer's directory (File name too long)");
    std::filesystem::create_directories(dir_ / "holds-a-dir" / "tokenizer.model");
    refused(run_cli("tokenizer train --text " + corpus + " --vocab-size 400 --out " +
                    shell_quote((dir_ / "holds-a-dir").string())),
            (dir_ / "holds-a-dir" / "tokenizer.model").string() + ": is a directory, expected a file name to write");
    refused(run_cli("tokenizer --max-memory encode" + model + " --text hi"),
            "option --max-memory needs a value (a size such as 8G), got the action 'encode'");
    refused(run_cli("tokenizer --max-memory 1G encode" + model + " --text hi --max-memory 2G"),
            "option --max-memory is given before and after the action: give it once");
    refused(run_cli("tokenizer encode" + model + " --text \"$(printf 'a\\377b')\""),
            "option --text: invalid UTF-8 at byte offset 1");
    // before the action or after it, the same
    const std::string plain = run_cli("tokenizer encode" + model + " --text hi").out;
    EXPECT_FALSE(plain.empty());
    EXPECT_EQ(run_cli("tokenizer --max-memory 1G encode" + model + " --text hi").out, plain);
    EXPECT_EQ(run_cli("tokenizer encode" + model + " --text hi --max-memory 1G").out, plain);
}

}  // namespace
}  // namespace retnet
