// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend's projections: one row with bf16 weights (up to 8 with fp32) through the streaming
// GEMV (norm and GLU fused), 2 to 16 with bf16 weights through the tensor-core skinny GEMM, more
// through cuBLAS; the bf16 input rows they share, and v written head-major for the retention that
// follows.
#include <algorithm>
#include <vector>

#include "backend_cuda_class.h"
#include "gemm.h"
#include "gemv.h"
#include "retnet/error.h"
#include "skinny_gemm.h"

namespace retnet::cuda_backend {
namespace {

// The GEMV's view of a projection: its weights as they are held (bf16 or fp32) and its output.
cuda::GemvJob gemv_job(const DeviceWeight& W, float* y, bool accumulate) {
    return {W.bf16 ? static_cast<const void*>(W.bf16) : W.f32.get(), y, W.out, accumulate};
}

// With bf16 weights the GEMV takes one row only; from two rows on the skinny tensor-core GEMM (and
// cuBLAS for the vocabulary), whose cost hardly depends on M, where the GEMV's grows with its x
// traffic. Measured on the H100 (1.3B shape, device ms a step, decode_ab.sh): batch 2 1.71 against
// 1.83 with the GEMV, batch 4 1.82 against 2.73, batch 8 2.14 against 4.18; batch 1 stays with the
// GEMV (its fused norm + q, k, v, g 20.6 us against the skinny kernel's 21.6 plus the norm).
constexpr int kGemvMaxRowsBf16 = 1;
bool gemv_takes(int M, int K, bool bf16) {
    return cuda::gemv_supports(M, K, bf16) && (!bf16 || M <= kGemvMaxRowsBf16);
}

// Whether the vocabulary projection is among the outputs (cuBLAS streams it faster than the skinny GEMM).
bool has_vocabulary(std::span<const LinearOut> outputs) {
    return std::any_of(outputs.begin(), outputs.end(),
                       [](const LinearOut& out) { return out.weight == Weight::Output; });
}

cuda::GemvGlu gemv_glu(std::optional<Activation> activation) {
    if (!activation) return cuda::GemvGlu::None;
    return *activation == Activation::Gelu ? cuda::GemvGlu::Gelu : cuda::GemvGlu::Swish;
}

}  // namespace

// y (M, out) = x (M, in) · Wᵀ (+ y): through the GEMV, the tensor-core skinny GEMM or cuBLAS, as
// gemv_takes() and skinny_gemm_supports() route them.
void CudaBackend::linear(Rows x, int layer, Weight w, Rows y, bool accumulate) {
    if (replaying()) return;
    const DeviceWeight& W = weight(layer, w);
    const int M = static_cast<int>(x.count);
    const bool bf16 = W.bf16 != nullptr;
    if (rows_in_bf16_only_ == x.data && !reads_bf16_rows(M, layer, w))
        throw Error("CUDA backend: rows kept only in bf16 reached a projection that reads fp32 (internal error)");
    if (gemv_takes(M, W.in, bf16)) {
        const cuda::GemvJob job = gemv_job(W, y.data, accumulate);
        const cuda::L2Prefetch next = w == Weight::O ? weights_after_output_projection(layer, M) : cuda::L2Prefetch{};
        cuda::launch_gemv(x.data, M, W.in, &job, 1, bf16, stream(), {}, cuda::GemvGlu::None, next);
    } else if (!bf16) {
        cuda::linear_f32(cublas_->get(), x.data, W.f32.get(), y.data, M, W.out, W.in, accumulate ? 1.0f : 0.0f);
    } else if (cuda::skinny_gemm_supports(M, W.in) && w != Weight::Output) {
        const cuda::GemvJob job = gemv_job(W, y.data, accumulate);
        cuda::launch_skinny_gemm(activations_bf16(x), M, W.in, &job, 1, stream());
    } else {
        cuda::linear_bf16(cublas_->get(), activations_bf16(x), W.bf16, y.data, M, W.out, W.in,
                          accumulate ? 1.0f : 0.0f);
    }
    if (w == Weight::Output) stop_timer();
}

// Whether linear() reads M rows for weight w as bf16 (the skinny GEMM and cuBLAS branches), so
// that the op before it may write them in bf16 alone (rows_in_bf16_only_).
bool CudaBackend::reads_bf16_rows(int M, int layer, Weight w) const {
    const DeviceWeight& W = weight(layer, w);
    return W.bf16 && !gemv_takes(M, W.in, true);
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

void CudaBackend::keep_rows_in_bf16_only(const float* rows, const __nv_bfloat16* at) {
    rows_in_bf16_only_ = rows, bf16_only_at_ = at;
}

// x rounded to bf16 for cuBLAS, in the workspace that the next projection overwrites.
const __nv_bfloat16* CudaBackend::activations_bf16(Rows x) {
    if (rows_in_bf16_only_ == x.data) {
        rows_in_bf16_only_ = nullptr;
        ++bf16_handoffs_;
        return bf16_only_at_;
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
        bf16 = W.bf16 != nullptr;
        if (!gemv_takes(M, W.in, bf16) || W.in != x.width || jobs.size() == cuda::kGemvMaxJobs) {
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
    return !gemv_takes(static_cast<int>(x.count), K, true) &&
           std::all_of(outputs.begin(), outputs.end(), [&](const LinearOut& out) {
               const DeviceWeight& W = weight(layer, out.weight);
               return W.bf16 && W.in == K;
           });
}

// Up to 16 rows: one tensor-core launch for all of a layer's projections (and the GLU); more
// rows, and the vocabulary projection (32,000 rows of 2048: cuBLAS streams it faster, 38.7 against
// 48.5 µs at 16 rows on the H200), through cuBLAS.
void CudaBackend::linears_bf16(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                               std::optional<Activation> glu_activation) {
    const int K = weight(layer, outputs.front().weight).in;
    if (cuda::skinny_gemm_supports(M, K) && !has_vocabulary(outputs) &&
        outputs.size() <= static_cast<size_t>(cuda::kGemvMaxJobs)) {
        std::vector<cuda::GemvJob> jobs;
        for (const LinearOut& out : outputs) jobs.push_back(gemv_job(weight(layer, out.weight), out.y.data, false));
        // The GLU's output in bf16 alone for the down projection, beside the rows this launch reads
        // (prepare() made room for it).
        const size_t in = static_cast<size_t>(M) * K, glu_out = static_cast<size_t>(outputs.front().y.count * outputs.front().y.width);
        const bool glu_in_bf16 = glu_activation && rows == ws_.act_bf16.get() && ws_.act_bf16.size() >= in + glu_out &&
                                 reads_bf16_rows(M, layer, Weight::FfnOut);
        cuda::launch_skinny_gemm(rows, M, K, jobs.data(), static_cast<int>(jobs.size()), stream(),
                                 gemv_glu(glu_activation), glu_in_bf16 ? ws_.act_bf16.get() + in : nullptr);
        if (glu_in_bf16) keep_rows_in_bf16_only(outputs.front().y.data, ws_.act_bf16.get() + in);
    } else if (!project_in_one_gemm(rows, M, layer, outputs, glu_activation)) {
        for (const LinearOut& out : outputs) {
            const DeviceWeight& W = weight(layer, out.weight);
            if (out.weight == Weight::V && M == v_head_major_rows_) {
                write_v_head_major(rows, M, W);
                continue;
            }
            cuda::linear_bf16(cublas_->get(), rows, W.bf16, out.y.data, M, W.out, W.in, 0.0f);
        }
        if (glu_activation) {
            const Rows a = outputs[0].y, b = outputs[1].y;
            if (reads_bf16_rows(M, layer, Weight::FfnOut)) {
                // the FFN's down projection reads the GLU's output from act_bf16, which the GEMMs above read
                // before it in the stream
                release_act_bf16(static_cast<size_t>(a.count * a.width));
                cuda::launch_glu(a.data, b.data, ws_.act_bf16.get(), a.count * a.width,
                                 *glu_activation == Activation::Gelu, stream());
                keep_rows_in_bf16_only(a.data, ws_.act_bf16.get());
            } else {
                glu(a, b, *glu_activation);
            }
        }
    }
    for (const LinearOut& out : outputs)
        if (out.weight == Weight::Output) stop_timer();
}

// Decoding more rows than the skinny GEMM takes: q, k, v, g (or the FFN's act and lin) by one GEMM
// over their adjacent weights (bf16_weights_) into ws_.projected, where the decode retention reads
// q, k, v, g; the GLU reads act and lin there and writes the down projection's bf16 rows. H100, 64
// rows: 22.6 µs against 35.8 for four GEMMs, 11.6 against 16.0 for two; 32 rows: 23.3 against 41.5,
// 11.5 against 21.2.
bool CudaBackend::project_in_one_gemm(const __nv_bfloat16* rows, int M, int layer, std::span<const LinearOut> outputs,
                                      std::optional<Activation> glu_activation) {
    static constexpr Weight kQkvg[] = {Weight::Q, Weight::K, Weight::V, Weight::G};
    static constexpr Weight kGlu[] = {Weight::FfnAct, Weight::FfnLin};
    const std::span<const Weight> order = glu_activation ? std::span<const Weight>(kGlu) : kQkvg;
    if (!decode_.active || kv_ || outputs.size() != order.size()) return false;
    if (glu_activation && !reads_bf16_rows(M, layer, Weight::FfnOut)) return false;
    const DeviceWeight& first = weight(layer, order.front());
    const int K = first.in;
    int64_t width = 0;
    for (size_t i = 0; i < outputs.size(); ++i) {
        const DeviceWeight& W = weight(layer, outputs[i].weight);
        if (outputs[i].weight != order[i] || W.in != K || W.bf16 != first.bf16 + width * K) return false;
        width += W.out;
    }
    const Rows a = outputs.front().y;
    if (ws_.projected.size() < static_cast<size_t>(M) * static_cast<size_t>(width)) return false;
    if (glu_activation && !cuda::glu_rows_supports(static_cast<int>(a.width), width, ws_.projected.get(), ws_.act_bf16.get()))
        return false;
    cuda::linear_bf16(cublas_->get(), rows, first.bf16, ws_.projected.get(), M, static_cast<int>(width), K, 0.0f);
    if (glu_activation) {
        // the down projection reads the GLU's output from act_bf16, which the GEMM above read before it
        release_act_bf16(static_cast<size_t>(a.count * a.width));
        cuda::launch_glu_rows(ws_.projected.get(), M, static_cast<int>(a.width), width, ws_.act_bf16.get(),
                              *glu_activation == Activation::Gelu, stream());
        keep_rows_in_bf16_only(a.data, ws_.act_bf16.get());
    } else {
        int64_t column = 0;
        for (size_t i = 0; i < outputs.size(); ++i) {
            projected_[i] = {outputs[i].y.data, ws_.projected.get() + column, width};
            column += outputs[i].y.width;
        }
    }
    ++one_gemm_projections_;
    return true;
}

// Where rows asked for are: in ws_.projected (project_in_one_gemm), or where they were asked.
CudaBackend::ProjectedRows CudaBackend::projected_rows(Rows r) const {
    for (const ProjectedRows& p : projected_)
        if (p.asked && p.asked == r.data) return p;
    return {r.data, r.data, r.width};
}

// v (M rows) = rows · W_vᵀ straight into ws_.vh (H, Tp, Dv), its padding rows zero: what
// retain_sequence's launch_to_head_major would make of v's rows.
void CudaBackend::write_v_head_major(const __nv_bfloat16* rows, int M, const DeviceWeight& W) {
    const int H = model_->config.n_heads, Dv = W.out / H, Tp = v_head_major_tp_;
    const int64_t head_stride = static_cast<int64_t>(Tp) * Dv;
    cuda::linear_bf16_head_major(cublas_->get(), rows, W.bf16, ws_.vh.get(), M, W.out, W.in, H, head_stride);
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
    bool fusable = cuda::gemv_supports_fusion(M, K, bf16) && gemv_takes(M, K, bf16) && !outputs.empty() &&
                   outputs.size() <= static_cast<size_t>(cuda::kGemvMaxJobs) && (!glu_activation || outputs.size() == 2);
    std::vector<cuda::GemvJob> jobs;
    for (const LinearOut& out : outputs) {
        const DeviceWeight& W = weight(layer, out.weight);
        fusable = fusable && W.in == K && (W.bf16 != nullptr) == bf16;
        jobs.push_back(gemv_job(W, out.y.data, false));
    }
    const DeviceWeight& norm_weight = weight(layer, norm);
    const float* norm_w = norm_weight.f32.empty() ? nullptr : norm_weight.f32.get();
    if (!fusable && cublas_bf16_rows(x, layer, outputs)) {
        if (norm_in_skinny_gemm(x, layer, {x.data, norm_w, static_cast<float>(eps)}, jobs, outputs, glu_activation))
            return;
        release_act_bf16(static_cast<size_t>(M) * static_cast<size_t>(K));
        cuda::launch_rmsnorm_bf16(x.data, norm_w, ws_.act_bf16.get(), M, K, static_cast<float>(eps), stream());
        linears_bf16(ws_.act_bf16.get(), M, layer, outputs, glu_activation);
        return;
    }
    if (!fusable) return BlockOps::norm_linears(x, layer, norm, eps, h, outputs, glu_activation);
    const cuda::GemvInputTransform input{cuda::GemvInput::RmsNorm, norm_w, static_cast<float>(eps)};
    cuda::launch_gemv(x.data, M, K, jobs.data(), static_cast<int>(jobs.size()), bf16, stream(), input,
                      gemv_glu(glu_activation));
    for (const LinearOut& out : outputs)
        if (out.weight == Weight::Output) stop_timer();
}

// 2 to 4 rows with bf16 weights (not the vocabulary): the norm inside the skinny GEMM's launch, its x̂
// staged in shared memory, bit for bit the norm launch and the GEMM on its rows; the GLU's output for the
// down projection in bf16 alone, at the start of act_bf16 (no input rows there to keep). jobs: the outputs'.
bool CudaBackend::norm_in_skinny_gemm(Rows x, int layer, const cuda::SkinnyNorm& input,
                                      const std::vector<cuda::GemvJob>& jobs, std::span<const LinearOut> outputs,
                                      std::optional<Activation> glu_activation) {
    const int M = static_cast<int>(x.count), K = static_cast<int>(x.width);
    if (!skinny_norm_ || M > cuda::kSkinnyFusedNormMaxRows || has_vocabulary(outputs) ||
        !cuda::skinny_gemm_fuses_norm(M, K) || outputs.size() > static_cast<size_t>(cuda::kGemvMaxJobs) ||
        (glu_activation && outputs.size() != 2))
        return false;
    const bool glu_in_bf16 = glu_activation && reads_bf16_rows(M, layer, Weight::FfnOut);
    if (glu_in_bf16) release_act_bf16(static_cast<size_t>(outputs.front().y.count * outputs.front().y.width));
    cuda::launch_skinny_gemm_normed(input, M, K, jobs.data(), static_cast<int>(jobs.size()), stream(),
                                    gemv_glu(glu_activation), glu_in_bf16 ? ws_.act_bf16.get() : nullptr);
    if (glu_in_bf16) keep_rows_in_bf16_only(outputs.front().y.data, ws_.act_bf16.get());
    ++fused_norms_;
    return true;
}

}  // namespace retnet::cuda_backend
