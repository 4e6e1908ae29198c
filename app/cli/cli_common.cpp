// SPDX-License-Identifier: GPL-3.0-or-later
#include "cli_common.h"

#include <cerrno>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <filesystem>
#include <limits>
#include <set>

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/intervention.h"
#include "retnet/memory_limit.h"
#include "retnet/safetensors.h"
#include "signal_request.h"

namespace retnet::cli {
namespace fs = std::filesystem;

namespace {
fs::path executable_dir() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : exe.parent_path();
}
}  // namespace

std::string default_model_dir() {
    if (const char* env = std::getenv("RETNET_DEFAULT_MODEL"); env && *env) return env;
    const fs::path exe_dir = executable_dir();
    for (const fs::path& candidate :
         {exe_dir / "../../resources/models/default", exe_dir / "../resources/models/default",
          exe_dir / "../share/retnet-studio/models/default"}) {
        std::error_code ec;
        if (fs::exists(candidate / "config.json", ec)) return fs::weakly_canonical(candidate, ec).string();
    }
    return "";
}

std::string model_dir_or_default(const std::string& dir) {
    if (!dir.empty()) return dir;
    const std::string bundled = default_model_dir();
    if (bundled.empty())
        throw Error("no --model given and no bundled default model found (looked in $RETNET_DEFAULT_MODEL, "
                    "resources/models/default next to the build and share/retnet-studio/models/default)");
    return bundled;
}

Model load_model_interruptible(const std::string& dir, WeightStorage storage) {
    // A large model takes seconds to read, and SIGINT's default action would end the process
    // without a word; the loader polls the flag before each tensor.
    const InterruptGuard interrupt;
    Model model = load_model(dir, interrupt.progress(), storage);
    interrupt.check();
    return model;
}

std::shared_ptr<const Model> load_model_edited(const std::string& dir_option, const InterventionText& text) {
    const std::string dir = model_dir_or_default(dir_option);
    const Interventions edits = parse_interventions(text.mute, text.gamma);
    check_model_memory(dir, edits.empty() ? 1 : 2, WeightStorage::AsStored);  // an edited model is a second copy
    // bf16 weights stay bf16 (half the memory; the CPU backend streams them, make_backend widens
    // them for other devices).
    Model model = load_model_interruptible(dir, WeightStorage::AsStored);
    note_weights_held(model.weight_bytes());
    if (edits.empty()) return std::make_shared<const Model>(std::move(model));
    auto edited = std::make_shared<const Model>(apply_interventions(model, edits));
    std::fprintf(stderr, "retnet: interventions: %s\n", describe(edits).c_str());
    return edited;
}

std::unique_ptr<Backend> make_backend_option(const std::string& device, std::shared_ptr<const Model> model) {
    const InterruptGuard interrupt;  // the copy to a device cannot be polled: a Ctrl-C is said after it
    std::string notice;
    auto backend = make_backend_or_cpu(device, std::move(model), &notice);
    if (!notice.empty()) std::fprintf(stderr, "retnet: %s\n", notice.c_str());
    interrupt.check();
    return backend;
}

namespace {
std::atomic<bool> g_interrupted{false};
std::atomic<int> g_signal{0};          // what raised g_interrupted
std::atomic<int> g_guards{0};  // guards alive; only the main thread makes them, the handler reads it
char g_early_line[64] = "retnet: cancelled\n";  // named before the handler is installed
std::atomic<const char*> g_cancelled_line{g_early_line};
// Whether the cancel has been said, by the command or by the handler: signals after it end the
// process without another line (before, a burst of Ctrl-C and SIGTERM wrote it two or three times:
// the handler ran in several threads at once, or after the command had said it).
enum CancelSaid : int { kNotSaid, kHandlerWriting, kSaid };
std::atomic<int> g_cancel_said{kNotSaid};

// The first SIGTERM's time (signal_request.h): two at once, as `timeout` sends them, ended bench and
// cost before they printed what they had measured, in a third of the runs.
std::atomic<int64_t> g_first_term_ns{0};

// Async-signal-safe only: atomics, strlen, clock_gettime(2), write(2), _exit(2). A second SIGINT
// does not end the process at once: `retnet train --gpus N` passes a terminal's Ctrl-C on to ranks
// that got it too. A second SIGTERM does, from 100 ms after the first.
extern "C" void retnet_cli_on_signal(int sig) {
    const bool again = sig == SIGTERM && classify_signal(g_first_term_ns) == SignalRequest::Again;
    if (g_guards.load() > 0 && !again) {
        int none = 0;  // the first signal names the request (and the exit status): a SIGINT after a SIGTERM is 143
        g_signal.compare_exchange_strong(none, sig);
        g_interrupted.store(true);
        return;
    }
    int not_said = kNotSaid;
    if (g_cancel_said.compare_exchange_strong(not_said, kHandlerWriting)) {
        const char* line = g_cancelled_line.load();
        const ssize_t ignored = ::write(STDERR_FILENO, line, std::strlen(line));
        (void)ignored;
        g_cancel_said.store(kSaid);
    } else {
        // Another thread's handler is writing the line: ending the process now would cut it off.
        while (g_cancel_said.load() == kHandlerWriting) {
        }
    }
    ::_exit(128 + sig);
}
}  // namespace

void install_interrupt_handler(const char* command) {
    // Called before the libraries have started: plain byte copies into the line. A command's name
    // is a short lowercase word; anything else ("--version", a typo) stays out of it.
    const size_t length = command ? std::strlen(command) : 0;
    if (length > 0 && length < 32 && std::all_of(command, command + length, [](char c) { return c >= 'a' && c <= 'z'; })) {
        char* end = g_early_line;
        for (const char* part : {"retnet ", command, ": cancelled\n"}) end = ::stpcpy(end, part);
    }
    struct sigaction action {};
    action.sa_handler = retnet_cli_on_signal;
    sigemptyset(&action.sa_mask);  // one handler at a time: a SIGTERM does not interrupt the SIGINT's
    sigaddset(&action.sa_mask, SIGINT);
    sigaddset(&action.sa_mask, SIGTERM);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
}

void name_interrupted_command(const std::string& command) {
    // No std::string: the handler may read the line after exit() has run the static destructors.
    static char line[64];
    const std::string text = "retnet " + command + ": cancelled\n";
    if (text.size() >= sizeof line || g_cancelled_line.load() == line) return;
    std::memcpy(line, text.c_str(), text.size() + 1);
    g_cancelled_line.store(line);
}

int cancelled_after_whole_output(const char* command, bool json) {
    std::fflush(stdout);
    std::fprintf(stderr, "retnet %s: cancelled after the %s was complete (it is printed whole)\n", command,
                 json ? "report" : "table");
    return cancelled_status();
}

int cancelled_status() {
    g_cancel_said.store(kSaid);  // called as the command has said its cancel
    const int sig = g_signal.load();
    return 128 + (sig != 0 ? sig : SIGINT);
}

InterruptGuard::InterruptGuard() {
    if (g_guards.load() == 0) {  // an inner guard keeps a signal the outer one saw
        g_interrupted.store(false);
        g_first_term_ns.store(0);
        g_signal.store(0);
    }
    g_guards.fetch_add(1);
}
InterruptGuard::~InterruptGuard() { g_guards.fetch_sub(1); }
const std::atomic<bool>& InterruptGuard::flag() const { return g_interrupted; }
std::atomic<bool>& InterruptGuard::flag() { return g_interrupted; }
void InterruptGuard::check() const {
    if (raised()) throw Cancelled();
}
ProgressCallback InterruptGuard::progress() const {
    return [](double) { return !g_interrupted.load(); };
}
std::function<bool()> InterruptGuard::cancelled() const {
    return [] { return g_interrupted.load(); };
}

uint64_t forward_memory_bytes(const ModelConfig& c, int64_t T, Form form, int chunk) {
    const auto t = static_cast<uint64_t>(std::max<int64_t>(T, 0));
    const uint64_t span = form == Form::Parallel ? t : form == Form::Chunkwise ? std::min<uint64_t>(t, chunk > 0 ? chunk : c.chunk_size) : 1;
    const uint64_t per_token = static_cast<uint64_t>(c.vocab_size) + 16ull * c.d_model + 4ull * c.ffn_dim +
                               2ull * c.key_dim + 2ull * c.value_dim;
    return saturating_sum({saturating_product({t, span, static_cast<uint64_t>(c.n_heads), 4}),
                           saturating_product({t, per_token, 4})});
}

namespace {
std::atomic<uint64_t> g_weights_held{0};  // note_weights_held's
}  // namespace

void note_weights_held(uint64_t bytes) { g_weights_held.store(bytes); }

void check_forward_memory(const ModelConfig& c, int64_t T, Form form, int chunk, const std::string& what,
                          uint64_t extra_bytes) {
    const uint64_t weights = g_weights_held.load();
    check_memory(saturating_sum({forward_memory_bytes(c, T, form, chunk), extra_bytes, weights}),
                 weights > 0 ? what + " beside the model's " + format_bytes(weights) + " of weights" : what);
}

void check_prompt_memory(const ModelConfig& config, int64_t T, Form form, int chunk) {
    const std::string what = "the " + std::string(form_name(form)) + " form over a prompt of " + std::to_string(T) + " tokens";
    try {
        check_forward_memory(config, T, form, chunk, what);
    } catch (const Error& e) {
        if (form != Form::Parallel) throw;
        throw Error(std::string(e.what()) + "; --mode chunkwise needs far less");
    }
}

uint64_t estimated_weight_bytes(const ModelConfig& c) {
    const auto d = static_cast<uint64_t>(c.d_model);
    const uint64_t per_layer = saturating_sum({saturating_product({d, 2ull * c.key_dim + 2ull * c.value_dim}),
                                               saturating_product({static_cast<uint64_t>(c.value_dim), d}),
                                               saturating_product({3, d, static_cast<uint64_t>(c.ffn_dim)})});
    return saturating_product({4, saturating_sum({saturating_product({2, static_cast<uint64_t>(c.vocab_size), d}),
                                                  saturating_product({static_cast<uint64_t>(c.n_layers), per_layer})})});
}

namespace {
// The bytes the weights of `dir` take once loaded with `storage`: the config's float32 estimate,
// halved where the checkpoint stores every matrix as BF16 and they are kept so. From the config,
// not a sum over the header: a stray tensor or a shape the config disagrees with is then named by
// load_model, not hidden behind a memory refusal of its size.
uint64_t loaded_weight_bytes(const std::string& dir, const ModelConfig& config, WeightStorage storage) {
    const uint64_t f32 = estimated_weight_bytes(config);
    if (storage != WeightStorage::AsStored) return f32;
    try {
        const SafetensorsSet set = SafetensorsSet::open_directory(dir);
        bool matrices = false;
        for (const std::string& name : set.names()) {
            const TensorInfo& t = set.info(name);
            if (t.shape.size() != 2) continue;
            if (t.dtype != DType::BF16) return f32;
            matrices = true;
        }
        return matrices ? f32 / 2 : f32;
    } catch (const Error&) {
        return f32;  // load_model names what is wrong with the header
    }
}
}  // namespace

void check_model_memory(const std::string& dir, uint64_t copies, WeightStorage storage, uint64_t held_beside) {
    const fs::path config = fs::path(dir) / "config.json";
    std::error_code ec;
    if (!fs::is_regular_file(config, ec)) return;  // load_model says what is missing
    const uint64_t bytes = saturating_product({copies, loaded_weight_bytes(dir, load_config(config.string()), storage)});
    // "the weights … needs" would not agree
    check_memory(saturating_sum({bytes, held_beside}),
                 "loading the weights of " + dir +
                     (held_beside > 0 ? " (beside the " + format_bytes(held_beside) + " of weights already held)" : ""));
}

std::string shown(const std::string& text) { return Error(text).what(); }

bool is_model_write_leftover(const std::string& name) {
    if (!name.ends_with(".tmp")) return false;
    const std::string file = name.substr(0, name.size() - 4);
    return file == "config.json" || file == "model.safetensors" || file == "tokenizer.model" || file == "training.json";
}

void remove_model_write_leftovers(const std::string& dir) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
        if (is_model_write_leftover(entry.path().filename().string())) ::unlink(entry.path().c_str());
}

std::string first_entry_besides_leftovers(const std::string& out) {
    remove_dead_output_probes(out);
    std::error_code ec;
    for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec))
        if (std::string name = it->path().filename().string(); !is_model_write_leftover(name)) return name;
    if (ec) throw Error("--out " + out + ": " + ec.message());
    return "";
}

std::string json_text(const nlohmann::json& value, int indent) {
    return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
// A pipe or socket whose reader has gone says so itself (POLLERR), whatever errno holds by now.
bool reader_gone(int fd) {
    pollfd p{fd, POLLOUT, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLERR) != 0;
}
}  // namespace

namespace {
// Why a write to `fd` failed when its errno is gone: the reader left, /dev/full, a file at the size
// limit (`ulimit -f`), a full file system, or EIO.
int probable_write_error(int fd) {
    if (reader_gone(fd)) return EPIPE;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return EIO;
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 7) return ENOSPC;  // /dev/full
    if (!S_ISREG(st.st_mode)) return EIO;
    rlimit limit{};
    if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        static_cast<rlim_t>(st.st_size) >= limit.rlim_cur)
        return EFBIG;
    struct statvfs fs {};
    if (::fstatvfs(fd, &fs) == 0 && fs.f_bavail == 0) return ENOSPC;
    return EIO;
}
}  // namespace

int stdout_error() {
    static int first_error = 0;  // the reason of the first failure; later flushes may not repeat it
    if (first_error != 0) return first_error;
    errno = 0;
    const bool flushed = std::fflush(stdout) == 0;
    if (flushed && !std::ferror(stdout)) return 0;
    // A printf larger than stdio's buffer writes straight through: when that write failed, the
    // flush finds nothing left to write and sets no errno, though the error flag stays.
    first_error = errno != 0 ? errno : probable_write_error(::fileno(stdout));
    return first_error;
}

void check_stdout() {
    if (const int error = stdout_error()) throw StdoutFailed{error};
}

void check_stdout_reader() {
    if (reader_gone(STDOUT_FILENO)) throw StdoutFailed{EPIPE};
}

void check_dtype_for_device(const std::string& dtype, const std::string& device) {
    if (dtype == "bf16" && device == "reference")
        throw Error("--dtype bf16 with --device reference: the reference backend computes in double from float32 "
                    "weights; use --device cpu or cuda for bf16");
}

std::shared_ptr<const Model> apply_dtype(const std::string& dtype, std::string& device, std::shared_ptr<const Model> model) {
    if (dtype == "stored") return model;
    const bool bf16 = dtype == "bf16";
    if (is_gpu_device(device)) {
        device = bf16 ? "cuda-bf16" : "cuda";
        return model;
    }
    const InterruptGuard interrupt;  // a copy of every weight: seconds for a large model
    if (!bf16) {
        auto widened = with_f32_weights(std::move(model));
        interrupt.check();
        return widened;
    }
    return with_bf16_matrices(std::move(model), interrupt.cancelled());
}

std::unique_ptr<Backend> make_backend_at_dtype(const std::string& dtype, const std::string& device,
                                               std::shared_ptr<const Model> model) {
    std::string chosen = device;
    auto converted = apply_dtype(dtype, chosen, std::move(model));  // a GPU's: only the device's name changes
    auto backend = make_backend_option(chosen, converted);
    // On the CPU the precision asked of the GPU is kept: --dtype's, or cuda-bf16's bf16
    const std::string on_cpu = dtype == "stored" && chosen == "cuda-bf16" ? "bf16" : dtype;
    if (on_cpu != "stored" && is_gpu_device(chosen) && !backend->on_device()) {
        backend.reset();  // fell back: the CPU backend holds the weights as stored
        std::string cpu = "cpu";
        backend = make_backend_option(cpu, apply_dtype(on_cpu, cpu, std::move(converted)));
    }
    note_weights_held(backend->model().weight_bytes());  // the copy the backend computes with
    return backend;
}

void check_batch_fits(const Backend& backend, int batch, const std::string& option) {
    if (batch <= backend.max_slot_count()) return;
    throw Error(option + " " + std::to_string(batch) + ": the " + backend.name() + " backend decodes at most " +
                std::to_string(backend.max_slot_count()) + " sequence" + (backend.max_slot_count() == 1 ? "" : "s") +
                " at once; use --device cpu or cuda for batches");
}

std::vector<int> parse_positive_list(const std::string& option, const std::string& text) {
    // A number too large for an int is said to be one (not "expects integers")
    for (size_t begin = 0; begin <= text.size();) {
        const size_t end = std::min(text.find(',', begin), text.size());
        const std::string item = text.substr(begin, end - begin);
        const bool digits =
            !item.empty() && std::all_of(item.begin(), item.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
        const size_t first_nonzero = item.find_first_not_of('0');  // leading zeros do not make 0001 large
        const std::string value = first_nonzero == std::string::npos ? "0" : item.substr(first_nonzero);
        if (digits && (value.size() > 10 || std::stoll(value) > std::numeric_limits<int32_t>::max()))
            throw Error(option + " value " + item + " is out of range (at most " +
                        std::to_string(std::numeric_limits<int32_t>::max()) + ")");
        begin = end + 1;
    }
    std::vector<int> out;
    try {
        for (const int32_t T : parse_token_list(text)) out.push_back(T);
    } catch (const Error&) {
        throw Error(option + " expects comma-separated integers, got '" + text + "'");
    }
    for (const int T : out)
        if (T < 1) throw Error(option + " must be positive, got " + std::to_string(T));
    // each value is one measurement: a repeat would measure it again under another row
    std::set<int> seen;
    for (const int T : out)
        if (!seen.insert(T).second) throw Error(option + " lists " + std::to_string(T) + " twice");
    return out;
}

void require_one_of(const std::string& option, const std::string& value, const std::vector<std::string>& known) {
    if (std::find(known.begin(), known.end(), value) != known.end()) return;
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    throw Error("option " + option + " must be one of " + list + ", got '" + value + "'");
}

Architecture parse_architecture(const std::string& arch) {
    require_one_of("--arch", arch, {"retnet", "transformer"});
    return arch == "retnet" ? Architecture::RetNet : Architecture::Transformer;
}

namespace {
bool g_progress_line_open = false;  // a terminal line drawn without its newline yet
}  // namespace

void end_progress_line() {
    if (!g_progress_line_open) return;
    std::fputs("\n", stderr);
    std::fflush(stderr);
    g_progress_line_open = false;
}

TokenProgressLine::TokenProgressLine(std::string label, double quiet_seconds)
    : label_(std::move(label)),
      terminal_(::isatty(::fileno(stderr)) != 0),
      quiet_seconds_(quiet_seconds),
      start_(std::chrono::steady_clock::now()) {}

void TokenProgressLine::show(int64_t done, int64_t total) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = done > 0 ? elapsed * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
    if (elapsed < quiet_seconds_) return;
    const int64_t tenth = done * 10 / std::max<int64_t>(1, total);
    if (!terminal_ && tenth <= last_tenth_) return;
    if (terminal_ && done < total && elapsed - last_drawn_ < 0.1) return;
    last_drawn_ = elapsed;
    char eta_text[32] = "";  // none before the first piece is done
    if (done > 0) std::snprintf(eta_text, sizeof eta_text, ", ETA %.0f s", eta);
    std::fprintf(stderr, "%s%s: %lld/%lld tokens (%lld%%), %.0f s%s%s", terminal_ ? "\r" : "", label_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total),
                 static_cast<long long>(done * 100 / std::max<int64_t>(1, total)), elapsed, eta_text,
                 terminal_ ? (done >= total ? "\n" : "   ") : "\n");
    std::fflush(stderr);
    g_progress_line_open = terminal_ && done < total;
    last_tenth_ = tenth;
}

}  // namespace retnet::cli
