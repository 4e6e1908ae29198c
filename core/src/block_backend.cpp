// SPDX-License-Identifier: GPL-3.0-or-later
// The block sequence of both families, once, over a backend's BlockOps (retnet/block_ops.h).
#include <algorithm>

#include "retnet/block_ops.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"

namespace retnet {

const Tensor& model_weight(const Model& model, int layer, Weight weight) {
    const ModelWeights& w = model.weights;
    switch (weight) {
        case Weight::EmbedNorm: return w.embed_norm;
        case Weight::FinalNorm: return w.final_norm;
        case Weight::Output: return w.output_matrix();
        default: break;
    }
    if (layer < 0 || layer >= static_cast<int>(w.layers.size()))
        throw Error("layer " + std::to_string(layer) + " is out of range (the model has " +
                    std::to_string(w.layers.size()) + " layers)");
    return layer_member(w.layers[static_cast<size_t>(layer)], weight);
}

void BlockOps::attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y) {
    (void)call, (void)q, (void)k, (void)v, (void)y;
    throw Error("the Transformer twin is not supported on this backend yet");
}

BlockBackend::BlockBackend(std::shared_ptr<const Model> model) : model_(std::move(model)) {
    if (!model_) throw Error("no model");
}

void BlockBackend::set_slot_count(int slots) {
    if (slots < 1) throw Error("a backend needs at least one state slot (got " + std::to_string(slots) + ")");
    const ModelConfig& c = model_->config;
    resize_states(slots);
    const size_t old = slots_.size();
    slots_.resize(static_cast<size_t>(slots));
    for (size_t s = old; s < slots_.size(); ++s) {
        slots_[s].position = 0;
        slots_[s].row_sums.assign(c.family == Family::TorchScale ? static_cast<size_t>(c.n_layers) : 0,
                                  std::vector<double>(static_cast<size_t>(c.n_heads), 0.0));
    }
}

namespace {
void check_slot(int slot, int slots) {
    if (slot < 0 || slot >= slots)
        throw Error("state slot " + std::to_string(slot) + " does not exist (the backend has " +
                    std::to_string(slots) + ")");
}
// Rows of the batch's activations whose logits were asked for, in order.
std::vector<int64_t> logit_rows(std::span<const SequenceRequest> batch, std::span<const SequenceSlice> slices) {
    std::vector<int64_t> rows;
    for (size_t s = 0; s < batch.size(); ++s) {
        const SequenceSlice& slice = slices[s];
        if (batch[s].logits == LogitRows::All)
            for (int t = 0; t < slice.length; ++t) rows.push_back(slice.first_row + t);
        else if (batch[s].logits == LogitRows::Last || batch[s].logits == LogitRows::LastBest)
            rows.push_back(slice.first_row + slice.length - 1);
    }
    return rows;
}
}  // namespace

void BlockBackend::reset(int slot) {
    check_slot(slot, slot_count());
    zero_state(slot);
    SlotBook& book = slots_[static_cast<size_t>(slot)];
    book.position = 0;
    for (std::vector<double>& r : book.row_sums) std::fill(r.begin(), r.end(), 0.0);
}

RecurrentState BlockBackend::snapshot(int slot) const {
    check_slot(slot, slot_count());
    const SlotBook& book = slots_[static_cast<size_t>(slot)];
    RecurrentState out = make_empty_state(model_->config);
    out.position = book.position;  // read_state copies this many tokens of the twin's KV cache
    read_state(slot, out);
    for (size_t l = 0; l < book.row_sums.size(); ++l) out.layers[l].scale = book.row_sums[l];
    return out;
}

void BlockBackend::restore(const RecurrentState& state, int slot) {
    check_slot(slot, slot_count());
    check_state_shape(model_->config, state);
    write_state(slot, state);
    SlotBook& book = slots_[static_cast<size_t>(slot)];
    book.position = state.position;
    for (size_t l = 0; l < book.row_sums.size(); ++l) book.row_sums[l] = state.layers[l].scale;
}

void BlockBackend::copy_slot(int from, int to) {
    check_slot(from, slot_count());
    check_slot(to, slot_count());
    if (from == to) return;
    copy_state(from, to, slots_[static_cast<size_t>(from)].position);
    slots_[static_cast<size_t>(to)] = slots_[static_cast<size_t>(from)];
}

void BlockBackend::copy_state(int from, int to, int64_t position) {
    RecurrentState state = make_empty_state(model_->config);
    state.position = position;
    read_state(from, state);
    write_state(to, state);
}

std::vector<Tensor> BlockBackend::forward_batch(std::span<const SequenceRequest> batch,
                                                const ForwardOptions& options, Introspection* intro) {
    const ModelConfig& c = model_->config;
    check_batch(*model_, batch, slot_count(), options, intro);
    std::vector<SequenceSlice> slices(batch.size());
    std::vector<int32_t> tokens;  // (N) every sequence's tokens, one after the other
    for (size_t s = 0; s < batch.size(); ++s) {
        const SlotBook& book = slots_[static_cast<size_t>(batch[s].slot)];
        check_form_start(c, options.form, book.position);
        slices[s] = {static_cast<int64_t>(tokens.size()), static_cast<int>(batch[s].tokens.size()),
                     batch[s].slot, book.position, {}};
        tokens.insert(tokens.end(), batch[s].tokens.begin(), batch[s].tokens.end());
    }
    if (intro) {
        intro->layer_outputs.clear();
        intro->scores = Tensor();
        intro->state_norms = intro->want_state_norms
                                 ? Tensor({static_cast<int64_t>(tokens.size()), c.n_layers, c.n_heads})
                                 : Tensor();
    }
    const std::vector<int64_t> rows = logit_rows(batch, slices);
    BlockOps& o = ops();
    const bool introspecting = intro && (intro->want_state_norms || intro->want_layer_outputs || intro->score_layer >= 0 ||
                                         intro->qkv_layer >= 0);
    const int best_count = batch.front().logits == LogitRows::LastBest ? batch.front().best_count : 0;
    o.prepare({slices, options.form, effective_chunk_size(c, options), introspecting, rows, best_count});
    std::vector<Tensor> logits;
    std::vector<float> best_packed;  // (B, best_logits_packed_width) once the forward is finished
    try {
        const int64_t N = static_cast<int64_t>(tokens.size());
        Rows x = o.scratch(Scratch::Residual, N, c.d_model);  // (N, d) the residual stream
        o.embed(tokens, embedding_scale(c), x);
        if (c.layernorm_embedding) o.rms_norm(x, -1, Weight::EmbedNorm, c.norm_eps, x);
        run_layers(options, slices, x, intro);
        logits = project_logits(batch, slices, rows, x, best_packed);
    } catch (const Cancelled&) {
        o.finish(false);
        for (const SequenceSlice& slice : slices) reset(slice.slot);  // advanced in some layers only
        throw;
    } catch (...) {
        o.finish(false);
        throw;
    }
    o.finish(true);
    for (const SequenceSlice& slice : slices) slots_[static_cast<size_t>(slice.slot)].position += slice.length;
    if (best_count > 0) {
        const auto width = static_cast<size_t>(best_logits_packed_width(best_count));
        for (size_t s = 0; s < batch.size(); ++s)
            *batch[s].best = unpack_best_logits(std::span(best_packed).subspan(s * width, width), best_count, c.vocab_size);
    }
    return logits;
}

void BlockBackend::run_layers(const ForwardOptions& options, std::span<const SequenceSlice> slices_in,
                              Rows x, Introspection* intro) {
    const ModelConfig& c = model_->config;
    BlockOps& o = ops();
    const int64_t N = x.count;
    std::vector<SequenceSlice> slices(slices_in.begin(), slices_in.end());
    MixRows r;
    r.h = o.scratch(Scratch::Normed, N, c.d_model);
    r.q = o.scratch(Scratch::Q, N, c.key_dim), r.k = o.scratch(Scratch::K, N, c.key_dim);
    r.v = o.scratch(Scratch::V, N, c.value_dim);
    if (!c.is_transformer()) r.g = o.scratch(Scratch::G, N, c.value_dim);
    r.y = o.scratch(Scratch::Gated, N, c.value_dim);
    Rows ffn_a = o.scratch(Scratch::FfnA, N, c.ffn_dim), ffn_b = o.scratch(Scratch::FfnB, N, c.ffn_dim);

    RetentionCall call;
    call.form = options.form;
    call.chunk = effective_chunk_size(c, options);
    call.head_norm_eps = options.head_norm_eps.value_or(c.norm_eps);
    AttentionCall attention_call;
    attention_call.form = options.form;
    attention_call.sequences = slices;
    RetentionRecord record;
    std::vector<float> layer_norms;  // (T, H)
    if (intro) {
        if (intro->want_state_norms) layer_norms.resize(static_cast<size_t>(N) * c.n_heads);
        if (intro->score_layer >= 0) {
            record.score_head_begin = intro->want_all_head_scores ? 0 : intro->score_head;
            record.score_head_count = intro->want_all_head_scores ? c.n_heads : 1;
            intro->scores = intro->want_all_head_scores ? Tensor({c.n_heads, N, N}) : Tensor({N, N});
        }
    }
    for (int l = 0; l < c.n_layers; ++l) {
        throw_if_cancelled(options.cancelled);
        call.layer = attention_call.layer = l;
        if (c.is_transformer())
            attention_block(attention_call, r, x, intro);
        else
            retention_block(call, slices, r, x, intro, record, layer_norms);

        const LinearOut ffn_in[] = {{Weight::FfnAct, ffn_a}, {Weight::FfnLin, ffn_b}};
        o.norm_linears(x, l, Weight::FfnNorm, c.norm_eps, r.h, ffn_in, c.ffn_activation);
        o.linear(ffn_a, l, Weight::FfnOut, x, true);
        if (intro && intro->want_layer_outputs) {
            Tensor out({N, c.d_model});
            o.download(x, out.ptr());
            intro->layer_outputs.push_back(std::move(out));
        }
    }
}

namespace {
// The projections of the introspected layer as they enter the token mixing.
void download_qkv(BlockOps& o, Introspection& intro, Rows q, Rows k, Rows v) {
    for (auto [rows, out] : {std::pair{q, &intro.q}, std::pair{k, &intro.k}, std::pair{v, &intro.v}}) {
        *out = Tensor({rows.count, rows.width});
        o.download(rows, out->ptr());
    }
}
}  // namespace

void BlockBackend::retention_block(RetentionCall& call, std::span<SequenceSlice> slices, const MixRows& r, Rows x,
                                   Introspection* intro, RetentionRecord& record, std::span<float> layer_norms) {
    const ModelConfig& c = model_->config;
    BlockOps& o = ops();
    const int l = call.layer;
    const int64_t N = x.count;
    const LinearOut qkvg[] = {{Weight::Q, r.q}, {Weight::K, r.k}, {Weight::V, r.v}, {Weight::G, r.g}};
    o.norm_linears(x, l, Weight::AttnNorm, c.norm_eps, r.h, qkvg);
    if (intro && intro->qkv_layer == l) download_qkv(o, *intro, r.q, r.k, r.v);
    for (SequenceSlice& slice : slices)
        if (c.family == Family::TorchScale) slice.row_sums = slots_[static_cast<size_t>(slice.slot)].row_sums[static_cast<size_t>(l)];
    call.sequences = slices;
    record.state_norms = layer_norms.empty() ? nullptr : layer_norms.data();
    record.scores = intro && intro->score_layer == l ? intro->scores.ptr() : nullptr;
    call.record = intro && (record.state_norms || record.scores) ? &record : nullptr;
    o.gated_retention(call, r.q, r.k, r.v, r.g, r.y);
    if (c.family == Family::TorchScale) {
        const std::vector<double> gamma = head_decays(model_->weights.log_decay);
        for (const SequenceSlice& slice : slices)
            for (int hd = 0; hd < c.n_heads; ++hd) {
                double& sum = slots_[static_cast<size_t>(slice.slot)].row_sums[static_cast<size_t>(l)][static_cast<size_t>(hd)];
                sum = advance_row_sum(sum, gamma[static_cast<size_t>(hd)], slice.length);
            }
    }
    if (!layer_norms.empty())
        for (int64_t t = 0; t < N; ++t)
            std::copy_n(layer_norms.data() + t * c.n_heads, c.n_heads,
                        intro->state_norms.ptr() + (t * c.n_layers + l) * c.n_heads);
    o.linear(r.y, l, Weight::O, x, true);
}

void BlockBackend::attention_block(const AttentionCall& call, const MixRows& r, Rows x, Introspection* intro) {
    const ModelConfig& c = model_->config;
    BlockOps& o = ops();
    const LinearOut qkv[] = {{Weight::Q, r.q}, {Weight::K, r.k}, {Weight::V, r.v}};
    o.norm_linears(x, call.layer, Weight::AttnNorm, c.norm_eps, r.h, qkv);
    if (intro && intro->qkv_layer == call.layer) download_qkv(o, *intro, r.q, r.k, r.v);
    o.attention(call, r.q, r.k, r.v, r.y);
    o.linear(r.y, call.layer, Weight::O, x, true);
}

std::vector<Tensor> BlockBackend::project_logits(std::span<const SequenceRequest> batch,
                                                 std::span<const SequenceSlice> slices, std::span<const int64_t> rows,
                                                 Rows x, std::vector<float>& best_packed) {
    const ModelConfig& c = model_->config;
    BlockOps& o = ops();
    std::vector<Tensor> out(batch.size());
    if (!rows.empty()) {
        const int64_t M = static_cast<int64_t>(rows.size());
        Rows selected = x;
        if (M != x.count) {
            selected = o.scratch(Scratch::Selected, M, c.d_model);
            o.gather_rows(x, rows, selected);
        }
        Rows logits = o.scratch(Scratch::Logits, M, c.vocab_size);
        const LinearOut output[] = {{Weight::Output, logits}};
        o.norm_linears(selected, -1, Weight::FinalNorm, c.norm_eps, selected, output);
        if (batch.front().logits == LogitRows::LastBest) {  // one row a sequence, selected where it is
            const int count = batch.front().best_count;
            const Rows packed = o.scratch(Scratch::Best, M, best_logits_packed_width(count));
            o.best_logits(logits, count, packed);
            best_packed.resize(static_cast<size_t>(packed.count * packed.width));
            o.download(packed, best_packed.data());
            for (Tensor& t : out) t = Tensor({0, c.vocab_size});
            return out;
        }
        int64_t next = 0;  // each sequence's rows are consecutive: one copy straight into its tensor
        for (size_t s = 0; s < batch.size(); ++s) {
            const int64_t n = batch[s].logits == LogitRows::All ? slices[s].length
                              : batch[s].logits == LogitRows::Last ? 1 : 0;
            out[s] = Tensor({n, c.vocab_size});
            if (n > 0) o.download({logits.data + next * c.vocab_size, n, c.vocab_size}, out[s].ptr());
            next += n;
        }
    } else {
        for (Tensor& t : out) t = Tensor({0, c.vocab_size});
    }
    return out;
}

}  // namespace retnet
