// SPDX-License-Identifier: GPL-3.0-or-later
// retnet info: what a model is, and what its recurrent state costs next to a Transformer KV cache.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "command.h"
#include "retnet/memory_limit.h"
#include "retnet/model_stats.h"

namespace retnet::cli {
namespace {

int run_info(const std::vector<std::string>& argv) {
    const auto app = make_app("info", "Prints a model's family, shapes and parameter count, and the size of its recurrent "
                                      "state next to the KV cache a Transformer of the same shape would need.");
    std::string model_dir;
    InterventionText edits;
    int64_t context = 2048;
    bool json = false;
    add_model_option(*app, model_dir);
    add_int(*app, "--context", context, 1, int64_t(1) << 30, "tokens at which to size the Transformer's KV cache");
    add_json_flag(*app, json);
    add_intervention_options(*app, edits);
    parse(*app, argv);
    auto model = load_model_edited(model_dir, edits);
    const ModelConfig& c = model->config;
    const ModelStats s = model_stats(*model, context);
    if (json) {
        nlohmann::json j = {{"family", format_name(c)}, {"directory", model->directory},
                            {"vocab_size", c.vocab_size}, {"d_model", c.d_model}, {"layers", c.n_layers},
                            {"heads", c.n_heads}, {"head_dim_k", c.head_dim_k()}, {"head_dim_v", c.head_dim_v()},
                            {"ffn_dim", c.ffn_dim}, {"parameters", s.parameters},
                            {"weight_bytes_fp32", s.weight_bytes_fp32},
                            {"state_bytes_fp32", s.state_bytes_fp32},
                            {"kv_cache_bytes_fp32_per_token", s.kv_cache_bytes_per_token_fp32},
                            {"context", context}, {"kv_cache_bytes_fp32_at_context", s.kv_cache_bytes_at_context_fp32}};
        std::printf("%s\n", json_text(j, 2).c_str());
        return 0;
    }
    std::printf("model        %s\n", shown(model->directory).c_str());
    std::printf("family       %s\n", format_name(c));
    std::printf("shape        d=%d  layers=%d  heads=%d  Dk=%d  Dv=%d  ffn=%d  vocab=%d\n", c.d_model, c.n_layers,
                c.n_heads, c.head_dim_k(), c.head_dim_v(), c.ffn_dim, c.vocab_size);
    std::printf("parameters   %s (%s in fp32)\n", format_count(s.parameters).c_str(),
                format_bytes(s.weight_bytes_fp32).c_str());
    if (c.is_transformer()) {
        std::printf("KV cache     %s per token, %s at %lld tokens (L x 2 x H x D fp32; no fixed state)\n",
                    format_bytes(s.kv_cache_bytes_per_token_fp32).c_str(),
                    format_bytes(s.kv_cache_bytes_at_context_fp32).c_str(), static_cast<long long>(context));
        return 0;
    }
    std::printf("state        %s per sequence, whatever its length (L x H x Dk x Dv fp32)\n",
                format_bytes(s.state_bytes_fp32).c_str());
    std::printf("KV cache     its Transformer twin (retnet init --arch transformer) needs %s per token, %s at %lld tokens\n",
                format_bytes(s.kv_cache_bytes_per_token_fp32).c_str(),
                format_bytes(s.kv_cache_bytes_at_context_fp32).c_str(), static_cast<long long>(context));
    return 0;
}

const Command reg("info", "what a model is, and its state size next to a Transformer's KV cache", &run_info);

}  // namespace
}  // namespace retnet::cli
