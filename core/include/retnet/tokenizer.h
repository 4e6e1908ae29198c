// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Text <-> token ids through a SentencePiece model (`tokenizer.model` in a model directory), the
// trainer behind `retnet tokenizer train`, and the streaming detokenizer used during generation.
// SentencePiece stays an implementation detail: nothing here includes its headers.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "retnet/utf8.h"

namespace retnet {

class Tokenizer {
public:
    ~Tokenizer();
    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;

    // Throws retnet::Error naming the file when it is missing or not a SentencePiece model.
    static Tokenizer load(const std::string& path);
    // The serialized ModelProto (the bytes of a tokenizer.model file).
    static Tokenizer from_serialized(std::string_view bytes, const std::string& source = "tokenizer");
    // <directory>/tokenizer.model, or nullptr when the directory has none.
    static std::unique_ptr<Tokenizer> load_from_model_dir(const std::string& directory);

    // Text must be valid UTF-8 (else Error naming the byte offset). No BOS/EOS is added.
    std::vector<int32_t> encode(std::string_view text) const;
    // Whole-sequence decode (SentencePiece's own rules); ids outside the vocabulary are skipped.
    std::string decode(std::span<const int32_t> ids) const;

    int vocab_size() const;
    int bos_id() const;  // -1 when the tokenizer has none
    int eos_id() const;
    int unk_id() const;
    bool is_control(int32_t id) const;  // <s>, </s>, <pad>…: no surface text
    bool is_byte(int32_t id) const;     // <0xNN> byte-fallback piece
    // The raw piece ("▁the", "<0xE2>", "</s>"); "" for ids outside the vocabulary.
    std::string piece(int32_t id) const;
    // The piece as a reader would see it in a candidate list: "▁" shown as a space, the newline and
    // tab byte pieces as "↵" and "⇥" (common tokens in a character-level model); always valid UTF-8
    // (other byte pieces stay "<0xE2>").
    std::string display_piece(int32_t id) const;
    // The bytes this token adds to the text: a byte piece gives its one byte (maybe part of a
    // character), control pieces give nothing, "▁" becomes a space. At the start of the text
    // the dummy-prefix space that encode() added is dropped, as decode() does.
    std::string token_bytes(int32_t id, bool at_text_start) const;

    std::string serialized() const;  // the model bytes, as written to tokenizer.model

private:
    struct Impl;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Streaming detokenizer: push() one token at a time and get back only complete UTF-8 text, so a
// character split over byte-fallback tokens appears once all its bytes have arrived. The
// concatenation of all outputs plus flush() equals tokenizer.decode(ids) for valid sequences.
class StreamDecoder {
public:
    // `at_text_start`: no text precedes the first pushed token (its leading space is dropped).
    explicit StreamDecoder(const Tokenizer& tokenizer, bool at_text_start = true);
    std::string push(int32_t id);
    std::string flush();  // an unfinished character becomes U+FFFD
    bool has_pending() const { return assembler_.has_pending(); }

private:
    const Tokenizer* tokenizer_;
    bool at_text_start_;
    Utf8Assembler assembler_;
};

struct TokenizerTrainOptions {
    // "bpe" | "unigram" | "char" (one piece per character of the text; with byte fallback the
    // vocabulary is the 3 specials, the 256 byte pieces and the characters seen)
    std::string type = "bpe";
    int vocab_size = 0;
    bool byte_fallback = true;  // unknown characters become <0xNN> byte pieces, never <unk>
    // Exact round trip: no Unicode normalization and whitespace kept as written.
    bool identity_normalization = true;
    double character_coverage = 1.0;
    int bos_id = 1, eos_id = 2, unk_id = 0, pad_id = -1;
};

// Trains on the given lines (one sentence each) and returns the serialized model.
// Throws retnet::Error with the trainer's reason (e.g. a vocabulary too large for the text).
std::string train_tokenizer(std::span<const std::string> lines, const TokenizerTrainOptions& options);
// Reads `text_file` (UTF-8, checked), trains, and writes <out_dir>/tokenizer.model
// (creating out_dir). Returns the trained tokenizer.
Tokenizer train_tokenizer_file(const std::string& text_file, const TokenizerTrainOptions& options,
                               const std::string& out_dir);

}  // namespace retnet
