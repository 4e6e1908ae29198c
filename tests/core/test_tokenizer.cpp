// SPDX-License-Identifier: GPL-3.0-or-later
// SentencePiece tokenizer: training with byte fallback, exact round trips on Unicode text, and
// streaming detokenization that never emits a broken UTF-8 sequence. (Crafted model files:
// test_tokenizer_model_check.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "retnet/error.h"
#include "retnet/memory_limit.h"
#include "retnet/tokenizer.h"
#include "retnet/utf8.h"
#include "tokenizer_test_corpus.h"

namespace retnet {
namespace {

// Trained once for the whole suite (about a second).
const Tokenizer& bpe() {
    static const Tokenizer tokenizer = [] {
        TokenizerTrainOptions options;
        options.vocab_size = 420;
        return Tokenizer::from_serialized(train_tokenizer(corpus_lines(), options));
    }();
    return tokenizer;
}

// Text the corpus never shows: emoji (ZWJ sequence, skin tone, flag), combining marks,
// scripts not in the training text, controls and odd whitespace.
const std::vector<std::string> kUnicodeSamples = {
    "Hello, world!",
    "The robot counted \xF0\x9F\xA4\x96 tokens \xF0\x9F\x98\x80\xF0\x9F\x98\x80.",         // 🤖 😀😀
    "family: \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",  // 👩‍👩‍👧
    "thumbs \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD and flag \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",  // 👍🏽 🇫🇷
    "decomposed e\xCC\x81 vs composed \xC3\xA9; Z\xCC\xA4\xCD\x94\xCD\xA7\xCC\x91",       // é é Z̤͔ͧ̑
    "\xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9 and \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",  // العربية 한국어
    "  leading spaces, trailing spaces  ",
    "tab\tnew\nline\r\nbell\x07 escape\x1b[31m null-free controls\x01",
    "\xE2\x80\x8B zero width, \xEF\xBB\xBF BOM, \xF4\x8F\xBF\xBF max code point",
    std::string("NUL \0 and DEL \x7F inside", 22),  // 22 bytes: the NUL is part of the text
};

TEST(Tokenizer, TrainedModelHasByteFallbackAndSpecialIds) {
    const Tokenizer& t = bpe();
    EXPECT_EQ(t.vocab_size(), 420);
    EXPECT_EQ(t.unk_id(), 0);
    EXPECT_EQ(t.bos_id(), 1);
    EXPECT_EQ(t.eos_id(), 2);
    EXPECT_TRUE(t.is_control(1));
    EXPECT_TRUE(t.is_control(2));
    int byte_pieces = 0;
    for (int id = 0; id < t.vocab_size(); ++id) byte_pieces += t.is_byte(id);
    EXPECT_EQ(byte_pieces, 256);
    EXPECT_EQ(t.piece(-1), "");
    EXPECT_EQ(t.piece(t.vocab_size()), "");
}

TEST(Tokenizer, RoundTripsUnicodeExactly) {
    const Tokenizer& t = bpe();
    for (const std::string& text : kUnicodeSamples) {
        const std::vector<int32_t> ids = t.encode(text);
        ASSERT_FALSE(ids.empty()) << text;
        for (int32_t id : ids) EXPECT_NE(id, t.unk_id()) << "byte fallback should avoid <unk> in: " << text;
        EXPECT_EQ(t.decode(ids), text);
    }
}

TEST(Tokenizer, UnseenEmojiIsEncodedAsByteTokens) {
    const Tokenizer& t = bpe();
    const std::vector<int32_t> ids = t.encode("\xF0\x9F\xA4\x96");  // 🤖, not in the corpus
    int bytes = 0;
    for (int32_t id : ids) bytes += t.is_byte(id);
    EXPECT_EQ(bytes, 4);
    EXPECT_EQ(t.display_piece(ids.back()), "<0x96>");
}

TEST(Tokenizer, StreamDecoderEmitsOnlyCompleteCharacters) {
    const Tokenizer& t = bpe();
    for (const std::string& text : kUnicodeSamples) {
        const std::vector<int32_t> ids = t.encode(text);
        StreamDecoder decoder(t);
        std::string streamed;
        int empty_pushes = 0;
        for (int32_t id : ids) {
            const std::string piece = decoder.push(id);
            ASSERT_TRUE(is_valid_utf8(piece)) << text;
            streamed += piece;
            ASSERT_TRUE(is_valid_utf8(streamed)) << "prefix broke UTF-8 in: " << text;
            empty_pushes += piece.empty();
        }
        EXPECT_FALSE(decoder.has_pending());
        streamed += decoder.flush();
        EXPECT_EQ(streamed, text);
        EXPECT_EQ(streamed, t.decode(ids));
        if (text.find("\xF0\x9F\xA4\x96") != std::string::npos) {
            EXPECT_GE(empty_pushes, 3) << "the 4 byte tokens of an emoji should give 3 empty pushes";
        }
    }
}

TEST(Tokenizer, StreamDecoderSkipsControlsAndKeepsInnerSpaces) {
    const Tokenizer& t = bpe();
    std::vector<int32_t> ids = t.encode("the robot");
    ids.insert(ids.begin(), t.bos_id());
    ids.push_back(t.eos_id());
    StreamDecoder decoder(t);
    std::string streamed;
    for (int32_t id : ids) streamed += decoder.push(id);
    EXPECT_EQ(streamed, "the robot");
    EXPECT_EQ(t.decode(ids), "the robot");

    // Continuing after earlier text keeps the space that starts the next word.
    StreamDecoder continuation(t, /*at_text_start=*/false);
    std::string more;
    for (int32_t id : t.encode("robot")) more += continuation.push(id);
    EXPECT_EQ(more, " robot");
}

TEST(Tokenizer, UnfinishedCharacterAtEndBecomesReplacementOnFlush) {
    const Tokenizer& t = bpe();
    const std::vector<int32_t> ids = t.encode("\xF0\x9F\xA4\x96");
    StreamDecoder decoder(t);
    std::string streamed;
    for (size_t i = 0; i + 1 < ids.size(); ++i) streamed += decoder.push(ids[i]);
    EXPECT_EQ(streamed, "");
    EXPECT_TRUE(decoder.has_pending());
    EXPECT_EQ(decoder.flush(), "\xEF\xBF\xBD");
}

TEST(Tokenizer, DisplayPieceShowsSpaces) {
    const Tokenizer& t = bpe();
    const std::vector<int32_t> ids = t.encode("hello the");
    const std::string last = t.display_piece(ids.back());
    EXPECT_EQ(last.front(), ' ') << "word-initial piece should show its space: '" << last << "'";
    EXPECT_EQ(t.display_piece(t.eos_id()), "</s>");
    // The corpus is split into lines, so the newline and the tab are byte pieces.
    const std::vector<int32_t> newline = t.encode("a\nb\tc");
    std::vector<std::string> shown;
    for (int32_t id : newline) shown.push_back(t.display_piece(id));
    EXPECT_NE(std::find(shown.begin(), shown.end(), "\u21B5"), shown.end()) << "newline as the return arrow";
    EXPECT_NE(std::find(shown.begin(), shown.end(), "\u21E5"), shown.end()) << "tab as the tab arrow";
}

TEST(Tokenizer, RejectsInvalidUtf8WithOffset) {
    try {
        bpe().encode("ok \xC3(");
        FAIL() << "invalid UTF-8 accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("byte offset 3"), std::string::npos) << e.what();
    }
}

TEST(Tokenizer, UnigramTrainsAndRoundTrips) {
    TokenizerTrainOptions options;
    options.type = "unigram";
    options.vocab_size = 400;
    const Tokenizer t = Tokenizer::from_serialized(train_tokenizer(corpus_lines(), options));
    for (const std::string& text : kUnicodeSamples) EXPECT_EQ(t.decode(t.encode(text)), text);
}

// A char model has one piece per character it saw, the 256 byte pieces and the 3 specials (so a
// vocabulary size above that is not an error), and encodes seen text one token per character.
TEST(Tokenizer, CharTrainsOnePiecePerCharacter) {
    // Valid UTF-8 split into characters: a character starts at every byte that is not 10xxxxxx.
    auto characters = [](const std::string& text) {
        std::vector<std::string> out;
        for (char byte : text) {
            if ((static_cast<unsigned char>(byte) & 0xC0) != 0x80) out.emplace_back();
            out.back() += byte;
        }
        return out;
    };
    std::set<std::string> seen;
    for (const std::string& line : corpus_lines())
        for (const std::string& c : characters(line)) seen.insert(c);
    TokenizerTrainOptions options;
    options.type = "char";
    options.vocab_size = 4000;
    const Tokenizer t = Tokenizer::from_serialized(train_tokenizer(corpus_lines(), options));
    seen.erase("\t");  // SentencePiece leaves the tab to byte fallback
    int character_pieces = 0;
    for (int32_t id = 0; id < t.vocab_size(); ++id) {
        if (t.is_control(id) || t.is_byte(id) || id == 0) continue;  // 0: <unk>
        ++character_pieces;
        EXPECT_EQ(characters(t.piece(id)).size(), 1u) << "piece " << id << " '" << t.piece(id) << "'";
    }
    EXPECT_EQ(character_pieces, static_cast<int>(seen.size()));
    EXPECT_EQ(t.vocab_size(), 3 + 256 + character_pieces);
    const std::string text = corpus_lines().front();
    ASSERT_FALSE(text.empty());
    ASSERT_EQ(text.find('\t'), std::string::npos);
    // +1: the dummy-prefix space SentencePiece puts before the text.
    EXPECT_EQ(t.encode(text).size(), characters(text).size() + 1);
    for (const std::string& sample : kUnicodeSamples) EXPECT_EQ(t.decode(t.encode(sample)), sample);
}

TEST(Tokenizer, TrainFileWritesLoadableModel) {
    const auto dir = std::filesystem::temp_directory_path() / ("retnet_test_tokenizer_train_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    TokenizerTrainOptions options;
    options.vocab_size = 420;
    const Tokenizer trained = train_tokenizer_file(kCorpusPath, options, dir.string());
    auto loaded = Tokenizer::load_from_model_dir(dir.string());
    ASSERT_NE(loaded, nullptr);
    EXPECT_EQ(loaded->encode(kUnicodeSamples[1]), trained.encode(kUnicodeSamples[1]));
    EXPECT_EQ(loaded->serialized(), trained.serialized());
    EXPECT_FALSE(std::filesystem::exists(dir / "tokenizer.model.tmp"));
    std::filesystem::remove_all(dir);
    EXPECT_EQ(Tokenizer::load_from_model_dir(dir.string()), nullptr);
}

// SentencePiece's bpe trainer keeps a word's positions in 16 bits: one word of 32,770 characters ended the
// process (SIGSEGV; at 65,536 a failed check). bpe's lines stop at 32,768 bytes, which it skips beyond.
TEST(Tokenizer, BpeSkipsAWordTooLongForItsTrainer) {
    std::vector<std::string> lines = corpus_lines();
    std::string word;
    for (int i = 0; i < 16385; ++i) word += "ab";
    lines.push_back(word);
    lines.push_back(std::string(65536, 'b'));
    TokenizerTrainOptions options;
    options.vocab_size = 400;
    const Tokenizer t = Tokenizer::from_serialized(train_tokenizer(lines, options));
    EXPECT_EQ(t.decode(t.encode("the robot counted")), "the robot counted");
    try {
        train_tokenizer(std::vector<std::string>{word}, options);
        ADD_FAILURE() << "a text of one 32,770-byte line trained";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "every line of the training text is longer than 32768 bytes, which the "
                                         "tokenizer trainer skips: break the text into lines");
    }
}

TEST(Tokenizer, BadInputsGiveOneLineErrors) {
    auto message = [](auto&& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string too_big = message([] {
        TokenizerTrainOptions options;
        options.vocab_size = 100000;
        train_tokenizer(corpus_lines(), options);
    });
    // SentencePiece's two refusals of a size, in the command's words (it named vocab_size and a
    // --character_coverage option that the command does not have)
    EXPECT_EQ(too_big.rfind("tokenizer training failed: --vocab-size 100000 is more than a bpe tokenizer of this text "
                            "can have (at most ", 0), 0u) << too_big;
    EXPECT_EQ(too_big.find('\n'), std::string::npos) << too_big;
    const std::string too_small = message([] {
        TokenizerTrainOptions options;
        options.vocab_size = 100;
        train_tokenizer(corpus_lines(), options);
    });
    EXPECT_EQ(too_small.rfind("tokenizer training failed: --vocab-size 100 is less than the ", 0), 0u) << too_small;
    for (const std::string* m : {&too_big, &too_small})
        for (const char* internal : {"vocab_size", "character_coverage", ".cc("})
            EXPECT_EQ(m->find(internal), std::string::npos) << *m;
    // SentencePiece trains in its own threads, where a failed allocation ends the process: its estimate is
    // checked against the memory limit first
    set_memory_limit(uint64_t(40) << 20);
    const std::string no_room = message([] {
        TokenizerTrainOptions options;
        options.vocab_size = 400;
        train_tokenizer(corpus_lines(), options);
    });
    set_memory_limit(0);
    EXPECT_EQ(no_room.rfind("training a tokenizer on ", 0), 0u) << no_room;
    EXPECT_NE(no_room.find("more than the memory limit of 40 MiB"), std::string::npos) << no_room;

    EXPECT_EQ(message([] {
                  TokenizerTrainOptions options;
                  options.vocab_size = 400;
                  options.type = "wordpiece";
                  train_tokenizer(corpus_lines(), options);
              }),
              "unknown tokenizer type 'wordpiece' (expected bpe, unigram or char)");
    EXPECT_EQ(message([] { Tokenizer::load("/nonexistent/tokenizer.model"); }),
              "/nonexistent/tokenizer.model: cannot open (No such file or directory)");
    const std::string garbage = message([] { Tokenizer::from_serialized("not a model", "x.model"); });
    // no source location of the library's (it said "Internal: ./src/sentencepiece_processor.cc(232) [...]")
    EXPECT_EQ(garbage, "x.model: not a SentencePiece tokenizer model");
    const std::string bad_line = message([] {
        TokenizerTrainOptions options;
        options.vocab_size = 400;
        std::vector<std::string> lines = {"fine", "bro\xFFken"};
        train_tokenizer(lines, options);
    });
    EXPECT_EQ(bad_line, "training text line 2: invalid UTF-8 at byte offset 3 (byte 0xFF)");
    // Lines SentencePiece would skip, all of them: before, "tokenizer training failed: " and no reason.
    EXPECT_EQ(message([] {
                  TokenizerTrainOptions options;
                  options.vocab_size = 400;
                  options.type = "unigram";  // bpe's lines stop at 32,768 (BpeSkipsAWordTooLongForItsTrainer)
                  std::vector<std::string> lines = {std::string(70000, 'a'), std::string(65537, 'b')};
                  train_tokenizer(lines, options);
              }),
              "every line of the training text is longer than 65536 bytes, which the tokenizer trainer skips: break "
              "the text into lines");
}

}  // namespace
}  // namespace retnet
