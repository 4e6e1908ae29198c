// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: the .npy reader (the app and the CLI import arrays from it). Any byte string
// is either a float32 tensor whose size matches its shape, or a one-line retnet::Error naming
// the file.
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_common.h"
#include "retnet/error.h"
#include "retnet/npy.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::MemoryFile file(data, size);
    try {
        const Tensor t = read_npy(file.path());
        if (shape_numel(t.shape) != t.numel()) fuzz_fail("tensor size does not match its shape");
        if (static_cast<uint64_t>(t.numel()) * 4 > size * 4) fuzz_fail("more values than the file can hold");
        // What we write must read back the same (the writer refuses shapes too long for a v1.0 header).
        std::string bytes;
        try {
            bytes = npy_bytes(t.ptr(), t.shape);
        } catch (const Error&) {
            return 0;
        }
        fuzz::MemoryFile again(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        const Tensor back = read_npy(again.path());
        // Bitwise: NaN payloads must survive too, and NaN != NaN as floats.
        if (back.shape != t.shape || back.data.size() != t.data.size() ||
            (!t.data.empty() && std::memcmp(back.ptr(), t.ptr(), t.data.size() * sizeof(float)) != 0))
            fuzz_fail("write/read round trip changed the tensor");
    } catch (const Error& e) {
        const std::string what = e.what();
        if (what.compare(0, file.path().size(), file.path()) != 0) fuzz_fail("error does not name the file: " + what);
        if (what.find('\n') != std::string::npos) fuzz_fail("error is not one line: " + what);
    }
    return 0;
}
