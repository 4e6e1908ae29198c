// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A temporary training workspace for the trainer tests: the head of the bundled tinyshakespeare,
// a BPE tokenizer trained on it and a small fla config.json of that vocabulary. Removed at the end.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"
#include "retnet/train.h"
#include "retnet/trainer.h"

namespace retnet::test {

struct TrainWorkspaceShape {
    size_t corpus_chars;  // the first this many characters of tinyshakespeare
    int vocab_size;       // of the BPE tokenizer (256 byte pieces + characters + merges)
    int hidden_size, num_layers, intermediate_size;
};

struct TrainWorkspace {
    std::filesystem::path dir, text, tokenizer, config;

    TrainWorkspace(const std::string& prefix, const TrainWorkspaceShape& shape) {
        namespace fs = std::filesystem;
        dir = fs::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()) + "_" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir);
        fs::create_directories(dir);
        const std::string corpus = std::string(RETNET_TEST_DATA_DIR) + "/../../resources/data/tinyshakespeare.txt";
        std::ifstream in(corpus, std::ios::binary);
        EXPECT_TRUE(in) << corpus;
        std::string head(shape.corpus_chars, '\0');
        in.read(head.data(), static_cast<std::streamsize>(head.size()));
        text = dir / "corpus.txt";
        std::ofstream(text, std::ios::binary) << head;
        TokenizerTrainOptions topt;
        topt.vocab_size = shape.vocab_size;
        const Tokenizer tok = train_tokenizer_file(text.string(), topt, (dir / "tok").string());
        tokenizer = dir / "tok" / "tokenizer.model";
        const nlohmann::json c = {{"model_type", "retnet"},
                                  {"hidden_size", shape.hidden_size},
                                  {"num_heads", 2},
                                  {"num_hidden_layers", shape.num_layers},
                                  {"expand_k", 1},
                                  {"expand_v", 2},
                                  {"intermediate_size", shape.intermediate_size},
                                  {"vocab_size", tok.vocab_size()},
                                  {"tie_word_embeddings", false},
                                  {"bos_token_id", 1},
                                  {"eos_token_id", 2}};
        config = dir / "config.json";
        std::ofstream(config) << c.dump();
    }
    ~TrainWorkspace() { std::filesystem::remove_all(dir); }
    TrainWorkspace(const TrainWorkspace&) = delete;
    TrainWorkspace& operator=(const TrainWorkspace&) = delete;
};

// Exact resume, for any architecture: `full` runs its steps uninterrupted; `part` (the same options,
// another directory) is interrupted after half of them and resumed. Both checkpoints must hold the
// same bits, weights and AdamW's second moment.
inline void expect_resume_equals_uninterrupted(const train::TrainOptions& full, train::TrainOptions part) {
    namespace fs = std::filesystem;
    train::run_training(full, {});
    const int64_t stop_at = full.steps / 2;
    std::atomic<bool> stop{false};
    const train::TrainResult first = train::run_training(part, [&](const train::TrainProgress& p) {
        if (!p.is_validation && p.message.empty() && p.step == stop_at) stop = true;
    }, &stop);
    EXPECT_TRUE(first.interrupted);
    EXPECT_EQ(first.steps_done, stop_at);
    part.resume = true;
    part.tokenizer_path.clear();  // taken from the checkpoint
    const train::TrainResult second = train::run_training(part, {});
    EXPECT_FALSE(second.interrupted);
    EXPECT_EQ(second.steps_done, full.steps);

    const std::vector<float> a = train::load_trained_weights((fs::path(full.out_dir) / "checkpoint").string()).params;
    const std::vector<float> b = train::load_trained_weights((fs::path(part.out_dir) / "checkpoint").string()).params;
    ASSERT_EQ(a.size(), b.size());
    size_t differing = 0;
    for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
    EXPECT_EQ(differing, 0u) << "resumed run differs from the uninterrupted one";
    SafetensorsFile oa((fs::path(full.out_dir) / "checkpoint" / "optimizer.safetensors").string());
    SafetensorsFile ob((fs::path(part.out_dir) / "checkpoint" / "optimizer.safetensors").string());
    EXPECT_EQ(oa.read("adamw.v").data, ob.read("adamw.v").data);
}

}  // namespace retnet::test
