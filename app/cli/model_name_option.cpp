// SPDX-License-Identifier: GPL-3.0-or-later
#include "model_name_option.h"

#include "retnet/model_names.h"

namespace retnet::cli {

std::vector<std::string> resolve_model_names(std::vector<std::string> argv) {
    for (size_t i = 0; i < argv.size(); ++i) {
        std::string& a = argv[i];
        if ((a == "--model" || a == "-m") && i + 1 < argv.size()) {
            argv[i + 1] = resolve_model_path(argv[i + 1]);
            ++i;
        } else if (a.rfind("--model=", 0) == 0) {
            a = "--model=" + resolve_model_path(a.substr(8));
        }
    }
    return argv;
}

}  // namespace retnet::cli
