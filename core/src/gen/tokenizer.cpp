// SPDX-License-Identifier: GPL-3.0-or-later
// SentencePiece behind retnet::Tokenizer. Our own token_bytes() mirrors the library's decoder
// piece by piece (dummy-prefix space, byte pieces, controls, <unk>) so text can be streamed.
#include "retnet/tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <filesystem>
#include <new>
#include <string>

#include "retnet/error.h"
#include "retnet/files.h"
#include "retnet/memory_limit.h"
#include "retnet/utf8.h"
#include "sentencepiece_message.h"
#include "tokenizer_model_check.h"

namespace retnet {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";         // ▁ U+2581
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";    // " ⁇ ", SentencePiece's default

std::string replace_space_symbol(std::string_view piece) {
    std::string out;
    out.reserve(piece.size());
    size_t pos = 0;
    while (pos < piece.size()) {
        if (piece.substr(pos, kSpaceSymbol.size()) == kSpaceSymbol) {
            out += ' ';
            pos += kSpaceSymbol.size();
        } else {
            out += piece[pos++];
        }
    }
    return out;
}

// "<0xE2>" -> 0xE2
int byte_piece_value(const std::string& piece) {
    unsigned value = 0;
    if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%2X>", &value) == 1) return static_cast<int>(value);
    return -1;
}

// A FIFO or directory named tokenizer.model is refused with its own line (reading a FIFO would
// block forever). Real tokenizer models are at most a few MiB.
std::string read_file(const std::string& path) {
    std::error_code ec;  // a FIFO or a directory has no size: read_regular_file refuses those by name
    if (const uint64_t size = std::filesystem::file_size(path, ec); !ec) check_memory(size, "the tokenizer " + path);
    return read_regular_file(path, uint64_t(1) << 30);
}

}  // namespace

struct Tokenizer::Impl {
    sentencepiece::SentencePieceProcessor processor;
    std::vector<int> byte_values;  // (V) byte of each <0xNN> piece, -1 for other pieces
    bool strips_dummy_prefix = true;

    void index(const std::string& source) {
        const int V = processor.GetPieceSize();
        if (V <= 0) throw Error(source + ": tokenizer has an empty vocabulary");
        byte_values.assign(static_cast<size_t>(V), -1);
        int probe = -1;  // a plain piece that starts with ▁, to ask the library about the prefix
        for (int id = 0; id < V; ++id) {
            if (processor.IsByte(id)) byte_values[static_cast<size_t>(id)] = byte_piece_value(processor.IdToPiece(id));
            const std::string& piece = processor.IdToPiece(id);
            if (probe < 0 && !processor.IsControl(id) && !processor.IsUnknown(id) && !processor.IsByte(id) &&
                piece.size() > kSpaceSymbol.size() && piece.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0)
                probe = id;
        }
        if (probe >= 0) {
            std::string alone;
            if (const auto status = processor.Decode(std::vector<int>{probe}, &alone); !status.ok())
                throw Error(source + ": cannot decode with this tokenizer (" + sentencepiece_message(status.ToString()) + ")");
            strips_dummy_prefix = alone.empty() || alone[0] != ' ';
        }
    }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_serialized(std::string_view bytes, const std::string& source) {
    // A Hugging Face tokenizer.json (JSON) instead of a SentencePiece protobuf: say so plainly.
    const size_t first = bytes.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos && bytes[first] == '{')
        throw Error(source + ": a Hugging Face tokenizers file (tokenizer.json), not a SentencePiece model; only "
                    "tokenizer.model is read (Debian packages no tokenizers library): give token ids with --tokens");
    // SentencePiece holds every piece as a protobuf message and in its lookup tables, beside a copy of
    // the bytes: about 125 bytes a piece (a 140 MB file of 20 million empty pieces peaked at 2.8 GB,
    // unbounded by --max-memory: the hostile helper)
    const uint64_t pieces = check_tokenizer_model_bytes(bytes, source);
    check_memory_room(saturating_sum({saturating_product({pieces, 128}), saturating_product({2, bytes.size()})}),
                      "loading the tokenizer " + source + " (" + std::to_string(pieces) + " pieces)");
    auto impl = std::make_unique<Impl>();
    sentencepiece::util::Status status;
    try {
        status = impl->processor.LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {
        // Some corrupt models make the library's trie builder throw instead of returning a status
        // (found by fuzz/fuzz_tokenizer_model).
        // Darts' pool that cannot grow says so in its text: a valid large model under a memory cap
        // was called corrupt, with the library's file and line
        if (std::string(e.what()).find("bad_alloc") != std::string::npos) throw std::bad_alloc();
        throw Error(source + ": not a SentencePiece tokenizer model (" + sentencepiece_message(e.what()) + ")");
    }
    if (!status.ok()) {
        const std::string reason = sentencepiece_message(status.ToString());  // empty: its bytes do not parse
        throw Error(source + ": not a SentencePiece tokenizer model" + (reason.empty() ? "" : " (" + reason + ")"));
    }
    impl->index(source);
    return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::load(const std::string& path) { return from_serialized(read_file(path), path); }

std::unique_ptr<Tokenizer> Tokenizer::load_from_model_dir(const std::string& directory) {
    const auto path = std::filesystem::path(directory) / "tokenizer.model";
    std::error_code ec;  // symlink_status: a dangling link or a loop is reported by load(), not skipped
    if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return nullptr;
    return std::make_unique<Tokenizer>(load(path.string()));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
    check_utf8(text, "prompt");
    std::vector<int> ids;
    const auto status = impl_->processor.Encode(text, &ids);
    if (!status.ok()) throw Error("tokenizer: cannot encode text (" + status.ToString() + ")");
    return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
    std::vector<int> valid;
    valid.reserve(ids.size());
    for (int32_t id : ids)
        if (id >= 0 && id < vocab_size()) valid.push_back(id);
    std::string text;  // DecodeIds would return "" for a failed decode, as if the ids were no text
    if (const auto status = impl_->processor.Decode(valid, &text); !status.ok())
        throw Error("tokenizer: cannot decode ids (" + sentencepiece_message(status.ToString()) + ")");
    Utf8Assembler valid_text;  // a denormalization map may write any bytes
    return valid_text.push(text) + valid_text.flush();
}

int Tokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
int Tokenizer::bos_id() const { return impl_->processor.bos_id(); }
int Tokenizer::eos_id() const { return impl_->processor.eos_id(); }
int Tokenizer::unk_id() const { return impl_->processor.unk_id(); }

bool Tokenizer::is_control(int32_t id) const {
    return id >= 0 && id < vocab_size() && impl_->processor.IsControl(id);
}

bool Tokenizer::is_byte(int32_t id) const {
    return id >= 0 && id < vocab_size() && impl_->byte_values[static_cast<size_t>(id)] >= 0;
}

std::string Tokenizer::piece(int32_t id) const {
    if (id < 0 || id >= vocab_size()) return {};
    return impl_->processor.IdToPiece(id);
}

std::string Tokenizer::display_piece(int32_t id) const {
    if (id < 0 || id >= vocab_size()) return {};
    if (const int byte = impl_->byte_values[static_cast<size_t>(id)]; byte == '\n' || byte == '\t')
        return byte == '\n' ? "\u21B5" : "\u21E5";
    if (is_byte(id) || is_control(id)) return piece(id);
    std::string text = replace_space_symbol(piece(id));
    // User-defined pieces could hold anything; candidates must stay printable JSON.
    return is_valid_utf8(text) ? text : piece(id);
}

std::string Tokenizer::token_bytes(int32_t id, bool at_text_start) const {
    if (id < 0 || id >= vocab_size() || is_control(id)) return {};
    if (const int byte = impl_->byte_values[static_cast<size_t>(id)]; byte >= 0)
        return std::string(1, static_cast<char>(byte));
    if (impl_->processor.IsUnknown(id)) return std::string(kUnknownSurface);
    std::string_view raw = impl_->processor.IdToPiece(id);
    if (at_text_start && impl_->strips_dummy_prefix && raw.substr(0, kSpaceSymbol.size()) == kSpaceSymbol)
        raw.remove_prefix(kSpaceSymbol.size());
    return replace_space_symbol(raw);
}

std::string Tokenizer::serialized() const { return impl_->processor.serialized_model_proto(); }

// ---- streaming ----------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool at_text_start)
    : tokenizer_(&tokenizer), at_text_start_(at_text_start) {}

std::string StreamDecoder::push(int32_t id) {
    if (tokenizer_->is_control(id)) return {};
    const std::string bytes = tokenizer_->token_bytes(id, at_text_start_);
    // Like SentencePiece, strip the dummy-prefix space once: the first visible piece ends it.
    at_text_start_ = false;
    return assembler_.push(bytes);
}

std::string StreamDecoder::flush() { return assembler_.flush(); }

}  // namespace retnet
