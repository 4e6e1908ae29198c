// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {str: str}}, then the data section; offsets are relative to the data section.
// The whole header is validated when a file is opened, so a corrupt file fails with one line naming
// the file and the problem before any tensor is read; tensors are read with pread, so a file that
// another program truncates meanwhile fails the same way (a shrunk memory map would raise SIGBUS).
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "retnet/tensor.h"

namespace retnet {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

const char* dtype_name(DType dtype);  // as written in the header: "F32", "BF16", ...
int dtype_size(DType dtype);          // bytes per element

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte range in the data section
    uint64_t end = 0;

    int64_t numel() const { return shape_numel(shape); }
};

// One .safetensors file, read-only: the header parsed on opening, tensors read on demand.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::string& path);
    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::string& path() const { return path_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data-offset order
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    // Throws retnet::Error naming the file if the tensor is absent.
    const TensorInfo& info(const std::string& name) const;

    // Converts to float32 (F64/integers are rounded to the nearest float).
    Tensor read(const std::string& name) const;
    // dst must hold info(name).numel() floats.
    void read_into(const std::string& name, float* dst) const;
    // The same in slices, throwing retnet::Cancelled when `cancelled` says so between them (a
    // multi-GB tensor read from disk takes seconds).
    void read_into(const std::string& name, float* dst, const std::function<bool()>& cancelled) const;
    // Elements [first, first + count) of the flattened tensor into dst (count floats): a caller that
    // fills its own buffer slice by slice. Throws retnet::Error when the range passes the tensor's end.
    void read_range_into(const std::string& name, size_t first, size_t count, float* dst) const;
    // The slice of the cancellable reads: 64 MB of floats, so that the reads of a multi-GB tensor
    // are spread between the checks.
    static constexpr size_t kReadSlice = size_t(1) << 24;
    // A BF16 tensor's values as stored; dst must hold info(name).numel() values.
    void read_bf16_into(const std::string& name, uint16_t* dst) const;
    // The tensor's bytes as stored (little-endian).
    std::vector<unsigned char> bytes(const std::string& name) const;

private:
    void parse_header();
    // n bytes at offset into dst; a file that has become shorter since it was opened is an Error
    // naming that, not a crash (as touching a shrunk memory map was: SIGBUS).
    void read_bytes(uint64_t offset, size_t n, void* dst) const;

    std::string path_;
    int fd_ = -1;     // open for the object's lifetime: reads see the file that was opened
    size_t size_ = 0;  // when opened
    timespec opened_mtime_{};  // a read after another program wrote to the file is an Error
    size_t data_start_ = 0;  // 8 + header length
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> index_;
    std::map<std::string, std::string> metadata_;
};

// The tensors of a model directory: model.safetensors, or the shards that
// model.safetensors.index.json ({"weight_map": {tensor: file}}) names.
class SafetensorsSet {
public:
    // Opens `directory`/model.safetensors.index.json if present, else `directory`/model.safetensors.
    static SafetensorsSet open_directory(const std::string& directory);
    // Opens a single file or an index file (recognised by its .json extension).
    static SafetensorsSet open(const std::string& path);

    std::vector<std::string> names() const;  // sorted
    bool contains(const std::string& name) const { return where_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const;
    // The file that holds the tensor (for error messages).
    const std::string& file_of(const std::string& name) const;
    Tensor read(const std::string& name) const;
    void read_into(const std::string& name, float* dst) const;
    void read_bf16_into(const std::string& name, uint16_t* dst) const;
    // The file that describes the set: model.safetensors or the index.
    const std::string& source() const { return source_; }

private:
    std::string source_;
    std::vector<std::shared_ptr<SafetensorsFile>> files_;
    std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

struct NamedTensor {
    std::string name;
    const Tensor* tensor;
};

// Writes `tensors` in the given order as F32 or BF16 (round to nearest even), atomically: the data
// goes to `path`.tmp, which is renamed over `path` only when complete. On failure the temporary
// file is removed, `path` is left as it was, and retnet::Error is thrown. `cancelled` is asked
// before each tensor's data and once after the last, before the rename: true throws
// retnet::Cancelled the same way (Ctrl-C while `retnet convert` or `init` writes).
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, DType dtype = DType::F32,
                       const std::function<bool()>& cancelled = {});

// IEEE binary16 / bfloat16 bits <-> float. float_to_* round to nearest even and keep NaN a NaN.
float half_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);
uint16_t float_to_half(float value);
uint16_t float_to_bf16(float value);

}  // namespace retnet
