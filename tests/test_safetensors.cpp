// Tests of tessera/io/safetensors.hpp: dtype conversions, bit-exact round trips, the typed
// readers, atomic writing, one test per malformed-file case (each must throw tessera::Error
// naming the file and the problem), and the checksum "tessera.crc32".

#include <tessera/io/safetensors.hpp>

#include "test_util.hpp"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace test_safetensors {

using tessera::DType;
using tessera::SafetensorsFile;
using tessera::TensorData;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

using tessera::test::TempDir;

class SafetensorsTest : public ::testing::Test {
 protected:
  TempDir dir;
};

using tessera::test::error_of;

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string u64_le(std::uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return out;
}

// A file with the given header text (no padding) and `data_size` data bytes.
fs::path write_file(const TempDir& dir, const std::string& header, std::size_t data_size,
                    const std::string& name = "bad.safetensors") {
  const fs::path path = dir / name;
  write_bytes(path, u64_le(header.size()) + header + std::string(data_size, '\x01'));
  return path;
}

std::string open_error(const fs::path& path, const tessera::SafetensorsLimits& limits = {}) {
  return error_of([&] { (void)SafetensorsFile::open(path, limits); });
}

// Deterministic pseudo-random bytes; BOOL gets 0 / 1.
TensorData random_tensor(DType dtype, std::vector<std::int64_t> shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::int64_t count = 1;
  for (auto d : shape) count *= d;
  TensorData tensor{
      dtype, std::move(shape),
      std::vector<std::byte>(static_cast<std::size_t>(count) * tessera::dtype_size(dtype))};
  for (std::byte& b : tensor.bytes) {
    b = static_cast<std::byte>(dtype == DType::BOOL ? rng() % 2 : rng() % 256);
  }
  return tensor;
}

double bits_to_double(std::uint64_t bits) { return std::bit_cast<double>(bits); }

// ---------------------------------------------------------------------------------------------
// dtypes

TEST(DType, NamesSizesAndParsing) {
  EXPECT_STREQ(tessera::dtype_name(DType::BF16), "BF16");
  EXPECT_EQ(tessera::dtype_size(DType::F64), 8u);
  EXPECT_EQ(tessera::dtype_size(DType::F16), 2u);
  EXPECT_EQ(tessera::dtype_size(DType::BOOL), 1u);
  for (DType dtype : tessera::all_dtypes) {
    EXPECT_EQ(tessera::parse_dtype(tessera::dtype_name(dtype)), dtype);
  }
  EXPECT_FALSE(tessera::parse_dtype("f32").has_value());
  EXPECT_FALSE(tessera::parse_dtype("F8_E4M3").has_value());
  EXPECT_TRUE(tessera::is_floating(DType::BF16));
  EXPECT_TRUE(tessera::is_integer(DType::U8));
}

// ---------------------------------------------------------------------------------------------
// half and bfloat16

TEST(Half, KnownValues) {
  EXPECT_EQ(tessera::float_to_half(1.0), 0x3C00);
  EXPECT_EQ(tessera::float_to_half(-2.5), 0xC100);
  EXPECT_EQ(tessera::float_to_half(65504.0), 0x7BFF);  // largest finite
  EXPECT_EQ(tessera::float_to_half(0.0), 0x0000);
  EXPECT_EQ(tessera::float_to_half(-0.0), 0x8000);
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1.0, -14)), 0x0400);     // smallest normal
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1.0, -24)), 0x0001);     // smallest subnormal
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1023.0, -24)), 0x03FF);  // largest subnormal
  EXPECT_EQ(tessera::half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(tessera::half_to_float(0xC100), -2.5f);
  EXPECT_EQ(tessera::half_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(tessera::half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(tessera::half_to_float(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(tessera::half_to_float(0x8001), -std::ldexp(1.0f, -24));
  const float negative_zero = tessera::half_to_float(0x8000);
  EXPECT_EQ(negative_zero, 0.0f);
  EXPECT_TRUE(std::signbit(negative_zero));
}

TEST(Half, InfinityAndNan) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(tessera::float_to_half(inf), 0x7C00);
  EXPECT_EQ(tessera::float_to_half(-inf), 0xFC00);
  EXPECT_EQ(tessera::float_to_half(1e10), 0x7C00);     // overflow
  EXPECT_EQ(tessera::float_to_half(65520.0), 0x7C00);  // halfway to 2^16 rounds to infinity
  EXPECT_EQ(tessera::float_to_half(65519.99), 0x7BFF);
  const std::uint16_t nan = tessera::float_to_half(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
  EXPECT_TRUE(std::isinf(tessera::half_to_float(0x7C00)));
  EXPECT_TRUE(std::isinf(tessera::half_to_float(0xFC00)));
  EXPECT_LT(tessera::half_to_float(0xFC00), 0.0f);
  EXPECT_TRUE(std::isnan(tessera::half_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(tessera::half_to_float(0x7C01)));  // signaling payload stays NaN
}

TEST(Half, RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1).
  EXPECT_EQ(tessera::float_to_half(1.0 + std::ldexp(1.0, -11)), 0x3C00);
  // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(tessera::float_to_half(1.0 + 3 * std::ldexp(1.0, -11)), 0x3C02);
  // Just above the tie rounds up; rounding through float first would lose the 2^-40.
  EXPECT_EQ(tessera::float_to_half(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40)), 0x3C01);
  // Subnormal ties: 2^-25 is halfway between 0 and 2^-24 -> 0; 3 * 2^-25 -> 2 * 2^-24.
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1.0, -25)), 0x0000);
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1.0, -25) * 1.0000001), 0x0001);
  EXPECT_EQ(tessera::float_to_half(std::ldexp(3.0, -25)), 0x0002);
  // Rounding up out of the subnormal range gives the smallest normal.
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1023.5, -24)), 0x0400);
  EXPECT_EQ(tessera::float_to_half(std::ldexp(1.0, -30)), 0x0000);
  EXPECT_EQ(tessera::float_to_half(-std::ldexp(1.0, -30)), 0x8000);
  EXPECT_EQ(tessera::float_to_half(bits_to_double(1)), 0x0000);  // a double subnormal
}

TEST(Half, EveryFiniteHalfRoundTrips) {
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto half = static_cast<std::uint16_t>(bits);
    const float value = tessera::half_to_float(half);
    if ((half & 0x7C00) == 0x7C00 && (half & 0x03FF) != 0) {
      ASSERT_TRUE(std::isnan(value)) << bits;
      ASSERT_TRUE(std::isnan(tessera::half_to_float(tessera::float_to_half(value)))) << bits;
    } else {
      ASSERT_EQ(tessera::float_to_half(value), half) << bits;
      ASSERT_EQ(tessera::float_to_half(static_cast<float>(value)), half) << bits;
    }
  }
}

TEST(BFloat16, KnownValuesAndRounding) {
  EXPECT_EQ(tessera::float_to_bfloat16(1.0), 0x3F80);
  EXPECT_EQ(tessera::float_to_bfloat16(-2.5), 0xC020);
  EXPECT_EQ(tessera::bfloat16_to_float(0x3F80), 1.0f);
  EXPECT_EQ(tessera::bfloat16_to_float(0xC020), -2.5f);
  // ties to even: 1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6
  EXPECT_EQ(tessera::float_to_bfloat16(1.0 + std::ldexp(1.0, -8)), 0x3F80);
  EXPECT_EQ(tessera::float_to_bfloat16(1.0 + 3 * std::ldexp(1.0, -8)), 0x3F82);
  EXPECT_EQ(tessera::float_to_bfloat16(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)), 0x3F81);
  // largest finite, overflow, subnormals, infinity, NaN
  EXPECT_EQ(tessera::float_to_bfloat16(tessera::bfloat16_to_float(0x7F7F)), 0x7F7F);
  EXPECT_EQ(tessera::float_to_bfloat16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(tessera::float_to_bfloat16(std::ldexp(1.0, -133)), 0x0001);
  EXPECT_EQ(tessera::bfloat16_to_float(0x0001), std::ldexp(1.0f, -133));
  EXPECT_EQ(tessera::float_to_bfloat16(std::ldexp(1.0, -134)), 0x0000);
  EXPECT_EQ(tessera::float_to_bfloat16(-std::numeric_limits<double>::infinity()), 0xFF80);
  EXPECT_TRUE(std::isinf(tessera::bfloat16_to_float(0x7F80)));
  const std::uint16_t nan = tessera::float_to_bfloat16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_TRUE(std::isnan(tessera::bfloat16_to_float(nan)));
}

TEST(BFloat16, EveryFiniteValueRoundTrips) {
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto bf16 = static_cast<std::uint16_t>(bits);
    const float value = tessera::bfloat16_to_float(bf16);
    if (std::isnan(value)) continue;
    ASSERT_EQ(tessera::float_to_bfloat16(value), bf16) << bits;
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, EveryDtypeRoundTripsBitExact) {
  std::map<std::string, TensorData> tensors;
  std::uint32_t seed = 1;
  for (DType dtype : tessera::all_dtypes) {
    const std::string name = tessera::dtype_name(dtype);
    tensors[name + ".matrix"] = random_tensor(dtype, {3, 5}, seed++);
    tensors[name + ".scalar"] = random_tensor(dtype, {}, seed++);
    tensors[name + ".rank3"] = random_tensor(dtype, {2, 1, 3}, seed++);
    tensors[name + ".empty"] = random_tensor(dtype, {0, 4}, seed++);
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "caf\u00e9"}};
  const fs::path path = dir / "all.safetensors";
  tessera::save_safetensors(path, tensors, metadata);

  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.size(), tensors.size());
  EXPECT_EQ(file.metadata(), metadata);
  std::vector<std::string> expected_names;
  for (const auto& [name, tensor] : tensors) expected_names.push_back(name);
  EXPECT_EQ(file.names(), expected_names);  // sorted
  for (const auto& [name, tensor] : tensors) {
    ASSERT_TRUE(file.contains(name));
    EXPECT_EQ(file.tensor_data(name), tensor) << name;
    EXPECT_EQ(file.info(name).dtype, tensor.dtype);
    EXPECT_EQ(file.info(name).shape, tensor.shape);
  }
  EXPECT_EQ(tessera::load_safetensors(path), tensors);
}

TEST_F(SafetensorsTest, HeaderIsSortedContiguousAndPaddedToEightBytes) {
  const fs::path path = dir / "layout.safetensors";
  tessera::save_safetensors(path, {{"b", TensorData::from_vector(std::vector<float>{1, 2, 3})},
                                   {"a", TensorData::from_scalar(std::int8_t{7})}});
  const std::string bytes = read_bytes(path);
  ASSERT_GE(bytes.size(), 8u);
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<std::uint8_t>(bytes[i]);
  EXPECT_EQ(header_size % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + header_size + 1 + 12);
  const std::string header = bytes.substr(8, header_size);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));  // only spaces after '}'
  EXPECT_LT(header.find("\"a\""), header.find("\"b\""));
  const auto json = nlohmann::json::parse(header);
  EXPECT_EQ(json["a"]["data_offsets"], nlohmann::json({0, 1}));
  EXPECT_EQ(json["b"]["data_offsets"], nlohmann::json({1, 13}));
  EXPECT_EQ(json["a"]["shape"], nlohmann::json::array());
  EXPECT_FALSE(json.contains("__metadata__"));  // written only when there is metadata
}

TEST_F(SafetensorsTest, BuildersAndTypedReaders) {
  tessera::Matrix<float> weight(2, 3);
  weight << 1.5f, -2.0f, 3.25f, 1e-8f, -0.0f, 65504.0f;
  tessera::Matrix<double> precise(1, 2);
  precise << 0.1, -1e300;
  Eigen::MatrixXf column_major(2, 2);  // read in row-major order whatever the storage
  column_major << 1, 2, 3, 4;
  const fs::path path = dir / "typed.safetensors";
  tessera::save_safetensors(
      path, {{"w", TensorData::from_matrix(weight)},
             {"w16", TensorData::from_matrix(weight, DType::F16)},
             {"wbf", TensorData::from_matrix(weight, DType::BF16)},
             {"precise", TensorData::from_matrix(precise, DType::F64)},
             {"cm", TensorData::from_matrix(column_major)},
             {"bias", TensorData::from_vector(std::vector<double>{0.5, -0.25})},
             {"ids", TensorData::from_vector(std::vector<std::int64_t>{-5, 0, 1LL << 40})},
             {"ids32", TensorData::from_vector(std::vector<std::int32_t>{7, -8}, {2, 1})},
             {"small", TensorData::from_vector(std::vector<int>{-128, 127}, DType::I8)},
             {"bytes", TensorData::from_vector(std::vector<int>{0, 255}, DType::U8)},
             {"shorts", TensorData::from_vector(std::vector<int>{-32768, 32767}, DType::I16)},
             {"mask", TensorData::from_vector(std::vector<int>{1, 0, 1}, DType::BOOL)},
             {"logit_scale", TensorData::from_scalar(2.6592)}});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.is_mapped());

  EXPECT_EQ(file.info("w").dtype, DType::F32);
  EXPECT_EQ(file.read_matrix<float>("w"), weight);
  EXPECT_EQ(file.read_matrix<float>("w", 2, 3), weight);
  EXPECT_EQ(file.read_matrix<double>("w"), weight.cast<double>());
  const tessera::Matrix<float> half = file.read_matrix<float>("w16");
  for (Eigen::Index i = 0; i < weight.size(); ++i) {
    EXPECT_EQ(half.data()[i], tessera::half_to_float(tessera::float_to_half(weight.data()[i])));
    EXPECT_EQ(file.read_matrix<float>("wbf").data()[i],
              tessera::bfloat16_to_float(tessera::float_to_bfloat16(weight.data()[i])));
  }
  EXPECT_EQ(half(0, 2), 3.25f);
  EXPECT_EQ(half(1, 2), 65504.0f);
  EXPECT_EQ(file.read_matrix<double>("precise"), precise);
  EXPECT_EQ(file.read<float>("cm"), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(file.read_vector<double>("bias", 2),
            (tessera::Vector<double>(2) << 0.5, -0.25).finished());
  EXPECT_EQ(file.read<std::int64_t>("ids"), (std::vector<std::int64_t>{-5, 0, 1LL << 40}));
  EXPECT_EQ(file.info("ids32").dtype, DType::I32);
  EXPECT_EQ(file.read<int>("ids32"), (std::vector<int>{7, -8}));
  EXPECT_EQ(file.read<std::int64_t>("small"), (std::vector<std::int64_t>{-128, 127}));
  EXPECT_EQ(file.read<int>("bytes"), (std::vector<int>{0, 255}));
  EXPECT_EQ(file.read<int>("shorts"), (std::vector<int>{-32768, 32767}));
  EXPECT_EQ(file.read<std::uint8_t>("mask"), (std::vector<std::uint8_t>{1, 0, 1}));
  EXPECT_EQ(file.info("logit_scale").rank(), 0u);
  EXPECT_EQ(file.read_scalar<float>("logit_scale"), 2.6592f);
}

TEST_F(SafetensorsTest, ReadsUnalignedData) {
  // Header of 9 bytes: the data section starts at byte 17, misaligned for every dtype.
  const std::string header = R"({"x":{"dtype":"F64","shape":[2],"data_offsets":[1,17]},)"
                             R"("p":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("y":{"dtype":"F32","shape":[1],"data_offsets":[17,21]}})";
  std::string data(1, '\x2a');
  for (double value : {1.25, -3.5}) {
    const auto bits = std::bit_cast<std::uint64_t>(value);
    data += u64_le(bits);
  }
  const auto float_bits = std::bit_cast<std::uint32_t>(0.75f);
  data += u64_le(float_bits).substr(0, 4);
  const fs::path path = dir / "unaligned.safetensors";
  write_bytes(path, u64_le(header.size()) + header + data);
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.read<double>("x"), (std::vector<double>{1.25, -3.5}));
  EXPECT_EQ(file.read<float>("y"), (std::vector<float>{0.75f}));
  EXPECT_EQ(file.read<int>("p"), (std::vector<int>{42}));
}

TEST_F(SafetensorsTest, EmptyFileWithNoTensorsIsValid) {
  const fs::path path = dir / "empty.safetensors";
  tessera::save_safetensors(path, {});
  const SafetensorsFile file = SafetensorsFile::open(path);
  EXPECT_EQ(file.size(), 0u);
  EXPECT_TRUE(file.names().empty());
}

TEST_F(SafetensorsTest, MovedFileStaysReadable) {
  const fs::path path = dir / "move.safetensors";
  tessera::save_safetensors(path, {{"v", TensorData::from_vector(std::vector<float>{1, 2})}});
  SafetensorsFile first = SafetensorsFile::open(path);
  SafetensorsFile second = std::move(first);
  EXPECT_EQ(second.read<float>("v"), (std::vector<float>{1, 2}));
  SafetensorsFile third = SafetensorsFile::open(path);
  third = std::move(second);
  EXPECT_EQ(third.read<float>("v"), (std::vector<float>{1, 2}));
  EXPECT_EQ(third.path(), path);
}


// A mapped file's pages are given back once read (and by release): the bytes read again are
// the same, paged in again from the file; a file held in memory ignores release.
TEST_F(SafetensorsTest, ReleasedPagesReadTheSameAgain) {
  const fs::path path = dir / "release.safetensors";
  std::vector<float> big(1 << 20);  // 4 MiB: many pages
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 1000) - 500.5f;
  tessera::save_safetensors(path, {{"big", TensorData::from_vector(big)},
                                   {"small", TensorData::from_vector(std::vector<float>{3, 4})}},
                            {}, tessera::Checksum::crc32);
  const SafetensorsFile file = SafetensorsFile::open(path);  // the checksum read every page
  ASSERT_TRUE(file.is_mapped());
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(file.read<float>("big"), big) << "round " << round;
    EXPECT_EQ(file.read<float>("small"), (std::vector<float>{3, 4}));
  }
  file.release("big");
  const tessera::TensorInfo& info = file.info("big");
  EXPECT_EQ(std::memcmp(info.bytes.data(), big.data(), info.bytes.size()), 0);
  const SafetensorsFile copy =
      SafetensorsFile::from_bytes(tessera::read_file<std::vector<std::byte>>(path));
  copy.release("big");
  EXPECT_EQ(copy.read<float>("big"), big);
}
// ---------------------------------------------------------------------------------------------
// Reader errors

class ReaderErrors : public SafetensorsTest {
 protected:
  void SetUp() override {
    path = dir / "model.safetensors";
    tessera::save_safetensors(
        path, {{"matrix", TensorData::from_matrix(tessera::Matrix<float>::Ones(3, 2))},
               {"vector", TensorData::from_vector(std::vector<float>{1, 2, 3, 4})},
               {"half", TensorData::from_vector(std::vector<float>{1}, DType::F16)},
               {"ids", TensorData::from_vector(std::vector<std::int32_t>{1, 2})},
               {"wide", TensorData::from_vector(std::vector<std::int64_t>{300})}});
  }
  fs::path path;
};

TEST_F(ReaderErrors, MissingTensor) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(error_of([&] { (void)file.info("nope"); }),
              HasSubstr("tensor 'nope' not found in " + path.string()));
  EXPECT_FALSE(file.contains("nope"));
}

TEST_F(ReaderErrors, WrongShape) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(
      error_of([&] { (void)file.read_matrix<float>("matrix", 2, 3); }),
      HasSubstr("tensor 'matrix' in " + path.string() + " has shape [3, 2], expected [2, 3]"));
  EXPECT_THAT(error_of([&] { (void)file.read_vector<float>("vector", 5); }),
              HasSubstr("has shape [4], expected [5]"));
  EXPECT_THAT(error_of([&] { (void)file.read_scalar<float>("vector"); }),
              HasSubstr("has shape [4], expected []"));
}

TEST_F(ReaderErrors, WrongRank) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(error_of([&] { (void)file.read_matrix<float>("vector"); }),
              HasSubstr("tensor 'vector' in " + path.string() +
                        " has shape [4], expected a matrix (rank 2)"));
  EXPECT_THAT(error_of([&] { (void)file.read_vector<float>("matrix"); }),
              HasSubstr("has shape [3, 2], expected a vector (rank 1)"));
}

TEST_F(ReaderErrors, FloatingScalarFromIntegerDtype) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(error_of([&] { (void)file.read<float>("ids"); }),
              HasSubstr("tensor 'ids' in " + path.string() +
                        " has dtype I32, which cannot be read as float"));
}

TEST_F(ReaderErrors, IntegerScalarFromFloatingDtype) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(error_of([&] { (void)file.read<int>("half"); }),
              HasSubstr("tensor 'half' in " + path.string() +
                        " has dtype F16, which cannot be read as int32"));
}

TEST_F(ReaderErrors, IntegerOutOfRange) {
  const auto file = SafetensorsFile::open(path);
  EXPECT_THAT(error_of([&] { (void)file.read<std::int8_t>("wide"); }),
              HasSubstr("tensor 'wide' in " + path.string() +
                        ": element 0 (value 300) does not fit in int8"));
  EXPECT_THAT(error_of([&] { (void)file.read<std::uint8_t>("wide"); }),
              HasSubstr("does not fit in uint8"));
}

// ---------------------------------------------------------------------------------------------
// Writer errors

TEST(Builders, RejectBadInput) {
  EXPECT_THAT(error_of([] {
                (void)TensorData::from_vector(std::vector<float>{1, 2, 3}, {2, 2});
              }),
              HasSubstr("shape [2, 2] needs 4 values, got 3"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<float>{1}, {-1}); }),
              HasSubstr("invalid shape [-1]"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<int>{300}, DType::I8); }),
              HasSubstr("element 0 (value 300) does not fit in I8"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<int>{-1}, DType::U8); }),
              HasSubstr("does not fit in U8"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<int>{2}, DType::BOOL); }),
              HasSubstr("does not fit in BOOL"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<float>{1}, DType::I32); }),
              HasSubstr("cannot store float values as I32"));
  EXPECT_THAT(error_of([] { (void)TensorData::from_vector(std::vector<int>{1}, DType::F32); }),
              HasSubstr("cannot store int32 values as F32"));
}

TEST_F(SafetensorsTest, SaveRejectsInconsistentTensor) {
  const fs::path path = dir / "bad.safetensors";
  TensorData broken{DType::F32, {2, 2}, std::vector<std::byte>(12)};
  EXPECT_THAT(error_of([&] {
                tessera::save_safetensors(path, {{"w", broken}});
              }),
              HasSubstr(path.string() +
                        ": tensor 'w' has 12 bytes but shape [2, 2] of dtype F32 needs 16"));
  TensorData negative{DType::F32, {-2}, {}};
  EXPECT_THAT(error_of([&] {
                tessera::save_safetensors(path, {{"w", negative}});
              }),
              HasSubstr("tensor 'w' has an invalid shape [-2]"));
  EXPECT_THAT(error_of([&] {
                tessera::save_safetensors(path, {{"__metadata__", TensorData::from_scalar(1.0f)}});
              }),
              HasSubstr("'__metadata__' is reserved"));
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(SafetensorsTest, SaveIntoMissingDirectoryNamesThePath) {
  const fs::path path = dir / "no" / "such" / "dir" / "w.safetensors";
  EXPECT_THAT(error_of([&] { tessera::save_safetensors(path, {}); }),
              HasSubstr(path.string() + ": cannot open"));
}

TEST_F(SafetensorsTest, SaveReplacesAtomicallyAndLeavesNoTemporary) {
  const fs::path path = dir / "w.safetensors";
  tessera::save_safetensors(path, {{"a", TensorData::from_scalar(1.0f)}});
  tessera::save_safetensors(path, {{"b", TensorData::from_scalar(2.0f)}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.names(), std::vector<std::string>{"b"});
  // A failed save leaves the previous file untouched.
  TensorData broken{DType::F32, {2}, std::vector<std::byte>(3)};
  EXPECT_THROW(tessera::save_safetensors(path, {{"c", broken}}), tessera::Error);
  EXPECT_EQ(SafetensorsFile::open(path).names(), std::vector<std::string>{"b"});
  int entries = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    ++entries;
    EXPECT_EQ(entry.path().filename(), "w.safetensors");
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(SafetensorsTest, SaveOverDirectoryFailsAndCleansUp) {
  const fs::path path = dir / "occupied";
  fs::create_directories(path / "inside");
  EXPECT_THAT(error_of([&] { tessera::save_safetensors(path, {}); }),
              HasSubstr(path.string() + ": is a directory, not a regular file"));
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1);  // only the directory, no temporary
}

// ---------------------------------------------------------------------------------------------
// Malformed files: one test per validation, each naming the file and the problem.

TEST_F(SafetensorsTest, MissingFile) {
  const fs::path path = dir / "absent.safetensors";
  EXPECT_THAT(open_error(path), HasSubstr(path.string() + ": cannot open"));
}

TEST_F(SafetensorsTest, DirectoryIsNotAFile) {
  EXPECT_THAT(open_error(dir.path()), HasSubstr(dir.path().string() + ": not a regular file"));
}

TEST_F(SafetensorsTest, EmptyFile) {
  const fs::path path = dir / "empty";
  write_bytes(path, "");
  EXPECT_THAT(
      open_error(path),
      HasSubstr(path.string() + ": file is 0 bytes, shorter than the 8-byte header length"));
}

TEST_F(SafetensorsTest, FileShorterThanEightBytes) {
  const fs::path path = dir / "short";
  write_bytes(path, "abcde");
  EXPECT_THAT(open_error(path),
              HasSubstr("file is 5 bytes, shorter than the 8-byte header length"));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  const fs::path path = dir / "long";
  write_bytes(path, u64_le(1000) + "{}");
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() + ": header length 1000 exceeds the file size (10 bytes)"));
  write_bytes(path, u64_le(std::numeric_limits<std::uint64_t>::max()) + "{}");
  EXPECT_THAT(open_error(path), HasSubstr("exceeds the file size"));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondLimit) {
  const std::string header = R"({"__metadata__":{"k":"a rather long value to exceed"}})";
  const fs::path path = write_file(dir, header, 0);
  tessera::SafetensorsLimits limits;
  limits.max_header_bytes = 16;
  EXPECT_THAT(open_error(path, limits),
              HasSubstr(path.string() + ": header length " + std::to_string(header.size()) +
                        " exceeds the limit of 16 bytes"));
  EXPECT_NO_THROW((void)SafetensorsFile::open(path));  // fine under the default 100 MB
  EXPECT_EQ(tessera::SafetensorsLimits{}.max_header_bytes, 100'000'000u);
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  const fs::path path = write_file(dir, R"({"a": )", 0);
  EXPECT_THAT(open_error(path), HasSubstr(path.string() + ": header is not valid JSON: "));
  EXPECT_THAT(open_error(write_file(dir, "", 0, "zero")), HasSubstr("header is not valid JSON"));
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  const fs::path path = write_file(dir, "[1, 2]", 0);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() + ": header is not a JSON object (got array)"));
}

// Values nested deeper than max_json_depth are refused, and never built: 100000 levels would
// overflow the stack when a message prints the value (nlohmann's dump recurses).
TEST_F(SafetensorsTest, HeaderNestedTooDeep) {
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  const fs::path path = write_file(dir, deep, 0);
  EXPECT_THAT(open_error(path), HasSubstr(path.string() + ": header: nested deeper than 64 levels"));
  const std::string ok = "{\"__metadata__\":{\"a\":\"b\"},\"x\":" + std::string(30, '[') +
                         std::string(30, ']') + "}";
  EXPECT_THAT(open_error(write_file(dir, ok, 0, "shallow")),
              HasSubstr("tensor 'x': entry is not a JSON object"));  // parsed, then refused
}

TEST_F(SafetensorsTest, DuplicateName) {
  const fs::path path = write_file(dir,
                                   R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                   R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                   2);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() + ": header: key \"w\" appears twice in one object"));
}

TEST_F(SafetensorsTest, EntryNotObject) {
  const fs::path path = write_file(dir, R"({"w": [1, 2]})", 0);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() + ": tensor 'w': entry is not a JSON object (got [1,2])"));
}

TEST_F(SafetensorsTest, EntryUnknownField) {
  const fs::path path = write_file(
      dir, R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"layout":"nchw"}})", 1);
  EXPECT_THAT(open_error(path), HasSubstr("tensor 'w': unknown field \"layout\""));
}

TEST_F(SafetensorsTest, MissingDtype) {
  const fs::path path = write_file(dir, R"({"w":{"shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_THAT(open_error(path), HasSubstr(path.string() + ": tensor 'w': missing \"dtype\""));
}

TEST_F(SafetensorsTest, MissingShape) {
  const fs::path path = write_file(dir, R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", 1);
  EXPECT_THAT(open_error(path), HasSubstr("tensor 'w': missing \"shape\""));
}

TEST_F(SafetensorsTest, MissingDataOffsets) {
  const fs::path path = write_file(dir, R"({"w":{"dtype":"U8","shape":[1]}})", 1);
  EXPECT_THAT(open_error(path), HasSubstr("tensor 'w': missing \"data_offsets\""));
}

TEST_F(SafetensorsTest, DtypeNotString) {
  const fs::path path = write_file(dir, R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_THAT(open_error(path), HasSubstr("tensor 'w': \"dtype\" must be a string, got 4"));
}

TEST_F(SafetensorsTest, UnknownDtype) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1);
  EXPECT_THAT(
      open_error(path),
      HasSubstr(path.string() + ": tensor 'w': unknown dtype 'F8_E4M3' (expected F64, F32"));
}

TEST_F(SafetensorsTest, ShapeNotArray) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"U8","shape":4,"data_offsets":[0,4]}})", 4);
  EXPECT_THAT(open_error(path),
              HasSubstr("tensor 'w': \"shape\" must be an array of non-negative integers, got 4"));
}

TEST_F(SafetensorsTest, ShapeNegative) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"U8","shape":[2,-1],"data_offsets":[0,2]}})", 2);
  EXPECT_THAT(open_error(path),
              HasSubstr("\"shape\" must be an array of non-negative integers, got [2,-1]"));
}

TEST_F(SafetensorsTest, ShapeNotInteger) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})", 2);
  EXPECT_THAT(open_error(path), HasSubstr("\"shape\" must be an array of non-negative integers"));
  const fs::path huge =
      write_file(dir, R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,2]}})",
                 2, "huge");
  EXPECT_THAT(open_error(huge), HasSubstr("\"shape\" must be an array of non-negative integers"));
}

TEST_F(SafetensorsTest, ShapeOverflows) {
  const fs::path path = write_file(
      dir, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
  EXPECT_THAT(open_error(path),
              HasSubstr("tensor 'w': shape [4294967296, 4294967296] of dtype F32 overflows"));
  // The element count fits but the byte count does not.
  const fs::path bytes = write_file(
      dir, R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}})", 0, "b");
  EXPECT_THAT(open_error(bytes), HasSubstr("overflows"));
}

TEST_F(SafetensorsTest, DataOffsetsMalformed) {
  for (const char* offsets : {"[0]", "[0,1,2]", "\"0-1\"", "[0,-1]", "[0.0,1]", "{}"}) {
    const fs::path path = write_file(
        dir, std::string(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":)") + offsets + "}}", 1);
    EXPECT_THAT(
        open_error(path),
        HasSubstr("tensor 'w': \"data_offsets\" must be [begin, end] with non-negative integers"))
        << offsets;
  }
}

TEST_F(SafetensorsTest, DataOffsetsReversed) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4);
  EXPECT_THAT(open_error(path), HasSubstr("tensor 'w': data_offsets [4, 0] have begin > end"));
}

TEST_F(SafetensorsTest, ByteSizeDoesNotMatchShape) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", 12);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() +
                        ": tensor 'w': data_offsets [0, 12] hold 12 bytes but shape [2] of dtype "
                        "F32 needs 8"));
}

TEST_F(SafetensorsTest, DataOffsetsOutOfBounds) {
  const fs::path path =
      write_file(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8);
  EXPECT_THAT(
      open_error(path),
      HasSubstr(
          "tensor 'w': data_offsets [4, 12] are out of bounds of the data section (8 bytes)"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const fs::path path = write_file(dir,
                                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   12);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() + ": tensors 'a' and 'b' overlap in the data section"));
  const fs::path same = write_file(dir,
                                   R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                                   4, "same");
  EXPECT_THAT(open_error(same), HasSubstr("overlap"));
}

TEST_F(SafetensorsTest, GapBetweenTensors) {
  const fs::path path = write_file(dir,
                                   R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                   12);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() +
                        ": bytes [4, 8) of the data section belong to no tensor (a gap before "
                        "tensor 'b')"));
}

TEST_F(SafetensorsTest, GapAtStart) {
  const fs::path path =
      write_file(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
  EXPECT_THAT(open_error(path), HasSubstr("bytes [0, 4) of the data section belong to no tensor"));
}

TEST_F(SafetensorsTest, TrailingBytes) {
  const fs::path path =
      write_file(dir, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 7);
  EXPECT_THAT(
      open_error(path),
      HasSubstr(path.string() +
                ": the data section has 7 bytes but the tensors cover only 4 (3 trailing bytes)"));
  const fs::path no_tensors = write_file(dir, "{}", 2, "none");
  EXPECT_THAT(open_error(no_tensors), HasSubstr("2 trailing bytes"));
}

TEST_F(SafetensorsTest, MetadataNotObject) {
  const fs::path path = write_file(dir, R"({"__metadata__":["a"]})", 0);
  EXPECT_THAT(open_error(path),
              HasSubstr(path.string() +
                        ": __metadata__ must be an object mapping strings to strings, got array"));
}

TEST_F(SafetensorsTest, MetadataValueNotString) {
  const fs::path path = write_file(dir, R"({"__metadata__":{"ok":"yes","epoch":3}})", 0);
  EXPECT_THAT(open_error(path),
              HasSubstr("__metadata__ must map strings to strings; key 'epoch' has a number (3)"));
}

TEST_F(SafetensorsTest, HeaderWithSurroundingWhitespaceIsAccepted) {
  const fs::path path =
      write_file(dir, "  {\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}    ", 1);
  EXPECT_EQ(SafetensorsFile::open(path).read<int>("a"), std::vector<int>{1});
}

// ---------------------------------------------------------------------------------------------
// Robustness: truncations and random corruptions of a valid file either open or throw
// tessera::Error (run under -fsanitize=address,undefined too).

TEST_F(SafetensorsTest, CorruptedFilesNeverCrash) {
  const fs::path good = dir / "good.safetensors";
  tessera::save_safetensors(good,
                            {{"a", TensorData::from_matrix(tessera::Matrix<float>::Random(3, 4))},
                             {"b", TensorData::from_vector(std::vector<std::int64_t>{1, 2, 3})},
                             {"c", TensorData::from_scalar(0.5, DType::BF16)}},
                            {{"k", "v"}});
  const std::string bytes = read_bytes(good);
  // In memory the buffer has the exact size, so the sanitizers see any read past its end.
  const auto try_open = [&](const std::string& content) {
    std::vector<std::byte> buffer(content.size());
    if (!content.empty()) std::memcpy(buffer.data(), content.data(), content.size());
    try {
      const auto file = SafetensorsFile::from_bytes(std::move(buffer), "corrupt");
      for (const auto& name : file.names()) {
        if (tessera::is_floating(file.info(name).dtype)) {
          (void)file.read<double>(name);
        } else {
          (void)file.read<std::int64_t>(name);
        }
      }
    } catch (const tessera::Error&) {
      // expected for most corruptions
    }
  };
  try_open(bytes);
  for (std::size_t length = 0; length < bytes.size(); ++length) try_open(bytes.substr(0, length));
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 20000; ++trial) {
    std::string mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      mutated[rng() % mutated.size()] = static_cast<char>(rng() % 256);
    }
    try_open(mutated);
  }
  // Through the file system as well, for the mapped path.
  const fs::path path = dir / "truncated.safetensors";
  for (std::size_t length = 0; length < bytes.size(); length += 7) {
    write_bytes(path, bytes.substr(0, length));
    EXPECT_THROW((void)SafetensorsFile::open(path), tessera::Error) << length;
  }
}

TEST_F(SafetensorsTest, FromBytesValidatesLikeOpen) {
  const fs::path path = dir / "m.safetensors";
  tessera::save_safetensors(path, {{"w", TensorData::from_vector(std::vector<float>{1, -1})}});
  const std::string bytes = read_bytes(path);
  std::vector<std::byte> buffer(bytes.size());
  std::memcpy(buffer.data(), bytes.data(), bytes.size());
  const SafetensorsFile file = SafetensorsFile::from_bytes(buffer, "embedded");
  EXPECT_FALSE(file.is_mapped());
  EXPECT_EQ(file.read<float>("w"), (std::vector<float>{1, -1}));
  buffer.push_back(std::byte{0});
  EXPECT_THAT(error_of([&] { (void)SafetensorsFile::from_bytes(buffer, "embedded"); }),
              HasSubstr("embedded: the data section has 9 bytes but the tensors cover only 8"));
  EXPECT_THAT(error_of([] { (void)SafetensorsFile::from_bytes({}); }),
              HasSubstr("<memory>: file is 0 bytes, shorter than the 8-byte header length"));
}

TEST_F(SafetensorsTest, SaveRejectsInvalidUtf8Names) {
  const fs::path path = dir / "utf8.safetensors";
  EXPECT_THAT(error_of([&] {
                tessera::save_safetensors(path, {{"bad\xff", TensorData::from_scalar(1.0f)}});
              }),
              HasSubstr(path.string() + ": tensor names and metadata must be valid UTF-8"));
  EXPECT_FALSE(fs::exists(path));
}

// ---------------------------------------------------------------------------------------------
// The checksum "tessera.crc32" (docs/model-files.md, "Checksum")

std::vector<std::byte> as_bytes(const std::string& text) {
  std::vector<std::byte> out(text.size());
  if (!text.empty()) std::memcpy(out.data(), text.data(), text.size());
  return out;
}

std::string as_string(const std::vector<std::byte>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// The checksum of a file computed from its raw bytes with zlib directly, following the
// definition in docs/model-files.md rather than tessera's own helpers.
std::string crc32_from_the_definition(const std::string& file) {
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(file[i]);
  auto header = nlohmann::json::parse(file.substr(8, header_size));
  const auto metadata = header.value("__metadata__", nlohmann::json::object());
  header.erase("__metadata__");
  const std::string data = file.substr(8 + header_size);
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto feed = [&](const std::string& bytes) {
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size()));
  };
  feed(data);
  for (const auto& [name, entry] : header.items()) {  // nlohmann's object: sorted by key
    std::string shape;
    for (const auto& dim : entry["shape"]) {
      shape += (shape.empty() ? "" : ",") + std::to_string(dim.get<std::int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    feed(name + '\0' + entry["dtype"].get<std::string>() + '\0' + shape + '\0' +
         std::to_string(offsets[0].get<std::uint64_t>()) + ',' +
         std::to_string(offsets[1].get<std::uint64_t>()) + '\0');
  }
  for (const auto& [key, value] : metadata.items()) {
    if (key != "tessera.crc32") feed(key + '\0' + value.get<std::string>() + '\0');
  }
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

std::map<std::string, TensorData> checksum_tensors() {
  tessera::Matrix<float> w(3, 4);
  w << 1, -2, 3.5f, 0.25f, 1e-3f, 7, -8, 9, 10, -11, 12.5f, 1e6f;
  return {{"w", TensorData::from_matrix(w)},
          {"ids", TensorData::from_vector(std::vector<std::int64_t>{1, 2, 3})},
          {"scale", TensorData::from_scalar(0.5, DType::BF16)}};
}

TEST_F(SafetensorsTest, ChecksumIsWrittenOnRequestAndVerifiedOnOpen) {
  const fs::path plain = dir / "plain.safetensors";
  const fs::path summed = dir / "summed.safetensors";
  tessera::save_safetensors(plain, checksum_tensors(), {{"k", "v"}});
  tessera::save_safetensors(summed, checksum_tensors(), {{"k", "v"}}, tessera::Checksum::crc32);

  const auto without = SafetensorsFile::open(plain);
  EXPECT_FALSE(without.has_checksum());
  EXPECT_EQ(without.metadata().count("tessera.crc32"), 0u);

  const auto with = SafetensorsFile::open(summed);
  EXPECT_TRUE(with.has_checksum());
  const std::string value = with.metadata().at("tessera.crc32");
  EXPECT_THAT(value, ::testing::MatchesRegex("[0-9a-f]{8}"));
  EXPECT_EQ(value, crc32_from_the_definition(read_bytes(summed)));
  EXPECT_EQ(with.metadata().at("k"), "v");
  EXPECT_EQ(with.tensor_data("w"), checksum_tensors().at("w"));

  // safetensors_bytes is the same file, in memory
  const auto in_memory = tessera::safetensors_bytes(checksum_tensors(), {{"k", "v"}},
                                                    tessera::Checksum::crc32);
  EXPECT_EQ(in_memory, as_bytes(read_bytes(summed)));
}

TEST_F(SafetensorsTest, ChecksumMatchesPythonsZlibCrc32) {
  // The value from Python, computed from the definition without tessera:
  //   data = struct.pack('<2f', 1.0, -2.5) + struct.pack('<q', 7)
  //   c = zlib.crc32(data)
  //   for f in ['a', 'F32', '2', '0,8', 'b', 'I64', '', '8,16', 'note', 'caf\u00e9']:
  //       c = zlib.crc32((f + '\0').encode(), c)
  //   '%08x' % c  ->  'a1fc7ad8'
  const fs::path path = dir / "python.safetensors";
  tessera::save_safetensors(path,
                            {{"a", TensorData::from_vector(std::vector<float>{1.0f, -2.5f})},
                             {"b", TensorData::from_scalar(std::int64_t{7})}},
                            {{"note", "caf\u00e9"}}, tessera::Checksum::crc32);
  EXPECT_EQ(SafetensorsFile::open(path).metadata().at("tessera.crc32"), "a1fc7ad8");
}

TEST_F(SafetensorsTest, FlippedBitInTheDataIsRefusedNamingTheFile) {
  const fs::path path = dir / "weights.safetensors";
  tessera::save_safetensors(path, checksum_tensors(), {}, tessera::Checksum::crc32);
  const std::string good = read_bytes(path);
  const std::string expected = crc32_from_the_definition(good);
  std::string bad = good;
  bad[bad.size() - 5] ^= 0x10;  // in the data section (the last tensor, 'w')
  write_bytes(path, bad);
  const std::string error = open_error(path);
  EXPECT_THAT(error, HasSubstr(path.string() + ": checksum mismatch: metadata 'tessera.crc32' is " +
                               expected + " but the contents give "));
  EXPECT_THAT(error, HasSubstr("the file changed after it was written"));
  EXPECT_THAT(error, ::testing::Not(HasSubstr("\n")));
  // the same through from_bytes
  EXPECT_THAT(error_of([&] { (void)SafetensorsFile::from_bytes(as_bytes(bad), "image"); }),
              HasSubstr("image: checksum mismatch"));
}

TEST_F(SafetensorsTest, NoOneBitChangeOfAChecksummedFileChangesWhatIsRead) {
  // Data, tensor table and metadata are all covered: a single flipped bit anywhere in the
  // file breaks the format, changes what the checksum covers (refused), or breaks the entry
  // itself (its value: refused; its key: a file without a checksum, which a checkpoint reader
  // refuses). A file still accepted with its checksum must read exactly as the original (a
  // padding space turned NUL ends the JSON text early, which changes nothing read).
  const std::map<std::string, std::string> metadata{{"step", "4"}, {"note", "x"}};
  const std::string good =
      as_string(tessera::safetensors_bytes(checksum_tensors(), metadata, tessera::Checksum::crc32));
  const auto original = SafetensorsFile::from_bytes(as_bytes(good));
  ASSERT_TRUE(original.has_checksum());
  int refused = 0;
  for (std::size_t byte = 0; byte < good.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
      try {
        const auto file = SafetensorsFile::from_bytes(as_bytes(bad), "flipped");
        if (!file.has_checksum()) {
          ++refused;
          continue;
        }
        EXPECT_EQ(file.metadata(), original.metadata()) << "byte " << byte << " bit " << bit;
        ASSERT_EQ(file.names(), original.names()) << "byte " << byte << " bit " << bit;
        for (const auto& name : file.names()) {
          EXPECT_EQ(file.tensor_data(name), original.tensor_data(name))
              << "byte " << byte << " bit " << bit;
        }
      } catch (const tessera::Error&) {
        ++refused;
      }
    }
  }
  // everything but the (at most 7) spaces that pad the header
  EXPECT_GE(refused, static_cast<int>(8 * good.size()) - 7);
}

TEST_F(SafetensorsTest, ChecksumIgnoresJsonSpacingAndKeyOrder) {
  // Another tool writing the same tensors and metadata with other JSON keeps it valid.
  const std::string good = as_string(
      tessera::safetensors_bytes(checksum_tensors(), {{"k", "v"}}, tessera::Checksum::crc32));
  std::uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(good[i]);
  const std::string header = nlohmann::json::parse(good.substr(8, header_size)).dump(2);
  const std::string other = u64_le(header.size()) + header + good.substr(8 + header_size);
  const auto file = SafetensorsFile::from_bytes(as_bytes(other), "respaced");
  EXPECT_TRUE(file.has_checksum());
}

TEST_F(SafetensorsTest, MalformedChecksumEntryIsRefused) {
  for (const std::string value : {"", "1234567", "123456789", "0000000g", "A1FC7AD8", " 1fc7ad8"}) {
    const fs::path path = write_file(
        dir, R"({"__metadata__":{"tessera.crc32":")" + value + R"("}})", 0);
    EXPECT_THAT(open_error(path),
                HasSubstr(path.string() + ": metadata 'tessera.crc32' is '" + value +
                          "', expected 8 lowercase hex digits"))
        << value;
  }
}

TEST_F(SafetensorsTest, WriterReplacesOrDropsAGivenChecksumEntry) {
  // Metadata copied from another file carries that file's checksum: the writer sets its own,
  // or drops it without Checksum::crc32, so the file written is always readable.
  const std::map<std::string, std::string> copied{{"k", "v"}, {"tessera.crc32", "00000000"}};
  const fs::path summed = dir / "summed.safetensors";
  const fs::path plain = dir / "plain.safetensors";
  tessera::save_safetensors(summed, checksum_tensors(), copied, tessera::Checksum::crc32);
  tessera::save_safetensors(plain, checksum_tensors(), copied);
  EXPECT_EQ(SafetensorsFile::open(summed).metadata().at("tessera.crc32"),
            crc32_from_the_definition(read_bytes(summed)));
  EXPECT_EQ(SafetensorsFile::open(plain).metadata(),
            (std::map<std::string, std::string>{{"k", "v"}}));
}

TEST_F(SafetensorsTest, EmptyFileWithAChecksum) {
  const auto bytes = tessera::safetensors_bytes({}, {}, tessera::Checksum::crc32);
  const auto file = SafetensorsFile::from_bytes(bytes);
  EXPECT_TRUE(file.has_checksum());
  EXPECT_EQ(file.metadata().at("tessera.crc32"), "00000000");  // CRC-32 of nothing
}

}  // namespace
