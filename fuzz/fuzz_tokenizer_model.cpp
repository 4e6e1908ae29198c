// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: tokenizer.model files. Corrupt or foreign bytes are rejected with one line
// naming the file; a model that loads can encode and decode a short text.
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_common.h"
#include "retnet/error.h"
#include "retnet/tokenizer.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::MemoryFile file(data, size);
    try {
        const Tokenizer t = Tokenizer::load(file.path());
        const std::vector<int32_t> ids = t.encode("the robot counted 3 tokens \xF0\x9F\xA4\x96");
        for (int32_t id : ids)
            if (id < 0 || id >= t.vocab_size()) fuzz_fail("encode() produced an id outside the vocabulary");
        (void)t.decode(ids);
        for (int id = -1; id <= t.vocab_size() && id < 1024; ++id) (void)t.display_piece(id);
    } catch (const Error& e) {
        const std::string what = e.what();
        if (what.find('\n') != std::string::npos) fuzz_fail("error is not one line: " + what);
    }
    return 0;
}
