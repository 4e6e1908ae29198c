// SPDX-License-Identifier: GPL-3.0-or-later
// retnet cost: the paper's inference-cost comparison on this machine — the model against its
// Transformer twin (retnet/cost.h) at each context length × batch, as a table, JSON or a PNG.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/cost.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/json_text.h"
#include "retnet/memory_limit.h"
#include "retnet/model.h"
#include "retnet/model_stats.h"
#ifdef RETNET_HAVE_COST_PLOT
#include "cost_plot_png.h"
#endif

namespace retnet::cli {
namespace {

nlohmann::json to_json(const CostReport& report) {
    nlohmann::json j = {{"device", report.device},
                        {"weights", report.weights},
                        {"retnet_parameters", report.retnet_parameters},
                        {"transformer_parameters", report.transformer_parameters},
                        {"points", nlohmann::json::array()}};
    if (report.decode_steps > 0) j["decode_steps"] = report.decode_steps;
    if (report.seed >= 0) j["seed"] = report.seed;
    if (report.cancelled) j["cancelled"] = true;  // a saved report says it is partial
    for (const CostPoint& p : report.points) {
        nlohmann::json row = {{"model", p.model}, {"length", p.length}, {"batch", p.batch},
                              {"out_of_memory", p.out_of_memory}};
        if (p.out_of_memory) {
            row["note"] = p.note;
        } else {
            row["prefill_ms"] = p.prefill_ms;
            row["ms_per_step"] = p.ms_per_step;
            row["tokens_per_s"] = p.tokens_per_s;
            row["state_bytes"] = p.state_bytes;
            if (p.device_bytes >= 0) row["device_bytes"] = p.device_bytes;
        }
        j["points"].push_back(std::move(row));
    }
    return j;
}

std::string fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return buf;
}

// The GPU column only where a backend measured it (CUDA); its note says what each memory column is.
// Each column is as wide as its widest cell (at least its usual width), so a 10-digit length or a
// slow point's long timing keeps the columns in line; an out-of-memory point says so after its batch.
void print_table(const CostReport& report) {
    const bool gpu = std::any_of(report.points.begin(), report.points.end(),
                                 [](const CostPoint& p) { return p.device_bytes >= 0; });
    const std::string weights = report.weights.empty() ? "" : ", " + report.weights + " weights";
    std::printf("%s backend%s; RetNet %s parameters, Transformer twin %s; prefill: one run after a warm-up, "
                "decoding: medians of the timed steps\n",
                shown(report.device).c_str(), weights.c_str(), format_count(report.retnet_parameters).c_str(),
                format_count(report.transformer_parameters).c_str());
    std::vector<std::vector<std::string>> rows = {
        {"model", "length", "batch", "prefill ms", "ms / step", "tokens / s", "state / cache"}};
    std::vector<size_t> width = {12, 8, 6, 12, 11, 13, 14};
    if (gpu) rows[0].push_back("GPU in use"), width.push_back(14);
    std::vector<std::optional<std::string>> out_of_memory = {std::nullopt};  // per row: the note of a point that did not fit
    for (const CostPoint& p : report.points) {
        std::vector<std::string>& row = rows.emplace_back();
        row = {p.model, std::to_string(p.length), std::to_string(p.batch)};
        out_of_memory.push_back(p.out_of_memory ? std::optional(shown(p.note)) : std::nullopt);
        if (p.out_of_memory) continue;
        row.insert(row.end(), {fixed(p.prefill_ms, 2), fixed(p.ms_per_step, 3), fixed(p.tokens_per_s, 1),
                               format_bytes(static_cast<uint64_t>(p.state_bytes))});
        if (gpu) row.push_back(p.device_bytes >= 0 ? format_bytes(static_cast<uint64_t>(p.device_bytes)) : "");
    }
    for (const auto& row : rows)
        for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    for (size_t r = 0; r < rows.size(); ++r) {
        const std::vector<std::string>& row = rows[r];
        std::string line;
        for (size_t c = 0; c < row.size(); ++c) {
            const size_t pad = width[c] - row[c].size();  // names left-aligned, numbers right-aligned
            if (c > 0) line.append(1 + pad, ' ');
            line += row[c];
            if (c == 0) line.append(pad, ' ');
        }
        if (out_of_memory[r]) line += "   out of memory" + (out_of_memory[r]->empty() ? "" : ": " + *out_of_memory[r]);
        std::printf("%s\n", line.c_str());
    }
    std::printf("state / cache: the batch's RetNet states or KV caches, computed from the tokens they hold%s\n",
                gpu ? "; GPU in use: measured after the steps, the whole device's (other processes' too)" : "");
    if (report.cancelled) std::printf("cancelled: the measurement stopped after these points\n");
}

namespace fs = std::filesystem;

bool is_image_name(const fs::path& path) {
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return ext == ".png" || ext == ".pdf";
}

// The picture is drawn after the whole measurement: a path that cannot take it is refused before.
// A symlink is followed (as by every --out), but only to another image: `plot.png -> /etc/passwd`
// would otherwise replace the file it points to.
void check_plot_path(const std::string& path) {
    const fs::path p(path);
    if (!is_image_name(p)) throw Error("--plot " + path + ": unknown image type (use .png or .pdf)");
    std::error_code ec;
    if (fs::is_directory(fs::status(p, ec))) throw Error("--plot " + path + " is a directory");
    if (fs::is_symlink(fs::symlink_status(p, ec))) {
        // the picture replaces what a link points to, and a link to nothing has nothing to replace
        if (!fs::exists(fs::status(p, ec)))
            throw Error("--plot " + path + " is a symbolic link to nothing (" + fs::read_symlink(p, ec).string() +
                        "); name a file, or a link to one");
        const fs::path target = fs::weakly_canonical(p, ec);
        if (ec || !is_image_name(target))
            throw Error("--plot " + path + " is a symlink to " + (ec ? ec.message() : target.string()) +
                        ", not to a .png or .pdf file; it is not overwritten");
    }
    const fs::path parent = p.has_parent_path() ? p.parent_path() : fs::path(".");
    const fs::file_status folder = fs::status(parent, ec);
    if (!fs::is_directory(folder))
        throw Error("--plot " + path + ": " + parent.string() + (fs::exists(folder) ? " is not a directory" : " does not exist"));
    const fs::file_status target = fs::status(p, ec);
    if (fs::exists(target) && !fs::is_regular_file(target))
        throw Error("--plot " + path + " is not a regular file (a device or FIFO); choose a file name");
    // The picture goes to a temporary file beside the (linked-to) file, renamed over it: make one
    // now, so that a folder that cannot take it (read-only, no permission, /proc) is named before
    // the measurement, not after it.
    const fs::path probe = fs::weakly_canonical(p, ec).parent_path() / (".retnet-plot-" + std::to_string(::getpid()));
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw Error("--plot " + path + ": cannot write in " + probe.parent_path().string() + " (" + std::strerror(errno) + ")");
    ::close(fd);
    ::unlink(probe.c_str());
}

// Progress on stderr, one line per point; Ctrl-C cancels between steps.
CostProgress stderr_progress(const InterruptGuard& interrupt) {
    return [&interrupt, last = std::string()](double fraction, const std::string& what) mutable {
        if (interrupt.raised()) return false;
        const std::string prefix = "prefill of ";
        const std::string point = what.substr(std::min(what.size(), prefix.size()));
        if (what.rfind(prefix, 0) == 0 && point != last) {
            std::fprintf(stderr, "[%3.0f%%] %s\n", 100.0 * fraction, point.c_str());
            last = point;
        }
        return true;
    };
}

// A field's value as an error names it: its JSON, cut at 40 characters.
std::string field_value(const nlohmann::json& v) {
    const std::string text = v.dump();
    return text.size() <= 40 ? text : text.substr(0, 40) + "…";
}

// A field of a --from report as retnet cost writes it: an integer within [lo, hi], a finite
// number at least 0. Anything else (3e9 as a length, a negative size, a float where an integer
// goes) is refused, never converted (nlohmann's get<int> of 3e9 wraps).

int64_t integer_field(const nlohmann::json& row, const char* name, int64_t lo, int64_t hi) {
    const nlohmann::json& v = row.at(name);
    // A non-negative integer is parsed as unsigned: compared as one, it cannot wrap past hi.
    const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && v.get<int64_t>() >= lo
                      : v.is_number_integer() ? v.get<int64_t>() >= lo && v.get<int64_t>() <= hi
                                              : false;
    if (!fits)
        throw Error("field '" + std::string(name) + "' = " + field_value(v) + " is not an integer in [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v.get<int64_t>();
}

double measure_field(const nlohmann::json& row, const char* name) {
    const nlohmann::json& v = row.at(name);
    if (!v.is_number() || !(v.get<double>() >= 0) || !std::isfinite(v.get<double>()))
        throw Error("field '" + std::string(name) + "' = " + field_value(v) + " is not a finite number >= 0");
    return v.get<double>() + 0.0;  // -0 as 0 (it printed as -0.00)
}

// A time in milliseconds as a clock measures it: 0 (not measured), or from a nanosecond to a
// year. Outside that a report was edited, and its plot would have an empty panel (1e300 ms).
double time_field(const nlohmann::json& row, const char* name) {
    const double ms = measure_field(row, name);
    if (ms != 0 && (ms < 1e-6 || ms > 3.2e10))
        throw Error("field '" + std::string(name) + "' = " + field_value(row.at(name)) +
                    " is not a time in milliseconds from 1e-06 (a nanosecond) to 3.2e+10 (a year), or 0");
    return ms;
}

// Text, shown as it will be printed (control characters escaped, not sent to the terminal).
std::string text_field(const nlohmann::json& row, const char* name) {
    const nlohmann::json& v = row.at(name);
    if (!v.is_string()) throw Error("field '" + std::string(name) + "' = " + field_value(v) + " is not a string");
    return v.get<std::string>();  // as written: --json writes it back so; the table and the plot escape it
}

bool flag_field(const nlohmann::json& row, const char* name) {
    const nlohmann::json& v = row.at(name);
    if (!v.is_boolean()) throw Error("field '" + std::string(name) + "' = " + field_value(v) + " is not true or false");
    return v.get<bool>();
}

// A report written by --json, for --from (measured on a headless GPU machine, drawn elsewhere).
// Read as a regular file (a FIFO would block, a device never end).
CostReport read_report(const std::string& path) {
    std::string text;
    try {
        text = read_regular_file(path, uint64_t(64) << 20);
    } catch (const Error& e) {
        throw Error("--from: " + std::string(e.what()));
    }
    constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
    try {
        const nlohmann::json j = parse_json_bounded(text);
        if (!j.is_object()) throw Error("it is " + field_value(j) + ", not a report (a JSON object)");
        CostReport report;
        report.device = text_field(j, "device");
        if (j.contains("weights")) {  // reports of before 2026-12-05 lack it
            const nlohmann::json& w = j.at("weights");
            const std::string value = w.is_string() ? w.get<std::string>() : "";
            if (!w.is_string() || (value != "fp32" && value != "bf16" && value != "mixed" && !value.empty()))
                throw Error("field 'weights' = " + field_value(w) + " is not fp32, bf16 or mixed");
            report.weights = value;
        }
        if (j.contains("cancelled")) report.cancelled = flag_field(j, "cancelled");
        report.retnet_parameters = integer_field(j, "retnet_parameters", 0, INT64_MAX);
        report.transformer_parameters = integer_field(j, "transformer_parameters", 0, INT64_MAX);
        // reports of before 2026-12-06 lack them
        if (j.contains("decode_steps")) report.decode_steps = static_cast<int>(integer_field(j, "decode_steps", 1, 100000));
        if (j.contains("seed")) report.seed = integer_field(j, "seed", 0, INT64_MAX);
        const nlohmann::json& points = j.at("points");
        if (!points.is_array()) throw Error("field 'points' = " + field_value(points) + " is not a list of points");
        std::set<std::tuple<std::string, int, int>> seen;  // (model, length, batch)
        for (const nlohmann::json& row : points) {
            if (!row.is_object()) throw Error("a point = " + field_value(row) + " is not an object");
            CostPoint p;
            p.model = text_field(row, "model");
            p.length = static_cast<int>(integer_field(row, "length", 1, kMaxInt));
            p.batch = static_cast<int>(integer_field(row, "batch", 1, kMaxInt));
            p.out_of_memory = flag_field(row, "out_of_memory");
            if (p.out_of_memory) {
                if (row.contains("note")) p.note = text_field(row, "note");
            } else {
                p.prefill_ms = time_field(row, "prefill_ms");
                p.ms_per_step = time_field(row, "ms_per_step");
                p.tokens_per_s = measure_field(row, "tokens_per_s");
                // a rate that is not the step's was edited
                const double rate = tokens_per_second(p.batch, p.ms_per_step);
                if (std::abs(p.tokens_per_s - rate) > 1e-9 * std::max(1.0, rate))
                    throw Error("field 'tokens_per_s' = " + field_value(row.at("tokens_per_s")) +
                                " is not batch × 1000 / ms_per_step (" + field_value(rate) + ")");
                p.state_bytes = integer_field(row, "state_bytes", 0, INT64_MAX);
                if (row.contains("device_bytes")) p.device_bytes = integer_field(row, "device_bytes", 0, INT64_MAX);
            }
            if (p.model != "RetNet" && p.model != "Transformer")
                throw Error("a point of model '" + p.model + "' is not one retnet cost writes");
            if (!seen.emplace(p.model, p.length, p.batch).second)
                throw Error("two points of " + p.model + " at length " + std::to_string(p.length) + ", batch " +
                            std::to_string(p.batch) + " (retnet cost measures each once)");
            report.points.push_back(std::move(p));
        }
        // what `cost --json` writes when cancelled before its first point: read back as it is
        if (report.points.empty() && !report.cancelled) throw Error("it has no points");
        // only such a report lacks what a measurement knows
        if (!report.points.empty()) {
            if (std::all_of(report.device.begin(), report.device.end(), [](unsigned char c) { return std::isspace(c); }))
                throw Error("field 'device' is empty, in a report with points");
            if (j.contains("weights") && report.weights.empty())
                throw Error("field 'weights' is empty, in a report with points");
            if (report.retnet_parameters < 1 || report.transformer_parameters < 1)
                throw Error("a parameter count is 0, in a report with points");
        }
        return report;
    } catch (const nlohmann::json::exception& e) {
        throw Error("--from: " + shown(path) + " is not a report of retnet cost --json (" + json_error_text(e) + ")");
    } catch (const Error& e) {
        throw Error("--from: " + shown(path) + ": " + e.what());
    }
}

struct CostArgs {
    std::string model_dir, transformer_dir, device = "cpu", dtype = "stored";
    CostOptions options;
};

// A measurement, or what it had measured when Ctrl-C stopped it.
struct Measured {
    CostReport report;
    bool cancelled = false;
    bool before_measuring = false;  // cancelled while the model loaded or its twin was made
    // The models, held here as soon as they are made and freed after the report is printed:
    // freeing 1.35 GB took 50 ms between a cancel and its report, in which a second SIGTERM ended
    // the process without it.
    std::vector<std::unique_ptr<Backend>> freed_after_printing;
};

// Fills `out` (a Cancelled from the load or the twin's making leaves it without a report).
void measure(const CostArgs& args, Measured& out) {
    // Ctrl-C is caught from the start: loading a large model and making its random twin take
    // seconds. The loaders poll the flag between tensors (layers of the twin), the copies of the
    // weights (apply_dtype, make_backend_option) when they end.
    InterruptGuard interrupt;
    auto loaded = load_model_edited(args.model_dir);
    if (loaded->config.is_transformer())
        throw Error("--model must be a RetNet (it is a Transformer); pass a Transformer with --transformer");
    // moved in: a converted copy (--dtype) is then the only one held
    Backend* retnet_backend =
        out.freed_after_printing.emplace_back(make_backend_at_dtype(args.dtype, args.device, std::move(loaded))).get();
    const Model& retnet = retnet_backend->model();
    check_batch_fits(*retnet_backend, *std::max_element(args.options.batches.begin(), args.options.batches.end()));
    // The twin computes at the RetNet's precision: with --dtype stored, a bf16 checkpoint's RetNet
    // reads half the bytes a step of a float32 twin would, and the twin would look slower than it is.
    const std::string precision = retnet_backend->weights_precision();
    if (precision == "mixed")
        throw Error("the model " + shown(model_dir_or_default(args.model_dir)) +
                    " stores some matrices in bf16 and others in fp32, which its twin cannot match: pass --dtype fp32 "
                    "or bf16 to compare both at one precision");
    // Every twin below is made while the RetNet's weights are held (in host memory on every device).
    const uint64_t held = retnet.weight_bytes();
    const std::string beside = " (beside the RetNet's " + format_bytes(held) + " of weights)";
    const bool on_cpu = !retnet_backend->on_device();
    std::shared_ptr<const Model> twin;
    if (args.transformer_dir.empty()) {
        check_memory(saturating_sum({held, estimated_weight_bytes(transformer_twin_config(retnet.config))}),
                     "the Transformer twin" + beside);
        Model made = make_transformer_twin(retnet.config, args.options.seed, interrupt.cancelled());
        // narrowed in place for a bf16 RetNet on the CPU, before it is shared: a narrowed copy would
        // hold the float32 twin twice (the GPU narrows as it uploads)
        if (precision == "bf16" && on_cpu) made = narrowed_to_bf16(std::move(made), interrupt.cancelled());
        twin = std::make_shared<const Model>(std::move(made));
    } else {
        check_model_memory(args.transformer_dir, 1, WeightStorage::AsStored, held);
        twin = std::make_shared<const Model>(load_model_interruptible(args.transformer_dir, WeightStorage::AsStored));
        if (!twin->config.is_transformer())
            throw Error("--transformer " + shown(args.transformer_dir) +
                        " is not a Llama-format Transformer (it is a RetNet; make its twin with retnet init --arch "
                        "transformer --like DIR)");
        // Refused before the size warning: one line, the one that matters.
        if (const int64_t ours = retnet.config.vocab_size, theirs = twin->config.vocab_size; ours != theirs)
            throw Error("--transformer " + shown(args.transformer_dir) + " has a vocabulary of " +
                        std::to_string(theirs) + " tokens and --model one of " + std::to_string(ours) +
                        "; both run on the same token streams, so they need the same vocabulary");
        if (const std::string mismatch = size_mismatch(retnet, *twin); !mismatch.empty())
            std::fprintf(stderr, "retnet cost: warning: %s\n", mismatch.c_str());
        // On the CPU a twin stored at another precision is converted: a float32 copy beside it at the peak.
        if (on_cpu && matrices_precision(*twin) != precision)
            check_memory(saturating_sum({held, twin->weight_bytes(), saturating_product({uint64_t(twin->parameter_count()), 4})}),
                         "the Transformer twin converted to " + precision + beside);
    }
    // A device the RetNet fell back from (no GPU) is not tried again for the twin: one notice, not two.
    const std::string twin_device = retnet_backend->name() == "cpu" ? "cpu" : args.device;
    Backend* twin_backend =
        out.freed_after_printing.emplace_back(make_backend_at_dtype(precision, twin_device, std::move(twin))).get();
    try {
        out.report = measure_cost(*retnet_backend, *twin_backend, args.options, stderr_progress(interrupt),
                                  [&out](const CostReport& so_far) {
                                      // the new point alone: a copy of the whole report a point was quadratic
                                      if (out.report.points.empty()) out.report = so_far;
                                      else out.report.points.push_back(so_far.points.back());
                                  });
    } catch (const Cancelled&) {
        out.cancelled = out.report.cancelled = true;
    }
}

int run_cost(const std::vector<std::string>& argv) {
    const auto app = make_app("cost", "Measures the model against a same-size Transformer twin (random weights, or "
                                      "--transformer DIR): prefill time, decoding latency and throughput, and the "
                                      "memory of RetNet's state against the twin's KV cache, at each context length "
                                      "and batch size. Points that do not fit are reported as out of memory.");
    CostArgs args;
    std::string lengths_text = "1024,4096,16384,32768", batch_text = "1,8,16,64", plot_path, from;
    int64_t seed = 1;
    bool json = false;
    add_model_option(*app, args.model_dir);
    add_device_option(*app, args.device);
    add_text(*app, "--transformer", args.transformer_dir,
             "a Llama-format directory to use as the Transformer, of the model's vocabulary (a parameter count "
             "more than 5 % away from the model's is warned about)")
        ->type_name("DIR")
        ->default_str("a random twin of the model");
    add_text(*app, "--lengths", lengths_text, "context lengths (tokens in each sequence before the timed steps)")
        ->type_name("T,T,...");
    add_text(*app, "--batch", batch_text, "batch sizes (sequences decoded together)")->type_name("B,B,...");
    add_text(*app, "--dtype", args.dtype, "precision of the projections: stored, fp32 or bf16")
        ->type_name("stored|fp32|bf16");
    add_int(*app, "--decode-steps", args.options.decode_steps, 1, 100000, "decoding steps timed per point");
    add_int(*app, "--seed", seed, 0, INT64_MAX, "seed of the twin's weights and of the token streams");
    add_text(*app, "--plot", plot_path, "also draw the paper's panels (memory, throughput, latency) into this PNG")
        ->type_name("FILE.png");
    add_text(*app, "--from", from, "measure nothing: print or --plot a report saved with --json")->type_name("FILE.json");
    add_json_flag(*app, json);
    parse(*app, argv);
    if (app->count("--from") > 0 && from.empty())
        throw Error("option --from is empty (name a report saved with --json, or leave it out to measure)");
    if (app->count("--transformer") > 0 && args.transformer_dir.empty())
        throw Error("option --transformer is empty (leave it out for a random twin of the model)");
    if (app->count("--plot") > 0 && plot_path.empty())
        throw Error("option --plot is empty (name the PNG to draw, or leave it out)");
    if (!from.empty())
        for (const char* option : {"--model", "--transformer", "--device", "--lengths", "--batch", "--dtype",
                                   "--decode-steps", "--seed"})
            if (app->count(option) > 0)
                throw Error(std::string(option) + " is for a measurement, and --from measures nothing (it prints or "
                            "--plots the saved report): leave out one of them");
    require_one_of("--dtype", args.dtype, {"stored", "fp32", "bf16"});
    check_dtype_for_device(args.dtype, args.device);
    args.options.lengths = parse_positive_list("--lengths", lengths_text);
    args.options.batches = parse_positive_list("--batch", batch_text);
    args.options.seed = static_cast<uint64_t>(seed);
#ifndef RETNET_HAVE_COST_PLOT
    if (!plot_path.empty()) throw Error("--plot needs the Qt build of retnet (this one has none); use --json");
#endif
    if (!plot_path.empty()) check_plot_path(plot_path);
    // Held until the report is printed: a signal then (after the measurement, or a second one from
    // `timeout`) is noted, not obeyed at once, so what was measured is not lost.
    const InterruptGuard until_printed;
    Measured measured;
    if (!from.empty()) {
        measured.report = read_report(from);
        until_printed.check();  // a Ctrl-C while a large report was read: nothing printed yet
    } else {
        try {
            measure(args, measured);
        } catch (const Cancelled&) {  // in the setup: --json still says so, with no point
            measured.cancelled = measured.before_measuring = measured.report.cancelled = true;
        }
    }
    const CostReport& report = measured.report;
    const char* const before_measuring = "retnet cost: cancelled before the first point (while loading the model and its twin)\n";
    // A JSON report is written even with no point finished (as bench's): a script reads "cancelled".
    if (measured.cancelled && report.points.empty() && !json) {
        if (!measured.before_measuring) throw Cancelled();
        std::fputs(before_measuring, stderr);
        return cancelled_status();
    }
    if (!from.empty() && !plot_path.empty() && report.points.empty())
        throw Error("--plot: " + shown(from) + " holds no point to draw (its measurement was cancelled before the first)");
    if (json) std::printf("%s\n", json_text(to_json(report), 2).c_str());
    else if (report.points.empty()) std::printf("no point: the measurement was cancelled before its first point\n");
    else print_table(report);
    std::fflush(stdout);  // out of the process before the models are freed
#ifdef RETNET_HAVE_COST_PLOT
    std::string error;
    if (!plot_path.empty() && !report.points.empty()) {
        CostReport drawn = report;  // a report's own text drawn escaped, as the table prints it
        drawn.device = shown(drawn.device);
        if (!write_cost_plot_png(drawn, plot_path, &error)) throw Error("--plot: " + error);
    }
#endif
    // The models go here, inside the guard, so that a signal while they are freed (tens of ms at the
    // 1.3B shape) still sets the status; at the function's end it came after the status was taken.
    measured.freed_after_printing.clear();
    // a signal once measured, or once the report was read, was held while the output was written
    if (!measured.cancelled) return until_printed.raised() ? cancelled_after_whole_output("cost", json) : 0;
    if (measured.before_measuring) {
        std::fputs(before_measuring, stderr);
        return cancelled_status();
    }
    const size_t planned = 2 * args.options.lengths.size() * args.options.batches.size();
    std::fprintf(stderr, "retnet cost: cancelled after %zu of %zu points; the %s holds those measured\n",
                 report.points.size(), planned, json ? "report" : "table");
    return cancelled_status();
}

const Command reg("cost", "RetNet against a same-size Transformer: latency, throughput and memory vs length and batch",
                  &run_cost);

}  // namespace
}  // namespace retnet::cli
