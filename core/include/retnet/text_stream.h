// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A text file tokenized block by block, so that evaluating a 1 GB text needs memory for one block
// (256 KiB of text: SentencePiece takes a few hundred bytes per character while it encodes) and
// the tokens in flight, not for the whole text and its tokenization.
//
// Blocks are cut before a single space between two non-spaces, where a whole-text tokenization
// starts a new piece too, and that space is left to the tokenizer's dummy prefix: the tokens are
// the ones of tokenizer.encode(whole text). (A block of 256 KiB without such a space is cut at a
// character boundary, where the tokens may differ from the whole text's.)
#include <atomic>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "retnet/tokenizer.h"

namespace retnet {

// One pass over a text file in blocks: the UTF-8 is checked (Error naming the byte offset), the
// characters counted, and the byte where the last `tail` fraction of the characters begins found.
// `stop` (may be null) cancels it (throws retnet::Cancelled).
struct TextScan {
    uint64_t bytes = 0;
    int64_t characters = 0;
    uint64_t tail_begin = 0;    // byte offset; 0 for tail = 1
    int64_t tail_characters = 0;
};
TextScan scan_text_file(const std::string& path, double tail, const std::atomic<bool>* stop = nullptr);

class TextTokenStream {
public:
    // The text of `path` from byte `begin` on (a character boundary, e.g. TextScan::tail_begin).
    TextTokenStream(const Tokenizer& tokenizer, const std::string& path, uint64_t begin,
                    size_t block_bytes = size_t(256) << 10);
    // Appends the next block's tokens to `out`; false (nothing appended) at the end of the text.
    bool next(std::vector<int32_t>& out);
    uint64_t bytes_read() const { return bytes_read_; }  // of the text from `begin`
    uint64_t bytes_total() const { return bytes_total_; }

private:
    bool fill();  // reads one more block into pending_; false at the end of the file
    const Tokenizer* tokenizer_;
    std::string path_;
    std::ifstream in_;
    size_t block_bytes_;
    std::string pending_;  // read, not yet tokenized (begins at a cut, or at `begin`)
    bool at_start_ = true, at_eof_ = false, dummy_prefix_ = false;
    uint64_t bytes_read_ = 0, bytes_total_ = 0;
};

}  // namespace retnet
