// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// UTF-8 checks for prompts and a byte assembler for streamed output. Token pieces with byte
// fallback can split one character over several tokens, so streamed text is released only up to
// the last complete character; the rest waits for the next token.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace retnet {

// Byte offset of the first byte that does not start or continue a valid UTF-8 sequence
// (overlong forms, surrogates and code points above U+10FFFF are invalid, as is a sequence cut
// short by the end of the text); nullopt when the whole text is valid.
std::optional<size_t> find_invalid_utf8(std::string_view text);
inline bool is_valid_utf8(std::string_view text) { return !find_invalid_utf8(text); }

// Length in bytes of the well-formed character that starts at text[pos], or 0 where none does (a
// byte that cannot start one, or a sequence that is invalid or cut short by the end of the text).
size_t utf8_sequence_length(std::string_view text, size_t pos);

// Whether a C1 control (U+0080..U+009F, two bytes: 0xC2 0x80..0x9F) starts at text[pos]. They are
// well-formed characters, but CSI (U+009B) starts an escape sequence on some terminals.
bool is_c1_control(std::string_view text, size_t pos);

// Throws retnet::Error "<what>: invalid UTF-8 at byte offset N (byte 0xXX)".
void check_utf8(std::string_view text, const std::string& what);

// Length of the longest prefix of `text` that does not end inside an unfinished sequence: the
// tail held back is a proper prefix of a valid sequence (at most 3 bytes).
size_t complete_utf8_prefix(std::string_view text);

// Turns a stream of byte chunks into valid UTF-8 text. push() returns every complete character
// received so far and keeps an unfinished tail; bytes that can never become valid are replaced
// by U+FFFD, so every returned string, and every concatenation of them, is valid UTF-8.
class Utf8Assembler {
public:
    std::string push(std::string_view bytes);
    // Ends the stream: an unfinished tail becomes U+FFFD.
    std::string flush();
    bool has_pending() const { return !pending_.empty(); }
    void clear() { pending_.clear(); }

private:
    std::string pending_;  // at most 3 bytes of an unfinished sequence
};

// Appends U+FFFD (the replacement character) to `out`.
void append_replacement_character(std::string& out);

// Terminal-safe text: C0 controls other than \n and \t, and DEL, become their visible Unicode
// "control picture" (U+2400 + c), and C1 controls (U+0080..U+009F, which have none) U+FFFD, so
// generated escape sequences cannot drive the terminal.
std::string printable(const std::string& text);

}  // namespace retnet
