// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The CUDA backend's class, shared by the files that implement it: backend_cuda.cpp (weights,
// states, the forward's preparation and graphs, registration), backend_cuda_projections.cpp (the
// projections: GEMV, tensor-core skinny GEMM, cuBLAS) and backend_cuda_mixing.cpp (retention in its
// three forms and batched decoding, the twin's attention). Private to kernels/src.
#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "device_buffer.h"
#include "graph_cache.h"
#include "host_downloads.h"
#include "kv_cache.h"
#include "l2_prefetch.h"
#include "ops.h"
#include "param_staging.h"
#include "skinny_gemm.h"
#include "retnet/block_ops.h"
#include "retnet/cuda/backend_cuda.h"

namespace retnet::cuda_backend {

using cuda::DeviceBuffer;

// One weight on the device: norms and the embedding in fp32; projections fp32 or bf16.
struct DeviceWeight {
    DeviceBuffer<float> f32;
    // In the backend's bf16 storage, where a layer's projections lie one after the other in the
    // order Q, K, V, G, O, FfnAct, FfnLin, FfnOut (so that adjacent ones can be one GEMM's rows).
    const __nv_bfloat16* bf16 = nullptr;
    int out = 0, in = 0;
};

// Per-sequence retention scratch, head-major; grows to the longest sequence seen.
struct HeadMajor {
    DeviceBuffer<float> qh, kh, kd;           // (H, Tp, Dk); kd = decayed k
    DeviceBuffer<float> vh, oh, inner, cross; // (H, Tp, Dv)
    DeviceBuffer<float> scores;               // parallel (H, T, T); chunkwise (H*nC, C, C)
    DeviceBuffer<float> chunk_states;         // (H, nC, Dk, Dv)
    DeviceBuffer<float> row_factor, row_abs;  // (H, Tp)
    DeviceBuffer<float> state_abs;            // (H, nC)
    DeviceBuffer<float> norms_sq;             // (T, H)
    DeviceBuffer<float> state_copy;           // (H, Dk, Dv)
    DeviceBuffer<float> intro_scores;         // (H', T, T)
    DeviceBuffer<__nv_bfloat16> act_bf16;     // the next GEMM's bf16 input rows
    DeviceBuffer<unsigned> arrivals;          // (N, H) decoding: zero between steps (decode_retention.h)
    DeviceBuffer<double2> rotary_angles;      // (N, Dk/2) decoding: sin, cos at each sequence's new position
    DeviceBuffer<float> projected;            // (N, ·) decoding: q, k, v, g (or act, lin) of one GEMM
};

class CudaBackend final : public BlockBackend, private BlockOps {
public:
    CudaBackend(std::shared_ptr<const Model> model, CudaOptions options)
        : BlockBackend(std::move(model)), options_(options) {
        RETNET_CUDA_CHECK(cudaSetDevice(options_.device));
        stream_ = std::make_unique<cuda::CudaStream>();
        cublas_ = std::make_unique<cuda::CublasHandle>();
        RETNET_CUBLAS_CHECK(cublasSetStream(cublas_->get(), stream_->get()));
        // With bf16 weights the projections already round their inputs to bf16 (8-bit mantissa);
        // the fp32 products left (retention's Q Kᵀ, A V, Kᵀ V, Q S) lose less on TF32's 10-bit
        // inputs and run on tensor cores instead of FMA units. fp32 weights keep exact fp32.
        RETNET_CUBLAS_CHECK(cublasSetMathMode(cublas_->get(), tf32_products() ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                              : CUBLAS_PEDANTIC_MATH));
        // cuBLAS's own workspace, fixed up front: a captured decoding graph keeps its address.
        cublas_workspace_.resize(kCublasWorkspaceBytes);
        RETNET_CUBLAS_CHECK(cublasSetWorkspace(cublas_->get(), cublas_workspace_.get(), kCublasWorkspaceBytes));
        upload_weights();
        log_decay_.upload(model_->weights.log_decay, stream());
        theta_.upload(model_->weights.rotary_theta, stream());
        RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, options_.device));
        init_l2_prefetch();
        if (model_->config.is_transformer())
            kv_ = std::make_unique<cuda::KvCacheStore>(model_->config.n_layers, model_->config.key_dim,
                                                       options_.bf16_weights ? cuda::KvDtype::BF16 : cuda::KvDtype::F32);
        init_slots();
        stream_->synchronize();
    }

    bool tf32_products() const { return options_.allow_tf32 || options_.bf16_weights; }
    std::string name() const override { return options_.bf16_weights ? "cuda-bf16" : "cuda"; }
    bool on_device() const override { return true; }
    std::string weights_precision() const override { return options_.bf16_weights ? "bf16" : "fp32"; }
    int kv_cache_element_bytes() const override {
        return static_cast<int>(cuda::kv_dtype_bytes(options_.bf16_weights ? cuda::KvDtype::BF16 : cuda::KvDtype::F32));
    }
    int64_t device_memory_in_use() const override {
        RETNET_CUDA_CHECK(cudaSetDevice(options_.device));
        return cuda_device_memory_in_use();
    }
    // CUDA events around the forward: the token upload to the end of the output projection.
    double last_forward_device_ms() const override { return last_device_ms_; }

    uint64_t bf16_handoffs_ = 0;   // projections that read rows an op wrote in bf16 alone (tests)
    uint64_t one_gemm_projections_ = 0;  // groups of projections made by one GEMM (project_in_one_gemm; tests)
    uint64_t fused_norms_ = 0;           // norms formed inside a skinny GEMM's launch (norm_in_skinny_gemm; tests)

private:
    double last_device_ms_ = -1.0;  // no forward yet
    struct DeviceGuard {
        explicit DeviceGuard(int device) { RETNET_CUDA_CHECK(cudaSetDevice(device)); }
    };

    BlockOps& ops() override { return *this; }
    cudaStream_t stream() const { return stream_->get(); }
    size_t state_size() const {
        const ModelConfig& c = model_->config;
        return static_cast<size_t>(c.n_heads) * c.head_dim_k() * c.head_dim_v();
    }
    float* state_of(int slot, int layer) {
        return states_[static_cast<size_t>(slot)][static_cast<size_t>(layer)].get();
    }

    // ---- state storage -----------------------------------------------------------------------
    void resize_states(int slots) override {
        DeviceGuard guard(options_.device);
        if (kv_) return kv_->resize_slots(slots);
        const size_t old = states_.size();
        states_.resize(static_cast<size_t>(slots));
        for (size_t s = old; s < states_.size(); ++s) {
            states_[s].resize(static_cast<size_t>(model_->config.n_layers));
            for (DeviceBuffer<float>& layer : states_[s]) {
                layer.resize(state_size());
                layer.zero(stream());
            }
        }
        stream_->synchronize();
    }
    void zero_state(int slot) override {
        DeviceGuard guard(options_.device);
        if (kv_) return kv_->clear(slot);
        for (DeviceBuffer<float>& layer : states_[static_cast<size_t>(slot)]) layer.zero(stream());
        stream_->synchronize();
    }
    void read_state(int slot, RecurrentState& out) const override {
        DeviceGuard guard(options_.device);
        if (kv_) {
            for (size_t l = 0; l < out.layers.size(); ++l)
                kv_->read(slot, static_cast<int>(l), out.position, out.layers[l].K, out.layers[l].V, stream());
            return;
        }
        for (size_t l = 0; l < out.layers.size(); ++l)
            states_[static_cast<size_t>(slot)][l].download(out.layers[l].S.data(), out.layers[l].S.size(), stream());
        stream_->synchronize();
    }
    void write_state(int slot, const RecurrentState& state) override {
        DeviceGuard guard(options_.device);
        if (kv_) {
            kv_->clear(slot);
            for (size_t l = 0; l < state.layers.size(); ++l)
                kv_->write(slot, static_cast<int>(l), state.layers[l].K, state.layers[l].V, stream());
            return;
        }
        for (size_t l = 0; l < state.layers.size(); ++l)
            states_[static_cast<size_t>(slot)][l].upload(state.layers[l].S, stream());
        stream_->synchronize();
    }

    void copy_state(int from, int to, int64_t position) override {
        DeviceGuard guard(options_.device);
        if (kv_) return kv_->copy(from, to, position, stream());
        for (size_t l = 0; l < states_[static_cast<size_t>(from)].size(); ++l)
            RETNET_CUDA_CHECK(cudaMemcpyAsync(state_of(to, static_cast<int>(l)), state_of(from, static_cast<int>(l)),
                                              sizeof(float) * state_size(), cudaMemcpyDeviceToDevice, stream()));
        stream_->synchronize();
    }

    // ---- weights ------------------------------------------------------------------------------
    void upload_weights();
    // A projection with bf16 weights goes to bf16_at (room for w's values), other tensors to out.f32.
    void upload(const Tensor& w, DeviceWeight& out, __nv_bfloat16* bf16_at, DeviceBuffer<float>& staging);
    const DeviceWeight& weight(int layer, Weight w) const {
        if (layer < 0) return model_weights_[static_cast<size_t>(w)];
        return layer_weights_[static_cast<size_t>(layer)][static_cast<size_t>(w)];
    }

    // ---- ops ------------------------------------------------------------------------------------
    // While a decoding graph replays, the ops only stage their host-side values (replaying()).
    bool replaying() const { return graphs_.mode() == cuda::GraphCache::Mode::Replay; }
    template <typename T>
    void grow(DeviceBuffer<T>& buffer, size_t count) {
        if (count <= buffer.size()) return;
        // A replay makes exactly the requests of its capture, which were granted then.
        if (replaying()) throw Error("CUDA backend: a buffer grew while replaying a graph (internal error)");
        buffer.resize(count);
        ++buffer_generation_;
    }
    void prepare(const ForwardPlan& plan) override;
    void finish(bool completed) override;
    void launch_graph();
    Rows scratch(Scratch which, int64_t rows, int64_t width) override {
        DeviceBuffer<float>& buffer = scratch_[static_cast<size_t>(which)];
        grow(buffer, static_cast<size_t>(rows * width));
        return {buffer.get(), rows, width};
    }
    void embed(std::span<const int32_t> tokens, float scale, Rows x) override;
    void rms_norm(Rows x, int layer, Weight w, double eps, Rows y) override {
        if (replaying()) return;
        const DeviceWeight& norm = weight(layer, w);
        cuda::launch_rmsnorm(x.data, norm.f32.empty() ? nullptr : norm.f32.get(), y.data,
                             static_cast<int>(x.count), static_cast<int>(x.width), static_cast<float>(eps), stream());
    }
    void linear(Rows x, int layer, Weight w, Rows y, bool accumulate) override;
    void linears(Rows x, int layer, std::span<const LinearOut> outputs) override;
    const __nv_bfloat16* activations_bf16(Rows x);
    void release_act_bf16(size_t count);
    void keep_rows_in_bf16_only(const float* rows, const __nv_bfloat16* at);
    bool cublas_bf16_rows(Rows x, int layer, std::span<const LinearOut> outputs) const;
    bool reads_bf16_rows(int M, int layer, Weight w) const;
    void write_v_head_major(const __nv_bfloat16* rows, int M, const DeviceWeight& W);
    void linears_bf16(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                      std::optional<Activation> glu_activation = std::nullopt);
    bool norm_in_skinny_gemm(Rows x, int layer, const cuda::SkinnyNorm& input, const std::vector<cuda::GemvJob>& jobs,
                             std::span<const LinearOut> outputs, std::optional<Activation> glu_activation);
    void norm_linears(Rows x, int layer, Weight norm, double eps, Rows h, std::span<const LinearOut> outputs,
                      std::optional<Activation> glu_activation) override;
    void gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) override;
    void attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y) override;
    void glu(Rows a, Rows b, Activation activation) override {
        if (replaying()) return;
        cuda::launch_glu(a.data, b.data, a.data, a.count * a.width, activation == Activation::Gelu, stream());
    }
    void gather_rows(Rows x, std::span<const int64_t> rows, Rows y) override;
    void best_logits(Rows logits, int count, Rows packed) override {
        if (replaying()) return;
        cuda::launch_best_logits(logits.data, static_cast<int>(logits.count), static_cast<int>(logits.width), count,
                                 packed.data, packed.width, stream());
    }
    void download(Rows x, float* host) override;
    void stop_timer();
    void init_l2_prefetch();
    cuda::L2Prefetch prefetch_of(int layer, Weight first, Weight second) const;
    cuda::L2Prefetch weights_after_retention(int layer, int N) const;
    cuda::L2Prefetch weights_after_output_projection(int layer, int M) const;

    // ---- the Transformer twin: caches sized and scratch for attention (kernels/src/attention.h) ----
    void prepare_retention(Form form, int chunk, size_t t_max, size_t tp_max, size_t n, bool introspection);
    // fla's chunkwise form in the fused passes (no work buffers beyond the chunk states). Their products
    // stay TF32 with bf16 weights too: bf16 products took the 1.3B shape's logits (1024 tokens) from
    // 1.44e-1 to 2.24e-1 relative L2 of the fp32 ones, argmax 71 → 60.5 % (docs/benchmarks.md).
    static constexpr cuda::ChunkProducts kChunkProducts = cuda::ChunkProducts::Tf32;
    bool fused_chunkwise(int C, size_t n_chunks, bool want_row_factor) const {
        return tf32_products() && model_->config.family != Family::TorchScale && !want_row_factor &&
               n_chunks <= 65535 && cuda::chunk_output_supports(C, static_cast<int>(n_chunks));
    }
    void prepare_attention(const ForwardPlan& plan);
    void attention_prefill(const AttentionCall& call, const SequenceSlice& slice, Rows q, Rows k, Rows v, Rows y);
    // Query rows per step of a sequence's prefill: what prepare_attention sized the scratch for.
    int attention_block_rows(const SequenceSlice& s) const;

    // ---- batched decoding: one token per sequence, recurrent, no introspection --------------------
    void stage_decode_batch(const ForwardPlan& plan);
    void decode_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y);

    // ---- retention of one sequence ----------------------------------------------------------------
    void retain_sequence(const RetentionCall& call, const SequenceSlice& slice, Rows q, Rows k, Rows v, Rows g, Rows y,
                         __nv_bfloat16* y_bf16);
    void retention_parallel(int layer, const SequenceSlice& slice);
    void retention_chunkwise(int layer, const SequenceSlice& slice, int Tp, int C, bool want_row_factor);
    void retention_recurrent(int layer, const SequenceSlice& slice, float* d_S, float* d_norms_sq, int Tp,
                             bool output);
    // Step coefficients (T, H) for the slice's tokens from its row sums.
    void step_coefficients(const SequenceSlice& slice, std::vector<float>& decay, std::vector<float>& inject) const;
    void record_state_norms(const SequenceSlice& slice, RetentionRecord& record);
    void record_scores(const SequenceSlice& slice, int Tp, RetentionRecord& record);

    CudaOptions options_;
    std::unique_ptr<cuda::CudaStream> stream_;
    std::unique_ptr<cuda::CublasHandle> cublas_;
    // Decoding more rows than the skinny GEMM takes: q, k, v and g come from one GEMM over their
    // adjacent weights into ws_.projected, and the decode retention reads them there (rows of
    // `stride` floats) instead of from the rows they were asked into, which stay unwritten.
    struct ProjectedRows {
        const float* asked = nullptr;
        const float* at = nullptr;
        int64_t stride = 0;
    };
    std::array<ProjectedRows, 4> projected_{};
    bool project_in_one_gemm(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                             std::optional<Activation> glu_activation);
    ProjectedRows projected_rows(Rows r) const;
    // Rows whose values went to ws_.act_bf16 rounded to bf16 and nowhere else (the head norm + gate's
    // and the GLU's output when the next projection reads bf16 rows): activations_bf16() then
    // takes them without a conversion launch; their fp32 buffer was not written.
    const float* rows_in_bf16_only_ = nullptr;
    const __nv_bfloat16* bf16_only_at_ = nullptr;  // where in ws_.act_bf16 they are
    // A forward of one sequence (no introspection, bf16 weights): its v projection writes ws_.vh
    // head-major itself (v_head_major_rows_ rows, padded to v_head_major_tp_ with zero rows), where
    // retain_sequence's layout pass would read v's rows back; v_in_head_major_ says it did.
    int v_head_major_rows_ = 0, v_head_major_tp_ = 0;
    bool v_in_head_major_ = false;
    // The fused chunkwise passes' decays, staged by the forward's first layer (T = -1: none yet).
    struct StagedDecays {
        int T = -1, C = -1;
        const float* k_decay = nullptr;      // (H, Tp)
        const float* chunk_decay = nullptr;  // (H, nC)
    } staged_decays_;

    DeviceBuffer<float> embed_;  // (V, d) fp32: the lookup table
    std::array<DeviceWeight, static_cast<size_t>(Weight::Output) + 1> model_weights_;  // EmbedNorm, FinalNorm, Output
    std::vector<std::array<DeviceWeight, static_cast<size_t>(Weight::Output) + 1>> layer_weights_;  // L
    std::vector<DeviceBuffer<__nv_bfloat16>> bf16_weights_;  // the output matrix, then each layer's projections
    DeviceBuffer<float> log_decay_;  // (H)
    DeviceBuffer<float> theta_;      // (Dk/2)
    std::vector<double> gamma_;      // (H) on the host
    std::vector<DeviceBuffer<float>> head_norms_;  // L × (Dv), or empty (no weight)

    std::vector<std::vector<DeviceBuffer<float>>> states_;  // slot × layer × (H, Dk, Dv)
    std::array<DeviceBuffer<float>, static_cast<size_t>(Scratch::Count)> scratch_;
    HeadMajor ws_;
    cuda::ParamStaging staging_;
    cuda::CudaEvent forward_start_, forward_stop_;  // around the device work of a forward
    bool timer_stopped_ = false;

    static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
    static constexpr size_t kAttentionBlockBytes = size_t{512} << 20;  // the twin's prefill scores
    DeviceBuffer<uint8_t> cublas_workspace_;
    cuda::GraphCache graphs_;
    cuda::HostDownloads downloads_;   // made at the end of the forward
    uint64_t buffer_generation_ = 0;  // bumped whenever a buffer a graph may hold is reallocated
    DeviceBuffer<float> fla_step_;    // (2, H) fla's recurrent step: decay γ_h, then inject 1
    struct DecodeBatch {
        bool active = false;
        const int64_t* positions = nullptr;  // (N) device
        float* const* states = nullptr;      // (L, N) device: layer l of sequence n
        void* const* k_caches = nullptr;     // (L, N) device, the twin: layer l of sequence n
        void* const* v_caches = nullptr;
    } decode_;
    int sms_ = 0;
    uint64_t l2_prefetch_cap_ = 0;  // bytes a launch may request into L2 for the next (backend_cuda_prefetch.cpp)
    bool skinny_norm_ = true;       // 2 to 4 rows: the RMSNorm inside the skinny GEMM's launch (norm_in_skinny_gemm)
    std::unique_ptr<cuda::KvCacheStore> kv_;  // the twin's caches, instead of states_
    DeviceBuffer<uint8_t> attention_ws_;      // the twin: prefill blocks or decode partials
    int attention_splits_ = 1;                // the twin's decode: key ranges per sequence
};

}  // namespace retnet::cuda_backend
