// SPDX-License-Identifier: GPL-3.0-or-later
// libFuzzer target: config.json loading. Any byte string is either a config that passes
// validate() and survives config_to_json -> parse_config unchanged, or a one-line retnet::Error
// that names the file.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "retnet/config.h"
#include "retnet/error.h"

using namespace retnet;
using retnet::fuzz::fuzz_fail;

namespace {

bool same(const ModelConfig& a, const ModelConfig& b) {
    return a.family == b.family && a.vocab_size == b.vocab_size && a.d_model == b.d_model &&
           a.n_layers == b.n_layers && a.n_heads == b.n_heads && a.key_dim == b.key_dim &&
           a.value_dim == b.value_dim && a.ffn_dim == b.ffn_dim && a.norm_eps == b.norm_eps &&
           a.ffn_activation == b.ffn_activation && a.tie_embeddings == b.tie_embeddings &&
           a.scale_embedding == b.scale_embedding && a.layernorm_embedding == b.layernorm_embedding &&
           a.head_norm_affine == b.head_norm_affine && a.bos_token_id == b.bos_token_id &&
           a.eos_token_id == b.eos_token_id &&
           (a.family == Family::Fla || a.chunk_size == b.chunk_size);  // fla does not store it
}

void check_error(const Error& e) {
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos) fuzz_fail("error is not one line: " + what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Through the file loader (the path the CLI and the app take) ...
    fuzz::MemoryFile file(data, size);
    ModelConfig loaded;
    bool ok = false;
    try {
        loaded = load_config(file.path());
        ok = true;
    } catch (const Error& e) {
        check_error(e);
        if (std::string(e.what()).compare(0, file.path().size(), file.path()) != 0)
            fuzz_fail(std::string("error does not name the file: ") + e.what());
    }
    if (!ok) return 0;
    // ... and what is accepted must be valid and must round-trip through our own writer.
    try {
        loaded.validate();
    } catch (const Error& e) {
        fuzz_fail(std::string("accepted config fails validate(): ") + e.what());
    }
    try {
        const ModelConfig again = parse_config(config_to_json(loaded), "round trip");
        if (!same(loaded, again)) fuzz_fail("config_to_json/parse_config round trip changed the config");
    } catch (const Error& e) {
        fuzz_fail(std::string("our own config.json of an accepted config is rejected: ") + e.what());
    }
    return 0;
}
