// SPDX-License-Identifier: GPL-3.0-or-later
// Form names, state construction, input validation and the backend registry.
#include <algorithm>
#include <map>
#include <mutex>

#include "retnet/error.h"
#include "retnet/forward.h"

#include "device_registry.h"

namespace retnet {

const char* form_name(Form form) {
    switch (form) {
        case Form::Parallel: return "parallel";
        case Form::Recurrent: return "recurrent";
        case Form::Chunkwise: return "chunkwise";
    }
    return "?";
}

Form parse_form(const std::string& name) {
    if (name == "parallel") return Form::Parallel;
    if (name == "recurrent") return Form::Recurrent;
    if (name == "chunkwise") return Form::Chunkwise;
    throw Error("unknown mode '" + name + "' (expected parallel, recurrent or chunkwise)");
}

int64_t RecurrentState::bytes() const {
    int64_t bytes = 0;
    for (const LayerState& l : layers)
        bytes += static_cast<int64_t>((l.S.size() + l.K.size() + l.V.size()) * sizeof(float) +
                                      l.scale.size() * sizeof(double));
    return bytes;
}

RecurrentState make_empty_state(const ModelConfig& config) {
    RecurrentState state;
    const size_t H = static_cast<size_t>(config.n_heads);
    state.layers.resize(static_cast<size_t>(config.n_layers));
    if (config.is_transformer()) return state;  // an empty KV cache
    for (LayerState& layer : state.layers) {
        layer.S.assign(H * static_cast<size_t>(config.head_dim_k()) *
                           static_cast<size_t>(config.head_dim_v()),
                       0.0f);
        if (config.family == Family::TorchScale) layer.scale.assign(H, 0.0);
    }
    return state;
}

void check_state_shape(const ModelConfig& config, const RecurrentState& state) {
    const RecurrentState empty = make_empty_state(config);
    if (state.layers.size() != empty.layers.size())
        throw Error("state has " + std::to_string(state.layers.size()) + " layers, model has " +
                    std::to_string(empty.layers.size()));
    if (state.position < 0) throw Error("state position is negative");
    // The twin's cache holds (position, H, D) keys and values; a RetNet state holds none.
    const size_t kv = config.is_transformer() ? static_cast<size_t>(state.position) * config.key_dim : 0;
    for (size_t l = 0; l < empty.layers.size(); ++l)
        if (state.layers[l].S.size() != empty.layers[l].S.size() ||
            state.layers[l].scale.size() != empty.layers[l].scale.size() || state.layers[l].K.size() != kv ||
            state.layers[l].V.size() != kv)
            throw Error("state of layer " + std::to_string(l) + " does not match the model's shape");
}

void check_forward_inputs(const Model& model, std::span<const int32_t> tokens,
                          const ForwardOptions& options) {
    if (tokens.empty()) throw Error("no tokens to run (the input is empty)");
    const int V = model.config.vocab_size;
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= V)
            throw Error("token id " + std::to_string(tokens[i]) + " at position " +
                        std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) +
                        ")");
    }
    if (options.form == Form::Chunkwise && options.chunk_size < 0)
        throw Error("chunk size must be at least 1 (got " + std::to_string(options.chunk_size) + ")");
    if (options.head_norm_eps && !(*options.head_norm_eps >= 0.0))
        throw Error("head-norm eps must be >= 0");
}

void check_introspection(const ModelConfig& config, const Introspection& intro) {
    if (intro.qkv_layer >= config.n_layers)
        throw Error("q/k/v layer " + std::to_string(intro.qkv_layer) + " is out of range (the model has " +
                    std::to_string(config.n_layers) + " layers)");
    if (config.is_transformer() && (intro.want_state_norms || intro.score_layer >= 0))
        throw Error(std::string("the Transformer twin has no retention state or scores to show (") +
                    (intro.want_state_norms ? "state norms" : "retention scores") + " were asked for)");
    if (intro.score_layer < 0) return;
    if (intro.score_layer >= config.n_layers)
        throw Error("score layer " + std::to_string(intro.score_layer) + " is out of range (the model has " +
                    std::to_string(config.n_layers) + " layers)");
    if (!intro.want_all_head_scores && (intro.score_head < 0 || intro.score_head >= config.n_heads))
        throw Error("score head " + std::to_string(intro.score_head) + " is out of range (the model has " +
                    std::to_string(config.n_heads) + " heads)");
}

// LastBest is all or nothing in a batch, with one count: the rows' selection is one launch.
static void check_best_requests(std::span<const SequenceRequest> batch) {
    const SequenceRequest& first = batch.front();
    for (const SequenceRequest& request : batch) {
        if ((request.logits == LogitRows::LastBest) != (first.logits == LogitRows::LastBest))
            throw Error("a batch asks for the best logits of some sequences only (all or none)");
        if (request.logits != LogitRows::LastBest) continue;
        check_best_count(request.best_count);
        if (request.best_count != first.best_count)
            throw Error("a batch asks for different numbers of best logits (" + std::to_string(first.best_count) +
                        " and " + std::to_string(request.best_count) + ")");
        if (!request.best) throw Error("best logits asked for without a place to put them (internal error)");
    }
}

void check_batch(const Model& model, std::span<const SequenceRequest> batch, int slots,
                 const ForwardOptions& options, const Introspection* intro) {
    if (batch.empty()) throw Error("no sequences to run (the batch is empty)");
    std::vector<bool> used(static_cast<size_t>(std::max(slots, 0)), false);
    for (const SequenceRequest& request : batch) {
        check_forward_inputs(model, request.tokens, options);
        if (request.slot < 0 || request.slot >= slots)
            throw Error("state slot " + std::to_string(request.slot) + " does not exist (the backend has " +
                        std::to_string(slots) + ")");
        if (used[static_cast<size_t>(request.slot)])
            throw Error("state slot " + std::to_string(request.slot) + " appears twice in one batch");
        used[static_cast<size_t>(request.slot)] = true;
    }
    check_best_requests(batch);
    if (intro) {
        if (batch.size() != 1) throw Error("introspection needs a batch of one sequence");
        check_introspection(model.config, *intro);
    }
}

Tensor logits_as_asked(const SequenceRequest& request, Tensor all) {
    const int64_t T = all.dim(0), V = all.dim(1);
    if (request.logits == LogitRows::All || (request.logits == LogitRows::Last && T == 1)) return all;
    if (request.logits == LogitRows::None) return Tensor({0, V});
    const std::span<const float> last(all.data.data() + (T - 1) * V, static_cast<size_t>(V));
    if (request.logits == LogitRows::LastBest) {
        *request.best = select_best_logits(last, request.best_count);
        return Tensor({0, V});
    }
    Tensor row({1, V});
    std::copy(last.begin(), last.end(), row.data.begin());
    return row;
}

std::string Backend::weights_precision() const { return matrices_precision(model()); }

bool is_gpu_device(std::string_view device) { return device.starts_with("cuda"); }

int effective_chunk_size(const ModelConfig& config, const ForwardOptions& options) {
    return options.chunk_size > 0 ? options.chunk_size : config.chunk_size;
}

Tensor Backend::forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                        Introspection* introspection) {
    const SequenceRequest request{tokens, 0, LogitRows::All};
    return std::move(forward_batch({&request, 1}, options, introspection).front());
}

// ---- registry ------------------------------------------------------------------------------

namespace {
std::mutex g_registry_mutex;
std::map<std::string, BackendFactory>& registry() {
    static std::map<std::string, BackendFactory> factories = {
        {"cpu", [](std::shared_ptr<const Model> m) { return make_cpu_backend(std::move(m)); }},
        {"reference",
         [](std::shared_ptr<const Model> m) { return make_reference_backend(std::move(m)); }},
    };
    return factories;
}

std::mutex g_loader_mutex;
std::function<void()> g_device_loader;
bool g_device_loader_ran = false;
}  // namespace

void set_device_loader(std::function<void()> load) {
    std::lock_guard lock(g_loader_mutex);
    g_device_loader = std::move(load);
    g_device_loader_ran = false;
}

void load_device_modules() {
    // Held while the loader runs, so that concurrent callers wait for its registrations; the loader
    // takes the registries' own locks, never this one.
    std::lock_guard lock(g_loader_mutex);
    if (g_device_loader_ran || !g_device_loader) return;
    g_device_loader_ran = true;
    g_device_loader();
}

void register_backend(const std::string& device, BackendFactory factory) {
    std::lock_guard lock(g_registry_mutex);
    registry()[device] = std::move(factory);
}

std::vector<std::string> available_devices() {
    load_device_modules();
    std::lock_guard lock(g_registry_mutex);
    std::vector<std::string> out;
    for (const auto& [name, factory] : registry()) out.push_back(name);
    return out;
}

namespace {

[[noreturn]] void throw_unknown_device(const std::string& device) {
    std::string known;
    for (const std::string& name : available_devices()) known += (known.empty() ? "" : ", ") + name;
    if (device == "cuda")
        throw Error("device 'cuda' is not available: this build has no CUDA backend (known: " + known + ")");
    throw Error("unknown device '" + device + "' (known: " + known + ")");
}

std::unique_ptr<Backend> make_with(const BackendFactory& factory, const std::string& device,
                                   std::shared_ptr<const Model> model) {
    // The CPU and CUDA backends read bf16-held weights; the others get float32 (docs/architecture.md).
    const bool reads_bf16 = device == "cpu" || is_gpu_device(device);
    return factory(reads_bf16 ? std::move(model) : with_f32_weights(std::move(model)));
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& device, std::shared_ptr<const Model> model) {
    const BackendFactory factory = find_registered(g_registry_mutex, registry(), device);
    if (!factory) throw_unknown_device(device);
    return make_with(factory, device, std::move(model));
}

std::unique_ptr<Backend> make_backend_or_cpu(const std::string& device,
                                             std::shared_ptr<const Model> model,
                                             std::string* notice) {
    const BackendFactory factory = find_registered(g_registry_mutex, registry(), device);
    if (!factory && device != "cuda") throw_unknown_device(device);
    try {
        if (!factory) throw_unknown_device(device);  // 'cuda' in a build without it: the CPU's, with the reason
        return make_with(factory, device, model);
    } catch (const Error& e) {
        if (device == "cpu" || device == "reference") throw;
        if (notice) *notice = std::string(e.what()) + "; using the CPU backend";
        return make_cpu_backend(std::move(model));
    }
}

}  // namespace retnet
