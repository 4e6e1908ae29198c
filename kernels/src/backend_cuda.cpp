// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend: BlockBackend's block sequence over ops on one GPU. Weights are uploaded once
// (fp32, or bf16 for the projections with fp32 accumulation); activations, retention and the
// recurrent states stay in fp32 on the device. Projections are cuBLAS GEMMs (TF32 off unless
// asked for), retention runs through the kernels of retention.cu. Only the logits rows asked
// for, and introspection results when asked for, are copied back. One stream and one cuBLAS
// handle per backend, used from one host thread.
//
// Each form computes exactly what the reference backend computes (core/src/reference):
//   parallel   scores = QKᵀ ⊙ decay (× torchscale row normalization) per head, O = A V, plus the
//              state's contribution γ^(t+1) q_t S0 (fla; torchscale parallel needs an empty state)
//   chunkwise  per chunk: inner = masked scores · V, cross = Q · state_c, chunk states by a scan
//   recurrent  a fused scan over the tokens with the state on chip
// and the state after the call is always the recurrent form's (state handoff between forms).
// The family's coefficients (row sums, step coefficients, decay powers) come from
// retnet/family_rules.h; this file only stages them for the kernels.
#include <algorithm>
#include <array>
#include <cmath>
#include <mutex>
#include <vector>

#include "attention.h"
#include "backend_cuda_internal.h"
#include "decode_retention.h"
#include "device_buffer.h"
#include "gemm.h"
#include "gemv.h"
#include "graph_cache.h"
#include "host_downloads.h"
#include "kv_cache.h"
#include "ops.h"
#include "param_staging.h"
#include "retnet/block_ops.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/cuda/module.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "skinny_gemm.h"

namespace retnet {
namespace {

using cuda::DeviceBuffer;

// One weight on the device: norms and the embedding in fp32; projections fp32 or bf16.
struct DeviceWeight {
    DeviceBuffer<float> f32;
    DeviceBuffer<__nv_bfloat16> bf16;
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

    double last_device_ms_ = 0.0;  // device time of the last forward, logits copy excluded

private:
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
    void upload(const Tensor& w, DeviceWeight& out, bool projection, DeviceBuffer<float>& staging);
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
    bool cublas_bf16_rows(Rows x, int layer, std::span<const LinearOut> outputs) const;
    bool cublas_bf16_linear(int M, int layer, Weight w) const;
    void write_v_head_major(const __nv_bfloat16* rows, int M, const DeviceWeight& W);
    void linears_bf16(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                      std::optional<Activation> glu_activation = std::nullopt);
    void norm_linears(Rows x, int layer, Weight norm, double eps, Rows h, std::span<const LinearOut> outputs,
                      std::optional<Activation> glu_activation) override;
    void gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) override;
    void attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y) override;
    void glu(Rows a, Rows b, Activation activation) override {
        if (replaying()) return;
        cuda::launch_glu(a.data, b.data, a.data, a.count * a.width, activation == Activation::Gelu, stream());
    }
    void gather_rows(Rows x, std::span<const int64_t> rows, Rows y) override;
    void download(Rows x, float* host) override;
    void stop_timer();

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
    // Rows whose values went to ws_.act_bf16 rounded to bf16 and nowhere else (the head norm + gate's
    // and the GLU's output when the next projection is a bf16 cuBLAS GEMM): activations_bf16() then
    // takes them without a conversion launch; their fp32 buffer was not written.
    const float* rows_in_bf16_only_ = nullptr;
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
    std::unique_ptr<cuda::KvCacheStore> kv_;  // the twin's caches, instead of states_
    DeviceBuffer<uint8_t> attention_ws_;      // the twin: prefill blocks or decode partials
    int attention_splits_ = 1;                // the twin's decode: key ranges per sequence
};

void CudaBackend::upload(const Tensor& held, DeviceWeight& out, bool projection, DeviceBuffer<float>& staging) {
    if (held.empty()) return;
    out.out = static_cast<int>(held.dim(0));
    out.in = held.rank() > 1 ? static_cast<int>(held.dim(1)) : 1;
    if (held.storage() == Storage::BF16 && projection && options_.bf16_weights) {
        // A bf16 checkpoint's matrix goes up as it is held (bf16 is the upper half of an fp32).
        out.bf16.resize(held.bf16.size());
        RETNET_CUDA_CHECK(cudaMemcpy(out.bf16.get(), held.bf16.data(), held.bf16.size() * sizeof(uint16_t),
                                     cudaMemcpyHostToDevice));
        return;
    }
    const Tensor widened = held.storage() == Storage::BF16 ? held.to_f32() : Tensor();
    const Tensor& w = widened.empty() ? held : widened;
    if (!projection || !options_.bf16_weights) {
        out.f32.upload(w.data, stream());
        return;
    }
    staging.upload(w.data, stream());
    out.bf16.resize(w.data.size());
    cuda::launch_float_to_bf16(staging.get(), out.bf16.get(), w.numel(), stream());
    stream_->synchronize();  // the staging buffer is reused by the next upload
}

void CudaBackend::upload_weights() {
    const Model& m = *model_;
    gamma_ = head_decays(m.weights.log_decay);
    DeviceBuffer<float> staging;
    embed_.upload(m.weights.embed.storage() == Storage::BF16 ? m.weights.embed.to_f32().data
                                                                      : m.weights.embed.data,
                  stream());
    for (Weight w : {Weight::EmbedNorm, Weight::FinalNorm, Weight::Output})
        upload(model_weight(m, -1, w), model_weights_[static_cast<size_t>(w)], w == Weight::Output, staging);
    layer_weights_.resize(m.weights.layers.size());
    for (int l = 0; l < static_cast<int>(m.weights.layers.size()); ++l)
        for (Weight w : {Weight::AttnNorm, Weight::Q, Weight::K, Weight::V, Weight::G, Weight::O, Weight::FfnNorm,
                         Weight::FfnAct, Weight::FfnLin, Weight::FfnOut}) {
            const bool projection = w != Weight::AttnNorm && w != Weight::FfnNorm;
            upload(model_weight(m, l, w), layer_weights_[static_cast<size_t>(l)][static_cast<size_t>(w)], projection,
                   staging);
        }
    // The per-head norm weight is not a BlockOps weight: it is part of the retention op.
    std::vector<float> fla_step(2 * gamma_.size());
    for (size_t h = 0; h < gamma_.size(); ++h) {
        double unused_row_sum = 0.0;
        const StepCoefficients step = recurrent_step(Family::Fla, gamma_[h], unused_row_sum);
        fla_step[h] = step.decay;
        fla_step[gamma_.size() + h] = step.inject;
    }
    fla_step_.upload(fla_step, stream());
    head_norms_.resize(m.weights.layers.size());
    for (size_t l = 0; l < m.weights.layers.size(); ++l)
        if (!m.weights.layers[l].head_norm.empty()) head_norms_[l].upload(m.weights.layers[l].head_norm.data, stream());
}

// The retention forms' scratch, head-major, for the longest sequence of the forward.
void CudaBackend::prepare_retention(Form form, int chunk, size_t t_max, size_t tp_max, size_t n, bool introspection) {
    const ModelConfig& c = model_->config;
    const size_t H = static_cast<size_t>(c.n_heads), Dk = static_cast<size_t>(c.head_dim_k()),
                 Dv = static_cast<size_t>(c.head_dim_v());
    const size_t rows_per_head = decode_.active ? n : tp_max;  // decoding keeps o as (H, N, Dv)
    grow(ws_.qh, H * tp_max * Dk);
    grow(ws_.kh, H * tp_max * Dk);
    grow(ws_.vh, H * tp_max * Dv);
    grow(ws_.oh, H * rows_per_head * Dv);
    if (decode_.active && ws_.arrivals.size() < n * H) {
        grow(ws_.arrivals, n * H);
        RETNET_CUDA_CHECK(cudaMemsetAsync(ws_.arrivals.get(), 0, sizeof(unsigned) * n * H, stream()));
    }
    grow(ws_.row_factor, H * tp_max);
    grow(ws_.row_abs, H * tp_max);
    grow(ws_.norms_sq, t_max * H);
    grow(ws_.state_copy, H * Dk * Dv);
    const size_t nC = form == Form::Chunkwise ? tp_max / static_cast<size_t>(chunk) : 0;
    // The fused chunkwise passes need none of the unfused path's (H, Tp, ·) buffers (at T = 8192 on
    // the 1.3B heads, inner and cross alone are 134 MB each).
    const bool unfused = form == Form::Parallel || (form == Form::Chunkwise && !fused_chunkwise(chunk, nC, introspection));
    if (unfused) {
        grow(ws_.kd, H * tp_max * Dk);
        grow(ws_.cross, H * tp_max * Dv);
    }
    if (form == Form::Parallel) grow(ws_.scores, H * t_max * t_max);
    if (form == Form::Chunkwise) {
        // the chunks' masked scores, rows padded to chunk_scores_ld (the fused passes' layout)
        grow(ws_.scores, H * tp_max * static_cast<size_t>(cuda::chunk_scores_ld(chunk)));
        if (unfused) grow(ws_.inner, H * tp_max * Dv);
        grow(ws_.chunk_states, H * nC * Dk * Dv);
        grow(ws_.state_abs, H * nC);
    }
}

// The twin: every sequence's caches hold its new rows (a moved cache invalidates captured graphs),
// and the attention scratch fits the forward: the decode kernel's partials, or the largest block
// of query rows a prefill works on at once.
void CudaBackend::prepare_attention(const ForwardPlan& plan) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, D = c.head_dim_k();
    if (!cuda::attention_decode_supports(D)) decode_.active = false;  // one-token prefills instead
    int64_t most_keys = 0;
    for (const SequenceSlice& s : plan.sequences) {
        if (kv_->reserve(s.slot, s.position + s.length, stream())) ++buffer_generation_;
        most_keys = std::max(most_keys, kv_->capacity(s.slot));
    }
    size_t bytes = 0;
    if (decode_.active) {
        const int N = static_cast<int>(plan.sequences.size());
        attention_splits_ = cuda::attention_decode_splits(N, H, most_keys, sms_);
        bytes = cuda::attention_decode_workspace_floats(N, H, D, attention_splits_) * sizeof(float);
    } else {
        for (const SequenceSlice& s : plan.sequences) {
            bytes = std::max(bytes, cuda::attention_prefill_workspace_bytes(s.length, H, D, s.position,
                                                                            attention_block_rows(s),
                                                                            kv_->dtype()));
        }
    }
    grow(attention_ws_, bytes);
}

void CudaBackend::prepare(const ForwardPlan& plan) {
    DeviceGuard guard(options_.device);
    const ModelConfig& c = model_->config;
    const Form form = plan.form;
    const int chunk = plan.chunk;
    const size_t H = static_cast<size_t>(c.n_heads), L = static_cast<size_t>(c.n_layers);
    size_t t_max = 0, tp_max = 0, n = 0, staged = 0;
    for (const SequenceSlice& s : plan.sequences) {
        const size_t t = static_cast<size_t>(s.length);
        const size_t tp = form == Form::Chunkwise ? (t + chunk - 1) / chunk * chunk : t;
        t_max = std::max(t_max, t);
        tp_max = std::max(tp_max, tp);
        n += t;
        // per layer: ≤ 5 vectors of (H, Tp), one of (H, nC), two of (H), each slot 256-byte aligned
        staged += (5 * H * tp + H * (tp / std::max(chunk, 1)) + 2 * H + 16 * 64) * L;
    }
    decode_.active = form == Form::Recurrent && !plan.introspection && n == plan.sequences.size() && n <= 65535;
    if (kv_) prepare_attention(plan);
    else prepare_retention(form, chunk, t_max, tp_max, n, plan.introspection);
    // The projections' bf16 input rows, sized before a graph capture begins (a buffer that moved
    // during one would leave its earlier nodes on freed memory): each row as wide as the widest input
    // that a kernel writes there (x, y, the GLU's output).
    if (options_.bf16_weights)
        grow(ws_.act_bf16, n * static_cast<size_t>(std::max({c.d_model, c.value_dim, c.ffn_dim})));
    const bool one_sequence = !kv_ && !decode_.active && !plan.introspection && plan.sequences.size() == 1;
    v_head_major_rows_ = one_sequence && options_.bf16_weights ? static_cast<int>(t_max) : 0;
    v_head_major_tp_ = static_cast<int>(tp_max);
    v_in_head_major_ = false;
    staged_decays_ = {};
    // tokens, and for decoding the positions, state addresses and torchscale's (2, N, H) per layer
    staged += n + 64 + (decode_.active ? 2 * n + 4 * L * n + 2 * L * n * H + 64 * (2 * L + 3) : 0);
    staging_.begin(staged, stream());
    timer_stopped_ = false;
    if (decode_.active && options_.cuda_graphs) {
        cuda::GraphKey key;
        for (const SequenceSlice& s : plan.sequences) key.slots.push_back(s.slot);
        key.logit_rows.assign(plan.logit_rows.begin(), plan.logit_rows.end());
        key.buffers = buffer_generation_ + (staging_.generation() << 32);
        staging_.set_replay(graphs_.begin(key, stream()) == cuda::GraphCache::Mode::Replay);
    } else {
        forward_start_.record(stream());
    }
    if (decode_.active) stage_decode_batch(plan);
}

void CudaBackend::finish(bool completed) {
    rows_in_bf16_only_ = nullptr;
    v_in_head_major_ = false;
    if (!completed) {
        downloads_.discard();
        graphs_.abandon(stream());
        staging_.set_replay(false);
        return;
    }
    launch_graph();
    if (!timer_stopped_) forward_stop_.record(stream());
    downloads_.finish(stream());
    last_device_ms_ = forward_stop_.elapsed_ms_since(forward_start_);
}

// The graph of a decoding step runs here, before the first download (or at the end).
void CudaBackend::launch_graph() {
    if (graphs_.mode() == cuda::GraphCache::Mode::Eager) return;
    staging_.set_replay(false);
    try {
        graphs_.launch(buffer_generation_ + (staging_.generation() << 32), stream(), forward_start_.get());
    } catch (...) {
        graphs_.abandon(stream());
        throw;
    }
    forward_stop_.record(stream());
    timer_stopped_ = true;
}

void CudaBackend::stage_decode_batch(const ForwardPlan& plan) {
    const ModelConfig& c = model_->config;
    const size_t N = plan.sequences.size(), L = static_cast<size_t>(c.n_layers);
    std::vector<int64_t> positions(N);
    if (kv_) {
        std::vector<void*> keys(L * N), values(L * N);  // (L, N)
        for (size_t s = 0; s < N; ++s) {
            positions[s] = plan.sequences[s].position;
            for (size_t l = 0; l < L; ++l) {
                keys[l * N + s] = kv_->keys(plan.sequences[s].slot, static_cast<int>(l));
                values[l * N + s] = kv_->values(plan.sequences[s].slot, static_cast<int>(l));
            }
        }
        decode_.positions = staging_.stage(std::span<const int64_t>(positions), stream());
        decode_.k_caches = staging_.stage(std::span<void* const>(keys), stream());
        decode_.v_caches = staging_.stage(std::span<void* const>(values), stream());
        return;
    }
    std::vector<float*> states(L * N);  // (L, N)
    for (size_t s = 0; s < N; ++s) {
        positions[s] = plan.sequences[s].position;
        for (size_t l = 0; l < L; ++l) states[l * N + s] = state_of(plan.sequences[s].slot, static_cast<int>(l));
    }
    decode_.positions = staging_.stage(std::span<const int64_t>(positions), stream());
    decode_.states = staging_.stage(std::span<float* const>(states), stream());
}

void CudaBackend::embed(std::span<const int32_t> tokens, float scale, Rows x) {
    const int32_t* d_tokens = staging_.stage(tokens, stream());
    if (replaying()) return;
    cuda::launch_embedding(d_tokens, embed_.get(), x.data, static_cast<int>(x.count), static_cast<int>(x.width),
                           scale, stream());
}

// The GEMV's view of a projection: its weights as they are held (bf16 or fp32) and its output.
cuda::GemvJob gemv_job(const DeviceWeight& W, float* y, bool accumulate) {
    return {W.bf16.empty() ? static_cast<const void*>(W.f32.get()) : W.bf16.get(), y, W.out, accumulate};
}

cuda::GemvGlu gemv_glu(std::optional<Activation> activation) {
    if (!activation) return cuda::GemvGlu::None;
    return *activation == Activation::Gelu ? cuda::GemvGlu::Gelu : cuda::GemvGlu::Swish;
}

// y (M, out) = x (M, in) · Wᵀ (+ y): up to 8 rows through the streaming GEMV, up to 16 with bf16
// weights through the tensor-core one, more through cuBLAS.
void CudaBackend::linear(Rows x, int layer, Weight w, Rows y, bool accumulate) {
    if (replaying()) return;
    const DeviceWeight& W = weight(layer, w);
    const int M = static_cast<int>(x.count);
    const bool bf16 = !W.bf16.empty();
    if (rows_in_bf16_only_ == x.data && !cublas_bf16_linear(M, layer, w))
        throw Error("CUDA backend: rows kept only in bf16 reached a projection that reads fp32 (internal error)");
    if (cuda::gemv_supports(M, W.in, bf16)) {
        const cuda::GemvJob job = gemv_job(W, y.data, accumulate);
        cuda::launch_gemv(x.data, M, W.in, &job, 1, bf16, stream());
    } else if (!bf16) {
        cuda::linear_f32(cublas_->get(), x.data, W.f32.get(), y.data, M, W.out, W.in, accumulate ? 1.0f : 0.0f);
    } else if (cuda::skinny_gemm_supports(M, W.in) && w != Weight::Output) {
        const cuda::GemvJob job = gemv_job(W, y.data, accumulate);
        cuda::launch_skinny_gemm(activations_bf16(x), M, W.in, &job, 1, stream());
    } else {
        cuda::linear_bf16(cublas_->get(), activations_bf16(x), W.bf16.get(), y.data, M, W.out, W.in,
                          accumulate ? 1.0f : 0.0f);
    }
    if (w == Weight::Output) stop_timer();
}

// Whether linear() multiplies M rows by weight w through cuBLAS from bf16 rows (its last branch).
bool CudaBackend::cublas_bf16_linear(int M, int layer, Weight w) const {
    const DeviceWeight& W = weight(layer, w);
    return !W.bf16.empty() && !cuda::gemv_supports(M, W.in, true) &&
           !(cuda::skinny_gemm_supports(M, W.in) && w != Weight::Output);
}

// Before act_bf16 is overwritten: rows kept there alone must have been read (by the projection
// that follows the op that made them). It is then sized for `count` values; prepare() sized it for
// every write of the forward, so that it does not move while GEMMs that read it are queued or while
// a graph is captured.
void CudaBackend::release_act_bf16(size_t count) {
    if (rows_in_bf16_only_)
        throw Error("CUDA backend: rows kept only in bf16 were overwritten before their projection (internal error)");
    if (count > ws_.act_bf16.size() && graphs_.mode() == cuda::GraphCache::Mode::Capture)
        throw Error("CUDA backend: the bf16 input rows grew while a graph was captured (internal error)");
    grow(ws_.act_bf16, count);
}

// x rounded to bf16 for cuBLAS, in the workspace that the next projection overwrites.
const __nv_bfloat16* CudaBackend::activations_bf16(Rows x) {
    if (rows_in_bf16_only_ == x.data) {
        rows_in_bf16_only_ = nullptr;
        return ws_.act_bf16.get();
    }
    const int64_t n = x.count * x.width;
    release_act_bf16(static_cast<size_t>(n));
    cuda::launch_float_to_bf16(x.data, ws_.act_bf16.get(), n, stream());
    return ws_.act_bf16.get();
}

// Projections of the same rows: one GEMV launch for all of them when the rows are few.
void CudaBackend::linears(Rows x, int layer, std::span<const LinearOut> outputs) {
    if (replaying()) return;
    const int M = static_cast<int>(x.count);
    std::vector<cuda::GemvJob> jobs;
    bool bf16 = false;
    for (const LinearOut& out : outputs) {
        const DeviceWeight& W = weight(layer, out.weight);
        bf16 = !W.bf16.empty();
        if (!cuda::gemv_supports(M, W.in, bf16) || W.in != x.width || jobs.size() == cuda::kGemvMaxJobs) {
            jobs.clear();
            break;
        }
        jobs.push_back(gemv_job(W, out.y.data, false));
    }
    if (jobs.empty() && cublas_bf16_rows(x, layer, outputs)) {  // the rows rounded once for all the projections
        linears_bf16(activations_bf16(x), M, layer, outputs);
        return;
    }
    if (jobs.empty()) {
        for (const LinearOut& out : outputs) linear(x, layer, out.weight, out.y, false);
        return;
    }
    cuda::launch_gemv(x.data, M, static_cast<int>(x.width), jobs.data(), static_cast<int>(jobs.size()), bf16, stream());
}

// Too many rows for the GEMV, every weight bf16 and as wide as the rows: cuBLAS bf16 GEMMs.
bool CudaBackend::cublas_bf16_rows(Rows x, int layer, std::span<const LinearOut> outputs) const {
    const int K = static_cast<int>(x.width);
    return !cuda::gemv_supports(static_cast<int>(x.count), K, true) &&
           std::all_of(outputs.begin(), outputs.end(), [&](const LinearOut& out) {
               const DeviceWeight& W = weight(layer, out.weight);
               return !W.bf16.empty() && W.in == K;
           });
}

// Up to 16 rows: one tensor-core launch for all of a layer's projections (and the GLU); more
// rows, and the vocabulary projection (32,000 rows of 2048: cuBLAS streams it faster, 38.7 against
// 48.5 µs at 16 rows on the H200), through cuBLAS.
void CudaBackend::linears_bf16(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                               std::optional<Activation> glu_activation) {
    const int K = weight(layer, outputs.front().weight).in;
    const bool vocabulary = std::any_of(outputs.begin(), outputs.end(),
                                        [](const LinearOut& out) { return out.weight == Weight::Output; });
    if (cuda::skinny_gemm_supports(M, K) && !vocabulary && outputs.size() <= static_cast<size_t>(cuda::kGemvMaxJobs)) {
        std::vector<cuda::GemvJob> jobs;
        for (const LinearOut& out : outputs) jobs.push_back(gemv_job(weight(layer, out.weight), out.y.data, false));
        cuda::launch_skinny_gemm(rows, M, K, jobs.data(), static_cast<int>(jobs.size()), stream(),
                                 gemv_glu(glu_activation));
    } else {
        for (const LinearOut& out : outputs) {
            const DeviceWeight& W = weight(layer, out.weight);
            if (out.weight == Weight::V && M == v_head_major_rows_) {
                write_v_head_major(rows, M, W);
                continue;
            }
            cuda::linear_bf16(cublas_->get(), rows, W.bf16.get(), out.y.data, M, W.out, W.in, 0.0f);
        }
        if (glu_activation) {
            const Rows a = outputs[0].y, b = outputs[1].y;
            if (cublas_bf16_linear(M, layer, Weight::FfnOut)) {
                // the FFN's down projection reads the GLU's output from act_bf16, which the GEMMs above read
                // before it in the stream
                release_act_bf16(static_cast<size_t>(a.count * a.width));
                cuda::launch_glu(a.data, b.data, ws_.act_bf16.get(), a.count * a.width,
                                 *glu_activation == Activation::Gelu, stream());
                rows_in_bf16_only_ = a.data;
            } else {
                glu(a, b, *glu_activation);
            }
        }
    }
    for (const LinearOut& out : outputs)
        if (out.weight == Weight::Output) stop_timer();
}

// v (M rows) = rows · W_vᵀ straight into ws_.vh (H, Tp, Dv), its padding rows zero: what
// retain_sequence's launch_to_head_major would make of v's rows.
void CudaBackend::write_v_head_major(const __nv_bfloat16* rows, int M, const DeviceWeight& W) {
    const int H = model_->config.n_heads, Dv = W.out / H, Tp = v_head_major_tp_;
    const int64_t head_stride = static_cast<int64_t>(Tp) * Dv;
    cuda::linear_bf16_head_major(cublas_->get(), rows, W.bf16.get(), ws_.vh.get(), M, W.out, W.in, H, head_stride);
    if (Tp > M)
        RETNET_CUDA_CHECK(cudaMemset2DAsync(ws_.vh.get() + static_cast<int64_t>(M) * Dv, head_stride * sizeof(float), 0,
                                            static_cast<size_t>(Tp - M) * Dv * sizeof(float), H, stream()));
    v_in_head_major_ = true;
}

// Few rows: the norm (and the GLU) inside the projections' one launch; h is never written. More
// rows with bf16 weights: the norm writes the GEMMs' bf16 input directly.
void CudaBackend::norm_linears(Rows x, int layer, Weight norm, double eps, Rows h, std::span<const LinearOut> outputs,
                               std::optional<Activation> glu_activation) {
    if (replaying()) return;
    const int M = static_cast<int>(x.count), K = static_cast<int>(x.width);
    const bool bf16 = options_.bf16_weights;
    bool fusable = cuda::gemv_supports_fusion(M, K, bf16) && !outputs.empty() &&
                   outputs.size() <= static_cast<size_t>(cuda::kGemvMaxJobs) && (!glu_activation || outputs.size() == 2);
    std::vector<cuda::GemvJob> jobs;
    for (const LinearOut& out : outputs) {
        const DeviceWeight& W = weight(layer, out.weight);
        fusable = fusable && W.in == K && (W.bf16.empty() != bf16);
        jobs.push_back(gemv_job(W, out.y.data, false));
    }
    const DeviceWeight& norm_weight = weight(layer, norm);
    if (!fusable && cublas_bf16_rows(x, layer, outputs)) {
        release_act_bf16(static_cast<size_t>(M) * static_cast<size_t>(K));
        cuda::launch_rmsnorm_bf16(x.data, norm_weight.f32.empty() ? nullptr : norm_weight.f32.get(), ws_.act_bf16.get(),
                                  M, K, static_cast<float>(eps), stream());
        linears_bf16(ws_.act_bf16.get(), M, layer, outputs, glu_activation);
        return;
    }
    if (!fusable) return BlockOps::norm_linears(x, layer, norm, eps, h, outputs, glu_activation);
    const cuda::GemvInputTransform input{cuda::GemvInput::RmsNorm, norm_weight.f32.empty() ? nullptr : norm_weight.f32.get(),
                                         static_cast<float>(eps)};
    cuda::launch_gemv(x.data, M, K, jobs.data(), static_cast<int>(jobs.size()), bf16, stream(), input,
                      gemv_glu(glu_activation));
    for (const LinearOut& out : outputs)
        if (out.weight == Weight::Output) stop_timer();
}

// Consecutive rows are copied together, so one sequence's rows cost one copy.
void CudaBackend::gather_rows(Rows x, std::span<const int64_t> rows, Rows y) {
    if (replaying()) return;
    const size_t row_bytes = sizeof(float) * static_cast<size_t>(x.width);
    for (size_t i = 0; i < rows.size();) {
        size_t run = 1;
        while (i + run < rows.size() && rows[i + run] == rows[i] + static_cast<int64_t>(run)) ++run;
        RETNET_CUDA_CHECK(cudaMemcpyAsync(y.data + static_cast<int64_t>(i) * x.width, x.data + rows[i] * x.width,
                                          run * row_bytes, cudaMemcpyDeviceToDevice, stream()));
        i += run;
    }
}

// Logits are final once projected: their copies wait for finish(), which makes them together.
// Anything else (a layer's output) is copied now, before later ops overwrite its rows.
void CudaBackend::download(Rows x, float* host) {
    launch_graph();
    if (!timer_stopped_) stop_timer();  // without logits, the first download ends the device time
    const size_t count = static_cast<size_t>(x.count * x.width);
    const DeviceBuffer<float>& logits = scratch_[static_cast<size_t>(Scratch::Logits)];
    const auto begin = reinterpret_cast<uintptr_t>(logits.get()), at = reinterpret_cast<uintptr_t>(x.data);
    if (at >= begin && at + count * sizeof(float) <= begin + logits.bytes()) {
        downloads_.add(x.data, host, count);
        return;
    }
    RETNET_CUDA_CHECK(cudaMemcpyAsync(host, x.data, sizeof(float) * count, cudaMemcpyDeviceToHost, stream()));
    stream_->synchronize();
}

// The device time of a forward ends with its output projection: host work after it (allocating
// the logits' host memory, copying them) is not device time.
void CudaBackend::stop_timer() {
    if (timer_stopped_ || graphs_.mode() != cuda::GraphCache::Mode::Eager) return;
    forward_stop_.record(stream());
    timer_stopped_ = true;
}

void CudaBackend::gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) {
    if (decode_.active) return decode_retention(call, q, k, v, g, y);
    // The output projection's bf16 input straight from the head norm + gate.
    const bool y_in_bf16 = cublas_bf16_linear(static_cast<int>(y.count), call.layer, Weight::O);
    if (y_in_bf16) release_act_bf16(static_cast<size_t>(y.count * y.width));
    for (const SequenceSlice& slice : call.sequences)
        retain_sequence(call, slice, q, k, v, g, y, y_in_bf16 ? ws_.act_bf16.get() : nullptr);
    if (y_in_bf16) rows_in_bf16_only_ = y.data;
}

// The twin's attention: all sequences in one decode launch, or each sequence's prefill.
void CudaBackend::attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y) {
    const ModelConfig& c = model_->config;
    if (!decode_.active) {
        for (const SequenceSlice& slice : call.sequences) attention_prefill(call, slice, q, k, v, y);
        return;
    }
    if (replaying()) return;
    const int N = static_cast<int>(call.sequences.size());
    cuda::AttentionDecodeArgs args;
    args.q = q.data, args.k = k.data, args.v = v.data;
    args.k_caches = decode_.k_caches + static_cast<size_t>(call.layer) * N;
    args.v_caches = decode_.v_caches + static_cast<size_t>(call.layer) * N;
    args.positions = decode_.positions;
    args.theta = theta_.get();
    args.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim_k())));
    args.dtype = kv_->dtype();
    args.o = y.data;
    args.workspace = reinterpret_cast<float*>(attention_ws_.get());
    args.N = N, args.H = c.n_heads, args.D = c.head_dim_k();
    args.splits = attention_splits_;
    cuda::launch_attention_decode(args, stream());
}

int CudaBackend::attention_block_rows(const SequenceSlice& s) const {
    const ModelConfig& c = model_->config;
    return cuda::attention_prefill_block_rows(s.length, c.n_heads, c.head_dim_k(), s.position, kv_->dtype(),
                                              kAttentionBlockBytes);
}

void CudaBackend::attention_prefill(const AttentionCall& call, const SequenceSlice& slice, Rows q, Rows k, Rows v,
                                    Rows y) {
    const ModelConfig& c = model_->config;
    const int64_t row0 = slice.first_row;
    cuda::AttentionPrefillArgs args;
    args.q = q.data + row0 * q.width, args.k = k.data + row0 * k.width, args.v = v.data + row0 * v.width;
    args.k_cache = kv_->keys(slice.slot, call.layer);
    args.v_cache = kv_->values(slice.slot, call.layer);
    args.capacity = kv_->capacity(slice.slot);
    args.pos0 = slice.position;
    args.theta = theta_.get();
    args.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim_k())));
    args.dtype = kv_->dtype();
    args.o = y.data + row0 * y.width;
    args.workspace = attention_ws_.get();
    args.workspace_bytes = attention_ws_.size();
    args.T = slice.length, args.H = c.n_heads, args.D = c.head_dim_k();
    args.block_rows = attention_block_rows(slice);
    cuda::launch_attention_prefill(cublas_->get(), args, stream());
}

// All sequences at once, the head norm and gate fused into the same launch.
void CudaBackend::decode_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) {
    const ModelConfig& c = model_->config;
    const int N = static_cast<int>(call.sequences.size()), H = c.n_heads;
    cuda::DecodeRetentionArgs args;
    if (c.family == Family::TorchScale) {  // coefficients from each sequence's row sums
        std::vector<float> coef(2 * static_cast<size_t>(N) * H);  // (2, N, H): decay, then inject
        for (int n = 0; n < N; ++n)
            for (int h = 0; h < H; ++h) {
                double r = call.sequences[static_cast<size_t>(n)].row_sums[static_cast<size_t>(h)];
                const StepCoefficients step = recurrent_step(c.family, gamma_[static_cast<size_t>(h)], r);
                coef[static_cast<size_t>(n) * H + h] = step.decay;
                coef[static_cast<size_t>(N + n) * H + h] = step.inject;
            }
        args.coef_a = staging_.stage(coef, stream());
        args.coef_b = args.coef_a + static_cast<size_t>(N) * H;
        args.coef_per_sequence = true;
    } else {
        args.coef_a = fla_step_.get();
        args.coef_b = fla_step_.get() + H;
    }
    if (replaying()) return;
    const QKScale scale = qk_scale(c);
    args.q = q.data, args.k = k.data, args.v = v.data;
    args.states = decode_.states + static_cast<size_t>(call.layer) * N;
    args.positions = decode_.positions;
    args.theta = theta_.get();
    args.q_scale = scale.q, args.k_scale = scale.k;
    args.interleaved = rotary_pairs(c.family) == RotaryPairs::Interleaved;
    args.o = ws_.oh.get();
    args.N = N, args.H = H, args.Dk = c.head_dim_k(), args.Dv = c.head_dim_v();
    const DeviceBuffer<float>& head_norm = head_norms_[static_cast<size_t>(call.layer)];
    args.g = g.data, args.y = y.data, args.arrivals = ws_.arrivals.get();
    args.head_norm_weight = head_norm.empty() ? nullptr : head_norm.get();
    args.head_norm_eps = static_cast<float>(call.head_norm_eps);
    cuda::launch_decode_retention(args, stream());
}

void CudaBackend::retain_sequence(const RetentionCall& call, const SequenceSlice& slice, Rows q, Rows k, Rows v,
                                  Rows g, Rows y, __nv_bfloat16* y_bf16) {
    const ModelConfig& c = model_->config;
    const int T = slice.length, H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v();
    const int C = call.chunk;
    const int Tp = call.form == Form::Chunkwise ? (T + C - 1) / C * C : T;
    const QKScale scale = qk_scale(c);
    const bool interleaved = rotary_pairs(c.family) == RotaryPairs::Interleaved;
    const int64_t row0 = slice.first_row;
    cuda::launch_rotary_to_head_major(q.data + row0 * q.width, theta_.get(), ws_.qh.get(), T, Tp, H, Dk,
                                      slice.position, scale.q, interleaved, stream());
    cuda::launch_rotary_to_head_major(k.data + row0 * k.width, theta_.get(), ws_.kh.get(), T, Tp, H, Dk,
                                      slice.position, scale.k, interleaved, stream());
    if (v_in_head_major_)  // the v projection wrote it (write_v_head_major)
        v_in_head_major_ = false;
    else
        cuda::launch_to_head_major(v.data + row0 * v.width, ws_.vh.get(), T, Tp, H, Dv, stream());

    float* S = state_of(slice.slot, call.layer);
    RetentionRecord* record = call.record;
    const bool want_norms = record && record->state_norms;
    if (want_norms) {
        RETNET_CUDA_CHECK(cudaMemsetAsync(ws_.norms_sq.get(), 0, sizeof(float) * T * H, stream()));
        if (call.form != Form::Recurrent) {  // a state-only scan on a copy, before the form changes S
            RETNET_CUDA_CHECK(cudaMemcpyAsync(ws_.state_copy.get(), S, sizeof(float) * state_size(),
                                              cudaMemcpyDeviceToDevice, stream()));
            retention_recurrent(call.layer, slice, ws_.state_copy.get(), ws_.norms_sq.get(), Tp, false);
        }
    }
    switch (call.form) {
        case Form::Parallel: retention_parallel(call.layer, slice); break;
        case Form::Chunkwise: retention_chunkwise(call.layer, slice, Tp, C, record && record->scores); break;
        case Form::Recurrent:
            retention_recurrent(call.layer, slice, S, want_norms ? ws_.norms_sq.get() : nullptr, Tp, true);
            break;
    }
    if (want_norms) record_state_norms(slice, *record);
    if (record && record->scores) record_scores(slice, Tp, *record);

    const DeviceBuffer<float>& head_norm = head_norms_[static_cast<size_t>(call.layer)];
    const float* w = head_norm.empty() ? nullptr : head_norm.get();
    const float eps = static_cast<float>(call.head_norm_eps);
    if (y_bf16)
        cuda::launch_head_norm_gate(ws_.oh.get(), g.data + row0 * g.width, w, y_bf16 + row0 * y.width, T, Tp, H, Dv, eps,
                                    stream());
    else
        cuda::launch_head_norm_gate(ws_.oh.get(), g.data + row0 * g.width, w, y.data + row0 * y.width, T, Tp, H, Dv, eps,
                                    stream());
}

void CudaBackend::step_coefficients(const SequenceSlice& slice, std::vector<float>& decay,
                                    std::vector<float>& inject) const {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, T = slice.length;
    decay.assign(static_cast<size_t>(T) * H, 0.0f);
    inject.assign(decay.size(), 1.0f);
    for (int h = 0; h < H; ++h) {
        double r = slice.row_sums.empty() ? 0.0 : slice.row_sums[static_cast<size_t>(h)];
        for (int t = 0; t < T; ++t) {
            const StepCoefficients step = recurrent_step(c.family, gamma_[static_cast<size_t>(h)], r);
            decay[static_cast<size_t>(t) * H + h] = step.decay;
            inject[static_cast<size_t>(t) * H + h] = step.inject;
        }
    }
}

// Parallel: O_h = (decayed, normalized Q_h K_hᵀ) V_h (+ γ^(t+1) q_t S0 for fla), then the state
// S ← γ^T S + Σ_m γ^(T−1−m) k_m v_mᵀ (fla; torchscale starts empty: S = Σ_m γ^(T−1−m) k_m v_mᵀ/√r_T).
void CudaBackend::retention_parallel(int layer, const SequenceSlice& slice) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v(), T = slice.length;
    const bool ts = c.family == Family::TorchScale;
    const int64_t sk = static_cast<int64_t>(T) * Dk, sv = static_cast<int64_t>(T) * Dv, ss = static_cast<int64_t>(T) * T;
    cublasHandle_t handle = cublas_->get();

    // Row scale 1/√r_n with r_n = Σ_{m≤n} γ^(n−m) (torchscale), 1 (fla).
    std::vector<float> row_scale(static_cast<size_t>(H) * T, 1.0f), k_decay(row_scale.size());
    std::vector<float> head_factor(static_cast<size_t>(H)), cross_coef(row_scale.size());
    for (int h = 0; h < H; ++h) {
        const double gamma = gamma_[static_cast<size_t>(h)];
        const std::vector<double> p = decay_powers<double>(gamma, T);
        const double r0 = ts ? slice.row_sums[static_cast<size_t>(h)] : 0.0;  // torchscale: 0 (empty state)
        double rn = r0;
        for (int t = 0; t < T; ++t) {
            rn = next_row_sum(rn, gamma);
            if (ts) row_scale[static_cast<size_t>(h) * T + t] = static_cast<float>(1.0 / std::sqrt(rn));
            cross_coef[static_cast<size_t>(h) * T + t] = static_cast<float>(p[static_cast<size_t>(t + 1)]);
        }
        const double inject = ts ? 1.0 / std::sqrt(rn) : 1.0;
        for (int m = 0; m < T; ++m)
            k_decay[static_cast<size_t>(h) * T + m] = static_cast<float>(p[static_cast<size_t>(T - 1 - m)] * inject);
        // torchscale S holds raw/√r: the old part becomes γ^T·√r0/√r_T of itself (0 from empty).
        head_factor[static_cast<size_t>(h)] = static_cast<float>(p[static_cast<size_t>(T)] * (ts ? std::sqrt(r0) * inject : 1.0));
    }
    const float* d_row_scale = staging_.stage(row_scale, stream());

    cuda::gemm_strided_batched(handle, false, true, T, T, Dk, 1.0f, ws_.qh.get(), Dk, sk, ws_.kh.get(), Dk, sk,
                               0.0f, ws_.scores.get(), T, ss, H);
    cuda::launch_parallel_decay_normalize(ws_.scores.get(), log_decay_.get(), d_row_scale,
                                          ws_.row_factor.get(), H, T, ts ? 5e4f : 0.0f, stream());
    cuda::gemm_strided_batched(handle, false, false, T, Dv, T, 1.0f, ws_.scores.get(), T, ss, ws_.vh.get(), Dv,
                               sv, 0.0f, ws_.oh.get(), Dv, sv, H);
    float* S = state_of(slice.slot, layer);
    const int64_t sS = static_cast<int64_t>(Dk) * Dv;
    if (!ts) {  // the state's contribution: o_t += γ^(t+1) q_t S0 (also after a restore at position 0)
        cuda::gemm_strided_batched(handle, false, false, T, Dv, Dk, 1.0f, ws_.qh.get(), Dk, sk, S, Dv, sS, 0.0f,
                                   ws_.cross.get(), Dv, sv, H);
        cuda::launch_add_scaled_rows(ws_.oh.get(), ws_.cross.get(), staging_.stage(cross_coef, stream()), H, T, Dv,
                                     stream());
    }
    // State: S ← γ^T S + Σ_m (γ^(T−1−m)·inject) k_m v_mᵀ
    cuda::launch_scale_per_head(S, staging_.stage(head_factor, stream()), H, sS, stream());
    cuda::launch_scale_rows(ws_.kh.get(), staging_.stage(k_decay, stream()), ws_.kd.get(), H, T, Dk, stream());
    cuda::gemm_strided_batched(handle, true, false, Dk, Dv, T, 1.0f, ws_.kd.get(), Dk, sk, ws_.vh.get(), Dv, sv,
                               1.0f, S, Dv, sS, H);
}

// Chunkwise (chunks counted from the call's first token; Tp = nC·C rows, zero padded):
//   inner_c = (mask ⊙ Q_c K_cᵀ) V_c,   cross_c = Q_c · state_c (raw),
//   state_{c+1} = γ^len_c state_c + Σ_j γ^(len_c−1−j) k_j v_jᵀ (exact for the partial last chunk,
//   so the final state is the recurrent form's), combined per the family (see ops.h).
void CudaBackend::retention_chunkwise(int layer, const SequenceSlice& slice, int Tp, int C, bool want_row_factor) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v(), T = slice.length;
    const int nC = Tp / C;
    const bool ts = c.family == Family::TorchScale;
    cublasHandle_t handle = cublas_->get();
    const int64_t ck = static_cast<int64_t>(C) * Dk, cv = static_cast<int64_t>(C) * Dv, cc = static_cast<int64_t>(C) * C;
    const int64_t sS = static_cast<int64_t>(Dk) * Dv;
    float* S = state_of(slice.slot, layer);

    std::vector<float> k_decay(static_cast<size_t>(H) * Tp, 0.0f), chunk_decay(static_cast<size_t>(H) * nC);
    std::vector<float> to_raw(static_cast<size_t>(H)), from_raw(static_cast<size_t>(H));
    for (int h = 0; h < H; ++h) {
        const double gamma = gamma_[static_cast<size_t>(h)];
        const std::vector<double> p = decay_powers<double>(gamma, C);
        for (int c0 = 0, ci = 0; c0 < T; c0 += C, ++ci) {
            const int len = std::min(C, T - c0);
            for (int j = 0; j < len; ++j)
                k_decay[static_cast<size_t>(h) * Tp + c0 + j] = static_cast<float>(p[static_cast<size_t>(len - 1 - j)]);
            chunk_decay[static_cast<size_t>(h) * nC + ci] = static_cast<float>(p[static_cast<size_t>(len)]);
        }
        if (ts) {
            const double r0 = slice.row_sums[static_cast<size_t>(h)];
            to_raw[static_cast<size_t>(h)] = static_cast<float>(std::sqrt(r0));
            from_raw[static_cast<size_t>(h)] = static_cast<float>(1.0 / std::sqrt(advance_row_sum(r0, gamma, T)));
        }
    }
    // fla with TF32 products (kChunkProducts): the states, the chunks' masked scores and the output in
    // three fused passes (chunk_states.cu, chunk_output.cu); torchscale's normalizations and the
    // introspected row factors take the kernels below.
    if (fused_chunkwise(C, static_cast<size_t>(nC), want_row_factor)) {
        // The decays depend on the heads' γ, T and C alone: staged once for all the layers of a forward
        // (a copy between two kernels also ends the second's overlap with the first).
        if (staged_decays_.T != T || staged_decays_.C != C)
            staged_decays_ = {T, C, staging_.stage(k_decay, stream()), staging_.stage(chunk_decay, stream())};
        cuda::launch_chunk_states(ws_.kh.get(), ws_.vh.get(), staged_decays_.k_decay, staged_decays_.chunk_decay, S,
                                  ws_.chunk_states.get(), H, nC, C, Dk, Dv, kChunkProducts, stream());
        cuda::launch_chunk_scores(ws_.qh.get(), ws_.kh.get(), log_decay_.get(), H, ws_.scores.get(), H, nC, C, Dk,
                                  kChunkProducts, stream());
        cuda::launch_chunk_output(ws_.qh.get(), ws_.scores.get(), ws_.vh.get(), ws_.chunk_states.get(),
                                  log_decay_.get(), H, cuda::ChunkDestination::head_major(ws_.oh.get()), H, nC, C, Dk,
                                  Dv, kChunkProducts, stream());
        return;
    }
    cuda::gemm_strided_batched(handle, false, true, C, C, Dk, 1.0f, ws_.qh.get(), Dk, ck, ws_.kh.get(), Dk, ck,
                               0.0f, ws_.scores.get(), C, cc, H * nC);
    cuda::launch_chunk_decay_mask(ws_.scores.get(), log_decay_.get(), ws_.row_abs.get(), H, nC, C, ts, stream());
    cuda::gemm_strided_batched(handle, false, false, C, Dv, C, 1.0f, ws_.scores.get(), C, cc, ws_.vh.get(), Dv, cv,
                               0.0f, ws_.inner.get(), Dv, cv, H * nC);
    if (ts) cuda::launch_scale_per_head(S, staging_.stage(to_raw, stream()), H, sS, stream());
    const float* d_k_decay = staging_.stage(k_decay, stream());
    const float* d_chunk_decay = staging_.stage(chunk_decay, stream());
    if (tf32_products()) {
        cuda::launch_chunk_states(ws_.kh.get(), ws_.vh.get(), d_k_decay, d_chunk_decay, S, ws_.chunk_states.get(), H,
                                  nC, C, Dk, Dv, kChunkProducts, stream());
    } else {
        cuda::launch_scale_rows(ws_.kh.get(), d_k_decay, ws_.kd.get(), H, Tp, Dk, stream());
        cuda::gemm_strided_batched(handle, true, false, Dk, Dv, C, 1.0f, ws_.kd.get(), Dk, ck, ws_.vh.get(), Dv, cv,
                                   0.0f, ws_.chunk_states.get(), Dv, sS, H * nC);
        cuda::launch_chunk_state_scan(ws_.chunk_states.get(), S, d_chunk_decay, H, nC, sS, stream());
    }
    cuda::gemm_strided_batched(handle, false, false, C, Dv, Dk, 1.0f, ws_.qh.get(), Dk, ck, ws_.chunk_states.get(),
                               Dv, sS, 0.0f, ws_.cross.get(), Dv, cv, H * nC);
    if (ts) {
        // torchscale's S_B = Σ_{j<C} γ^j is per head; s_c needs it per (head, chunk): one launch per head.
        for (int h = 0; h < H; ++h) {
            const double S_B = advance_row_sum(0.0, gamma_[static_cast<size_t>(h)], C);
            cuda::launch_chunk_state_abs_max(ws_.chunk_states.get() + static_cast<int64_t>(h) * nC * sS,
                                             ws_.state_abs.get() + static_cast<int64_t>(h) * nC, 1, nC, Dk, Dv,
                                             static_cast<float>(1.0 / S_B), stream());
        }
    }
    cuda::launch_chunk_combine(ws_.inner.get(), ws_.cross.get(), log_decay_.get(), ws_.row_abs.get(),
                               ws_.state_abs.get(), ws_.oh.get(), ws_.row_factor.get(), H, Tp, C, Dv, ts, stream());
    if (ts) cuda::launch_scale_per_head(S, staging_.stage(from_raw, stream()), H, sS, stream());
}

// The recurrent scan on d_S. With `output`, o and the scores' row factors (1/√r_n after each
// update for torchscale, 1 for fla) are written; without, only the state (and the norms).
void CudaBackend::retention_recurrent(int layer, const SequenceSlice& slice, float* d_S, float* d_norms_sq, int Tp,
                                      bool output) {
    (void)layer;
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, T = slice.length;
    std::vector<float> decay, inject;
    step_coefficients(slice, decay, inject);
    const float* d_a = staging_.stage(decay, stream());
    const float* d_b = staging_.stage(inject, stream());
    if (output) {
        std::vector<float> factor(static_cast<size_t>(H) * T);  // head-major copy of inject
        for (int h = 0; h < H; ++h)
            for (int t = 0; t < T; ++t) factor[static_cast<size_t>(h) * T + t] = inject[static_cast<size_t>(t) * H + h];
        RETNET_CUDA_CHECK(cudaMemcpyAsync(ws_.row_factor.get(), staging_.stage(factor, stream()),
                                          factor.size() * sizeof(float), cudaMemcpyDeviceToDevice, stream()));
    }
    cuda::launch_recurrent_scan(ws_.qh.get(), ws_.kh.get(), ws_.vh.get(), d_S, d_a, d_b,
                                output ? ws_.oh.get() : nullptr, d_norms_sq, H, T, Tp, c.head_dim_k(),
                                c.head_dim_v(), stream());
}

// ‖S_t‖_F after each token, in the family's scaling, from the squared norms of the scan.
void CudaBackend::record_state_norms(const SequenceSlice& slice, RetentionRecord& record) {
    const int H = model_->config.n_heads, T = slice.length;
    std::vector<float> host(static_cast<size_t>(T) * H);
    ws_.norms_sq.download(host.data(), host.size(), stream());
    stream_->synchronize();
    for (size_t i = 0; i < host.size(); ++i) record.state_norms[i] = std::sqrt(std::max(0.0f, host[i]));
}

void CudaBackend::record_scores(const SequenceSlice& slice, int Tp, RetentionRecord& record) {
    const int T = slice.length, n_heads = record.score_head_count;
    ws_.intro_scores.reserve(static_cast<size_t>(n_heads) * T * T);
    cuda::launch_retention_scores(ws_.qh.get(), ws_.kh.get(), log_decay_.get(), ws_.row_factor.get(),
                                  ws_.intro_scores.get(), record.score_head_begin, n_heads, T, Tp,
                                  model_->config.head_dim_k(), stream());
    ws_.intro_scores.download(record.scores, static_cast<size_t>(n_heads) * T * T, stream());
    stream_->synchronize();
}

std::once_flag g_register_once;

}  // namespace

double cuda_last_forward_device_ms(const Backend& backend) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
    return cuda ? cuda->last_device_ms_ : -1.0;
}

int64_t cuda_device_memory_in_use() {
    size_t free_bytes = 0, total_bytes = 0;
    RETNET_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return static_cast<int64_t>(total_bytes - free_bytes);
}

bool cuda_device_available(std::string* why) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        if (why) {
            if (status == cudaErrorNoDevice) *why = "no CUDA device found";
            else if (status == cudaErrorInsufficientDriver)
                *why = "no usable CUDA driver (missing, or older than this build's CUDA runtime)";
            else
                *why = std::string("CUDA driver unavailable: ") + cudaGetErrorString(status);
        }
        (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return false;
    }
    if (count == 0) {
        if (why) *why = "no CUDA device found";
        return false;
    }
    return true;
}

int cuda_device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count;
}

// Device bytes of the uploaded weights: embeddings and norms in fp32, projections in fp32 or bf16
// (the output matrix is a separate copy even when tied).
static size_t device_weight_bytes(const Model& model, bool bf16) {
    const ModelWeights& w = model.weights;
    const size_t linear_size = bf16 ? 2 : 4;
    auto bytes = [](const Tensor& t, size_t element) { return static_cast<size_t>(t.numel()) * element; };
    size_t total = bytes(w.embed, 4) + bytes(w.embed_norm, 4) + bytes(w.final_norm, 4) +
                   bytes(w.output_matrix(), linear_size) + (w.log_decay.size() + w.rotary_theta.size()) * 4;
    for (const LayerWeights& l : w.layers) {
        total += bytes(l.attn_norm, 4) + bytes(l.head_norm, 4) + bytes(l.ffn_norm, 4);
        for (const Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.g_proj, &l.o_proj, &l.ffn_act, &l.ffn_lin, &l.ffn_out})
            total += bytes(*t, linear_size);
    }
    return total;
}

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, CudaOptions options) {
    if (!model) throw Error("no model");
    std::string why;
    if (!cuda_device_available(&why)) throw Error("CUDA unavailable (" + why + ")");
    int count = 0;
    RETNET_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (options.device < 0 || options.device >= count)
        throw Error("CUDA device " + std::to_string(options.device) + " does not exist (found " +
                    std::to_string(count) + ")");
    // Refuse a model whose weights cannot fit before allocating anything; a failure later (the
    // workspace, cuBLAS) is reported the same way, and the members already made are freed.
    RETNET_CUDA_CHECK(cudaSetDevice(options.device));
    const size_t needed = device_weight_bytes(*model, options.bf16_weights);
    size_t free_bytes = 0, total_bytes = 0;
    RETNET_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (needed > free_bytes)
        throw Error("out of GPU memory: the model's weights need " + cuda::mebibytes(needed) + " but device " +
                    std::to_string(options.device) + " has " + cuda::mebibytes(free_bytes) + " of " +
                    cuda::mebibytes(total_bytes) + " free");
    return std::make_unique<CudaBackend>(std::move(model), options);
}

void register_cuda_backend() {
    std::call_once(g_register_once, [] {
        for (const std::string name : cuda::kCudaBackends)
            register_backend(name, [bf16 = name == "cuda-bf16"](std::shared_ptr<const Model> m) {
                CudaOptions options;
                options.bf16_weights = bf16;
                return make_cuda_backend(std::move(m), options);
            });
    });
}

}  // namespace retnet
