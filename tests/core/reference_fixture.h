// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// One checkpoint fixture of tests/data/reference (docs/reference-fixtures.md): the model, the
// tokens the reference code ran, and its chunk size and prefill length. Shared by the CPU and
// CUDA fixture tests.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "retnet/model.h"

namespace retnet::test {

inline const std::string kFixtures = std::string(RETNET_TEST_DATA_DIR) + "/reference/";

struct Fixture {
    std::shared_ptr<const Model> model;
    std::vector<int32_t> tokens;
    int chunk_size = 0;
    int prefill = 0;
};

inline Fixture load_fixture(const std::string& name) {
    Fixture f;
    f.model = std::make_shared<const Model>(load_model(kFixtures + name));
    std::ifstream in(kFixtures + name + "/tokens.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    f.tokens = j.at("tokens").get<std::vector<int32_t>>();
    f.chunk_size = j.at("chunk_size").get<int>();
    f.prefill = j.value("prefill", 0);
    return f;
}

}  // namespace retnet::test
