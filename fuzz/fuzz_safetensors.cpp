// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: the safetensors reader. Any byte string either opens (then every tensor it
// lists lies inside the data section, tensors do not overlap, and reading each one works) or is
// rejected with retnet::Error naming the file. Nothing else may happen: no crash, no sanitizer
// report, no allocation larger than the file suggests.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_common.h"
#include "retnet/error.h"
#include "retnet/safetensors.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::MemoryFile file(data, size);
    try {
        const SafetensorsFile st(file.path());
        uint64_t header_len = 0;
        std::memcpy(&header_len, data, 8);  // opened, so the file has at least 8 bytes
        const uint64_t data_size = size - 8 - header_len;
        uint64_t previous_end = 0;
        std::vector<float> values;
        for (const TensorInfo& t : st.tensors()) {
            if (t.begin < previous_end) fuzz_fail("tensors overlap: " + t.name);
            if (t.end > data_size || t.begin > t.end) fuzz_fail("tensor outside the data section: " + t.name);
            const uint64_t bytes = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(dtype_size(t.dtype));
            if (bytes != t.end - t.begin) fuzz_fail("tensor byte size does not match its shape: " + t.name);
            previous_end = t.end;
            values.assign(static_cast<size_t>(t.numel()), 0.0f);
            st.read_into(t.name, values.data());
            if (st.bytes(t.name).size() != bytes) fuzz_fail("bytes() size differs from the header: " + t.name);
        }
        for (const auto& [key, value] : st.metadata())
            if (key.empty() && value.size() > size) fuzz_fail("metadata larger than the file");
    } catch (const Error& e) {
        const std::string what = e.what();
        if (what.compare(0, file.path().size(), file.path()) != 0) fuzz_fail("error does not name the file: " + what);
        if (what.find('\n') != std::string::npos) fuzz_fail("error is not one line: " + what);
    }
    return 0;
}
