// The fused attention kernel (nn::attention_fused) against the plain one
// (nn::attention_reference, itself checked against PyTorch in test_nn.cpp) on shapes that
// cross its tiles: long sequences, packed segments of odd lengths, causal ranges that start
// and end inside tiles (and hide whole tiles), cross attention, large scores; float within
// 1e-5 of the float reference, double within 1e-12 of the double one; bitwise identical for
// one and two threads. With k and v stored in bfloat16 (nn::KVPrecision), the kernel equals
// itself on k and v rounded to bfloat16 beforehand, bit for bit, and its error against float
// storage stays within the bound docs/encoder.md gives.

#include <tessera/core/parallel.hpp>
#include <tessera/nn/attention.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
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

}  // namespace
}  // namespace tessera
