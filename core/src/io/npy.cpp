// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/npy.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "io/atomic_file.h"
#include "retnet/error.h"

static_assert(std::endian::native == std::endian::little, ".npy '<f4' data is little-endian");

namespace retnet {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

std::string header_text(const std::vector<int64_t>& shape) {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) dims += ",";  // a 1-tuple needs its comma in Python
    std::string text = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    // numpy pads so that magic + version + length + header is a multiple of 64, ending in '\n'.
    const size_t unpadded = kMagicSize + 2 + 2 + text.size() + 1;
    text.append((64 - unpadded % 64) % 64, ' ');
    text += '\n';
    return text;
}

std::string preamble(const std::vector<int64_t>& shape) {
    const std::string text = header_text(shape);
    if (text.size() > std::numeric_limits<uint16_t>::max()) throw Error("npy: shape has too many dimensions");
    std::string out(kMagic, kMagicSize);
    out += '\x01';
    out += '\x00';
    const auto len = static_cast<uint16_t>(text.size());
    out += static_cast<char>(len & 0xff);
    out += static_cast<char>(len >> 8);
    return out + text;
}

// A cursor over the header's Python dict literal; every error names the file.
class DictParser {
public:
    DictParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

    [[noreturn]] void fail(const std::string& what) const {
        // Quote the header on the same line: control bytes (a corrupt file may hold newlines) become '?'.
        std::string quoted = s_.substr(0, std::min<size_t>(s_.find_last_not_of(" \n") + 1, 200));
        for (char& c : quoted)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
        throw Error(path_ + ": bad .npy header (" + what + "): " + quoted);
    }
    void skip_space() {
        while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    bool accept(char c) {
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!accept(c)) fail(std::string("expected '") + c + "'");
    }
    std::string string_literal() {
        skip_space();
        if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a quoted string");
        const char quote = s_[pos_++];
        const size_t end = s_.find(quote, pos_);
        if (end == std::string::npos) fail("unterminated string");
        std::string out = s_.substr(pos_, end - pos_);
        pos_ = end + 1;
        return out;
    }
    bool boolean() {
        skip_space();
        for (const auto& [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
            const size_t n = std::strlen(word);
            if (s_.compare(pos_, n, word) == 0) {
                pos_ += n;
                return value;
            }
        }
        fail("expected True or False");
    }
    std::vector<int64_t> int_tuple() {
        expect('(');
        std::vector<int64_t> out;
        while (!accept(')')) {
            skip_space();
            const size_t start = pos_;
            int64_t v = 0;
            while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
                if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) fail("dimension too large");
                v = v * 10 + (s_[pos_++] - '0');
            }
            if (pos_ == start) fail("expected a non-negative integer in the shape");
            out.push_back(v);
            if (!accept(',')) {
                expect(')');
                break;
            }
        }
        return out;
    }

private:
    const std::string& s_;
    const std::string& path_;
    size_t pos_ = 0;
};

}  // namespace

std::string npy_bytes(const float* data, const std::vector<int64_t>& shape) {
    const size_t n = static_cast<size_t>(shape_numel(shape));
    std::string out = preamble(shape);
    if (n) out.append(reinterpret_cast<const char*>(data), n * sizeof(float));
    return out;
}

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
    const size_t n = static_cast<size_t>(shape_numel(shape));
    io::AtomicFile out(path);
    out.write(preamble(shape));
    out.write(data, n * sizeof(float));
    out.commit();
}

void write_npy(const std::string& path, const Tensor& tensor) {
    if (shape_numel(tensor.shape) != tensor.numel())
        throw Error(path + ": tensor shape " + tensor.shape_string() + " does not match its " +
                    std::to_string(tensor.numel()) + " values");
    write_npy(path, tensor.ptr(), tensor.shape);
}

Tensor read_npy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() < kMagicSize + 4 || bytes.compare(0, kMagicSize, kMagic, kMagicSize) != 0)
        throw Error(path + ": not a .npy file (no \\x93NUMPY magic)");
    const auto major = static_cast<unsigned char>(bytes[6]);
    size_t header_len = 0, header_start = 0;
    auto byte = [&](size_t i) { return static_cast<size_t>(static_cast<unsigned char>(bytes[i])); };
    if (major == 1) {
        header_len = byte(8) | byte(9) << 8;
        header_start = 10;
    } else if (major == 2 || major == 3) {
        if (bytes.size() < 12) throw Error(path + ": truncated .npy header");
        header_len = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
        header_start = 12;
    } else {
        throw Error(path + ": unsupported .npy version " + std::to_string(major) + "." + std::to_string(byte(7)));
    }
    if (header_len > bytes.size() - header_start)
        throw Error(path + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                    std::to_string(bytes.size()));
    const std::string header = bytes.substr(header_start, header_len);

    DictParser p(header, path);
    std::string descr;
    bool fortran = false, have_descr = false, have_order = false, have_shape = false;
    std::vector<int64_t> shape;
    p.expect('{');
    while (!p.accept('}')) {
        const std::string key = p.string_literal();
        p.expect(':');
        if (key == "descr") {
            descr = p.string_literal();
            have_descr = true;
        } else if (key == "fortran_order") {
            fortran = p.boolean();
            have_order = true;
        } else if (key == "shape") {
            shape = p.int_tuple();
            have_shape = true;
        } else {
            p.fail("unknown key '" + key + "'");
        }
        if (!p.accept(',')) {
            p.expect('}');
            break;
        }
    }
    if (!have_descr || !have_order || !have_shape) p.fail("needs 'descr', 'fortran_order' and 'shape'");
    if (fortran) throw Error(path + ": Fortran-order arrays are not supported (save with C order)");
    size_t elem;
    if (descr == "<f4")
        elem = 4;
    else if (descr == "<f8")
        elem = 8;
    else
        throw Error(path + ": dtype '" + descr + "' is not supported (expected '<f4' or '<f8')");

    uint64_t numel = 1;
    for (int64_t d : shape)
        if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
            throw Error(path + ": shape " + shape_to_string(shape) + " is too large");
    const size_t data_size = bytes.size() - header_start - header_len;
    uint64_t needed = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(elem), &needed) || needed != data_size)
        throw Error(path + ": shape " + shape_to_string(shape) + " of '" + descr + "' needs " +
                    std::to_string(numel) + " x " + std::to_string(elem) + " bytes but the file holds " +
                    std::to_string(data_size) + " data bytes");

    Tensor out(shape);
    const char* src = bytes.data() + header_start + header_len;
    if (out.data.empty()) return out;
    if (elem == 4) {
        std::memcpy(out.ptr(), src, out.data.size() * 4);
    } else {
        for (size_t i = 0; i < out.data.size(); ++i) {
            double v;
            std::memcpy(&v, src + 8 * i, 8);
            out.data[i] = static_cast<float>(v);
        }
    }
    return out;
}

}  // namespace retnet
