// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin on the CUDA backend (attention.h wired in through BlockOps::attention):
// prefill and batched decoding against the double reference, graph replay against launches one by
// one bit for bit, a cache that grows past its first block mid-run, and snapshot / restore of the
// KV cache.
#include <gtest/gtest.h>

#include <random>

#include "cuda_test_util.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/forward.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

ModelConfig retnet_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 97;
    c.d_model = 128;
    c.n_layers = 2;
    c.n_heads = 2;  // the twin's head width D = 64
    c.key_dim = 2 * 64;
    c.value_dim = 2 * 96;
    c.ffn_dim = 160;
    c.chunk_size = 16;
    return c;
}

std::vector<int32_t> tokens_of(int T, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> t(static_cast<size_t>(T));
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % 97);
    return t;
}

// fp32: the same products as the double reference in float32 over ≤ 320 keys and widths ≤ 200,
// ~1e-6 relative; the model tests' 2e-5 holds with room. bf16: weights, activations fed to the
// products and the KV cache are rounded to bf16 (2⁻⁹ relative each), through two layers: a few
// percent; 0.1 catches a wrong cache row or position while allowing that.
double tolerance(bool bf16) { return bf16 ? 0.1 : 2e-5; }

class TwinCudaTest : public CudaTest, public ::testing::WithParamInterface<bool> {};

// Two prompts prefilled, then three sequences decode together for eight steps; at step 5 a
// 300-token prefill of one slot moves its cache past the first 256-token block (the graph holding
// the old addresses must be dropped). The logit rows asked for change at step 3.
TEST_P(TwinCudaTest, PrefillAndBatchedDecodeMatchReferenceAndGraphsEqualEager) {
    const bool bf16 = GetParam();
    auto model = std::make_shared<const Model>(make_transformer_twin(retnet_config(), 7));
    ASSERT_TRUE(model->config.is_transformer());
    CudaOptions eager_options, graph_options;
    eager_options.cuda_graphs = false;
    eager_options.bf16_weights = graph_options.bf16_weights = bf16;
    std::unique_ptr<Backend> eager = make_cuda_backend(model, eager_options);
    std::unique_ptr<Backend> graphs = make_cuda_backend(model, graph_options);
    std::vector<std::unique_ptr<Backend>> refs;  // one reference backend per slot
    for (int s = 0; s < 3; ++s) refs.push_back(make_reference_backend(model));
    ForwardOptions chunkwise, recurrent;
    chunkwise.form = Form::Chunkwise;
    recurrent.form = Form::Recurrent;
    double worst = 0.0;
    auto run_all = [&](std::span<const SequenceRequest> batch, const ForwardOptions& o) {
        const std::vector<Tensor> a = eager->forward_batch(batch, o), b = graphs->forward_batch(batch, o);
        for (size_t i = 0; i < batch.size(); ++i) {
            EXPECT_EQ(a[i].data, b[i].data) << "sequence " << i;
            SequenceRequest alone = batch[i];
            alone.slot = 0;
            const Tensor r = refs[static_cast<size_t>(batch[i].slot)]->forward_batch({&alone, 1}, o)[0];
            ASSERT_EQ(r.data.size(), b[i].data.size());
            if (!r.data.empty()) worst = std::max(worst, rel_max_error(b[i].data, r.data));
        }
    };
    eager->set_slot_count(3);
    graphs->set_slot_count(3);
    const std::vector<int32_t> history0 = tokens_of(7, 1), history2 = tokens_of(3, 2);
    const std::vector<SequenceRequest> prefill = {{history0, 0, LogitRows::All}, {history2, 2, LogitRows::Last}};
    run_all(prefill, chunkwise);
    for (int step = 0; step < 8; ++step) {
        if (step == 5) {
            const std::vector<int32_t> more = tokens_of(300, 3);
            const SequenceRequest grow{more, 1, LogitRows::Last};
            run_all({&grow, 1}, chunkwise);
        }
        std::vector<std::vector<int32_t>> next;
        for (int s = 0; s < 3; ++s) next.push_back(tokens_of(1, 100 + 10 * step + s));
        const LogitRows middle = step == 3 ? LogitRows::None : LogitRows::Last;
        const std::vector<SequenceRequest> batch = {
            {next[0], 2, LogitRows::Last}, {next[1], 0, middle}, {next[2], 1, LogitRows::Last}};
        run_all(batch, recurrent);
    }
    std::printf("[twin %s] worst relative error against the double reference: %.3e\n", bf16 ? "bf16" : "fp32", worst);
    EXPECT_LT(worst, tolerance(bf16));
    for (int s = 0; s < 3; ++s) {
        const RecurrentState a = eager->snapshot(s), b = graphs->snapshot(s);
        EXPECT_EQ(a.position, b.position);
        for (size_t l = 0; l < a.layers.size(); ++l) {
            EXPECT_EQ(a.layers[l].K, b.layers[l].K) << "slot " << s;
            EXPECT_EQ(a.layers[l].V, b.layers[l].V) << "slot " << s;
        }
    }
}

// The cache read back equals the reference's (rotated keys, values); restoring it into another
// slot and decoding the same token there gives the same logits as the original slot.
TEST_P(TwinCudaTest, SnapshotRestoreCarriesTheCache) {
    const bool bf16 = GetParam();
    auto model = std::make_shared<const Model>(make_transformer_twin(retnet_config(), 8));
    CudaOptions options;
    options.bf16_weights = bf16;
    std::unique_ptr<Backend> cuda = make_cuda_backend(model, options);
    std::unique_ptr<Backend> ref = make_reference_backend(model);
    ForwardOptions chunkwise, recurrent;
    chunkwise.form = Form::Chunkwise;
    recurrent.form = Form::Recurrent;
    const std::vector<int32_t> prompt = tokens_of(21, 4);
    cuda->forward(prompt, chunkwise);
    ref->forward(prompt, chunkwise);
    const RecurrentState got = cuda->snapshot(0), want = ref->snapshot(0);
    ASSERT_EQ(got.position, 21);
    for (size_t l = 0; l < got.layers.size(); ++l) {
        ASSERT_EQ(got.layers[l].K.size(), want.layers[l].K.size());
        EXPECT_LT(rel_max_error(got.layers[l].K, want.layers[l].K),
                  tolerance(bf16)) << "K of layer " << l;
        EXPECT_LT(rel_max_error(got.layers[l].V, want.layers[l].V),
                  tolerance(bf16)) << "V of layer " << l;
    }
    cuda->set_slot_count(2);
    cuda->restore(got, 1);
    const RecurrentState again = cuda->snapshot(1);
    for (size_t l = 0; l < got.layers.size(); ++l) EXPECT_EQ(again.layers[l].K, got.layers[l].K);
    const std::vector<int32_t> next = tokens_of(1, 5);
    const SequenceRequest original{next, 0, LogitRows::Last}, restored{next, 1, LogitRows::Last};
    const Tensor a = cuda->forward_batch({&original, 1}, recurrent)[0];
    const Tensor b = cuda->forward_batch({&restored, 1}, recurrent)[0];
    EXPECT_LT(rel_max_error(b.data, a.data), 1e-5);
    cuda->reset(1);
    EXPECT_TRUE(cuda->snapshot(1).empty());
}

INSTANTIATE_TEST_SUITE_P(Weights, TwinCudaTest, ::testing::Bool());

}  // namespace
}  // namespace retnet::cuda::test
