// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: the metadata `retnet train --resume` trusts (retnet/run_directory.h): a
// checkpoint's trainer_state.json and the run's run.json. Any bytes either parse into values
// that make sense (a step in [0, ∞), a total of at least 1; run.json surviving our own writer
// unchanged) or give a one-line retnet::Error naming the file.
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "retnet/error.h"
#include "retnet/run_directory.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

namespace {

void check_error(const Error& e, const std::string& source) {
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos) fuzz_fail("error is not one line: " + what);
    if (what.compare(0, source.size(), source) != 0) fuzz_fail("error does not name the file: " + what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const train::CheckpointInfo info = train::parse_checkpoint_info(text, "trainer_state.json");
        if (info.step < 0 || info.total_steps < 1) fuzz_fail("impossible progress accepted");
    } catch (const Error& e) {
        check_error(e, "trainer_state.json");
    }
    try {
        const train::RunInputs r = train::parse_run_inputs(text, "run.json");
        const train::RunInputs again = train::parse_run_inputs(train::run_inputs_json(r), "again");
        if (again.data != r.data || again.data_bytes != r.data_bytes || again.data_hash != r.data_hash ||
            again.tokenizer != r.tokenizer || again.tokenizer_bytes != r.tokenizer_bytes ||
            again.tokenizer_hash != r.tokenizer_hash)
            fuzz_fail("run.json does not survive its own writer");
    } catch (const Error& e) {
        // Our writer replaces invalid UTF-8 in paths, so a round trip may differ only for those.
        if (std::string(e.what()).rfind("again", 0) == 0) fuzz_fail(std::string("own run.json rejected: ") + e.what());
        check_error(e, "run.json");
    }
    return 0;
}
