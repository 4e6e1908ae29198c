// SPDX-License-Identifier: GPL-3.0-or-later
// Crafted tokenizer.model files against the check that reads them before SentencePiece does
// (core/src/gen/tokenizer_model_check.h): long pieces, broken or hostile normalization maps, keys
// protobuf reads differently from a plain varint, and the library's messages kept on one line. Each
// case is a crash, a hang or a silent wrong answer that a hostile helper found.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/tokenizer.h"
#include "retnet/utf8.h"
#include "tokenizer_test_corpus.h"

namespace retnet {
namespace {

// A protobuf varint, and a length-delimited field of it.
std::string varint(uint64_t v) {
    std::string out;
    for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
    return out + static_cast<char>(v);
}
std::string bytes_field(int number, const std::string& payload) {
    return varint(static_cast<uint64_t>(number) << 3 | 2) + varint(payload.size()) + payload;
}
// The same field behind a 5-byte key with bit 32 set, which protobuf drops (it keeps 32 bits).
std::string long_key_field(int number, const std::string& payload) {
    return varint((static_cast<uint64_t>(number) << 3 | 2) + (uint64_t(1) << 32)) + varint(payload.size()) + payload;
}
uint64_t read_varint(const std::string& b, size_t& at) {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        const auto byte = static_cast<unsigned char>(b.at(at++));
        v |= static_cast<uint64_t>(byte & 0x7f) << shift;
        if (byte < 0x80) return v;
    }
}
// The serialized model with piece `index` (ModelProto field 1, its field 1) replaced by `piece`.
std::string with_piece(const std::string& model, int index, const std::string& piece) {
    std::string out;
    int seen = 0;
    for (size_t at = 0; at < model.size();) {
        const size_t start = at;
        const uint64_t key = read_varint(model, at);
        const int type = static_cast<int>(key & 7);
        uint64_t length = 0;
        if (type == 0) read_varint(model, at);
        else if (type == 1 || type == 5) at += type == 1 ? 8 : 4;
        else length = read_varint(model, at), at += length;
        if ((key >> 3) != 1 || type != 2 || seen++ != index) {
            out += model.substr(start, at - start);
            continue;
        }
        const std::string message = model.substr(at - length, length);
        std::string rebuilt = bytes_field(1, piece);
        for (size_t in = 0; in < message.size();) {  // the piece's other fields (score, type) as they were
            const size_t field_start = in;
            const uint64_t inner = read_varint(message, in);
            if ((inner & 7) == 0) read_varint(message, in);
            else if ((inner & 7) == 5) in += 4;
            else in += read_varint(message, in);
            if ((inner >> 3) != 1) rebuilt += message.substr(field_start, in - field_start);
        }
        out += bytes_field(1, rebuilt);
    }
    return out;
}

// SentencePiece's unigram trie builder recursed once per byte of a piece: a crafted model with a
// 200,000-byte piece overflowed the stack when loaded (SIGSEGV, the hostile helper). Pieces are
// read before the library sees the model: at most 4096 bytes, which load on a small stack too.
TEST(Tokenizer, RefusesAPieceTooLongForTheLibrarysTrie) {
    TokenizerTrainOptions options;
    options.type = "unigram";
    options.vocab_size = 400;
    const std::string model = train_tokenizer(corpus_lines(), options);
    const std::string space = "\xE2\x96\x81";  // ▁
    try {
        Tokenizer::from_serialized(with_piece(model, 300, space + std::string(200000, 'a')), "crafted.model");
        FAIL() << "a 200,003-byte piece was loaded";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "crafted.model: piece 300 is 200003 bytes long; a tokenizer piece has at most 4096 "
                               "(a longer one overflows SentencePiece's trie builder)");
    }
    EXPECT_THROW(Tokenizer::from_serialized(with_piece(model, 7, std::string(4097, 'b')), "m"), Error);
    // The longest allowed piece loads and is used: a text of it alone is one token.
    const std::string longest = space + std::string(4093, 'a');
    const Tokenizer t = Tokenizer::from_serialized(with_piece(model, 300, longest));
    EXPECT_EQ(t.encode(std::string(4093, 'a')), std::vector<int32_t>{300});
    EXPECT_EQ(t.decode(std::vector<int32_t>{300}), std::string(4093, 'a'));
}

// The first length-delimited field `number` of a protobuf message, or "" where there is none.
std::string field_payload(const std::string& message, int number) {
    for (size_t at = 0; at < message.size();) {
        const uint64_t key = read_varint(message, at);
        const int type = static_cast<int>(key & 7);
        if (type == 0) read_varint(message, at);
        else if (type == 1 || type == 5) at += type == 1 ? 8 : 4;
        else {
            const uint64_t length = read_varint(message, at);
            if (static_cast<int>(key >> 3) == number) return message.substr(at, length);
            at += length;
        }
    }
    return "";
}

// protobuf keeps a repeated scalar's last value and skips groups: a long piece given after a short
// one in the same message, or behind a group, reaches the library as well (the hostile helper's
// crashes after the first check read the first value and stopped at a group).
TEST(Tokenizer, ALongPieceBehindAnotherOrAGroupIsRefusedToo) {
    TokenizerTrainOptions options;
    options.type = "unigram";
    options.vocab_size = 400;
    const std::string model = train_tokenizer(corpus_lines(), options);
    const std::string longest = std::string(200000, 'a');
    const std::string group = "\x7b\x08\x05\x7c";  // field 15 as a group holding a varint, then its end
    const std::string twice = bytes_field(1, "zz") + bytes_field(1, longest) + "\x18\x01";
    const std::string behind_group = group + bytes_field(1, longest) + "\x18\x01";
    for (const std::string& piece : {twice, behind_group}) {
        try {
            Tokenizer::from_serialized(model + bytes_field(1, piece), "crafted.model");
            FAIL() << "a 200,000-byte piece was loaded";
        } catch (const Error& e) {
            EXPECT_STREQ(e.what(), "crafted.model: piece 400 is 200000 bytes long; a tokenizer piece has at most 4096 "
                                   "(a longer one overflows SentencePiece's trie builder)");
        }
    }
    // behind a key of 5 bytes whose bits past 32 protobuf drops: still field 1 (the hostile helper of
    // 2026-12-07; the check read the whole varint, saw another field, and the library crashed)
    try {
        Tokenizer::from_serialized(model + long_key_field(1, bytes_field(1, longest) + "\x18\x01"), "crafted.model");
        FAIL() << "a 200,000-byte piece behind a 5-byte key was loaded";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "crafted.model: piece 400 is 200000 bytes long; a tokenizer piece has at most 4096 "
                               "(a longer one overflows SentencePiece's trie builder)");
    }
    // the long value first and a short one last: the short one is the piece
    const Tokenizer t = Tokenizer::from_serialized(model + bytes_field(1, bytes_field(1, longest) + bytes_field(1, "zz") + "\x18\x01"));
    EXPECT_EQ(t.vocab_size(), 401);
}

// Loading holds about 125 bytes a piece: a model of a million empty pieces (5 MB) is refused under a
// 40 MiB limit before the library allocates them (20 million reached 2.8 GB under --max-memory 100M).
TEST(Tokenizer, ManyPiecesAreCountedAgainstTheMemoryLimitBeforeLoading) {
    const std::string model = train_tokenizer(corpus_lines(), [] {
        TokenizerTrainOptions options;
        options.vocab_size = 400;
        return options;
    }());
    std::string many = model;
    for (int i = 0; i < 1000000; ++i) many += bytes_field(1, bytes_field(1, "Z"));
    set_memory_limit(uint64_t(40) << 20);
    std::string message = "loaded";
    try {
        Tokenizer::from_serialized(many, "many.model");
    } catch (const Error& e) {
        message = e.what();
    }
    EXPECT_EQ(message.rfind("loading the tokenizer many.model (1000400 pieces) needs ", 0), 0u) << message;
    EXPECT_NE(message.find("more than the memory limit of 40 MiB"), std::string::npos) << message;
    EXPECT_EQ(Tokenizer::from_serialized(model).vocab_size(), 400);  // an ordinary model loads under it
    set_memory_limit(0);
}

// A normalization map is a trie the library walks without a bound check: one whose transitions lead
// outside it, or whose replacement strings are missing, crashed the first encode (SIGSEGV; the
// hostile helper). Such maps are refused; the map SentencePiece builds (nmt_nfkc) loads and is used.
TEST(Tokenizer, ABrokenNormalizationMapIsRefusedAndABuiltOneLoads) {
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    options.identity_normalization = false;
    const std::string model = train_tokenizer(corpus_lines(), options);
    const std::string map = field_payload(field_payload(model, 3), 2);
    ASSERT_GT(map.size(), 1000u) << "the nmt_nfkc rules should be in the model";
    const Tokenizer t = Tokenizer::from_serialized(model);
    EXPECT_EQ(t.encode("\xEF\xBD\x94\xEF\xBD\x88\xEF\xBD\x85"), t.encode("the"));  // fullwidth ｔｈｅ, normalized
    uint32_t trie_bytes = 0;
    std::memcpy(&trie_bytes, map.data(), sizeof(trie_bytes));
    const std::string garbage_trie = map.substr(0, 4) + std::string(trie_bytes, '\xff') + map.substr(4 + trie_bytes);
    const std::string no_replacements = map.substr(0, 4 + trie_bytes) + "x";
    const auto refusal = [&](const std::string& spec) {
        try {
            Tokenizer::from_serialized(model + spec, "crafted.model");
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("loaded");
    };
    EXPECT_EQ(refusal(bytes_field(3, bytes_field(2, garbage_trie))),
              "crafted.model: its normalization map is broken (its trie leads outside itself)");
    EXPECT_EQ(refusal(bytes_field(5, bytes_field(1, "custom") + bytes_field(2, garbage_trie))),
              "crafted.model: its denormalization map is broken (its trie leads outside itself)");
    EXPECT_EQ(refusal(bytes_field(3, bytes_field(2, no_replacements))),
              "crafted.model: its normalization map is broken (a replacement runs past its end)");
    // a trie that ends within the 4 bytes past the map (found by fuzz_tokenizer_model: the check took a
    // substring past the end, std::out_of_range)
    const std::string short_map = std::string("\x12\x00\x00\x00", 4) + std::string(16, '\x01');
    EXPECT_EQ(refusal(bytes_field(3, bytes_field(2, short_map))),
              "crafted.model: its normalization map is broken (its trie is longer than the map)");
    // Maps too short for their trie: the library refuses such a normalization map itself, but left a
    // denormalization map like it unused, and every decode then returned "" (the hostile helper).
    const std::string custom = bytes_field(1, "custom");
    EXPECT_EQ(refusal(bytes_field(5, custom + bytes_field(2, "abc"))),
              "crafted.model: its denormalization map is broken (it is shorter than its trie's size)");
    EXPECT_EQ(refusal(bytes_field(5, custom + bytes_field(2, std::string("\xff\x00\x00\x00", 4) + "abcd"))),
              "crafted.model: its denormalization map is broken (its trie is longer than the map)");
    EXPECT_EQ(refusal(bytes_field(3, bytes_field(2, "abc"))),
              "crafted.model: its normalization map is broken (it is shorter than its trie's size)");
    // behind 5-byte keys, outside and inside the spec (the hostile helper of 2026-12-07: SIGSEGV, and
    // an empty decode)
    EXPECT_EQ(refusal(long_key_field(3, bytes_field(2, garbage_trie))),
              "crafted.model: its normalization map is broken (its trie leads outside itself)");
    EXPECT_EQ(refusal(bytes_field(5, custom + long_key_field(2, "abc"))),
              "crafted.model: its denormalization map is broken (it is shorter than its trie's size)");
    // an empty map is no map: the text is left as it is
    EXPECT_EQ(Tokenizer::from_serialized(model + bytes_field(5, custom + bytes_field(2, ""))).decode(t.encode("the")), "the");
}

// A darts-clone trie laid out one 256-unit block per state (the root's state 0): each move (from,
// byte, to, rule) a unit at from's block + byte leading to to's block, every rule's replacement the same.
// Units of different parents may share a block, as darts-clone shares equal subtrees.
struct TrieMove {
    int from;
    char byte;
    int to;
    bool rule;
};
std::string block_trie_map(int states, const std::vector<TrieMove>& moves, const std::string& replacement = "L") {
    std::vector<uint32_t> units(static_cast<size_t>(256 * (states + 1)), 0);
    units[0] = 256u << 10;
    for (int v = 0; v < states; ++v) units[static_cast<size_t>(256 * (v + 1))] = 1u << 31;  // a rule's value: the replacement
    for (const TrieMove& m : moves) {
        const uint32_t at = 256u * (m.from + 1) + static_cast<unsigned char>(m.byte), base = 256u * (m.to + 1);
        units[at] = ((at ^ base) << 10) | (m.rule ? 1u << 8 : 0u) | static_cast<unsigned char>(m.byte);
    }
    const uint32_t trie_bytes = static_cast<uint32_t>(units.size() * sizeof(uint32_t));
    std::string map(sizeof(trie_bytes) + trie_bytes, '\0');
    std::memcpy(map.data(), &trie_bytes, sizeof(trie_bytes));
    std::memcpy(map.data() + sizeof(trie_bytes), units.data(), trie_bytes);
    return map + replacement + std::string(1, '\0');
}

// The rules "l" → replacement, "ll" → replacement, …, "l"×n → replacement: each key a prefix of the
// next (the k-th 'l' at 256k + 'l').
std::string prefix_chain_map(int n, const std::string& replacement) {
    std::vector<TrieMove> moves;
    for (int k = 0; k < n; ++k) moves.push_back({k, 'l', k + 1, true});
    return block_trie_map(n + 1, moves, replacement);
}

// A 400-piece bpe model, trained once for these tests.
const std::string& small_model() {
    static const std::string model = [] {
        TokenizerTrainOptions options;
        options.vocab_size = 400;
        return train_tokenizer(corpus_lines(), options);
    }();
    return model;
}

// What loading small_model() with `map` as its normalization map says: the error, or "loaded".
std::string loading_with_normalization_map(const std::string& map) {
    try {
        Tokenizer::from_serialized(small_model() + bytes_field(3, bytes_field(1, "custom") + bytes_field(2, map)),
                                   "crafted.model");
    } catch (const Error& e) {
        return e.what();
    }
    return "loaded";
}

// Maps that pass the bounds check but overflow or flood the normalizer (the hostile helpers of
// 2026-12-07): 33 rules beginning one text (SentencePiece 0.1.97 keeps 32 results in a fixed
// buffer and read past it: SIGSEGV), and a replacement of 4000 bytes ('l' × 20,000 took an encode
// to 18 GB). 32 rules and a replacement of 64 bytes load and normalize.
TEST(Tokenizer, AMapThatWouldOverflowOrFloodTheNormalizerIsRefused) {
    const std::string& model = small_model();
    const auto refusal = loading_with_normalization_map;
    EXPECT_EQ(refusal(prefix_chain_map(33, "L")),
              "crafted.model: its normalization map is broken (more than 32 of its rules begin one text)");
    EXPECT_EQ(refusal(prefix_chain_map(1, std::string(65, 'L'))),
              "crafted.model: its normalization map is broken (a replacement is longer than 64 bytes)");
    EXPECT_EQ(refusal(std::string("\x04\x00\x00\x00", 4) + std::string((size_t(1) << 20) - 3, '\0')),
              "crafted.model: its normalization map is broken (it is 1048577 bytes, more than the 1 MiB a map may have)");
    // a rule on a loop: the second 'l' is given the first one's children, itself among them
    std::string loop = prefix_chain_map(2, "L");
    const uint32_t second_l_onto_itself = (620u ^ 512u) << 10 | (1u << 8) | 'l';  // 620: 512 ^ 'l'
    std::memcpy(loop.data() + 4 + 620 * 4, &second_l_onto_itself, 4);
    EXPECT_EQ(refusal(loop), "crafted.model: its normalization map is broken (more than 32 of its rules begin one text "
                             "(they loop))");

    const Tokenizer chain = Tokenizer::from_serialized(model + bytes_field(3, bytes_field(1, "custom") + bytes_field(2, prefix_chain_map(32, "L"))));
    EXPECT_EQ(chain.decode(chain.encode(std::string(32, 'l'))), "L");  // the longest rule wins
    const Tokenizer wide = Tokenizer::from_serialized(model + bytes_field(3, bytes_field(1, "custom") + bytes_field(2, prefix_chain_map(1, std::string(64, 'L')))));
    EXPECT_EQ(wide.decode(wide.encode("l")), std::string(64, 'L'));
}

// Rules counted through shared states, and loops (the second and third hostile helpers of
// 2026-12-07: a count that reused a state's number from inside a loop let 33 rules, and a loop
// through a rule, pass to a SIGSEGV; a loop without a rule, 'x' onto itself, made an encode of
// 131,000 x's take 23 s, the normalizer walking from every position to the end).
TEST(Tokenizer, RulesAreCountedThroughSharedStatesAndLoopsAreRefused) {
    const std::string& model = small_model();
    const auto refusal = loading_with_normalization_map;
    // "p q…q e c…c": from_root rules into state A (1), whose under_a rules the root's "f" reaches first
    const auto chains = [](int from_root, int under_a) {
        std::vector<TrieMove> moves = {{0, 'f', 1, false}};
        int state = 2;
        for (int i = 0, at = 1; i < under_a; ++i, at = state++) moves.push_back({at, 'c', state, true});
        for (int i = 0, at = 0; i < from_root; ++i, at = state++) moves.push_back({at, i == 0 ? 'p' : 'q', state, true});
        moves.push_back({state - 1, 'e', 1, false});
        return block_trie_map(state, moves);
    };
    EXPECT_EQ(refusal(chains(16, 17)), "crafted.model: its normalization map is broken (more than 32 of its rules begin one text)");
    EXPECT_EQ(refusal(chains(16, 16)), "loaded");
    EXPECT_EQ(refusal(block_trie_map(3, {{0, 'f', 1, false}, {1, 'c', 2, true}, {2, 'd', 1, false}})),
              "crafted.model: its normalization map is broken (more than 32 of its rules begin one text (they loop))");
    EXPECT_EQ(refusal(block_trie_map(2, {{0, 'f', 1, false}, {1, 'x', 1, false}})),
              "crafted.model: its normalization map is broken (its keys loop (a walk as long as the text))");
    // a zeroed unit as the root's child on NUL: NUL onto itself (the fourth helper: a decode of 32
    // pieces of 4096 NULs through such a denormalization map took 34 s)
    std::string nul_loop = block_trie_map(2, {{0, 'y', 1, true}});
    std::memset(nul_loop.data() + 4 + 256 * 4, 0, 4);  // the root block's slot 0, a value unit before
    EXPECT_EQ(refusal(nul_loop), "crafted.model: its normalization map is broken (its keys loop (a walk as long as the text))");
    // a walk of 257 bytes without a rule; 256 load
    const auto walk = [](int bytes) {
        std::vector<TrieMove> moves;
        for (int i = 0; i < bytes; ++i) moves.push_back({i, 'a', i + 1, i == bytes - 1});
        return block_trie_map(bytes + 1, moves);
    };
    EXPECT_EQ(refusal(walk(257)), "crafted.model: its normalization map is broken (a key is longer than 256 bytes)");
    EXPECT_EQ(refusal(walk(256)), "loaded");
    // only the map protobuf keeps is read: a broken one given first, a good one last, loads
    const std::string broken_then_good = bytes_field(3, bytes_field(2, std::string("abc"))) +
                                         bytes_field(3, bytes_field(1, "custom") + bytes_field(2, chains(1, 1)));
    EXPECT_EQ(Tokenizer::from_serialized(model + broken_then_good).vocab_size(), 400);
}

// The naive twin of the walk check: breadth first over (unit, rules matched so far, capped at 33),
// by darts-clone's walk as SentencePiece does it: whether some text matches 33 rules or more, or
// the walk loops (units that keep a successor when the others are peeled off).
bool a_walk_matches_33_rules_or_loops(const std::string& map) {
    uint32_t trie_bytes = 0;
    std::memcpy(&trie_bytes, map.data(), 4);
    const auto unit = [&](uint64_t i) {
        uint32_t bits = 0;
        std::memcpy(&bits, map.data() + 4 + i * 4, 4);
        return bits;
    };
    const auto base_of = [&](uint64_t i) { const uint32_t b = unit(i); return i ^ ((b >> 10) << ((b & (1u << 9)) >> 6)); };
    const uint64_t units = trie_bytes / 4;
    const auto successors = [&](uint64_t at) {
        std::vector<uint64_t> out;
        for (uint32_t byte = 0; byte < 256; ++byte) {
            const uint64_t next = base_of(at) ^ byte;
            if (next >= units || (unit(next) & ((1u << 31) | 0xff)) != byte) continue;
            out.push_back(next);
        }
        return out;
    };
    std::vector<std::vector<bool>> seen(units, std::vector<bool>(34, false));
    std::vector<bool> reached(units, false);
    std::vector<std::pair<uint64_t, int>> queue{{0, 0}};  // the root, before any byte
    for (size_t q = 0; q < queue.size(); ++q) {
        const auto [at, rules] = queue[q];
        for (const uint64_t next : successors(at)) {
            reached[next] = true;
            const int matched = std::min(33, rules + static_cast<int>((unit(next) >> 8) & 1));
            if (matched >= 33) return true;
            if (!seen[next][matched]) {
                seen[next][matched] = true;
                queue.emplace_back(next, matched);
            }
        }
    }
    // peel the reached units without a reached successor until none is left to peel
    std::vector<bool> alive = reached;
    for (bool peeled = true; peeled;) {
        peeled = false;
        for (uint64_t u = 0; u < units; ++u) {
            if (!alive[u]) continue;
            bool has_successor = false;
            for (const uint64_t next : successors(u)) has_successor = has_successor || alive[next];
            if (!has_successor) alive[u] = false, peeled = true;
        }
    }
    return std::find(alive.begin(), alive.end(), true) != alive.end();
}

// Random tries of up to 40 states (chains, shared states, loops with and without rules) against the
// naive twin: the check refuses exactly those where some text matches more than 32 rules or the
// walk loops.
TEST(Tokenizer, TheRuleCountAgreesWithANaiveWalkOnRandomTries) {
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    const std::string model = train_tokenizer(corpus_lines(), options);
    std::mt19937 random(7);
    int refused = 0, loaded = 0;
    for (int trial = 0; trial < 300; ++trial) {
        const int states = 2 + static_cast<int>(random() % 39);
        std::vector<TrieMove> moves;
        std::set<std::pair<int, char>> used;  // one move per (state, byte)
        const auto add = [&](int from, char byte, int to) {
            if (used.insert({from, byte}).second) moves.push_back({from, byte, to, random() % 10 != 0});
        };
        for (int v = 1; v < states; ++v) add(v - 1 - static_cast<int>(random() % std::min(v, 3)), 'a', v);  // mostly a chain
        for (int extra = static_cast<int>(random() % 4); extra > 0; --extra)  // shared states and loops
            add(static_cast<int>(random() % states), "abc"[random() % 3], static_cast<int>(random() % states));
        const std::string map = block_trie_map(states, moves);
        bool was_refused = false;
        try {
            Tokenizer::from_serialized(model + bytes_field(3, bytes_field(1, "custom") + bytes_field(2, map)), "random.model");
        } catch (const Error& e) {
            const std::string why = e.what();
            was_refused = why.find("more than 32 of its rules begin one text") != std::string::npos ||
                          why.find("its keys loop") != std::string::npos;
            EXPECT_TRUE(was_refused) << why;
        }
        ASSERT_EQ(was_refused, a_walk_matches_33_rules_or_loops(map)) << "trial " << trial << ", " << states << " states";
        (was_refused ? refused : loaded) += 1;
    }
    EXPECT_GT(refused, 30);  // both verdicts are exercised
    EXPECT_GT(loaded, 30);
}

// A denormalization map may write any bytes ('l' → 0xFF 0xFE here): decode's text is valid UTF-8
// all the same, the bad bytes U+FFFD (the second hostile helper of 2026-12-07 got them raw).
TEST(Tokenizer, DecodedTextIsValidUtf8WhateverTheDenormalizationMapWrites) {
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    const std::string model = train_tokenizer(corpus_lines(), options);
    const Tokenizer plain = Tokenizer::from_serialized(model);
    const Tokenizer t = Tokenizer::from_serialized(
        model + bytes_field(5, bytes_field(1, "custom") + bytes_field(2, prefix_chain_map(1, "\xff\xfe"))));
    const std::string text = t.decode(plain.encode("hello"));
    EXPECT_TRUE(is_valid_utf8(text)) << text;
    EXPECT_NE(text.find("\xEF\xBF\xBD"), std::string::npos) << text;  // U+FFFD where 0xFF 0xFE were
    EXPECT_EQ(text.find('l'), std::string::npos) << text;
}

// The library's message names a crafted piece as it is: a newline in it was where the message was
// cut ("… model (a)"); it is written as an escape, and the line stays one.
TEST(Tokenizer, ALibraryMessageKeepsAPieceWithANewlineOnOneLine) {
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    const std::string model = train_tokenizer(corpus_lines(), options);
    const std::string piece = bytes_field(1, bytes_field(1, "a\nb"));
    try {
        Tokenizer::from_serialized(model + piece + piece, "crafted.model");
        FAIL() << "a piece given twice was loaded";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "crafted.model: not a SentencePiece tokenizer model (a\\nb is already defined)");
    }
}

}  // namespace
}  // namespace retnet
