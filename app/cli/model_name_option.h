// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// `--model ORG/NAME[@REVISION]` for every command: the value is replaced by the Hugging Face cache
// snapshot it names (retnet/model_names.h) before the command parses its options, so each command
// sees a directory whatever its option parser.
#include <string>
#include <vector>

namespace retnet::cli {

// The arguments with the value of each --model / --model=V / -m resolved; a value that exists on
// disk or is not shaped like a name is left as it is. Throws retnet::Error when a name is not cached.
std::vector<std::string> resolve_model_names(std::vector<std::string> argv);

}  // namespace retnet::cli
