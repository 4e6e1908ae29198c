// SPDX-License-Identifier: GPL-3.0-or-later
// `retnet tokenizer train`: SentencePiece's trainer fed from memory, with byte fallback so a
// trained tokenizer can encode any UTF-8 text without <unk>.
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "io/atomic_file.h"
#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/tokenizer.h"
#include "sentencepiece_message.h"

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

// A char tokenizer holds every distinct character (and, with byte fallback, the 256 byte pieces)
// plus the special pieces: say so up front instead of SentencePiece's internal check.
void check_char_vocabulary(std::span<const std::string> lines, const TokenizerTrainOptions& options) {
    std::unordered_set<uint32_t> characters;
    for (const std::string& line : lines)
        for (size_t i = 0; i < line.size(); ++i)
            if ((static_cast<unsigned char>(line[i]) & 0xC0) != 0x80) {
                uint32_t c = static_cast<unsigned char>(line[i]);
                for (size_t k = i + 1; k < line.size() && (static_cast<unsigned char>(line[k]) & 0xC0) == 0x80; ++k)
                    c = (c << 8) | static_cast<unsigned char>(line[k]);
                characters.insert(c);
            }
    const int specials = (options.bos_id >= 0) + (options.eos_id >= 0) + (options.unk_id >= 0) + (options.pad_id >= 0);
    const int needed = static_cast<int>(characters.size()) + specials + (options.byte_fallback ? 256 : 0);
    if (options.vocab_size < needed)
        throw Error("a char tokenizer of this text needs --vocab-size of at least " + std::to_string(needed) + " (" +
                    std::to_string(characters.size()) + " distinct characters, " + std::to_string(specials) +
                    " special pieces" + (options.byte_fallback ? ", 256 byte pieces" : "") + "), got " +
                    std::to_string(options.vocab_size));
}

// SentencePiece's two refusals of a vocabulary size, in this command's words (it names its own options:
// vocab_size, --character_coverage); other messages as sentencepiece_message gives them.
std::string training_message(const std::string& status, const TokenizerTrainOptions& options) {
    const std::string text = sentencepiece_message(status);
    const std::string given = "--vocab-size " + std::to_string(options.vocab_size);
    long a = 0, b = 0;
    if (std::sscanf(text.c_str(), "Vocabulary size is smaller than required_chars. %ld vs %ld", &a, &b) == 2)
        return given + " is less than the " + std::to_string(b) + " pieces this text's characters need with " +
               (options.byte_fallback ? "the 256 byte pieces and " : "") +
               "the special ones: raise --vocab-size to at least " + std::to_string(b);
    if (std::sscanf(text.c_str(), "Vocabulary size too high (%ld). Please set it to a value <= %ld", &a, &b) == 2)
        return given + " is more than a " + options.type + " tokenizer of this text can have (at most " +
               std::to_string(b) + "): lower --vocab-size, or train on more text";
    return text.empty() ? "no reason given" : text;
}

// The memory SentencePiece's training adds beside the text it is given. It allocates inside its own
// threads, where a failed allocation ends the process (std::terminate), so the estimate is checked before
// it starts. Measured on x86-64 Debian 12 (2026-12-06, ulimit -v bisected over 20 KB – 5.6 MB of text, bpe
// and unigram, vocabularies of 600 and 8000; the resident size at 22 MB): beyond what the process holds,
// 15–60 MiB up to 1 MB of text, then 21 (bpe) to 30 (unigram) bytes a byte more; 48 MiB and 32 bytes a byte
// keep a margin.
uint64_t training_bytes(uint64_t text_bytes) {
    return saturating_sum({uint64_t(48) << 20, saturating_product({32, text_bytes})});
}

// The longest line SentencePiece trains on (its max_sentence_length); longer ones are skipped. Its bpe
// trainer keeps a word's positions in 16 bits: a word of 32,770 characters without a space crashed it
// (SIGSEGV in bpe::Trainer::ComputeFreq; at 65,536 a failed check ended the process), so bpe's lines
// stop at 32,768 bytes, which no longer word can fit in.
size_t max_training_line_bytes(const std::string& type) { return type == "bpe" ? 32768 : 65536; }

}  // namespace

std::string train_tokenizer(std::span<const std::string> lines, const TokenizerTrainOptions& options) {
    if (options.type != "bpe" && options.type != "unigram" && options.type != "char")
        throw Error("unknown tokenizer type '" + options.type + "' (expected bpe, unigram or char)");
    if (options.vocab_size < 8) throw Error("tokenizer vocabulary size must be at least 8");
    const size_t max_line = max_training_line_bytes(options.type);
    size_t total_bytes = 0, trained_bytes = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
        check_utf8(lines[i], "training text line " + std::to_string(i + 1));
        total_bytes += lines[i].size();
        if (lines[i].size() <= max_line) trained_bytes += lines[i].size();
    }
    if (total_bytes == 0) throw Error("training text is empty");
    // SentencePiece skips longer lines and, with none left, failed without a reason.
    if (trained_bytes == 0)
        throw Error("every line of the training text is longer than " + std::to_string(max_line) +
                    " bytes, which the tokenizer trainer skips: break the text into lines");
    if (options.type == "char") check_char_vocabulary(lines, options);
    check_memory_room(training_bytes(total_bytes), "training a tokenizer on " + format_bytes(total_bytes) + " of text");

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
        {"max_sentence_length", std::to_string(max_line)},
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
    sentencepiece::util::Status status;
    try {
        status = sentencepiece::SentencePieceTrainer::Train(spec, &iterator, &model);
    } catch (const std::system_error& e) {  // a thread it could not start (EAGAIN: no room for its stack)
        throw Error("tokenizer training failed: it could not start its threads (" + std::string(e.what()) +
                    "): raise the memory limit or train on less text");
    }
    if (!status.ok()) throw Error("tokenizer training failed: " + training_message(status.ToString(), options));
    return model;
}

Tokenizer train_tokenizer_file(const std::string& text_file, const TokenizerTrainOptions& options,
                               const std::string& out_dir) {
    require_regular_file(text_file);  // a FIFO would block, a directory read as empty
    // the lines (their bytes and a string each) and the training, before a byte is read
    std::error_code size_error;
    const uint64_t file_bytes = std::filesystem::file_size(text_file, size_error);
    if (!size_error)
        check_memory_room(saturating_sum({saturating_product({2, file_bytes}), training_bytes(file_bytes)}),
                          "training a tokenizer on " + format_bytes(file_bytes) + " of text");
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
    // getline ends on a failed allocation or read as at the end (badbit): a 600 MB line under ulimit -v
    // left the lines before it to train on, with no word
    if (in.bad() || !in.eof())
        throw Error(text_file + ": cannot read it to its end (after line " + std::to_string(line_number) +
                    "; out of memory or a read error)");
    const std::string model = train_tokenizer(lines, options);
    Tokenizer tokenizer = Tokenizer::from_serialized(model, "trained tokenizer");

    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir + ": cannot create directory (" + ec.message() + ")");
    const auto path = std::filesystem::path(out_dir) / "tokenizer.model";
    io::AtomicFile out(path.string());  // a full disk fails here, not as a truncated model later
    out.write(model);
    out.commit();
    return tokenizer;
}

}  // namespace retnet
