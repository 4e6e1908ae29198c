// SPDX-License-Identifier: GPL-3.0-or-later
// GPU out of memory (issue "Robustness"): a model that does not fit, or a call whose workspace
// does not fit, throws retnet::Error "out of GPU memory: ... needs X MiB", frees whatever it had
// allocated, and leaves the process (and an existing backend) fully usable.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <functional>
#include <memory>
#include <numeric>

#include "cuda_test_util.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

ModelConfig small_config() {
    ModelConfig c;
    c.family = Family::Fla;
    c.vocab_size = 64;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 2;
    c.key_dim = 32;
    c.value_dim = 64;
    c.ffn_dim = 64;
    return c;
}

// 689 MiB of fp32 weights (a 65536 x 1024 embedding and output matrix, 4 layers of width 1024):
// cheap to make on the host as zeros, and more than the memory left by MemoryHog.
std::shared_ptr<const Model> large_model() {
    ModelConfig c = small_config();
    c.vocab_size = 65536;
    c.d_model = 1024;
    c.n_layers = 4;
    c.n_heads = 8;
    c.key_dim = 1024;
    c.value_dim = 1024;
    c.ffn_dim = 2048;
    return std::make_shared<const Model>(make_empty_model(c));
}

ForwardOptions form(Form f, int chunk_size = 0) {
    ForwardOptions o;
    o.form = f;
    o.chunk_size = chunk_size;
    return o;
}

size_t free_device_bytes() {
    size_t free_bytes = 0, total = 0;
    RETNET_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    return free_bytes;
}

// Takes all but `leave` bytes of the free device memory, as another process would.
class MemoryHog {
public:
    explicit MemoryHog(size_t leave) {
        const size_t available = free_device_bytes();
        if (available <= leave) return;
        size_t want = available - leave;
        // The driver keeps some memory back: step down until an allocation succeeds.
        while (want > (64u << 20) && cudaMalloc(&ptr_, want) != cudaSuccess) {
            (void)cudaGetLastError();
            want -= 32u << 20;
        }
    }
    ~MemoryHog() {
        if (ptr_) cudaFree(ptr_);
    }
    MemoryHog(const MemoryHog&) = delete;
    MemoryHog& operator=(const MemoryHog&) = delete;

private:
    void* ptr_ = nullptr;
};

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

class CudaOutOfMemory : public CudaTest {
protected:
    void SetUp() override {
        CudaTest::SetUp();
        if (IsSkipped()) return;
        // Warm up: context, cuBLAS, lazily loaded kernels, so later free-memory readings compare.
        auto backend = make_cuda_backend(model_);
        const std::vector<int32_t> tokens{1, 2, 3};
        reference_ = backend->forward(tokens, form(Form::Parallel)).data;
    }
    std::shared_ptr<const Model> model_ = std::make_shared<const Model>(make_random_model(small_config(), 5));
    std::vector<float> reference_;
};

TEST_F(CudaOutOfMemory, ModelThatDoesNotFitIsAClearErrorAndLeaksNothing) {
    const auto big = large_model();
    size_t before = 0;
    std::string message;
    {
        MemoryHog hog(256u << 20);  // leave 256 MiB, far less than the model's 689 MiB
        before = free_device_bytes();
        message = error_of([&] { make_cuda_backend(big); });
        EXPECT_LE(before - free_device_bytes(), 2u << 20) << "memory left allocated by the failed construction";
    }
    EXPECT_NE(message.find("out of GPU memory: the model's weights need 689 MiB but device 0 has "), std::string::npos) << message;
    EXPECT_NE(message.find(" MiB"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos);
    // bf16 projections halve the linear weights but still do not fit.
    {
        MemoryHog hog(256u << 20);
        CudaOptions options;
        options.bf16_weights = true;
        EXPECT_NE(error_of([&] { make_cuda_backend(big, options); }).find("out of GPU memory"), std::string::npos);
    }
    // Afterwards the process builds and runs a normal backend as if nothing happened.
    auto backend = make_cuda_backend(model_);
    const std::vector<int32_t> tokens{1, 2, 3};
    EXPECT_LT(rel_max_error(backend->forward(tokens, form(Form::Parallel)).data, reference_), 1e-6);
}

size_t fp32_weight_bytes(const Model& m) {
    const ModelWeights& w = m.weights;
    size_t n = w.embed.data.size() + w.embed_norm.data.size() + w.final_norm.data.size() +
               w.output_matrix().data.size() + w.log_decay.size() + w.rotary_theta.size();
    for (const LayerWeights& l : w.layers)
        for (const Tensor* t : {&l.attn_norm, &l.head_norm, &l.ffn_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj,
                                &l.o_proj, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
            n += t->data.size();
    return n * 4;
}

TEST_F(CudaOutOfMemory, FailureHalfwayThroughConstructionFreesEverything) {
    // Leave about as much memory as the weights need: the weights may fit and then the state,
    // the workspace or cuBLAS not; wherever it fails, all of it must be given back.
    const auto big = large_model();
    const size_t weights = fp32_weight_bytes(*big);
    for (const long slack_mib : {-1L, 1L, 3L, 8L}) {
        SCOPED_TRACE("slack " + std::to_string(slack_mib) + " MiB");
        MemoryHog hog(static_cast<size_t>(static_cast<long>(weights) + slack_mib * (1L << 20)));
        const size_t before = free_device_bytes();
        const std::string message = error_of([&] { make_cuda_backend(big); });
        if (message != "(no error)") {
            EXPECT_EQ(message.rfind("out of GPU memory: ", 0), 0u) << message;
        }
        EXPECT_LE(before - std::min(before, free_device_bytes()), 2u << 20) << "leaked after: " << message;
    }
    auto backend = make_cuda_backend(model_);
    const std::vector<int32_t> tokens{1, 2, 3};
    EXPECT_LT(rel_max_error(backend->forward(tokens, form(Form::Parallel)).data, reference_), 1e-6);
}

TEST_F(CudaOutOfMemory, WorkspaceThatDoesNotFitLeavesTheBackendUsable) {
    auto backend = make_cuda_backend(model_);
    const std::vector<int32_t> prefix{1, 2};
    backend->forward(prefix, form(Form::Recurrent));
    const RecurrentState state_before = backend->snapshot();

    // The parallel form of 400,000 tokens needs a (H, T, T) score matrix of 1.2 TiB.
    std::vector<int32_t> huge(400000);
    for (size_t i = 0; i < huge.size(); ++i) huge[i] = static_cast<int32_t>(i % 64);
    const std::string message = error_of([&] { backend->forward(huge, form(Form::Parallel)); });
    EXPECT_EQ(message.rfind("out of GPU memory: ", 0), 0u) << message;
    EXPECT_NE(message.find("needs 1220704 MiB"), std::string::npos) << message;  // 2·400000²·4 bytes, rounded up

    // Nothing moved: same state, same position, and the next calls compute the right thing.
    const RecurrentState state_after = backend->snapshot();
    EXPECT_EQ(state_after.position, state_before.position);
    for (size_t l = 0; l < state_before.layers.size(); ++l) EXPECT_EQ(state_after.layers[l].S, state_before.layers[l].S);
    backend->reset();
    const std::vector<int32_t> tokens{1, 2, 3};
    EXPECT_LT(rel_max_error(backend->forward(tokens, form(Form::Parallel)).data, reference_), 1e-6);
    backend->reset();
    const Tensor chunked = backend->forward(tokens, form(Form::Chunkwise, 2));
    EXPECT_LT(rel_max_error(chunked.data, reference_), 1e-5);
}

}  // namespace
}  // namespace retnet::cuda::test
