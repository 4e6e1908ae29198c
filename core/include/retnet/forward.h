// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The three computation forms of retention and the engine's backend interface.
//
// A Backend runs a Model and owns its recurrent state. forward() consumes tokens starting at the
// current state position and advances the state, whatever the form: a prompt can be prefilled in
// the parallel or chunkwise form and then continued token by token in the recurrent form
// (state handoff). Backends: the naive double-precision reference (core/src/reference), the fast
// float CPU backend (core/src/cpu) and the CUDA backend (kernels/).
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "retnet/best_logits.h"
#include "retnet/model.h"
#include "retnet/tensor.h"

namespace retnet {

enum class Form { Parallel, Recurrent, Chunkwise };

const char* form_name(Form form);
Form parse_form(const std::string& name);  // "parallel" | "recurrent" | "chunkwise"; throws otherwise

struct ForwardOptions {
    Form form = Form::Parallel;
    int chunk_size = 0;  // chunkwise only; 0 = the config's chunk_size
    // Replaces config.norm_eps in the per-head norm only (the equivalence view's "eps = 0" switch).
    std::optional<double> head_norm_eps;
    // Polled on the calling thread before each layer: true ends the call with retnet::Cancelled
    // within one layer's time (a long prefill need not run to its end after Ctrl-C). The slots the
    // call ran are then left empty, since their states had been advanced in some layers only.
    std::function<bool()> cancelled;
};

// The recurrent state of all layers, K-first for both families:
//   fla:        S = Σ_m γ^(n−m) k̃_m v_mᵀ            (raw, no 1/√Dk: q carries it)
//   torchscale: S = Σ_m γ^(n−m) k̃_m v_mᵀ / √r_n     (k̃ carries 1/√Dk; r_n = Σ_{i≤n} γ^i in `scale`)
// The Transformer twin's "state" is its KV cache instead, which grows with the position.
struct LayerState {
    std::vector<float> S;      // (H, Dk, Dv); empty for the twin
    std::vector<double> scale; // (H) torchscale r_n; unused (empty) for fla
    std::vector<float> K;      // (position, H, D) the twin's rotated keys; empty for RetNet
    std::vector<float> V;      // (position, H, D) the twin's values; empty for RetNet
};

struct RecurrentState {
    std::vector<LayerState> layers;  // L
    int64_t position = 0;            // tokens consumed so far

    bool empty() const { return position == 0; }
    // Bytes the state holds in host memory.
    int64_t bytes() const;
};

RecurrentState make_empty_state(const ModelConfig& config);
// Throws retnet::Error unless `state` has the layer count and per-layer sizes of `config`'s state
// at its position (what every backend checks before restore()).
void check_state_shape(const ModelConfig& config, const RecurrentState& state);

// Opt-in introspection. Nothing is computed or copied unless requested; results are filled by
// forward() for the tokens of that call.
struct Introspection {
    bool want_layer_outputs = false;  // -> layer_outputs
    bool want_state_norms = false;    // -> state_norms
    int score_layer = -1;             // >= 0 with score_head: -> scores
    int score_head = -1;
    bool want_all_head_scores = false;  // with score_layer >= 0 only: every head of that layer
    int qkv_layer = -1;                 // >= 0: -> q, k, v of that layer

    std::vector<Tensor> layer_outputs;  // L × (T, d): residual stream after each layer
    Tensor state_norms;                 // (T, L, H): ‖S‖_F after each token, in the family's scaling
    Tensor scores;                      // (T, T) or (H, T, T): signed retention scores after decay and
                                        // the form's normalization; row n = query n (within the call)
    // The projections of layer qkv_layer as they enter the retention op: q and k before the
    // family's scale and the rotation to their positions (the op applies both; see
    // retention_inputs() in retnet/analysis.h for them applied).
    Tensor q, k;  // (T, H·Dk)
    Tensor v;     // (T, H·Dv)
};

// Which rows of logits a sequence needs: generation needs only the last one, a prefill for
// introspection none, an evaluation all. Rows not asked for are never projected. LastBest: only
// the last row's best logits (retnet/best_logits.h), selected where the logits are (a GPU sends
// back those instead of the row); its returned tensor has no rows.
enum class LogitRows { All, Last, None, LastBest };

// One sequence of a batch: its new tokens (T ≥ 1, each in [0, V)), the state slot it continues,
// and the logits it wants back.
struct SequenceRequest {
    std::span<const int32_t> tokens;
    int slot = 0;
    LogitRows logits = LogitRows::All;
    // LastBest only: how many (1 … kMaxBestLogits, the same for every request of a batch, which
    // then asks LastBest for all of its sequences) and where they go.
    int best_count = 0;
    BestLogits* best = nullptr;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    virtual const Model& model() const = 0;

    // Runs several independent sequences at once, each from the state of its own slot (distinct
    // slots), and advances those states. Returns, per request, its logits (rows, V) with rows = T,
    // 1 or 0 as asked. Introspection is for a batch of one. Throws retnet::Error on bad input.
    virtual std::vector<Tensor> forward_batch(std::span<const SequenceRequest> batch,
                                              const ForwardOptions& options,
                                              Introspection* introspection = nullptr) = 0;
    // One sequence in slot 0 with every logits row: (T, V).
    Tensor forward(std::span<const int32_t> tokens, const ForwardOptions& options,
                   Introspection* introspection = nullptr);

    // Independent recurrent states; a new backend has one slot. Growing keeps the existing
    // slots and adds empty ones; shrinking drops the highest.
    virtual int slot_count() const = 0;
    virtual void set_slot_count(int slots) = 0;
    // The most slots set_slot_count accepts (the reference backend keeps one): a caller that will
    // decode a batch asks before any work, not after it.
    virtual int max_slot_count() const { return std::numeric_limits<int>::max(); }

    virtual void reset(int slot = 0) = 0;                      // back to the empty state
    virtual RecurrentState snapshot(int slot = 0) const = 0;   // copy of the state (host memory)
    virtual void restore(const RecurrentState& state, int slot = 0) = 0;
    // Slot `to` continues from slot `from`'s state (a fork); a backend may copy it in its own
    // memory instead of through the host.
    virtual void copy_slot(int from, int to) { restore(snapshot(from), to); }
    // Bytes of one element of a Transformer twin's KV cache as this backend holds it (CUDA with
    // bf16 weights keeps a bf16 cache; every other backend float32).
    virtual int kv_cache_element_bytes() const { return 4; }
    // Bytes of device memory in use now as the device reports it (CUDA: the whole GPU's, every
    // process's, from cudaMemGetInfo), or −1 for a backend that runs in host memory.
    virtual int64_t device_memory_in_use() const { return -1; }
    // Whether the weights and states live in a device's memory (a GPU's), not the host's: the host
    // memory checks leave them out, and a timing waits for the device.
    virtual bool on_device() const { return false; }
    // The device's own time for the last forward (ms, by its clock: from the forward's first kernel
    // to its logits, their copy to the host left out), or −1 for a backend without a device clock.
    virtual double last_forward_device_ms() const { return -1.0; }
    // The precision the weights' matrices are computed with: "bf16", "fp32" or "mixed" (some of
    // each). The default reads the model's matrices, as the CPU backend computes with a bf16
    // checkpoint's as stored; a GPU backend says what it converted them to as it uploaded them.
    virtual std::string weights_precision() const;
};

// Backends share the model read-only; each owns its own state.
std::unique_ptr<Backend> make_reference_backend(std::shared_ptr<const Model> model);  // double, naive
std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model);  // float, BLAS, threads

// Devices beyond "cpu" and "reference" (the CUDA backend) register themselves, at start-up or when
// the device loader below loads them, so core never depends on them. A factory throws
// retnet::Error when its device is unusable.
using BackendFactory = std::function<std::unique_ptr<Backend>(std::shared_ptr<const Model>)>;
void register_backend(const std::string& device, BackendFactory factory);
// Devices that live in a module loaded on first use (the CUDA backend, which the CLI and the app
// dlopen so that a run on the CPU never loads cuBLAS): `load` registers them. It runs once, the
// first time a device that is not registered is asked for or the devices are listed (for inference
// or training, retnet/train_device.h), outside the registries' locks.
void set_device_loader(std::function<void()> load);
void load_device_modules();  // runs the loader if it has not run yet; thread-safe
std::vector<std::string> available_devices();
// Throws retnet::Error for an unknown device, listing the known ones.
std::unique_ptr<Backend> make_backend(const std::string& device, std::shared_ptr<const Model> model);
// As make_backend, but falls back to "cpu" when the device cannot be used; `notice` then holds
// the one-line reason ("CUDA unavailable (no device found); using the CPU backend").
std::unique_ptr<Backend> make_backend_or_cpu(const std::string& device,
                                             std::shared_ptr<const Model> model,
                                             std::string* notice);

// Whether a device name (as make_backend takes it: "cuda", "cuda-bf16", the trainer's "cuda-tf32")
// names a GPU rather than the host.
bool is_gpu_device(std::string_view device);

// Validates tokens against the vocabulary and the options against the model (chunk size ≥ 1 …).
void check_forward_inputs(const Model& model, std::span<const int32_t> tokens,
                          const ForwardOptions& options);
// Validates an introspection request against the model (score layer and head in range), for
// every backend alike.
void check_introspection(const ModelConfig& config, const Introspection& introspection);
// Validates a batch: not empty, each sequence's tokens and slot (in [0, slots), distinct), and
// introspection only with a single sequence.
void check_batch(const Model& model, std::span<const SequenceRequest> batch, int slots,
                 const ForwardOptions& options, const Introspection* introspection);
// For a backend that projects every row of a sequence, `all` (T, V): the rows `request` asks for
// (LastBest: the last row's best logits into *request.best, and no rows).
Tensor logits_as_asked(const SequenceRequest& request, Tensor all);
// The chunk size a call runs with: the option's, else the config's.
int effective_chunk_size(const ModelConfig& config, const ForwardOptions& options);

}  // namespace retnet
