// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The one exception type of the engine. Every error that a user can cause (bad file, bad option,
// bad shape, no GPU) is thrown as retnet::Error with a one-line message that names the problem;
// the CLI and the app print that line and carry on or exit non-zero.
#include <stdexcept>
#include <string>

namespace retnet {

class Error : public std::runtime_error {
public:
    // Messages quote names and text from files and options (a tensor name, a corrupt header);
    // control characters among them are escaped ("\n" -> "\\n"), as are the C1 controls and bytes that
    // are not UTF-8 ("\xff"), so a message is always one line of text that cannot drive the terminal;
    // and a message longer than kMaxLength keeps its start and end around a count of what was cut,
    // so a 1 MB value quoted from a file cannot flood the terminal.
    explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}
    explicit Error(const char* message) : Error(std::string(message)) {}

    static constexpr size_t kMaxLength = 1024;

private:
    static void append_hex(std::string& out, unsigned char c) {
        static constexpr char kHex[] = "0123456789abcdef";
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    // The length of the well-formed UTF-8 character at text[i] (a byte ≥ 0x80), or 0: overlong forms,
    // surrogates, code points above U+10FFFF and cut sequences are not characters.
    static size_t utf8_length(const std::string& text, size_t i) {
        const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
        const unsigned char c = byte(0);
        const size_t length = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (length == 0 || i + length > text.size()) return 0;
        for (size_t k = 1; k < length; ++k)
            if ((byte(k) & 0xC0) != 0x80) return 0;
        const unsigned char second = byte(1);
        if ((c == 0xE0 && second < 0xA0) || (c == 0xED && second > 0x9F) || (c == 0xF0 && second < 0x90) ||
            (c == 0xF4 && second > 0x8F))
            return 0;
        return length;
    }
    static std::string one_line(const std::string& text) {
        if (text.size() > kMaxLength) {
            const size_t keep = kMaxLength / 2;
            size_t head = keep, tail = text.size() - keep;
            while (head > 0 && (static_cast<unsigned char>(text[head]) & 0xC0) == 0x80) --head;  // whole UTF-8
            while (tail < text.size() && (static_cast<unsigned char>(text[tail]) & 0xC0) == 0x80) ++tail;
            return one_line(text.substr(0, head)) + "...(" + std::to_string(tail - head) + " bytes cut)..." +
                   one_line(text.substr(tail));
        }
        std::string out;
        out.reserve(text.size());
        for (size_t i = 0; i < text.size();) {
            const auto c = static_cast<unsigned char>(text[i]);
            if (c >= 0x80) {
                // A well-formed character passes but for the C1 controls U+0080..U+009F (CSI, U+009B,
                // starts an escape sequence on some terminals); any other byte is escaped on its own.
                const size_t length = utf8_length(text, i);
                const bool c1 = length == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0;
                if (length > 0 && !c1) {
                    out.append(text, i, length);
                    i += length;
                    continue;
                }
                const size_t escaped = c1 ? 2 : 1;
                for (size_t e = 0; e < escaped; ++e) append_hex(out, static_cast<unsigned char>(text[i + e]));
                i += escaped;
                continue;
            }
            if (c >= 0x20 && c != 0x7f) out += text[i];
            else if (c == '\n') out += "\\n";
            else if (c == '\t') out += "\\t";
            else append_hex(out, c);
            ++i;
        }
        return out;
    }
};

// Thrown when memory runs out or would pass the memory limit (host or device): callers that measure
// how far a workload scales (retnet cost) report it as a result rather than a failure.
class OutOfMemory : public Error {
public:
    using Error::Error;
};

// Thrown when a long operation is cancelled through its progress callback or stop flag.
class Cancelled : public Error {
public:
    Cancelled() : Error("cancelled") {}
};

}  // namespace retnet
