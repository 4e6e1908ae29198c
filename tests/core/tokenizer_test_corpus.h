// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The tokenizer tests' training text (tests/data/tokenizer/corpus.txt), a line each.
#include <fstream>
#include <string>
#include <vector>

namespace retnet {

inline const std::string kCorpusPath = std::string(RETNET_TEST_DATA_DIR) + "/tokenizer/corpus.txt";

inline std::vector<std::string> corpus_lines() {
    std::ifstream in(kCorpusPath);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

}  // namespace retnet
