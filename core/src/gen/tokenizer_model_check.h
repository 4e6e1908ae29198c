// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// What SentencePiece's loader would crash on, checked in a tokenizer.model's protobuf before the
// library sees it (crafted files, found by hostile reviews):
// - a piece longer than kMaxTokenizerPieceBytes: the unigram trie builder (Darts) recurses once per
//   byte, about 50 bytes of stack each; a 200,000-byte piece overflowed the main thread's 8 MiB
//   (real pieces are short: the trainer makes at most 16 characters, special tokens a few dozen;
//   4096 bytes need ~200 KiB of stack on any thread);
// - a normalization map (normalizer_spec or denormalizer_spec precompiled_charsmap) whose trie
//   leads outside itself, or whose replacement strings run past its end: the library walks it
//   without a bound check (SIGSEGV on the first encode or decode); one too short for its trie
//   (a broken denormalization map made every decode return nothing); more than 32 rules that
//   begin one text (0.1.97 keeps 32 results in a fixed buffer: SIGSEGV); a loop, or a key over 256
//   bytes (the normalizer walks from every position: an encode went quadratic, 23 s for 131 KB);
//   a replacement longer than 64 bytes (one of 4000 took an encode of 20,000 characters to 18 GB);
//   a map over 1 MiB (bounds the walk that counts the rules). Of a spec given twice, only the map
//   protobuf keeps (the last) is read.
// Read as protobuf reads it: keys of 32 bits in at most 5 bytes (no field hides behind a key the
// library reads as another), a repeated scalar field keeps its last value, groups are skipped, a
// message given twice is merged. Bytes that do not parse end the check: the library then refuses
// them itself.
#include <cstdint>
#include <string>
#include <string_view>

namespace retnet {

inline constexpr uint64_t kMaxTokenizerPieceBytes = 4096;

// Throws retnet::Error "<source>: …" naming what is wrong. Returns the pieces counted.
uint64_t check_tokenizer_model_bytes(std::string_view model, const std::string& source);

}  // namespace retnet
