// SPDX-License-Identifier: GPL-3.0-or-later
// retnet eval: loss per token and bits per character of (the tail of) a text file, in windows
// that each start from an empty state (the trainer's validation) or, with --stream, as one
// sequence whose recurrent state is carried through the whole text.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/cpu_ops.h"
#include "retnet/eval_stream.h"
#include "retnet/text_stream.h"
#include "retnet/train.h"
#include "retnet/trainer.h"

namespace retnet::cli {
namespace {

// Progress on stderr (TokenProgressLine); Ctrl-C cancels (the evaluation throws
// retnet::Cancelled, the command exits with 130).
train::EvalProgress eval_progress(const InterruptGuard& interrupt) {
    return [line = TokenProgressLine("eval"), &interrupt](int64_t done, int64_t total) mutable {
        if (interrupt.raised()) return false;
        line.show(done, total);
        return true;
    };
}

int run_eval(const std::vector<std::string>& argv) {
    const auto app = make_app("eval", "Evaluates a model on a text: loss per token and bits per character, in windows "
                                      "or as one sequence with the state carried.");
    std::string model_dir, text_path, device = "cpu";
    InterventionText edits;
    double tail = 1.0;
    int window = 256, threads = 0;
    bool stream = false;
    add_model_option(*app, model_dir)->required();
    add_text(*app, "--text", text_path, "the UTF-8 text to evaluate on")->type_name("FILE")->required();
    add_number(*app, "--tail", tail, 1e-6, 1.0, "evaluate the last FRACTION of the text only");
    CLI::Option* window_option = add_int(*app, "--window", window, 1, 1 << 20, "tokens per window (the state restarts)");
    add_flag(*app, "--stream", stream, "one sequence, the state carried through the whole text");
    add_int(*app, "--threads", threads, 0, 4096, "CPU threads; 0 = all cores");
    add_device_option(*app, device)->description("where the model runs with --stream or an intervention");
    add_intervention_options(*app, edits);
    parse(*app, argv);
    if (stream && window_option->count() > 0) throw Error("--stream and --window exclude each other (--stream has no windows)");
    // Interventions need the inference backend (the trainer's path computes γ from the config).
    // Without them the windows run the trainer's forward (the RetNet's or the twin's), so that
    // --tail reproduces the trainer's validation numbers exactly.
    const bool edited = !parse_interventions(edits.mute, edits.gamma).empty();
    // Ctrl-C is caught from the start: a large model takes seconds to load (its loader polls the
    // flag between tensors), then the text is scanned and evaluated, both polling it.
    InterruptGuard interrupt;
    std::unique_ptr<Backend> backend;
    if (stream || edited) {
        backend = make_backend_option(device, load_model_edited(model_dir, edits));
    } else if (device != "cpu") {
        // The windows run the trainer's forward on the CPU: a device asked for is named, not dropped.
        require_one_of("--device", device, available_devices());
        std::fprintf(stderr, "retnet eval: --device %s applies with --stream or an intervention; the windows run "
                             "the trainer's forward on the CPU\n", device.c_str());
    }
    cpu::set_num_threads(threads);

    const std::string tok_path = (std::filesystem::path(model_dir) / "tokenizer.model").string();
    const Tokenizer tokenizer = Tokenizer::load(tok_path);
    // The text is read twice in blocks (checked and counted, then tokenized as it is evaluated), never
    // whole: a text of any size evaluates in the memory of one block and one batch of windows.
    const TextScan scan = scan_text_file(text_path, tail, &interrupt.flag());
    const train::TextFileSpan part{text_path, scan.tail_begin, scan.tail_characters};
    train::EvalResult r;
    // A batch of 8 windows is what evaluate_file runs at once.
    auto check_batch_memory = [window](const ModelConfig& config) {
        check_forward_memory(config, int64_t(window) * 8, Form::Chunkwise, window,
                             "evaluating 8 windows of --window " + std::to_string(window));
    };
    if (stream) {
        r = train::evaluate_file_streaming(*backend, tokenizer, part, 1024, eval_progress(interrupt));
    } else if (edited) {
        check_batch_memory(backend->model().config);
        r = train::evaluate_file(train::backend_batch_loss(*backend, interrupt.cancelled()), tokenizer, part, window, 8,
                                 eval_progress(interrupt));
    } else {
        check_model_memory(model_dir, 2);  // the model and its flattened parameters
        const train::LoadedWeights w = train::load_trained_weights(model_dir, interrupt.progress());
        interrupt.check();
        check_batch_memory(w.config);
        // A batch of windows of a large model takes seconds: its forward polls Ctrl-C before each
        // layer, the progress after each batch.
        train::LossOptions polled;
        polled.cancelled = interrupt.cancelled();
        const train::BatchLoss loss = [&w, polled](const train::BatchView& view) {
            return train::loss_and_gradient<float>(w.config, w.layout, w.params.data(), view, nullptr, polled);
        };
        r = train::evaluate_file(loss, tokenizer, part, window, 8, eval_progress(interrupt));
    }
    end_progress_line();
    std::printf("text            %s (%s)\n", shown(text_path).c_str(),
                tail < 1.0 ? ("last " + std::to_string(tail * 100).substr(0, 5) + "% of the characters").c_str()
                           : "whole file");
    if (stream)
        std::printf("tokens          %lld predicted, one sequence (state carried, %s backend)\n",
                    static_cast<long long>(r.tokens), backend->name().c_str());
    else
        std::printf("tokens          %lld predicted, windows of %d\n", static_cast<long long>(r.tokens), window);
    std::printf("characters      %lld\n", static_cast<long long>(r.characters));
    std::printf("loss per token  %.4f nats\n", r.loss_per_token);
    std::printf("bits per char   %.4f\n", r.bits_per_char);
    return 0;
}

const Command reg("eval", "loss and bits per character of a model on a text", &run_eval);

}  // namespace
}  // namespace retnet::cli
