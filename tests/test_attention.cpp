// The fused attention kernel (nn::attention_fused) against the plain one
// (nn::attention_reference, itself checked against PyTorch in test_nn.cpp) on shapes that
// cross its tiles: long sequences, packed segments of odd lengths, causal ranges that start
// and end inside tiles (and hide whole tiles), cross attention, large scores; float within
// 1e-5 of the float reference, double within 1e-12 of the double one; bitwise identical for
// one and two threads. With k and v stored in bfloat16 (nn::KVPrecision), the kernel equals
// itself on k and v rounded to bfloat16 beforehand, bit for bit, and its error against float
// storage stays within the bound docs/encoder.md gives. With bfloat16 products
// (KVPrecision::bfloat16_products), every kernel path this CPU has gives the scalar path's
// bits, for one and two threads, and the error against the double reference stays within the
// measured bound (paths the CPU lacks are skipped, naming what it lacks).

#include <tessera/core/parallel.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/nn/attention.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace tessera {
namespace test_attention {

struct Case {
  std::string name;
  Index heads;
  Index dh;
  nn::AttentionSegments segments;
  double magnitude = 1;  // q and k entries in [-magnitude, magnitude]
  // Float kernels round each score s to about |s| * 6e-8, an error exp() carries into the
  // weights: 1e-5 holds for scores of order 1-10 (q and k after a norm); the large-scores
  // case (|s| up to ~100) gets 1e-4, and is held to the double reference below as well.
  double float_atol = 1e-5;
};

nn::AttentionSegments with_causal(nn::AttentionSegments segments,
                                  const std::vector<std::array<Index, 3>>& ranges) {
  for (const auto& [s, begin, end] : ranges) segments.set_causal(s, begin, end);
  return segments;
}

std::vector<Case> cases() {
  using nn::AttentionSegments;
  const Index tile = nn::attention_key_tile, rows = nn::attention_query_tile;
  return {
      {"one token", 2, 8, AttentionSegments::full(1)},
      {"vit-b image", 12, 64, AttentionSegments::full(197)},
      {"three key tiles", 3, 64, AttentionSegments::full(2 * tile + 37)},
      {"dh 128", 2, 128, AttentionSegments::full(tile + 1)},
      {"large scores", 2, 32, AttentionSegments::full(tile + rows + 5), 12.0, 1e-4},
      {"packed", 2, 16, AttentionSegments::packed({0, 5, 300, 301, 650, 650, 720})},
      {"packed causal", 2, 16,
       with_causal(AttentionSegments::packed({0, 5, 300, 301, 650}),
                   {{{0, 0, 5}}, {{1, 5 + rows - 3, 290}}, {{3, 301, 650}}})},
      {"causal over three key tiles", 1, 32,
       with_causal(AttentionSegments::full(3 * tile), {{{0, 0, 3 * tile}}})},
      {"causal inside", 2, 32,
       with_causal(AttentionSegments::full(2 * tile + 10), {{{0, 3, tile + rows + 7}}}), 4.0},
      {"cross: few queries", 2, 32,
       AttentionSegments{{0, 4, 8}, {0, 600, 900}, {0, 0}, {0, 0}, {}}},
      {"cross: many queries", 3, 16, AttentionSegments{{0, 300}, {0, 7}, {0}, {0}, {}}},
      {"a segment without queries", 2, 16,
       AttentionSegments{{0, 0, 70}, {0, 40, 80}, {0, 0}, {0, 0}, {}}},
      // new tokens after a KV cache: query row i stands at key row i + shift
      {"queries after a cache", 2, 32,
       AttentionSegments{{0, 100}, {0, 2 * tile + 100}, {2 * tile - 50}, {2 * tile + 100},
                         {2 * tile}}},
      {"two segments after caches", 2, 16,
       AttentionSegments{{0, 30, 50}, {0, 300, 400}, {250, 380}, {300, 400}, {270, 350}}},
  };
}

template <class Scalar>
struct Inputs {
  Matrix<Scalar> q, k, v;  // [Lq, H*dh], [Lk, H*dh], [Lk, H*dh]
};

template <class Scalar>
Inputs<Scalar> inputs_of(const Case& c, unsigned seed) {
  std::srand(seed);
  const Index width = c.heads * c.dh;
  const Index lq = c.segments.query_offsets.back(), lk = c.segments.key_offsets.back();
  const auto m = static_cast<Scalar>(c.magnitude);
  return {Matrix<Scalar>::Random(lq, width) * m, Matrix<Scalar>::Random(lk, width) * m,
          Matrix<Scalar>::Random(lk, width)};
}

template <class Scalar>
Matrix<Scalar> run(const Case& c, const Inputs<Scalar>& in, bool fused) {
  Matrix<Scalar> ctx = Matrix<Scalar>::Zero(in.q.rows(), in.q.cols());
  if (fused) {
    nn::attention_fused<Scalar>(ctx, in.q, in.k, in.v, c.heads, c.segments);
  } else {
    nn::attention_reference<Scalar>(ctx, in.q, in.k, in.v, c.heads, c.segments);
  }
  return ctx;
}

// New tokens attending to a cache of earlier keys and values (query_shift) get the rows that
// full self attention gives them, when the earlier tokens do not see the new ones (causal).
TEST(CachedAttention, NewRowsEqualTheirRowsOfFullSelfAttention) {
  const Index heads = 2, dh = 32, length = 2 * nn::attention_key_tile + 100, fresh = 100;
  const Index past = length - fresh;
  for (const Index causal_begin : {Index{0}, past - 50, past}) {
    SCOPED_TRACE("causal from " + std::to_string(causal_begin));
    auto full = nn::AttentionSegments::full(length);
    full.set_causal(0, causal_begin, length);
    const Case whole{"whole", heads, dh, full};
    const Inputs<double> in = inputs_of<double>(whole, 7);
    const Matrix<double> expected = run(whole, in, false).bottomRows(fresh);
    const Case cached{"cached", heads, dh,
                      nn::AttentionSegments{{0, fresh}, {0, length}, {causal_begin}, {length}, {past}}};
    const Inputs<double> tail{in.q.bottomRows(fresh), in.k, in.v};
    for (const bool fused : {false, true}) {
      EXPECT_TRUE(test::all_close(run(cached, tail, fused), expected, 1e-12, 0)) << "fused " << fused;
    }
  }
}

TEST(FusedAttention, FloatWithin1e5OfTheFloatReferenceKernel) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 7);
    const Matrix<float> fused = run(c, in, true), reference = run(c, in, false);
    EXPECT_TRUE(test::all_close(fused, reference, c.float_atol, 0)) << c.name;
  }
}

TEST(FusedAttention, DoubleWithin1e12OfTheReferenceKernel) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<double>(c, 11);
    const Matrix<double> fused = run(c, in, true), reference = run(c, in, false);
    EXPECT_TRUE(test::all_close(fused, reference, 1e-12, 0)) << c.name;
  }
}

TEST(FusedAttention, FloatCloseToTheDoubleReference) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<double>(c, 13);
    const Inputs<float> in_float{in.q.cast<float>(), in.k.cast<float>(), in.v.cast<float>()};
    EXPECT_TRUE(test::close_to_reference<float>(run(c, in_float, true), run(c, in, false)))
        << c.name;
  }
}

TEST(FusedAttention, BitwiseIdenticalForOneAndTwoThreads) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 17);
    Matrix<float> one, two;
    {
      ScopedThreads threads(1);
      one = run(c, in, true);
    }
    {
      ScopedThreads threads(2);
      two = run(c, in, true);
    }
    EXPECT_TRUE(one == two) << c.name;
  }
}

// ---- k and v stored in bfloat16 --------------------------------------------------------------

template <class Scalar>
Matrix<Scalar> run_bfloat16(const Case& c, const Inputs<Scalar>& in) {
  Matrix<Scalar> ctx = Matrix<Scalar>::Zero(in.q.rows(), in.q.cols());
  const Matrix<BFloat16> k = in.k.template cast<BFloat16>();
  const Matrix<BFloat16> v = in.v.template cast<BFloat16>();
  nn::attention_fused<Scalar, BFloat16>(ctx, in.q, k, v, c.heads, c.segments);
  return ctx;
}

template <class Scalar>
Inputs<Scalar> rounded_to_bfloat16(const Inputs<Scalar>& in) {
  return {in.q, in.k.template cast<BFloat16>().template cast<Scalar>(),
          in.v.template cast<BFloat16>().template cast<Scalar>()};
}

TEST(Bfloat16KV, EqualsTheKernelOnKAndVRoundedBeforehand) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 19);
    EXPECT_TRUE(run_bfloat16(c, in) == run(c, rounded_to_bfloat16(in), true)) << c.name;
    const auto in_double = inputs_of<double>(c, 23);
    EXPECT_TRUE(run_bfloat16(c, in_double) == run(c, rounded_to_bfloat16(in_double), true))
        << c.name;
  }
}

TEST(Bfloat16KV, RoundingIsToNearestEven) {
  // 1 + 2^-8 lies halfway between the bfloat16 neighbours 1 and 1 + 2^-7: to even, 1.
  EXPECT_EQ(static_cast<float>(BFloat16(1.0f + 0x1p-8f)), 1.0f);
  EXPECT_EQ(static_cast<float>(BFloat16(1.0f + 0x1p-8f + 0x1p-20f)), 1.0f + 0x1p-7f);
  EXPECT_EQ(static_cast<float>(BFloat16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
}

// Storing k and v in bfloat16 rounds each to 8 significant bits (relative error <= 2^-9).
// With v of order 1, every output of the kernel is a convex combination of values, so its
// error from v is at most 2^-9 max|v|; the error from k moves the scores by up to
// 2^-9 |q| |k| / sqrt(dh) and the weights with them. docs/encoder.md reports the measured
// errors; this holds the kernel to them on the test shapes.
TEST(Bfloat16KV, ErrorAgainstFloatStorageIsThatOfTheRounding) {
  for (const Case& c : cases()) {
    if (c.magnitude != 1.0) continue;  // scores of order 1, as after a norm
    const auto in = inputs_of<float>(c, 29);
    const Matrix<float> full = run(c, in, true), half = run_bfloat16(c, in);
    const double max_error = (half - full).cwiseAbs().maxCoeff();
    EXPECT_LT(max_error, 4e-3) << c.name;
    EXPECT_GT(max_error, 0.0) << c.name << ": bfloat16 changed nothing?";
  }
}

TEST(Bfloat16KV, BitwiseIdenticalForOneAndTwoThreads) {
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 31);
    Matrix<float> one, two;
    {
      ScopedThreads threads(1);
      one = run_bfloat16(c, in);
    }
    {
      ScopedThreads threads(2);
      two = run_bfloat16(c, in);
    }
    EXPECT_TRUE(one == two) << c.name;
  }
}

TEST(Bfloat16KV, CacheStoresHalfTheBytesAndKeepsItsPrecision) {
  nn::KVCache<float> cache;
  const Matrix<float> k = Matrix<float>::Random(5, 16), v = Matrix<float>::Random(5, 16);
  cache.append(k, v, nn::KVPrecision::bfloat16);
  cache.append(k, v, nn::KVPrecision::native);  // a started cache keeps its precision
  EXPECT_EQ(cache.precision, nn::KVPrecision::bfloat16);
  EXPECT_EQ(cache.length, 10);
  EXPECT_EQ(cache.width(), 16);
  EXPECT_EQ(cache.k.size(), 0);
  EXPECT_EQ(sizeof(BFloat16), 2u);
  cache.visit([&](const auto& keys, const auto& values) {
    EXPECT_TRUE(keys.bottomRows(5).template cast<float>() ==
                k.cast<BFloat16>().cast<float>());
    EXPECT_TRUE(values.topRows(5).template cast<float>() ==
                v.cast<BFloat16>().cast<float>());
  });
}

// ---- bfloat16 products (KVPrecision::bfloat16_products) --------------------------------------

Matrix<float> run_bf16_products(const Case& c, const Inputs<float>& in, detail::KernelPath path) {
  Matrix<float> ctx = Matrix<float>::Zero(in.q.rows(), in.q.cols());
  const Matrix<BFloat16> k = in.k.cast<BFloat16>(), v = in.v.cast<BFloat16>();
  nn::attention_fused<float, BFloat16>(ctx, in.q, k, v, c.heads, c.segments, nullptr, path);
  return ctx;
}

// The largest |a - b| and where, the values in full (hexadecimal: bits matter here).
std::string largest_difference(const Matrix<float>& a, const Matrix<float>& b) {
  Index row = 0, col = 0;
  const float largest = (a - b).cwiseAbs().maxCoeff(&row, &col);
  std::ostringstream out;
  out << std::hexfloat << "largest difference " << largest << " at (" << row << ", " << col
      << "): " << a(row, col) << " vs " << b(row, col);
  return out.str();
}

// Every path (avx2, avx512) against the scalar one, the definition: the same bits, on every
// case (large scores too, whose probabilities reach below the 2^-50 flush) and on inputs with
// tiny and denormal entries (what VDPBF16PS would flush and the others not: see
// detail/attention_bf16.hpp).
class Bf16ProductsPath : public ::testing::TestWithParam<detail::KernelPath> {};

TEST_P(Bf16ProductsPath, GivesTheScalarPathsBits) {
  const detail::KernelPath path = GetParam();
  if (!detail::cpu_supports_bf16(path)) {
    GTEST_SKIP() << "the bf16 " << detail::kernel_path_name(path)
                 << " path needs instructions this CPU lacks (it has "
                 << detail::cpu_features().list() << ")";
  }
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 37);
    const Matrix<float> scalar = run_bf16_products(c, in, detail::KernelPath::scalar);
    const Matrix<float> vector = run_bf16_products(c, in, path);
    EXPECT_TRUE(vector == scalar) << c.name << ": " << largest_difference(vector, scalar);
  }
  // tiny entries: v around 1e-37 (products and sums near and below float's smallest normal),
  // q and k with entries at 2^-49 .. 2^-51 and denormals
  const Case c{"tiny values", 2, 16, nn::AttentionSegments::full(nn::attention_key_tile + 40)};
  auto in = inputs_of<float>(c, 41);
  in.v *= 1e-37f;
  for (Index i = 0; i < in.q.size(); i += 7) in.q.data()[i] *= 0x1p-50f;
  for (Index i = 0; i < in.k.size(); i += 5) in.k.data()[i] *= 0x1p-49f;
  for (Index i = 0; i < in.k.size(); i += 11) in.k.data()[i] = 1e-39f;
  const Matrix<float> scalar = run_bf16_products(c, in, detail::KernelPath::scalar);
  const Matrix<float> vector = run_bf16_products(c, in, path);
  EXPECT_TRUE(vector == scalar) << c.name << ": " << largest_difference(vector, scalar);
}

INSTANTIATE_TEST_SUITE_P(Bf16Products, Bf16ProductsPath,
                         ::testing::Values(detail::KernelPath::avx2, detail::KernelPath::avx512),
                         [](const auto& info) { return std::string(detail::kernel_path_name(info.param)); });

TEST(Bf16Products, BitwiseIdenticalForOneAndTwoThreads) {
  const detail::KernelPath path = detail::best_bf16_path();
  for (const Case& c : cases()) {
    const auto in = inputs_of<float>(c, 43);
    Matrix<float> one, two;
    {
      ScopedThreads threads(1);
      one = run_bf16_products(c, in, path);
    }
    {
      ScopedThreads threads(2);
      two = run_bf16_products(c, in, path);
    }
    EXPECT_TRUE(one == two) << c.name << " (" << detail::kernel_path_name(path) << ")";
  }
}

// The error against the double reference on the unrounded inputs (scores of order 1, as after
// a norm; v uniform in [-1, 1]). Measured on these cases (seed 47): the largest |error| of the
// widened kernel (k and v rounded) 1.0e-4 to 1.9e-3, of the bfloat16 products (q and p rounded
// too) 1.7e-4 to 1.9e-3, at most 1.9x the widened kernel's on the same case (q's and p's
// roundings are two more of 2^-9 relative, on top of k's and v's). Bounds: 1.5x the largest.
constexpr double bf16_products_max_error = 3e-3;   // |error| of any output
constexpr double bf16_products_max_factor = 3.0;   // over the widened kernel's largest |error|

TEST(Bf16Products, ErrorAgainstTheDoubleReferenceIsThatOfTheRoundings) {
  for (const Case& c : cases()) {
    if (c.magnitude != 1.0) continue;
    const auto in = inputs_of<double>(c, 47);
    const Inputs<float> in_float{in.q.cast<float>(), in.k.cast<float>(), in.v.cast<float>()};
    const Matrix<double> reference = run(c, in, false);
    const Matrix<double> widened = run_bfloat16(c, in_float).cast<double>();
    const Matrix<double> products =
        run_bf16_products(c, in_float, detail::bf16_kernel_path()).cast<double>();
    const double widened_error = (widened - reference).cwiseAbs().maxCoeff();
    const double products_error = (products - reference).cwiseAbs().maxCoeff();
    EXPECT_LT(products_error, bf16_products_max_error) << c.name;
    EXPECT_LE(products_error, bf16_products_max_factor * widened_error)
        << c.name << ": widened " << widened_error << ", products " << products_error;
    if (c.segments.key_offsets.back() > 1) {  // one key: p = 1 and ctx = v either way
      EXPECT_FALSE(products == widened) << c.name << ": bfloat16 products changed nothing?";
    }
  }
}

// The layer's setting reaches the kernel, and a KV cache started with it keeps it.
TEST(Bf16Products, LayerAndCacheUseThem) {
  const Index dim = 32, length = 70;
  nn::MultiHeadAttention<float> layer;
  layer.heads = 2;
  for (auto* proj : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.out_proj}) {
    *proj = nn::Linear<float>(dim, dim, true);
    proj->weight = Matrix<float>::Random(dim, dim) * 0.3f;
    proj->bias = Vector<float>::Random(dim) * 0.1f;
  }
  const Matrix<float> x = Matrix<float>::Random(length, dim);
  const auto segments = nn::AttentionSegments::full(length);
  Matrix<float> widened(length, dim), products(length, dim), cached(length, dim);
  layer.kv_precision = nn::KVPrecision::bfloat16;
  layer.forward(widened, x, segments);
  layer.kv_precision = nn::KVPrecision::bfloat16_products;
  layer.forward(products, x, segments);
  EXPECT_FALSE(products == widened);
  EXPECT_LT((products - widened).cwiseAbs().maxCoeff(), bf16_products_max_error);
  nn::KVCache<float> cache;
  layer.forward_cached(cached, x, cache, 0, 0);
  EXPECT_EQ(cache.precision, nn::KVPrecision::bfloat16_products);
  EXPECT_EQ(cache.k.size(), 0);
  EXPECT_TRUE(cached == products);  // one part: the same keys, values and tiles
}

TEST(Bf16Products, DoubleAttentionRefusesThem) {
  const Case c{"double", 1, 8, nn::AttentionSegments::full(4)};
  const auto in = inputs_of<double>(c, 3);
  Matrix<double> ctx = Matrix<double>::Zero(4, 8);
  const Matrix<BFloat16> k = in.k.cast<BFloat16>(), v = in.v.cast<BFloat16>();
  EXPECT_THAT(test::error_of([&] {
                nn::attention_fused<double, BFloat16>(ctx, in.q, k, v, 1, c.segments, nullptr,
                                                      detail::KernelPath::scalar);
              }),
              ::testing::HasSubstr("KVPrecision::bfloat16"));
}

}  // namespace
}  // namespace tessera
