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
    static std::string one_line(const std::string& text);  // core/src/error.cpp
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

// The cancel check of long work: a `cancelled` (a std::function<bool()> or the like) that says true
// throws Cancelled; an empty one never does.
template <class CancelCheck>
void throw_if_cancelled(const CancelCheck& cancelled) {
    if (cancelled && cancelled()) throw Cancelled();
}

}  // namespace retnet
