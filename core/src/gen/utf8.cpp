// SPDX-License-Identifier: GPL-3.0-or-later
// UTF-8 validation after Unicode Table 3-7 (well-formed byte sequences).
#include "retnet/utf8.h"

#include <cstdio>

#include "retnet/error.h"

namespace retnet {
namespace {

constexpr int kTruncated = -1;  // a valid prefix of a sequence, cut short by the end of the text
constexpr int kInvalid = 0;

// Length of the well-formed sequence starting at `pos`, or kInvalid / kTruncated.
int scan_sequence(std::string_view text, size_t pos) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    if (lead < 0x80) return 1;
    int length = 0;
    unsigned char second_lo = 0x80, second_hi = 0xBF;  // Table 3-7 narrows the second byte only
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead == 0xE0) {
        length = 3, second_lo = 0xA0;  // no overlong 3-byte forms
    } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
        length = 3;
    } else if (lead == 0xED) {
        length = 3, second_hi = 0x9F;  // no surrogates
    } else if (lead == 0xF0) {
        length = 4, second_lo = 0x90;  // no overlong 4-byte forms
    } else if (lead >= 0xF1 && lead <= 0xF3) {
        length = 4;
    } else if (lead == 0xF4) {
        length = 4, second_hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return kInvalid;
    }
    for (int k = 1; k < length; ++k) {
        if (pos + static_cast<size_t>(k) >= text.size()) return kTruncated;
        const auto byte = static_cast<unsigned char>(text[pos + static_cast<size_t>(k)]);
        const unsigned char lo = k == 1 ? second_lo : 0x80, hi = k == 1 ? second_hi : 0xBF;
        if (byte < lo || byte > hi) return kInvalid;
    }
    return length;
}

}  // namespace

size_t utf8_sequence_length(std::string_view text, size_t pos) {
    const int length = scan_sequence(text, pos);
    return length > 0 ? static_cast<size_t>(length) : 0;
}

bool is_c1_control(std::string_view text, size_t pos) {
    return pos + 1 < text.size() && static_cast<unsigned char>(text[pos]) == 0xC2 &&
           static_cast<unsigned char>(text[pos + 1]) >= 0x80 && static_cast<unsigned char>(text[pos + 1]) < 0xA0;
}

std::optional<size_t> find_invalid_utf8(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
        const int length = scan_sequence(text, pos);
        if (length <= 0) return pos;
        pos += static_cast<size_t>(length);
    }
    return std::nullopt;
}

void check_utf8(std::string_view text, const std::string& what) {
    if (auto offset = find_invalid_utf8(text)) {
        char byte[8];
        std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[*offset]));
        throw Error(what + ": invalid UTF-8 at byte offset " + std::to_string(*offset) + " (byte " +
                    byte + ")");
    }
}

size_t complete_utf8_prefix(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
        const int length = scan_sequence(text, pos);
        if (length == kTruncated) return pos;
        pos += length == kInvalid ? 1 : static_cast<size_t>(length);
    }
    return text.size();
}

void append_replacement_character(std::string& out) { out += "\xEF\xBF\xBD"; }

std::string Utf8Assembler::push(std::string_view bytes) {
    pending_.append(bytes);
    std::string out;
    size_t pos = 0;
    while (pos < pending_.size()) {
        const int length = scan_sequence(pending_, pos);
        if (length == kTruncated) break;
        if (length == kInvalid) {
            append_replacement_character(out);
            ++pos;
        } else {
            out.append(pending_, pos, static_cast<size_t>(length));
            pos += static_cast<size_t>(length);
        }
    }
    pending_.erase(0, pos);
    return out;
}

std::string Utf8Assembler::flush() {
    std::string out;
    if (!pending_.empty()) append_replacement_character(out);
    pending_.clear();
    return out;
}

std::string printable(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        const auto byte = static_cast<unsigned char>(text[i]);
        if ((byte < 0x20 && byte != '\n' && byte != '\t') || byte == 0x7F) {
            const unsigned picture = byte == 0x7F ? 0x2421 : 0x2400 + byte;
            out += static_cast<char>(0xE0 | (picture >> 12));
            out += static_cast<char>(0x80 | ((picture >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (picture & 0x3F));
        } else if (is_c1_control(text, i)) {
            append_replacement_character(out);  // C1 controls have no control pictures
            ++i;
        } else {
            out += text[i];
        }
    }
    return out;
}

}  // namespace retnet
