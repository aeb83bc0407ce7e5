#pragma once
// The key/value cache of incremental encoding, and the precision it (and an attention
// layer's kernel) stores keys and values in.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>

namespace tessera::nn {

// How an attention layer stores the keys and values its kernel reads: in the layer's own
// Scalar (native), or in bfloat16 (8 bits of mantissa: half the memory of float, and half
// the bytes the kernel streams per key tile). With bfloat16, k and v are rounded to nearest
// even after projection and RoPE, and converted back to Scalar tile by tile for the
// products (exact: every bfloat16 is a float); q, the scores, the softmax and the
// accumulation stay in Scalar. docs/encoder.md gives the error this costs against float.
// bfloat16_products stores them alike and also runs the kernel's two products (scores = q k^T,
// then p v) as bfloat16 dot products summed in float (AVX512-BF16's VDPBF16PS where the CPU has
// it, the same bits on AVX2 or scalar code otherwise), with q and the softmax's exponentials
// rounded to bfloat16 too: float attention only, a further error (docs/encoder.md) for speed.
// It is a value of its own rather than what bfloat16 does: bfloat16's result is, by
// contract (and test), the float kernel's on k and v rounded beforehand, bit for bit;
// rounding q and p as well breaks that, so a user asks for it.
enum class KVPrecision { native, bfloat16, bfloat16_products };

// Whether `precision` stores keys and values in bfloat16.
inline bool stores_bfloat16(KVPrecision precision) { return precision != KVPrecision::native; }

// The keys and values of the tokens encoded so far, for incremental encoding: new tokens
// attend to them without recomputing them. Stored in Scalar or in bfloat16 (`precision`,
// fixed by the first append). Rows grow by doubling, so appending n tokens to a cache of Lc
// costs O(n) amortized copies, not O(Lc).
template <class Scalar>
struct KVCache {
  KVPrecision precision = KVPrecision::native;  // how the kernel reads them, too
  Matrix<Scalar> k, v;      // native: [capacity, D], rows [0, length) the keys (after RoPE) and values
  Matrix<BFloat16> k16, v16;  // bfloat16: the same, rounded to bfloat16
  Index length = 0;         // Lc

  Index width() const { return stores_bfloat16(precision) ? k16.cols() : k.cols(); }  // D

  // Calls f(keys [Lc, D], values [Lc, D]) on the cached rows, in their stored type.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (stores_bfloat16(precision)) {
      return f(k16.topRows(length), v16.topRows(length));
    }
    return f(k.topRows(length), v.topRows(length));
  }

  // Appends n rows; an empty cache takes `as` for its precision.
  // requires: new_k, new_v [n, D] (D fixed by the first append).
  void append(const ConstMatrixRef<Scalar>& new_k, const ConstMatrixRef<Scalar>& new_v,
              KVPrecision as = KVPrecision::native) {
    if (length == 0) precision = as;
    if (stores_bfloat16(precision)) {
      append_rows(k16, v16, new_k.template cast<BFloat16>(), new_v.template cast<BFloat16>());
    } else {
      append_rows(k, v, new_k, new_v);
    }
    length += new_k.rows();
  }

 private:
  template <class T, class NewK, class NewV>
  void append_rows(Matrix<T>& keys, Matrix<T>& values, const NewK& new_k, const NewV& new_v) {
    TESSERA_ASSERT(new_k.rows() == new_v.rows() && new_k.cols() == new_v.cols());
    TESSERA_ASSERT(length == 0 || new_k.cols() == keys.cols());
    const Index n = new_k.rows();
    if (length + n > keys.rows() || new_k.cols() != keys.cols()) {
      const Index capacity = std::max(length + n, 2 * keys.rows());
      keys.conservativeResize(capacity, new_k.cols());
      values.conservativeResize(capacity, new_k.cols());
    }
    keys.middleRows(length, n) = new_k;
    values.middleRows(length, n) = new_v;
  }
};

}  // namespace tessera::nn
