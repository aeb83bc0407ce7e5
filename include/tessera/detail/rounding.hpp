#pragma once
// Keeping a reference's roundings.
//
// Where tessera reproduces a reference bit for bit (Pillow's resampling weights, torchaudio's
// float32 mel banks), every operation must round as it does there. A compiler that targets
// FMA may compute a * b + c as one fused multiply-add, rounding once instead of twice: GCC
// does so across statements by default (-ffp-contract=fast), Clang within one expression.
// rounded(a * b) + c stops it: the product is rounded to its type before the addition sees it.

namespace tessera::detail {

// x, rounded to T here (a volatile round trip the compiler cannot fuse through).
template <class T>
T rounded(T x) {
  volatile T stored = x;
  return stored;
}

}  // namespace tessera::detail
