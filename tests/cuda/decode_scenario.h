// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The batched-decoding scenario the whole-model CUDA tests share (RetNet and its Transformer twin):
// an eager backend (kernels launched one by one), a graph-capturing one and one double reference
// backend per slot run the same requests. Two prompts are prefilled, then three sequences decode
// together for eight steps; the logit rows asked for change at step 3 and a long prefill of slot 1
// at step 5 grows its buffers, so graphs are captured, replayed and dropped for stale addresses.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <span>
#include <vector>

#include "cuda_test_util.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/forward.h"
#include "retnet/model.h"

namespace retnet::cuda::test {

inline ModelConfig small_decode_config(Family family) {
    ModelConfig c;
    c.family = family;
    c.vocab_size = 97;
    c.d_model = 128;
    c.n_layers = 2;
    c.n_heads = 2;  // head widths 64 (keys; the twin's D) and 96 (values)
    c.key_dim = 2 * 64;
    c.value_dim = 2 * 96;
    c.ffn_dim = 160;
    c.chunk_size = 16;
    c.head_norm_affine = family == Family::Fla;
    return c;
}

inline std::vector<int32_t> tokens_of(int T, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> t(static_cast<size_t>(T));
    for (int32_t& x : t) x = static_cast<int32_t>(rng() % 97);
    return t;
}

struct DecodeScenario {
    LogitRows prompt_rows = LogitRows::None;  // what the two prompts' prefill asks for
    int grow_length = 40;                     // the step-5 prefill of slot 1
};

class EagerGraphsReference {
public:
    // `slots`: the slots of both CUDA backends, each with a reference of its own (run() uses 3).
    EagerGraphsReference(std::shared_ptr<const Model> model, bool bf16, int slots = 3) {
        CudaOptions eager_options, graph_options;
        eager_options.cuda_graphs = false;
        eager_options.bf16_weights = graph_options.bf16_weights = bf16;
        eager_ = make_cuda_backend(model, eager_options);
        graphs_ = make_cuda_backend(model, graph_options);
        for (int s = 0; s < slots; ++s) refs_.push_back(make_reference_backend(model));
        eager_->set_slot_count(slots);
        graphs_->set_slot_count(slots);
    }

    // Runs the scenario: graph replay must equal eager launches bit for bit at every step. Returns
    // the worst error against the double reference (max-abs relative to each output's scale).
    double run(const DecodeScenario& scenario) {
        ForwardOptions chunkwise, recurrent;
        chunkwise.form = Form::Chunkwise;
        recurrent.form = Form::Recurrent;
        const std::vector<int32_t> history0 = tokens_of(7, 1), history2 = tokens_of(3, 2);
        const std::vector<SequenceRequest> prefill = {{history0, 0, scenario.prompt_rows},
                                                      {history2, 2, scenario.prompt_rows}};
        step(prefill, chunkwise);
        for (int s = 0; s < 8; ++s) {
            if (s == 5) {
                const std::vector<int32_t> more = tokens_of(scenario.grow_length, 3);
                const SequenceRequest grow{more, 1, LogitRows::Last};
                step({&grow, 1}, chunkwise);
            }
            std::vector<std::vector<int32_t>> next;
            for (int slot = 0; slot < 3; ++slot) next.push_back(tokens_of(1, 100 + 10 * s + slot));
            const LogitRows middle = s == 3 ? LogitRows::None : LogitRows::Last;
            const std::vector<SequenceRequest> batch = {
                {next[0], 2, LogitRows::Last}, {next[1], 0, middle}, {next[2], 1, LogitRows::Last}};
            step(batch, recurrent);
        }
        return worst_;
    }

    Backend& eager() { return *eager_; }
    Backend& graphs() { return *graphs_; }
    double worst() const { return worst_; }

    // One call on both backends: their outputs equal bit for bit, each sequence's against the
    // reference of its slot decoding it alone (worst()).
    void step(std::span<const SequenceRequest> batch, const ForwardOptions& o) {
        const std::vector<Tensor> a = eager_->forward_batch(batch, o), b = graphs_->forward_batch(batch, o);
        for (size_t i = 0; i < batch.size(); ++i) {
            EXPECT_EQ(a[i].data, b[i].data) << "sequence " << i;
            SequenceRequest alone = batch[i];
            alone.slot = 0;
            const Tensor r = refs_[static_cast<size_t>(batch[i].slot)]->forward_batch({&alone, 1}, o)[0];
            ASSERT_EQ(r.data.size(), b[i].data.size());
            if (!r.data.empty()) worst_ = std::max(worst_, rel_max_error(b[i].data, r.data));
        }
    }

private:
    std::unique_ptr<Backend> eager_, graphs_;
    std::vector<std::unique_ptr<Backend>> refs_;  // the reference keeps one state: one per slot
    double worst_ = 0.0;
};

}  // namespace retnet::cuda::test
