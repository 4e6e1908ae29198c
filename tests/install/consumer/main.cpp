// SPDX-License-Identifier: GPL-3.0-or-later
// retnet_consumer MODEL_DIR: loads a reference fixture through the installed library, runs the
// parallel form on its tokens and checks the logits against the reference code's (logits_parallel.npy).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>
#include <retnet/error.h>
#include <retnet/forward.h>
#include <retnet/model.h>
#include <retnet/npy.h>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: retnet_consumer FIXTURE_DIR\n");
        return 2;
    }
    try {
        const std::string dir = argv[1];
        auto model = std::make_shared<const retnet::Model>(retnet::load_model(dir));
        std::ifstream in(dir + "/tokens.json");
        const auto tokens = nlohmann::json::parse(in).at("tokens").get<std::vector<int32_t>>();
        retnet::ForwardOptions options;
        options.form = retnet::Form::Parallel;
        const retnet::Tensor got = retnet::make_cpu_backend(model)->forward(tokens, options);
        const retnet::Tensor want = retnet::read_npy(dir + "/logits_parallel.npy");
        if (got.shape != want.shape) throw retnet::Error("shape " + got.shape_string() + " != " + want.shape_string());
        double diff = 0, scale = 0;
        for (size_t i = 0; i < got.data.size(); ++i) {
            diff = std::max(diff, double(std::fabs(got.data[i] - want.data[i])));
            scale = std::max(scale, double(std::fabs(want.data[i])));
        }
        std::printf("%s: %zu tokens, max|diff| %.3g (max|logit| %.3g)\n", dir.c_str(), tokens.size(), diff, scale);
        return diff < 1e-4 * scale ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "retnet_consumer: %s\n", e.what());
        return 1;
    }
}
