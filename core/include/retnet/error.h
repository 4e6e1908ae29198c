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
    // control characters among them are escaped ("\n" -> "\\n"), so a message is always one line,
    // and a message longer than kMaxLength keeps its start and end around a count of what was cut,
    // so a 1 MB value quoted from a file cannot flood the terminal.
    explicit Error(const std::string& message) : std::runtime_error(one_line(message)) {}
    explicit Error(const char* message) : Error(std::string(message)) {}

    static constexpr size_t kMaxLength = 1024;

private:
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
        for (const char ch : text) {
            const auto c = static_cast<unsigned char>(ch);
            if (c >= 0x20 && c != 0x7f) {
                out += ch;
            } else if (c == '\n') {
                out += "\\n";
            } else if (c == '\t') {
                out += "\\t";
            } else {
                static constexpr char kHex[] = "0123456789abcdef";
                out += "\\x";
                out += kHex[c >> 4];
                out += kHex[c & 15];
            }
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
