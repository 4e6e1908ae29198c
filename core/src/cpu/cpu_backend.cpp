// SPDX-License-Identifier: GPL-3.0-or-later
// The fast CPU backend: the block sequence of BlockBackend over float32 ops on host memory,
// matrix products through OpenBLAS (threaded) or, for bf16 weights, cpu::gemm_bf16 (float32
// sums); the state kept in float32 like the GPU's (the Transformer twin's KV cache too).
// Tested against the double reference (tests/core).
#include <algorithm>
#include <array>
#include <cstring>

#include "cpu/cpu_attention.h"
#include "cpu/cpu_ops.h"
#include "cpu/cpu_retention.h"
#include "retnet/block_ops.h"
#include "retnet/error.h"
#include "retnet/family_rules.h"

namespace retnet {
namespace {

class CpuBackend final : public BlockBackend, private BlockOps {
public:
    explicit CpuBackend(std::shared_ptr<const Model> model)
        : BlockBackend(std::move(model)), gamma_(head_decays(model_->weights.log_decay)) {
        init_slots();
    }

    std::string name() const override { return "cpu"; }

private:
    // The twin's cache of one layer: capacity ≥ the slot's position tokens, of which the first
    // `position` are valid.
    struct KvCache {
        std::vector<float> K;  // (capacity, H, D) rotated keys
        std::vector<float> V;  // (capacity, H, D)
    };
    static constexpr size_t kKvBlock = 256;

    BlockOps& ops() override { return *this; }

    // ---- state storage -----------------------------------------------------------------------
    size_t state_size() const {
        const ModelConfig& c = model_->config;
        return static_cast<size_t>(c.n_heads) * c.head_dim_k() * c.head_dim_v();
    }
    void resize_states(int slots) override {
        const size_t L = static_cast<size_t>(model_->config.n_layers);
        if (model_->config.is_transformer()) {
            caches_.resize(static_cast<size_t>(slots), std::vector<KvCache>(L));
            return;
        }
        states_.resize(static_cast<size_t>(slots), std::vector<std::vector<float>>(L, std::vector<float>(state_size(), 0.0f)));
    }
    void zero_state(int slot) override {
        if (model_->config.is_transformer()) {
            for (KvCache& cache : caches_[static_cast<size_t>(slot)]) cache = KvCache();  // its memory freed
            return;
        }
        for (std::vector<float>& s : states_[static_cast<size_t>(slot)]) std::fill(s.begin(), s.end(), 0.0f);
    }
    void read_state(int slot, RecurrentState& out) const override {
        if (model_->config.is_transformer()) {
            const size_t n = static_cast<size_t>(out.position) * static_cast<size_t>(model_->config.key_dim);
            for (size_t l = 0; l < out.layers.size(); ++l) {
                const KvCache& cache = caches_[static_cast<size_t>(slot)][l];
                out.layers[l].K.assign(cache.K.begin(), cache.K.begin() + static_cast<std::ptrdiff_t>(n));
                out.layers[l].V.assign(cache.V.begin(), cache.V.begin() + static_cast<std::ptrdiff_t>(n));
            }
            return;
        }
        for (size_t l = 0; l < out.layers.size(); ++l) out.layers[l].S = states_[static_cast<size_t>(slot)][l];
    }
    void write_state(int slot, const RecurrentState& state) override {
        if (model_->config.is_transformer()) {
            for (size_t l = 0; l < state.layers.size(); ++l)
                fill_cache(caches_[static_cast<size_t>(slot)][l], state.layers[l].K, state.layers[l].V,
                           state.layers[l].K.size());
            return;
        }
        for (size_t l = 0; l < state.layers.size(); ++l) states_[static_cast<size_t>(slot)][l] = state.layers[l].S;
    }
    // A fork copies slot to slot, without a host copy of the whole state in between.
    void copy_state(int from, int to, int64_t position) override {
        const size_t L = static_cast<size_t>(model_->config.n_layers);
        if (model_->config.is_transformer()) {
            const size_t n = static_cast<size_t>(position) * static_cast<size_t>(model_->config.key_dim);
            for (size_t l = 0; l < L; ++l) {
                const KvCache& source = caches_[static_cast<size_t>(from)][l];
                fill_cache(caches_[static_cast<size_t>(to)][l], source.K, source.V, n);
            }
            return;
        }
        for (size_t l = 0; l < L; ++l) states_[static_cast<size_t>(to)][l] = states_[static_cast<size_t>(from)][l];
    }

    // The cache's capacity for `tokens`: an eighth more, in whole blocks. A cache restored or forked
    // at its length would otherwise be reallocated at its first decoding step, the old buffer
    // freed beside the new one: with a batch of forks, freed memory the heap kept (a twin at 4096
    // tokens × 16 peaked 0.3–0.5 GB above what its caches hold).
    static size_t kv_capacity(size_t tokens) { return (tokens + tokens / 8 + kKvBlock - 1) / kKvBlock * kKvBlock; }

    // cache = the first `n` floats of K and V (n = tokens · H·D), with kv_capacity's room.
    void fill_cache(KvCache& cache, const std::vector<float>& K, const std::vector<float>& V, size_t n) const {
        const size_t width = static_cast<size_t>(model_->config.key_dim);
        const size_t size = kv_capacity(n / width) * width;
        cache = KvCache();  // the old buffers go before the new ones are made
        cache.K.resize(size);
        cache.V.resize(size);
        std::copy(K.begin(), K.begin() + static_cast<std::ptrdiff_t>(n), cache.K.begin());
        std::copy(V.begin(), V.begin() + static_cast<std::ptrdiff_t>(n), cache.V.begin());
    }

    // ---- ops ------------------------------------------------------------------------------------
    Rows scratch(Scratch which, int64_t rows, int64_t width) override {
        std::vector<float>& buffer = scratch_[static_cast<size_t>(which)];
        buffer.resize(static_cast<size_t>(rows * width));
        return {buffer.data(), rows, width};
    }

    void embed(std::span<const int32_t> tokens, float scale, Rows x) override {
        const int64_t d = x.width;
        for (size_t t = 0; t < tokens.size(); ++t) {
            float* row = x.data + static_cast<int64_t>(t) * d;
            model_->weights.embed.read_f32(static_cast<int64_t>(tokens[t]) * d, d, row);  // either storage
            for (int64_t j = 0; j < d; ++j) row[j] *= scale;
        }
    }

    void rms_norm(Rows x, int layer, Weight weight, double eps, Rows y) override {
        cpu::rms_norm_rows(x.data, y.data, static_cast<int>(x.count), static_cast<int>(x.width),
                           model_weight(*model_, layer, weight), eps);
    }

    void linear(Rows x, int layer, Weight weight, Rows y, bool accumulate) override {
        cpu::linear(x.data, x.count, x.width, model_weight(*model_, layer, weight), y.data, accumulate, y.width);
    }

    void gated_retention(const RetentionCall& call, Rows q, Rows k, Rows v, Rows g, Rows y) override {
        for (const SequenceSlice& slice : call.sequences) retain_sequence(call, slice, q, k, v, y);
        for (int64_t i = 0; i < y.count * y.width; ++i) y.data[i] *= cpu::silu(g.data[i]);
    }

    void glu(Rows a, Rows b, Activation activation) override {
        const bool gelu = activation == Activation::Gelu;
        for (int64_t i = 0; i < a.count * a.width; ++i)
            a.data[i] = (gelu ? cpu::gelu(a.data[i]) : cpu::silu(a.data[i])) * b.data[i];
    }

    void gather_rows(Rows x, std::span<const int64_t> rows, Rows y) override {
        for (size_t i = 0; i < rows.size(); ++i)
            std::memcpy(y.data + static_cast<int64_t>(i) * x.width, x.data + rows[i] * x.width,
                        sizeof(float) * static_cast<size_t>(x.width));
    }

    void download(Rows x, float* host) override {
        std::memcpy(host, x.data, sizeof(float) * static_cast<size_t>(x.count * x.width));
    }

    // ---- the Transformer twin's attention --------------------------------------------------------

    void attention(const AttentionCall& call, Rows q, Rows k, Rows v, Rows y) override {
        const ModelConfig& c = model_->config;
        std::vector<cpu::AttentionInputs> inputs;  // one per sequence; each slot's cache is its own
        for (const SequenceSlice& slice : call.sequences) {
            rotate_slice(slice, q, k);
            const KvCache& cache = append_kv(slice, call.layer, k, v);
            cpu::AttentionInputs in;
            in.q = q.data + slice.first_row * q.width;
            in.ldq = q.width;
            in.K = cache.K.data();
            in.V = cache.V.data();
            in.y = y.data + slice.first_row * y.width;
            in.ldy = y.width;
            in.position = slice.position;
            in.T = slice.length;
            in.n_heads = c.n_heads;
            in.head_dim = c.head_dim_k();
            inputs.push_back(in);
        }
        cpu::attention_forward(inputs, call.form == Form::Recurrent);
    }

    // Writes the slice's rotated k and v rows into its slot's cache of this layer at
    // [position, position + T), growing the cache in blocks of kKvBlock tokens, by at least an eighth
    // (host_state_peak_bytes in cost.h counts that headroom; by half, a cache restored at its length
    // took 1.5× its size at the first decoding step). The copies an eighth costs are ~8 rows a token,
    // against the whole cache that each decoding step's attention reads.
    const KvCache& append_kv(const SequenceSlice& slice, int layer, Rows k, Rows v) {
        KvCache& cache = caches_[static_cast<size_t>(slice.slot)][static_cast<size_t>(layer)];
        const size_t width = static_cast<size_t>(k.width);  // H·D
        const size_t needed = static_cast<size_t>(slice.position + slice.length);
        const size_t capacity = cache.K.size() / width;
        if (needed > capacity) {
            const size_t tokens = std::max(kv_capacity(needed), kv_capacity(capacity));
            cache.K.resize(tokens * width);
            cache.V.resize(tokens * width);
        }
        const size_t at = static_cast<size_t>(slice.position) * width, n = static_cast<size_t>(slice.length) * width;
        std::memcpy(cache.K.data() + at, k.data + slice.first_row * k.width, sizeof(float) * n);
        std::memcpy(cache.V.data() + at, v.data + slice.first_row * v.width, sizeof(float) * n);
        return cache;
    }

    // ---- retention of one sequence, head by head ------------------------------------------------

    // y rows of the slice = RMSNorm_head(retention) · w_head (the gate is applied by the caller).
    void retain_sequence(const RetentionCall& call, const SequenceSlice& slice, Rows q, Rows k, Rows v, Rows y) {
        const ModelConfig& c = model_->config;
        const int Dk = c.head_dim_k(), Dv = c.head_dim_v();
        const Tensor& head_norm = model_->weights.layers[static_cast<size_t>(call.layer)].head_norm;
        std::vector<float>& S = states_[static_cast<size_t>(slice.slot)][static_cast<size_t>(call.layer)];
        cpu::HeadInputs in;
        in.T = slice.length;
        in.Dk = Dk;
        in.Dv = Dv;
        std::vector<float> o_head(static_cast<size_t>(in.T) * Dv);  // (T, Dv)
        rotate_slice(slice, q, k);
        for (int hd = 0; hd < c.n_heads; ++hd) {
            gather_head(slice, q, k, v, hd, in);
            const double gamma = gamma_[static_cast<size_t>(hd)];
            const cpu::HeadState hs{S.data() + static_cast<size_t>(hd) * Dk * Dv,
                                    slice.row_sums.empty() ? 0.0 : slice.row_sums[static_cast<size_t>(hd)]};
            const std::vector<double> divisor =
                cpu::retention_forward(c.family, call.form, call.chunk, gamma, in, hs, o_head.data());
            if (call.record) record(*call.record, gamma, in, hs, divisor, hd);
            cpu::advance_state(c.family, gamma, in, hs);
            for (int t = 0; t < in.T; ++t) {
                float* dst = y.data + (slice.first_row + t) * y.width + static_cast<int64_t>(hd) * Dv;
                std::memcpy(dst, o_head.data() + static_cast<size_t>(t) * Dv, sizeof(float) * static_cast<size_t>(Dv));
                cpu::rms_norm_rows(dst, 1, Dv, head_norm, call.head_norm_eps);
            }
        }
    }

    // The slice's q and k rows in place: the family's scale, then rotated at absolute positions.
    void rotate_slice(const SequenceSlice& slice, Rows q, Rows k) const {
        const ModelConfig& c = model_->config;
        const QKScale scale = qk_scale(c);
        const cpu::RotaryShape shape{1, slice.length, c.n_heads, c.head_dim_k()};
        const float* theta = model_->weights.rotary_theta.data();
        cpu::rotary_forward<float>(q.data + slice.first_row * q.width, shape, theta, rotary_pairs(c.family), scale.q,
                                   slice.position);
        cpu::rotary_forward<float>(k.data + slice.first_row * k.width, shape, theta, rotary_pairs(c.family), scale.k,
                                   slice.position);
    }

    // Head hd's rotated q and k, and v, of the slice, contiguous.
    void gather_head(const SequenceSlice& slice, Rows q, Rows k, Rows v, int hd, cpu::HeadInputs& in) const {
        const int T = in.T, Dk = in.Dk, Dv = in.Dv;
        in.q.resize(static_cast<size_t>(T) * Dk);
        in.k.resize(in.q.size());
        in.v.resize(static_cast<size_t>(T) * Dv);
        for (int t = 0; t < T; ++t) {
            const int64_t row = slice.first_row + t;
            std::memcpy(in.q.data() + static_cast<size_t>(t) * Dk, q.data + row * q.width + static_cast<int64_t>(hd) * Dk,
                        sizeof(float) * static_cast<size_t>(Dk));
            std::memcpy(in.k.data() + static_cast<size_t>(t) * Dk, k.data + row * k.width + static_cast<int64_t>(hd) * Dk,
                        sizeof(float) * static_cast<size_t>(Dk));
            std::memcpy(in.v.data() + static_cast<size_t>(t) * Dv, v.data + row * v.width + static_cast<int64_t>(hd) * Dv,
                        sizeof(float) * static_cast<size_t>(Dv));
        }
    }

    void record(RetentionRecord& rec, double gamma, const cpu::HeadInputs& in, const cpu::HeadState& hs,
                const std::vector<double>& divisor, int hd) const {
        const ModelConfig& c = model_->config;
        const int T = in.T;
        if (rec.state_norms) {
            const std::vector<float> norms = cpu::state_norms_per_token(c.family, gamma, in, hs);
            for (int t = 0; t < T; ++t) rec.state_norms[static_cast<size_t>(t) * c.n_heads + hd] = norms[static_cast<size_t>(t)];
        }
        if (rec.scores && hd >= rec.score_head_begin && hd < rec.score_head_begin + rec.score_head_count)
            cpu::retention_scores(gamma, in, divisor,
                                  rec.scores + static_cast<size_t>(hd - rec.score_head_begin) * T * T);
    }

    std::vector<double> gamma_;                            // (H)
    std::vector<std::vector<std::vector<float>>> states_;  // slot × layer × (H, Dk, Dv); RetNet
    std::vector<std::vector<KvCache>> caches_;             // slot × layer; the twin
    std::array<std::vector<float>, static_cast<size_t>(Scratch::Count)> scratch_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model) {
    if (!model) throw Error("no model");
    return std::make_unique<CpuBackend>(std::move(model));
}

}  // namespace retnet
