// SPDX-License-Identifier: GPL-3.0-or-later
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "retnet/error.h"
#include "retnet/npy.h"

namespace fs = std::filesystem;
using retnet::Error;
using retnet::Tensor;

namespace {

class NpyTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("retnet_test_npy_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    // A version-1.0 file with the given header dict and data bytes (padding like numpy).
    std::string write_v1(const std::string& name, std::string dict, const std::string& data) const {
        dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
        dict += '\n';
        std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
        bytes += static_cast<char>(dict.size() & 0xff);
        bytes += static_cast<char>(dict.size() >> 8);
        std::ofstream(path(name), std::ios::binary) << bytes << dict << data;
        return path(name);
    }

    fs::path dir_;
};

std::string read_error(const std::string& path) {
    try {
        retnet::read_npy(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_F(NpyTest, HeaderIsNumpyVersion1WithPadding) {
    Tensor t({2, 3});
    for (int i = 0; i < 6; ++i) t.data[i] = static_cast<float>(i) * 0.5f;
    const std::string p = path("a.npy");
    retnet::write_npy(p, t);
    const std::string bytes = file_bytes(p);
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    ASSERT_EQ(bytes.size(), 128u + 24u);  // 10 + 60 + 1 bytes round up to 128
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
    EXPECT_EQ(static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8, 118);
    EXPECT_EQ(bytes.substr(10, dict.size()), dict);
    EXPECT_EQ(bytes[127], '\n');
    EXPECT_EQ(bytes.find_first_not_of(' ', 10 + dict.size()), 127u);
    float third;
    std::memcpy(&third, bytes.data() + 128 + 8, 4);
    EXPECT_EQ(third, 1.0f);

    EXPECT_NE(retnet::npy_bytes(t.ptr(), {6}).find("'shape': (6,), }"), std::string::npos);
    EXPECT_NE(retnet::npy_bytes(t.ptr(), {}).find("'shape': (), }"), std::string::npos);
    EXPECT_EQ(retnet::npy_bytes(t.ptr(), {6}).size() % 64, 24u);
}

TEST_F(NpyTest, RoundTripsEveryRank) {
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{}, {7}, {3, 4}, {2, 3, 5}, {1, 2, 1, 3}, {0, 4}}) {
        Tensor t(shape);
        for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = 1.0f / static_cast<float>(i + 3) - 0.2f;
        const std::string p = path("r.npy");
        retnet::write_npy(p, t);
        const Tensor back = retnet::read_npy(p);
        EXPECT_EQ(back.shape, shape);
        EXPECT_EQ(back.data, t.data);
    }
}

TEST_F(NpyTest, ReadsFilesWrittenByNumpy) {
    // Written by np.save in the fixture generator: (T, V) = (37, 97) float32 logits.
    const Tensor logits = retnet::read_npy(std::string(RETNET_TEST_DATA_DIR) + "/reference/fla_small/logits_parallel.npy");
    EXPECT_EQ(logits.shape, (std::vector<int64_t>{37, 97}));
    bool all_finite = true, any_nonzero = false;
    for (float v : logits.data) {
        all_finite = all_finite && std::isfinite(v);
        any_nonzero = any_nonzero || v != 0.0f;
    }
    EXPECT_TRUE(all_finite);
    EXPECT_TRUE(any_nonzero);
}

TEST_F(NpyTest, ReadsFloat64AndOtherQuoting) {
    const std::vector<double> values = {0.1, -2.5, 1e-3};
    const std::string data(reinterpret_cast<const char*>(values.data()), 24);
    const std::string p = write_v1("d.npy", "{\"descr\": \"<f8\", \"shape\": (3,), \"fortran_order\": False}", data);
    const Tensor t = retnet::read_npy(p);
    EXPECT_EQ(t.shape, std::vector<int64_t>{3});
    EXPECT_EQ(t.data, (std::vector<float>{0.1f, -2.5f, 1e-3f}));
}

TEST_F(NpyTest, RejectsBadFilesNamingTheProblem) {
    const std::string four(16, '\0');
    struct Case {
        const char* name;
        std::string dict;
        std::string data;
        const char* expected;
    };
    const std::vector<Case> cases = {
        {"fortran", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", four, "Fortran-order"},
        {"big_endian", "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", four,
         "dtype '>f4' is not supported"},
        {"int", "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", four, "dtype '<i4' is not supported"},
        {"short_data", "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", four,
         "shape [5] of '<f4' needs 5 x 4 bytes but the file holds 16 data bytes"},
        {"long_data", "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", four, "needs 3 x 4 bytes"},
        {"no_shape", "{'descr': '<f4', 'fortran_order': False, }", four, "needs 'descr', 'fortran_order' and 'shape'"},
        {"negative", "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", four, "non-negative integer"},
        {"garbage", "hello", four, "bad .npy header (expected '{')"},
        {"unknown_key", "{'descr': '<f4', 'kind': 1}", four, "unknown key 'kind'"},
        {"overflow", "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", four,
         "too large"},
    };
    for (const Case& c : cases) {
        const std::string p = write_v1(std::string(c.name) + ".npy", c.dict, c.data);
        const std::string msg = read_error(p);
        EXPECT_EQ(msg.rfind(p + ": ", 0), 0u) << c.name << ": " << msg;
        EXPECT_NE(msg.find(c.expected), std::string::npos) << c.name << ": " << msg;
    }
    std::ofstream(path("magic.npy"), std::ios::binary) << "PK\x03\x04 not numpy";
    EXPECT_NE(read_error(path("magic.npy")).find("not a .npy file"), std::string::npos);
    std::ofstream(path("version.npy"), std::ios::binary) << std::string("\x93NUMPY\x09\x00\x10\x00", 10);
    EXPECT_NE(read_error(path("version.npy")).find("unsupported .npy version 9.0"), std::string::npos);
    std::ofstream(path("cut.npy"), std::ios::binary) << std::string("\x93NUMPY\x01\x00\x40\x00{'descr'", 18);
    EXPECT_NE(read_error(path("cut.npy")).find("header length 64 exceeds the file size 18"), std::string::npos);
    EXPECT_NE(read_error(path("absent.npy")).find("absent.npy: cannot open"), std::string::npos);
}

// Found by fuzz_npy: a shape with a zero dimension after dimensions whose product overflows int64
// (kept as fuzz/corpus/npy/regression_zero_dim_overflow). Zero elements, no overflow.
TEST(NpyRegression, ZeroDimensionAfterHugeDimensionsIsAnEmptyTensor) {
    const std::string path = std::string(RETNET_TEST_DATA_DIR) + "/../../fuzz/corpus/npy/regression_zero_dim_overflow";
    const retnet::Tensor t = retnet::read_npy(path);
    EXPECT_EQ(t.numel(), 0);
    EXPECT_EQ(t.shape.size(), 15u);
}

TEST(NpyRegression, ShapeWhoseProductOverflowsIsAnError) {
    EXPECT_THROW(retnet::shape_numel({int64_t(1) << 40, int64_t(1) << 40}), retnet::Error);
    EXPECT_EQ(retnet::shape_numel({int64_t(1) << 40, 0, int64_t(1) << 40}), 0);
    EXPECT_EQ(retnet::shape_numel({}), 1);
}
