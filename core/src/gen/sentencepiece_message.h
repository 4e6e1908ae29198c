// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// SentencePiece's status text for a user: "Internal: char_model_trainer.cc(33) [cond] Vocabulary size is
// smaller…" -> "Vocabulary size is smaller…"; its status code's name and source location (for its
// developers) dropped; empty where nothing else is left. Its whole text is kept: retnet::Error writes
// control characters inside it as escapes (a crafted piece named "a\nb" was once cut to "a").
#include <string>

namespace retnet {

inline std::string sentencepiece_message(std::string text) {
    for (const char* code : {"Internal: ", "Invalid argument: ", "Not found: ", "Out of range: ", "Failed precondition: ",
                             "Unknown: ", "Resource exhausted: ", "Data loss: "})
        if (text.rfind(code, 0) == 0) {
            text.erase(0, std::string(code).size());
            break;
        }
    if (const auto cc = text.find(".cc("); cc != std::string::npos) {
        size_t start = text.find(") ", cc);
        start = start == std::string::npos ? cc : start + 2;
        if (start < text.size() && text[start] == '[') {  // the failed condition
            const size_t close = text.find("] ", start);
            start = close == std::string::npos ? text.size() : close + 2;
        }
        text = text.substr(start);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '.' || text.back() == '\n' || text.back() == '\r'))
        text.pop_back();
    return text;
}

}  // namespace retnet
