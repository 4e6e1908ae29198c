// SPDX-License-Identifier: GPL-3.0-or-later
#include "tokenizer_model_check.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

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

// A field's key as protobuf reads it: a varint of at most 5 bytes kept to its low 32 bits (a fifth
// byte's higher bits are dropped; a longer key does not parse). Read as a plain varint, a key
// with those bits set named a field the library does not see, and its map went unchecked.
bool read_key(std::string_view b, size_t& at, uint64_t& key) {
    uint32_t value = 0;
    for (int i = 0; i < 5 && at < b.size(); ++i) {
        const auto byte = static_cast<unsigned char>(b[at++]);
        value |= static_cast<uint32_t>(byte & 0x7f) << (7 * i);
        if (byte < 0x80) {
            key = value;
            return true;
        }
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
                if (!read_key(b, at, inner)) return false;
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
        if (!read_key(b, at, key)) return;
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
    uint32_t label() const { return bits & ((1u << 31) | 0xff); }  // a value unit matches no byte
};

constexpr size_t kMaxCharsmapBytes = size_t(1) << 20;  // SentencePiece's nmt_nfkc map: ~240 KB
constexpr int kMaxRulesPerPrefix = 32;                  // the normalizer's result buffer (0.1.97)
constexpr size_t kMaxReplacementBytes = 64;             // NFKC's longest: 33 bytes (U+FDFA)
constexpr int kMaxKeyBytes = 256;                       // the bytes one walk may match (NFKC's keys: a few)

// Why the normalizer's walks from the root would overflow or crawl, or "": more than
// kMaxRulesPerPrefix rules that begin one text (each key a prefix of the next: SentencePiece 0.1.97
// keeps 32 results in a fixed buffer and reads past it), or a walk longer than kMaxKeyBytes (it
// walks from every position of the text: a loop of 'x' onto itself, with no rule, took an encode
// of 131,000 x's 23 s). The units and their byte transitions are a graph: darts-clone shares equal
// subtrees (several parents), and a crafted trie may loop. So: a depth-first walk (without
// recursion: a crafted chain may be as deep as the map is long) refuses any loop — a unit met again
// while it is on the path —, not even a zeroed unit's NUL onto itself allowed (decode fed it NUL runs:
// 34 s for 32 pieces of 4096 NULs; darts-clone labels its unused units so that none matches, and no
// unit of nmt_nfkc's map that the root reaches loops); as each unit is finished, the most rules and
// bytes on a walk from it are its children's most plus its own. Each unit is visited once. Called
// once every unit's children are known to lie inside the trie.
template <class Unit>
std::string overlong_walk(uint64_t units, const Unit& unit) {
    const std::string too_many = "more than " + std::to_string(kMaxRulesPerPrefix) + " of its rules begin one text";
    const auto child = [&](uint64_t parent, uint32_t byte) -> int64_t {
        const uint64_t at = (parent ^ unit(parent).offset()) ^ byte;
        return unit(at).label() == byte ? static_cast<int64_t>(at) : -1;
    };
    enum : uint8_t { kUnseen, kOnPath, kFinished };
    std::vector<uint8_t> state(units, kUnseen);
    std::vector<uint8_t> rules_from(units, 0);   // finished units: the most rules on a walk from them, capped
    std::vector<uint16_t> bytes_from(units, 0);  // and the most bytes, capped
    std::vector<std::pair<uint64_t, uint32_t>> path;  // (unit, the next byte to look at)
    const auto enter = [&](uint64_t at) {
        state[at] = kOnPath;
        path.emplace_back(at, 0);
    };
    uint8_t most_rules = 0;
    uint16_t most_bytes = 0;
    for (uint32_t first = 0; first < 256; ++first) {
        const int64_t top = child(0, first);
        if (top < 0) continue;
        if (state[top] == kUnseen) enter(static_cast<uint64_t>(top));
        while (!path.empty()) {
            const uint64_t at = path.back().first;
            if (const uint32_t byte = path.back().second++; byte < 256) {
                const int64_t next = child(at, byte);
                if (next < 0) continue;
                if (state[next] == kUnseen) {
                    enter(static_cast<uint64_t>(next));
                } else if (state[next] == kOnPath) {  // a loop: the path from `next` to `at`, and back
                    bool has_rule = false;
                    for (auto it = path.rbegin(); it != path.rend(); ++it) {
                        has_rule = has_rule || unit(it->first).has_leaf();
                        if (it->first == static_cast<uint64_t>(next)) break;
                    }
                    return has_rule ? too_many + " (they loop)" : "its keys loop (a walk as long as the text)";
                }
                continue;
            }
            uint8_t rules_after = 0;  // every child is finished: the most rules and bytes on a walk from one
            uint16_t bytes_after = 0;
            for (uint32_t b = 0; b < 256; ++b)
                if (const int64_t next = child(at, b); next >= 0) {
                    rules_after = std::max(rules_after, rules_from[next]);
                    bytes_after = std::max(bytes_after, bytes_from[next]);
                }
            rules_from[at] = static_cast<uint8_t>(std::min(kMaxRulesPerPrefix + 1, rules_after + (unit(at).has_leaf() ? 1 : 0)));
            bytes_from[at] = static_cast<uint16_t>(std::min<int>(kMaxKeyBytes + 1, bytes_after + 1));
            state[at] = kFinished;
            path.pop_back();
        }
        most_rules = std::max(most_rules, rules_from[top]);
        most_bytes = std::max(most_bytes, bytes_from[top]);
    }
    if (most_rules > kMaxRulesPerPrefix) return too_many;
    if (most_bytes > kMaxKeyBytes) return "a key is longer than " + std::to_string(kMaxKeyBytes) + " bytes";
    return "";
}

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
    if (blob.size() > kMaxCharsmapBytes)
        return "it is " + std::to_string(blob.size()) + " bytes, more than the " +
               std::to_string(kMaxCharsmapBytes >> 20) + " MiB a map may have";
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
        // a long replacement multiplies the text: 'l' to 4000 bytes took an encode of 20,000 characters
        // to 18 GB inside the library, past --max-memory (the hostile helper)
        if (replacements.find('\0', value) - value > kMaxReplacementBytes)
            return "a replacement is longer than " + std::to_string(kMaxReplacementBytes) + " bytes";
    }
    return overlong_walk(units, unit);
}

}  // namespace

uint64_t check_tokenizer_model_bytes(std::string_view model, const std::string& source) {
    uint64_t index = 0;
    std::string_view normalization, denormalization;  // the precompiled_charsmap protobuf keeps
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
            // a message given twice is merged, its bytes field's last value kept: only that map is
            // read (checking each of 30 copies of a 4 MB map took 27 s)
            for_each_bytes_field(message, [&](uint64_t inner, std::string_view charsmap) {
                if (inner == 2) (number == 3 ? normalization : denormalization) = charsmap;
            });
        }
    });
    for (const auto& [map, name] : {std::pair{normalization, "normalization"}, std::pair{denormalization, "denormalization"}})
        if (const std::string why = broken_charsmap(map); !why.empty())
            throw Error(source + ": its " + name + " map is broken (" + why + ")");
    return index;
}

}  // namespace retnet
