#pragma once
// SplitMix64: tessera's random numbers (weight initialization, the pair sampler, the synthetic
// world). Its output is fixed by its definition (Steele, Lea and Flood 2014), where the
// standard's distributions (std::normal_distribution, std::shuffle) differ between standard
// libraries; so a seed gives the same numbers with libstdc++, libc++ or MSVC's.
//
//   tessera::SplitMix64 rng{seed};
//   rng.next();             // 64 random bits
//   rng.uniform();          // [0, 1)
//   rng.normal(0.0, 0.02);  // Box-Muller: exact up to the last bit of libm's log and cos

#include <cmath>
#include <cstdint>
#include <numbers>
#include <utility>
#include <vector>

namespace tessera {

struct SplitMix64 {
  std::uint64_t state = 0;

  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  // Uniform in [low, high] (the modulo bias, range / 2^64, is negligible for small ranges).
  std::int64_t integer(std::int64_t low, std::int64_t high) {
    return low + static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(high - low + 1));
  }
  // Normal(mean, stddev) by Box-Muller, one value per two draws (the cosine branch).
  double normal(double mean, double stddev) {
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    return mean + stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
  }
};

// Fisher-Yates on `values` (std::shuffle's algorithm is left open by the standard).
template <class T>
void shuffle(std::vector<T>& values, SplitMix64& rng) {
  for (std::size_t i = values.size(); i > 1; --i) {
    const auto j = static_cast<std::size_t>(rng.next() % i);  // modulo bias ~i / 2^64
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace tessera
