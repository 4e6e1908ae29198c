// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "retnet/files.h"
#include "retnet/json_text.h"
#include "retnet/error.h"

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace retnet {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the limit of the reference implementation

struct DTypeEntry {
    DType dtype;
    const char* name;
    int size;
};
constexpr DTypeEntry kDTypes[] = {{DType::F64, "F64", 8},  {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
                                  {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
                                  {DType::I16, "I16", 2},  {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
                                  {DType::Bool, "BOOL", 1}};

bool parse_dtype(const std::string& name, DType& out) {
    for (const DTypeEntry& e : kDTypes)
        if (name == e.name) {
            out = e.dtype;
            return true;
        }
    return false;
}

template <class T>
T load_unaligned(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

}  // namespace

const char* dtype_name(DType dtype) {
    for (const DTypeEntry& e : kDTypes)
        if (e.dtype == dtype) return e.name;
    return "?";
}

int dtype_size(DType dtype) {
    for (const DTypeEntry& e : kDTypes)
        if (e.dtype == dtype) return e.size;
    return 0;
}

float half_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN (payload kept)
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        // Subnormal half: normalize; every half subnormal is a normal float.
        int e = -1;
        do {
            ++e;
            mantissa <<= 1;
        } while ((mantissa & 0x400u) == 0);
        bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    return std::bit_cast<float>(bits);
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

uint16_t float_to_bf16(float value) {
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // stay a (quiet) NaN
    const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);  // nearest, ties to even
    return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t float_to_half(float value) {
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    const uint32_t abs = bits & 0x7fffffffu;
    if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
    const int exponent = static_cast<int>(abs >> 23) - 127;
    if (exponent < -25) return sign;  // below half of the smallest subnormal
    uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    // Shift so that the result has 10 mantissa bits (fewer for subnormals), rounding to nearest even.
    const int shift = exponent < -14 ? 13 + (-14 - exponent) : 13;
    const uint32_t half_ulp = 1u << (shift - 1);
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    mantissa >>= shift;
    if (rest > half_ulp || (rest == half_ulp && (mantissa & 1u))) ++mantissa;
    if (exponent < -14) return static_cast<uint16_t>(sign | mantissa);  // may carry into the smallest normal
    // A carry out of the mantissa increments the exponent, as it should.
    return static_cast<uint16_t>(sign | (((static_cast<uint32_t>(exponent + 15)) << 10) + (mantissa - 0x400u)));
}

namespace {

// A header value as quoted in an error: its JSON, cut after 100 characters (a shape of 10,000
// dimensions would fill the screen).
std::string brief(const json& value) {
    std::string text = value.dump();
    if (text.size() > 100) text = text.substr(0, 100) + "...(" + std::to_string(text.size() - 100) + " more)";
    return text;
}

// More would not be a model this program runs (a shard of the largest public models holds a few
// thousand), and its header would take seconds and a gigabyte to parse, deaf to Ctrl-C meanwhile.
constexpr size_t kMaxTensors = 100000;

// The top-level names of JSON text, by a SAX pass that stops at the first name given twice (the
// parsed json keeps only one of them), past kMaxTensors + 1 names (the tensors and __metadata__)
// or past kMaxJsonDepth levels of nesting. nlohmann's callback parser, the other way to see
// repeated names, walks the whole parent object after each member that ends: minutes for 100,000
// tensors.
struct TopLevelNames {
    std::string repeated;
    bool too_many = false;
    bool too_deep = false;  // nested past kMaxJsonDepth (retnet/json_text.h)
};
TopLevelNames scan_top_level_names(const std::string& text) {
    struct Scan : DepthBoundedSax {
        std::set<std::string> seen;
        TopLevelNames found;
        bool key(string_t& k) override {
            if (depth != 1) return true;
            if (!seen.insert(k).second) found.repeated = k;
            found.too_many = seen.size() > kMaxTensors + 1;
            return found.repeated.empty() && !found.too_many;
        }
    } scan;
    json::sax_parse(text, &scan);
    scan.found.too_deep = scan.too_deep;
    return scan.found;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reading

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
    require_regular_file(path);  // else names what is there: a directory, a FIFO, a link to nothing…
    // O_NONBLOCK: if the path was swapped for a FIFO since the check, open() still returns at once.
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    try {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) throw Error(path + ": cannot stat (" + std::strerror(errno) + ")");
        if (!S_ISREG(st.st_mode)) throw Error(path + ": is not a regular file");
        size_ = static_cast<size_t>(st.st_size);
        opened_mtime_ = st.st_mtim;
        if (size_ < 8)
            throw Error(path + ": truncated file (" + std::to_string(size_) + (size_ == 1 ? " byte" : " bytes") +
                        "; a safetensors file starts with an 8-byte header length)");
        parse_header();
    } catch (...) {
        // The destructor does not run for a constructor that throws.
        ::close(fd_);
        throw;
    }
}

SafetensorsFile::~SafetensorsFile() { ::close(fd_); }

void SafetensorsFile::read_bytes(uint64_t offset, size_t n, void* dst) const {
    auto* out = static_cast<unsigned char*>(dst);
    while (n > 0) {
        const ssize_t got = ::pread(fd_, out, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(offset));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw Error(path_ + ": cannot read (" + std::strerror(errno) + ")");
        if (got == 0) {
            struct stat st {};
            const std::string now = ::fstat(fd_, &st) == 0 ? std::to_string(st.st_size) + " bytes" : "less";
            throw Error(path_ + ": the file shrank while it was read (" + std::to_string(size_) + " bytes when opened, " +
                        now + " now: truncated or rewritten by another program?)");
        }
        out += got;
        offset += static_cast<uint64_t>(got);
        n -= static_cast<size_t>(got);
    }
    // Written over in place (same size or larger) while it was read: what was read may mix two
    // files. A write updates the time of modification before it copies its data, so a read that saw
    // new bytes sees the new time here.
    struct stat st {};
    if (::fstat(fd_, &st) == 0 &&
        (st.st_mtim.tv_sec != opened_mtime_.tv_sec || st.st_mtim.tv_nsec != opened_mtime_.tv_nsec))
        throw Error(path_ + ": the file changed while it was read (written over by another program?); read it again "
                            "once that program is done");
}

void SafetensorsFile::parse_header() {
    auto fail = [&](const std::string& what) { throw Error(path_ + ": " + what); };

    unsigned char length_bytes[8];
    read_bytes(0, 8, length_bytes);
    const uint64_t header_len = load_unaligned<uint64_t>(length_bytes);
    if (header_len > size_ - 8)
        fail("header length " + std::to_string(header_len) + " does not fit in the file: " + std::to_string(size_) +
             " bytes hold 8 for the length and " + std::to_string(size_ - 8) +
             " after it (truncated or not a safetensors file)");
    if (header_len > kMaxHeaderBytes) fail("header length " + std::to_string(header_len) + " is larger than 100 MiB");
    data_start_ = 8 + static_cast<size_t>(header_len);
    const uint64_t data_size = size_ - data_start_;

    std::string header_text(static_cast<size_t>(header_len), '\0');
    read_bytes(8, header_text.size(), header_text.data());
    const TopLevelNames names = scan_top_level_names(header_text);  // (valid JSON or not: parsed next)
    if (names.too_many)
        fail("header lists more than " + std::to_string(kMaxTensors) + " tensors (not a model file this program runs)");
    if (names.too_deep)
        fail("header nests arrays or objects more than " + std::to_string(kMaxJsonDepth) + " levels deep (not a model file)");
    json header;
    try {
        header = json::parse(header_text);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
        fail("header is not valid JSON (" + json_error_text(e) + ")");
    }
    if (!header.is_object()) fail("header is not a JSON object");
    if (!names.repeated.empty()) fail("header names '" + names.repeated + "' twice");

    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) fail("__metadata__ is not an object");
            for (const auto& [key, value] : entry.items()) {
                if (!value.is_string()) fail("__metadata__ value of '" + key + "' is not a string");
                metadata_[key] = value.get<std::string>();
            }
            continue;
        }
        const std::string where = "tensor '" + name + "'";
        if (!entry.is_object()) fail(where + ": entry is not an object");
        if (!entry.contains("dtype") || !entry["dtype"].is_string()) fail(where + ": missing dtype");
        if (!entry.contains("shape") || !entry["shape"].is_array()) fail(where + ": missing shape");
        if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2)
            fail(where + ": data_offsets must be [begin, end]");
        TensorInfo info;
        info.name = name;
        const std::string dtype = entry["dtype"].get<std::string>();
        if (!parse_dtype(dtype, info.dtype)) fail(where + ": unsupported dtype '" + dtype + "'");
        uint64_t numel = 1;
        bool overflow = false;
        for (const json& dim : entry["shape"]) {
            if (!dim.is_number_integer() || (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0))
                fail(where + ": shape " + brief(entry["shape"]) + " has a dimension that is not a non-negative integer");
            const uint64_t d = dim.get<uint64_t>();
            if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, d, &numel))
                overflow = true;
            info.shape.push_back(static_cast<int64_t>(std::min<uint64_t>(d, std::numeric_limits<int64_t>::max())));
        }
        uint64_t nbytes = 0;
        if (overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(info.dtype)), &nbytes))
            fail(where + ": shape " + brief(entry["shape"]) + " is too large (its byte size overflows)");
        if (nbytes > data_size)
            fail(where + ": shape " + brief(entry["shape"]) + " needs " + std::to_string(nbytes) +
                 " bytes but the data section holds only " + std::to_string(data_size) + " (truncated file?)");
        for (const json& off : entry["data_offsets"])
            if (!off.is_number_unsigned() && !(off.is_number_integer() && off.get<int64_t>() >= 0))
                fail(where + ": data_offsets " + brief(entry["data_offsets"]) + " are not non-negative integers");
        info.begin = entry["data_offsets"][0].get<uint64_t>();
        info.end = entry["data_offsets"][1].get<uint64_t>();
        if (info.begin > info.end)
            fail(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                 "] end before they begin");
        if (info.end > data_size)
            fail(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                 "] lie outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
        if (info.end - info.begin != nbytes)
            fail(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) + "] hold " +
                 std::to_string(info.end - info.begin) + " bytes but " + dtype + " " + brief(entry["shape"]) +
                 " needs " + std::to_string(nbytes));
        tensors_.push_back(std::move(info));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (size_t i = 1; i < tensors_.size(); ++i)
        if (tensors_[i].begin < tensors_[i - 1].end)
            fail("tensors '" + tensors_[i - 1].name + "' and '" + tensors_[i].name + "' overlap in the data section");
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) throw Error(path_ + ": no tensor named '" + name + "'");
    return tensors_[it->second];
}

std::vector<unsigned char> SafetensorsFile::bytes(const std::string& name) const {
    const TensorInfo& t = info(name);
    std::vector<unsigned char> out(static_cast<size_t>(t.end - t.begin));
    read_bytes(data_start_ + t.begin, out.size(), out.data());
    return out;
}

void SafetensorsFile::read_bf16_into(const std::string& name, uint16_t* dst) const {
    const TensorInfo& t = info(name);
    if (t.dtype != DType::BF16)
        throw Error(path_ + ": tensor '" + name + "' is " + dtype_name(t.dtype) + ", not BF16");
    read_bytes(data_start_ + t.begin, static_cast<size_t>(t.end - t.begin), dst);
}

namespace {

// n values of `dtype` at src as floats at dst.
void convert_to_float(DType dtype, const unsigned char* src, float* dst, size_t n) {
    switch (dtype) {
        case DType::F32: std::memcpy(dst, src, n * 4); break;
        case DType::F16:
            for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(load_unaligned<uint16_t>(src + 2 * i));
            break;
        case DType::BF16:
            for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_unaligned<uint16_t>(src + 2 * i));
            break;
        case DType::F64:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_unaligned<double>(src + 8 * i));
            break;
        case DType::I64:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_unaligned<int64_t>(src + 8 * i));
            break;
        case DType::I32:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_unaligned<int32_t>(src + 4 * i));
            break;
        case DType::I16:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_unaligned<int16_t>(src + 2 * i));
            break;
        case DType::I8:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(static_cast<int8_t>(src[i]));
            break;
        case DType::U8:
        case DType::Bool:
            for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
            break;
    }
}

}  // namespace

void SafetensorsFile::read_into(const std::string& name, float* dst) const { read_into(name, dst, {}); }

void SafetensorsFile::read_into(const std::string& name, float* dst, const std::function<bool()>& cancelled) const {
    const size_t n = static_cast<size_t>(info(name).numel());
    for (size_t done = 0; done < n; done += kReadSlice) {  // dst may be null for an empty tensor
        throw_if_cancelled(cancelled);
        read_range_into(name, done, std::min(kReadSlice, n - done), dst + done);
    }
}

void SafetensorsFile::read_range_into(const std::string& name, size_t first, size_t count, float* dst) const {
    const TensorInfo& t = info(name);
    const size_t n = static_cast<size_t>(t.numel()), width = static_cast<size_t>(dtype_size(t.dtype));
    if (first > n || count > n - first)
        throw Error(path_ + ": elements " + std::to_string(first) + " + " + std::to_string(count) + " of '" + name +
                    "' pass its end (" + std::to_string(n) + " elements)");
    const uint64_t offset = data_start_ + t.begin + first * width;
    if (t.dtype == DType::F32) {  // as stored (little-endian)
        read_bytes(offset, count * width, dst);
        return;
    }
    // other widths through a bounded staging buffer
    constexpr size_t kStagingBytes = size_t{1} << 20;
    std::vector<unsigned char> staging(std::min(kStagingBytes, count * width));
    const size_t per_pass = staging.size() / width;
    for (size_t done = 0; done < count; done += per_pass) {
        const size_t part = std::min(per_pass, count - done);
        read_bytes(offset + done * width, part * width, staging.data());
        convert_to_float(t.dtype, staging.data(), dst + done, part);
    }
}

Tensor SafetensorsFile::read(const std::string& name) const {
    Tensor out(info(name).shape);
    read_into(name, out.ptr());
    return out;
}

// ---------------------------------------------------------------------------------------------
// Sets of files

namespace {

bool is_file(const std::string& path) {
    std::error_code ec;
    return fs::is_regular_file(path, ec);
}

}  // namespace

SafetensorsSet SafetensorsSet::open_directory(const std::string& directory) {
    const std::string index = (fs::path(directory) / "model.safetensors.index.json").string();
    const std::string single = (fs::path(directory) / "model.safetensors").string();
    if (is_file(index)) return open(index);
    if (is_file(single)) return open(single);
    std::error_code ec;  // something else stands there (a directory, a FIFO, a symlink loop): say what
    for (const std::string& path : {index, single})
        if (fs::exists(fs::symlink_status(path, ec))) require_regular_file(path);
    throw Error(directory + ": no model.safetensors or model.safetensors.index.json");
}

SafetensorsSet SafetensorsSet::open(const std::string& path) {
    SafetensorsSet set;
    set.source_ = path;
    if (fs::path(path).extension() != ".json") {
        set.files_.push_back(std::make_shared<SafetensorsFile>(path));
        for (const TensorInfo& t : set.files_[0]->tensors()) set.where_[t.name] = 0;
        return set;
    }

    json index;
    try {
        index = parse_json_bounded(read_regular_file(path, 64u << 20));  // a weight map: KiB per thousand tensors
    } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
        throw Error(path + ": not valid JSON (" + json_error_text(e) + ")");
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        throw Error(path + ": missing field 'weight_map' (an object {tensor: file})");

    const fs::path dir = fs::path(path).parent_path();
    std::map<std::string, size_t> file_index;
    for (const auto& [name, file] : index["weight_map"].items()) {
        if (!file.is_string()) throw Error(path + ": weight_map entry of '" + name + "' is not a file name");
        const std::string shard = file.get<std::string>();
        const fs::path shard_path(shard);
        // Shards live next to the index; refuse paths that would read elsewhere.
        if (shard.empty() || shard_path.is_absolute() ||
            std::find(shard_path.begin(), shard_path.end(), "..") != shard_path.end())
            throw Error(path + ": weight_map entry of '" + name + "' names '" + shard +
                        "', which is not a file next to the index");
        auto it = file_index.find(shard);
        if (it == file_index.end()) {
            const std::string full = (dir / shard_path).string();
            std::error_code ec;  // nothing at all there; anything else the shard's own open names precisely
            if (!fs::exists(fs::symlink_status(full, ec)))
                throw Error(path + ": shard '" + shard + "' (holding '" + name + "') does not exist");
            set.files_.push_back(std::make_shared<SafetensorsFile>(full));
            it = file_index.emplace(shard, set.files_.size() - 1).first;
        }
        if (!set.files_[it->second]->contains(name))
            throw Error(path + ": weight_map puts '" + name + "' in '" + shard + "', which does not contain it");
        set.where_[name] = it->second;
    }
    return set;
}

std::vector<std::string> SafetensorsSet::names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& [name, file] : where_) out.push_back(name);
    return out;
}

const TensorInfo& SafetensorsSet::info(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw Error(source_ + ": no tensor named '" + name + "'");
    return files_[it->second]->info(name);
}

const std::string& SafetensorsSet::file_of(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw Error(source_ + ": no tensor named '" + name + "'");
    return files_[it->second]->path();
}

Tensor SafetensorsSet::read(const std::string& name) const {
    Tensor out(info(name).shape);
    read_into(name, out.ptr());
    return out;
}

void SafetensorsSet::read_into(const std::string& name, float* dst) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw Error(source_ + ": no tensor named '" + name + "'");
    files_[it->second]->read_into(name, dst);
}

void SafetensorsSet::read_bf16_into(const std::string& name, uint16_t* dst) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw Error(source_ + ": no tensor named '" + name + "'");
    files_[it->second]->read_bf16_into(name, dst);
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// The tensor's values as `dtype` (F32 or BF16), from either storage, in blocks.
void write_values(io::AtomicFile& out, const Tensor& t, DType dtype) {
    const Storage want = dtype == DType::F32 ? Storage::F32 : Storage::BF16;
    if (t.storage() == want) {
        if (want == Storage::F32) out.write(t.data.data(), t.data.size() * 4);
        else out.write(t.bf16.data(), t.bf16.size() * 2);
        return;
    }
    constexpr int64_t kBlock = 1 << 16;
    std::vector<float> values;
    std::vector<uint16_t> rounded;
    for (int64_t done = 0, n = t.numel(); done < n; done += kBlock) {
        const int64_t count = std::min(kBlock, n - done);
        values.resize(static_cast<size_t>(count));
        t.read_f32(done, count, values.data());
        if (want == Storage::F32) {
            out.write(values.data(), values.size() * 4);
            continue;
        }
        rounded.resize(values.size());
        for (size_t i = 0; i < values.size(); ++i) rounded[i] = float_to_bf16(values[i]);
        out.write(rounded.data(), rounded.size() * 2);
    }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata, DType dtype,
                       const std::function<bool()>& cancelled) {
    if (dtype != DType::F32 && dtype != DType::BF16)
        throw Error(path + ": can only write F32 or BF16, not " + dtype_name(dtype));
    const uint64_t elem = static_cast<uint64_t>(dtype_size(dtype));

    // ordered_json keeps the tensors in the order given, which is also their order in the data.
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::set<std::string> seen;
    uint64_t offset = 0;
    for (const NamedTensor& t : tensors) {
        if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second)
            throw Error(path + ": invalid or duplicate tensor name '" + t.name + "'");
        if (shape_numel(t.tensor->shape) != t.tensor->numel())
            throw Error(path + ": tensor '" + t.name + "' has shape " + t.tensor->shape_string() + " but " +
                        std::to_string(t.tensor->numel()) + " values");
        const uint64_t bytes = static_cast<uint64_t>(t.tensor->numel()) * elem;
        header[t.name] = {{"dtype", dtype_name(dtype)}, {"shape", t.tensor->shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string text = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
    text.append((8 - text.size() % 8) % 8, ' ');
    const uint64_t header_len = text.size();

    io::AtomicFile out(path);
    out.write(&header_len, 8);
    out.write(text);
    const auto poll = [&cancelled] {
        throw_if_cancelled(cancelled);  // `out` removes the temporary file
    };
    for (const NamedTensor& t : tensors) {
        poll();
        write_values(out, *t.tensor, dtype);
    }
    poll();
    out.commit();
}

}  // namespace retnet
