// SPDX-License-Identifier: GPL-3.0-or-later
// retnet serve: an OpenAI-compatible completion server (POST /v1/completions with server-sent
// events, GET /v1/models, GET /health) on loopback, built on cpp-httplib. One decode thread runs
// up to --parallel requests together (retnet/batch_generate.h: one slot each, one batched forward
// call per token); more wait in a bounded queue, a full queue answers 503, a client that leaves
// cancels its request. A Transformer twin's request reserves its KV cache at prompt + max_tokens
// when it is admitted (507 when it can never fit, 503 while others hold the room). Its options
// are parsed here. See docs/serve.md.
#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/batch_generate.h"
#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/generate.h"
#include "retnet/json_text.h"
#include "retnet/memory_limit.h"
#include "retnet/model_names.h"
#include "retnet/model_stats.h"
#include "serve_signals.h"

namespace retnet::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct ServeOptions {
    std::string model, name, host = "127.0.0.1", device = "cpu";
    bool allow_remote = false;     // --host other than loopback: the server has no authentication
    int port = 8080;
    int parallel = 4;              // requests decoded together
    int queue = 8;                 // requests waiting beyond those; one more gets 503
    int max_body = 1 << 20;        // bytes of a request body; more gets 413
    int max_tokens = 4096;         // upper bound of a request's max_tokens
    int max_prompt_tokens = 4096;
};

void add_serve_options(CLI::App& app, ServeOptions& o) {
    add_model_option(app, o.model);
    add_text(app, "--model-name", o.name, "the id /v1/models lists")->type_name("ID")->default_str("ORG/NAME or the directory's name");
    add_text(app, "--host", o.host, "address to listen on; other than loopback only with --allow-remote")->type_name("ADDRESS");
    add_flag(app, "--allow-remote", o.allow_remote, "allow a --host that other machines reach (no authentication!)");
    add_int(app, "--port", o.port, 0, 65535, "port to listen on; 0 = any free one (printed)");
    add_device_option(app, o.device);
    add_int(app, "--parallel", o.parallel, 1, 256, "requests decoded together");
    add_int(app, "--queue", o.queue, 0, 4096, "requests waiting beyond those; one more is answered 503");
    add_int(app, "--max-body", o.max_body, 1024, 1 << 30, "largest request body in bytes (more: 413)");
    add_int(app, "--max-tokens", o.max_tokens, 1, 1 << 20, "largest max_tokens a request may ask for");
    add_int(app, "--max-prompt-tokens", o.max_prompt_tokens, 1, 1 << 24, "longest prompt in tokens");
}

// 127.0.0.0/8, ::1 and localhost: only this machine reaches them.
bool is_loopback(const std::string& host) {
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The id under which /v1/models lists the model: ORG/NAME for a Hugging Face cache snapshot,
// else the directory's name.
std::string model_id(const std::string& dir) {
    if (auto name = cached_model_name(dir)) return *name;
    const fs::path p = fs::path(dir).lexically_normal();
    return p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
}

// One request's life: the handler thread fills it, the decode thread streams text into it, the
// handler's content provider drains it.
struct Job {
    std::vector<int32_t> prompt;
    GenerationParams params;
    uint64_t kv_bytes = 0;  // a twin's KV cache at prompt + max_tokens, reserved while it runs or waits
    std::atomic<bool> cancel{false};

    std::mutex mutex;
    std::condition_variable changed;
    std::deque<std::string> pieces;  // text not yet sent
    bool done = false;
    std::string finish_reason, error;
    int64_t completion_tokens = 0;

    void push(std::string text) {
        if (text.empty()) return;
        std::lock_guard lock(mutex);
        pieces.push_back(std::move(text));
        changed.notify_all();
    }
    void finish(std::string reason, int64_t tokens, std::string failure = {}) {
        std::lock_guard lock(mutex);
        done = true;
        finish_reason = std::move(reason);
        completion_tokens = tokens;
        error = std::move(failure);
        changed.notify_all();
    }
    // Waits up to `timeout` for text or the end; moves out what is there.
    std::vector<std::string> take(std::chrono::milliseconds timeout, bool* finished) {
        std::unique_lock lock(mutex);
        changed.wait_for(lock, timeout, [&] { return !pieces.empty() || done; });
        std::vector<std::string> out(std::make_move_iterator(pieces.begin()), std::make_move_iterator(pieces.end()));
        pieces.clear();
        *finished = done;
        return out;
    }
};

const char* finish_reason(StopReason r) {
    switch (r) {
        case StopReason::MaxTokens: return "length";
        case StopReason::Cancelled: return "cancelled";
        default: return "stop";
    }
}

// The model, one decode thread decoding up to `parallel` requests together, and the bounded
// queue in front of it. A Transformer twin's requests reserve their KV caches (Job::kv_bytes)
// within `kv_budget` bytes while they run or wait; a RetNet's states were counted at start.
class Engine {
public:
    Engine(std::unique_ptr<Backend> backend, std::unique_ptr<Tokenizer> tokenizer, int parallel, int queue,
           uint64_t kv_budget)
        : backend_(std::move(backend)), tokenizer_(std::move(tokenizer)), capacity_(parallel + queue),
          kv_budget_(kv_budget), vocab_size_(backend_->model().config.vocab_size),
          kv_element_bytes_(backend_->kv_cache_element_bytes()), encoder_(*backend_, tokenizer_.get()),
          batch_(*backend_, tokenizer_.get(), parallel), thread_([this] { loop(); }) {}
    ~Engine() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }
    // Only reads the tokenizer and the BOS id, so handler threads may call it at any time.
    const Generator& encoder() const { return encoder_; }
    int vocab_size() const { return vocab_size_; }
    // The model is read-only once served: any thread may read it.
    const ModelConfig& config() const { return backend_->model().config; }
    int kv_element_bytes() const { return kv_element_bytes_; }
    uint64_t kv_budget() const { return kv_budget_; }

    enum class Refusal { None, Full, Memory };
    // Full when `parallel + queue` requests are already decoding or waiting; Memory when the job's
    // KV cache does not fit in the budget beside those they reserve (`*reserved` says how much).
    Refusal submit(const std::shared_ptr<Job>& job, uint64_t* reserved) {
        std::lock_guard lock(mutex_);
        *reserved = kv_reserved_;
        if (in_flight_ >= capacity_) return Refusal::Full;
        if (job->kv_bytes > kv_budget_ - kv_reserved_) return Refusal::Memory;
        kv_reserved_ += job->kv_bytes;
        ++in_flight_;
        queue_.push_back(job);
        wake_.notify_one();
        return Refusal::None;
    }
    // Shutdown: the running requests and every waiting one end now (their clients get what was made).
    void cancel_all() {
        std::lock_guard lock(mutex_);
        for (const auto& job : queue_) job->cancel = true;
        for (const auto& job : running_) job->cancel = true;
    }
    json health() const {
        std::lock_guard lock(mutex_);
        return {{"status", "ok"}, {"in_flight", in_flight_}, {"active", running_.size()}, {"peak_active", peak_active_},
                {"parallel", batch_.slots()}, {"capacity", capacity_}, {"served", served_},
                {"cancelled", cancelled_}, {"kv_reserved", kv_reserved_}};
    }

private:
    void loop();
    void join(const std::shared_ptr<Job>& job);
    void finished(const std::shared_ptr<Job>& job);

    std::unique_ptr<Backend> backend_;
    std::unique_ptr<Tokenizer> tokenizer_;
    const int capacity_;
    const uint64_t kv_budget_;
    const int vocab_size_;
    const int kv_element_bytes_;
    const Generator encoder_;
    BatchGenerator batch_;  // the decode thread's only (slots() is constant)
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::vector<std::shared_ptr<Job>> running_;  // in batch_
    int in_flight_ = 0;
    uint64_t kv_reserved_ = 0;  // Σ kv_bytes of the jobs in flight
    size_t peak_active_ = 0;  // most requests decoded together so far
    int64_t served_ = 0, cancelled_ = 0;
    bool stopping_ = false;
    std::thread thread_;  // last: starts once the rest exists
};

// Each turn: waiting requests take the free slots (each prefilled as it joins), then every
// running request advances by one token in one batched forward call.
void Engine::loop() {
    for (;;) {
        std::vector<std::shared_ptr<Job>> joining;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !running_.empty(); });
            if (stopping_) return;
            while (!queue_.empty() && running_.size() < static_cast<size_t>(batch_.slots())) {
                joining.push_back(std::move(queue_.front()));
                queue_.pop_front();
                running_.push_back(joining.back());
            }
            peak_active_ = std::max(peak_active_, running_.size());
        }
        for (const auto& job : joining) join(job);
        batch_.step();
    }
}

void Engine::join(const std::shared_ptr<Job>& job) {
    auto streamed = std::make_shared<std::string>();
    BatchRequest request{job->prompt, job->params, {}, {}, &job->cancel};
    request.on_token = [job, streamed](const TokenEvent& e) {
        *streamed += e.stream_text;
        job->push(e.stream_text);
    };
    request.on_done = [this, job, streamed](const GenerationResult& r, const std::string& error) {
        if (!error.empty()) {
            job->finish("error", 0, error);
        } else {
            // Text held back while it could have been the start of a stop string.
            if (r.text.size() > streamed->size()) job->push(r.text.substr(streamed->size()));
            job->finish(finish_reason(r.stats.stop_reason), static_cast<int64_t>(r.tokens.size()));
        }
        finished(job);
    };
    batch_.add(std::move(request));
}

void Engine::finished(const std::shared_ptr<Job>& job) {
    std::lock_guard lock(mutex_);
    std::erase(running_, job);
    --in_flight_;
    kv_reserved_ -= job->kv_bytes;  // BatchGenerator has freed the cache
    ++(job->finish_reason == "cancelled" ? cancelled_ : served_);
}

// A request the server refuses: HTTP status, OpenAI error type and message.
struct BadRequest {
    int status;
    std::string message, param;
};

// OpenAI's error object: message, type, param (the field at fault, or null), code (null).
json error_object(const std::string& message, const char* type, const std::string& param = {}) {
    return {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}};
}

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& param = {}) {
    const char* type = status >= 500 ? "server_error" : "invalid_request_error";
    res.status = status;
    res.set_content(json_text(json{{"error", error_object(message, type, param)}}), "application/json");
}

bool is_whole(double d) { return std::isfinite(d) && std::floor(d) == d; }

// A JSON number that is a whole number in int64's range (40, or 40.0), or none.
std::optional<int64_t> whole_number(const json& v) {
    if (v.is_number_unsigned()) {
        const auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
        return static_cast<int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    if (!v.is_number_float()) return std::nullopt;
    const double d = v.get<double>();
    constexpr double kTwoTo63 = 9223372036854775808.0;  // the first double past int64's range
    if (!is_whole(d) || d < -kTwoTo63 || d >= kTwoTo63) return std::nullopt;
    return static_cast<int64_t>(d);
}

std::vector<int32_t> request_prompt(const json& body, const Engine& engine, const ServeOptions& o) {
    json prompt = body.value("prompt", json(""));
    // One prompt per request: a string, token ids, or a list holding exactly one of those.
    if (prompt.is_array() && prompt.size() == 1 && (prompt[0].is_string() || prompt[0].is_array())) prompt = prompt[0];
    if (prompt.is_string()) {
        try {
            return engine.encoder().encode_prompt(prompt.get<std::string>(), o.max_prompt_tokens);
        } catch (const Error& e) {
            throw BadRequest{400, e.what(), "prompt"};
        }
    }
    if (prompt.is_array() && !prompt.empty() && std::all_of(prompt.begin(), prompt.end(), [](const json& t) {
            return whole_number(t).has_value();
        })) {
        std::vector<int32_t> ids;
        for (const json& t : prompt) {
            const int64_t id = *whole_number(t);
            if (id < 0 || id >= engine.vocab_size())
                throw BadRequest{400, "token id " + std::to_string(id) + " is outside the vocabulary", "prompt"};
            ids.push_back(static_cast<int32_t>(id));
        }
        if (static_cast<int64_t>(ids.size()) > o.max_prompt_tokens)
            throw BadRequest{400, "the prompt has more than " + std::to_string(o.max_prompt_tokens) + " tokens", "prompt"};
        return ids;
    }
    throw BadRequest{400, "prompt must be one string or one list of token ids (one prompt per request)", "prompt"};
}

// A field that is a number in [lo, hi], or `fallback` where it is absent or null.
double number_field(const json& body, const char* key, double fallback, double lo, double hi) {
    if (!body.contains(key) || body[key].is_null()) return fallback;
    const json& v = body[key];
    if (!v.is_number()) throw BadRequest{400, std::string(key) + " must be a number", key};
    const double d = v.get<double>();
    if (!(d >= lo && d <= hi))
        throw BadRequest{400, std::string(key) + " must be in [" + json(lo).dump() + ", " + json(hi).dump() + "]", key};
    return d;
}

// The same of a whole number, compared exactly (a seed of 2^63 − 1 is one): 40 or 40.0, since JSON
// has one number type and some clients write every number with a point.
int64_t integer_field(const json& body, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!body.contains(key) || body[key].is_null()) return fallback;
    const json& v = body[key];
    const std::optional<int64_t> n = whole_number(v);
    // whole but past int64 (an unsigned one, or a float): out of range, not "not an integer"
    const bool whole = n || v.is_number_unsigned() || (v.is_number_float() && is_whole(v.get<double>()));
    if (!whole) throw BadRequest{400, std::string(key) + " must be an integer", key};
    if (!n || *n < lo || *n > hi)
        throw BadRequest{400, std::string(key) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key};
    return *n;
}

// OpenAI fields we cannot honour are refused by name rather than ignored.
void refuse_unsupported(const json& body) {
    const auto is_default = [&](const char* key, const json& neutral) {
        return !body.contains(key) || body[key].is_null() || body[key] == neutral;
    };
    if (!is_default("n", 1) || !is_default("best_of", 1)) throw BadRequest{400, "only n = 1 and best_of = 1 are supported", "n"};
    if (!is_default("echo", false)) throw BadRequest{400, "echo is not supported", "echo"};
    if (!is_default("logprobs", 0) && !is_default("logprobs", false)) throw BadRequest{400, "logprobs are not supported", "logprobs"};
    if (!is_default("suffix", "")) throw BadRequest{400, "suffix (insertion) is not supported", "suffix"};
    if (!is_default("logit_bias", json::object())) throw BadRequest{400, "logit_bias is not supported", "logit_bias"};
    for (const char* key : {"presence_penalty", "frequency_penalty"})
        if (!is_default(key, 0) && !is_default(key, 0.0))
            throw BadRequest{400, std::string(key) + " is not supported; use repeat_penalty (llama.cpp's)", key};
}

GenerationParams request_params(const json& body, const ServeOptions& o) {
    refuse_unsupported(body);
    GenerationParams p;
    p.max_new_tokens = static_cast<int>(integer_field(body, "max_tokens", 16, 0, o.max_tokens));
    p.max_prompt_tokens = o.max_prompt_tokens;
    p.prefill_form = Form::Chunkwise;  // memory linear in the prompt length, unlike the parallel form
    p.checkpoint_interval = 0;  // no rewinding here: keep only the prompt-end state
    p.n_top = 0;
    SamplerParams& s = p.sampler;
    s.temperature = number_field(body, "temperature", 1.0, 0.0, 2.0);
    if (s.temperature > 0.0 && s.temperature < SamplerParams::kMinTemperature)  // validate's bound, named here
        throw BadRequest{400, "temperature must be 0 (greedy) or at least " + json(SamplerParams::kMinTemperature).dump(),
                         "temperature"};
    s.top_p = number_field(body, "top_p", 1.0, 1e-9, 1.0);
    s.top_k = static_cast<int>(integer_field(body, "top_k", 0, 0, 1 << 24));  // llama.cpp's extensions
    s.min_p = number_field(body, "min_p", 0.0, 0.0, 1.0);
    s.repeat_penalty = number_field(body, "repeat_penalty", 1.0, 1e-3, 100.0);
    if (body.contains("seed") && !body["seed"].is_null())
        s.seed = static_cast<uint64_t>(integer_field(body, "seed", 0, std::numeric_limits<int64_t>::min(),
                                                     std::numeric_limits<int64_t>::max()));
    else
        s.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
    const json stop = body.value("stop", json(nullptr));
    if (stop.is_string()) {
        p.stop_strings = {stop.get<std::string>()};
    } else if (stop.is_array() && stop.size() <= 4 &&
               std::all_of(stop.begin(), stop.end(), [](const json& x) { return x.is_string(); })) {
        for (const json& x : stop) p.stop_strings.push_back(x.get<std::string>());
    } else if (!stop.is_null()) {
        throw BadRequest{400, "stop must be a string or a list of at most 4 strings", "stop"};
    }
    for (const std::string& stop_string : p.stop_strings)
        if (stop_string.empty() || stop_string.size() > 256) throw BadRequest{400, "each stop string must have 1 to 256 bytes", "stop"};
    try {  // anything else the engine would refuse is refused here, not on the decode thread
        p.validate();
    } catch (const Error& e) {
        throw BadRequest{400, e.what(), "params"};
    }
    return p;
}

json completion_chunk(const std::string& id, const std::string& model, int64_t created, const std::string& text,
                      const json& finish) {
    return {{"id", id},
            {"object", "text_completion"},
            {"created", created},
            {"model", model},
            {"choices", json::array({{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}}})}};
}

// Responses still being written. cpp-httplib's stop() cuts a chunked response between two writes,
// so shutdown waits for these to end (their jobs cancelled) before it stops the server.
std::atomic<int> g_open_responses{0};

std::string sse(const json& j) {
    return "data: " + json_text(j) + "\n\n";
}

// Sends one chunk of a job's response; a client that left cancels the job.
bool send_chunk(httplib::DataSink& sink, Job& job, const std::string& out, bool finished) {
    if (!sink.write(out.data(), out.size())) {
        job.cancel = true;
        return false;
    }
    if (finished) sink.done();
    return true;
}

// A response that ended: unfinished means the client left, which cancels the job.
void release_response(Job& job, bool success) {
    if (!success) job.cancel = true;
    --g_open_responses;
}

// Writes the job's text as server-sent events; a failed write (the client left) cancels it.
void stream_job(httplib::Response& res, std::shared_ptr<Job> job, std::string id, std::string model,
                int64_t created, int64_t prompt_tokens) {
    ++g_open_responses;
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
            bool finished = false;
            const std::vector<std::string> pieces = job->take(std::chrono::milliseconds(1000), &finished);
            std::string out;
            for (const std::string& text : pieces) out += sse(completion_chunk(id, model, created, text, nullptr));
            if (finished) {
                json last = completion_chunk(id, model, created, "", job->error.empty() ? json(job->finish_reason) : json("error"));
                last["usage"] = {{"prompt_tokens", prompt_tokens},
                                 {"completion_tokens", job->completion_tokens},
                                 {"total_tokens", prompt_tokens + job->completion_tokens}};
                if (!job->error.empty()) last["error"] = error_object(job->error, "server_error");
                out += sse(last) + "data: [DONE]\n\n";
            }
            if (out.empty()) out = ": waiting\n\n";  // an SSE comment: notices a client that left
            return send_chunk(sink, *job, out, finished);
        },
        [job](bool success) { release_response(*job, success); });
}

// The whole completion as one JSON body, sent chunked so that a space (JSON allows leading
// whitespace) can go out every second while the request waits: a client that left is noticed.
void answer_job(httplib::Response& res, std::shared_ptr<Job> job, std::string id, std::string model,
                int64_t created, int64_t prompt_tokens) {
    ++g_open_responses;
    auto text = std::make_shared<std::string>();
    res.set_chunked_content_provider(
        "application/json",
        [=](size_t, httplib::DataSink& sink) {
            bool finished = false;
            for (std::string& piece : job->take(std::chrono::milliseconds(1000), &finished)) *text += piece;
            std::string out = " ";
            if (finished) {
                json body = completion_chunk(id, model, created, *text, job->finish_reason);
                body["usage"] = {{"prompt_tokens", prompt_tokens},
                                 {"completion_tokens", job->completion_tokens},
                                 {"total_tokens", prompt_tokens + job->completion_tokens}};
                if (!job->error.empty()) body = {{"error", error_object(job->error, "server_error")}};
                out = json_text(body);
            }
            return send_chunk(sink, *job, out, finished);
        },
        [job](bool success) { release_response(*job, success); });
}

// A twin's KV cache at the request's prompt + max_tokens, at the backend's element size (0 for
// a RetNet: its state does not grow). One that cannot fit even alone is refused with 507.
uint64_t kv_reservation(const Engine& engine, size_t prompt_tokens, int max_tokens) {
    const ModelConfig& c = engine.config();
    if (!c.is_transformer()) return 0;
    const int64_t tokens = static_cast<int64_t>(prompt_tokens) + max_tokens;
    const auto bytes = static_cast<uint64_t>(sequence_state_bytes(c, tokens, engine.kv_element_bytes()));
    if (bytes > engine.kv_budget())
        throw BadRequest{507, "the KV cache of this request at " + std::to_string(prompt_tokens) + " prompt + " +
                                  std::to_string(max_tokens) + " max_tokens tokens needs " + format_bytes(bytes) +
                                  ", more than the " + format_bytes(engine.kv_budget()) + " that the memory limit of " +
                                  format_bytes(memory_limit()) + " (" + memory_limit_source() +
                                  ") leaves beside the weights and a prompt's working memory; ask for fewer max_tokens",
                         "max_tokens"};
    return bytes;
}

void handle_completion(Engine& engine, const ServeOptions& o, const std::string& model, const httplib::Request& req,
                       httplib::Response& res) {
    static std::atomic<int64_t> counter{0};
    if (req.body.size() > static_cast<size_t>(o.max_body)) return send_error(res, 413, "the request body is too large");
    json body;
    try {
        body = parse_json_bounded(req.body);
    } catch (const json::other_error&) {
        return send_error(res, 400, "the request body nests arrays or objects more than " +
                                        std::to_string(kMaxJsonDepth) + " levels deep");
    } catch (const json::out_of_range&) {  // 1e400: valid JSON, beyond what a double holds
        return send_error(res, 400, "the request body holds a number too large for a double (over 1.8e308)");
    } catch (const json::exception&) {
        return send_error(res, 400, "the request body is not valid JSON");
    }
    if (!body.is_object()) return send_error(res, 400, "the request body must be a JSON object");
    auto job = std::make_shared<Job>();
    bool stream = false;
    try {
        job->params = request_params(body, o);
        job->prompt = request_prompt(body, engine, o);
        const json s = body.value("stream", json(false));
        if (!s.is_boolean()) throw BadRequest{400, "stream must be true or false", "stream"};
        stream = s.get<bool>();
        job->kv_bytes = kv_reservation(engine, job->prompt.size(), job->params.max_new_tokens);
    } catch (const BadRequest& e) {
        return send_error(res, e.status, e.message, e.param);
    }
    uint64_t reserved = 0;
    switch (engine.submit(job, &reserved)) {
        case Engine::Refusal::None: break;
        case Engine::Refusal::Full:
            res.set_header("Retry-After", "1");
            return send_error(res, 503, "the server is busy: " + std::to_string(o.parallel + o.queue) +
                                            " requests are already running or waiting; retry later");
        case Engine::Refusal::Memory:
            res.set_header("Retry-After", "1");
            return send_error(res, 503, "the server is busy: the KV caches of the requests running or waiting hold " +
                                            format_bytes(reserved) + " of the " + format_bytes(engine.kv_budget()) +
                                            " the memory limit leaves them, and this one's " +
                                            format_bytes(job->kv_bytes) + " does not fit beside them; retry later",
                              "max_tokens");
    }
    const std::string id = "cmpl-" + std::to_string(++counter);
    const auto created = static_cast<int64_t>(std::time(nullptr));
    const auto prompt_tokens = static_cast<int64_t>(job->prompt.size());
    if (stream)
        stream_job(res, job, id, model, created, prompt_tokens);
    else
        answer_job(res, job, id, model, created, prompt_tokens);
}

// SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on a port
// in use binds too and the kernel splits the clients between the two.
void reuse_address_only(socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

int bind_or_throw(httplib::Server& server, const ServeOptions& o) {
    errno = 0;
    const int port = o.port == 0 ? server.bind_to_any_port(o.host) : (server.bind_to_port(o.host, o.port) ? o.port : -1);
    if (port < 0)
        throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                    (errno == EADDRINUSE ? ": the port is in use (another server? pick one with --port)"
                     : errno != 0        ? std::string(": ") + std::strerror(errno)
                                         : std::string(": not an address of this machine")));
    return port;
}

void add_routes(httplib::Server& server, Engine& engine, const ServeOptions& o, const std::string& model) {
    server.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(json_text(engine.health()), "application/json");
    });
    server.Get("/v1/models", [&, model](const httplib::Request&, httplib::Response& res) {
        const json entry = {{"id", model}, {"object", "model"}, {"created", 0}, {"owned_by", "retnet-studio"}};
        res.set_content(json_text(json{{"object", "list"}, {"data", json::array({entry})}}), "application/json");
    });
    server.Post("/v1/completions", [&, model](const httplib::Request& req, httplib::Response& res) {
        handle_completion(engine, o, model, req, res);
    });
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
        if (res.body.empty()) send_error(res, res.status, res.status == 413 ? "the request body is too large" : "no such endpoint");
    });
}

// Refused at the start rather than by the OOM killer at the first long request: a prompt of
// --max-prompt-tokens in the chunkwise form, with the states of --parallel requests beside it.
// A twin's KV caches grow with each request: what the limit leaves beside the prompt is returned,
// and each request reserves its cache from it when admitted.
uint64_t check_serving_memory(const Model& model, const ServeOptions& o) {
    const ModelConfig& c = model.config;
    const uint64_t states = saturating_product({static_cast<uint64_t>(o.parallel), static_cast<uint64_t>(recurrent_state_bytes(c))});
    const uint64_t weights = model.weight_bytes();  // held all along (the KV budget counted none: 38 MiB over)
    check_forward_memory(c, o.max_prompt_tokens, Form::Chunkwise, 0,
                         "a prompt of --max-prompt-tokens " + std::to_string(o.max_prompt_tokens) + " beside --parallel " +
                             std::to_string(o.parallel) + " requests' states and the model's weights",
                         saturating_sum({states, weights}));
    return memory_limit() - forward_memory_bytes(c, o.max_prompt_tokens, Form::Chunkwise, 0) - weights;
}

int run_serve(const std::vector<std::string>& argv) {
    const auto app = make_app("serve", "An OpenAI-compatible HTTP API (/v1/completions with streaming, /v1/models, "
                                       "/health) on loopback; up to --parallel requests are decoded together.");
    ServeOptions o;
    add_serve_options(*app, o);
    parse(*app, argv);
    if (!is_loopback(o.host) && !o.allow_remote)
        throw Error("--host " + o.host + " is reachable from other machines and the server has no authentication; "
                    "add --allow-remote to listen there anyway");
    o.model = model_dir_or_default(o.model);
    check_model_memory(o.model, 1, WeightStorage::AsStored);
    // A Ctrl-C while the model loads cancels the command ("retnet serve: cancelled", 130); once the
    // server runs, SIGINT and SIGTERM stop it gracefully (StopOnSignal below).
    auto model = std::make_shared<const Model>(load_model_interruptible(o.model, WeightStorage::AsStored));
    const uint64_t kv_budget = check_serving_memory(*model, o);
    std::string notice;
    auto backend = make_backend_or_cpu(o.device, model, &notice);
    if (!notice.empty()) std::fprintf(stderr, "retnet serve: %s\n", notice.c_str());
    const std::string name = o.name.empty() ? model_id(o.model) : o.name;

    httplib::Server server;
    Engine engine(std::move(backend), Tokenizer::load_from_model_dir(o.model), o.parallel, o.queue, kv_budget);
    // Enough handler threads that a request beyond the queue is answered 503 at once.
    server.new_task_queue = [n = o.parallel + o.queue + 4] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
    server.set_payload_max_length(static_cast<size_t>(o.max_body));
    // Asked before the body is read: cpp-httplib 0.11 holds --max-body to a Content-Length only, and
    // read a chunked body (4 MB under the 1 MiB limit) or a compressed one (285 KB of gzip, 300 MB
    // inflated: the server's memory went to 1.2 GB) whole.
    server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
        const std::string encoding = req.get_header_value("Content-Encoding");
        if (!encoding.empty() && encoding != "identity")
            send_error(res, 415, "compressed request bodies are not accepted: send the JSON as it is");
        else if (req.has_header("Transfer-Encoding"))
            send_error(res, 411, "send the request body with a Content-Length (a chunked body is not accepted)");
        else
            return httplib::Server::HandlerResponse::Unhandled;
        res.set_header("Connection", "close");  // its body was not read
        return httplib::Server::HandlerResponse::Handled;
    });
    server.set_read_timeout(10, 0);
    server.set_socket_options(reuse_address_only);
    add_routes(server, engine, o, name);
    const int port = bind_or_throw(server, o);
    std::atomic<bool> listen_returned{false};
    const StopOnSignal on_signal([&] {
        engine.cancel_all();
        // Cancelled responses end within a token and a second; a client that stopped reading gets 5 s.
        for (int i = 0; i < 1000 && g_open_responses > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        // A signal between bind and listen: stop() does nothing until the server runs.
        while (!server.is_running() && !listen_returned) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        server.stop();
        // The stop waits for every worker thread, and a client still sending its request (a byte a
        // second keeps the read timeout from firing), an idle keep-alive connection or a client that
        // stopped reading past the 5 s above holds one: 1 s for them, then the process ends.
        for (int i = 0; i < 200 && !listen_returned; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (!listen_returned) {
            std::fputs("retnet serve: stopped; the connections still open were closed\n", stderr);
            std::fflush(stdout);
            std::_Exit(0);
        }
    });
    if (!is_loopback(o.host))
        std::fprintf(stderr, "retnet serve: warning: listening on %s, reachable from other machines, without authentication\n",
                     o.host.c_str());
    std::printf("retnet serve: %s (%s, %s parameters) on http://%s:%d/v1 (%d requests decoded together, queue %d)\n",
                shown(name).c_str(), format_name(model->config), format_count(model->parameter_count()).c_str(),
                shown(o.host).c_str(), port, o.parallel, o.queue);
    std::fflush(stdout);
    server.listen_after_bind();
    listen_returned = true;
    return 0;
}

const Command reg("serve", "a local OpenAI-compatible HTTP server (completions, streaming)", &run_serve);

}  // namespace
}  // namespace retnet::cli
