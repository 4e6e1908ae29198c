// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/error.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <string_view>
#include <vector>

#include "retnet/utf8.h"

namespace retnet {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void append_hex(std::string& out, unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
}

// Characters that change how the rest of a terminal line reads without being controls: the line and
// paragraph separators and the bidirectional marks, embeddings, overrides and isolates (U+202E would
// show "txt.exe" as "exe.txt").
bool reorders_or_breaks_the_line(uint32_t code) {
    return code == 0x061C || code == 0x200E || code == 0x200F || (code >= 0x2028 && code <= 0x202E) ||
           (code >= 0x2066 && code <= 0x2069);
}

// The code point of a well-formed sequence of 2 or 3 bytes at text[i] (0 for other lengths).
uint32_t code_point(const std::string& text, size_t i, size_t length) {
    const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(text[i + k])); };
    if (length == 2) return (b(0) & 0x1F) << 6 | (b(1) & 0x3F);
    if (length == 3) return (b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F);
    return 0;
}

// Appends the escaped form of the character or byte at text[i]; returns the bytes of text it took.
size_t escape_one(const std::string& text, size_t i, std::string& out) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
        // A well-formed character passes but for the C1 controls and those that reorder or break the
        // line (as \uXXXX); any other byte is escaped on its own.
        const bool c1 = is_c1_control(text, i);
        const size_t length = c1 ? 0 : utf8_sequence_length(text, i);
        if (const uint32_t code = code_point(text, i, length); reorders_or_breaks_the_line(code)) {
            out += "\\u";
            for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(code >> shift) & 15];
            return length;
        }
        if (length > 0) {
            out.append(text, i, length);
            return length;
        }
        const size_t escaped = c1 ? 2 : 1;
        for (size_t e = 0; e < escaped; ++e) append_hex(out, static_cast<unsigned char>(text[i + e]));
        return escaped;
    }
    if (c >= 0x20 && c != 0x7f) out += text[i];
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else append_hex(out, c);
    return 1;
}

// "...(N bytes cut)..." markers of an earlier cut in text (a message that quotes a cut message): their
// place and N, so that cutting again counts what both cuts removed.
struct CutMarker {
    size_t begin, end, bytes;
};
std::vector<CutMarker> cut_markers(const std::string& text) {
    static constexpr std::string_view kOpen = "...(", kClose = " bytes cut)...";
    std::vector<CutMarker> markers;
    for (size_t at = text.find(kOpen); at != std::string::npos; at = text.find(kOpen, at + 1)) {
        size_t digits_end = at + kOpen.size();
        while (digits_end < text.size() && text[digits_end] >= '0' && text[digits_end] <= '9') ++digits_end;
        const size_t digits = digits_end - at - kOpen.size();
        if (digits == 0 || digits > 18 || text.compare(digits_end, kClose.size(), kClose) != 0) continue;
        markers.push_back({at, digits_end + kClose.size(), std::stoull(text.substr(at + kOpen.size(), digits))});
    }
    return markers;
}

}  // namespace

// The limit applies to the escaped text (an escape is up to four times its byte): where it is
// passed, the message keeps whole characters and escapes of its start and end, and says how many
// bytes it cut between them.
std::string Error::one_line(const std::string& text) {
    // Of a huge text only its ends can be kept: the middle goes first (as an earlier cut, whose
    // count the cut below takes over), so that the work and memory stay those of a few KB.
    constexpr size_t kWindow = 4 * kMaxLength;
    if (text.size() > 2 * kWindow + 64) {
        const auto continuation = [&](size_t at) { return (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80; };
        size_t head = kWindow, tail = text.size() - kWindow;
        while (head > 0 && continuation(head)) --head;
        while (tail < text.size() && continuation(tail)) ++tail;
        return one_line(text.substr(0, head) + "...(" + std::to_string(tail - head) + " bytes cut)..." +
                        text.substr(tail));
    }
    std::string out;
    out.reserve(text.size());
    struct Boundary {
        size_t in, out;  // where a character starts in text and in out
    };
    std::vector<Boundary> boundaries;
    for (size_t i = 0; i < text.size();) {
        if (text.size() > kMaxLength / 4) boundaries.push_back({i, out.size()});
        i += escape_one(text, i, out);
    }
    if (out.size() <= kMaxLength) return out;
    boundaries.push_back({text.size(), out.size()});
    const size_t keep = (kMaxLength - 40) / 2;  // the marker takes the rest: at most 38 bytes
    auto head = std::prev(std::upper_bound(boundaries.begin(), boundaries.end(), keep,
                                           [](size_t at, const Boundary& b) { return at < b.out; }));
    auto tail = std::lower_bound(boundaries.begin(), boundaries.end(), out.size() - keep,
                                 [](const Boundary& b, size_t at) { return b.out < at; });
    // An earlier cut's marker that this cut touches goes whole, and its count joins this one's.
    // (Markers are ASCII: every one of their bytes starts a character, so boundaries exist there.)
    // A marker typed into the text counts as one too; the sums saturate rather than wrap.
    const auto boundary_at = [&](size_t in) {
        return std::lower_bound(boundaries.begin(), boundaries.end(), in,
                                [](const Boundary& b, size_t at) { return b.in < at; });
    };
    constexpr uint64_t kMost = std::numeric_limits<uint64_t>::max();
    uint64_t marker_bytes = 0, earlier_cuts = 0;
    for (const CutMarker& m : cut_markers(text)) {
        if (m.end <= head->in || m.begin >= tail->in) continue;
        if (m.begin < head->in) head = boundary_at(m.begin);
        if (m.end > tail->in) tail = boundary_at(m.end);
        marker_bytes += m.end - m.begin;
        earlier_cuts = m.bytes > kMost - earlier_cuts ? kMost : earlier_cuts + m.bytes;
    }
    const uint64_t removed = tail->in - head->in;
    const uint64_t here = removed > marker_bytes ? removed - marker_bytes : 0;
    const uint64_t cut = here > kMost - earlier_cuts ? kMost : here + earlier_cuts;
    return out.substr(0, head->out) + "...(" + std::to_string(cut) + " bytes cut)..." + out.substr(tail->out);
}

}  // namespace retnet
