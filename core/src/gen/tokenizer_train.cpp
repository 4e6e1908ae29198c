// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet tokenizer train`: SentencePiece's trainer fed from memory, with byte fallback so a
// trained tokenizer can encode any UTF-8 text without <unk>.
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "retnet/error.h"
#include "retnet/tokenizer.h"

namespace retnet {
namespace {

class LineIterator : public sentencepiece::SentenceIterator {
public:
    explicit LineIterator(std::span<const std::string> lines) : lines_(lines) { skip_empty(); }
    bool done() const override { return index_ >= lines_.size(); }
    void Next() override {
        ++index_;
        skip_empty();
    }
    const std::string& value() const override { return lines_[index_]; }
    sentencepiece::util::Status status() const override { return {}; }

private:
    void skip_empty() {
        while (index_ < lines_.size() && lines_[index_].empty()) ++index_;
    }
    std::span<const std::string> lines_;
    size_t index_ = 0;
};

std::string first_line(std::string text) {
    if (auto newline = text.find('\n'); newline != std::string::npos) text.resize(newline);
    return text;
}

}  // namespace

std::string train_tokenizer(std::span<const std::string> lines, const TokenizerTrainOptions& options) {
    if (options.type != "bpe" && options.type != "unigram" && options.type != "char")
        throw Error("unknown tokenizer type '" + options.type + "' (expected bpe, unigram or char)");
    if (options.vocab_size < 8) throw Error("tokenizer vocabulary size must be at least 8");
    size_t total_bytes = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
        check_utf8(lines[i], "training text line " + std::to_string(i + 1));
        total_bytes += lines[i].size();
    }
    if (total_bytes == 0) throw Error("training text is empty");

    std::unordered_map<std::string, std::string> spec = {
        {"model_type", options.type},
        {"vocab_size", std::to_string(options.vocab_size)},
        {"byte_fallback", options.byte_fallback ? "true" : "false"},
        {"character_coverage", std::to_string(options.character_coverage)},
        {"bos_id", std::to_string(options.bos_id)},
        {"eos_id", std::to_string(options.eos_id)},
        {"unk_id", std::to_string(options.unk_id)},
        {"pad_id", std::to_string(options.pad_id)},
        {"split_digits", "true"},
        {"max_sentence_length", "65536"},
        {"num_threads", "2"},
        {"minloglevel", "2"},  // the trainer's progress log would flood stderr
    };
    if (options.identity_normalization) {
        spec["normalization_rule_name"] = "identity";
        spec["remove_extra_whitespaces"] = "false";
        spec["allow_whitespace_only_pieces"] = "true";
    }
    if (options.type == "unigram") spec["hard_vocab_limit"] = "false";

    LineIterator iterator(lines);
    std::string model;
    const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &iterator, &model);
    if (!status.ok()) throw Error("tokenizer training failed: " + first_line(status.ToString()));
    return model;
}

Tokenizer train_tokenizer_file(const std::string& text_file, const TokenizerTrainOptions& options,
                               const std::string& out_dir) {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) throw Error(text_file + ": cannot open training text");
    std::vector<std::string> lines;
    std::string line;
    size_t line_number = 0;
    while (std::getline(in, line)) {
        ++line_number;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        check_utf8(line, text_file + " line " + std::to_string(line_number));
        lines.push_back(std::move(line));
    }
    const std::string model = train_tokenizer(lines, options);
    Tokenizer tokenizer = Tokenizer::from_serialized(model, "trained tokenizer");

    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir + ": cannot create directory (" + ec.message() + ")");
    const auto path = std::filesystem::path(out_dir) / "tokenizer.model";
    const auto temporary = std::filesystem::path(out_dir) / "tokenizer.model.tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out.write(model.data(), static_cast<std::streamsize>(model.size()));
        if (!out) throw Error(temporary.string() + ": cannot write file");
    }
    std::filesystem::rename(temporary, path, ec);
    if (ec) throw Error(path.string() + ": cannot write file (" + ec.message() + ")");
    return tokenizer;
}

}  // namespace retnet
