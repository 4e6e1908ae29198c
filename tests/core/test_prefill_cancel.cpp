// SPDX-License-Identifier: GPL-3.0-or-later
// A cancel set from another thread during a long prefill is seen before the next layer
// (ForwardOptions::cancelled): the forward throws retnet::Cancelled with the later layers never
// run, the slots it ran are left empty and usable; the Generator ends with StopReason::Cancelled
// and the BatchGenerator finishes that sequence alone. Counted by the polls, not by wall time.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "retnet/batch_generate.h"
#include "retnet/error.h"
#include "retnet/generate.h"
#include "forwarding_backend.h"
#include "test_models.h"

namespace retnet {
namespace {

constexpr int kLayers = 6;
constexpr int kCancelAt = 3;  // the poll before layer 2 (0-based): layers 2 … 5 never run
constexpr int kPrompt = 203;  // not a multiple of the chunk (8) nor of the twin's 64-row tiles

std::shared_ptr<const Model> model_of(const std::string& kind) {
    ModelConfig c = test::small_config(kind == "torchscale" ? Family::TorchScale : Family::Fla);
    c.n_layers = kLayers;
    if (kind == "twin") return std::make_shared<const Model>(make_transformer_twin(c, 5));
    return std::make_shared<const Model>(make_random_model(c, 5));
}

// The flag another thread sets once the prefill has polled `kCancelAt` times. That poll waits for
// the thread, so the test does not race the prefill.
struct Canceller {
    std::atomic<bool> flag{false};
    std::atomic<int> polls{0};

    void on_poll() {
        if (++polls == kCancelAt) std::thread([this] { flag = true; }).join();
    }
    std::function<bool()> poll() {
        return [this] {
            on_poll();
            return flag.load();
        };
    }
};

bool is_empty(const RecurrentState& s) {
    for (const LayerState& l : s.layers) {
        if (!l.K.empty() || !l.V.empty()) return false;
        for (float x : l.S)
            if (x != 0.0f) return false;
    }
    return s.position == 0;
}

class PrefillCancel : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
protected:
    std::shared_ptr<const Model> model = model_of(std::get<1>(GetParam()));
    std::unique_ptr<Backend> make() const { return make_backend(std::get<0>(GetParam()), model); }
};

TEST_P(PrefillCancel, ACancelFromAnotherThreadEndsThePrefillBeforeItsLaterLayers) {
    const std::vector<int32_t> prompt = test::random_tokens(kPrompt, model->config.vocab_size, 9);
    const auto backend = make();
    Canceller canceller;
    ForwardOptions options;
    options.form = Form::Chunkwise;
    options.cancelled = canceller.poll();
    EXPECT_THROW(backend->forward(prompt, options), Cancelled);
    EXPECT_EQ(canceller.polls.load(), kCancelAt);  // one poll a layer: the prefill stopped at layer 2 of 6
    EXPECT_TRUE(is_empty(backend->snapshot(0)));

    // The slot starts afresh: the same prefill gives what a new backend gives.
    options.cancelled = {};
    const Tensor again = backend->forward(prompt, options);
    EXPECT_EQ(again.data, make()->forward(prompt, options).data);

    // A poll that never cancels is asked once per layer.
    Canceller never;
    options.cancelled = [&never] {
        ++never.polls;
        return false;
    };
    backend->reset(0);
    EXPECT_EQ(backend->forward(prompt, options).data, again.data);
    EXPECT_EQ(never.polls.load(), kLayers);
}

INSTANTIATE_TEST_SUITE_P(Backends, PrefillCancel,
                         ::testing::Combine(::testing::Values("cpu", "reference"),
                                            ::testing::Values("fla", "torchscale", "twin")),
                         [](const auto& test_info) { return std::get<0>(test_info.param) + "_" + std::get<1>(test_info.param); });

TEST(PrefillCancel, OnlyTheSlotsOfTheCancelledCallAreEmptied) {
    for (const std::string kind : {"fla", "twin"}) {
        SCOPED_TRACE(kind);
        const auto model = model_of(kind);
        const auto backend = make_cpu_backend(model);
        backend->set_slot_count(2);
        const std::vector<int32_t> first = test::random_tokens(5, model->config.vocab_size, 1);
        backend->forward(first, ForwardOptions{});
        const RecurrentState kept = backend->snapshot(0);
        Canceller canceller;
        ForwardOptions options;
        options.form = Form::Chunkwise;
        options.cancelled = canceller.poll();
        const std::vector<int32_t> prompt = test::random_tokens(kPrompt, model->config.vocab_size, 2);
        const SequenceRequest request{prompt, 1, LogitRows::Last};
        EXPECT_THROW(backend->forward_batch({&request, 1}, options), Cancelled);
        EXPECT_TRUE(is_empty(backend->snapshot(1)));
        const RecurrentState after = backend->snapshot(0);
        EXPECT_EQ(after.position, 5);
        for (size_t l = 0; l < kept.layers.size(); ++l) {
            EXPECT_EQ(after.layers[l].S, kept.layers[l].S);
            EXPECT_EQ(after.layers[l].K, kept.layers[l].K);
        }
    }
}

// Passes every call through, and reports each poll of a cut-able forward to `on_poll`.
class PollWatcher : public test::ForwardingBackend {
public:
    PollWatcher(Backend& inner, std::function<void()> on_poll) : ForwardingBackend(inner), on_poll_(std::move(on_poll)) {}
    std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch, const ForwardOptions& options,
                                      Introspection* introspection) override {
        ForwardOptions watched = options;
        if (options.cancelled)
            watched.cancelled = [this, poll = options.cancelled] {
                on_poll_();
                return poll();
            };
        return ForwardingBackend::forward_batch(batch, watched, introspection);
    }

private:
    std::function<void()> on_poll_;
};

GenerationParams greedy(int tokens) {
    GenerationParams p;
    p.max_new_tokens = tokens;
    p.prefill_form = Form::Chunkwise;
    p.sampler.temperature = 0.0;
    p.n_top = 0;
    return p;
}

// The Generator's stop flag reaches its prefill: set from another thread at the third layer, the
// generation ends Cancelled without a token; the next call prefills again from scratch.
TEST(PrefillCancel, TheGeneratorsStopFlagEndsItsPrefill) {
    for (const std::string kind : {"fla", "twin"}) {
        SCOPED_TRACE(kind);
        const auto model = model_of(kind);
        const std::vector<int32_t> prompt = test::random_tokens(kPrompt, model->config.vocab_size, 3);
        const auto cpu = make_cpu_backend(model);
        Canceller canceller;
        PollWatcher watched(*cpu, [&] { canceller.on_poll(); });
        Generator generator(watched, nullptr);
        const GenerationResult cut = generator.generate(prompt, greedy(4), {}, &canceller.flag);
        EXPECT_EQ(cut.stats.stop_reason, StopReason::Cancelled);
        EXPECT_TRUE(cut.tokens.empty());
        EXPECT_EQ(cut.stats.prefill_tokens, 0);
        EXPECT_EQ(canceller.polls.load(), kCancelAt);

        canceller.flag = false;
        const GenerationResult resumed = generator.continue_generation(greedy(4), {}, &canceller.flag);
        const auto fresh = make_cpu_backend(model);
        EXPECT_EQ(resumed.tokens, Generator(*fresh, nullptr).generate(prompt, greedy(4)).tokens);
        EXPECT_EQ(resumed.stats.prefill_tokens, kPrompt);
        // Polled in the prefill only (6 layers); a decoding step is never cut.
        EXPECT_EQ(canceller.polls.load(), kCancelAt + kLayers);
    }
}

// A request whose stop flag is set during its prefill ends Cancelled alone: the sequence decoding
// beside it gives the tokens it gives alone.
TEST(PrefillCancel, ABatchRequestCancelledInItsPrefillEndsAlone) {
    const auto model = model_of("twin");
    const auto cpu = make_cpu_backend(model);
    Canceller canceller;
    PollWatcher watched(*cpu, [&] { canceller.on_poll(); });
    const std::vector<int32_t> a = test::random_tokens(9, model->config.vocab_size, 4);
    const std::vector<int32_t> b = test::random_tokens(kPrompt, model->config.vocab_size, 5);
    std::vector<int32_t> a_tokens;
    StopReason a_reason = StopReason::None, b_reason = StopReason::None;
    {
        BatchGenerator batch(watched, nullptr, 2);
        batch.add({a, greedy(6), {}, [&](const GenerationResult& r, const std::string&) {
                       a_tokens = r.tokens;
                       a_reason = r.stats.stop_reason;
                   }});
        EXPECT_EQ(canceller.polls.load(), 0);  // a has no stop flag: its prefill is not polled
        BatchRequest cancelled{b, greedy(6), {}, [&](const GenerationResult& r, const std::string&) {
                                   b_reason = r.stats.stop_reason;
                               }};
        cancelled.stop = &canceller.flag;
        batch.add(std::move(cancelled));
        EXPECT_EQ(canceller.polls.load(), kCancelAt);
        EXPECT_EQ(b_reason, StopReason::Cancelled);
        EXPECT_TRUE(batch.has_free_slot());
        EXPECT_TRUE(is_empty(cpu->snapshot(1)));
        while (batch.active() > 0) batch.step();
    }
    EXPECT_EQ(a_reason, StopReason::MaxTokens);
    const auto fresh = make_cpu_backend(model);
    EXPECT_EQ(a_tokens, Generator(*fresh, nullptr).generate(a, greedy(6)).tokens);
}

}  // namespace
}  // namespace retnet
