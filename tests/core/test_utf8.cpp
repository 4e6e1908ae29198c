// SPDX-License-Identifier: GPL-3.0-or-later
// UTF-8 validation against an independent code-point decoder, and the streaming assembler.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "retnet/error.h"
#include "retnet/utf8.h"

namespace retnet {
namespace {

// Independent check: decode one code point by bit masks, then apply the Unicode rules
// (shortest form, no surrogates, at most U+10FFFF). Returns the length or 0 when invalid.
int decode_reference(const std::string& s, size_t pos) {
    const unsigned b0 = static_cast<unsigned char>(s[pos]);
    int length;
    uint32_t cp;
    if (b0 < 0x80) return 1;
    if ((b0 & 0xE0) == 0xC0) length = 2, cp = b0 & 0x1F;
    else if ((b0 & 0xF0) == 0xE0) length = 3, cp = b0 & 0x0F;
    else if ((b0 & 0xF8) == 0xF0) length = 4, cp = b0 & 0x07;
    else return 0;
    if (pos + static_cast<size_t>(length) > s.size()) return 0;
    for (int k = 1; k < length; ++k) {
        const unsigned b = static_cast<unsigned char>(s[pos + static_cast<size_t>(k)]);
        if ((b & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b & 0x3F);
    }
    const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return length;
}

bool valid_reference(const std::string& s) {
    for (size_t pos = 0; pos < s.size();) {
        const int length = decode_reference(s, pos);
        if (length == 0) return false;
        pos += static_cast<size_t>(length);
    }
    return true;
}

TEST(Utf8, AcceptsValidText) {
    EXPECT_TRUE(is_valid_utf8(""));
    EXPECT_TRUE(is_valid_utf8("plain ASCII \t\n\x01"));
    EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
    EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));                           // U+10FFFF
    EXPECT_TRUE(is_valid_utf8("e\xCC\x81"));                                  // e + combining acute
}

TEST(Utf8, NamesTheOffsetOfTheFirstBadByte) {
    EXPECT_EQ(find_invalid_utf8("ab\xC3("), std::optional<size_t>(2));
    EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), std::optional<size_t>(0));          // overlong '/'
    EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), std::optional<size_t>(1));     // surrogate D800
    EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), std::optional<size_t>(0));  // above U+10FFFF
    EXPECT_EQ(find_invalid_utf8("abc\xE2\x82"), std::optional<size_t>(3));       // cut short
    EXPECT_EQ(find_invalid_utf8("\x80"), std::optional<size_t>(0));              // stray continuation
    EXPECT_EQ(find_invalid_utf8("ok\xFF"), std::optional<size_t>(2));
}

TEST(Utf8, CheckThrowsOneLineWithOffsetAndByte) {
    try {
        check_utf8("hello \xE9t\xC3\xA9", "prompt");
        FAIL() << "invalid UTF-8 accepted";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), "prompt: invalid UTF-8 at byte offset 6 (byte 0xE9)");
    }
    EXPECT_NO_THROW(check_utf8("h\xC3\xA9", "prompt"));
}

// Every 1- and 2-byte string, and 3-byte strings over bytes that matter, agree with the
// independent decoder.
TEST(Utf8, AgreesWithReferenceDecoderExhaustively) {
    std::vector<unsigned char> interesting = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                              0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                              0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    int checked = 0;
    for (int a = 0; a < 256; ++a) {
        for (int b = 0; b < 256; ++b) {
            const std::string s = {static_cast<char>(a), static_cast<char>(b)};
            ASSERT_EQ(is_valid_utf8(s), valid_reference(s)) << std::hex << a << " " << b;
            ++checked;
        }
    }
    for (unsigned char a : interesting)
        for (unsigned char b : interesting)
            for (unsigned char c : interesting)
                for (unsigned char d : interesting) {
                    const std::string s = {static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                                           static_cast<char>(d)};
                    ASSERT_EQ(is_valid_utf8(s), valid_reference(s))
                        << std::hex << int(a) << " " << int(b) << " " << int(c) << " " << int(d);
                    ++checked;
                }
    EXPECT_EQ(checked, 65536 + 25 * 25 * 25 * 25);
}

TEST(Utf8, CompletePrefixStopsBeforeAnUnfinishedCharacter) {
    EXPECT_EQ(complete_utf8_prefix("a\xE2\x82"), 1u);
    EXPECT_EQ(complete_utf8_prefix("a\xE2\x82\xAC"), 4u);
    EXPECT_EQ(complete_utf8_prefix("a\xF0\x9F"), 1u);
    EXPECT_EQ(complete_utf8_prefix("ab"), 2u);
    EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);
}

TEST(Utf8, AssemblerReleasesCharactersOnlyWhenComplete) {
    Utf8Assembler assembler;
    const std::string emoji = "\xF0\x9F\x98\x80";
    EXPECT_EQ(assembler.push(emoji.substr(0, 1)), "");
    EXPECT_EQ(assembler.push(emoji.substr(1, 2)), "");
    EXPECT_TRUE(assembler.has_pending());
    EXPECT_EQ(assembler.push(emoji.substr(3, 1) + "x"), emoji + "x");
    EXPECT_FALSE(assembler.has_pending());
}

TEST(Utf8, AssemblerReplacesBytesThatCanNeverBeValid) {
    Utf8Assembler assembler;
    const std::string replacement = "\xEF\xBF\xBD";
    EXPECT_EQ(assembler.push("a\xFF" "b"), "a" + replacement + "b");
    EXPECT_EQ(assembler.push("\xE2\x82"), "");
    EXPECT_EQ(assembler.push("A"), replacement + replacement + "A");  // E2 82 then a non-continuation
    EXPECT_EQ(assembler.push("\xC3"), "");
    EXPECT_EQ(assembler.flush(), replacement);
    EXPECT_FALSE(assembler.has_pending());
}

// Random byte soup pushed in random pieces: every output and every prefix of the joined output
// is valid, and valid input comes out unchanged.
TEST(Utf8, AssemblerOutputIsAlwaysValid) {
    uint64_t x = 12345;
    auto next = [&x] {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        return x;
    };
    const std::string valid_text = "z\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 e\xCC\x81 \xE4\xB8\xAD";
    for (int round = 0; round < 200; ++round) {
        std::string input;
        if (round % 2 == 0) {
            for (int i = 0; i < 40; ++i) input += static_cast<char>(next() & 0xFF);
        } else {
            for (int i = 0; i < 4; ++i) input += valid_text;
        }
        Utf8Assembler assembler;
        std::string joined;
        for (size_t pos = 0; pos < input.size();) {
            const size_t take = std::min<size_t>(1 + next() % 5, input.size() - pos);
            const std::string out = assembler.push(std::string_view(input).substr(pos, take));
            ASSERT_TRUE(is_valid_utf8(out));
            joined += out;
            ASSERT_TRUE(is_valid_utf8(joined));
            pos += take;
        }
        joined += assembler.flush();
        ASSERT_TRUE(is_valid_utf8(joined));
        if (round % 2 == 1) {
            EXPECT_EQ(joined, input);
        }
    }
}

}  // namespace
TEST(Printable, ControlsBecomeVisibleAndTextStays) {
    // C0 controls and DEL as their control pictures (ESC U+241B, BEL U+2407, DEL U+2421); \n and \t stay
    EXPECT_EQ(printable("a\x1b[31m\x07\x7f\n\tb"), "a\xe2\x90\x9b[31m\xe2\x90\x87\xe2\x90\xa1\n\tb");
    // C1 controls (CSI is U+009B, NEL U+0085) have no pictures: U+FFFD; their neighbours (U+00A0, é) stay
    EXPECT_EQ(printable("x\xc2\x9b" "2J\xc2\x85\xc2\xa0\xc3\xa9"), "x\xef\xbf\xbd" "2J\xef\xbf\xbd\xc2\xa0\xc3\xa9");
    EXPECT_EQ(printable("end\xc2"), "end\xc2");  // a cut sequence is left to the caller's UTF-8 check
}

}  // namespace retnet
