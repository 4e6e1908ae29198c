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
    using std::runtime_error::runtime_error;
};

// Thrown when a long operation is cancelled through its progress callback or stop flag.
class Cancelled : public Error {
public:
    Cancelled() : Error("cancelled") {}
};

}  // namespace retnet
