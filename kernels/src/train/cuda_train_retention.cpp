// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA trainer's fla retention on head-major q, k, v (cuda_train_ops.h), forward and backward:
// the fused chunkwise passes (../ops.h) over several chunks of at most 64 with rounded products —
// under cuda-bf16 reading q, k, v, dO and the chunk states stored in bf16 (heads_in_bf16) — else
// cuBLAS batched GEMMs within chunks and the chunk-state scan across them.
#include <utility>
#include <vector>

#include "../ops.h"
#include "cuda_train_ops.h"
#include "retnet/family_rules.h"

namespace retnet::cuda {

// The decay tables of the batch shape, from family_rules' decay powers as the CPU trainer uses them.
void CudaTrainOps::upload_decay_tables() {
    const int B = B_, C = C_, n_chunks = n_chunks_;
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
    for (auto [buffer, host] : {std::pair{&log_decay_, &log_gamma}, std::pair{&row_head_, &head},
                                std::pair{&row_tail_, &tail}, std::pair{&chunk_decay_, &chunk}}) {
        buffer->reserve(host->size());
        buffer->upload(*host, stream_);
    }
    scan_state_.reserve(static_cast<size_t>(B) * static_cast<size_t>(H()) * static_cast<size_t>(Dk()) *
                        static_cast<size_t>(Dv()));
}

bool CudaTrainOps::fused_chunks() const {
    return compute_ != CUBLAS_COMPUTE_32F && n_chunks_ > 1 && chunk_output_supports(C_, n_chunks_);
}

// The unfused path's chunk states, states_ = the state before each chunk of L's k, v:
// U_c = K_cᵀ diag(γ^(C−1−j)) V_c, scanned from the empty state.
void CudaTrainOps::chunk_states(const LayerBuffers& L) {
    const int dk = Dk(), dv = Dv(), mats = n_mats(), C = C_, n_chunks = n_chunks_, Tp = Tp_;
    scan_state_.zero(stream_);
    const int64_t sk = static_cast<int64_t>(C) * dk, sv = static_cast<int64_t>(C) * dv,
                  se = static_cast<int64_t>(dk) * dv;
    launch_scale_rows(L.vh.f32.get(), row_tail_.get(), rows_v_.get(), B_ * H(), Tp, dv, stream_);
    gemm(true, false, dk, dv, C, 1.0f, L.kh.f32.get(), dk, sk, rows_v_.get(), dv, sv, 0.0f, states_.f32.get(), dv, se,
         mats);
    launch_chunk_state_scan(states_.f32.get(), scan_state_.get(), chunk_decay_.get(), B_ * H(), n_chunks, se, stream_);
}

// The fused passes (ops.h): the states S before each chunk walked over K, V (formed here and again in
// the backward rather than kept per layer — (B·H·n_chunks, Dk, Dv) per layer, the largest activation at
// the 1.3B heads; deterministic kernels give the same values), the scores A, then O = A V + diag(γ^(i+1)) Q S
// written straight into o's rows.
template <typename In>
void CudaTrainOps::fused_forward(const In* q, const In* k, const In* v, In* states, ChunkDestination o) {
    const int heads = B_ * H(), C = C_, nC = n_chunks_;
    scan_state_.zero(stream_);
    launch_chunk_states(k, v, row_tail_.get(), chunk_decay_.get(), scan_state_.get(), states, heads, nC, C, Dk(), Dv(),
                        chunk_products(), stream_);
    launch_chunk_scores(q, k, log_decay_.get(), H(), scores_.get(), heads, nC, C, Dk(), chunk_products(), stream_);
    launch_chunk_output(q, scores_.get(), v, states, log_decay_.get(), H(), o, heads, nC, C, Dk(), Dv(), chunk_products(),
                        stream_);
}

// O = ((Q Kᵀ) ⊙ D) V within each chunk, plus diag(γ^(i+1)) Q_c S_c from the state before it, into o's rows
// (B, T, H·Dv): by the fused passes, or head-major into oh_ by cuBLAS and laid out after.
template <typename Out>
void CudaTrainOps::retention_forward(LayerBuffers& L, Out* o) {
    const ChunkDestination rows = ChunkDestination::rows(o, H(), T_);
    if (heads_in_bf16()) {
        fused_forward(L.qh.bf16.get(), L.kh.bf16.get(), L.vh.bf16.get(), states_.bf16.get(), rows);
        return;
    }
    if (fused_chunks()) {
        fused_forward(L.qh.f32.get(), L.kh.f32.get(), L.vh.f32.get(), states_.f32.get(), rows);
        return;
    }
    const int dk = Dk(), dv = Dv(), mats = n_mats(), C = C_, n_chunks = n_chunks_, Tp = Tp_;
    const int64_t sk = static_cast<int64_t>(C) * dk, sv = static_cast<int64_t>(C) * dv,
                  ss = static_cast<int64_t>(C) * C, se = static_cast<int64_t>(dk) * dv;
    const float *q = L.qh.f32.get(), *k = L.kh.f32.get(), *v = L.vh.f32.get();
    gemm(false, true, C, C, dk, 1.0f, q, dk, sk, k, dk, sk, 0.0f, scores_.get(), C, ss, mats);
    launch_chunk_decay_mask(scores_.get(), log_decay_.get(), nullptr, H(), n_chunks, C, false, stream_, B_);
    gemm(false, false, C, dv, C, 1.0f, scores_.get(), C, ss, v, dv, sv, 0.0f, oh_.get(), dv, sv, mats);
    if (n_chunks > 1) {  // O_c += diag(γ^(i+1)) Q_c S_c
        chunk_states(L);
        launch_scale_rows(q, row_head_.get(), rows_k_.get(), B_ * H(), Tp, dk, stream_);
        gemm(false, false, C, dv, dk, 1.0f, rows_k_.get(), dk, sk, states_.f32.get(), dv, se, 1.0f, oh_.get(), dv, sv,
             mats);
    }
    layer_kernels::heads_to_rows(oh_.get(), o, B_, T_, Tp_, H(), Dv(), stream_);
}
template void CudaTrainOps::retention_forward(LayerBuffers&, float*);
template void CudaTrainOps::retention_forward(LayerBuffers&, __nv_bfloat16*);

// From dOh (head-major): dQh, dKh, dVh.
void CudaTrainOps::retention_heads_backward(LayerBuffers& L) {
    if (heads_in_bf16()) {
        fused_backward(L.qh.bf16.get(), L.kh.bf16.get(), L.vh.bf16.get(), dOh_.bf16.get(), states_.bf16.get(),
                       after_.bf16.get());
        return;
    }
    if (fused_chunks()) {
        fused_backward(L.qh.f32.get(), L.kh.f32.get(), L.vh.f32.get(), dOh_.f32.get(), states_.f32.get(), after_.f32.get());
        return;
    }
    const int dk = Dk(), dv = Dv(), mats = n_mats(), C = C_, n_chunks = n_chunks_, Tp = Tp_;
    const int64_t sk = static_cast<int64_t>(C) * dk, sv = static_cast<int64_t>(C) * dv,
                  ss = static_cast<int64_t>(C) * C, se = static_cast<int64_t>(dk) * dv;
    gemm(false, true, C, C, dk, 1.0f, L.qh.f32.get(), dk, sk, L.kh.f32.get(), dk, sk, 0.0f, scores_.get(), C, ss, mats);
    launch_chunk_decay_mask(scores_.get(), log_decay_.get(), nullptr, H(), n_chunks, C, false, stream_, B_);
    gemm(false, true, C, C, dv, 1.0f, dOh_.f32.get(), dv, sv, L.vh.f32.get(), dv, sv, 0.0f, dscores_.get(), C, ss, mats);
    launch_chunk_decay_mask(dscores_.get(), log_decay_.get(), nullptr, H(), n_chunks, C, false, stream_, B_);
    // dV = Aᵀ dO, dQ = dA K, dK = dAᵀ Q (within chunks)
    gemm(true, false, C, dv, C, 1.0f, scores_.get(), C, ss, dOh_.f32.get(), dv, sv, 0.0f, dVh_.get(), dv, sv, mats);
    gemm(false, false, C, dk, C, 1.0f, dscores_.get(), C, ss, L.kh.f32.get(), dk, sk, 0.0f, dQh_.get(), dk, sk, mats);
    gemm(true, false, C, dk, C, 1.0f, dscores_.get(), C, ss, L.qh.f32.get(), dk, sk, 0.0f, dKh_.get(), dk, sk, mats);
    if (n_chunks == 1) return;
    chunk_states(L);
    // Through the states: dO_s = diag(γ^(i+1)) dO_c; Q_cᵀ dO_s (∂/∂S_c via the outputs), scanned in
    // place into G_c = ∂/∂(state after chunk c)
    launch_scale_rows(dOh_.f32.get(), row_head_.get(), rows_v_.get(), B_ * H(), Tp, dv, stream_);
    gemm(true, false, dk, dv, C, 1.0f, L.qh.f32.get(), dk, sk, rows_v_.get(), dv, sv, 0.0f, after_.f32.get(), dv, se, mats);
    launch_chunk_state_scan_backward(after_.f32.get(), chunk_decay_.get(), B_ * H(), n_chunks, se, stream_);
    // dQ_c += dO_s S_cᵀ
    gemm(false, true, C, dk, dv, 1.0f, rows_v_.get(), dv, sv, states_.f32.get(), dv, se, 1.0f, dQh_.get(), dk, sk, mats);
    // dV_c += diag(γ^(C−1−j)) K_c G_c;  dK_c += diag(γ^(C−1−j)) V_c G_cᵀ  (G_c = after[c])
    launch_scale_rows(L.kh.f32.get(), row_tail_.get(), rows_k_.get(), B_ * H(), Tp, dk, stream_);
    gemm(false, false, C, dv, dk, 1.0f, rows_k_.get(), dk, sk, after_.f32.get(), dv, se, 1.0f, dVh_.get(), dv, sv, mats);
    launch_scale_rows(L.vh.f32.get(), row_tail_.get(), rows_v_.get(), B_ * H(), Tp, dv, stream_);
    gemm(false, true, C, dk, dv, 1.0f, rows_v_.get(), dv, sv, after_.f32.get(), dv, se, 1.0f, dKh_.get(), dk, sk, mats);
}

// The backward by the fused passes (ops.h): the scores A and dA once per chunk; the states S before
// each chunk walked forwards over K, V, and G = ∂loss/∂(state after each chunk) walked backwards over
// Q, dO (the same walk: G_c = γ^C G_{c+1} + Q_{c+1}ᵀ diag(γ^(i+1)) dO_{c+1}); then dQ, dK and dV each
// formed by one pass and written once. The unfused path above writes the state-sized product Qᵀ dO,
// scans it, and adds six cuBLAS products and three row scalings into dQ, dK and dV.
template <typename In>
void CudaTrainOps::fused_backward(const In* q, const In* k, const In* v, In* d_o, In* states, In* after) {
    const int dk = Dk(), dv = Dv(), heads = B_ * H(), C = C_, nC = n_chunks_;
    const ChunkProducts products = chunk_products();
    launch_chunk_scores(q, k, log_decay_.get(), H(), scores_.get(), heads, nC, C, dk, products, stream_);
    launch_chunk_scores<In>(d_o, v, log_decay_.get(), H(), dscores_.get(), heads, nC, C, dv, products, stream_);
    scan_state_.zero(stream_);
    launch_chunk_states(k, v, row_tail_.get(), chunk_decay_.get(), scan_state_.get(), states, heads, nC, C, dk, dv,
                        products, stream_);
    scan_state_.zero(stream_);
    launch_chunk_states<In>(q, d_o, row_head_.get(), chunk_decay_.get(), scan_state_.get(), after, heads, nC, C, dk, dv,
                            products, stream_, ChunkWalk::Backward);
    launch_chunk_gradient<In>(ChunkGradient::DQ, d_o, states, dscores_.get(), k, log_decay_.get(), H(), dQh_.get(),
                              heads, nC, C, dv, dk, products, stream_);
    launch_chunk_gradient<In>(ChunkGradient::DK, v, after, dscores_.get(), q, log_decay_.get(), H(), dKh_.get(), heads,
                              nC, C, dv, dk, products, stream_);
    launch_chunk_gradient<In>(ChunkGradient::DV, k, after, scores_.get(), d_o, log_decay_.get(), H(), dVh_.get(), heads,
                              nC, C, dk, dv, products, stream_);
}

}  // namespace retnet::cuda
