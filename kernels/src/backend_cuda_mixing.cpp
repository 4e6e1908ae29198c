// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend's token mixing: gated retention in its three forms, the batched decoding step's
// fused retention, and the Transformer twin's attention. Each form computes exactly what the
// reference backend computes (core/src/reference):
//   parallel   scores = QKᵀ ⊙ decay (× torchscale row normalization) per head, O = A V, plus the
//              state's contribution γ^(t+1) q_t S0 (fla; torchscale parallel needs an empty state)
//   chunkwise  per chunk: inner = masked scores · V, cross = Q · state_c, chunk states by a scan
//   recurrent  a fused scan over the tokens with the state on chip
// and the state after the call is always the recurrent form's (state handoff between forms).
// The family's coefficients (row sums, step coefficients, decay powers) come from
// retnet/family_rules.h; this file only stages them for the kernels.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention.h"
#include "backend_cuda_class.h"
#include "decode_retention.h"
#include "gemm.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"

namespace retnet::cuda_backend {

void CudaBackend::gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) {
    if (decode_.active) return decode_retention(call, q, k, v, g, y);
    // The output projection's bf16 input straight from the head norm + gate.
    const bool y_in_bf16 = reads_bf16_rows(static_cast<int>(y.count), call.layer, Weight::O);
    if (y_in_bf16) release_act_bf16(static_cast<size_t>(y.count * y.width));
    for (const SequenceSlice& slice : call.sequences)
        retain_sequence(call, slice, q, k, v, g, y, y_in_bf16 ? ws_.act_bf16.get() : nullptr);
    if (y_in_bf16) keep_rows_in_bf16_only(y.data, ws_.act_bf16.get());
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
    const ProjectedRows qp = projected_rows(q), kp = projected_rows(k), vp = projected_rows(v), gp = projected_rows(g);
    projected_ = {};
    args.q = qp.at, args.k = kp.at, args.v = vp.at, args.g = gp.at;
    args.q_stride = qp.stride, args.k_stride = kp.stride, args.v_stride = vp.stride, args.g_stride = gp.stride;
    args.states = decode_.states + static_cast<size_t>(call.layer) * N;
    args.angles = ws_.rotary_angles.get();
    args.q_scale = scale.q, args.k_scale = scale.k;
    args.interleaved = rotary_pairs(c.family) == RotaryPairs::Interleaved;
    args.o = ws_.oh.get();
    args.N = N, args.H = H, args.Dk = c.head_dim_k(), args.Dv = c.head_dim_v();
    const DeviceBuffer<float>& head_norm = head_norms_[static_cast<size_t>(call.layer)];
    args.arrivals = ws_.arrivals.get();
    args.head_norm_weight = head_norm.empty() ? nullptr : head_norm.get();
    args.head_norm_eps = static_cast<float>(call.head_norm_eps);
    // The output projection's bf16 input straight from the head norm + gate (no conversion launch).
    const bool y_in_bf16 = reads_bf16_rows(N, call.layer, Weight::O);
    if (y_in_bf16) {
        release_act_bf16(static_cast<size_t>(y.count * y.width));
        args.y_bf16 = ws_.act_bf16.get();
    } else {
        args.y = y.data;
    }
    args.next = weights_after_retention(call.layer, N);
    cuda::launch_decode_retention(args, stream());
    if (y_in_bf16) keep_rows_in_bf16_only(y.data, ws_.act_bf16.get());
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

}  // namespace retnet::cuda_backend
