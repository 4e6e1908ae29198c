// SPDX-License-Identifier: GPL-3.0-or-later
// retnet chat: an interactive session that keeps the recurrent state between turns. Each line read
// from standard input is fed to the model after what it has already consumed (Generator::extend),
// so a turn costs its own tokens only, however long the conversation: the state has a fixed size.
// /reset starts over, /quit or end of input ends; Ctrl-C stops the reply being written, not the session.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/error.h"
#include "retnet/generate.h"
#include "retnet/utf8.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"

namespace retnet::cli {
namespace {

struct ChatCommand {
    std::string model_dir, device = "cpu";
    InterventionText edits;
    GenerationOptions generation;
    bool json = false;
};

struct Session {
    const Model& model;
    Generator& generator;
    const GenerationParams& params;
    bool add_bos, json;
    int turn = 0;
    bool fresh = true;  // nothing consumed yet: the next turn starts with BOS
};

// A line the session cannot take (invalid UTF-8, too many tokens, too large for memory): it is
// refused before the model sees it, so the state and the conversation stay as they were.
struct LineRefused {
    std::string why;
};

// The line's tokens, checked; throws LineRefused.
std::vector<int32_t> encode_line(Session& s, const std::string& line) {
    try {
        std::vector<int32_t> input = s.generator.encode_prompt(line + "\n", s.params.max_prompt_tokens, s.add_bos && s.fresh);
        // The first turn runs in the chosen form; later ones extend the state (chunkwise for parallel).
        const Form form = !s.fresh && s.params.prefill_form == Form::Parallel ? Form::Chunkwise : s.params.prefill_form;
        check_prompt_memory(s.model.config, static_cast<int64_t>(input.size()), form, s.params.chunk_size);
        return input;
    } catch (const Error& e) {
        throw LineRefused{e.what()};
    }
}

// One turn: the line (and its newline) after everything before, the reply streamed to stdout.
void chat_turn(Session& s, const std::string& line, InterruptGuard& interrupt) {
    const std::vector<int32_t> input = encode_line(s, line);
    interrupt.flag().store(false);
    size_t printed = 0;  // bytes of the reply's text streamed so far
    const auto on_token = [&](const TokenEvent& e) {
        if (s.json) return;
        std::fputs(printable(e.stream_text).c_str(), stdout);
        printed += e.stream_text.size();
        std::fflush(stdout);
        if (stdout_error() != 0) interrupt.flag().store(true);
    };
    // The first turn (and the first after /reset) starts a sequence; later ones extend it.
    const GenerationResult r = s.fresh ? s.generator.generate(input, s.params, on_token, &interrupt.flag())
                                       : s.generator.extend(input, s.params, on_token, &interrupt.flag());
    s.fresh = false;
    ++s.turn;
    check_stdout();
    const GenerationStats& st = r.stats;
    // RetNet's fixed state; the Transformer twin's KV cache, which grows with the conversation.
    const bool twin = s.model.config.is_transformer();
    const int64_t state_bytes = twin ? kv_cache_bytes(s.model.config, s.generator.length())
                                     : recurrent_state_bytes(s.model.config);
    if (s.json) {
        const nlohmann::json j = {{"type", "turn"}, {"turn", s.turn}, {"input_tokens", input}, {"tokens", r.tokens},
                                  {"text", r.text}, {"prefill_tokens", st.prefill_tokens}, {"prefill_ms", st.prefill_ms},
                                  {"tokens_per_s", st.tokens_per_s()}, {"stop_reason", stop_reason_name(st.stop_reason)},
                                  {"state_bytes", state_bytes}, {"sequence_tokens", s.generator.length()}};
        std::printf("%s\n", json_text(j).c_str());
    } else {
        // Text held back as a possible stop string that never completed.
        if (r.text.size() > printed) std::fputs(printable(r.text.substr(printed)).c_str(), stdout);
        std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    std::fprintf(stderr,
                 "[turn %d: %lld new tokens in %.1f ms; %lld tokens at %.1f tokens/s%s; %s %s%s, "
                 "conversation %lld tokens]\n",
                 s.turn, static_cast<long long>(st.prefill_tokens), st.prefill_ms,
                 static_cast<long long>(st.generated_tokens), st.tokens_per_s(),
                 st.stop_reason == StopReason::Cancelled ? ", stopped" : "", twin ? "KV cache" : "state",
                 format_bytes(state_bytes).c_str(), twin ? "" : " whatever the length",
                 static_cast<long long>(s.generator.length()));
}

// What the model keeps between turns, for the ready line.
std::string ready_state(const ModelConfig& c) {
    if (c.is_transformer()) return "its KV cache " + format_bytes(kv_cache_bytes(c, 1)) + " a token of the conversation";
    return "its state " + format_bytes(recurrent_state_bytes(c)) + " whatever the length of the conversation";
}

// Lines until end of input or /quit; Ctrl-C (`interrupt`) ends the reply under way. Returns the
// exit status: 1 when a line was refused.
int chat_loop(Session& s, InterruptGuard& interrupt) {
    const bool terminal = ::isatty(0) != 0;
    std::fprintf(stderr,
                 "retnet chat: ready (%s model, %s). /reset clears the state, /quit or end of input ends, Ctrl-C "
                 "stops a reply.\n",
                 format_name(s.model.config), ready_state(s.model.config).c_str());
    std::string line;
    int line_number = 0, status = 0;
    while (true) {
        if (terminal) std::fputs("> ", stderr);
        if (!std::getline(std::cin, line)) break;
        ++line_number;
        if (!line.empty() && line.back() == '\r') line.pop_back();  // a CRLF file or terminal
        if (line == "/quit") break;
        if (line == "/reset") {
            s.fresh = true;
            std::fputs("[state cleared]\n", stderr);
            continue;
        }
        if (line.empty()) continue;
        try {
            chat_turn(s, line, interrupt);
        } catch (const LineRefused& refused) {
            std::fprintf(stderr, "retnet chat: line %d skipped (the conversation goes on): %s\n", line_number,
                         refused.why.c_str());
            status = 1;
        }
    }
    return status;
}

int run_chat(const std::vector<std::string>& argv) {
    const auto app = make_app("chat", "An interactive session: each line of standard input is fed to the model after "
                                      "everything before, from the recurrent state it holds (never the history "
                                      "again), and the reply streams to standard output. /reset starts over, /quit "
                                      "or end of input ends, Ctrl-C stops the reply under way.");
    ChatCommand c;
    add_model_option(*app, c.model_dir);
    add_generation_options(*app, c.generation);
    add_device_option(*app, c.device);
    add_flag(*app, "--json", c.json, "print one JSON object per turn (its input and reply ids, text, speed)");
    add_intervention_options(*app, c.edits);
    parse(*app, argv);
    const std::string model_dir = model_dir_or_default(c.model_dir);
    GenerationParams params = c.generation.resolve("chat");
    params.checkpoint_interval = 0;  // nothing rewinds: keep only the state the model holds
    params.n_top = 0;
    // Ctrl-C while the model loads cancels the command; once the session is ready it ends the
    // reply under way.
    InterruptGuard interrupt;
    auto model = load_model_edited(model_dir, c.edits);
    auto backend = make_backend_option(c.device, model);
    const std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load_from_model_dir(model_dir);
    if (!tokenizer) throw Error(model_dir + " has no tokenizer.model: chat needs one to read text");
    Generator generator(*backend, tokenizer.get());
    Session session{*model, generator, params, !c.generation.no_bos, c.json};
    if (backend->name() == "cpu") check_blas_room();  // refused before "ready", not at the first line
    interrupt.check();
    // From here Ctrl-C ends a reply, not the session; SIGTERM still must end the session, also while
    // it waits for a line (a read that polls nothing).
    std::signal(SIGTERM, SIG_DFL);
    return chat_loop(session, interrupt);
}

const Command reg("chat", "an interactive session that keeps the recurrent state between turns", &run_chat);

}  // namespace
}  // namespace retnet::cli
