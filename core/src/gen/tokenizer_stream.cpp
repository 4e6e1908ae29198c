// SPDX-License-Identifier: GPL-3.0-or-later
// Block-wise tokenization of a text file (retnet/text_stream.h).
#include <cerrno>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/text_stream.h"
#include "retnet/utf8.h"

namespace retnet {

namespace {

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::ifstream open_text(const std::string& path) {
    require_regular_file(path);  // a FIFO would block, a directory read as empty
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    return in;
}

// Where to end a block of `text` (not the last one): before a space between two non-spaces in its
// second half, else at the last character boundary. 0 when the block must grow first.
size_t cut_position(const std::string& text) {
    for (size_t p = text.size() - 1; p > text.size() / 2; --p)
        if (text[p] == ' ' && text[p - 1] != ' ' && p + 1 < text.size() && text[p + 1] != ' ') return p;
    size_t p = text.size() - 1;
    while (p > 0 && is_continuation(text[p])) --p;
    return p;
}

}  // namespace

TextScan scan_text_file(const std::string& path, double tail, const std::atomic<bool>* stop) {
    if (!(tail > 0.0 && tail <= 1.0)) throw Error("tail fraction must be in (0, 1], got " + std::to_string(tail));
    TextScan scan;
    {
        std::ifstream in = open_text(path);
        std::vector<char> block(size_t(1) << 20);
        std::string carry;  // an incomplete character at a block's end, checked with the next block
        while (in) {
            if (stop && stop->load()) throw Cancelled();
            in.read(block.data(), static_cast<std::streamsize>(block.size()));
            std::string text = carry + std::string(block.data(), static_cast<size_t>(in.gcount()));
            size_t end = text.size();
            if (in) {  // more follows: keep an unfinished character for the next block
                size_t p = text.size();
                while (p > 0 && text.size() - p < 4 && is_continuation(text[p - 1])) --p;
                if (p > 0 && (static_cast<unsigned char>(text[p - 1]) & 0xC0) == 0xC0) end = p - 1;
            }
            if (const auto bad = find_invalid_utf8(std::string_view(text).substr(0, end))) {
                char byte[8];
                std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[*bad]));
                throw Error(path + ": invalid UTF-8 at byte offset " + std::to_string(scan.bytes - carry.size() + *bad) +
                            " (byte " + byte + ")");
            }
            for (size_t i = 0; i < end; ++i) scan.characters += !is_continuation(text[i]);
            scan.bytes += static_cast<uint64_t>(in.gcount());
            carry = text.substr(end);
        }
    }
    if (tail >= 1.0) {
        scan.tail_characters = scan.characters;
        return scan;
    }
    // Second pass: the byte where the last `tail` of the characters begins (as train::split_tail).
    const int64_t head = scan.characters - static_cast<int64_t>(std::llround(static_cast<double>(scan.characters) * tail));
    scan.tail_characters = scan.characters - head;
    std::ifstream in = open_text(path);
    std::vector<char> block(size_t(1) << 20);
    int64_t seen = 0;
    uint64_t offset = 0;
    while (in) {
        in.read(block.data(), static_cast<std::streamsize>(block.size()));
        for (std::streamsize i = 0; i < in.gcount(); ++i, ++offset)
            if (!is_continuation(block[static_cast<size_t>(i)]) && seen++ == head) {
                scan.tail_begin = offset;
                return scan;
            }
    }
    scan.tail_begin = scan.bytes;
    return scan;
}

TextTokenStream::TextTokenStream(const Tokenizer& tokenizer, const std::string& path, uint64_t begin, size_t block_bytes)
    : tokenizer_(&tokenizer), path_(path), in_(open_text(path)), block_bytes_(std::max<size_t>(block_bytes, 16)) {
    in_.seekg(0, std::ios::end);
    const auto size = static_cast<uint64_t>(in_.tellg());
    bytes_total_ = size > begin ? size - begin : 0;
    in_.seekg(static_cast<std::streamoff>(begin));
    // Does encode() put a space (▁) before the text? Then a block that starts after a cut space
    // leaves that space to it.
    const std::vector<int32_t> probe = tokenizer.encode("a");
    dummy_prefix_ = !probe.empty() && tokenizer.token_bytes(probe[0], false).rfind(' ', 0) == 0;
}

bool TextTokenStream::fill() {
    if (at_eof_) return false;
    std::string block(block_bytes_, '\0');
    in_.read(block.data(), static_cast<std::streamsize>(block.size()));
    block.resize(static_cast<size_t>(in_.gcount()));
    if (!in_) at_eof_ = true;
    bytes_read_ += block.size();
    pending_ += block;
    return !block.empty();
}

bool TextTokenStream::next(std::vector<int32_t>& out) {
    while (pending_.size() < block_bytes_ && fill()) {
    }
    if (pending_.empty()) return false;
    std::string text;
    if (at_eof_) {
        text.swap(pending_);
    } else {
        size_t cut = cut_position(pending_);
        if (cut == 0) cut = pending_.size();  // no character boundary at all: invalid UTF-8, encode() says where
        text = pending_.substr(0, cut);
        pending_.erase(0, cut);
    }
    std::string_view part(text);
    if (!at_start_ && dummy_prefix_ && !part.empty() && part.front() == ' ') part.remove_prefix(1);
    at_start_ = false;
    const std::vector<int32_t> tokens = tokenizer_->encode(part);
    out.insert(out.end(), tokens.begin(), tokens.end());
    return true;
}

}  // namespace retnet
