// The int8 and bfloat16 products (detail/quantized_matmul.hpp) and their run-time path choice
// (detail/cpu.hpp): each path against a double reference built from the same quantized values,
// every path the CPU has bit for bit equal to the scalar one, 1 and 2 threads alike, odd
// shapes, accumulate and bias, the weight classes' round trips, and the errors. A path this CPU
// lacks is skipped, saying so.

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/quantized_matmul.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace tessera {
namespace test_quantized_kernels {

using detail::BF16Rows;
using detail::Int8Rows;
using detail::KernelPath;
using test::error_of;

// Shapes [L, in, out] that leave remainders everywhere: in not a multiple of 4 / 32 / 64, out
// not a multiple of 16 or of the avx512 block's 64 rows, L not a multiple of the blocks' 4 and 6
// tokens, and the edges L = 0, L = 1, in = 1.
struct Shape {
  Index length, in, out;
};
const std::vector<Shape> odd_shapes = {{0, 5, 7},    {1, 1, 1},    {1, 37, 17},  {7, 64, 16},
                                       {13, 100, 33}, {19, 129, 70}, {6, 3, 130}, {25, 250, 97}};

// The tolerance of a quantized product against its double reference built from the same
// quantized inputs: float roundings of sums of a few hundred terms.
constexpr double reference_atol = 1e-5, reference_rtol = 1e-5;

Matrix<float> gaussian(Index rows, Index cols, unsigned seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  Matrix<float> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

// Bitwise equality of two float matrices; on failure the first mismatches.
::testing::AssertionResult same_bits(const Matrix<float>& a, const Matrix<float>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shapes differ";
  }
  int mismatches = 0;
  std::string report;
  for (Index i = 0; i < a.size(); ++i) {
    if (std::memcmp(a.data() + i, b.data() + i, sizeof(float)) == 0) continue;
    if (mismatches < 5) {
      report += "\n  at " + std::to_string(i / a.cols()) + ", " + std::to_string(i % a.cols()) +
                ": " + std::to_string(a.data()[i]) + " vs " + std::to_string(b.data()[i]);
    }
    ++mismatches;
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " outputs differ" << report;
}

const char* int8_needs(KernelPath path) {
  return path == KernelPath::avx512 ? "AVX-512 VNNI" : "AVX2 and FMA";
}
const char* bf16_needs(KernelPath path) {
  return path == KernelPath::avx512 ? "AVX-512 BF16" : "AVX2 and FMA";
}

// ---- Path choice --------------------------------------------------------------------------

TEST(QuantizedKernels, path_names_and_choice) {
  EXPECT_STREQ(detail::kernel_path_name(KernelPath::scalar), "scalar");
  EXPECT_STREQ(detail::kernel_path_name(KernelPath::avx2), "avx2");
  EXPECT_STREQ(detail::kernel_path_name(KernelPath::avx512), "avx512");
  EXPECT_TRUE(detail::cpu_supports_int8(KernelPath::scalar));
  EXPECT_TRUE(detail::cpu_supports_bf16(KernelPath::scalar));
  EXPECT_TRUE(detail::cpu_supports_int8(detail::int8_kernel_path()));
  EXPECT_TRUE(detail::cpu_supports_bf16(detail::bf16_kernel_path()));

  const auto choose = [](const char* requested, KernelPath best) {
    return detail::choose_kernel_path(requested, best, "int8", "avx2 fma");
  };
  EXPECT_EQ(choose(nullptr, KernelPath::avx2), KernelPath::avx2);
  EXPECT_EQ(choose("", KernelPath::avx2), KernelPath::avx2);
  EXPECT_EQ(choose("scalar", KernelPath::avx2), KernelPath::scalar);
  EXPECT_EQ(choose("avx2", KernelPath::avx2), KernelPath::avx2);
  EXPECT_EQ(choose("avx512", KernelPath::avx512), KernelPath::avx512);

  const std::string too_high = error_of([&] { choose("avx512", KernelPath::avx2); });
  EXPECT_NE(too_high.find("TESSERA_CPU=avx512"), std::string::npos) << too_high;
  EXPECT_NE(too_high.find("avx2 fma"), std::string::npos) << too_high;
  const std::string unknown = error_of([&] { choose("sse9", KernelPath::avx512); });
  EXPECT_NE(unknown.find("TESSERA_CPU=sse9"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("scalar, avx2 or avx512"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("avx2 fma"), std::string::npos) << unknown;
}

TEST(QuantizedKernels, missing_path_throws) {
  const Int8Rows w = Int8Rows::quantize(gaussian(16, 8, 1));
  const BF16Rows wb = BF16Rows::round(gaussian(16, 8, 1));
  const Matrix<float> x = gaussian(2, 8, 2);
  Matrix<float> y(2, 16);
  bool lacking = false;
  for (const KernelPath path : detail::kernel_paths) {
    if (!detail::cpu_supports_int8(path)) {
      lacking = true;
      const std::string message = error_of([&] { detail::int8_matmul(y, x, w, nullptr, false, path); });
      EXPECT_NE(message.find(detail::kernel_path_name(path)), std::string::npos) << message;
    }
    if (!detail::cpu_supports_bf16(path)) {
      lacking = true;
      EXPECT_FALSE(error_of([&] { detail::bf16_matmul(y, x, wb, nullptr, false, path); }).empty());
    }
  }
  if (!lacking) GTEST_SKIP() << "this CPU has every path (" << detail::cpu_features().list() << ")";
}

// ---- Int8Rows ------------------------------------------------------------------------------

TEST(QuantizedKernels, int8_rows_quantize) {
  Matrix<float> w(3, 5);
  w << 127.0f, 0.5f, 1.5f, 2.5f, -1.5f,  // scale 1: halves round to even
      0, 0, 0, 0, 0,                      // all zero: scale 0, values 0
      -3.0f, 1.5f, 0.01f, 0, 0;
  const Int8Rows q = Int8Rows::quantize(w);
  EXPECT_EQ(q.rows(), 3);
  EXPECT_EQ(q.cols(), 5);
  EXPECT_FALSE(q.empty());
  EXPECT_EQ(q.scale()[0], 1.0f);
  EXPECT_EQ(q.scale()[1], 0.0f);
  EXPECT_EQ(q.scale()[2], 3.0f / 127.0f);
  const Matrix<std::int8_t> v = q.values();
  EXPECT_EQ(v.row(0), (Matrix<std::int8_t>(1, 5) << 127, 0, 2, 2, -2).finished());
  EXPECT_EQ(v.row(1), Matrix<std::int8_t>::Zero(1, 5));
  EXPECT_EQ(v(2, 0), -127);
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c = 0; c < w.cols(); ++c) {
      const float s = q.scale()[r];
      const double expected = s == 0.0f ? 0.0 : std::nearbyint(static_cast<double>(w(r, c) / s));
      EXPECT_EQ(v(r, c), static_cast<std::int8_t>(expected)) << r << ", " << c;
    }
  }
  // half a step of the coarsest row (row 0's step is 1)
  EXPECT_TRUE(test::all_close(q.dequantize(), w, 0.5 + 1e-6, 0.0));
}

TEST(QuantizedKernels, int8_rows_round_trip) {
  const Int8Rows q = Int8Rows::quantize(gaussian(37, 45, 3));
  const Int8Rows back(q.values(), q.scale());
  ASSERT_EQ(back.bytes(), q.bytes());
  EXPECT_EQ(std::memcmp(back.packed(), q.packed(), static_cast<std::size_t>(48 * 48)), 0);
  EXPECT_EQ(std::memcmp(back.offset_sums(), q.offset_sums(), 48 * sizeof(std::int32_t)), 0);
  EXPECT_EQ(back.values(), q.values());
  EXPECT_EQ(back.scale(), q.scale());

  // a ViT-B/16 FFN weight in about a quarter of its float bytes
  const Int8Rows big = Int8Rows::quantize(Matrix<float>::Zero(3072, 768));
  EXPECT_LT(static_cast<double>(big.bytes()), 3072.0 * 768 * sizeof(float) / 3.9);
  EXPECT_TRUE(Int8Rows().empty());
}

TEST(QuantizedKernels, int8_rows_errors) {
  Matrix<std::int8_t> values = Matrix<std::int8_t>::Ones(2, 3);
  Vector<float> scale = Vector<float>::Ones(2);
  EXPECT_NE(error_of([&] { Int8Rows(values, Vector<float>::Ones(3)); }).find("one scale per row"),
            std::string::npos);
  scale[1] = -1.0f;
  EXPECT_NE(error_of([&] { Int8Rows(values, scale); }).find("scale[1] = -1"), std::string::npos);
  scale[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { Int8Rows(values, scale); }).find("scale[1]"), std::string::npos);
  scale[1] = 1.0f;
  values(1, 2) = -128;
  EXPECT_NE(error_of([&] { Int8Rows(values, scale); }).find("value (1, 2) = -128"),
            std::string::npos);

  Matrix<float> w = Matrix<float>::Ones(3, 4);
  w(2, 1) = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { Int8Rows::quantize(w); }).find("weight (2, 1)"), std::string::npos);
  w(2, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { BF16Rows::round(w); }).find("weight (2, 1)"), std::string::npos);
}

// ---- int8 products -------------------------------------------------------------------------

// The int8 product by its definition: activations quantized by quantize_row, integer sums in
// 64 bits, the epilogue fma. `exact` gets those bits; `reference` the same sums scaled in double.
void int8_reference(const Matrix<float>& x, const Int8Rows& w, const Vector<float>* bias,
                    bool accumulate, const Matrix<float>& old, Matrix<float>& exact,
                    Matrix<double>& reference) {
  const Matrix<std::int8_t> values = w.values();
  exact.resize(x.rows(), w.rows());
  reference.resize(x.rows(), w.rows());
  std::vector<std::int8_t> q(static_cast<std::size_t>(x.cols()));
  for (Index t = 0; t < x.rows(); ++t) {
    const float s = detail::quantize_row(x.row(t).data(), x.cols(), q.data());
    for (Index r = 0; r < w.rows(); ++r) {
      std::int64_t sum = 0;
      for (Index c = 0; c < x.cols(); ++c) sum += q[static_cast<std::size_t>(c)] * values(r, c);
      float base = accumulate ? old(t, r) : 0.0f;
      if (bias != nullptr) base = accumulate ? base + (*bias)[r] : (*bias)[r];
      exact(t, r) = std::fma(static_cast<float>(sum), s * w.scale()[r], base);
      reference(t, r) = (accumulate ? old(t, r) : 0.0) + (bias ? (*bias)[r] : 0.0) +
                        static_cast<double>(sum) * s * w.scale()[r];
    }
  }
}

TEST(QuantizedKernels, int8_matches_reference_on_every_path) {
  unsigned seed = 10;
  for (const Shape& shape : odd_shapes) {
    const Matrix<float> x = gaussian(shape.length, shape.in, ++seed);
    const Int8Rows w = Int8Rows::quantize(gaussian(shape.out, shape.in, ++seed, 0.05f));
    const Vector<float> bias = gaussian(shape.out, 1, ++seed);
    const Matrix<float> old = gaussian(shape.length, shape.out, ++seed);
    for (const bool accumulate : {false, true}) {
      for (const Vector<float>* b : {static_cast<const Vector<float>*>(nullptr), &bias}) {
        SCOPED_TRACE(::testing::Message() << "L " << shape.length << ", in " << shape.in
                                          << ", out " << shape.out << ", accumulate "
                                          << accumulate << ", bias " << (b != nullptr));
        Matrix<float> exact;
        Matrix<double> reference;
        int8_reference(x, w, b, accumulate, old, exact, reference);
        for (const KernelPath path : detail::kernel_paths) {
          if (!detail::cpu_supports_int8(path)) continue;
          SCOPED_TRACE(detail::kernel_path_name(path));
          // poisoned where it is overwritten, the old values where it accumulates
          Matrix<float> y = accumulate ? old
                                       : Matrix<float>::Constant(
                                             shape.length, shape.out,
                                             std::numeric_limits<float>::quiet_NaN());
          detail::int8_matmul(y, x, w, b, accumulate, path);
          EXPECT_TRUE(same_bits(y, exact));
          EXPECT_TRUE(test::all_close(y, reference, reference_atol, reference_rtol));
        }
      }
    }
  }
}

// Each path the CPU lacks, named by a skipped test.
class Int8Path : public ::testing::TestWithParam<KernelPath> {};

TEST_P(Int8Path, same_bits_as_scalar_on_1_and_2_threads) {
  const KernelPath path = GetParam();
  if (!detail::cpu_supports_int8(path)) {
    GTEST_SKIP() << "this CPU has no " << int8_needs(path) << ": the "
                 << detail::kernel_path_name(path)
                 << " int8 path is compiled but not run here";
  }
  // 4 tiles of [304, 272] (detail::matmul_tiles), the last ones partial
  const Matrix<float> x = gaussian(600, 90, 30);
  const Int8Rows w = Int8Rows::quantize(gaussian(530, 90, 31, 0.1f));
  const Vector<float> bias = gaussian(530, 1, 32);
  Matrix<float> scalar(600, 530);
  detail::int8_matmul(scalar, x, w, &bias, false, KernelPath::scalar);
  for (const int threads : {1, 2}) {
    const ScopedThreads scoped(threads);
    Matrix<float> y(600, 530);
    detail::int8_matmul(y, x, w, &bias, false, path);
    EXPECT_TRUE(same_bits(y, scalar)) << threads << " threads";
  }
  // inside a parallel region: in the calling thread, the same bits
  Matrix<float> y(600, 530);
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    detail::int8_matmul(y, x, w, &bias, false, path);
  }
  EXPECT_TRUE(same_bits(y, scalar)) << "inside a parallel region";
}

INSTANTIATE_TEST_SUITE_P(QuantizedKernels, Int8Path,
                         ::testing::Values(KernelPath::scalar, KernelPath::avx2,
                                           KernelPath::avx512),
                         [](const auto& info) { return detail::kernel_path_name(info.param); });

TEST(QuantizedKernels, int8_close_to_float) {
  // Gaussian activations and weights of a ViT-B/16 layer's width: the int8 product's error
  // against the float one, relative in the Frobenius norm (about 1 %: two roundings of 1/254 of
  // each row's largest value)
  const Matrix<float> x = gaussian(64, 768, 40);
  const Matrix<float> w = gaussian(256, 768, 41, 0.02f);
  Matrix<float> y(64, 256);
  detail::int8_matmul(y, x, Int8Rows::quantize(w), nullptr, false);
  const Matrix<float> expected = x * w.transpose();
  const double relative = (y - expected).norm() / expected.norm();
  RecordProperty("int8_relative_error", std::to_string(relative));
  std::printf("int8 vs float relative error (Frobenius): %.4g\n", relative);
  EXPECT_LT(relative, 0.02);
}

TEST(QuantizedKernels, int8_input_errors) {
  const Int8Rows w = Int8Rows::quantize(gaussian(20, 10, 50));
  Matrix<float> x = gaussian(4, 10, 51);
  Matrix<float> y(4, 20);
  x(2, 7) = std::numeric_limits<float>::quiet_NaN();
  for (const KernelPath path : detail::kernel_paths) {
    if (!detail::cpu_supports_int8(path)) continue;
    const std::string message = error_of([&] { detail::int8_matmul(y, x, w, nullptr, false, path); });
    EXPECT_NE(message.find("input row 2"), std::string::npos) << message;
  }
  x(2, 7) = -std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { detail::int8_matmul(y, x, w, nullptr, false); }).find("input row 2"),
            std::string::npos);
  x(2, 7) = 0.0f;

  const Matrix<float> wrong_in = gaussian(4, 11, 52);
  EXPECT_NE(error_of([&] { detail::int8_matmul(y, wrong_in, w, nullptr, false); })
                .find("expected 10 input columns"),
            std::string::npos);
  Matrix<float> wrong_out(4, 21);
  EXPECT_NE(error_of([&] { detail::int8_matmul(wrong_out, x, w, nullptr, false); })
                .find("expected [4, 20]"),
            std::string::npos);
  const Vector<float> wrong_bias = Vector<float>::Zero(19);
  EXPECT_NE(error_of([&] { detail::int8_matmul(y, x, w, &wrong_bias, false); }).find("bias [19]"),
            std::string::npos);
}

// ---- bfloat16 products ---------------------------------------------------------------------

TEST(QuantizedKernels, bf16_rounding_is_eigens) {
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, -2.5e-39f,
                               std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(),
                               -std::numeric_limits<float>::quiet_NaN()};
  const Matrix<float> random = gaussian(1, 4000, 60, 100.0f);
  values.insert(values.end(), random.data(), random.data() + random.size());
  for (const float v : values) {
    const BFloat16 eigen = static_cast<BFloat16>(v);
    std::uint16_t bits;
    std::memcpy(&bits, &eigen, sizeof bits);
    EXPECT_EQ(detail::bf16_bits(v), bits) << v;
  }
}

TEST(QuantizedKernels, bf16_rows_round_trip) {
  const Matrix<float> w = gaussian(35, 21, 61);
  const BF16Rows b = BF16Rows::round(w);
  EXPECT_EQ(b.rows(), 35);
  EXPECT_EQ(b.cols(), 21);
  EXPECT_EQ(b.values(), w.cast<BFloat16>());
  EXPECT_EQ(b.dequantize(), w.cast<BFloat16>().cast<float>());
  const BF16Rows back(b.values());
  ASSERT_EQ(back.bytes(), b.bytes());
  EXPECT_EQ(std::memcmp(back.packed(), b.packed(), b.bytes()), 0);
  EXPECT_TRUE(BF16Rows().empty());
}

TEST(QuantizedKernels, bf16_matches_reference_on_every_path) {
  unsigned seed = 70;
  for (const Shape& shape : odd_shapes) {
    const Matrix<float> x = gaussian(shape.length, shape.in, ++seed);
    const BF16Rows w = BF16Rows::round(gaussian(shape.out, shape.in, ++seed, 0.05f));
    const Vector<float> bias = gaussian(shape.out, 1, ++seed);
    const Matrix<float> old = gaussian(shape.length, shape.out, ++seed);
    const Matrix<double> xr = x.cast<BFloat16>().cast<double>();
    const Matrix<double> wr = w.dequantize().cast<double>();
    for (const bool accumulate : {false, true}) {
      for (const Vector<float>* b : {static_cast<const Vector<float>*>(nullptr), &bias}) {
        SCOPED_TRACE(::testing::Message() << "L " << shape.length << ", in " << shape.in
                                          << ", out " << shape.out << ", accumulate "
                                          << accumulate << ", bias " << (b != nullptr));
        Matrix<double> reference = xr * wr.transpose();
        if (accumulate) reference += old.cast<double>();
        if (b != nullptr) reference.rowwise() += b->cast<double>().transpose();
        Matrix<float> scalar;
        for (const KernelPath path : detail::kernel_paths) {
          if (!detail::cpu_supports_bf16(path)) continue;
          SCOPED_TRACE(detail::kernel_path_name(path));
          Matrix<float> y = accumulate ? old
                                       : Matrix<float>::Constant(
                                             shape.length, shape.out,
                                             std::numeric_limits<float>::quiet_NaN());
          detail::bf16_matmul(y, x, w, b, accumulate, path);
          EXPECT_TRUE(test::all_close(y, reference, reference_atol, reference_rtol));
          if (path == KernelPath::scalar) {
            scalar = y;
          } else {
            EXPECT_TRUE(same_bits(y, scalar));
          }
        }
      }
    }
  }
}

class BF16Path : public ::testing::TestWithParam<KernelPath> {};

TEST_P(BF16Path, same_bits_as_scalar_on_1_and_2_threads) {
  const KernelPath path = GetParam();
  if (!detail::cpu_supports_bf16(path)) {
    GTEST_SKIP() << "this CPU has no " << bf16_needs(path) << ": the "
                 << detail::kernel_path_name(path)
                 << " bf16 path is compiled but not run here";
  }
  const Matrix<float> x = gaussian(600, 90, 80);
  const BF16Rows w = BF16Rows::round(gaussian(530, 90, 81, 0.1f));
  const Vector<float> bias = gaussian(530, 1, 82);
  Matrix<float> scalar(600, 530);
  detail::bf16_matmul(scalar, x, w, &bias, false, KernelPath::scalar);
  for (const int threads : {1, 2}) {
    const ScopedThreads scoped(threads);
    Matrix<float> y(600, 530);
    detail::bf16_matmul(y, x, w, &bias, false, path);
    EXPECT_TRUE(same_bits(y, scalar)) << threads << " threads";
  }
}

INSTANTIATE_TEST_SUITE_P(QuantizedKernels, BF16Path,
                         ::testing::Values(KernelPath::scalar, KernelPath::avx2,
                                           KernelPath::avx512),
                         [](const auto& info) { return detail::kernel_path_name(info.param); });

TEST(QuantizedKernels, bf16_close_to_float) {
  // bfloat16 keeps 8 significant bits: about 0.3 % a value, less on sums of many products
  const Matrix<float> x = gaussian(64, 768, 90);
  const Matrix<float> w = gaussian(256, 768, 91, 0.02f);
  Matrix<float> y(64, 256);
  detail::bf16_matmul(y, x, BF16Rows::round(w), nullptr, false);
  const Matrix<float> expected = x * w.transpose();
  const double relative = (y - expected).norm() / expected.norm();
  std::printf("bf16 vs float relative error (Frobenius): %.4g\n", relative);
  EXPECT_LT(relative, 0.01);
}

}  // namespace test_quantized_kernels
}  // namespace tessera
