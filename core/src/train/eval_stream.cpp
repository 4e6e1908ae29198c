// SPDX-License-Identifier: GPL-3.0-or-later
// Evaluation of a text file as its tokens stream in (retnet/eval_stream.h).
#include "retnet/eval_stream.h"

#include <algorithm>
#include <numbers>

#include "retnet/error.h"
#include "retnet/sampler.h"

namespace retnet::train {

namespace {

// The tokens of a file part, pulled as needed; keeps the counts evaluate_text reports.
class TokenFeed {
public:
    TokenFeed(const Tokenizer& tokenizer, const TextFileSpan& text)
        : tokenizer_(tokenizer), stream_(tokenizer, text.path, text.begin, text.block_bytes), characters_(text.characters) {}

    // Makes tokens() hold at least `n` tokens unless the text ends first; false if it ended short.
    bool have(size_t n) {
        while (tokens_.size() < n)
            if (!stream_.next(tokens_)) return false;
        if (!first_seen_ && !tokens_.empty()) {  // the first token is context only: not counted
            first_seen_ = true;
            characters_ -= count_characters(tokenizer_.token_bytes(tokens_[0], true));
        }
        return true;
    }
    std::vector<int32_t>& tokens() { return tokens_; }
    void drop(size_t n) {  // tokens evaluated and no longer needed as context
        n = std::min(n, tokens_.size());
        tokens_.erase(tokens_.begin(), tokens_.begin() + static_cast<std::ptrdiff_t>(n));
        dropped_ += static_cast<int64_t>(n);
    }
    // Predicted tokens in all, estimated from the part of the file read so far.
    // The predictions in all: the tokens, the first one context only (exact once the text is read).
    int64_t estimated_total(int64_t done) const {
        const double read = static_cast<double>(std::max<uint64_t>(1, stream_.bytes_read()));
        return std::max<int64_t>(done, static_cast<int64_t>(static_cast<double>(dropped_ + static_cast<int64_t>(tokens_.size())) *
                                                           static_cast<double>(stream_.bytes_total()) / read) - 1);
    }
    EvalResult finish(double loss_sum, int64_t predicted) const {
        if (predicted < 1) throw Error("evaluation text is too short: fewer than 2 tokens");
        EvalResult r;
        r.tokens = predicted;
        r.characters = characters_;
        r.loss_per_token = loss_sum / static_cast<double>(predicted);
        r.bits_per_char = loss_sum / std::numbers::ln2 / static_cast<double>(std::max<int64_t>(1, characters_));
        return r;
    }

private:
    const Tokenizer& tokenizer_;
    TextTokenStream stream_;
    std::vector<int32_t> tokens_;
    int64_t characters_;
    int64_t dropped_ = 0;
    bool first_seen_ = false;
};

}  // namespace

EvalResult evaluate_file(const BatchLoss& batch_loss, const Tokenizer& tokenizer, const TextFileSpan& text, int window,
                         int batch, const EvalProgress& progress) {
    if (window < 1 || batch < 1) throw Error("evaluation window and batch must be at least 1 token");
    TokenFeed feed(tokenizer, text);
    double loss_sum = 0;
    int64_t done = 0;
    std::vector<int32_t> in, tg;
    // `count` windows of `len` predictions from the start of the feed: inputs tokens[s .. s+len),
    // targets tokens[s+1 .. s+len+1); the last target stays as the next window's first input.
    auto run = [&](int count, int len) {
        const std::vector<int32_t>& tokens = feed.tokens();
        in.resize(static_cast<size_t>(count) * static_cast<size_t>(len));
        tg.resize(in.size());
        for (size_t i = 0; i < in.size(); ++i) {
            const size_t s = (i / static_cast<size_t>(len)) * static_cast<size_t>(window), t = i % static_cast<size_t>(len);
            in[i] = tokens[s + t];
            tg[i] = tokens[s + t + 1];
        }
        loss_sum += batch_loss(BatchView{in.data(), tg.data(), count, len}) * count * len;
        done += int64_t(count) * len;
        feed.drop(static_cast<size_t>(count) * static_cast<size_t>(window));
        if (progress && !progress(done, feed.estimated_total(done))) throw Cancelled();
    };
    const size_t group = static_cast<size_t>(batch) * static_cast<size_t>(window);
    while (feed.have(group + 1)) run(batch, window);
    const int64_t rest_pred = std::max<int64_t>(0, static_cast<int64_t>(feed.tokens().size()) - 1);
    const int64_t full = rest_pred / window;
    if (full > 0) run(static_cast<int>(full), window);
    if (const int64_t rest = rest_pred - full * window; rest > 0) run(1, static_cast<int>(rest));
    return feed.finish(loss_sum, done);
}

EvalResult evaluate_file_streaming(Backend& backend, const Tokenizer& tokenizer, const TextFileSpan& text, int piece,
                                   const EvalProgress& progress) {
    if (piece < 1) throw Error("evaluation piece must be at least 1 token");
    TokenFeed feed(tokenizer, text);
    backend.reset();
    ForwardOptions options;
    options.form = Form::Chunkwise;
    double loss_sum = 0;
    int64_t done = 0;
    while (true) {
        feed.have(static_cast<size_t>(piece) + 1);
        const std::vector<int32_t>& tokens = feed.tokens();
        const size_t len = std::min(static_cast<size_t>(piece), tokens.empty() ? 0 : tokens.size() - 1);
        if (len == 0) break;
        const Tensor logits = backend.forward(std::span(tokens).subspan(0, len), options);  // (len, V)
        const auto V = static_cast<size_t>(logits.shape.at(1));
        for (size_t t = 0; t < len; ++t) loss_sum -= log_probability({logits.data.data() + t * V, V}, tokens[t + 1]);
        done += static_cast<int64_t>(len);
        feed.drop(len);
        if (progress && !progress(done, feed.estimated_total(done))) throw Cancelled();
    }
    return feed.finish(loss_sum, done);
}

}  // namespace retnet::train
