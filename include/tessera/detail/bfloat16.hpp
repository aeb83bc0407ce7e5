#pragma once
// Widening bfloat16 to float or double, fast.
//
// A bfloat16 is the upper half of a float's bits (1 sign, 8 exponent, 7 mantissa bits), so
// widening it is exact and is a 16-bit shift. Eigen's cast does it one coefficient at a time
// (about 1 ns each here); the loop below compiles to vector shifts, 5-7x faster, which is what
// lets the attention kernel convert its key and value tiles without losing the time it saves
// on memory. Narrowing (float to bfloat16, rounding to nearest even) stays Eigen's cast.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tessera::detail {

// dst = src converted to dst's Scalar (float or double), coefficient for coefficient.
// requires: dst and src row-major with unit inner stride, of the same shape.
template <class Dst, class Src>
void widen(Dst&& dst, const Src& src) {
  using Out = typename std::decay_t<Dst>::Scalar;
  static_assert(std::is_same_v<typename Src::Scalar, BFloat16>);
  static_assert(std::decay_t<Dst>::IsRowMajor && Src::IsRowMajor);
  TESSERA_ASSERT(dst.innerStride() == 1 && src.innerStride() == 1);
  TESSERA_ASSERT(dst.rows() == src.rows() && dst.cols() == src.cols());
  const Index cols = src.cols();
  for (Index r = 0; r < src.rows(); ++r) {
    const BFloat16* in = src.data() + r * src.outerStride();
    Out* out = dst.data() + r * dst.outerStride();
    for (Index c = 0; c < cols; ++c) {
      std::uint16_t bits;  // memcpy, not a cast, so no aliasing rule is bent (and GCC vectorizes it)
      std::memcpy(&bits, in + c, sizeof bits);
      const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
      float value;
      std::memcpy(&value, &wide, sizeof value);
      out[c] = static_cast<Out>(value);
    }
  }
}

}  // namespace tessera::detail
