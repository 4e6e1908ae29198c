// SPDX-License-Identifier: GPL-3.0-or-later
// CudaTrainer: the CPU trainer's loss_and_gradient (core/src/train/model_grad.cpp) step for step
// on the device — cuBLAS GEMMs for every projection and the retention products, the kernels of
// train_kernels.h for the rest — plus gradient clipping and AdamW on the device.
#include "retnet/cuda/cuda_trainer.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "../cuda_check.h"
#include "../device_buffer.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/dropout_mask.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "retnet/train_device.h"
#include "../layer_kernels.h"
#include "../ops.h"
#include "train_kernels.h"

namespace retnet::cuda {

namespace tk = train_kernels;
namespace lk = layer_kernels;
using train::BatchView;
using train::LayerOffsets;

TrainPrecision train_precision_from_device(const std::string& device) {
    if (device == "cuda") return TrainPrecision::Fp32;
    if (device == "cuda-tf32") return TrainPrecision::Tf32;
    if (device == "cuda-bf16") return TrainPrecision::Bf16;
    throw Error("unknown CUDA training device '" + device + "' (expected cuda, cuda-tf32 or cuda-bf16)");
}

namespace {

// Activations of one layer kept for the backward. N = B·T rows; head-major tensors are
// (B·H, Tp, D) with Tp = n_chunks·C.
struct LayerBuffers {
    DeviceBuffer<float> x_in;     // (N, d) residual stream entering the layer
    DeviceBuffer<float> rstd1;    // (N)
    DeviceBuffer<float> xn1;      // (N, d)
    DeviceBuffer<float> qh, kh;   // (B·H, Tp, Dk) rotated; q also scaled by Dk^−½
    DeviceBuffer<float> vh;       // (B·H, Tp, Dv)
    DeviceBuffer<float> states;   // (B·H·n_chunks, Dk, Dv) state before each chunk (chunkwise only)
    DeviceBuffer<float> g;        // (N, H·Dv)
    DeviceBuffer<float> o;        // (N, H·Dv) retention output
    DeviceBuffer<float> rstd_h;   // (N, H)
    DeviceBuffer<float> y;        // (N, H·Dv) normed and gated, input of o_proj
    DeviceBuffer<float> x_mid;    // (N, d) after the retention residual
    DeviceBuffer<float> rstd2;    // (N)
    DeviceBuffer<float> xn2;      // (N, d)
    DeviceBuffer<float> a, b;     // (N, F) gate and up projections
    DeviceBuffer<float> hidden;   // (N, F) silu(a) ⊙ b
};

}  // namespace

struct CudaTrainer::Impl {
    ModelConfig config;
    train::ParamLayout layout;
    CudaTrainerOptions options;
    std::unique_ptr<CudaStream> stream_owner;
    std::unique_ptr<CublasHandle> cublas_owner;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;

    DeviceBuffer<float> params, grad, m, v;  // (layout.total) each
    DeviceBuffer<float> average;             // (layout.total) when average_decay > 0
    double average_decay = 0;
    DeviceBuffer<uint8_t> decays;            // (layout.total) 1 where AdamW decays the weight
    DeviceBuffer<double> sum_sq;             // (1)
    DeviceBuffer<double> sum_sq_partials;    // (kSumOfSquaresPartials)
    DeviceBuffer<float> theta;               // (Dk/2) rotary frequencies
    int64_t adam_step = 0;

    // Per batch shape.
    int B = 0, T = 0, C = 0, n_chunks = 0, Tp = 0;
    // The retention's decay tables (upload_decay_tables), read by the inference retention kernels.
    DeviceBuffer<float> log_decay;    // (H) log γ_h
    DeviceBuffer<float> row_head;     // (B·H, Tp) γ^(i+1), i = t mod C
    DeviceBuffer<float> row_tail;     // (B·H, Tp) γ^(C−1−i)
    DeviceBuffer<float> chunk_decay;  // (B·H, n_chunks) γ^C
    DeviceBuffer<float> scan_state;   // (B·H, Dk, Dv) the chunk scan's start (zero) and end state
    DeviceBuffer<int32_t> inputs, targets;  // (N)
    lk::TokenRowGroups input_groups;        // of the inputs, for the embedding gradient
    DeviceBuffer<int32_t> group_rows, group_segment_start, group_token_segment;
    std::vector<LayerBuffers> layers;
    DeviceBuffer<float> x_final, rstd_f, xf;  // (N, d), (N), (N, d)
    DeviceBuffer<float> logits;               // (N, V); the gradient after a backward
    DeviceBuffer<float> row_loss;             // (N)
    DeviceBuffer<float> branch;               // (N, d) a residual branch before dropout, or its gradient after
    TrainDropout dropout;                     // of the last forward; its backward uses the same masks
    bool logits_valid = false;  // false before a forward and after a backward overwrote them
    // Scratch shared by the layers.
    DeviceBuffer<float> lin;       // (N, max(K, H·Dv)) projection before the layout change
    DeviceBuffer<float> oh;        // (B·H, Tp, Dv)
    DeviceBuffer<float> scores;    // (B·H·n_chunks, C, C)
    DeviceBuffer<float> dscores;   // (B·H·n_chunks, C, C)
    DeviceBuffer<float> rows_k;    // (B·H·n_chunks, C, Dk) decay-scaled q or k
    DeviceBuffer<float> rows_v;    // (B·H·n_chunks, C, Dv) decay-scaled v or dO
    DeviceBuffer<float> contrib;   // (B·H·n_chunks, Dk, Dv)
    DeviceBuffer<float> after;     // (B·H·n_chunks, Dk, Dv) ∂loss/∂(state after chunk c)
    DeviceBuffer<float> dx, dxn;   // (N, d)
    DeviceBuffer<float> dhidden, da, db;  // (N, F)
    DeviceBuffer<float> dy, d_o, dg;      // (N, H·Dv)
    DeviceBuffer<float> dOh, dVh;         // (B·H, Tp, Dv)
    DeviceBuffer<float> dQh, dKh;         // (B·H, Tp, Dk)
    DeviceBuffer<float> partials;         // partial sums of the weight-gradient reductions

    int d() const { return config.d_model; }
    int H() const { return config.n_heads; }
    int Dk() const { return config.head_dim_k(); }
    int Dv() const { return config.head_dim_v(); }
    int64_t N() const { return static_cast<int64_t>(B) * T; }
    int n_mats() const { return B * H() * n_chunks; }

    // Row-major C_b = alpha·op(A_b)·op(B_b) + beta·C_b (cuBLAS sees the transposes).
    void gemm(bool ta, bool tb, int M, int Nn, int K, float alpha, const float* A, int lda, int64_t sa,
              const float* Bm, int ldb, int64_t sb, float beta, float* Cm, int ldc, int64_t sc, int batch = 1) {
        if (M == 0 || Nn == 0 || batch == 0) return;
        const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
        if (batch == 1)
            RETNET_CUBLAS_CHECK(cublasGemmEx(cublas, op_b, op_a, Nn, M, K, &alpha, Bm, CUDA_R_32F, ldb, A,
                                             CUDA_R_32F, lda, &beta, Cm, CUDA_R_32F, ldc, compute,
                                             CUBLAS_GEMM_DEFAULT));
        else
            RETNET_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas, op_b, op_a, Nn, M, K, &alpha, Bm, CUDA_R_32F,
                                                           ldb, sb, A, CUDA_R_32F, lda, sa, &beta, Cm,
                                                           CUDA_R_32F, ldc, sc, batch, compute,
                                                           CUBLAS_GEMM_DEFAULT));
    }
    // y (rows, out) = x (rows, in) · Wᵀ + beta·y
    void linear(const float* x, const float* W, float* y, int64_t rows, int in, int out, float beta = 0.0f) {
        gemm(false, true, static_cast<int>(rows), out, in, 1.0f, x, in, 0, W, in, 0, beta, y, out, 0);
    }
    // dx (rows, in) = dy · W (+= when accumulate); dW (out, in) += dyᵀ · x
    void linear_backward(const float* x, const float* W, const float* dyp, int64_t rows, int in, int out,
                         float* dxp, bool accumulate, float* dW) {
        const int r = static_cast<int>(rows);
        gemm(false, false, r, in, out, 1.0f, dyp, out, 0, W, in, 0, accumulate ? 1.0f : 0.0f, dxp, in, 0);
        gemm(true, false, out, in, r, 1.0f, dyp, out, 0, x, in, 0, 1.0f, dW, in, 0);
    }

    bool dropout_on() const { return dropout.rate > 0.0; }
    // The CPU trainer's float masks of one site: factor 0 or float(1/(1 − rate)).
    tk::DropoutSite dropout_site(uint64_t site) const {
        return {dropout.rate, train::dropout_site_base(dropout.seed, site),
                static_cast<float>(1.0 / (1.0 - dropout.rate))};
    }

    // The fla rotary of q (times Dk^−½) or k, at positions from 0.
    lk::RotaryArgs rotary(float scale) const { return {theta.get(), 0, scale, false}; }

    float q_scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dk()))); }

    void prepare(int batch, int seq_len);
    void upload_decay_tables();
    void reserve_layer_activations();
    void reserve_scratch();
    void upload_batch(const BatchView& batch, bool want_gradient);
    void forward(const BatchView& batch, bool want_gradient, const TrainDropout& drop);
    void add_branch(const float* residual, const float* in, const float* W, int width, float* out, uint64_t site);
    void retention_block_forward(size_t li);
    void ffn_block_forward(size_t li);
    void backward();
    const float* branch_grad(uint64_t site);
    void ffn_block_backward(size_t li);
    void retention_block_backward(size_t li);
    void retention_forward(LayerBuffers& L);
    void retention_backward(LayerBuffers& L);
    double read_loss();
};

void CudaTrainer::Impl::prepare(int batch, int seq_len) {
    if (batch == B && seq_len == T) return;
    // Buffers only grow (reserve): evaluation batches between training steps reuse them.
    B = batch;
    T = seq_len;
    C = options.chunk > 0 ? std::min(options.chunk, T) : T;
    n_chunks = (T + C - 1) / C;
    Tp = n_chunks * C;
    upload_decay_tables();
    reserve_layer_activations();
    reserve_scratch();
}

// The decay tables of the batch shape, from family_rules' decay powers as the CPU trainer uses them.
void CudaTrainer::Impl::upload_decay_tables() {
    std::vector<float> log_gamma = default_log_decay(H());
    const std::vector<double> gamma = head_decays(log_gamma);
    std::vector<float> head, tail, chunk;
    for (int b = 0; b < B; ++b)
        for (const double g : gamma) {
            const std::vector<float> p = decay_powers(g, C);  // (C + 1)
            for (int c = 0; c < n_chunks; ++c) {
                for (int i = 0; i < C; ++i) {
                    head.push_back(p[static_cast<size_t>(i + 1)]);
                    tail.push_back(p[static_cast<size_t>(C - 1 - i)]);
                }
                chunk.push_back(p[static_cast<size_t>(C)]);
            }
        }
    for (auto [buffer, host] : {std::pair{&log_decay, &log_gamma}, std::pair{&row_head, &head},
                                std::pair{&row_tail, &tail}, std::pair{&chunk_decay, &chunk}}) {
        buffer->reserve(host->size());
        buffer->upload(*host, stream);
    }
    scan_state.reserve(static_cast<size_t>(B) * static_cast<size_t>(H()) * static_cast<size_t>(Dk()) *
                       static_cast<size_t>(Dv()));
}

void CudaTrainer::Impl::reserve_layer_activations() {
    const int64_t n = N();
    const int dd = d(), dk = Dk(), dv = Dv(), Vd = config.value_dim, F = config.ffn_dim;
    const int64_t heads_k = static_cast<int64_t>(B) * H() * Tp * dk, heads_v = static_cast<int64_t>(B) * H() * Tp * dv;
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    layers.resize(layout.layers.size());  // std::vector: one LayerBuffers per layer
    for (LayerBuffers& L : layers) {
        L.x_in.reserve(sz(n * dd));
        L.rstd1.reserve(sz(n));
        L.xn1.reserve(sz(n * dd));
        L.qh.reserve(sz(heads_k));
        L.kh.reserve(sz(heads_k));
        L.vh.reserve(sz(heads_v));
        L.states.reserve(n_chunks > 1 ? sz(int64_t(n_mats()) * dk * dv) : 0);
        L.g.reserve(sz(n * Vd));
        L.o.reserve(sz(n * Vd));
        L.rstd_h.reserve(sz(n * H()));
        L.y.reserve(sz(n * Vd));
        L.x_mid.reserve(sz(n * dd));
        L.rstd2.reserve(sz(n));
        L.xn2.reserve(sz(n * dd));
        L.a.reserve(sz(n * F));
        L.b.reserve(sz(n * F));
        L.hidden.reserve(sz(n * F));
    }
}

void CudaTrainer::Impl::reserve_scratch() {
    const int64_t n = N();
    const int dd = d(), h = H(), dk = Dk(), dv = Dv(), K = config.key_dim, Vd = config.value_dim,
              F = config.ffn_dim, V = config.vocab_size;
    const int64_t heads_k = static_cast<int64_t>(B) * h * Tp * dk, heads_v = static_cast<int64_t>(B) * h * Tp * dv;
    const int64_t mats = n_mats();
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    inputs.reserve(sz(n));
    targets.reserve(sz(n));
    const int64_t max_segments = lk::max_token_segments(n, V);
    group_rows.reserve(sz(n));
    group_segment_start.reserve(sz(max_segments + 1));
    group_token_segment.reserve(sz(V + 1));
    x_final.reserve(sz(n * dd));
    rstd_f.reserve(sz(n));
    xf.reserve(sz(n * dd));
    logits.reserve(sz(n * V));
    row_loss.reserve(sz(n));
    branch.reserve(sz(n * dd));
    lin.reserve(sz(n * std::max(K, Vd)));
    oh.reserve(sz(heads_v));
    scores.reserve(sz(mats * C * C));
    dscores.reserve(sz(mats * C * C));
    rows_k.reserve(n_chunks > 1 ? sz(mats * C * dk) : 0);
    rows_v.reserve(n_chunks > 1 ? sz(mats * C * dv) : 0);
    contrib.reserve(n_chunks > 1 ? sz(mats * dk * dv) : 0);
    after.reserve(n_chunks > 1 ? sz(mats * dk * dv) : 0);
    for (DeviceBuffer<float>* buffer : {&dx, &dxn}) buffer->reserve(sz(n * dd));
    for (DeviceBuffer<float>* buffer : {&dhidden, &da, &db}) buffer->reserve(sz(n * F));
    for (DeviceBuffer<float>* buffer : {&dy, &d_o, &dg}) buffer->reserve(sz(n * Vd));
    for (DeviceBuffer<float>* buffer : {&dOh, &dVh}) buffer->reserve(sz(heads_v));
    for (DeviceBuffer<float>* buffer : {&dQh, &dKh}) buffer->reserve(sz(heads_k));
    partials.reserve(sz(std::max({lk::rmsnorm_backward_parts(n) * dd, lk::head_norm_gate_backward_parts(n, h) * dv,
                                  max_segments * dd})));
}

// O = ((Q Kᵀ) ⊙ D) V within each chunk, plus diag(γ^(i+1)) Q_c S_c from the state before it.
void CudaTrainer::Impl::retention_forward(LayerBuffers& L) {
    const int dk = Dk(), dv = Dv(), mats = n_mats();
    const int64_t sk = static_cast<int64_t>(C) * dk, sv = static_cast<int64_t>(C) * dv,
                  ss = static_cast<int64_t>(C) * C, se = static_cast<int64_t>(dk) * dv;
    gemm(false, true, C, C, dk, 1.0f, L.qh.get(), dk, sk, L.kh.get(), dk, sk, 0.0f, scores.get(), C, ss, mats);
    launch_chunk_decay_mask(scores.get(), log_decay.get(), nullptr, H(), n_chunks, C, false, stream, B);
    gemm(false, false, C, dv, C, 1.0f, scores.get(), C, ss, L.vh.get(), dv, sv, 0.0f, oh.get(), dv, sv, mats);
    if (n_chunks == 1) return;
    // U_c = K_cᵀ diag(γ^(C−1−j)) V_c into L.states, which the scan turns into the state before each
    // chunk from the empty state; O_c += diag(γ^(i+1)) Q_c S_c
    launch_scale_rows(L.vh.get(), row_tail.get(), rows_v.get(), B * H(), Tp, dv, stream);
    gemm(true, false, dk, dv, C, 1.0f, L.kh.get(), dk, sk, rows_v.get(), dv, sv, 0.0f, L.states.get(), dv, se, mats);
    scan_state.zero(stream);
    launch_chunk_state_scan(L.states.get(), scan_state.get(), chunk_decay.get(), B * H(), n_chunks, se, stream);
    launch_scale_rows(L.qh.get(), row_head.get(), rows_k.get(), B * H(), Tp, dk, stream);
    gemm(false, false, C, dv, dk, 1.0f, rows_k.get(), dk, sk, L.states.get(), dv, se, 1.0f, oh.get(), dv, sv, mats);
}

// From dOh (head-major): dQh, dKh, dVh.
void CudaTrainer::Impl::retention_backward(LayerBuffers& L) {
    const int dk = Dk(), dv = Dv(), mats = n_mats();
    const int64_t sk = static_cast<int64_t>(C) * dk, sv = static_cast<int64_t>(C) * dv,
                  ss = static_cast<int64_t>(C) * C, se = static_cast<int64_t>(dk) * dv;
    gemm(false, true, C, C, dk, 1.0f, L.qh.get(), dk, sk, L.kh.get(), dk, sk, 0.0f, scores.get(), C, ss, mats);
    launch_chunk_decay_mask(scores.get(), log_decay.get(), nullptr, H(), n_chunks, C, false, stream, B);
    gemm(false, true, C, C, dv, 1.0f, dOh.get(), dv, sv, L.vh.get(), dv, sv, 0.0f, dscores.get(), C, ss, mats);
    launch_chunk_decay_mask(dscores.get(), log_decay.get(), nullptr, H(), n_chunks, C, false, stream, B);
    // dV = Aᵀ dO, dQ = dA K, dK = dAᵀ Q (within chunks)
    gemm(true, false, C, dv, C, 1.0f, scores.get(), C, ss, dOh.get(), dv, sv, 0.0f, dVh.get(), dv, sv, mats);
    gemm(false, false, C, dk, C, 1.0f, dscores.get(), C, ss, L.kh.get(), dk, sk, 0.0f, dQh.get(), dk, sk, mats);
    gemm(true, false, C, dk, C, 1.0f, dscores.get(), C, ss, L.qh.get(), dk, sk, 0.0f, dKh.get(), dk, sk, mats);
    if (n_chunks == 1) return;
    // Through the states: dO_s = diag(γ^(i+1)) dO_c; contrib_c = Q_cᵀ dO_s (∂/∂S_c via the outputs)
    launch_scale_rows(dOh.get(), row_head.get(), rows_v.get(), B * H(), Tp, dv, stream);
    gemm(true, false, dk, dv, C, 1.0f, L.qh.get(), dk, sk, rows_v.get(), dv, sv, 0.0f, contrib.get(), dv, se, mats);
    launch_chunk_state_scan_backward(contrib.get(), after.get(), chunk_decay.get(), B * H(), n_chunks, se, stream);
    // dQ_c += dO_s S_cᵀ
    gemm(false, true, C, dk, dv, 1.0f, rows_v.get(), dv, sv, L.states.get(), dv, se, 1.0f, dQh.get(), dk, sk, mats);
    // dV_c += diag(γ^(C−1−j)) K_c G_c;  dK_c += diag(γ^(C−1−j)) V_c G_cᵀ  (G_c = after[c])
    launch_scale_rows(L.kh.get(), row_tail.get(), rows_k.get(), B * H(), Tp, dk, stream);
    gemm(false, false, C, dv, dk, 1.0f, rows_k.get(), dk, sk, after.get(), dv, se, 1.0f, dVh.get(), dv, sv, mats);
    launch_scale_rows(L.vh.get(), row_tail.get(), rows_v.get(), B * H(), Tp, dv, stream);
    gemm(false, true, C, dk, dv, 1.0f, rows_v.get(), dv, sv, after.get(), dv, se, 1.0f, dKh.get(), dk, sk, mats);
}

void CudaTrainer::Impl::upload_batch(const BatchView& batch, bool want_gradient) {
    const int64_t V = config.vocab_size;
    if (batch.batch < 1 || batch.seq_len < 1) throw Error("CUDA training: empty batch");
    const int64_t n_tokens = static_cast<int64_t>(batch.batch) * batch.seq_len;
    for (int64_t i = 0; i < n_tokens; ++i)
        if (batch.inputs[i] < 0 || batch.inputs[i] >= V || batch.targets[i] < 0 || batch.targets[i] >= V)
            throw Error("CUDA training: token id out of range [0, " + std::to_string(V) + ")");
    prepare(batch.batch, batch.seq_len);
    const int64_t n = N();
    inputs.upload(batch.inputs, static_cast<size_t>(n), stream);
    targets.upload(batch.targets, static_cast<size_t>(n), stream);
    if (!want_gradient) return;
    input_groups = lk::group_rows_by_token(batch.inputs, n, config.vocab_size);
    group_rows.upload(input_groups.rows, stream);
    group_segment_start.upload(input_groups.segment_start, stream);
    group_token_segment.upload(input_groups.token_segment, stream);
}

void CudaTrainer::Impl::forward(const BatchView& batch, bool want_gradient, const TrainDropout& drop) {
    if (!(drop.rate >= 0.0 && drop.rate < 1.0)) throw Error("CUDA training: dropout must be in [0, 1)");
    upload_batch(batch, want_gradient);
    const int64_t n = N();
    const int dd = d(), V = config.vocab_size;
    const float* P = params.get();
    dropout = drop;
    float* x0 = layers.empty() ? x_final.get() : layers[0].x_in.get();
    lk::embedding_forward(inputs.get(), P + layout.embed, x0, n, dd, 1.0f, stream);
    if (dropout_on()) tk::dropout_scale(x0, x0, n * dd, dropout_site(train::dropout_site_embedding), stream);
    for (size_t li = 0; li < layers.size(); ++li) {
        retention_block_forward(li);
        ffn_block_forward(li);
    }
    lk::rmsnorm_forward(x_final.get(), P + layout.final_norm, n, dd, static_cast<float>(config.norm_eps), xf.get(),
                        rstd_f.get(), stream);
    linear(xf.get(), P + layout.lm_head, logits.get(), n, dd, V);
    tk::cross_entropy(logits.get(), targets.get(), n, V, row_loss.get(), want_gradient,
                      static_cast<float>(1.0 / static_cast<double>(n)), stream);
    logits_valid = !want_gradient;
}

// out = residual + branch_input · Wᵀ, through the dropout mask of `site` when dropout is on.
void CudaTrainer::Impl::add_branch(const float* residual, const float* in, const float* W, int width, float* out,
                                   uint64_t site) {
    const int64_t n = N();
    const int dd = d();
    if (dropout_on()) {
        linear(in, W, branch.get(), n, width, dd);
        tk::dropout_residual_add(residual, branch.get(), out, n * dd, dropout_site(site), stream);
        return;
    }
    RETNET_CUDA_CHECK(cudaMemcpyAsync(out, residual, sizeof(float) * n * dd, cudaMemcpyDeviceToDevice, stream));
    linear(in, W, out, n, width, dd, 1.0f);
}

// x_mid = x_in + o_proj(norm(retention(rot(q), rot(k), v)) ⊙ silu(g)), q, k, v, g from norm(x_in).
void CudaTrainer::Impl::retention_block_forward(size_t li) {
    const LayerOffsets& lo = layout.layers[li];
    LayerBuffers& L = layers[li];
    const int64_t n = N();
    const int dd = d(), h = H(), dk = Dk(), dv = Dv(), K = config.key_dim, Vd = config.value_dim;
    const float eps = static_cast<float>(config.norm_eps);
    const float* P = params.get();
    lk::rmsnorm_forward(L.x_in.get(), P + lo.attn_norm, n, dd, eps, L.xn1.get(), L.rstd1.get(), stream);
    linear(L.xn1.get(), P + lo.q_proj, lin.get(), n, dd, K);
    lk::rotary_forward(lin.get(), L.qh.get(), B, T, Tp, h, dk, rotary(q_scale()), stream);
    linear(L.xn1.get(), P + lo.k_proj, lin.get(), n, dd, K);
    lk::rotary_forward(lin.get(), L.kh.get(), B, T, Tp, h, dk, rotary(1.0f), stream);
    linear(L.xn1.get(), P + lo.v_proj, lin.get(), n, dd, Vd);
    lk::rows_to_heads(lin.get(), L.vh.get(), B, T, Tp, h, dv, stream);
    linear(L.xn1.get(), P + lo.g_proj, L.g.get(), n, dd, Vd);
    retention_forward(L);
    lk::heads_to_rows(oh.get(), L.o.get(), B, T, Tp, h, dv, stream);
    lk::head_norm_gate_forward({L.o.get()}, L.g.get(), lo.head_norm >= 0 ? P + lo.head_norm : nullptr, n, h, dv, eps,
                               L.y.get(), L.rstd_h.get(), stream);
    add_branch(L.x_in.get(), L.y.get(), P + lo.o_proj, Vd, L.x_mid.get(),
               train::dropout_site_retention(static_cast<int64_t>(li)));
}

// x_out = x_mid + down(silu(gate(xn2)) ⊙ up(xn2)), xn2 = norm(x_mid); x_out is the next layer's x_in.
void CudaTrainer::Impl::ffn_block_forward(size_t li) {
    const LayerOffsets& lo = layout.layers[li];
    LayerBuffers& L = layers[li];
    const int64_t n = N();
    const int dd = d(), F = config.ffn_dim;
    const float* P = params.get();
    lk::rmsnorm_forward(L.x_mid.get(), P + lo.ffn_norm, n, dd, static_cast<float>(config.norm_eps), L.xn2.get(),
                        L.rstd2.get(), stream);
    linear(L.xn2.get(), P + lo.ffn_act, L.a.get(), n, dd, F);
    linear(L.xn2.get(), P + lo.ffn_lin, L.b.get(), n, dd, F);
    lk::glu_forward(L.a.get(), L.b.get(), n * F, false, L.hidden.get(), stream);
    float* next = li + 1 < layers.size() ? layers[li + 1].x_in.get() : x_final.get();
    add_branch(L.x_mid.get(), L.hidden.get(), P + lo.ffn_out, F, next, train::dropout_site_ffn(static_cast<int64_t>(li)));
}

void CudaTrainer::Impl::backward() {
    const int64_t n = N();
    const int dd = d(), V = config.vocab_size;
    const float* P = params.get();
    float* G = grad.get();
    grad.zero(stream);
    // dxn serves as ∂loss/∂xf here.
    linear_backward(xf.get(), P + layout.lm_head, logits.get(), n, dd, V, dxn.get(), false, G + layout.lm_head);
    RETNET_CUDA_CHECK(cudaMemsetAsync(dx.get(), 0, sizeof(float) * n * dd, stream));
    lk::rmsnorm_backward(x_final.get(), P + layout.final_norm, rstd_f.get(), dxn.get(), n, dd, dx.get(),
                         G + layout.final_norm, partials.get(), stream);
    for (size_t li = layers.size(); li-- > 0;) {
        ffn_block_backward(li);
        retention_block_backward(li);
    }
    if (dropout_on()) tk::dropout_scale(dx.get(), dx.get(), n * dd, dropout_site(train::dropout_site_embedding), stream);
    const lk::DeviceTokenRowGroups groups{group_rows.get(), group_segment_start.get(), group_token_segment.get(),
                                          static_cast<int64_t>(input_groups.segment_start.size()) - 1,
                                          config.vocab_size};
    lk::embedding_backward(groups, dx.get(), partials.get(), G + layout.embed, dd, stream);
}

// ∂loss/∂(a branch's output before dropout): dx through the site's mask, in `branch`.
const float* CudaTrainer::Impl::branch_grad(uint64_t site) {
    if (!dropout_on()) return dx.get();
    tk::dropout_scale(dx.get(), branch.get(), N() * d(), dropout_site(site), stream);
    return branch.get();
}

void CudaTrainer::Impl::ffn_block_backward(size_t li) {
    const LayerOffsets& lo = layout.layers[li];
    LayerBuffers& L = layers[li];
    const int64_t n = N();
    const int dd = d(), F = config.ffn_dim;
    const float* P = params.get();
    float* G = grad.get();
    linear_backward(L.hidden.get(), P + lo.ffn_out, branch_grad(train::dropout_site_ffn(static_cast<int64_t>(li))), n,
                    F, dd, dhidden.get(), false, G + lo.ffn_out);
    lk::glu_backward(L.a.get(), L.b.get(), dhidden.get(), n * F, false, da.get(), db.get(), stream);
    linear_backward(L.xn2.get(), P + lo.ffn_act, da.get(), n, dd, F, dxn.get(), false, G + lo.ffn_act);
    linear_backward(L.xn2.get(), P + lo.ffn_lin, db.get(), n, dd, F, dxn.get(), true, G + lo.ffn_lin);
    lk::rmsnorm_backward(L.x_mid.get(), P + lo.ffn_norm, L.rstd2.get(), dxn.get(), n, dd, dx.get(), G + lo.ffn_norm,
                         partials.get(), stream);
}

void CudaTrainer::Impl::retention_block_backward(size_t li) {
    const LayerOffsets& lo = layout.layers[li];
    LayerBuffers& L = layers[li];
    const int64_t n = N();
    const int dd = d(), h = H(), dk = Dk(), dv = Dv(), K = config.key_dim, Vd = config.value_dim;
    const float* P = params.get();
    float* G = grad.get();
    linear_backward(L.y.get(), P + lo.o_proj, branch_grad(train::dropout_site_retention(static_cast<int64_t>(li))), n,
                    Vd, dd, dy.get(), false, G + lo.o_proj);
    lk::head_norm_gate_backward(L.o.get(), L.g.get(), lo.head_norm >= 0 ? P + lo.head_norm : nullptr, L.rstd_h.get(),
                                dy.get(), n, h, dv, d_o.get(), dg.get(), lo.head_norm >= 0 ? G + lo.head_norm : nullptr,
                                partials.get(), stream);
    lk::rows_to_heads(d_o.get(), dOh.get(), B, T, Tp, h, dv, stream);
    retention_backward(L);
    lk::rotary_backward(dQh.get(), lin.get(), B, T, Tp, h, dk, rotary(q_scale()), stream);
    linear_backward(L.xn1.get(), P + lo.q_proj, lin.get(), n, dd, K, dxn.get(), false, G + lo.q_proj);
    lk::rotary_backward(dKh.get(), lin.get(), B, T, Tp, h, dk, rotary(1.0f), stream);
    linear_backward(L.xn1.get(), P + lo.k_proj, lin.get(), n, dd, K, dxn.get(), true, G + lo.k_proj);
    lk::heads_to_rows(dVh.get(), lin.get(), B, T, Tp, h, dv, stream);
    linear_backward(L.xn1.get(), P + lo.v_proj, lin.get(), n, dd, Vd, dxn.get(), true, G + lo.v_proj);
    linear_backward(L.xn1.get(), P + lo.g_proj, dg.get(), n, dd, Vd, dxn.get(), true, G + lo.g_proj);
    lk::rmsnorm_backward(L.x_in.get(), P + lo.attn_norm, L.rstd1.get(), dxn.get(), n, dd, dx.get(), G + lo.attn_norm,
                         partials.get(), stream);
}

double CudaTrainer::Impl::read_loss() {
    std::vector<float> losses(static_cast<size_t>(N()));
    row_loss.download(losses.data(), losses.size(), stream);
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream));
    double sum = 0.0;
    for (float l : losses) sum += l;
    return sum / static_cast<double>(losses.size());
}

CudaTrainer::CudaTrainer(const ModelConfig& config, const train::ParamLayout& layout, CudaTrainerOptions options)
    : impl_(std::make_unique<Impl>()) {
    std::string why;
    if (!cuda_device_available(&why)) throw Error("CUDA training unavailable: " + why);
    if (options.chunk < 0) throw Error("CUDA training: chunk size must be ≥ 0");
    if (!(options.dropout >= 0.0 && options.dropout < 1.0)) throw Error("CUDA training: dropout must be in [0, 1)");
    const train::ParamLayout expected = train::make_param_layout(config);  // validates the config
    if (expected.total != layout.total || expected.layers.size() != layout.layers.size())
        throw Error("CUDA training: the parameter layout does not match the model config");
    Impl& s = *impl_;
    s.config = config;
    s.layout = layout;
    s.options = options;
    RETNET_CUDA_CHECK(cudaSetDevice(options.device));
    s.stream_owner = std::make_unique<CudaStream>();
    s.cublas_owner = std::make_unique<CublasHandle>();
    s.stream = s.stream_owner->get();
    s.cublas = s.cublas_owner->get();
    RETNET_CUBLAS_CHECK(cublasSetStream(s.cublas, s.stream));
    switch (options.precision) {
        case TrainPrecision::Fp32:
            RETNET_CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_PEDANTIC_MATH));
            s.compute = CUBLAS_COMPUTE_32F;
            break;
        case TrainPrecision::Tf32: s.compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
        case TrainPrecision::Bf16: s.compute = CUBLAS_COMPUTE_32F_FAST_16BF; break;
    }
    const size_t n = static_cast<size_t>(layout.total);
    s.params.resize(n);
    s.grad.resize(n);
    s.m.resize(n);
    s.v.resize(n);
    s.params.zero(s.stream);
    s.grad.zero(s.stream);
    s.m.zero(s.stream);
    s.v.zero(s.stream);
    std::vector<uint8_t> decays(n, 0);
    for (const train::ParamTensor& t : layout.tensors)
        if (t.weight_decay) std::fill(decays.begin() + t.offset, decays.begin() + t.offset + t.size, uint8_t{1});
    s.decays.resize(n);
    s.decays.upload(decays, s.stream);
    s.sum_sq.resize(1);
    s.sum_sq_partials.resize(tk::kSumOfSquaresPartials);
    const std::vector<float> theta = default_rotary_theta(Family::Fla, config.head_dim_k());
    s.theta.resize(theta.size());
    s.theta.upload(theta, s.stream);
    s.stream_owner->synchronize();
}

CudaTrainer::~CudaTrainer() = default;

void CudaTrainer::upload_params(std::span<const float> params) {
    Impl& s = *impl_;
    if (static_cast<int64_t>(params.size()) != s.layout.total)
        throw Error("CUDA training: parameter vector has " + std::to_string(params.size()) + " values, expected " +
                    std::to_string(s.layout.total));
    s.params.upload(params.data(), params.size(), s.stream);
    s.stream_owner->synchronize();
}

void CudaTrainer::upload(std::span<const float> params, const train::AdamWState& state) {
    Impl& s = *impl_;
    const size_t n = static_cast<size_t>(s.layout.total);
    if (state.m.size() != n || state.v.size() != n)
        throw Error("CUDA training: AdamW moments do not match the parameter count");
    upload_params(params);
    s.m.upload(state.m.data(), n, s.stream);
    s.v.upload(state.v.data(), n, s.stream);
    s.adam_step = state.step;
    s.stream_owner->synchronize();
}

void CudaTrainer::download(std::vector<float>& params, train::AdamWState& state) {
    const Impl& s = *impl_;
    const size_t n = static_cast<size_t>(s.layout.total);
    params.resize(n);
    state.m.resize(n);
    state.v.resize(n);
    s.params.download(params.data(), n, s.stream);
    s.m.download(state.m.data(), n, s.stream);
    s.v.download(state.v.data(), n, s.stream);
    s.stream_owner->synchronize();
    state.step = s.adam_step;
}

void CudaTrainer::set_average(std::span<const float> average, double decay) {
    Impl& s = *impl_;
    if (static_cast<int64_t>(average.size()) != s.layout.total)
        throw Error("CUDA training: parameter average has " + std::to_string(average.size()) + " values, expected " +
                    std::to_string(s.layout.total));
    if (!(decay > 0 && decay < 1)) throw Error("CUDA training: average decay must be in (0, 1)");
    s.average.resize(average.size());
    s.average.upload(average.data(), average.size(), s.stream);
    s.stream_owner->synchronize();
    s.average_decay = decay;
}

void CudaTrainer::download_average(std::vector<float>& average) {
    const Impl& s = *impl_;
    if (s.average_decay <= 0) throw Error("CUDA training: no parameter average (set_average was not called)");
    average.resize(static_cast<size_t>(s.layout.total));
    s.average.download(average.data(), average.size(), s.stream);
    s.stream_owner->synchronize();
}

void CudaTrainer::swap_average() {
    Impl& s = *impl_;
    if (s.average_decay <= 0) throw Error("CUDA training: no parameter average (set_average was not called)");
    std::swap(s.params, s.average);
}

std::vector<float> CudaTrainer::download_params() const {
    const Impl& s = *impl_;
    std::vector<float> out(static_cast<size_t>(s.layout.total));
    s.params.download(out.data(), out.size(), s.stream);
    s.stream_owner->synchronize();
    return out;
}

double CudaTrainer::loss_and_gradient(const BatchView& batch, bool want_gradient, const TrainDropout& dropout) {
    Impl& s = *impl_;
    s.forward(batch, want_gradient, dropout);
    if (want_gradient) s.backward();
    return s.read_loss();
}

std::vector<float> CudaTrainer::download_gradient() const {
    const Impl& s = *impl_;
    std::vector<float> out(static_cast<size_t>(s.layout.total));
    s.grad.download(out.data(), out.size(), s.stream);
    s.stream_owner->synchronize();
    return out;
}

std::vector<float> CudaTrainer::download_logits() const {
    const Impl& s = *impl_;
    if (!s.logits_valid)
        throw Error("CUDA training: no logits to read (none computed, or overwritten by their gradient); call loss_and_gradient(batch, false) first");
    std::vector<float> out(static_cast<size_t>(s.N()) * static_cast<size_t>(s.config.vocab_size));
    s.logits.download(out.data(), out.size(), s.stream);
    s.stream_owner->synchronize();
    return out;
}

double CudaTrainer::clip_grad_norm(double max_norm) {
    Impl& s = *impl_;
    tk::sum_of_squares(s.grad.get(), s.layout.total, s.sum_sq_partials.get(), s.sum_sq.get(), s.stream);
    tk::clip_by_norm(s.grad.get(), s.layout.total, s.sum_sq.get(), max_norm, s.stream);
    double ss = 0.0;
    s.sum_sq.download(&ss, 1, s.stream);
    s.stream_owner->synchronize();
    return std::sqrt(ss);
}

void CudaTrainer::adamw_step(const train::AdamWConfig& c, double lr) {
    Impl& s = *impl_;
    s.adam_step += 1;
    const double bc1 = 1.0 - std::pow(c.beta1, static_cast<double>(s.adam_step));
    const double bc2 = 1.0 - std::pow(c.beta2, static_cast<double>(s.adam_step));
    tk::AdamWScalars k{};
    k.beta1 = static_cast<float>(c.beta1);
    k.beta2 = static_cast<float>(c.beta2);
    k.eps = static_cast<float>(c.eps);
    k.decay = static_cast<float>(lr * c.weight_decay);
    k.step_size = static_cast<float>(lr / bc1);
    k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    tk::adamw(s.params.get(), s.grad.get(), s.m.get(), s.v.get(), s.decays.get(), s.layout.total, k, s.stream);
    if (s.average_decay > 0)
        tk::update_average(s.average.get(), s.params.get(), s.layout.total,
                           static_cast<float>(train::average_decay_at(s.average_decay, s.adam_step)), s.stream);
}

int64_t CudaTrainer::adamw_steps() const { return impl_->adam_step; }

double CudaTrainer::train_step(const BatchView& batch, double max_norm, const train::AdamWConfig& config, double lr,
                               double* grad_norm, const TrainDropout& dropout) {
    Impl& s = *impl_;
    s.forward(batch, true, dropout);
    s.backward();
    // The norm and the loss are read after the update is queued: one wait per step.
    tk::sum_of_squares(s.grad.get(), s.layout.total, s.sum_sq_partials.get(), s.sum_sq.get(), s.stream);
    tk::clip_by_norm(s.grad.get(), s.layout.total, s.sum_sq.get(), max_norm, s.stream);
    adamw_step(config, lr);
    double ss = 0.0;
    s.sum_sq.download(&ss, 1, s.stream);
    const double loss = s.read_loss();  // synchronizes
    if (grad_norm) *grad_norm = std::sqrt(ss);
    return loss;
}

double CudaTrainer::loss(const BatchView& batch) { return loss_and_gradient(batch, false); }

double CudaTrainer::step(const BatchView& batch, double max_norm, const train::AdamWConfig& adamw, double lr,
                         uint64_t dropout_seed, double* grad_norm) {
    return train_step(batch, max_norm, adamw, lr, grad_norm, TrainDropout{impl_->options.dropout, dropout_seed});
}

const CudaTrainerOptions& CudaTrainer::options() const { return impl_->options; }

std::string CudaTrainer::description() const {
    const char* name = "cuda";
    if (impl_->options.precision == TrainPrecision::Tf32) name = "cuda-tf32";
    if (impl_->options.precision == TrainPrecision::Bf16) name = "cuda-bf16";
    return std::string(name) + " (" + device_name() + ")";
}

std::string CudaTrainer::device_name() const {
    cudaDeviceProp prop{};
    RETNET_CUDA_CHECK(cudaGetDeviceProperties(&prop, impl_->options.device));
    return prop.name;
}

}  // namespace retnet::cuda

namespace retnet::cuda {

void register_cuda_trainer() {
    for (const char* name : {"cuda", "cuda-tf32", "cuda-bf16"}) {
        const std::string device = name;
        train::register_train_device(device, [device](const ModelConfig& config, const train::ParamLayout& layout,
                                                      const train::TrainDeviceOptions& o) {
            CudaTrainerOptions options;
            options.precision = train_precision_from_device(device);
            options.chunk = o.chunk;
            options.dropout = o.dropout;
            return std::unique_ptr<train::TrainDevice>(std::make_unique<CudaTrainer>(config, layout, options));
        });
    }
}

}  // namespace retnet::cuda
