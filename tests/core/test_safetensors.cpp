// SPDX-License-Identifier: GPL-3.0-or-later
#include <sys/stat.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "retnet/error.h"
#include "retnet/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;
using retnet::DType;
using retnet::Error;
using retnet::SafetensorsFile;
using retnet::SafetensorsSet;
using retnet::Tensor;

namespace {

class SafetensorsTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("retnet_test_st_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    // A file from a raw header text and data bytes.
    std::string write_raw(const std::string& name, const std::string& header, const std::string& data,
                          uint64_t header_len_override = 0) const {
        const uint64_t n = header_len_override ? header_len_override : header.size();
        std::string bytes(8, '\0');
        std::memcpy(bytes.data(), &n, 8);
        bytes += header;
        bytes += data;
        return write_bytes(name, bytes);
    }
    std::string write_bytes(const std::string& name, const std::string& bytes) const {
        std::ofstream(path(name), std::ios::binary) << bytes;
        return path(name);
    }

    fs::path dir_;
};

template <class T>
std::string bytes_of(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string open_error(const std::string& path) {
    try {
        SafetensorsFile file(path);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_F(SafetensorsTest, WriteReadRoundTripF32) {
    Tensor a({2, 3});
    for (int i = 0; i < 6; ++i) a.data[i] = 0.1f * static_cast<float>(i) - 0.25f;
    a.data[5] = -std::numeric_limits<float>::denorm_min();
    Tensor b({4});
    b.data = {1e30f, -0.0f, 3.0f, std::numeric_limits<float>::infinity()};
    Tensor scalar(std::vector<int64_t>{});
    scalar.data = {42.0f};
    const std::string p = path("model.safetensors");
    retnet::write_safetensors(p, {{"b.weight", &b}, {"a", &a}, {"s", &scalar}}, {{"format", "pt"}});
    EXPECT_FALSE(fs::exists(p + ".tmp"));

    // Header: 8-byte length, JSON padded so the data section is 8-byte aligned.
    const std::string bytes = read_file(p);
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data(), 8);
    EXPECT_EQ(header_len % 8, 0u);
    EXPECT_EQ(bytes.size(), 8 + header_len + (6 + 4 + 1) * 4);
    const json header = json::parse(bytes.substr(8, header_len));
    EXPECT_EQ(header["b.weight"]["data_offsets"], json::array({0, 16}));
    EXPECT_EQ(header["a"]["data_offsets"], json::array({16, 40}));
    EXPECT_EQ(header["a"]["dtype"], "F32");
    EXPECT_EQ(header["a"]["shape"], json::array({2, 3}));
    EXPECT_EQ(header["s"]["shape"], json::array());
    EXPECT_EQ(header["__metadata__"]["format"], "pt");

    SafetensorsFile file(p);
    EXPECT_EQ(file.metadata().at("format"), "pt");
    ASSERT_EQ(file.tensors().size(), 3u);
    EXPECT_EQ(file.tensors()[0].name, "b.weight");  // data-offset order
    const Tensor a2 = file.read("a");
    EXPECT_EQ(a2.shape, a.shape);
    EXPECT_EQ(std::memcmp(a2.ptr(), a.ptr(), 24), 0);  // bitwise, including the negative subnormal
    const Tensor b2 = file.read("b.weight");
    EXPECT_EQ(std::bit_cast<uint32_t>(b2.data[1]), 0x80000000u);
    EXPECT_EQ(b2.data[3], std::numeric_limits<float>::infinity());
    EXPECT_EQ(file.read("s").data, std::vector<float>{42.0f});
    EXPECT_EQ(file.read("s").rank(), 0);
    EXPECT_TRUE(file.contains("a"));
    EXPECT_FALSE(file.contains("c"));
    try {
        file.info("c");
        FAIL() << "no error for a missing tensor";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), p + ": no tensor named 'c'");
    }
}

TEST_F(SafetensorsTest, Bf16WriteRoundsToNearestEven) {
    Tensor t({6});
    t.data = {1.0f, 1.00390625f /* 1+2^-8: tie, stays 1 */, 1.01171875f /* 1+3*2^-8: tie, up to 1+2^-6 */,
              1.0048828125f /* above the tie */, -std::numeric_limits<float>::infinity(),
              std::numeric_limits<float>::quiet_NaN()};
    const std::string p = path("bf16.safetensors");
    retnet::write_safetensors(p, {{"t", &t}}, {}, DType::BF16);
    SafetensorsFile file(p);
    EXPECT_EQ(file.info("t").dtype, DType::BF16);
    const std::vector<unsigned char> raw = file.bytes("t");
    ASSERT_EQ(raw.size(), 12u);
    std::vector<uint16_t> bits(6);
    std::memcpy(bits.data(), raw.data(), 12);
    EXPECT_EQ(bits[0], 0x3F80);
    EXPECT_EQ(bits[1], 0x3F80);
    EXPECT_EQ(bits[2], 0x3F82);
    EXPECT_EQ(bits[3], 0x3F81);
    EXPECT_EQ(bits[4], 0xFF80);
    const Tensor back = file.read("t");
    EXPECT_EQ(back.data[2], 1.015625f);
    EXPECT_EQ(back.data[3], 1.0078125f);
    EXPECT_TRUE(std::isnan(back.data[5]));
}

// A tensor larger than one 2^24-element slice, read in slices: the same values across the slice
// boundary (bf16: the source offsets are in 2-byte elements); a cancel between slices throws.
TEST_F(SafetensorsTest, SlicedReadEqualsTheWholeReadAndCancelsBetweenSlices) {
    const size_t n = (size_t(1) << 24) + 5;
    Tensor t({static_cast<int64_t>(n)});
    for (size_t i = 0; i < n; ++i) t.data[i] = static_cast<float>(i % 251) - 125.0f;
    const std::string p = path("big_bf16.safetensors");
    retnet::write_safetensors(p, {{"t", &t}}, {}, DType::BF16);
    SafetensorsFile file(p);
    std::vector<float> sliced(n, -1.0f);
    int checks = 0;
    file.read_into("t", sliced.data(), [&checks] { return ++checks > 99; });
    EXPECT_EQ(checks, 2);  // one check before each slice
    EXPECT_EQ(sliced, t.data);
    checks = 0;
    EXPECT_THROW(file.read_into("t", sliced.data(), [&checks] { return ++checks > 1; }), retnet::Cancelled);
    EXPECT_EQ(checks, 2);  // the first check let the first slice through, the second stopped the read
}

// A range of the flattened tensor holds the same values as the whole read there; a range past the
// end is refused with the file's name rather than read out of the mapping.
TEST_F(SafetensorsTest, RangeReadEqualsTheWholeReadAndRefusesThePastTheEnd) {
    Tensor t({3, 5});
    for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = 0.5f * static_cast<float>(i) - 3.0f;
    const std::string p = path("range_bf16.safetensors");
    retnet::write_safetensors(p, {{"t", &t}}, {}, DType::BF16);
    SafetensorsFile file(p);
    std::vector<float> part(4, -1.0f);
    file.read_range_into("t", 7, 4, part.data());
    EXPECT_EQ(part, std::vector<float>(t.data.begin() + 7, t.data.begin() + 11));
    file.read_range_into("t", 15, 0, part.data());  // empty at the end: nothing written
    EXPECT_EQ(part[0], t.data[7]);
    try {
        file.read_range_into("t", 12, 4, part.data());
        FAIL() << "a range past the end was read";
    } catch (const retnet::Error& e) {
        EXPECT_NE(std::string(e.what()).find("pass its end (15 elements)"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("range_bf16.safetensors"), std::string::npos) << e.what();
    }
    EXPECT_THROW(file.read_range_into("t", 16, 0, part.data()), retnet::Error);
}

// Another program may truncate or replace the file between its opening and the reads (a training
// run saving over the model a viewer is loading): a shrunk file is an Error naming the file, not a
// SIGBUS as reading a shrunk memory map was, and so is one written over in place (what was read could
// mix two files); a file replaced by a rename is read as it was opened.
TEST_F(SafetensorsTest, AFileThatShrinksAfterOpeningFailsItsReadsWithOneLine) {
    Tensor a({4, 8}), b({6});
    for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = static_cast<float>(i);
    for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = -static_cast<float>(i);
    for (const DType dtype : {DType::F32, DType::BF16}) {
        const std::string p = path(std::string("shrinks_") + retnet::dtype_name(dtype) + ".safetensors");
        retnet::write_safetensors(p, {{"a", &a}, {"b", &b}}, {}, dtype);
        const SafetensorsFile file(p);
        const uint64_t a_end = file.info("a").end, b_begin = file.info("b").begin;
        const uint64_t data_start = fs::file_size(p) - file.info("b").end;  // b is the last tensor
        fs::resize_file(p, data_start + b_begin + 2);  // b loses all but 2 bytes
        std::vector<float> values(b.data.size());
        try {
            file.read_into("b", values.data());
            FAIL() << "read past the end of a shrunk file";
        } catch (const Error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(p + ": the file shrank while it was read"), std::string::npos) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        }
        EXPECT_THROW(file.bytes("b"), Error);
        if (dtype == DType::BF16) {
            std::vector<uint16_t> bits(b.data.size());
            EXPECT_THROW(file.read_bf16_into("b", bits.data()), Error);
        }
        ASSERT_LE(data_start + a_end, data_start + b_begin);
        EXPECT_THROW(file.read("a"), Error);  // still there, but the file is no longer the one opened
    }
    {  // written over in place, same size: the read after it is refused (its time of modification moved;
       // the file is dated an hour back first, so that the write cannot fall in the same clock tick)
        const std::string p = path("overwritten.safetensors");
        retnet::write_safetensors(p, {{"a", &a}, {"b", &b}}, {}, DType::F32);
        fs::last_write_time(p, fs::last_write_time(p) - std::chrono::hours(1));
        const SafetensorsFile file(p);
        EXPECT_EQ(file.read("a").data, a.data);
        {
            std::fstream in_place(p, std::ios::binary | std::ios::in | std::ios::out);
            in_place.seekp(static_cast<std::streamoff>(fs::file_size(p) - 4));
            in_place.write("\0\0\0\0", 4);
        }
        try {
            file.read("b");
            FAIL() << "read a file written over since it was opened";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(p + ": the file changed while it was read"), std::string::npos)
                << e.what();
        }
    }
    const std::string p = path("replaced.safetensors");
    retnet::write_safetensors(p, {{"a", &a}}, {}, DType::F32);
    const SafetensorsFile file(p);
    Tensor other({4, 8});
    retnet::write_safetensors(path("new.safetensors"), {{"a", &other}}, {}, DType::F32);
    fs::rename(path("new.safetensors"), p);
    EXPECT_EQ(file.read("a").data, a.data);
}

// A header of 100,000 tensors opens in time that grows with its size (the JSON parser's callback form
// took minutes and could not be interrupted meanwhile), more are refused; a name given twice is
// still found, and a huge shape is quoted in an error cut to a readable length.
TEST_F(SafetensorsTest, ManyTensorsRepeatedNamesAndHugeShapesInTheHeader) {
    const int n = 100000;
    std::string header = "{";
    for (int i = 0; i < n; ++i)
        header += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" +
                  std::to_string(i) + "," + std::to_string(i + 1) + "]}";
    std::string data(static_cast<size_t>(n), '\0');
    for (int i = 0; i < n; ++i) data[static_cast<size_t>(i)] = static_cast<char>(i % 251);
    const SafetensorsFile many(write_raw("many.safetensors", header + "}", data));
    ASSERT_EQ(many.tensors().size(), static_cast<size_t>(n));
    EXPECT_EQ(many.read("t99999").data, std::vector<float>{static_cast<float>(99999 % 251)});

    std::string too_many = header;  // 100,000 tensors, __metadata__ and one more name
    too_many += ",\"__metadata__\":{},\"one_more\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
    EXPECT_NE(open_error(write_raw("too_many.safetensors", too_many, data)).find("header lists more than 100000 tensors"),
              std::string::npos);

    const std::string twice = header + ",\"t500\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
    EXPECT_NE(open_error(write_raw("twice.safetensors", twice, data)).find("header names 't500' twice"),
              std::string::npos);

    json wide = json::array();
    for (int i = 0; i < 10000; ++i) wide.push_back(2);
    const json wide_header = {{"w", {{"dtype", "F32"}, {"shape", wide}, {"data_offsets", {0, 4}}}}};
    const std::string error = open_error(write_raw("wide.safetensors", wide_header.dump(), "abcd"));
    EXPECT_NE(error.find("tensor 'w': shape [2,2,2,"), std::string::npos) << error;
    EXPECT_NE(error.find(" more)"), std::string::npos) << error;
    EXPECT_LT(error.size(), 400u) << error;
}

TEST(HalfConversion, KnownValues) {
    EXPECT_EQ(retnet::half_to_float(0x3C00), 1.0f);
    EXPECT_EQ(retnet::half_to_float(0xC000), -2.0f);
    EXPECT_EQ(retnet::half_to_float(0x7BFF), 65504.0f);
    EXPECT_EQ(retnet::half_to_float(0x3555), 0.333251953125f);
    EXPECT_EQ(retnet::half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(retnet::half_to_float(0x03FF), std::ldexp(1023.0f, -24));
    EXPECT_EQ(retnet::half_to_float(0x0400), std::ldexp(1.0f, -14));
    EXPECT_EQ(retnet::half_to_float(0x7C00), std::numeric_limits<float>::infinity());
    EXPECT_EQ(retnet::half_to_float(0xFC00), -std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(retnet::half_to_float(0x7E00)));
    EXPECT_EQ(std::bit_cast<uint32_t>(retnet::half_to_float(0x8000)), 0x80000000u);

    EXPECT_EQ(retnet::float_to_half(65519.0f), 0x7BFF);
    EXPECT_EQ(retnet::float_to_half(65520.0f), 0x7C00);  // tie between 65504 and 2^16 goes to even: inf
    EXPECT_EQ(retnet::float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24: even
    EXPECT_EQ(retnet::float_to_half(std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_EQ(retnet::float_to_half(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie to even
    EXPECT_EQ(retnet::float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie: even
    EXPECT_EQ(retnet::float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie: even (up)
    EXPECT_EQ(retnet::float_to_half(std::ldexp(1023.5f, -24)), 0x0400);  // carries into the smallest normal
    EXPECT_EQ(retnet::float_to_half(1e-10f), 0x0000);
    EXPECT_EQ(retnet::float_to_half(-1e10f), 0xFC00);
    EXPECT_TRUE(std::isnan(retnet::half_to_float(retnet::float_to_half(std::nanf("")))));
}

TEST(HalfConversion, EveryHalfAndBf16ValueRoundTrips) {
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const auto h = static_cast<uint16_t>(bits);
        const float f = retnet::half_to_float(h);
        const float b = retnet::bf16_to_float(h);
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(retnet::half_to_float(retnet::float_to_half(f))));
        } else {
            ASSERT_EQ(retnet::float_to_half(f), h) << std::hex << bits;
        }
        if (!std::isnan(b)) {
            ASSERT_EQ(retnet::float_to_bf16(b), h) << std::hex << bits;
        }
        ASSERT_EQ(std::bit_cast<uint32_t>(b), bits << 16);
    }
}

TEST_F(SafetensorsTest, ReadsEveryStoredDTypeAsFloat) {
    const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7BFF};
    const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x0001, 0x7F80};
    const std::vector<double> f64 = {0.1, -1e300, 1.0 + 1e-12};
    const std::vector<int64_t> i64 = {-3, 1LL << 40};
    const std::vector<int32_t> i32 = {7, -8, 16777217};
    std::string data;
    json header;
    auto add = [&](const std::string& name, const char* dtype, json shape, const std::string& bytes) {
        header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
        data += bytes;
    };
    add("h", "F16", {2, 2}, bytes_of(f16));
    add("b", "BF16", {4}, bytes_of(bf16));
    add("d", "F64", {3}, bytes_of(f64));
    add("l", "I64", {2}, bytes_of(i64));
    add("i", "I32", {3, 1}, bytes_of(i32));
    header["__metadata__"] = {{"note", "mixed"}};
    SafetensorsFile file(write_raw("mixed.safetensors", header.dump(), data));
    EXPECT_EQ(file.metadata().at("note"), "mixed");

    const Tensor h = file.read("h");
    EXPECT_EQ(h.shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(h.data, (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24), 65504.0f}));
    EXPECT_EQ(file.read("b").data,
              (std::vector<float>{1.0f, -3.0f, std::bit_cast<float>(0x00010000u), std::numeric_limits<float>::infinity()}));
    EXPECT_EQ(file.read("d").data, (std::vector<float>{0.1f, -std::numeric_limits<float>::infinity(), 1.0f}));
    EXPECT_EQ(file.read("l").data, (std::vector<float>{-3.0f, 1099511627776.0f}));
    EXPECT_EQ(file.read("i").data, (std::vector<float>{7.0f, -8.0f, 16777216.0f}));  // nearest float
}

TEST_F(SafetensorsTest, CorruptFilesFailWithFileAndProblem) {
    const std::string data4 = bytes_of(std::vector<float>{1, 2, 3, 4});
    auto entry = [](const char* dtype, json shape, uint64_t begin, uint64_t end) {
        return json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
    };
    struct Case {
        std::string name;
        std::string header;
        std::string data;
        const char* expected;
    };
    const std::vector<Case> cases = {
        {"not_json", "{\"a\": {\"dtype\": ", data4, "header is not valid JSON"},
        {"not_object", "[1, 2, 3]", data4, "header is not a JSON object"},
        {"entry_not_object", json{{"a", 3}}.dump(), data4, "tensor 'a': entry is not an object"},
        {"no_dtype", json{{"a", {{"shape", {4}}, {"data_offsets", {0, 16}}}}}.dump(), data4, "tensor 'a': missing dtype"},
        {"unknown_dtype", json{{"a", entry("F8_E4M3", {4}, 0, 4)}}.dump(), data4,
         "tensor 'a': unsupported dtype 'F8_E4M3'"},
        {"negative_shape", json{{"a", entry("F32", {-1, 4}, 0, 16)}}.dump(), data4,
         "tensor 'a': shape [-1,4] has a dimension that is not a non-negative integer"},
        {"float_shape", json{{"a", entry("F32", {1.5}, 0, 16)}}.dump(), data4, "not a non-negative integer"},
        {"overflowing_shape", json{{"a", entry("F32", {1ULL << 40, 1ULL << 40}, 0, 16)}}.dump(), data4,
         "tensor 'a': shape [1099511627776,1099511627776] is too large (its byte size overflows)"},
        {"huge_shape", json{{"a", entry("F32", {1ULL << 63, 2}, 0, 16)}}.dump(), data4, "is too large"},
        {"large_shape", json{{"a", entry("F32", {5}, 0, 20)}}.dump(), data4,
         "tensor 'a': shape [5] needs 20 bytes but the data section holds only 16 (truncated file?)"},
        {"outside", json{{"a", entry("F32", {4}, 8, 24)}}.dump(), data4,
         "tensor 'a': data_offsets [8, 24] lie outside the data section of 16 bytes"},
        {"reversed", json{{"a", entry("F32", {0}, 8, 4)}}.dump(), data4, "data_offsets [8, 4] end before they begin"},
        {"wrong_size", json{{"a", entry("F32", {3}, 0, 16)}}.dump(), data4,
         "tensor 'a': data_offsets [0, 16] hold 16 bytes but F32 [3] needs 12"},
        {"overlap", json{{"a", entry("F32", {3}, 0, 12)}, {"b", entry("F32", {2}, 8, 16)}}.dump(), data4,
         "tensors 'a' and 'b' overlap in the data section"},
        {"bad_offsets", json{{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0}}}}}.dump(), data4,
         "data_offsets must be [begin, end]"},
        {"negative_offsets", json{{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {-16, 0}}}}}.dump(), data4,
         "are not non-negative integers"},
        {"metadata_not_object", json{{"__metadata__", "x"}}.dump(), "", "__metadata__ is not an object"},
        {"metadata_not_string", json{{"__metadata__", {{"n", 3}}}}.dump(), "",
         "__metadata__ value of 'n' is not a string"},
        {"duplicate", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
         data4, "header names 'a' twice"},
    };
    for (const Case& c : cases) {
        const std::string p = write_raw(c.name + ".safetensors", c.header, c.data);
        const std::string msg = open_error(p);
        EXPECT_EQ(msg.rfind(p + ": ", 0), 0u) << c.name << ": " << msg;
        EXPECT_NE(msg.find(c.expected), std::string::npos) << c.name << ": " << msg;
    }
}

TEST_F(SafetensorsTest, TruncatedFilesAndHeaderLengths) {
    std::string p = write_bytes("tiny.safetensors", "abc");
    EXPECT_EQ(open_error(p), p + ": truncated file (3 bytes; a safetensors file starts with an 8-byte header length)");
    p = write_bytes("empty.safetensors", "");
    EXPECT_NE(open_error(p).find("truncated file (0 bytes"), std::string::npos);

    p = write_raw("long_header.safetensors", "{}", "", 1000);
    EXPECT_EQ(open_error(p),
              p + ": header length 1000 does not fit in the file: 10 bytes hold 8 for the length and 2 after it "
                     "(truncated or not a safetensors file)");
    p = write_raw("huge_header.safetensors", "{}", "", ~0ULL);
    EXPECT_NE(open_error(p).find("header length 18446744073709551615 does not fit in the file"), std::string::npos);

    // A valid file cut short inside its data section.
    Tensor t({16}, 1.5f);
    p = path("cut.safetensors");
    retnet::write_safetensors(p, {{"t", &t}});
    fs::resize_file(p, fs::file_size(p) - 4);
    const std::string msg = open_error(p);
    EXPECT_NE(msg.find(p + ": tensor 't'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated file?"), std::string::npos) << msg;
    // Cut inside the header.
    retnet::write_safetensors(p, {{"t", &t}});
    fs::resize_file(p, 20);
    EXPECT_NE(open_error(p).find("does not fit in the file: 20 bytes"), std::string::npos);

    EXPECT_NE(open_error(path("absent.safetensors")).find("absent.safetensors: cannot open"), std::string::npos);
    EXPECT_NE(open_error(dir_.string()).find(": is a directory, expected a regular file"), std::string::npos);
}

TEST_F(SafetensorsTest, EmptyHeaderAndZeroSizedTensors) {
    SafetensorsFile empty(write_raw("empty_header.safetensors", "{}", ""));
    EXPECT_TRUE(empty.tensors().empty());
    // A padded header (trailing spaces) and zero-element tensors sharing an offset are valid.
    const json header{{"z", {{"dtype", "F32"}, {"shape", {0, 5}}, {"data_offsets", {0, 0}}}},
                      {"y", {{"dtype", "BF16"}, {"shape", {0}}, {"data_offsets", {0, 0}}}}};
    SafetensorsFile file(write_raw("zero.safetensors", header.dump() + "    ", ""));
    EXPECT_EQ(file.read("z").shape, (std::vector<int64_t>{0, 5}));
    EXPECT_TRUE(file.read("y").empty());
}

TEST_F(SafetensorsTest, FailedWriteKeepsThePreviousFile) {
    Tensor t({3}, 2.0f);
    const std::string p = path("keep.safetensors");
    retnet::write_safetensors(p, {{"t", &t}});
    const std::string before = read_file(p);

    // The temporary file cannot be created: a directory is in the way.
    fs::create_directory(p + ".tmp");
    Tensor other({5}, 7.0f);
    EXPECT_THROW(retnet::write_safetensors(p, {{"u", &other}}), Error);
    EXPECT_EQ(read_file(p), before);
    fs::remove(p + ".tmp");

    // The target is a directory: refused before anything is written, no temporary file.
    const std::string target = path("a_directory");
    fs::create_directory(target);
    try {
        retnet::write_safetensors(target, {{"u", &other}});
        FAIL() << "writing over a directory succeeded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(target + ": is a directory"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(target + ".tmp"));

    // Invalid input is refused before anything is written.
    EXPECT_THROW(retnet::write_safetensors(p, {{"t", &t}, {"t", &other}}), Error);
    EXPECT_THROW(retnet::write_safetensors(p, {{"__metadata__", &t}}), Error);
    EXPECT_THROW(retnet::write_safetensors(p, {{"t", &t}}, {}, DType::F16), Error);
    EXPECT_EQ(read_file(p), before);
    EXPECT_FALSE(fs::exists(p + ".tmp"));

    // A successful write replaces the file.
    retnet::write_safetensors(p, {{"u", &other}});
    EXPECT_EQ(SafetensorsFile(p).read("u").data, other.data);
}

TEST_F(SafetensorsTest, ShardedIndex) {
    Tensor a({2}, 1.0f), b({3}, 2.0f), c({1}, 3.0f);
    retnet::write_safetensors(path("model-00001-of-00002.safetensors"), {{"a", &a}, {"b", &b}});
    retnet::write_safetensors(path("model-00002-of-00002.safetensors"), {{"c", &c}});
    const json index{{"metadata", {{"total_size", 24}}},
                     {"weight_map",
                      {{"a", "model-00001-of-00002.safetensors"},
                       {"b", "model-00001-of-00002.safetensors"},
                       {"c", "model-00002-of-00002.safetensors"}}}};
    const std::string index_path = path("model.safetensors.index.json");
    std::ofstream(index_path) << index.dump(2);

    const SafetensorsSet set = SafetensorsSet::open_directory(dir_.string());
    EXPECT_EQ(set.source(), index_path);
    EXPECT_EQ(set.names(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(set.read("c").data, c.data);
    EXPECT_EQ(set.read("b").data, b.data);
    EXPECT_EQ(set.file_of("c"), path("model-00002-of-00002.safetensors"));
    EXPECT_EQ(set.info("a").shape, a.shape);

    auto open_error_of = [&](const json& j) {
        std::ofstream(index_path, std::ios::trunc) << j.dump();
        try {
            SafetensorsSet::open_directory(dir_.string());
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    json missing = index;
    missing["weight_map"]["c"] = "model-00003-of-00003.safetensors";
    EXPECT_EQ(open_error_of(missing),
              index_path + ": shard 'model-00003-of-00003.safetensors' (holding 'c') does not exist");
    // Something that is there but is no safetensors file is named as what it is, not as missing.
    fs::create_directory(dir_ / "a-directory.safetensors");
    ASSERT_EQ(::mkfifo((dir_ / "a-fifo.safetensors").c_str(), 0600), 0);
    fs::create_symlink("nowhere.safetensors", dir_ / "dangling.safetensors");
    for (const auto& [shard, why] :
         {std::pair<std::string, std::string>{"a-directory.safetensors", "is a directory, expected a regular file"},
          {"a-fifo.safetensors", "is a FIFO (named pipe), expected a regular file"},
          {"dangling.safetensors", "is a symbolic link to nowhere.safetensors, which does not exist"}}) {
        json odd = index;
        odd["weight_map"]["c"] = shard;
        EXPECT_EQ(open_error_of(odd), (dir_ / shard).string() + ": " + why);
    }
    json wrong = index;
    wrong["weight_map"]["c"] = "model-00001-of-00002.safetensors";
    EXPECT_EQ(open_error_of(wrong),
              index_path + ": weight_map puts 'c' in 'model-00001-of-00002.safetensors', which does not contain it");
    json escape = index;
    escape["weight_map"]["c"] = "../elsewhere.safetensors";
    EXPECT_NE(open_error_of(escape).find("is not a file next to the index"), std::string::npos);
    EXPECT_EQ(open_error_of(json{{"metadata", {}}}), index_path + ": missing field 'weight_map' (an object {tensor: file})");
    std::ofstream(index_path, std::ios::trunc) << "{";
    EXPECT_THROW(SafetensorsSet::open_directory(dir_.string()), Error);

    // Without an index, model.safetensors is used; without either, the directory is named.
    fs::remove(index_path);
    try {
        SafetensorsSet::open_directory(dir_.string());
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), dir_.string() + ": no model.safetensors or model.safetensors.index.json");
    }
    fs::rename(path("model-00002-of-00002.safetensors"), path("model.safetensors"));
    EXPECT_EQ(SafetensorsSet::open_directory(dir_.string()).names(), std::vector<std::string>{"c"});
}
