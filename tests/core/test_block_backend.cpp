// SPDX-License-Identifier: GPL-3.0-or-later
// The batched Backend interface (state slots, logit rows) on the fast CPU backend, and the
// introspection checks every backend shares.
#include <gtest/gtest.h>

#include "retnet/error.h"
#include "retnet/forward.h"
#include "test_models.h"

namespace retnet {
namespace {

using test::max_abs;
using test::max_abs_diff;
using test::random_tokens;
using test::small_model;

struct BatchCase {
    Family family;
    Form form;
};

class BatchedForward : public ::testing::TestWithParam<BatchCase> {};

// Three sequences of lengths 1, 5 and 7 in slots 2, 0 and 1 (slot 0 and 2 after a prefill of
// their own, where the form allows a start from a state) give, in one batch, the logits and
// states each gives alone.
TEST_P(BatchedForward, EqualsEachSequenceAlone) {
    const BatchCase p = GetParam();
    std::shared_ptr<const Model> model = small_model(p.family, 11);
    ForwardOptions options;
    options.form = p.form;
    options.chunk_size = 3;
    const bool from_state = !(p.family == Family::TorchScale && p.form == Form::Parallel);
    ForwardOptions prefill;
    prefill.form = Form::Chunkwise;
    prefill.chunk_size = 4;

    const std::vector<std::vector<int32_t>> history = {random_tokens(from_state ? 6 : 0, 53, 1), {},
                                                       random_tokens(from_state ? 3 : 0, 53, 2)};
    const std::vector<std::vector<int32_t>> next = {random_tokens(5, 53, 3), random_tokens(7, 53, 4),
                                                    random_tokens(1, 53, 5)};
    std::unique_ptr<Backend> batched = make_cpu_backend(model);
    batched->set_slot_count(3);
    for (int s = 0; s < 3; ++s)
        if (!history[static_cast<size_t>(s)].empty()) {
            const SequenceRequest request{history[static_cast<size_t>(s)], s, LogitRows::None};
            batched->forward_batch({&request, 1}, prefill);
        }
    const std::vector<SequenceRequest> batch = {{next[2], 2, LogitRows::All}, {next[0], 0, LogitRows::All},
                                                {next[1], 1, LogitRows::All}};
    const std::vector<Tensor> together = batched->forward_batch(batch, options);
    ASSERT_EQ(together.size(), 3u);

    for (const SequenceRequest& request : batch) {
        const size_t s = static_cast<size_t>(request.slot);
        std::unique_ptr<Backend> alone = make_cpu_backend(model);
        if (!history[s].empty()) alone->forward(history[s], prefill);
        const Tensor expected = alone->forward(next[s], options);
        const Tensor& got = together[static_cast<size_t>(&request - batch.data())];
        ASSERT_EQ(got.shape, expected.shape);
        EXPECT_LE(max_abs_diff(got, expected), 2e-5 * max_abs(expected)) << "slot " << s;
        const RecurrentState a = batched->snapshot(request.slot), b = alone->snapshot();
        EXPECT_EQ(a.position, b.position);
        for (size_t l = 0; l < a.layers.size(); ++l) {
            double worst = 0, scale = 0;
            for (size_t i = 0; i < a.layers[l].S.size(); ++i) {
                worst = std::max(worst, std::abs(double(a.layers[l].S[i]) - b.layers[l].S[i]));
                scale = std::max(scale, std::abs(double(b.layers[l].S[i])));
            }
            EXPECT_LE(worst, 2e-5 * scale) << "slot " << s << " layer " << l;
            EXPECT_EQ(a.layers[l].scale, b.layers[l].scale);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(FormsAndFamilies, BatchedForward,
                         ::testing::Values(BatchCase{Family::Fla, Form::Parallel},
                                           BatchCase{Family::Fla, Form::Chunkwise},
                                           BatchCase{Family::Fla, Form::Recurrent},
                                           BatchCase{Family::TorchScale, Form::Parallel},
                                           BatchCase{Family::TorchScale, Form::Chunkwise},
                                           BatchCase{Family::TorchScale, Form::Recurrent}));

// Last gives the last row of All, None gives no rows; each advances the state alike.
TEST(LogitRows, LastAndNoneProjectOnlyWhatIsAsked) {
    std::shared_ptr<const Model> model = small_model(Family::Fla, 3);
    const std::vector<int32_t> tokens = random_tokens(9, 53, 8);
    ForwardOptions options;
    options.form = Form::Chunkwise;
    options.chunk_size = 4;
    std::unique_ptr<Backend> backend = make_cpu_backend(model);
    backend->set_slot_count(3);
    const std::vector<SequenceRequest> batch = {
        {tokens, 0, LogitRows::All}, {tokens, 1, LogitRows::Last}, {tokens, 2, LogitRows::None}};
    const std::vector<Tensor> out = backend->forward_batch(batch, options);
    ASSERT_EQ(out[0].shape, (std::vector<int64_t>{9, 53}));
    ASSERT_EQ(out[1].shape, (std::vector<int64_t>{1, 53}));
    ASSERT_EQ(out[2].shape, (std::vector<int64_t>{0, 53}));
    // The three copies share one GEMM over 27 rows, where BLAS may round rows differently.
    Tensor last_of_all({1, 53});
    std::copy(out[0].data.end() - 53, out[0].data.end(), last_of_all.data.begin());
    EXPECT_LE(max_abs_diff(out[1], last_of_all), 1e-5 * max_abs(last_of_all));
    for (int s = 1; s < 3; ++s) {
        Tensor a({static_cast<int64_t>(backend->snapshot(s).layers[1].S.size())}), b = a;
        a.data = backend->snapshot(s).layers[1].S;
        b.data = backend->snapshot(0).layers[1].S;
        EXPECT_LE(max_abs_diff(a, b), 1e-5 * max_abs(b)) << "slot " << s;
        EXPECT_EQ(backend->snapshot(s).position, 9);
    }
}

TEST(LogitRows, ReferenceBackendHonoursThem) {
    std::shared_ptr<const Model> model = small_model(Family::TorchScale, 4);
    const std::vector<int32_t> tokens = random_tokens(5, 53, 9);
    std::unique_ptr<Backend> reference = make_reference_backend(model);
    const Tensor all = reference->forward(tokens, ForwardOptions{});
    reference->reset();
    const SequenceRequest last{tokens, 0, LogitRows::Last};
    const Tensor one = reference->forward_batch({&last, 1}, ForwardOptions{}).front();
    ASSERT_EQ(one.shape, (std::vector<int64_t>{1, 53}));
    for (int v = 0; v < 53; ++v) EXPECT_EQ(one.data[static_cast<size_t>(v)], all.data[4 * 53 + static_cast<size_t>(v)]);
}

void expect_error(const std::function<void()>& call, const std::string& part) {
    try {
        call();
        ADD_FAILURE() << "no error; expected one containing '" << part << "'";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
}

TEST(BatchErrors, SlotsBatchAndIntrospectionAreCheckedForEveryBackend) {
    std::shared_ptr<const Model> model = small_model(Family::Fla, 5);
    const std::vector<int32_t> tokens = random_tokens(3, 53, 1);
    for (const std::string device : {"cpu", "reference"}) {
        SCOPED_TRACE(device);
        std::unique_ptr<Backend> backend = make_backend(device, model);
        const SequenceRequest far{tokens, 3, LogitRows::All};
        expect_error([&] { backend->forward_batch({&far, 1}, ForwardOptions{}); }, "state slot 3 does not exist");
        expect_error([&] { backend->forward_batch({}, ForwardOptions{}); }, "the batch is empty");
        Introspection bad_layer;
        bad_layer.score_layer = 2;
        bad_layer.score_head = 0;
        expect_error([&] { backend->forward(tokens, ForwardOptions{}, &bad_layer); }, "score layer 2 is out of range");
        Introspection bad_head;
        bad_head.score_layer = 1;
        bad_head.score_head = 4;
        expect_error([&] { backend->forward(tokens, ForwardOptions{}, &bad_head); }, "score head 4 is out of range");
        expect_error([&] { backend->reset(1); }, "state slot 1 does not exist");
    }
    std::unique_ptr<Backend> cpu = make_cpu_backend(model);
    cpu->set_slot_count(2);
    const std::vector<SequenceRequest> twice = {{tokens, 1, LogitRows::All}, {tokens, 1, LogitRows::All}};
    expect_error([&] { cpu->forward_batch(twice, ForwardOptions{}); }, "state slot 1 appears twice");
    const std::vector<SequenceRequest> two = {{tokens, 0, LogitRows::All}, {tokens, 1, LogitRows::All}};
    Introspection intro;
    intro.want_state_norms = true;
    expect_error([&] { cpu->forward_batch(two, ForwardOptions{}, &intro); }, "introspection needs a batch of one");
    expect_error([&] { cpu->set_slot_count(0); }, "at least one state slot");
}

// Growing the slot count keeps the existing states; new slots start empty.
TEST(Slots, GrowingKeepsStatesAndShrinkingDropsTheHighest) {
    std::shared_ptr<const Model> model = small_model(Family::TorchScale, 6);
    std::unique_ptr<Backend> backend = make_cpu_backend(model);
    ForwardOptions recurrent;
    recurrent.form = Form::Recurrent;
    backend->forward(random_tokens(4, 53, 2), recurrent);
    const RecurrentState before = backend->snapshot();
    backend->set_slot_count(4);
    EXPECT_EQ(backend->snapshot(0).layers[0].S, before.layers[0].S);
    EXPECT_EQ(backend->snapshot(0).layers[0].scale, before.layers[0].scale);
    EXPECT_EQ(backend->snapshot(3).position, 0);
    EXPECT_EQ(backend->snapshot(3).layers[0].scale, std::vector<double>(4, 0.0));
    backend->restore(before, 3);
    EXPECT_EQ(backend->snapshot(3).layers[1].S, before.layers[1].S);
    backend->set_slot_count(2);
    EXPECT_EQ(backend->slot_count(), 2);
}

}  // namespace
}  // namespace retnet
