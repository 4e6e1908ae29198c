// SPDX-License-Identifier: GPL-3.0-or-later
// Every way a model directory can be broken (issue "Robustness"): each gives one retnet::Error
// line that names the file and the problem, before any weight is allocated, and never a crash.
// The same directories through the `retnet` executable exit non-zero with one line on stderr.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/model.h"
#include "retnet/safetensors.h"
#include "retnet/tokenizer.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;
using nlohmann::json;

// The message of the retnet::Error that load_model throws ("" if it throws nothing or something else).
std::string load_error(const fs::path& dir) {
    try {
        load_model(dir.string());
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("NOT A retnet::Error: ") + e.what();
    }
    return "(no error)";
}

// Asserts one line that names `file` and contains `problem`.
void expect_names(const std::string& message, const fs::path& file, const std::string& problem) {
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find(file.string()), std::string::npos) << "does not name " << file << ": " << message;
    EXPECT_NE(message.find(problem), std::string::npos) << "does not say '" << problem << "': " << message;
}

// A safetensors file from a header object and a data section, byte for byte.
std::string safetensors_bytes(const json& header, const std::string& data) {
    const std::string text = header.dump();
    const uint64_t n = text.size();
    std::string out(reinterpret_cast<const char*>(&n), 8);
    return out + text + data;
}

class BrokenModel : public ::testing::Test {
protected:
    void SetUp() override {
        write_small_model(dir_.path(), /*with_tokenizer=*/false);
        weights_ = dir_ / "model.safetensors";
        config_ = dir_ / "config.json";
        ASSERT_NO_THROW(load_model(dir_.path().string()));
    }

    // Rewrites the weights with `edit` applied to the tensors (name -> tensor) first.
    template <class Edit>
    void rewrite(Edit edit, DType dtype = DType::F32) {
        std::map<std::string, Tensor> tensors;
        {
            const SafetensorsFile file(weights_.string());
            for (const TensorInfo& info : file.tensors()) tensors[info.name] = file.read(info.name);
        }
        edit(tensors);
        std::vector<NamedTensor> named;
        for (const auto& [name, t] : tensors) named.push_back({name, &t});
        write_safetensors(weights_.string(), named, {}, dtype);
    }

    json config_json() const { return json::parse(slurp(config_)); }
    void write_config(const json& j) { spit(config_, j.dump()); }

    ScratchDir dir_{"model"};
    fs::path weights_, config_;
};

constexpr const char* kQ0 = "model.layers.0.attn.q_proj.weight";

TEST_F(BrokenModel, TruncatedWeights) {
    const std::string bytes = slurp(weights_);
    spit(weights_, bytes.substr(0, bytes.size() - 100));
    expect_names(load_error(dir_.path()), weights_, "truncated");
    spit(weights_, bytes.substr(0, 5));
    expect_names(load_error(dir_.path()), weights_, "truncated file (5 bytes");
    spit(weights_, "");
    expect_names(load_error(dir_.path()), weights_, "truncated file (0 bytes");
}

TEST_F(BrokenModel, HeaderLengthLargerThanTheFile) {
    std::string bytes = slurp(weights_);
    const uint64_t huge = std::numeric_limits<uint64_t>::max() - 3;
    std::memcpy(bytes.data(), &huge, 8);
    spit(weights_, bytes);
    expect_names(load_error(dir_.path()), weights_, "does not fit in the file");
}

TEST_F(BrokenModel, HeaderLengthOverTheLimitIsRefusedWithoutReadingIt) {
    // A 200 MB sparse file whose header claims 150 MB: refused by size, nothing is parsed.
    const uint64_t header_len = 150u << 20;
    std::string start(reinterpret_cast<const char*>(&header_len), 8);
    spit(weights_, start + "{");
    ASSERT_EQ(::truncate(weights_.c_str(), 200 << 20), 0);
    expect_names(load_error(dir_.path()), weights_, "larger than 100 MiB");
}

TEST_F(BrokenModel, HeaderIsNotJson) {
    spit(weights_, safetensors_bytes(json::object(), "").replace(8, 2, "{x"));
    expect_names(load_error(dir_.path()), weights_, "header is not valid JSON");
    spit(weights_, safetensors_bytes(json::array({1, 2}), ""));
    expect_names(load_error(dir_.path()), weights_, "header is not a JSON object");
    // A number too large for a double (found by fuzz_safetensors).
    const std::string text = R"({"a": 1E999})";
    const uint64_t n = text.size();
    spit(weights_, std::string(reinterpret_cast<const char*>(&n), 8) + text);
    expect_names(load_error(dir_.path()), weights_, "header is not valid JSON (number overflow parsing '1E999')");
}

TEST_F(BrokenModel, OffsetsOutsideTheData) {
    const json header = {{kQ0, {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
    spit(weights_, safetensors_bytes(header, std::string(8, '\0')));
    expect_names(load_error(dir_.path()), weights_, "lie outside the data section");
    const json reversed = {{kQ0, {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 0}}}}};
    spit(weights_, safetensors_bytes(reversed, std::string(8, '\0')));
    expect_names(load_error(dir_.path()), weights_, "data_offsets [8, 0] end before they begin");
}

TEST_F(BrokenModel, OverlappingTensors) {
    const json header = {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                         {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}};
    spit(weights_, safetensors_bytes(header, std::string(12, '\0')));
    expect_names(load_error(dir_.path()), weights_, "overlap");
}

TEST_F(BrokenModel, UnknownDtype) {
    const json header = {{kQ0, {{"dtype", "F8_E4M3"}, {"shape", {2}}, {"data_offsets", {0, 2}}}}};
    spit(weights_, safetensors_bytes(header, std::string(2, '\0')));
    expect_names(load_error(dir_.path()), weights_, "unsupported dtype 'F8_E4M3'");
}

TEST_F(BrokenModel, ShapeNotMatchingTheConfig) {
    rewrite([](auto& t) { t[kQ0] = Tensor({32, 31}); });
    expect_names(load_error(dir_.path()), weights_, std::string("tensor '") + kQ0 + "' has shape [32, 31], expected [32, 32]");
}

TEST_F(BrokenModel, IntegerWeightsAreRefused) {
    // Same shape, but integer data (a quantized export, or a mask saved by mistake) cannot be
    // float weights: reading it would silently turn every value into an integer.
    json header = json::object();
    std::string data;
    {
        const SafetensorsFile file(weights_.string());
        for (const TensorInfo& info : file.tensors()) {
            const std::vector<unsigned char> bytes = file.bytes(info.name);
            const std::string dtype = info.name == kQ0 ? "I32" : "F32";
            header[info.name] = {{"dtype", dtype}, {"shape", info.shape},
                                 {"data_offsets", {data.size(), data.size() + bytes.size()}}};
            data.append(bytes.begin(), bytes.end());
        }
    }
    spit(weights_, safetensors_bytes(header, data));
    expect_names(load_error(dir_.path()), weights_, std::string("tensor '") + kQ0 + "' has dtype I32");
}

TEST_F(BrokenModel, HalfPrecisionWeightsAreAccepted) {
    rewrite([](auto&) {}, DType::BF16);
    EXPECT_NO_THROW(load_model(dir_.path().string()));
}

TEST_F(BrokenModel, MissingTensor) {
    rewrite([](auto& t) { t.erase("model.norm.weight"); });
    expect_names(load_error(dir_.path()), weights_, "missing tensor 'model.norm.weight'");
}

TEST_F(BrokenModel, ExtraTensor) {
    rewrite([](auto& t) { t["model.layers.7.attn.q_proj.weight"] = Tensor({2}); });
    expect_names(load_error(dir_.path()), weights_, "unexpected tensor 'model.layers.7.attn.q_proj.weight'");
}

TEST_F(BrokenModel, NamesFromTheFileCannotBreakTheErrorLine) {
    // A tensor name with a newline and a terminal escape: quoted escaped, still one line.
    rewrite([](auto& t) { t["evil\n\x1b[2Jname"] = Tensor({1}); });
    const std::string message = load_error(dir_.path());
    expect_names(message, weights_, "unexpected tensor 'evil\\n\\x1b[2Jname'");
    EXPECT_EQ(message.find('\x1b'), std::string::npos);
    EXPECT_STREQ(Error("a\tb\r\nc\x7f").what(), "a\\tb\\x0d\\nc\\x7f");
}

TEST_F(BrokenModel, NanAndInfWeightsAreRefused) {
    rewrite([](auto& t) { t[kQ0].data[5] = std::numeric_limits<float>::quiet_NaN(); });
    expect_names(load_error(dir_.path()), weights_, std::string("tensor '") + kQ0 + "' contains NaN at index 5");
    rewrite([](auto& t) {
        t[kQ0].data[5] = 0.0f;
        t["model.norm.weight"].data[0] = -std::numeric_limits<float>::infinity();
    });
    expect_names(load_error(dir_.path()), weights_, "tensor 'model.norm.weight' contains Inf at index 0");
}

TEST_F(BrokenModel, ConfigMissing) {
    fs::remove(config_);
    expect_names(load_error(dir_.path()), config_, "cannot open");
}

TEST_F(BrokenModel, ConfigNotJson) {
    spit(config_, "{\"hidden_size\": 32,");
    expect_names(load_error(dir_.path()), config_, "not valid JSON");
    spit(config_, "[32, 2]");
    expect_names(load_error(dir_.path()), config_, "expected a JSON object");
    // A number too large for a double is a parse failure too (found by fuzz_config).
    spit(config_, R"({"model_type": "retnet", "hidden_size": 32, "expand_k": 2e+308})");
    expect_names(load_error(dir_.path()), config_, "not valid JSON (number overflow parsing '2e+308')");
    fs::remove(config_);
    fs::create_directory(config_);  // unreadable: a directory where the file should be
    const std::string message = load_error(dir_.path());
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_NE(message.find(config_.string()), std::string::npos) << message;
}

// A config.json that is a FIFO or a link to /dev/zero used to hang the loader (reading forever,
// growing memory); a huge one is refused by its size before it is read.
TEST_F(BrokenModel, ConfigThatIsAFifoADeviceOrHugeIsRefusedWithoutReading) {
    fs::remove(config_);
    ASSERT_EQ(::mkfifo(config_.c_str(), 0600), 0);
    expect_names(load_error(dir_.path()), config_, "expected a regular file");
    fs::remove(config_);
    fs::create_symlink("/dev/zero", config_);
    expect_names(load_error(dir_.path()), config_, "expected a regular file");
    fs::remove(config_);
    fs::create_directory(config_);
    expect_names(load_error(dir_.path()), config_, "is a directory");
    fs::remove(config_);
    spit(config_, "{");
    fs::resize_file(config_, (16u << 20) + 1);  // sparse: no 16 MiB written
    expect_names(load_error(dir_.path()), config_, "more than the limit of 16 MiB");
}

TEST_F(BrokenModel, ConfigMissingFields) {
    json j = config_json();
    j.erase("num_hidden_layers");
    write_config(j);
    expect_names(load_error(dir_.path()), config_, "missing field 'num_hidden_layers'");
    j = config_json();
    j["num_heads"] = "two";
    write_config(j);
    expect_names(load_error(dir_.path()), config_, "field 'num_heads' must be an integer");
}

TEST_F(BrokenModel, ConfigAbsurdValues) {
    const json good = config_json();
    const std::vector<std::tuple<const char*, json, const char*>> cases = {
        {"num_hidden_layers", 0, "num_hidden_layers = 0 is outside"},
        {"num_hidden_layers", 1000000000, "num_hidden_layers = 1000000000 is outside"},
        {"num_hidden_layers", 1e30, "out of range"},
        {"num_heads", 3, "num_heads = 3 does not divide"},
        {"hidden_size", -32, "hidden_size = -32 is outside"},
        {"vocab_size", -5, "vocab_size = -5 is outside"},
        {"intermediate_size", 0, "intermediate_size = 0 is outside"},
        {"norm_eps", -1.0, "norm_eps"},
        {"expand_v", 1e300, "out of range"},
        {"eos_token_id", 400, "eos_token_id = 400"},
    };
    for (const auto& [key, value, problem] : cases) {
        json j = good;
        j[key] = value;
        write_config(j);
        SCOPED_TRACE(std::string(key) + " = " + value.dump());
        expect_names(load_error(dir_.path()), config_, problem);
    }
}

TEST_F(BrokenModel, AbsurdButValidSizesFailOnTheTensorsNotOnAllocation) {
    // 16.7M x 1M embedding = 64 TiB of floats: only the shape check may see it, never malloc.
    json j = config_json();
    j["vocab_size"] = 1 << 24;
    j["hidden_size"] = 1 << 20;
    j["expand_k"] = 1;
    j["expand_v"] = 1;
    j["num_heads"] = 1 << 14;
    j["num_hidden_layers"] = 1024;
    write_config(j);
    expect_names(load_error(dir_.path()), weights_, "tensor 'model.embeddings.weight' has shape [400, 32], expected [16777216, 1048576]");
}

TEST_F(BrokenModel, ShardedIndexNamingAMissingFile) {
    fs::rename(weights_, dir_ / "model-00001-of-00002.safetensors");
    json map = json::object();
    {
        const SafetensorsFile file((dir_ / "model-00001-of-00002.safetensors").string());
        for (const TensorInfo& info : file.tensors()) map[info.name] = "model-00001-of-00002.safetensors";
    }
    map["model.norm.weight"] = "model-00002-of-00002.safetensors";
    const fs::path index = dir_ / "model.safetensors.index.json";
    spit(index, json{{"metadata", json::object()}, {"weight_map", map}}.dump());
    expect_names(load_error(dir_.path()), index, "shard 'model-00002-of-00002.safetensors' (holding 'model.norm.weight') does not exist");
    map["model.norm.weight"] = "../elsewhere.safetensors";
    spit(index, json{{"weight_map", map}}.dump());
    expect_names(load_error(dir_.path()), index, "not a file next to the index");
    spit(index, "{\"weight_map\": [");
    expect_names(load_error(dir_.path()), index, "not valid JSON");
}

TEST_F(BrokenModel, WeightsMissingOrADirectory) {
    fs::remove(weights_);
    const std::string message = load_error(dir_.path());
    EXPECT_NE(message.find("no model.safetensors"), std::string::npos) << message;
    fs::create_directory(weights_);  // said as it is, not "no model.safetensors" (issue #13)
    EXPECT_NE(load_error(dir_.path()).find("model.safetensors: is a directory, expected a regular file"), std::string::npos);
}

// ---- tokenizer.model --------------------------------------------------------------------------

std::string tokenizer_error(const fs::path& dir) {
    try {
        Tokenizer::load_from_model_dir(dir.string());
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("NOT A retnet::Error: ") + e.what();
    }
    return "(no error)";
}

TEST(BrokenTokenizer, CorruptTruncatedEmptyOrUnreadable) {
    ScratchDir dir("tokenizer");
    write_small_model(dir.path());
    const fs::path file = dir / "tokenizer.model";
    const std::string good = slurp(file);
    ASSERT_NE(Tokenizer::load_from_model_dir(dir.path().string()), nullptr);

    // Pieces that make SentencePiece's trie builder throw instead of failing (found by fuzz_tokenizer_model).
    const std::string trie_breaker("\x0a\x0e\x0a\x05\xc0\x00\x00\x00\x3e\x15\x00\x00\x00\x00\x18\x02\x0a\x0c"
                                   "\x0a\x03\x00\x00\x35\x15\x3e\x3c\x18\x79\x12\x00",
                                   30);
    for (const std::string& bytes : {good.substr(0, good.size() / 2), std::string("not a model at all\n"),
                                     std::string(), std::string(4096, '\xff'), trie_breaker}) {
        spit(file, bytes);
        SCOPED_TRACE(bytes.size());
        expect_names(tokenizer_error(dir.path()), file, "not a SentencePiece tokenizer model");
    }
    fs::remove(file);
    fs::create_directory(file);
    expect_names(tokenizer_error(dir.path()), file, "");
}

// tokenizer.model as a FIFO or a link to /dev/urandom: refused at once instead of read forever.
TEST(BrokenTokenizer, FifoOrDeviceIsRefusedWithoutReading) {
    ScratchDir dir("tokenizer_fifo");
    write_small_model(dir.path());
    const fs::path file = dir / "tokenizer.model";
    fs::remove(file);
    ASSERT_EQ(::mkfifo(file.c_str(), 0600), 0);
    expect_names(tokenizer_error(dir.path()), file, "expected a regular file");
    fs::remove(file);
    fs::create_symlink("/dev/urandom", file);
    expect_names(tokenizer_error(dir.path()), file, "expected a regular file");
}

TEST(BrokenTokenizer, CliGenerateNamesTheTokenizerFile) {
    ScratchDir dir("tokenizer_cli");
    write_small_model(dir.path());
    spit(dir / "tokenizer.model", "garbage");
    const CliResult r = run_retnet({"generate", "--model", dir.path().string(), "--prompt", "hello", "--max-new-tokens", "2"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find((dir / "tokenizer.model").string()), std::string::npos) << r.err;
}

// ---- through the executable -----------------------------------------------------------------

TEST_F(BrokenModel, CliExitsWithOneLineForEachBrokenFile) {
    const std::string good_weights = slurp(weights_), good_config = slurp(config_);
    const auto check = [&](const std::string& what, const std::string& needle) {
        SCOPED_TRACE(what);
        const CliResult r = run_retnet({"info", "--model", dir_.path().string()});
        EXPECT_EQ(r.signal, 0) << "crashed";
        EXPECT_EQ(r.exit_code, 1);
        EXPECT_EQ(r.err_lines(), 1) << r.err;
        EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
        EXPECT_TRUE(r.out.empty()) << r.out;
        spit(weights_, good_weights);
        spit(config_, good_config);
    };
    spit(weights_, good_weights.substr(0, 64));
    check("truncated", "model.safetensors");
    rewrite([](auto& t) { t[kQ0].data[0] = std::numeric_limits<float>::quiet_NaN(); });
    check("NaN", "contains NaN");
    spit(config_, "{");
    check("config not JSON", "config.json: not valid JSON");
    json j = json::parse(good_config);
    j["num_heads"] = 5;
    spit(config_, j.dump());
    check("heads not dividing", "num_heads = 5 does not divide");
}

}  // namespace
}  // namespace retnet
