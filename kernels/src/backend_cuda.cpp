// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend: BlockBackend's block sequence over ops on one GPU. Weights are uploaded once
// (fp32, or bf16 for the projections with fp32 accumulation); activations, retention and the
// recurrent states stay in fp32 on the device. Only the logits rows asked for, and introspection
// results when asked for, are copied back. One stream and one cuBLAS handle per backend, used from
// one host thread; a batched decoding step is captured once as a CUDA graph and replayed.
//
// This file: the weights' upload, the forward's preparation (scratch, staging, graphs), the rows'
// downloads and the registration. The projections are in backend_cuda_projections.cpp, retention's
// three forms and the twin's attention in backend_cuda_mixing.cpp; the class in backend_cuda_class.h.
#include <algorithm>
#include <mutex>
#include <vector>

#include "attention.h"
#include "backend_cuda_class.h"
#include "backend_cuda_internal.h"
#include "decode_retention.h"
#include "retnet/cuda/module.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"
#include "skinny_gemm.h"

namespace retnet {
namespace cuda_backend {
namespace {
bool is_projection(Weight w) {
    return w != Weight::EmbedNorm && w != Weight::AttnNorm && w != Weight::FfnNorm && w != Weight::FinalNorm;
}
}  // namespace

void CudaBackend::upload(const Tensor& held, DeviceWeight& out, __nv_bfloat16* bf16_at, DeviceBuffer<float>& staging) {
    if (held.empty()) return;
    out.out = static_cast<int>(held.dim(0));
    out.in = held.rank() > 1 ? static_cast<int>(held.dim(1)) : 1;
    if (!bf16_at) {
        if (held.storage() == Storage::BF16) out.f32.upload(held.to_f32().data, stream());
        else out.f32.upload(held.data, stream());  // (one conditional expression would copy held's values)
        return;
    }
    out.bf16 = bf16_at;
    if (held.storage() == Storage::BF16) {  // a bf16 checkpoint's matrix goes up as it is held
        RETNET_CUDA_CHECK(cudaMemcpy(bf16_at, held.bf16.data(), held.bf16.size() * sizeof(uint16_t),
                                     cudaMemcpyHostToDevice));
        return;
    }
    staging.upload(held.data, stream());
    cuda::launch_float_to_bf16(staging.get(), bf16_at, held.numel(), stream());
    stream_->synchronize();  // the staging buffer is reused by the next upload
}

void CudaBackend::upload_weights() {
    const Model& m = *model_;
    gamma_ = head_decays(m.weights.log_decay);
    DeviceBuffer<float> staging;
    embed_.upload(m.weights.embed.storage() == Storage::BF16 ? m.weights.embed.to_f32().data
                                                                      : m.weights.embed.data,
                  stream());
    const bool bf16 = options_.bf16_weights;
    // One allocation per group, each projection's bf16 values at its place in it, which starts on a
    // 16-byte boundary (the GEMV's and the skinny GEMM's vector loads): projections whose sizes are
    // multiples of 8 values, as at every real shape, lie back to back (project_in_one_gemm).
    auto place = [](size_t at) { return (at + 7) / 8 * 8; };
    auto upload_group = [&](int layer, std::span<const Weight> weights, auto&& destination) {
        size_t total = 0;
        for (Weight w : weights)
            if (bf16 && is_projection(w)) total = place(total) + static_cast<size_t>(model_weight(m, layer, w).numel());
        DeviceBuffer<__nv_bfloat16>& storage = bf16_weights_.emplace_back(total);
        size_t at = 0;
        for (Weight w : weights) {
            const Tensor& held = model_weight(m, layer, w);
            const bool to_bf16 = bf16 && is_projection(w) && !held.empty();
            if (to_bf16) at = place(at);
            upload(held, destination(w), to_bf16 ? storage.get() + at : nullptr, staging);
            if (to_bf16) at += static_cast<size_t>(held.numel());
        }
    };
    const Weight model_level[] = {Weight::EmbedNorm, Weight::FinalNorm, Weight::Output};
    upload_group(-1, model_level, [&](Weight w) -> DeviceWeight& { return model_weights_[static_cast<size_t>(w)]; });
    layer_weights_.resize(m.weights.layers.size());
    const Weight layer_level[] = {Weight::AttnNorm, Weight::Q,       Weight::K,       Weight::V,      Weight::G,
                                  Weight::O,        Weight::FfnNorm, Weight::FfnAct, Weight::FfnLin, Weight::FfnOut};
    for (int l = 0; l < static_cast<int>(m.weights.layers.size()); ++l)
        upload_group(l, layer_level, [&](Weight w) -> DeviceWeight& {
            return layer_weights_[static_cast<size_t>(l)][static_cast<size_t>(w)];
        });
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
    if (decode_.active) grow(ws_.rotary_angles, n * (Dk / 2));
    if (decode_.active && options_.bf16_weights && n > static_cast<size_t>(cuda::kSkinnyMaxRows)) {
        const size_t widest_group = std::max(2 * H * Dk + 2 * H * Dv, 2 * static_cast<size_t>(model_->config.ffn_dim));
        grow(ws_.projected, n * widest_group);  // project_in_one_gemm's q, k, v, g, or act and lin
    }
    projected_ = {};
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
    // that a kernel writes there (x, y, the GLU's output); for few rows also the skinny GEMM's GLU
    // output beside its input (linears_bf16).
    if (options_.bf16_weights)
        grow(ws_.act_bf16, n * static_cast<size_t>(std::max({c.d_model, c.value_dim, c.ffn_dim})) +
                               (n <= static_cast<size_t>(cuda::kSkinnyMaxRows) ? n * static_cast<size_t>(c.ffn_dim) : 0));
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
        key.best_count = plan.best_count;
        key.buffers = buffer_generation_ + (staging_.generation() << 32);
        staging_.set_replay(graphs_.begin(key, stream()) == cuda::GraphCache::Mode::Replay);
    } else {
        forward_start_.record(stream());
    }
    if (decode_.active) stage_decode_batch(plan);
}

void CudaBackend::finish(bool completed) {
    rows_in_bf16_only_ = nullptr, bf16_only_at_ = nullptr;
    projected_ = {};
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
    // The step's first launch: every layer's decode retention reads these (decode_retention.h).
    if (!replaying())
        cuda::launch_rotary_angles(decode_.positions, theta_.get(), static_cast<int>(N), c.head_dim_k() / 2,
                                   ws_.rotary_angles.get(), stream());
}

void CudaBackend::embed(std::span<const int32_t> tokens, float scale, Rows x) {
    const int32_t* d_tokens = staging_.stage(tokens, stream());
    if (replaying()) return;
    cuda::launch_embedding(d_tokens, embed_.get(), x.data, static_cast<int>(x.count), static_cast<int>(x.width),
                           scale, stream());
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

// Logits (and their best, packed) are final once made: their copies wait for finish(), which makes
// them together.
// Anything else (a layer's output) is copied now, before later ops overwrite its rows.
void CudaBackend::download(Rows x, float* host) {
    launch_graph();
    if (!timer_stopped_) stop_timer();  // without logits, the first download ends the device time
    const size_t count = static_cast<size_t>(x.count * x.width);
    const auto at = reinterpret_cast<uintptr_t>(x.data);
    for (Scratch final_rows : {Scratch::Logits, Scratch::Best}) {
        const DeviceBuffer<float>& rows = scratch_[static_cast<size_t>(final_rows)];
        const auto begin = reinterpret_cast<uintptr_t>(rows.get());
        if (at >= begin && at + count * sizeof(float) <= begin + rows.bytes()) {
            downloads_.add(x.data, host, count);
            return;
        }
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

}  // namespace cuda_backend

namespace {

std::once_flag g_register_once;

}  // namespace

using cuda_backend::CudaBackend;

uint64_t cuda_bf16_handoffs(const Backend& backend) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
    return cuda ? cuda->bf16_handoffs_ : 0;
}

uint64_t cuda_one_gemm_projections(const Backend& backend) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
    return cuda ? cuda->one_gemm_projections_ : 0;
}

uint64_t cuda_fused_norms(const Backend& backend) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
    return cuda ? cuda->fused_norms_ : 0;
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
