// SPDX-License-Identifier: GPL-3.0-or-later
#include "tokenizer_model_check.h"

#include <cstring>

#include "retnet/error.h"

namespace retnet {
namespace {

constexpr int kMaxGroupDepth = 100;  // protobuf's own recursion limit

bool read_varint(std::string_view b, size_t& at, uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && at < b.size(); shift += 7) {
        const auto byte = static_cast<unsigned char>(b[at++]);
        value |= static_cast<uint64_t>(byte & 0x7f) << shift;
        if (byte < 0x80) return true;
    }
    return false;
}

// Moves `at` past the value of a field with `key` (a group: to its end tag); false where the bytes
// do not parse.
bool skip_value(std::string_view b, size_t& at, uint64_t key, int depth) {
    uint64_t value = 0;
    switch (key & 7) {
        case 0: return read_varint(b, at, value);
        case 1: at += 8; return at <= b.size();
        case 5: at += 4; return at <= b.size();
        case 2:
            if (!read_varint(b, at, value) || value > b.size() - at) return false;
            at += value;
            return true;
        case 3:
            if (depth >= kMaxGroupDepth) return false;
            while (at < b.size()) {
                uint64_t inner = 0;
                if (!read_varint(b, at, inner)) return false;
                if ((inner & 7) == 4) return (inner >> 3) == (key >> 3);
                if (!skip_value(b, at, inner, depth + 1)) return false;
            }
            return false;
        default: return false;
    }
}

// Calls field(number, payload) for each length-delimited field of message `b`, up to where its
// bytes stop parsing.
template <class Field>
void for_each_bytes_field(std::string_view b, Field&& field) {
    for (size_t at = 0; at < b.size();) {
        uint64_t key = 0, length = 0;
        if (!read_varint(b, at, key)) return;
        if ((key & 7) != 2) {
            if (!skip_value(b, at, key, 0)) return;
            continue;
        }
        if (!read_varint(b, at, length) || length > b.size() - at) return;
        field(key >> 3, b.substr(at, length));
        at += length;
    }
}

// darts-clone's unit, as SentencePiece's normalizer reads it.
struct TrieUnit {
    uint32_t bits;
    bool is_value() const { return bits >> 31; }  // a leaf's value: never matched as a label
    bool has_leaf() const { return (bits >> 8) & 1; }
    uint32_t offset() const { return (bits >> 10) << ((bits & (1u << 9)) >> 6); }
    uint32_t value() const { return bits & ((1u << 31) - 1); }
};

// Why a precompiled_charsmap would make the normalizer read outside it, or "" where it cannot:
// from every unit, all 256 children lie inside the trie, and every leaf's value is the start of a
// NUL-terminated string inside the replacements that follow it. (A sufficient check: it also
// holds for units no key reaches, as it does for the maps SentencePiece builds.)
std::string broken_charsmap(std::string_view blob) {
    uint32_t trie_bytes = 0;
    if (blob.empty()) return "";  // no map: the text is left as it is
    // The library refuses these two itself in a normalization map, but a denormalization map it
    // then leaves unused, and every decode came back empty.
    if (blob.size() <= sizeof(trie_bytes)) return "it is shorter than its trie's size";
    std::memcpy(&trie_bytes, blob.data(), sizeof(trie_bytes));
    // the library takes the trie from after the size: one that ends past the map it reads beyond
    if (trie_bytes > blob.size() - sizeof(trie_bytes)) return "its trie is longer than the map";
    const std::string_view trie = blob.substr(sizeof(trie_bytes), trie_bytes);
    const std::string_view replacements = blob.substr(sizeof(trie_bytes) + trie_bytes);
    const uint64_t units = trie.size() / sizeof(uint32_t);
    if (units == 0) return "its trie is empty";
    const size_t last_nul = replacements.rfind('\0');
    const auto unit = [&](uint64_t i) {
        TrieUnit u{};
        std::memcpy(&u.bits, trie.data() + i * sizeof(uint32_t), sizeof(uint32_t));
        return u;
    };
    for (uint64_t i = 0; i < units; ++i) {
        const TrieUnit u = unit(i);
        if (u.is_value() && i != 0) continue;  // the root's offset is used whatever its bits
        const uint64_t children = i ^ u.offset();
        if ((children | 0xff) >= units) return "its trie leads outside itself";
        if (!u.has_leaf()) continue;
        const uint32_t value = unit(children).value();
        if (last_nul == std::string_view::npos || value > last_nul) return "a replacement runs past its end";
    }
    return "";
}

}  // namespace

uint64_t check_tokenizer_model_bytes(std::string_view model, const std::string& source) {
    uint64_t index = 0;
    for_each_bytes_field(model, [&](uint64_t number, std::string_view message) {
        if (number == 1) {  // a piece: its last field 1 is what protobuf keeps
            uint64_t piece_bytes = 0;
            for_each_bytes_field(message, [&](uint64_t inner, std::string_view piece) {
                if (inner == 1) piece_bytes = piece.size();
            });
            if (piece_bytes > kMaxTokenizerPieceBytes)
                throw Error(source + ": piece " + std::to_string(index) + " is " + std::to_string(piece_bytes) +
                            " bytes long; a tokenizer piece has at most " + std::to_string(kMaxTokenizerPieceBytes) +
                            " (a longer one overflows SentencePiece's trie builder)");
            ++index;
        } else if (number == 3 || number == 5) {  // normalizer_spec, denormalizer_spec
            for_each_bytes_field(message, [&](uint64_t inner, std::string_view charsmap) {
                if (inner != 2) return;
                if (const std::string why = broken_charsmap(charsmap); !why.empty())
                    throw Error(source + ": its " + (number == 3 ? "normalization" : "denormalization") +
                                " map is broken (" + why + ")");
            });
        }
    });
    return index;
}

}  // namespace retnet
