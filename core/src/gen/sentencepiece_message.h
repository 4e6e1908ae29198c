// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// SentencePiece's status text for a user: "Internal: char_model_trainer.cc(33) [cond] Vocabulary size is
// smaller…" -> "Vocabulary size is smaller…"; its status code's name and source location (for its
// developers) dropped; control characters inside it (a crafted piece's name: "a\nb" was cut to "a")
// written as escapes, so that it stays one line; empty where nothing else is left.
#include <cstdio>
#include <string>
#include <utility>

namespace retnet {

inline std::string sentencepiece_message(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    std::string one_line;
    for (const char c : text) {
        if (static_cast<unsigned char>(c) >= 0x20 && c != 0x7f) {
            one_line += c;
        } else if (c == '\n' || c == '\t' || c == '\r') {
            one_line += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r";
        } else {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(c));
            one_line += escaped;
        }
    }
    text = std::move(one_line);
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
    while (!text.empty() && (text.back() == ' ' || text.back() == '.')) text.pop_back();
    return text;
}

}  // namespace retnet
