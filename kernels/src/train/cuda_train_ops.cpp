// SPDX-License-Identifier: GPL-3.0-or-later
// CudaTrainOps: each TrainOps op as the kernels and cuBLAS calls of the GPU, on the activations of
// one batch shape (cuda_train_ops.h).
#include "cuda_train_ops.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <tuple>
#include <utility>

#include "../cuda_check.h"
#include "../ops.h"
#include "retnet/error.h"

namespace retnet::cuda {

namespace tk = train_kernels;
namespace lk = layer_kernels;
using train::Act;
using train::Buf;

CudaTrainOps::CudaTrainOps(const ModelConfig& config, const train::ParamLayout& layout, int chunk, cudaStream_t stream,
                           cublasHandle_t cublas, cublasComputeType_t compute)
    : config_(config), layout_(layout), chunk_(chunk), stream_(stream), cublas_(cublas), compute_(compute) {
    const std::vector<float> theta = default_rotary_theta(Family::Fla, config.head_dim_k(), train::rotary_base(config));
    theta_.resize(theta.size());
    theta_.upload(theta, stream_);
}

void CudaTrainOps::begin_pass(const train::BatchView& batch, bool want_gradient, const float* params, float* grad) {
    train::check_train_batch(config_, batch);
    prepare(batch.batch, batch.seq_len);
    const size_t n = static_cast<size_t>(rows());
    inputs_.upload(batch.inputs, n, stream_);
    targets_.upload(batch.targets, n, stream_);
    P_ = params;
    G_ = grad;
    if (!want_gradient) return;
    input_groups_ = lk::group_rows_by_token(batch.inputs, rows(), config_.vocab_size);
    group_rows_.upload(input_groups_.rows, stream_);
    group_segment_start_.upload(input_groups_.segment_start, stream_);
    group_token_segment_.upload(input_groups_.token_segment, stream_);
}

double CudaTrainOps::read_loss() {
    std::vector<float> losses(static_cast<size_t>(rows()));
    row_loss_.download(losses.data(), losses.size(), stream_);
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double sum = 0.0;
    for (float l : losses) sum += l;
    return sum / static_cast<double>(losses.size());
}

std::vector<float> CudaTrainOps::download_logits() const {
    if (!logits_valid_)
        throw Error("CUDA training: no logits to read (none computed, or overwritten by their gradient); call loss_and_gradient(batch, false) first");
    std::vector<float> out(static_cast<size_t>(rows()) * static_cast<size_t>(config_.vocab_size));
    logits_.download(out.data(), out.size(), stream_);
    RETNET_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
}

// The named buffers: q, k, v and their gradients head-major, the rest rows; the gradient of the
// logits is formed in their place.
float* CudaTrainOps::at(Act a) {
    if (in_bf16(a.name)) throw Error("CUDA training: a buffer held in bf16 was asked for in fp32");
    if (train::per_layer(a.name)) {
        if (Fp32OrBf16* kept = kept_rows(a)) return kept->f32.get();
        LayerBuffers& L = layers_[static_cast<size_t>(a.layer)];
        switch (a.name) {  // train::recomputed_in_backward: one buffer for all layers
            case Buf::Xn1: case Buf::Xn2: return normed_.get();
            case Buf::Y: case Buf::Hidden: return branch_input_.get();
            default: break;
        }
        DeviceBuffer<float>* saved[] = {&L.x_in,  &L.rstd1, nullptr,   nullptr,  nullptr,   nullptr,
                                        nullptr,  nullptr,  &L.lse,    &L.rstd_h, nullptr,  &L.x_mid,
                                        &L.rstd2, nullptr,  nullptr,   nullptr,   nullptr};
        static_assert(std::size(saved) == train::kLayerBufs);
        return saved[static_cast<int>(a.name)]->get();
    }
    switch (a.name) {
        case Buf::XFinal: return x_final_.get();
        case Buf::RstdF: return rstd_f_.get();
        case Buf::Xf: return xf_.get();
        case Buf::Logits: case Buf::DLogits: return logits_.get();
        case Buf::DX: return dx_.get();
        case Buf::DXn: return dxn_.get();
        case Buf::DBranch: return branch_.get();
        case Buf::DHidden: return dhidden_.get();
        case Buf::DA: return da_.get();
        case Buf::DB: return db_.get();
        case Buf::DY: return dy_.get();
        case Buf::DO: return d_o_.get();
        case Buf::DG: return dg_.get();
        case Buf::DQ: return dQh_.get();
        case Buf::DK: return dKh_.get();
        case Buf::DV: return dVh_.get();
        default: throw Error("CUDA training: no such buffer");
    }
}

// G, O (the RetNet's) and A, B under cuda-bf16: only element-wise ops read them, from bf16.
bool CudaTrainOps::kept_in_bf16(Buf b) const {
    return bf16_projections() && (b == Buf::A || b == Buf::B || (!twin() && (b == Buf::G || b == Buf::O)));
}

bool CudaTrainOps::in_bf16(Buf b) const {
    if (!bf16_projections()) return false;
    switch (b) {
        case Buf::Xn1: case Buf::Xn2: case Buf::Xf: case Buf::Hidden: case Buf::DA: case Buf::DB: return true;
        case Buf::Y: case Buf::DG: return !twin();
        case Buf::Q: case Buf::K: case Buf::V: return heads_in_bf16();
        default: return kept_in_bf16(b);
    }
}

// The Fp32OrBf16 of G, O, A, B, Q, K or V (checking the layer), else null.
CudaTrainOps::Fp32OrBf16* CudaTrainOps::kept_rows(Act a) {
    if (!train::per_layer(a.name)) return nullptr;
    if (a.layer < 0 || a.layer >= static_cast<int>(layers_.size()))
        throw Error("CUDA training: buffer named with the wrong layer");
    LayerBuffers& L = layers_[static_cast<size_t>(a.layer)];
    switch (a.name) {
        case Buf::G: return &L.g;
        case Buf::O: return &L.o;
        case Buf::A: return &L.a;
        case Buf::B: return &L.b;
        case Buf::Q: return &L.qh;
        case Buf::K: return &L.kh;
        case Buf::V: return &L.vh;
        default: return nullptr;
    }
}

__nv_bfloat16* CudaTrainOps::at16(Act a) {
    if (!in_bf16(a.name)) throw Error("CUDA training: a buffer held in fp32 was asked for in bf16");
    switch (a.name) {  // the norms' outputs and the branch inputs: one buffer for all layers, as in fp32
        case Buf::Xn1: case Buf::Xn2: case Buf::Xf: return normed16_.get();
        case Buf::Y: case Buf::Hidden: return branch16_.get();
        case Buf::DA: return da16_.get();
        case Buf::DB: return db16_.get();
        case Buf::DG: return dg16_.get();
        default: return kept_rows(a)->bf16.get();
    }
}

const float* CudaTrainOps::weight(int layer, Weight w) const { return P_ + train::param_offset(layout_, layer, w); }
float* CudaTrainOps::weight_grad(int layer, Weight w) const { return G_ + train::param_offset(layout_, layer, w); }
const float* CudaTrainOps::head_norm_weight(int layer) const {
    const int64_t off = layout_.layers[static_cast<size_t>(layer)].head_norm;
    return off >= 0 ? P_ + off : nullptr;
}

tk::DropoutSite CudaTrainOps::device_site(const train::DropoutSite& site) {
    return {site.rate, site.base, static_cast<float>(1.0 / (1.0 - site.rate))};
}

// Row-major C_b = alpha·op(A_b)·op(B_b) + beta·C_b (cuBLAS sees the transposes).
void CudaTrainOps::gemm(bool ta, bool tb, int M, int Nn, int K, float alpha, const float* A, int lda, int64_t sa,
                        const float* Bm, int ldb, int64_t sb, float beta, float* Cm, int ldc, int64_t sc, int batch) {
    if (M == 0 || Nn == 0 || batch == 0) return;
    const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (batch == 1)
        RETNET_CUBLAS_CHECK(cublasGemmEx(cublas_, op_b, op_a, Nn, M, K, &alpha, Bm, CUDA_R_32F, ldb, A, CUDA_R_32F,
                                         lda, &beta, Cm, CUDA_R_32F, ldc, compute_, CUBLAS_GEMM_DEFAULT));
    else
        RETNET_CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas_, op_b, op_a, Nn, M, K, &alpha, Bm, CUDA_R_32F, ldb, sb,
                                                       A, CUDA_R_32F, lda, sa, &beta, Cm, CUDA_R_32F, ldc, sc, batch,
                                                       compute_, CUBLAS_GEMM_DEFAULT));
}

namespace {
// Row-major C = op(A)·op(B) + beta·C, A and B bf16, fp32 sums, C of type c_type.
void gemm_bf16_into(cublasHandle_t cublas, bool ta, bool tb, int M, int Nn, int K, const __nv_bfloat16* A, int lda,
                    const __nv_bfloat16* Bm, int ldb, float beta, void* Cm, cudaDataType_t c_type, int ldc) {
    if (M == 0 || Nn == 0) return;
    const float alpha = 1.0f;
    RETNET_CUBLAS_CHECK(cublasGemmEx(cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, Nn, M, K,
                                     &alpha, Bm, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, Cm, c_type, ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void CudaTrainOps::gemm_bf16(bool ta, bool tb, int M, int Nn, int K, const __nv_bfloat16* A, int lda,
                             const __nv_bfloat16* Bm, int ldb, float beta, float* Cm, int ldc) {
    gemm_bf16_into(cublas_, ta, tb, M, Nn, K, A, lda, Bm, ldb, beta, Cm, CUDA_R_32F, ldc);
}

void CudaTrainOps::gemm_bf16(bool ta, bool tb, int M, int Nn, int K, const __nv_bfloat16* A, int lda,
                             const __nv_bfloat16* Bm, int ldb, __nv_bfloat16* Cm, int ldc) {
    gemm_bf16_into(cublas_, ta, tb, M, Nn, K, A, lda, Bm, ldb, 0.0f, Cm, CUDA_R_16BF, ldc);
}

const __nv_bfloat16* CudaTrainOps::as_bf16(const float* x, int64_t n, DeviceBuffer<__nv_bfloat16>& copy) {
    copy.reserve(static_cast<size_t>(n));
    launch_float_to_bf16(x, copy.get(), n, stream_);
    return copy.get();
}

const __nv_bfloat16* CudaTrainOps::operand16(Act x) {
    if (in_bf16(x.name)) return at16(x);
    return as_bf16(at(x), rows() * width(x), x16_);
}

// y (N, out) = x (N, in) · Wᵀ + beta·y
void CudaTrainOps::gemm_linear(Act x, const float* W, float* y, int out, float beta) {
    const int r = static_cast<int>(rows()), in = width(x);
    if (bf16_projections()) {
        gemm_bf16(false, true, r, out, in, operand16(x), in, as_bf16(W, int64_t{out} * in, w16_), in, beta, y, out);
        return;
    }
    gemm(false, true, r, out, in, 1.0f, at(x), in, 0, W, in, 0, beta, y, out, 0);
}

void CudaTrainOps::gemm_linear(Act x, const float* W, __nv_bfloat16* y, int out) {
    const int r = static_cast<int>(rows()), in = width(x);
    gemm_bf16(false, true, r, out, in, operand16(x), in, as_bf16(W, int64_t{out} * in, w16_), in, y, out);
}

// dx (N, in) = dy · W (+= when accumulate); dW (out, in) += dyᵀ · x
void CudaTrainOps::gemm_linear_backward(Act x, const float* W, const float* dy, int out, float* dx, bool accumulate,
                                        float* dW) {
    const int r = static_cast<int>(rows()), in = width(x);
    if (bf16_projections()) {
        gemm_linear_backward(x, W, as_bf16(dy, int64_t{r} * out, dy16_), out, dx, accumulate, dW);
        return;
    }
    gemm(false, false, r, in, out, 1.0f, dy, out, 0, W, in, 0, accumulate ? 1.0f : 0.0f, dx, in, 0);
    gemm(true, false, out, in, r, 1.0f, dy, out, 0, at(x), in, 0, 1.0f, dW, in, 0);
}

void CudaTrainOps::gemm_linear_backward(Act x, const float* W, const __nv_bfloat16* dy16, int out, float* dx,
                                        bool accumulate, float* dW) {
    const int r = static_cast<int>(rows()), in = width(x);
    gemm_bf16(false, false, r, in, out, dy16, out, as_bf16(W, int64_t{out} * in, w16_), in, accumulate ? 1.0f : 0.0f,
              dx, in);
    gemm_bf16(true, false, out, in, r, dy16, out, operand16(x), in, 1.0f, dW, in);
}

void CudaTrainOps::embed(Act x) {
    lk::embedding_forward(inputs_.get(), P_ + layout_.embed, at(x), rows(), d(), 1.0f, stream_);
}

void CudaTrainOps::embed_backward(Act dx) {
    const lk::DeviceTokenRowGroups groups{group_rows_.get(), group_segment_start_.get(), group_token_segment_.get(),
                                          static_cast<int64_t>(input_groups_.segment_start.size()) - 1,
                                          config_.vocab_size};
    lk::embedding_backward(groups, at(dx), partials_.get(), G_ + layout_.embed, d(), stream_);
}

void CudaTrainOps::dropout(Act in, Act out, const train::DropoutSite& site) {
    tk::dropout_scale(at(in), at(out), rows() * d(), device_site(site), stream_);
}

void CudaTrainOps::rms_norm(Act x, int layer, Weight w, Act y, Act rstd) {
    const auto norm = [&](auto* out) {
        lk::rmsnorm_forward(at(x), weight(layer, w), rows(), width(x), static_cast<float>(config_.norm_eps), out,
                            at(rstd), stream_);
    };
    if (in_bf16(y.name))
        norm(at16(y));
    else
        norm(at(y));
}

void CudaTrainOps::rms_norm_backward(Act x, int layer, Weight w, Act rstd, Act dy, Act dx) {
    lk::rmsnorm_backward(at(x), weight(layer, w), at(rstd), at(dy), rows(), width(x), at(dx), weight_grad(layer, w),
                         partials_.get(), stream_);
}

void CudaTrainOps::linear(Act x, int layer, Weight w, Act y) {
    if (in_bf16(y.name))
        gemm_linear(x, weight(layer, w), at16(y), width(y));
    else
        gemm_linear(x, weight(layer, w), at(y), width(y), 0.0f);
}

void CudaTrainOps::linear_backward(Act x, int layer, Weight w, Act dy, Act dx, bool accumulate) {
    if (in_bf16(dy.name))
        gemm_linear_backward(x, weight(layer, w), at16(dy), width(dy), at(dx), accumulate, weight_grad(layer, w));
    else
        gemm_linear_backward(x, weight(layer, w), at(dy), width(dy), at(dx), accumulate, weight_grad(layer, w));
}

// out = residual + x · Wᵀ, through the site's dropout mask when it has one.
void CudaTrainOps::residual_branch(Act residual, Act x, int layer, Weight w, const train::DropoutSite& site, Act out) {
    const int64_t n = rows();
    const int dd = d();
    if (site.rate > 0.0) {
        gemm_linear(x, weight(layer, w), branch_.get(), dd, 0.0f);
        tk::dropout_residual_add(at(residual), branch_.get(), at(out), n * dd, device_site(site), stream_);
        return;
    }
    RETNET_CUDA_CHECK(cudaMemcpyAsync(at(out), at(residual), sizeof(float) * n * dd, cudaMemcpyDeviceToDevice, stream_));
    gemm_linear(x, weight(layer, w), at(out), dd, 1.0f);
}

// The projection into lin_, then rotated (positions from 0) or laid out head-major, in fp32 or
// (heads_in_bf16) rounded to bf16 from the float the fp32 heads would hold.
void CudaTrainOps::project_heads(Act x, int layer, Weight w, const train::HeadRotary& rotary, Act heads) {
    const int out = width(heads);
    gemm_linear(x, weight(layer, w), lin_.get(), out, 0.0f);
    const auto to_heads = [&](auto* dst) {
        if (rotary.apply)
            lk::rotary_forward(lin_.get(), dst, B_, T_, Tp_, H(), Dk(),
                               {theta_.get(), 0, static_cast<float>(rotary.scale), false}, stream_);
        else
            lk::rows_to_heads(lin_.get(), dst, B_, T_, Tp_, H(), out / H(), stream_);
    };
    if (in_bf16(heads.name))
        to_heads(at16(heads));
    else
        to_heads(at(heads));
}

void CudaTrainOps::project_heads_backward(Act x, int layer, Weight w, const train::HeadRotary& rotary, Act dheads,
                                          Act dx, bool accumulate) {
    const int out = width(dheads);
    // with bf16 projections the rows go out in bf16 straight away (the GEMMs' operand)
    const auto to_rows = [&](auto* rows) {
        if (rotary.apply)
            lk::rotary_backward(at(dheads), rows, B_, T_, Tp_, H(), Dk(),
                                {theta_.get(), 0, static_cast<float>(rotary.scale), false}, stream_);
        else
            lk::heads_to_rows(at(dheads), rows, B_, T_, Tp_, H(), out / H(), stream_);
        gemm_linear_backward(x, weight(layer, w), rows, out, at(dx), accumulate, weight_grad(layer, w));
    };
    if (bf16_projections()) {
        dy16_.reserve(static_cast<size_t>(rows() * out));
        to_rows(dy16_.get());
    } else {
        to_rows(lin_.get());
    }
}

// The retention works on one layer's saved q, k, v.
CudaTrainOps::LayerBuffers& CudaTrainOps::heads_of(Act q, Act k, Act v) {
    if (q.name != Buf::Q || k.name != Buf::K || v.name != Buf::V || q.layer != k.layer || k.layer != v.layer ||
        q.layer < 0 || q.layer >= static_cast<int>(layers_.size()))
        throw Error("CUDA training: retention needs the q, k and v of one layer");
    return layers_[static_cast<size_t>(q.layer)];
}

void CudaTrainOps::retention(Act q, Act k, Act v, Act o) {
    LayerBuffers& L = heads_of(q, k, v);
    if (kept_in_bf16(o.name))
        retention_forward(L, at16(o));
    else
        retention_forward(L, at(o));
}

void CudaTrainOps::retention_backward(Act q, Act k, Act v, Act d_o, Act dq, Act dk, Act dv) {
    LayerBuffers& L = heads_of(q, k, v);
    if (at(dq) != dQh_.get() || at(dk) != dKh_.get() || at(dv) != dVh_.get())
        throw Error("CUDA training: the retention backward writes DQ, DK and DV");
    if (heads_in_bf16())
        lk::rows_to_heads(at(d_o), dOh_.bf16.get(), B_, T_, Tp_, H(), Dv(), stream_);
    else
        lk::rows_to_heads(at(d_o), dOh_.f32.get(), B_, T_, Tp_, H(), Dv(), stream_);
    retention_heads_backward(L);
}

tk::AttentionLayouts CudaTrainOps::attention_layouts() const {
    return {tk::heads_layout(H(), Tp_, Dk()), tk::heads_layout(H(), Tp_, Dv()), tk::rows_layout(T_, H(), Dv())};
}

// The fused kernels read q, k, v head-major where project_heads left them and o rows where o_proj
// reads them; lse (N, H) is all they keep for the backward.
void CudaTrainOps::attention(Act q, Act k, Act v, Act o, Act lse) {
    heads_of(q, k, v);
    tk::attention_forward(attention_shape(), attention_layouts(), at(q), at(k), at(v), at(o), at(lse), stream_);
}

void CudaTrainOps::attention_backward(Act q, Act k, Act v, Act o, Act lse, Act d_o, Act dq, Act dk, Act dv) {
    heads_of(q, k, v);
    if (at(dq) != dQh_.get() || at(dk) != dKh_.get() || at(dv) != dVh_.get())
        throw Error("CUDA training: the attention backward writes DQ, DK and DV");
    tk::attention_backward(attention_shape(), attention_layouts(), at(q), at(k), at(v), at(o), at(lse), at(d_o),
                           dQh_.get(), dKh_.get(), dVh_.get(), attention_rows_.get(), stream_);
}

// Under cuda-bf16 the gate's o, g, y and dg are all in bf16 (in_bf16), as are the GLU's a, b, h, da and
// db; otherwise all in fp32.
void CudaTrainOps::head_norm_gate(Act o, Act g, int layer, Act y, Act rstd) {
    const float eps = static_cast<float>(config_.norm_eps);
    if (in_bf16(y.name))
        lk::head_norm_gate_forward(at16(o), at16(g), head_norm_weight(layer), rows(), H(), Dv(), eps, at16(y),
                                   at(rstd), stream_);
    else
        lk::head_norm_gate_forward({at(o)}, at(g), head_norm_weight(layer), rows(), H(), Dv(), eps, at(y), at(rstd),
                                   stream_);
}

void CudaTrainOps::head_norm_gate_backward(Act o, Act g, int layer, Act rstd, Act dy, Act d_o, Act dg) {
    const int64_t off = layout_.layers[static_cast<size_t>(layer)].head_norm;
    float* dw = off >= 0 ? G_ + off : nullptr;
    const auto backward = [&](const auto* o_rows, const auto* g_rows, auto* dg_rows) {
        lk::head_norm_gate_backward(o_rows, g_rows, head_norm_weight(layer), at(rstd), at(dy), rows(), H(), Dv(),
                                    at(d_o), dg_rows, dw, partials_.get(), stream_);
    };
    if (in_bf16(dg.name))
        backward(at16(o), at16(g), at16(dg));
    else
        backward(at(o), at(g), at(dg));
}

void CudaTrainOps::glu(Act a, Act b, Act h) {
    if (in_bf16(h.name))
        lk::glu_forward(at16(a), at16(b), rows() * width(a), false, at16(h), stream_);
    else
        lk::glu_forward(at(a), at(b), rows() * width(a), false, at(h), stream_);
}

void CudaTrainOps::glu_backward(Act a, Act b, Act dh, Act da, Act db) {
    if (in_bf16(da.name))
        lk::glu_backward(at16(a), at16(b), at(dh), rows() * width(a), false, at16(da), at16(db), stream_);
    else
        lk::glu_backward(at(a), at(b), at(dh), rows() * width(a), false, at(da), at(db), stream_);
}

// The gradient, when asked for, overwrites the logits (DLogits is the logits' buffer).
void CudaTrainOps::cross_entropy(Act logits, std::optional<Act> dlogits, double grad_scale) {
    if (dlogits && at(*dlogits) != at(logits)) throw Error("CUDA training: the logits' gradient must be formed in place");
    tk::cross_entropy(at(logits), targets_.get(), rows(), config_.vocab_size, row_loss_.get(), dlogits.has_value(),
                      static_cast<float>(grad_scale), stream_);
    logits_valid_ = !dlogits;
}

void CudaTrainOps::zero(Act x) {
    RETNET_CUDA_CHECK(cudaMemsetAsync(at(x), 0, sizeof(float) * rows() * width(x), stream_));
}

void CudaTrainOps::zero_gradient() {
    RETNET_CUDA_CHECK(cudaMemsetAsync(G_, 0, sizeof(float) * layout_.total, stream_));
}

void CudaTrainOps::prepare(int batch, int seq_len) {
    if (batch == B_ && seq_len == T_) return;
    // Buffers only grow (reserve): evaluation batches between training steps reuse them.
    B_ = batch;
    T_ = seq_len;
    C_ = chunk_ > 0 ? std::min(chunk_, T_) : T_;
    n_chunks_ = (T_ + C_ - 1) / C_;
    Tp_ = n_chunks_ * C_;
    if (!twin()) upload_decay_tables();
    reserve_layer_activations();
    reserve_scratch();
}

void CudaTrainOps::reserve_layer_activations() {
    const int64_t n = rows();
    const int dd = d(), dk = Dk(), dv = Dv(), Vd = config_.value_dim, F = config_.ffn_dim;
    const int64_t heads_k = static_cast<int64_t>(B_) * H() * Tp_ * dk, heads_v = static_cast<int64_t>(B_) * H() * Tp_ * dv;
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    const auto rows_of = [&](Buf b) { return sz(n * train::buffer_width(config_, b)); };  // 0 where unused
    layers_.resize(layout_.layers.size());  // std::vector: one LayerBuffers per layer
    for (LayerBuffers& L : layers_) {
        L.x_in.reserve(sz(n * dd));
        L.rstd1.reserve(sz(n));
        for (auto [heads, count] : {std::pair{&L.qh, heads_k}, std::pair{&L.kh, heads_k}, std::pair{&L.vh, heads_v}})
            heads->reserve(heads_in_bf16(), sz(count));
        for (auto [kept, name, count] : {std::tuple{&L.g, Buf::G, rows_of(Buf::G)}, std::tuple{&L.o, Buf::O, sz(n * Vd)},
                                         std::tuple{&L.a, Buf::A, sz(n * F)}, std::tuple{&L.b, Buf::B, sz(n * F)}})
            kept->reserve(kept_in_bf16(name), count);
        L.lse.reserve(rows_of(Buf::Lse));
        L.rstd_h.reserve(rows_of(Buf::RstdH));
        L.x_mid.reserve(sz(n * dd));
        L.rstd2.reserve(sz(n));
    }
    // the norms' outputs and the branch inputs, in the precision the projections read them
    const size_t branch = sz(n * std::max(train::buffer_width(config_, Buf::Y), int64_t{F}));
    if (bf16_projections()) {
        normed16_.reserve(sz(n * dd));
        branch16_.reserve(branch);
    } else {
        normed_.reserve(sz(n * dd));
        branch_input_.reserve(branch);
    }
    states_.reserve(heads_in_bf16(), n_chunks_ > 1 ? sz(int64_t(n_mats()) * dk * dv) : 0);
}

void CudaTrainOps::reserve_scratch() {
    const int64_t n = rows();
    const int dd = d(), h = H(), dk = Dk(), dv = Dv(), K = config_.key_dim, Vd = config_.value_dim,
              F = config_.ffn_dim, V = config_.vocab_size, C = C_;
    const int64_t heads_k = static_cast<int64_t>(B_) * h * Tp_ * dk, heads_v = static_cast<int64_t>(B_) * h * Tp_ * dv;
    const int64_t mats = n_mats();
    const bool retention = !twin(), chunked = n_chunks_ > 1;  // the twin has one chunk (chunk_ 0)
    const auto sz = [](int64_t x) { return static_cast<size_t>(x); };
    inputs_.reserve(sz(n));
    targets_.reserve(sz(n));
    const int64_t max_segments = lk::max_token_segments(n, V);
    group_rows_.reserve(sz(n));
    group_segment_start_.reserve(sz(max_segments + 1));
    group_token_segment_.reserve(sz(V + 1));
    x_final_.reserve(sz(n * dd));
    rstd_f_.reserve(sz(n));
    xf_.reserve(bf16_projections() ? 0 : sz(n * dd));  // bf16: normed16_
    logits_.reserve(sz(n * V));
    row_loss_.reserve(sz(n));
    branch_.reserve(sz(n * dd));
    lin_.reserve(sz(n * std::max(K, Vd)));
    if (bf16_projections()) {  // the widest projection input and output, the largest weight
        const int64_t widest_in = std::max({dd, F, K, Vd});
        x16_.reserve(twin() ? sz(n * Vd) : 0);  // the one input not held in bf16: the twin's attention output
        dy16_.reserve(sz(n * std::max<int64_t>(widest_in, V)));
        w16_.reserve(sz(std::max<int64_t>(V, widest_in) * widest_in));
    }
    oh_.reserve(retention && !fused_chunks() ? sz(heads_v) : 0);  // the fused passes write o's rows
    // the twin would need T² per head here; the fused passes pad the scores' rows (chunk_scores_ld)
    for (DeviceBuffer<float>* scores : {&scores_, &dscores_})
        scores->reserve(retention ? sz(mats * C * chunk_scores_ld(static_cast<int>(C))) : 0);
    const bool unfused = chunked && !fused_chunks();  // the row scalings of the cuBLAS path
    rows_k_.reserve(unfused ? sz(mats * C * dk) : 0);
    rows_v_.reserve(unfused ? sz(mats * C * dv) : 0);
    after_.reserve(heads_in_bf16(), chunked ? sz(mats * dk * dv) : 0);
    for (DeviceBuffer<float>* buffer : {&dx_, &dxn_}) buffer->reserve(sz(n * dd));
    const int64_t gate_width = train::buffer_width(config_, Buf::DY);
    dhidden_.reserve(sz(n * F));
    dy_.reserve(sz(n * gate_width));
    const bool bf16 = bf16_projections();
    for (DeviceBuffer<float>* buffer : {&da_, &db_}) buffer->reserve(bf16 ? 0 : sz(n * F));
    for (DeviceBuffer<__nv_bfloat16>* buffer : {&da16_, &db16_}) buffer->reserve(bf16 ? sz(n * F) : 0);
    dg_.reserve(bf16 ? 0 : sz(n * gate_width));
    dg16_.reserve(bf16 ? sz(n * gate_width) : 0);
    d_o_.reserve(sz(n * Vd));
    dOh_.reserve(heads_in_bf16(), retention ? sz(heads_v) : 0);
    dVh_.reserve(sz(heads_v));
    for (DeviceBuffer<float>* buffer : {&dQh_, &dKh_}) buffer->reserve(sz(heads_k));
    partials_.reserve(sz(std::max({lk::rmsnorm_backward_parts(n) * dd, lk::head_norm_gate_backward_parts(n, h) * dv,
                                   max_segments * dd})));
    attention_rows_.reserve(retention ? 0 : sz(tk::attention_backward_scratch_floats(attention_shape())));
}

}  // namespace retnet::cuda
