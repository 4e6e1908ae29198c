// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend: retnet::Backend on one GPU. Weights are uploaded once (fp32, or bf16 for the
// projections with fp32 accumulation); activations, retention and the recurrent state stay in
// fp32 on the device. Projections are cuBLAS GEMMs (TF32 off unless asked for), retention runs
// through the kernels of retention.cu. Only logits, and introspection results when asked for,
// are copied back. One stream and one cuBLAS handle per backend, used from one host thread.
//
// Each form computes exactly what the reference backend computes (core/src/reference):
//   parallel   scores = QKᵀ ⊙ decay (× torchscale row normalization) per head, O = A V, plus the
//              state's contribution γ^(t+1) q_t S0 (fla; torchscale parallel needs an empty state)
//   chunkwise  per chunk: inner = masked scores · V, cross = Q · state_c, chunk states by a scan
//   recurrent  a fused scan over the tokens with the state on chip
// and the state after the call is always the recurrent form's (state handoff between forms).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "device_buffer.h"
#include "gemm.h"
#include "ops.h"
#include "retnet/cuda/backend_cuda.h"
#include "backend_cuda_internal.h"
#include "retnet/error.h"

namespace retnet {
namespace {

using cuda::DeviceBuffer;

// One projection weight (out, in) on the device, fp32 or bf16.
struct DeviceLinear {
    DeviceBuffer<float> f32;
    DeviceBuffer<__nv_bfloat16> bf16;
    int out = 0, in = 0;
};

struct DeviceLayer {
    DeviceBuffer<float> attn_norm, head_norm, ffn_norm;  // (d), (Dv) or empty, (d)
    DeviceLinear q, k, v, g, o, ffn_act, ffn_lin, ffn_out;
};

// Per-call scratch; grows to the largest call seen and is then reused.
struct Workspace {
    DeviceBuffer<int32_t> tokens;             // (T)
    DeviceBuffer<float> x, xn;                // (T, d)
    DeviceBuffer<float> qt, kt;               // (T, H*Dk) token-major projections
    DeviceBuffer<float> vt, g, y;             // (T, H*Dv)
    DeviceBuffer<float> qh, kh, kd;           // (H, Tp, Dk) head-major; kd = decayed k
    DeviceBuffer<float> vh, oh, inner, cross; // (H, Tp, Dv)
    DeviceBuffer<float> scores;               // parallel (H, T, T); chunkwise (H*nC, C, C)
    DeviceBuffer<float> chunk_states;         // (H, nC, Dk, Dv)
    DeviceBuffer<float> ffa, ffb;             // (T, F)
    DeviceBuffer<float> logits;               // (T, V)
    DeviceBuffer<float> row_factor, row_abs;                       // (H, Tp)
    DeviceBuffer<float> state_abs;                                 // (H, nC)
    DeviceBuffer<float> norms_sq;                                  // (T, H)
    DeviceBuffer<float> state_copy;                                // (H, Dk, Dv)
    DeviceBuffer<float> intro_scores;                              // (H', T, T)
    DeviceBuffer<__nv_bfloat16> act_bf16;                          // largest GEMM input
};

// Per-call parameters computed on the host (decay coefficients, torchscale's √r bookkeeping) go to
// the device through one pinned buffer: a copy from pageable memory would wait for the stream
// and stall the host between launches, which dominates a one-token decoding step.
class ParamStaging {
public:
    ParamStaging() = default;
    ~ParamStaging() {
        if (host_) RETNET_CUDA_CHECK_PRINT(cudaFreeHost(host_));
    }
    ParamStaging(const ParamStaging&) = delete;
    ParamStaging& operator=(const ParamStaging&) = delete;

    // Starts a call that stages at most `floats` values; the stream must have no staged copy
    // pending (it is synchronized here, which costs nothing between calls).
    void begin(size_t floats, cudaStream_t stream) {
        RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
        if (floats > capacity_) {
            // Empty until both buffers exist, so a failed allocation leaves no half-made staging.
            capacity_ = 0;
            if (host_) RETNET_CUDA_CHECK(cudaFreeHost(host_));
            host_ = nullptr;
            if (cudaMallocHost(reinterpret_cast<void**>(&host_), floats * sizeof(float)) != cudaSuccess) {
                (void)cudaGetLastError();
                host_ = nullptr;
                throw Error("out of pinned host memory: the CUDA parameter staging needs " +
                            cuda::mebibytes(floats * sizeof(float)));
            }
            device_.resize(floats);
            capacity_ = floats;
        }
        used_ = 0;
    }
    // Copies `values` to the device (asynchronously, in stream order); returns the device copy.
    const float* stage(const std::vector<float>& values, cudaStream_t stream) {
        const size_t n = values.size(), padded = (n + 63) / 64 * 64;  // 256-byte aligned slots
        if (used_ + n > capacity_) throw Error("CUDA backend: parameter staging overflow (internal error)");
        std::copy(values.begin(), values.end(), host_ + used_);
        float* d = device_.get() + used_;
        if (n) RETNET_CUDA_CHECK(cudaMemcpyAsync(d, host_ + used_, n * sizeof(float), cudaMemcpyHostToDevice, stream));
        used_ = std::min(capacity_, used_ + padded);
        return d;
    }

private:
    float* host_ = nullptr;  // pinned
    DeviceBuffer<float> device_;
    size_t capacity_ = 0, used_ = 0;
};

class CudaBackend final : public Backend {
public:
    CudaBackend(std::shared_ptr<const Model> model, CudaOptions options)
        : model_(std::move(model)), options_(options) {
        RETNET_CUDA_CHECK(cudaSetDevice(options_.device));
        stream_ = std::make_unique<cuda::CudaStream>();
        cublas_ = std::make_unique<cuda::CublasHandle>();
        RETNET_CUBLAS_CHECK(cublasSetStream(cublas_->get(), stream_->get()));
        RETNET_CUBLAS_CHECK(cublasSetMathMode(
            cublas_->get(), options_.allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
        upload_weights();
        reset();
        stream_->synchronize();
    }

    std::string name() const override { return options_.bf16_weights ? "cuda-bf16" : "cuda"; }
    const Model& model() const override { return *model_; }

    void reset() override {
        const ModelConfig& c = model_->config;
        const size_t per_layer = static_cast<size_t>(c.n_heads) * c.head_dim_k() * c.head_dim_v();
        state_.resize(static_cast<size_t>(c.n_layers));
        for (DeviceBuffer<float>& s : state_) {
            s.resize(per_layer);
            s.zero(stream_->get());
        }
        scale_.assign(static_cast<size_t>(c.n_layers), std::vector<double>(static_cast<size_t>(c.n_heads), 0.0));
        position_ = 0;
    }

    RecurrentState snapshot() const override {
        RetnetDeviceGuard guard(options_.device);
        RecurrentState out = make_empty_state(model_->config);
        out.position = position_;
        for (size_t l = 0; l < state_.size(); ++l) {
            state_[l].download(out.layers[l].S.data(), out.layers[l].S.size(), stream_->get());
            if (model_->config.family == Family::TorchScale) out.layers[l].scale = scale_[l];
        }
        stream_->synchronize();
        return out;
    }

    void restore(const RecurrentState& state) override {
        check_state_shape(model_->config, state);
        RetnetDeviceGuard guard(options_.device);
        for (size_t l = 0; l < state_.size(); ++l) {
            state_[l].upload(state.layers[l].S, stream_->get());
            if (model_->config.family == Family::TorchScale) scale_[l] = state.layers[l].scale;
            else std::fill(scale_[l].begin(), scale_[l].end(), 0.0);
        }
        position_ = state.position;
        stream_->synchronize();
    }

    Tensor forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                   Introspection* intro) override;

private:
    struct RetnetDeviceGuard {
        explicit RetnetDeviceGuard(int device) { RETNET_CUDA_CHECK(cudaSetDevice(device)); }
    };

    void upload_weights();
    void upload_linear(const Tensor& w, DeviceLinear& out, DeviceBuffer<float>& staging);
    // Y (M, out) = X (M, in) · Wᵀ + beta·Y
    void linear(const float* X, const DeviceLinear& W, float* Y, int M, float beta);
    void ensure_workspace(int T, int Tp, int C, Form form);

    void retention_parallel(int layer, int T);
    void retention_chunkwise(int layer, int T, int Tp, int C);
    void retention_recurrent(int layer, int T, float* d_norms_sq);
    // TS recurrent coefficients (or fla's γ, 1) for T steps from the layer's current r; returns r after.
    std::vector<double> recurrent_coefficients(int layer, int T, std::vector<float>& a,
                                               std::vector<float>& b) const;
    void record_state_norms(int layer, int T, Introspection& intro);
    void record_scores(int layer, int T, int Tp, Introspection& intro);

    cudaStream_t stream() const { return stream_->get(); }

    std::shared_ptr<const Model> model_;
    CudaOptions options_;
    std::unique_ptr<cuda::CudaStream> stream_;
    std::unique_ptr<cuda::CublasHandle> cublas_;

    DeviceBuffer<float> embed_;       // (V, d) fp32: the lookup table
    DeviceBuffer<float> embed_norm_;  // (d) or empty
    DeviceBuffer<float> final_norm_;  // (d)
    DeviceLinear lm_head_;            // (V, d)
    DeviceBuffer<float> log_decay_;   // (H)
    DeviceBuffer<float> theta_;       // (Dk/2)
    std::vector<DeviceLayer> layers_;

    std::vector<DeviceBuffer<float>> state_;  // L × (H, Dk, Dv) in the family's scaling
    std::vector<std::vector<double>> scale_;  // L × (H) torchscale r; zeros for fla
    int64_t position_ = 0;

    Workspace ws_;
    ParamStaging staging_;
    cuda::CudaEvent forward_start_, forward_stop_;  // around the device work of forward()

public:
    double last_device_ms_ = 0.0;  // device time of the last forward(), logits copy excluded
};

void CudaBackend::upload_linear(const Tensor& w, DeviceLinear& out, DeviceBuffer<float>& staging) {
    out.out = static_cast<int>(w.dim(0));
    out.in = static_cast<int>(w.dim(1));
    if (!options_.bf16_weights) {
        out.f32.upload(w.data, stream());
        return;
    }
    staging.upload(w.data, stream());
    out.bf16.resize(w.data.size());
    cuda::launch_float_to_bf16(staging.get(), out.bf16.get(), w.numel(), stream());
    stream_->synchronize();  // the staging buffer is reused by the next upload
}

void CudaBackend::upload_weights() {
    const ModelWeights& w = model_->weights;
    DeviceBuffer<float> staging;
    embed_.upload(w.embed.data, stream());
    if (!w.embed_norm.empty()) embed_norm_.upload(w.embed_norm.data, stream());
    final_norm_.upload(w.final_norm.data, stream());
    upload_linear(w.output_matrix(), lm_head_, staging);
    log_decay_.upload(w.log_decay, stream());
    theta_.upload(w.rotary_theta, stream());
    layers_.resize(w.layers.size());
    for (size_t l = 0; l < w.layers.size(); ++l) {
        const LayerWeights& src = w.layers[l];
        DeviceLayer& dst = layers_[l];
        dst.attn_norm.upload(src.attn_norm.data, stream());
        if (!src.head_norm.empty()) dst.head_norm.upload(src.head_norm.data, stream());
        dst.ffn_norm.upload(src.ffn_norm.data, stream());
        upload_linear(src.q_proj, dst.q, staging);
        upload_linear(src.k_proj, dst.k, staging);
        upload_linear(src.v_proj, dst.v, staging);
        upload_linear(src.g_proj, dst.g, staging);
        upload_linear(src.o_proj, dst.o, staging);
        upload_linear(src.ffn_act, dst.ffn_act, staging);
        upload_linear(src.ffn_lin, dst.ffn_lin, staging);
        upload_linear(src.ffn_out, dst.ffn_out, staging);
    }
}

void CudaBackend::linear(const float* X, const DeviceLinear& W, float* Y, int M, float beta) {
    if (!options_.bf16_weights) {
        cuda::linear_f32(cublas_->get(), X, W.f32.get(), Y, M, W.out, W.in, beta);
        return;
    }
    const int64_t n = static_cast<int64_t>(M) * W.in;
    ws_.act_bf16.reserve(static_cast<size_t>(n));
    cuda::launch_float_to_bf16(X, ws_.act_bf16.get(), n, stream());
    cuda::linear_bf16(cublas_->get(), ws_.act_bf16.get(), W.bf16.get(), Y, M, W.out, W.in, beta);
}

void CudaBackend::ensure_workspace(int T, int Tp, int C, Form form) {
    const ModelConfig& c = model_->config;
    const size_t t = static_cast<size_t>(T), tp = static_cast<size_t>(Tp);
    const size_t H = static_cast<size_t>(c.n_heads), Dk = static_cast<size_t>(c.head_dim_k()),
                 Dv = static_cast<size_t>(c.head_dim_v()), d = static_cast<size_t>(c.d_model);
    ws_.tokens.reserve(t);
    ws_.x.reserve(t * d);
    ws_.xn.reserve(t * d);
    ws_.qt.reserve(t * H * Dk);
    ws_.kt.reserve(t * H * Dk);
    ws_.vt.reserve(t * H * Dv);
    ws_.g.reserve(t * H * Dv);
    ws_.y.reserve(t * H * Dv);
    ws_.qh.reserve(H * tp * Dk);
    ws_.kh.reserve(H * tp * Dk);
    ws_.vh.reserve(H * tp * Dv);
    ws_.oh.reserve(H * tp * Dv);
    ws_.ffa.reserve(t * static_cast<size_t>(c.ffn_dim));
    ws_.ffb.reserve(t * static_cast<size_t>(c.ffn_dim));
    ws_.logits.reserve(t * static_cast<size_t>(c.vocab_size));
    ws_.row_factor.reserve(H * tp);
    ws_.row_abs.reserve(H * tp);
    if (form != Form::Recurrent) {
        ws_.kd.reserve(H * tp * Dk);
        ws_.cross.reserve(H * tp * Dv);
    }
    if (form == Form::Parallel) ws_.scores.reserve(H * t * t);
    if (form == Form::Chunkwise) {
        const size_t nC = tp / static_cast<size_t>(C);
        ws_.scores.reserve(H * tp * static_cast<size_t>(C));
        ws_.inner.reserve(H * tp * Dv);
        ws_.chunk_states.reserve(H * nC * Dk * Dv);
        ws_.state_abs.reserve(H * nC);
    }
}

std::vector<double> CudaBackend::recurrent_coefficients(int layer, int T, std::vector<float>& a,
                                                        std::vector<float>& b) const {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads;
    const bool ts = c.family == Family::TorchScale;
    a.assign(static_cast<size_t>(T) * H, 0.0f);
    b.assign(a.size(), 1.0f);
    std::vector<double> r = scale_[static_cast<size_t>(layer)];
    for (int h = 0; h < H; ++h) {
        const double gamma = std::exp(static_cast<double>(model_->weights.log_decay[static_cast<size_t>(h)]));
        double& rh = r[static_cast<size_t>(h)];
        for (int t = 0; t < T; ++t) {
            const size_t i = static_cast<size_t>(t) * H + h;
            if (!ts) {
                a[i] = static_cast<float>(gamma);
                continue;
            }
            const double r_next = rh * gamma + 1.0;
            a[i] = static_cast<float>(std::sqrt(rh) * gamma / std::sqrt(r_next));
            b[i] = static_cast<float>(1.0 / std::sqrt(r_next));
            rh = r_next;
        }
    }
    return r;
}

// Parallel: O_h = (decayed, normalized Q_h K_hᵀ) V_h (+ γ^(t+1) q_t S0 for fla), then the state
// S ← γ^T S + Σ_m γ^(T−1−m) k_m v_mᵀ (fla; torchscale starts empty: S = Σ_m γ^(T−1−m) k_m v_mᵀ/√r_T).
void CudaBackend::retention_parallel(int layer, int T) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v();
    const bool ts = c.family == Family::TorchScale;
    const int64_t sk = static_cast<int64_t>(T) * Dk, sv = static_cast<int64_t>(T) * Dv, ss = static_cast<int64_t>(T) * T;
    cublasHandle_t handle = cublas_->get();
    std::vector<double>& r = scale_[static_cast<size_t>(layer)];

    // Row scale 1/√r_n with r_n = Σ_{m≤n} γ^(n−m) (torchscale), 1 (fla).
    std::vector<float> row_scale(static_cast<size_t>(H) * T, 1.0f), k_decay(row_scale.size());
    std::vector<float> head_factor(static_cast<size_t>(H)), cross_coef(row_scale.size());
    for (int h = 0; h < H; ++h) {
        const double gamma = std::exp(static_cast<double>(model_->weights.log_decay[static_cast<size_t>(h)]));
        const double r0 = r[static_cast<size_t>(h)];  // torchscale: 0 (empty state checked by the caller)
        double rn = r0;
        for (int t = 0; t < T; ++t) {
            rn = rn * gamma + 1.0;
            if (ts) row_scale[static_cast<size_t>(h) * T + t] = static_cast<float>(1.0 / std::sqrt(rn));
            cross_coef[static_cast<size_t>(h) * T + t] = static_cast<float>(std::pow(gamma, t + 1));
        }
        const double inject = ts ? 1.0 / std::sqrt(rn) : 1.0;
        for (int m = 0; m < T; ++m)
            k_decay[static_cast<size_t>(h) * T + m] = static_cast<float>(std::pow(gamma, T - 1 - m) * inject);
        // torchscale S holds raw/√r: the old part becomes γ^T·√r0/√r_T of itself (0 from empty).
        head_factor[static_cast<size_t>(h)] =
            static_cast<float>(std::pow(gamma, T) * (ts ? std::sqrt(r0) * inject : 1.0));
        if (ts) r[static_cast<size_t>(h)] = rn;
    }
    const float* d_row_scale = staging_.stage(row_scale, stream());

    cuda::gemm_strided_batched(handle, false, true, T, T, Dk, 1.0f, ws_.qh.get(), Dk, sk, ws_.kh.get(), Dk, sk,
                               0.0f, ws_.scores.get(), T, ss, H);
    cuda::launch_parallel_decay_normalize(ws_.scores.get(), log_decay_.get(), d_row_scale,
                                          ws_.row_factor.get(), H, T, ts ? 5e4f : 0.0f, stream());
    cuda::gemm_strided_batched(handle, false, false, T, Dv, T, 1.0f, ws_.scores.get(), T, ss, ws_.vh.get(), Dv,
                               sv, 0.0f, ws_.oh.get(), Dv, sv, H);
    float* S = state_[static_cast<size_t>(layer)].get();
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
void CudaBackend::retention_chunkwise(int layer, int T, int Tp, int C) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, Dk = c.head_dim_k(), Dv = c.head_dim_v();
    const int nC = Tp / C;
    const bool ts = c.family == Family::TorchScale;
    cublasHandle_t handle = cublas_->get();
    const int64_t ck = static_cast<int64_t>(C) * Dk, cv = static_cast<int64_t>(C) * Dv, cc = static_cast<int64_t>(C) * C;
    const int64_t sS = static_cast<int64_t>(Dk) * Dv;
    std::vector<double>& r = scale_[static_cast<size_t>(layer)];
    float* S = state_[static_cast<size_t>(layer)].get();

    std::vector<float> k_decay(static_cast<size_t>(H) * Tp, 0.0f), chunk_decay(static_cast<size_t>(H) * nC);
    std::vector<float> to_raw(static_cast<size_t>(H)), from_raw(static_cast<size_t>(H));
    double S_B = 0.0;
    for (int h = 0; h < H; ++h) {
        const double gamma = std::exp(static_cast<double>(model_->weights.log_decay[static_cast<size_t>(h)]));
        for (int c0 = 0, ci = 0; c0 < T; c0 += C, ++ci) {
            const int len = std::min(C, T - c0);
            for (int j = 0; j < len; ++j)
                k_decay[static_cast<size_t>(h) * Tp + c0 + j] = static_cast<float>(std::pow(gamma, len - 1 - j));
            chunk_decay[static_cast<size_t>(h) * nC + ci] = static_cast<float>(std::pow(gamma, len));
        }
        double& rh = r[static_cast<size_t>(h)];
        to_raw[static_cast<size_t>(h)] = static_cast<float>(std::sqrt(rh));
        if (ts) {
            for (int t = 0; t < T; ++t) rh = rh * gamma + 1.0;
            from_raw[static_cast<size_t>(h)] = static_cast<float>(1.0 / std::sqrt(rh));
        }
    }
    // torchscale's S_B = Σ_{j<C} γ^j is per head; s_c needs it per (head, chunk): one launch per head.
    cuda::gemm_strided_batched(handle, false, true, C, C, Dk, 1.0f, ws_.qh.get(), Dk, ck, ws_.kh.get(), Dk, ck,
                               0.0f, ws_.scores.get(), C, cc, H * nC);
    cuda::launch_chunk_decay_mask(ws_.scores.get(), log_decay_.get(), ws_.row_abs.get(), H, nC, C, ts, stream());
    cuda::gemm_strided_batched(handle, false, false, C, Dv, C, 1.0f, ws_.scores.get(), C, cc, ws_.vh.get(), Dv, cv,
                               0.0f, ws_.inner.get(), Dv, cv, H * nC);
    cuda::launch_scale_rows(ws_.kh.get(), staging_.stage(k_decay, stream()), ws_.kd.get(), H, Tp, Dk, stream());
    cuda::gemm_strided_batched(handle, true, false, Dk, Dv, C, 1.0f, ws_.kd.get(), Dk, ck, ws_.vh.get(), Dv, cv,
                               0.0f, ws_.chunk_states.get(), Dv, sS, H * nC);
    if (ts) {
        cuda::launch_scale_per_head(S, staging_.stage(to_raw, stream()), H, sS, stream());
    }
    cuda::launch_chunk_state_scan(ws_.chunk_states.get(), S, staging_.stage(chunk_decay, stream()), H, nC, sS,
                                  stream());
    cuda::gemm_strided_batched(handle, false, false, C, Dv, Dk, 1.0f, ws_.qh.get(), Dk, ck, ws_.chunk_states.get(),
                               Dv, sS, 0.0f, ws_.cross.get(), Dv, cv, H * nC);
    if (ts) {
        for (int h = 0; h < H; ++h) {
            const double gamma = std::exp(static_cast<double>(model_->weights.log_decay[static_cast<size_t>(h)]));
            S_B = 0.0;
            for (int j = 0; j < C; ++j) S_B = S_B * gamma + 1.0;
            cuda::launch_chunk_state_abs_max(ws_.chunk_states.get() + static_cast<int64_t>(h) * nC * sS,
                                             ws_.state_abs.get() + static_cast<int64_t>(h) * nC, 1, nC, Dk, Dv,
                                             static_cast<float>(1.0 / S_B), stream());
        }
    }
    cuda::launch_chunk_combine(ws_.inner.get(), ws_.cross.get(), log_decay_.get(), ws_.row_abs.get(),
                               ws_.state_abs.get(), ws_.oh.get(), ws_.row_factor.get(), H, Tp, C, Dv, ts, stream());
    if (ts) {
        cuda::launch_scale_per_head(S, staging_.stage(from_raw, stream()), H, sS, stream());
    }
}

void CudaBackend::retention_recurrent(int layer, int T, float* d_norms_sq) {
    const ModelConfig& c = model_->config;
    std::vector<float> a, b;
    const std::vector<double> r_after = recurrent_coefficients(layer, T, a, b);
    const float* d_a = staging_.stage(a, stream());
    const float* d_b = staging_.stage(b, stream());
    // Row factor of the scores: 1/√r_n after each update (torchscale), 1 (fla) = b, head-major.
    std::vector<float> factor(static_cast<size_t>(c.n_heads) * T);
    for (int h = 0; h < c.n_heads; ++h)
        for (int t = 0; t < T; ++t)
            factor[static_cast<size_t>(h) * T + t] = b[static_cast<size_t>(t) * c.n_heads + h];
    RETNET_CUDA_CHECK(cudaMemcpyAsync(ws_.row_factor.get(), staging_.stage(factor, stream()),
                                      factor.size() * sizeof(float), cudaMemcpyDeviceToDevice, stream()));
    cuda::launch_recurrent_scan(ws_.qh.get(), ws_.kh.get(), ws_.vh.get(), state_[static_cast<size_t>(layer)].get(),
                                d_a, d_b, ws_.oh.get(), d_norms_sq, c.n_heads, T, T,
                                c.head_dim_k(), c.head_dim_v(), stream());
    if (c.family == Family::TorchScale) scale_[static_cast<size_t>(layer)] = r_after;
}

// ‖S_t‖_F after each token, in the family's scaling, by a state-only recurrent scan over a copy of
// the state (the parallel and chunkwise forms never hold the per-token states).
void CudaBackend::record_state_norms(int layer, int T, Introspection& intro) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads, L = c.n_layers;
    std::vector<float> host(static_cast<size_t>(T) * H);
    ws_.norms_sq.download(host.data(), host.size(), stream());
    stream_->synchronize();
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h)
            intro.state_norms.data[(static_cast<size_t>(t) * L + layer) * H + h] =
                std::sqrt(std::max(0.0f, host[static_cast<size_t>(t) * H + h]));
}

void CudaBackend::record_scores(int layer, int T, int Tp, Introspection& intro) {
    const ModelConfig& c = model_->config;
    const int H = c.n_heads;
    const bool all = intro.want_all_head_scores;
    const int head_begin = all ? 0 : intro.score_head, n_heads = all ? H : 1;
    ws_.intro_scores.reserve(static_cast<size_t>(n_heads) * T * T);
    cuda::launch_retention_scores(ws_.qh.get(), ws_.kh.get(), log_decay_.get(), ws_.row_factor.get(),
                                  ws_.intro_scores.get(), head_begin, n_heads, T, Tp, c.head_dim_k(), stream());
    intro.scores = all ? Tensor({H, T, T}) : Tensor({T, T});
    ws_.intro_scores.download(intro.scores.ptr(), intro.scores.data.size(), stream());
    (void)layer;
}

Tensor CudaBackend::forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                            Introspection* intro) {
    const Model& m = *model_;
    const ModelConfig& c = m.config;
    check_forward_inputs(m, tokens, options);
    if (c.family == Family::TorchScale && options.form == Form::Parallel && position_ != 0)
        throw Error("the torchscale parallel form starts from an empty state (its row "
                    "normalization needs the whole row); continue with the recurrent or "
                    "chunkwise form");
    RetnetDeviceGuard guard(options_.device);
    const int T = static_cast<int>(tokens.size()), d = c.d_model, H = c.n_heads, L = c.n_layers;
    const int Dk = c.head_dim_k(), Dv = c.head_dim_v(), F = c.ffn_dim, V = c.vocab_size;
    const Form form = options.form;
    const int C = options.chunk_size > 0 ? options.chunk_size : c.chunk_size;
    const int Tp = form == Form::Chunkwise ? ((T + C - 1) / C) * C : T;
    const bool ts = c.family == Family::TorchScale;
    const float head_eps = static_cast<float>(options.head_norm_eps.value_or(c.norm_eps));
    const float norm_eps = static_cast<float>(c.norm_eps);
    if (intro) {
        intro->layer_outputs.clear();
        intro->state_norms = intro->want_state_norms ? Tensor({T, L, H}) : Tensor();
        intro->scores = Tensor();
        if (intro->score_layer >= L)
            throw Error("score layer " + std::to_string(intro->score_layer) + " is out of range (the model has " +
                        std::to_string(L) + " layers)");
        if (intro->score_layer >= 0 && !intro->want_all_head_scores &&
            (intro->score_head < 0 || intro->score_head >= H))
            throw Error("score head " + std::to_string(intro->score_head) + " is out of range (the model has " +
                        std::to_string(H) + " heads)");
    }
    const bool want_norms = intro && intro->want_state_norms;
    ensure_workspace(T, Tp, C, form);
    if (want_norms) {
        ws_.norms_sq.reserve(static_cast<size_t>(T) * H);
        ws_.state_copy.reserve(static_cast<size_t>(H) * Dk * Dv);
    }

    {
        const size_t nC = static_cast<size_t>(Tp / C), per_layer = 5 * static_cast<size_t>(H) * Tp +
                                                                    static_cast<size_t>(H) * nC + 2 * H + 16 * 64;
        staging_.begin(per_layer * static_cast<size_t>(L), stream());
    }
    ws_.tokens.upload(tokens.data(), tokens.size(), stream());
    forward_start_.record(stream());
    const float embed_scale = c.scale_embedding ? static_cast<float>(std::sqrt(static_cast<double>(d))) : 1.0f;
    cuda::launch_embedding(ws_.tokens.get(), embed_.get(), ws_.x.get(), T, d, embed_scale, stream());
    if (c.layernorm_embedding)
        cuda::launch_rmsnorm(ws_.x.get(), embed_norm_.get(), ws_.x.get(), T, d, norm_eps, stream());

    const float inv_sqrt_dk = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dk)));
    for (int l = 0; l < L; ++l) {
        const DeviceLayer& w = layers_[static_cast<size_t>(l)];
        cuda::launch_rmsnorm(ws_.x.get(), w.attn_norm.get(), ws_.xn.get(), T, d, norm_eps, stream());
        linear(ws_.xn.get(), w.q, ws_.qt.get(), T, 0.0f);
        linear(ws_.xn.get(), w.k, ws_.kt.get(), T, 0.0f);
        linear(ws_.xn.get(), w.v, ws_.vt.get(), T, 0.0f);
        linear(ws_.xn.get(), w.g, ws_.g.get(), T, 0.0f);
        cuda::launch_rotary_to_head_major(ws_.qt.get(), theta_.get(), ws_.qh.get(), T, Tp, H, Dk, position_,
                                          ts ? 1.0f : inv_sqrt_dk, ts, stream());
        cuda::launch_rotary_to_head_major(ws_.kt.get(), theta_.get(), ws_.kh.get(), T, Tp, H, Dk, position_,
                                          ts ? inv_sqrt_dk : 1.0f, ts, stream());
        cuda::launch_to_head_major(ws_.vt.get(), ws_.vh.get(), T, Tp, H, Dv, stream());

        if (want_norms) {
            RETNET_CUDA_CHECK(cudaMemsetAsync(ws_.norms_sq.get(), 0, sizeof(float) * T * H, stream()));
            if (form != Form::Recurrent) {  // a state-only scan on a copy, before the form changes S
                RETNET_CUDA_CHECK(cudaMemcpyAsync(ws_.state_copy.get(), state_[static_cast<size_t>(l)].get(),
                                                  sizeof(float) * H * Dk * Dv, cudaMemcpyDeviceToDevice, stream()));
                std::vector<float> a, b;
                recurrent_coefficients(l, T, a, b);
                const float* d_a = staging_.stage(a, stream());
                const float* d_b = staging_.stage(b, stream());
                cuda::launch_recurrent_scan(ws_.qh.get(), ws_.kh.get(), ws_.vh.get(), ws_.state_copy.get(), d_a, d_b, nullptr, ws_.norms_sq.get(), H, T,
                                            Tp, Dk, Dv, stream());
            }
        }
        switch (form) {
            case Form::Parallel: retention_parallel(l, T); break;
            case Form::Chunkwise: retention_chunkwise(l, T, Tp, C); break;
            case Form::Recurrent: retention_recurrent(l, T, want_norms ? ws_.norms_sq.get() : nullptr); break;
        }
        if (want_norms) record_state_norms(l, T, *intro);
        if (intro && intro->score_layer == l) record_scores(l, T, Tp, *intro);

        cuda::launch_head_norm_gate(ws_.oh.get(), ws_.g.get(), w.head_norm.empty() ? nullptr : w.head_norm.get(),
                                    ws_.y.get(), T, Tp, H, Dv, head_eps, stream());
        linear(ws_.y.get(), w.o, ws_.x.get(), T, 1.0f);  // x += y W_oᵀ
        cuda::launch_rmsnorm(ws_.x.get(), w.ffn_norm.get(), ws_.xn.get(), T, d, norm_eps, stream());
        linear(ws_.xn.get(), w.ffn_act, ws_.ffa.get(), T, 0.0f);
        linear(ws_.xn.get(), w.ffn_lin, ws_.ffb.get(), T, 0.0f);
        cuda::launch_glu(ws_.ffa.get(), ws_.ffb.get(), ws_.ffa.get(), static_cast<int64_t>(T) * F,
                         c.ffn_activation == Activation::Gelu, stream());
        linear(ws_.ffa.get(), w.ffn_out, ws_.x.get(), T, 1.0f);  // x += h W_outᵀ
        if (intro && intro->want_layer_outputs) {
            Tensor out({T, d});
            ws_.x.download(out.ptr(), out.data.size(), stream());
            intro->layer_outputs.push_back(std::move(out));
        }
    }
    position_ += T;
    cuda::launch_rmsnorm(ws_.x.get(), final_norm_.get(), ws_.xn.get(), T, d, norm_eps, stream());
    linear(ws_.xn.get(), lm_head_, ws_.logits.get(), T, 0.0f);
    forward_stop_.record(stream());
    Tensor logits({T, V});
    ws_.logits.download(logits.ptr(), logits.data.size(), stream());
    stream_->synchronize();
    last_device_ms_ = forward_stop_.elapsed_ms_since(forward_start_);
    return logits;
}

std::once_flag g_register_once;

}  // namespace

double cuda_last_forward_device_ms(const Backend& backend) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
    return cuda ? cuda->last_device_ms_ : -1.0;
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
        register_backend("cuda", [](std::shared_ptr<const Model> m) { return make_cuda_backend(std::move(m)); });
        register_backend("cuda-bf16", [](std::shared_ptr<const Model> m) {
            CudaOptions options;
            options.bf16_weights = true;
            return make_cuda_backend(std::move(m), options);
        });
    });
}

}  // namespace retnet
