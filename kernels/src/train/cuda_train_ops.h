// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The GPU as a TrainOps device (retnet/train_ops.h): cuBLAS GEMMs for every projection and the
// retention products, the twin's fused attention (train_attention.h), the layer kernels
// (../layer_kernels.h) and the training kernels (train_kernels.h) for the rest, on the activations
// of one batch shape kept on the device.
// The core's train_forward / train_backward run the block sequence over it; CudaTrainer owns the
// parameters, gradient and optimizer state and points the ops at them for each pass.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "../device_buffer.h"
#include "../layer_kernels.h"
#include "../ops.h"
#include "retnet/train_ops.h"
#include "train_attention.h"
#include "train_kernels.h"

namespace retnet::cuda {

class CudaTrainOps final : public train::TrainOps {
public:
    // chunk: 0 for the parallel retention, else the chunk size (0 for the twin, whose head-major
    // tensors have Tp = T). Uploads the rotary frequencies
    // (of train::rotary_base(config): project_heads rotates with them whatever rotary.base says).
    CudaTrainOps(const ModelConfig& config, const train::ParamLayout& layout, int chunk, cudaStream_t stream,
                 cublasHandle_t cublas, cublasComputeType_t compute);

    // Checks and uploads a batch (its token groups too when want_gradient), sizes the buffers for
    // its shape and points the ops at the parameters and their gradient for the next pass.
    void begin_pass(const train::BatchView& batch, bool want_gradient, const float* params, float* grad);
    int64_t rows() const { return static_cast<int64_t>(B_) * T_; }
    // The mean of the last forward's per-row losses (synchronizes the stream).
    double read_loss();
    // The last forward's logits (N, V); throws when the forward formed their gradient in place.
    std::vector<float> download_logits() const;

    void embed(train::Act x) override;
    void embed_backward(train::Act dx) override;
    void dropout(train::Act in, train::Act out, const train::DropoutSite& site) override;
    void rms_norm(train::Act x, int layer, Weight w, train::Act y, train::Act rstd) override;
    void rms_norm_backward(train::Act x, int layer, Weight w, train::Act rstd, train::Act dy, train::Act dx) override;
    void linear(train::Act x, int layer, Weight w, train::Act y) override;
    void linear_backward(train::Act x, int layer, Weight w, train::Act dy, train::Act dx, bool accumulate) override;
    void residual_branch(train::Act residual, train::Act x, int layer, Weight w, const train::DropoutSite& site,
                         train::Act out) override;
    void project_heads(train::Act x, int layer, Weight w, const train::HeadRotary& rotary, train::Act heads) override;
    void project_heads_backward(train::Act x, int layer, Weight w, const train::HeadRotary& rotary,
                                train::Act dheads, train::Act dx, bool accumulate) override;
    void retention(train::Act q, train::Act k, train::Act v, train::Act o) override;
    void retention_backward(train::Act q, train::Act k, train::Act v, train::Act d_o, train::Act dq, train::Act dk,
                            train::Act dv) override;
    void attention(train::Act q, train::Act k, train::Act v, train::Act o, train::Act lse) override;
    void attention_backward(train::Act q, train::Act k, train::Act v, train::Act o, train::Act lse, train::Act d_o,
                            train::Act dq, train::Act dk, train::Act dv) override;
    void head_norm_gate(train::Act o, train::Act g, int layer, train::Act y, train::Act rstd) override;
    void head_norm_gate_backward(train::Act o, train::Act g, int layer, train::Act rstd, train::Act dy,
                                 train::Act d_o, train::Act dg) override;
    void glu(train::Act a, train::Act b, train::Act h) override;
    void glu_backward(train::Act a, train::Act b, train::Act dh, train::Act da, train::Act db) override;
    void cross_entropy(train::Act logits, std::optional<train::Act> dlogits, double grad_scale) override;
    void zero(train::Act x) override;
    void zero_gradient() override;

private:
    // A kept activation read only by element-wise ops (the gate, the retention output, the FFN's two
    // projections): fp32, or bf16 under cuda-bf16 (kept_in_bf16), as autocast keeps a bf16 GEMM's
    // output — the precision the projections already multiply in, at half the memory (5.4 GB at the
    // 1.3B shape and 8192 tokens). Likewise q, k and v, read only by the retention's bf16 products
    // (heads_in_bf16: 3.2 GB at that shape). Exactly one of the two is sized for a batch shape (both
    // once shapes of both kinds have been seen: buffers only grow).
    struct Fp32OrBf16 {
        DeviceBuffer<float> f32;
        DeviceBuffer<__nv_bfloat16> bf16;
        void reserve(bool in_bf16, size_t count) {
            if (in_bf16)
                bf16.reserve(count);
            else
                f32.reserve(count);
        }
    };
    // Activations of one layer kept for the backward. N = B·T rows; head-major tensors are
    // (B·H, Tp, D) with Tp = n_chunks·C. The twin leaves g and rstd_h empty, the RetNet lse. What
    // the backward forms again (train::recomputed_in_backward: the norms' outputs, the gated
    // retention, the GLU) and the chunk states live once for all layers (normed_, branch_input_,
    // states_).
    struct LayerBuffers {
        DeviceBuffer<float> x_in;     // (N, d) residual stream entering the layer
        DeviceBuffer<float> rstd1;    // (N)
        Fp32OrBf16 qh, kh;            // (B·H, Tp, Dk) rotated; q also scaled by Dk^−½
        Fp32OrBf16 vh;                // (B·H, Tp, Dv)
        Fp32OrBf16 g;                 // (N, H·Dv)
        Fp32OrBf16 o;                 // (N, H·Dv) retention output (the twin's attention output: fp32)
        DeviceBuffer<float> lse;      // (N, H) the twin's attention log-sum-exp (unused by the RetNet)
        DeviceBuffer<float> rstd_h;   // (N, H)
        DeviceBuffer<float> x_mid;    // (N, d) after the retention residual
        DeviceBuffer<float> rstd2;    // (N)
        Fp32OrBf16 a, b;              // (N, F) gate and up projections
    };

    int d() const { return config_.d_model; }
    int H() const { return config_.n_heads; }
    int Dk() const { return config_.head_dim_k(); }
    int Dv() const { return config_.head_dim_v(); }
    int n_mats() const { return B_ * H() * n_chunks_; }
    bool twin() const { return config_.is_transformer(); }
    int width(train::Act a) const { return static_cast<int>(train::buffer_width(config_, a.name)); }
    // A buffer's device pointer; at() throws for one held in bf16, at16() for one that is not.
    float* at(train::Act a);
    __nv_bfloat16* at16(train::Act a);
    // Held in bf16 under cuda-bf16, else fp32: the kept activations (kept_in_bf16), what only the
    // projections read — the norms' outputs, the gated retention, the GLU, and the GLU's and gate's
    // input gradients — and q, k, v where the fused passes read them (heads_in_bf16). Their producers
    // write them in bf16: the float result rounded, the bits a conversion kernel would give, without
    // the fp32 copy or the conversion's pass.
    bool in_bf16(train::Buf b) const;
    bool kept_in_bf16(train::Buf b) const;
    // q, k, v (and the backward's dO, chunk states and their gradient) stored in bf16: the fused
    // passes' bf16 products read nothing else of them (ops.h, ChunkProducts).
    bool heads_in_bf16() const { return bf16_projections() && !twin() && fused_chunks(); }
    Fp32OrBf16* kept_rows(train::Act a);
    const float* weight(int layer, Weight w) const;
    float* weight_grad(int layer, Weight w) const;
    const float* head_norm_weight(int layer) const;

    void gemm(bool ta, bool tb, int M, int Nn, int K, float alpha, const float* A, int lda, int64_t sa,
              const float* Bm, int ldb, int64_t sb, float beta, float* Cm, int ldc, int64_t sc, int batch = 1);
    // cuda-bf16: the projections multiply bf16 copies of their operands (rounded as
    // CUBLAS_COMPUTE_32F_FAST_16BF rounds them inside cuBLAS, at twice its speed on fp32 storage).
    bool bf16_projections() const { return compute_ == CUBLAS_COMPUTE_32F_FAST_16BF; }
    // Row-major C (M, Nn) = op(A)·op(B) + beta·C from bf16 operands, fp32 sums and C.
    void gemm_bf16(bool ta, bool tb, int M, int Nn, int K, const __nv_bfloat16* A, int lda,
                   const __nv_bfloat16* Bm, int ldb, float beta, float* Cm, int ldc);
    // The same with C in bf16 (the fp32 sums rounded once).
    void gemm_bf16(bool ta, bool tb, int M, int Nn, int K, const __nv_bfloat16* A, int lda,
                   const __nv_bfloat16* Bm, int ldb, __nv_bfloat16* Cm, int ldc);
    const __nv_bfloat16* as_bf16(const float* x, int64_t n, DeviceBuffer<__nv_bfloat16>& copy);
    // x as a bf16 projection operand: held so (in_bf16), else rounded into x16_.
    const __nv_bfloat16* operand16(train::Act x);
    // The projections of x (N, width(x)) by W (out, width(x)).
    void gemm_linear(train::Act x, const float* W, float* y, int out, float beta);
    void gemm_linear(train::Act x, const float* W, __nv_bfloat16* y, int out);  // bf16_projections only
    void gemm_linear_backward(train::Act x, const float* W, const float* dy, int out, float* dx, bool accumulate,
                              float* dW);
    // The same from dy already in bf16 (bf16_projections only).
    void gemm_linear_backward(train::Act x, const float* W, const __nv_bfloat16* dy16, int out, float* dx,
                              bool accumulate, float* dW);
    // The CPU trainer's float masks of one site: factor 0 or float(1/(1 − rate)).
    static train_kernels::DropoutSite device_site(const train::DropoutSite& site);
    LayerBuffers& heads_of(train::Act q, train::Act k, train::Act v);
    // TF32 or bf16 products over several chunks: the fused passes (chunk_states.cu, chunk_output.cu),
    // in bf16 with bf16 projections (as the backward's cuBLAS products), else TF32.
    bool fused_chunks() const;
    ChunkProducts chunk_products() const { return bf16_projections() ? ChunkProducts::Bf16 : ChunkProducts::Tf32; }
    // states_ = the state before each chunk of L's k, v (the unfused path).
    void chunk_states(const LayerBuffers& L);
    // o's rows (B, T, H·Dv) from L's q, k, v (fp32 or bf16: kept_in_bf16(O)).
    template <typename Out>
    void retention_forward(LayerBuffers& L, Out* o);
    void retention_heads_backward(LayerBuffers& L);
    // The fused passes on the layer's q, k, v in In (float, or bf16 when heads_in_bf16).
    template <typename In>
    void fused_forward(const In* q, const In* k, const In* v, In* states, ChunkDestination o);
    template <typename In>
    void fused_backward(const In* q, const In* k, const In* v, In* d_o, In* states, In* after);
    train_kernels::AttentionShape attention_shape() const { return {B_, H(), T_, Dk(), Dv()}; }
    // q, k, v and their gradients head-major, o and d_o rows.
    train_kernels::AttentionLayouts attention_layouts() const;

    void prepare(int batch, int seq_len);
    void upload_decay_tables();
    void reserve_layer_activations();
    void reserve_scratch();

    const ModelConfig config_;
    const train::ParamLayout layout_;
    const int chunk_;
    cudaStream_t stream_;
    cublasHandle_t cublas_;
    cublasComputeType_t compute_;
    DeviceBuffer<float> theta_;  // (Dk/2) rotary frequencies
    const float* P_ = nullptr;   // the pass's parameters (layout.total)
    float* G_ = nullptr;         // and their gradient

    // Per batch shape.
    int B_ = 0, T_ = 0, C_ = 0, n_chunks_ = 0, Tp_ = 0;
    // The retention's decay tables (upload_decay_tables), read by the inference retention kernels.
    DeviceBuffer<float> log_decay_;    // (H) log γ_h
    DeviceBuffer<float> row_head_;     // (B·H, Tp) γ^(i+1), i = t mod C
    DeviceBuffer<float> row_tail_;     // (B·H, Tp) γ^(C−1−i)
    DeviceBuffer<float> chunk_decay_;  // (B·H, n_chunks) γ^C
    DeviceBuffer<float> scan_state_;   // (B·H, Dk, Dv) the chunk scan's start (zero) and end state
    DeviceBuffer<int32_t> inputs_, targets_;  // (N)
    layer_kernels::TokenRowGroups input_groups_;  // of the inputs, for the embedding gradient
    DeviceBuffer<int32_t> group_rows_, group_segment_start_, group_token_segment_;
    std::vector<LayerBuffers> layers_;
    DeviceBuffer<float> x_final_, rstd_f_, xf_;  // (N, d), (N), (N, d); xf_ fp32 only (bf16: normed16_)
    DeviceBuffer<float> logits_;                 // (N, V); the gradient after a forward that formed it
    DeviceBuffer<float> row_loss_;               // (N)
    DeviceBuffer<float> branch_;                 // (N, d) a residual branch before dropout, or its gradient
    bool logits_valid_ = false;  // false before a forward and after one overwrote them with their gradient
    // Scratch shared by the layers; the twin leaves the retention's (states_, oh_ … after_, dOh_) and
    // the gate's (dy_, dg_) empty.
    // What only the projections read, in fp32 or (in_bf16) in bf16: exactly one of each pair is sized.
    DeviceBuffer<float> normed_;                // (N, d) Xn1 or Xn2 of the layer at hand
    DeviceBuffer<__nv_bfloat16> normed16_;      // (N, d) the same, or Xf
    DeviceBuffer<float> branch_input_;          // (N, max(H·Dv, F)) Y or Hidden of the layer at hand
    DeviceBuffer<__nv_bfloat16> branch16_;      // the same
    Fp32OrBf16 states_;  // (B·H·n_chunks, Dk, Dv) the state before each chunk (chunkwise only); bf16: heads_in_bf16
    DeviceBuffer<__nv_bfloat16> x16_, dy16_, w16_;  // a projection's operands rounded to bf16 (bf16_projections)
    DeviceBuffer<float> lin_;       // (N, max(K, H·Dv)) projection before the layout change
    DeviceBuffer<float> oh_;        // (B·H, Tp, Dv): the cuBLAS path's o before its layout
    DeviceBuffer<float> scores_;    // (B·H·n_chunks, C, chunk_scores_ld(C)) A (unfused: (…, C, C))
    DeviceBuffer<float> dscores_;   // the same for dA
    DeviceBuffer<float> rows_k_;    // (B·H·n_chunks, C, Dk) decay-scaled q or k (unfused only)
    DeviceBuffer<float> rows_v_;    // (B·H·n_chunks, C, Dv) decay-scaled v or dO (unfused only)
    Fp32OrBf16 after_;              // (B·H·n_chunks, Dk, Dv) ∂loss/∂(state after chunk c); bf16: heads_in_bf16
    DeviceBuffer<float> dx_, dxn_;  // (N, d)
    DeviceBuffer<float> dhidden_, da_, db_;  // (N, F)
    DeviceBuffer<__nv_bfloat16> da16_, db16_;  // (N, F)
    DeviceBuffer<float> dy_, d_o_, dg_;      // (N, H·Dv)
    DeviceBuffer<__nv_bfloat16> dg16_;       // (N, H·Dv)
    Fp32OrBf16 dOh_;                         // (B·H, Tp, Dv); bf16: heads_in_bf16
    DeviceBuffer<float> dVh_;                // (B·H, Tp, Dv)
    DeviceBuffer<float> dQh_, dKh_;          // (B·H, Tp, Dk)
    DeviceBuffer<float> partials_;           // partial sums of the weight-gradient reductions
    DeviceBuffer<float> attention_rows_;     // (B·H, T) the twin's attention backward's D = rowsum(dO ⊙ O)
};

}  // namespace retnet::cuda
