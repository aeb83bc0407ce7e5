// SplitMix64 (core/random.hpp): its defined output, its distributions, the shuffle.

#include <tessera/core/random.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace tessera {
namespace test_random {

TEST(SplitMix64, MatchesTheReferenceSequence) {
  // The first outputs from state 0 of the reference implementation (Vigna's splitmix64.c).
  SplitMix64 rng{0};
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
}

TEST(SplitMix64, UniformIntegerAndNormalHaveTheirRangesAndMoments) {
  SplitMix64 rng{42};
  double sum = 0, sum_sq = 0;
  constexpr int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const std::int64_t k = rng.integer(-2, 3);
    ASSERT_GE(k, -2);
    ASSERT_LE(k, 3);
    const double z = rng.normal(1.0, 0.5);
    ASSERT_TRUE(std::isfinite(z));
    sum += z;
    sum_sq += z * z;
  }
  const double mean = sum / n, variance = sum_sq / n - mean * mean;
  EXPECT_NEAR(mean, 1.0, 0.01);               // standard error 0.5 / sqrt(n) ~ 0.0011
  EXPECT_NEAR(std::sqrt(variance), 0.5, 0.01);
}

TEST(SplitMix64, ShuffleIsAPermutationFixedByTheSeed) {
  std::vector<int> values(50);
  std::iota(values.begin(), values.end(), 0);
  std::vector<int> a = values, b = values, c = values;
  SplitMix64 ra{7}, rb{7}, rc{8};
  shuffle(a, ra);
  shuffle(b, rb);
  shuffle(c, rc);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, values);
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, values);
}

}  // namespace
}  // namespace tessera
