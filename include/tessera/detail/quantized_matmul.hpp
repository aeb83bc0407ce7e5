#pragma once
// Matrix products with int8 and bfloat16 weights: a Linear layer's forward, out = in W^T
// (+ bias), with W held in 1 byte (int8) or 2 bytes (bfloat16) a weight instead of 4.
//
// int8 (symmetric, per output row): W(r, c) ~= value(r, c) * scale[r], value in [-127, 127].
// Each token (row) of `in` is quantized on the fly the same way, per token:
//   s_t = max_c |in(t, c)| / 127,   q(t, c) = round_half_even(in(t, c) / s_t)  in [-127, 127]
//   out(t, r) = fma(float(sum_c q(t, c) value(r, c)), s_t * scale[r], base(t, r))
// where base is the old out (when accumulating) plus the bias, and the integer sum is exact.
// An all-zero row has s_t = 0 and q = 0. A token with a NaN or infinity throws: its scale would
// be meaningless and every output of the token garbage.
//
// bfloat16: `in` is rounded to bfloat16 (nearest even) and the products, exact in float, are
// summed in float in a fixed order: for each pair of inputs (2c, 2c+1) in turn, the odd one's
// product then the even one's (the order of AVX-512's VDPBF16PS); out(t, r) = base(t, r) + sum.
//
// Paths (detail/cpu.hpp): scalar C++, AVX2 + FMA (quantized_kernels_avx2.hpp) and AVX-512 with
// VNNI or BF16 (quantized_kernels_avx512.hpp), chosen at run time. They give the same bits:
// the int8 sums are exact integers and the epilogue one correctly rounded fma on every path;
// the bfloat16 sums make the same roundings in the same order on every path (while no product
// or partial sum is denormal: VDPBF16PS flushes those to zero, the others do not).
//
// Threading: the output [L, out] is cut into tiles by its shape alone (detail::matmul_tiles,
// as the float products are) and OpenMP hands whole tiles to threads, so results do not depend
// on the thread count either. Called inside a parallel region, the product runs in the calling
// thread. The activations are prepared (quantized or rounded) once per call, in parallel over
// tokens, into a scratch matrix of the call's own.
//
// The weights are packed once, at construction, into panels of 16 output rows
// (quantized_tile.hpp); an Int8Rows holds only that packing (1 byte a weight), the row scales
// and the row sums the VNNI kernel needs, and unpacks on request (values()).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/detail/quantized_kernels_avx2.hpp>
#include <tessera/detail/quantized_kernels_avx512.hpp>
#include <tessera/detail/quantized_tile.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace tessera::detail {

// The largest `in` of an int8 product: the avx512 kernel's int32 lanes sum in products of
// at most 255 * 127 (shifted activations), so 65536 of them stay below 2^31.
inline constexpr Index int8_max_inputs = 65536;

// Quantizes x [n] into q [n], symmetric: returns s = max|x| / 127 and writes
// q = round_half_even(x / s) clamped to [-127, 127] (all zeros when s is 0), plus `offset`
// (0, or 128 for the VNNI kernel's unsigned bytes, stored as their bit pattern). Returns NaN,
// writing nothing, when x holds a NaN or an infinity.
inline float quantize_row(const float* x, Index n, std::int8_t* q, int offset = 0) {
  // max |x| on the bit patterns: non-negative floats order as their bits do, and NaN and
  // infinity have the largest patterns, so one integer max finds them too (and vectorizes)
  std::uint32_t largest = 0;
  for (Index c = 0; c < n; ++c) {
    std::uint32_t bits;
    std::memcpy(&bits, x + c, sizeof bits);
    largest = std::max(largest, bits & 0x7fffffffu);
  }
  if (largest >= 0x7f800000u) return std::numeric_limits<float>::quiet_NaN();
  float max_abs;
  std::memcpy(&max_abs, &largest, sizeof max_abs);
  const float s = max_abs / 127.0f;
  if (s == 0.0f) {
    std::fill(q, q + n, static_cast<std::int8_t>(static_cast<std::uint8_t>(offset)));
    return 0.0f;
  }
  // Adding and subtracting 1.5 * 2^23 rounds a float of magnitude below 2^22 to an integer,
  // half to even (the FPU's rounding), where std::nearbyint is a library call without SSE4.1.
  // The clamp comes first: with s denormal, x / s can exceed 127 (s is rounded coarsely).
  constexpr float round_even = 12582912.0f;
  for (Index c = 0; c < n; ++c) {
    const float v = std::clamp(x[c] / s, -127.0f, 127.0f);
    const int value = static_cast<int>((v + round_even) - round_even);
    q[c] = static_cast<std::int8_t>(static_cast<std::uint8_t>(value + offset));
  }
  return s;
}

// The bits of x rounded to bfloat16, to nearest even, as Eigen's cast does (a NaN becomes the
// quiet NaN of its sign), in integer operations that vectorize.
inline std::uint16_t bf16_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>(((bits >> 16) & 0x8000u) | 0x7fc0u);
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The float whose upper half is bfloat16 `bits` (exact).
inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// A weight matrix [out, in] in int8, symmetric per output row: w(r, c) ~= value(r, c) * scale[r],
// packed for the kernels (quantized_tile.hpp, groups of 4 inputs).
class Int8Rows {
 public:
  Int8Rows() = default;

  // From a file's I8 tensor values [out, in] and its F32 scale [out].
  // requires: scale finite and >= 0; values in [-127, 127]; in <= int8_max_inputs (else Error).
  Int8Rows(const Eigen::Ref<const Matrix<std::int8_t>>& values, const Vector<float>& scale)
      : rows_(values.rows()), cols_(values.cols()), depth_(round_up(cols_, int8_group)),
        scale_(scale) {
    check(scale.size() == rows_, "Int8Rows: values [", rows_, ", ", cols_, "] with scale [",
          scale.size(), "]: expected one scale per row (", rows_, ")");
    check(cols_ <= int8_max_inputs, "Int8Rows: ", cols_, " inputs: at most ", int8_max_inputs,
          " (the kernels' int32 sums)");
    for (Index r = 0; r < rows_; ++r) {
      check(std::isfinite(scale[r]) && scale[r] >= 0.0f, "Int8Rows: scale[", r, "] = ", scale[r],
            ": expected a finite number >= 0");
    }
    const Index padded_rows = round_up(rows_, panel_rows);
    packed_.assign(static_cast<std::size_t>(padded_rows * depth_), 0);
    offset_sums_.assign(static_cast<std::size_t>(padded_rows), 0);
    for (Index r = 0; r < rows_; ++r) {
      std::int32_t sum = 0;
      for (Index c = 0; c < cols_; ++c) {
        const std::int8_t value = values(r, c);
        check(value != -128, "Int8Rows: value (", r, ", ", c,
              ") = -128: int8 weights are symmetric, in [-127, 127]");
        packed_[static_cast<std::size_t>(packed_offset(r, c, depth_, int8_group))] = value;
        sum += value;
      }
      offset_sums_[static_cast<std::size_t>(r)] = 128 * sum;
    }
  }

  // w [out, in] quantized: scale[r] = max|w(r, :)| / 127 (0 for an all-zero row), value =
  // round_half_even(w / scale). Throws naming the row and column of a NaN or infinity.
  static Int8Rows quantize(const ConstMatrixRef<float>& w) {
    Matrix<std::int8_t> values(w.rows(), w.cols());
    Vector<float> scale(w.rows());
    for (Index r = 0; r < w.rows(); ++r) {
      const float* row = w.data() + r * w.outerStride();
      scale[r] = quantize_row(row, w.cols(), values.row(r).data());
      if (std::isnan(scale[r])) {
        Index c = 0;
        while (std::isfinite(row[c])) ++c;
        fail("Int8Rows::quantize: weight (", r, ", ", c, ") = ", row[c], ": expected a finite number");
      }
    }
    return Int8Rows(values, scale);
  }

  Index rows() const { return rows_; }  // out
  Index cols() const { return cols_; }  // in
  bool empty() const { return rows_ == 0 || cols_ == 0; }
  const Vector<float>& scale() const { return scale_; }  // [out]

  // The values [out, in], unpacked (for writing files).
  Matrix<std::int8_t> values() const {
    Matrix<std::int8_t> out(rows_, cols_);
    for_each_packed(packed_.data(), rows_, cols_, depth_, int8_group,
                    [&](Index r, Index c, std::int8_t v) { out(r, c) = v; });
    return out;
  }

  // value * scale [out, in] (each weight exactly the float it stands for)
  Matrix<float> dequantize() const {
    Matrix<float> out(rows_, cols_);
    for_each_packed(packed_.data(), rows_, cols_, depth_, int8_group, [&](Index r, Index c, std::int8_t v) {
      out(r, c) = static_cast<float>(v) * scale_[r];
    });
    return out;
  }

  // The memory it holds: the packing (padded to 16 rows and 4 inputs), scales and row sums.
  std::size_t bytes() const {
    return packed_.size() + static_cast<std::size_t>(scale_.size()) * sizeof(float) +
           offset_sums_.size() * sizeof(std::int32_t);
  }

  // For the kernels: the packed panels, their depth (in rounded up to 4) and the row sums.
  const std::int8_t* packed() const { return packed_.data(); }
  Index depth() const { return depth_; }
  const std::int32_t* offset_sums() const { return offset_sums_.data(); }

 private:
  Index rows_ = 0, cols_ = 0, depth_ = 0;
  std::vector<std::int8_t, CacheAligned<std::int8_t>> packed_;  // [out/16 panels, depth, 16]
  Vector<float> scale_;                                         // [out]
  std::vector<std::int32_t> offset_sums_;  // [out rounded up to 16] 128 * sum_c value(r, c)
};

// A weight matrix [out, in] in bfloat16, packed for the kernels (quantized_tile.hpp, pairs).
class BF16Rows {
 public:
  BF16Rows() = default;

  explicit BF16Rows(Matrix<BFloat16> values)  // [out, in]
      : rows_(values.rows()), cols_(values.cols()), depth_(round_up(cols_, bf16_group)) {
    packed_.assign(static_cast<std::size_t>(round_up(rows_, panel_rows) * depth_), 0);
    for (Index r = 0; r < rows_; ++r) {
      for (Index c = 0; c < cols_; ++c) {
        packed_[static_cast<std::size_t>(packed_offset(r, c, depth_, bf16_group))] =
            Eigen::numext::bit_cast<std::uint16_t>(values(r, c));
      }
    }
  }

  // w [out, in] rounded to bfloat16, to nearest even (Eigen's cast). Throws naming the row
  // and column of a NaN or infinity.
  static BF16Rows round(const ConstMatrixRef<float>& w) {
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index c = 0; c < w.cols(); ++c) {
        check(std::isfinite(w(r, c)), "BF16Rows::round: weight (", r, ", ", c, ") = ", w(r, c),
              ": expected a finite number");
      }
    }
    return BF16Rows(w.cast<BFloat16>());
  }

  Index rows() const { return rows_; }  // out
  Index cols() const { return cols_; }  // in
  bool empty() const { return rows_ == 0 || cols_ == 0; }

  Matrix<BFloat16> values() const {  // [out, in]
    Matrix<BFloat16> out(rows_, cols_);
    for_each_packed(packed_.data(), rows_, cols_, depth_, bf16_group, [&](Index r, Index c, std::uint16_t v) {
      out(r, c) = BFloat16(Eigen::bfloat16_impl::raw_uint16_to_bfloat16(v));
    });
    return out;
  }

  Matrix<float> dequantize() const {  // [out, in], exact
    Matrix<float> out(rows_, cols_);
    for_each_packed(packed_.data(), rows_, cols_, depth_, bf16_group,
                    [&](Index r, Index c, std::uint16_t v) { out(r, c) = bf16_to_float(v); });
    return out;
  }

  // The memory it holds: the packing (padded to 16 rows and 2 inputs).
  std::size_t bytes() const { return packed_.size() * sizeof(std::uint16_t); }

  // For the kernels: the packed panels (bfloat16 bits) and their depth (in rounded up to 2).
  const std::uint16_t* packed() const { return packed_.data(); }
  Index depth() const { return depth_; }

 private:
  Index rows_ = 0, cols_ = 0, depth_ = 0;
  std::vector<std::uint16_t, CacheAligned<std::uint16_t>> packed_;  // [out/16 panels, depth, 16]
};

// ---- The scalar kernels: the definition the vector ones match bit for bit ------------------

inline void int8_tile_scalar(const Int8Tile& tile) {
  for (Index t = tile.t0; t < tile.t1; ++t) {
    const std::int8_t* x = tile.act + t * tile.depth;
    for (Index r = tile.r0; r < tile.r1; ++r) {
      const std::int8_t* w = tile.weights + packed_offset(r, 0, tile.depth, int8_group);
      std::int32_t sum = 0;
      for (Index k = 0; k < tile.depth; k += int8_group) {
        for (Index j = 0; j < int8_group; ++j) sum += x[k + j] * w[k * panel_rows + j];
      }
      tile.out[t * tile.out_stride + r] =
          int8_output(sum, tile.act_scale[t], tile.scale[r], tile.base(t, r));
    }
  }
}

// GCC 12 at -O3 vectorizes this loop's in-order float sum (a "fold-left" reduction) wrongly:
// with its two additions a step and the strided weights, it returned 841.6 for 758.7 on a
// 38-input dot product (not a rounding: the wrong terms). Its loop vectorizer is off here.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-vectorize")))
#endif
inline void bf16_tile_scalar(const BF16Tile& tile) {
  for (Index t = tile.t0; t < tile.t1; ++t) {
    const float* x = static_cast<const float*>(tile.act) + t * tile.depth;
    for (Index r = tile.r0; r < tile.r1; ++r) {
      const std::uint16_t* w = tile.weights + packed_offset(r, 0, tile.depth, bf16_group);
      float sum = 0.0f;
      for (Index k = 0; k < tile.depth; k += bf16_group) {
        // the products are exact in float, so whether the compiler fuses them into the
        // additions or not, each addition rounds once, as VDPBF16PS's does: odd, then even
        sum += x[k + 1] * bf16_to_float(w[k * panel_rows + 1]);
        sum += x[k] * bf16_to_float(w[k * panel_rows]);
      }
      tile.out[t * tile.out_stride + r] = bf16_output(sum, tile, t, r);
    }
  }
}

// ---- The products ----------------------------------------------------------------------------

// Checks the shapes of a quantized product and that the CPU has `path`.
inline void check_quantized_product(const char* name, const MatrixRef<float>& out,
                                    const ConstMatrixRef<float>& in, Index rows, Index cols,
                                    const Vector<float>* bias, KernelPath path, bool supported,
                                    const char* needs) {
  check(in.cols() == cols, name, ": input [", in.rows(), ", ", in.cols(), "] with a weight [",
        rows, ", ", cols, "]: expected ", cols, " input columns");
  check(out.rows() == in.rows() && out.cols() == rows, name, ": output [", out.rows(), ", ",
        out.cols(), "]: expected [", in.rows(), ", ", rows, "]");
  check(bias == nullptr || bias->size() == rows, name, ": bias [", bias ? bias->size() : 0,
        "]: expected [", rows, "]");
  check(supported, name, ": the ", kernel_path_name(path), " path needs ", needs,
        "; this CPU has ", cpu_features().list());
}

// Runs tile_kernel(tile) over the tiles of out [L, n] (matmul_tiles), spread over threads;
// `prototype` holds everything but the tile's extents.
template <class Tile, class Kernel>
void run_tiles(const Tile& prototype, Index length, Index n, Kernel tile_kernel) {
  const MatmulTiles tiling = matmul_tiles(length, n);
  const Index tiles = tiling.count();
#pragma omp parallel for schedule(static) if (tiles > 1)
  for (Index i = 0; i < tiles; ++i) {
    Tile tile = prototype;
    tile.t0 = (i / tiling.col_tiles) * tiling.rows;
    tile.r0 = (i % tiling.col_tiles) * tiling.cols;
    tile.t1 = std::min(tile.t0 + tiling.rows, length);
    tile.r1 = std::min(tile.r0 + tiling.cols, n);
    tile_kernel(tile);
  }
}

// One tile of an int8 (bfloat16) product through the kernel of `path` (the scalar one off x86).
inline void run_int8_tile(const Int8Tile& tile, KernelPath path) {
  switch (path) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case KernelPath::avx512: run_tile<Int8Avx512>(tile); return;
    case KernelPath::avx2: run_tile<Int8Avx2>(tile); return;
#endif
    default: int8_tile_scalar(tile); return;
  }
}
inline void run_bf16_tile(const BF16Tile& tile, KernelPath path) {
  switch (path) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case KernelPath::avx512: run_tile<BF16Avx512>(tile); return;
    case KernelPath::avx2: run_tile<BF16Avx2>(tile); return;
#endif
    default: bf16_tile_scalar(tile); return;
  }
}

// Whether a pass over [L, in] is worth threads.
inline bool worth_threads(Index length, Index cols) { return length > 1 && length * cols >= (1 << 15); }

// out [L, out] = in [L, in] W^T (+ bias [out]), or out += that when accumulate; W int8
// (see the top of this file). Throws Error on a shape mismatch, a path this CPU lacks, or a NaN
// or infinity in `in` (naming its row).
inline void int8_matmul(MatrixRef<float> out, const ConstMatrixRef<float>& in, const Int8Rows& w,
                        const Vector<float>* bias, bool accumulate,
                        KernelPath path = int8_kernel_path()) {
  check_quantized_product("int8_matmul", out, in, w.rows(), w.cols(), bias, path,
                          cpu_supports_int8(path),
                          path == KernelPath::avx512 ? "AVX-512 F, BW, VL and VNNI" : "AVX2 and FMA");
  const Index length = in.rows(), cols = in.cols(), depth = w.depth();
  if (length == 0 || w.rows() == 0) return;

  // the tokens quantized once: act [L, depth], act_scale [L], and for the AVX2 kernel
  // act_abs = |act| (its VPMADDUBSW's unsigned operand, see quantized_kernels_avx2.hpp)
  const int offset = path == KernelPath::avx512 ? 128 : 0;
  std::vector<std::int8_t> act(static_cast<std::size_t>(length * depth));
  std::vector<float> act_scale(static_cast<std::size_t>(length));
  const bool with_abs = path == KernelPath::avx2;
  std::vector<std::int8_t> act_abs(with_abs ? act.size() : 0);
#pragma omp parallel for schedule(static) if (worth_threads(length, cols))
  for (Index t = 0; t < length; ++t) {
    std::int8_t* q = act.data() + t * depth;
    act_scale[static_cast<std::size_t>(t)] = quantize_row(in.data() + t * in.outerStride(), cols, q, offset);
    std::fill(q + cols, q + depth, static_cast<std::int8_t>(static_cast<std::uint8_t>(offset)));
    if (with_abs) {
      std::int8_t* qa = act_abs.data() + t * depth;
      std::transform(q, q + depth, qa, [](std::int8_t v) { return static_cast<std::int8_t>(v < 0 ? -v : v); });
    }
  }
  for (Index t = 0; t < length; ++t) {
    check(!std::isnan(act_scale[static_cast<std::size_t>(t)]), "int8_matmul: input row ", t,
          " holds a NaN or an infinity");
  }

  Int8Tile prototype;
  prototype.out = out.data();
  prototype.out_stride = out.outerStride();
  prototype.bias = bias != nullptr ? bias->data() : nullptr;
  prototype.accumulate = accumulate;
  prototype.weights = w.packed();
  prototype.offset_sums = w.offset_sums();
  prototype.scale = w.scale().data();
  prototype.act = act.data();
  prototype.act_abs = act_abs.data();
  prototype.act_scale = act_scale.data();
  prototype.depth = depth;
  run_tiles(prototype, length, w.rows(), [path](const Int8Tile& tile) { run_int8_tile(tile, path); });
}

// What narrowing leaves out of `in` [L, in]: in minus the floats its int8 tokens (quantize_row)
// or its bfloat16 rounding stand for. A second product over it, added to the first, takes the
// inputs to about twice the bits (int8: each token's error at most 1/508 of its first step; bf16:
// 16 bits of mantissa). A NaN or infinity gives NaN (the first product refuses such a row).
inline Matrix<float> int8_residual(const ConstMatrixRef<float>& in) {
  Matrix<float> rest(in.rows(), in.cols());
  std::vector<std::int8_t> q(static_cast<std::size_t>(in.cols()));
  for (Index t = 0; t < in.rows(); ++t) {
    const float s = quantize_row(in.data() + t * in.outerStride(), in.cols(), q.data());
    for (Index c = 0; c < in.cols(); ++c) rest(t, c) = in(t, c) - static_cast<float>(q[static_cast<std::size_t>(c)]) * s;
  }
  return rest;
}

inline Matrix<float> bf16_residual(const ConstMatrixRef<float>& in) {
  return in.unaryExpr([](float x) { return x - bf16_to_float(bf16_bits(x)); });
}

// out [L, out] = in [L, in] W^T (+ bias [out]), or out += that when accumulate; W bfloat16
// (see the top of this file). Throws Error on a shape mismatch or a path this CPU lacks.
inline void bf16_matmul(MatrixRef<float> out, const ConstMatrixRef<float>& in, const BF16Rows& w,
                        const Vector<float>* bias, bool accumulate,
                        KernelPath path = bf16_kernel_path()) {
  check_quantized_product("bf16_matmul", out, in, w.rows(), w.cols(), bias, path,
                          cpu_supports_bf16(path),
                          path == KernelPath::avx512 ? "AVX-512 F, BW, VL and BF16" : "AVX2 and FMA");
  const Index length = in.rows(), cols = in.cols(), depth = w.depth();
  if (length == 0 || w.rows() == 0) return;

  // the tokens rounded to bfloat16 once, into act [L, depth]: their bits for VDPBF16PS, the
  // floats they stand for on the other paths
  const bool bits = path == KernelPath::avx512;
  std::vector<std::uint16_t> act_bits(bits ? static_cast<std::size_t>(length * depth) : 0);
  std::vector<float> act_floats(bits ? 0 : static_cast<std::size_t>(length * depth));
#pragma omp parallel for schedule(static) if (worth_threads(length, cols))
  for (Index t = 0; t < length; ++t) {
    const float* x = in.data() + t * in.outerStride();
    if (bits) {
      std::uint16_t* row = act_bits.data() + t * depth;
      for (Index c = 0; c < cols; ++c) row[c] = bf16_bits(x[c]);
      std::fill(row + cols, row + depth, std::uint16_t{0});
    } else {
      float* row = act_floats.data() + t * depth;
      for (Index c = 0; c < cols; ++c) row[c] = bf16_to_float(bf16_bits(x[c]));
      std::fill(row + cols, row + depth, 0.0f);
    }
  }

  BF16Tile prototype;
  prototype.out = out.data();
  prototype.out_stride = out.outerStride();
  prototype.bias = bias != nullptr ? bias->data() : nullptr;
  prototype.accumulate = accumulate;
  prototype.weights = w.packed();
  prototype.act = bits ? static_cast<const void*>(act_bits.data()) : act_floats.data();
  prototype.depth = depth;
  run_tiles(prototype, length, w.rows(), [path](const BF16Tile& tile) { run_bf16_tile(tile, path); });
}

}  // namespace tessera::detail
