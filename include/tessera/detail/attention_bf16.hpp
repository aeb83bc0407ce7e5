#pragma once
// The bfloat16 dot products of the fused attention kernel (nn/attention_kernel.hpp, with
// KVPrecision::bfloat16_products): on one tile, scores = q k^T and o += p v, where q and p are
// rounded to bfloat16, k and v are stored in it, and the products (exact in float) are summed
// in float. They run on bf16_matmul's tile kernels (quantized_matmul.hpp): the same packed
// layout (quantized_tile.hpp: panels of 16 output rows, inputs in pairs), the same pair order
// (for each pair, the odd input's product, then the even one's: VDPBF16PS's), the same paths
// chosen at run time (detail/cpu.hpp) and so the same bits on every path.
//
//   scores [rows, keys] = q [rows, dh] k^T   the "weights" are the key tile [keys, dh]
//   o [rows, dh]       += p [rows, keys] v   the "weights" are the value tile transposed
//
// Small inputs. VDPBF16PS treats denormal inputs as zero and flushes denormal results, where
// the AVX2 and scalar kernels (FMA, float) keep them. So every input is flushed to zero here
// when its magnitude is below 2^-50 (bfloat16 keeps float's exponent range: its smallest
// normal is 2^-126): then each product is 0 or an integer multiple of 2^-114 (each input a
// multiple of 2^(e - 7), e >= -50), so is every partial sum, and none is ever denormal. The
// paths then agree bit for bit on every finite input, not only on "ordinary" ones. What the
// flush costs: a probability below 2^-50 (a score more than 34.7 below its row's maximum) weighs
// nothing, and a q, k or v entry below 2^-50 ~ 8.9e-16 counts as 0.
//
// The operands are prepared once per tile per task, in the task's own scratch (BF16TileScratch),
// so the result does not depend on which thread runs the task.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/quantized_matmul.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tessera::detail {

// The bits of 2^-50 in bfloat16 (biased exponent 127 - 50, mantissa 0): smaller magnitudes
// are flushed to zero (see the top of this file).
inline constexpr std::uint16_t attention_bf16_smallest = (127 - 50) << 7;

// bfloat16 bits (an input of the products) with magnitudes below 2^-50 flushed to +0.
inline std::uint16_t flush_small_bf16(std::uint16_t bits) {
  return (bits & 0x7fffu) < attention_bf16_smallest ? std::uint16_t{0} : bits;
}

// x rounded to bfloat16 (nearest even), flushed as above, as bits and as the float they stand for.
inline std::uint16_t attention_bf16_bits(float x) { return flush_small_bf16(bf16_bits(x)); }
inline float attention_bf16_round(float x) { return bf16_to_float(attention_bf16_bits(x)); }

// One tile's operands, as the kernels read them, in a task's scratch.
struct BF16TileScratch {
  KernelPath path = KernelPath::scalar;
  std::vector<std::uint16_t, CacheAligned<std::uint16_t>> packed;  // [n/16 panels, depth, 16]
  std::vector<std::uint16_t> act_bits;  // [rows, depth] bfloat16 bits (avx512)
  std::vector<float> act_floats;        // [rows, depth] floats rounded to bfloat16 (others)
  Index depth = 0;                      // the inputs, rounded up to a pair

  // Room for activations [rows, inputs] and weights [n, inputs], allocated once per thread.
  BF16TileScratch(KernelPath path_, Index rows, Index n, Index inputs) : path(path_) {
    const Index depth_max = round_up(inputs, bf16_group);
    packed.resize(static_cast<std::size_t>(round_up(n, panel_rows) * depth_max));
    if (path == KernelPath::avx512) {
      act_bits.resize(static_cast<std::size_t>(rows * depth_max));
    } else {
      act_floats.resize(static_cast<std::size_t>(rows * depth_max));
    }
  }

  // The activations: x [rows, inputs] (row stride `stride`) rounded to bfloat16 and flushed,
  // padded with a zero to a pair. Sets depth.
  void set_activations(const float* x, Index rows, Index inputs, Index stride) {
    depth = round_up(inputs, bf16_group);
    for (Index t = 0; t < rows; ++t) {
      const float* in = x + t * stride;
      if (path == KernelPath::avx512) {
        std::uint16_t* row = act_bits.data() + t * depth;
        for (Index c = 0; c < inputs; ++c) row[c] = attention_bf16_bits(in[c]);
        if (inputs < depth) row[inputs] = 0;
      } else {
        float* row = act_floats.data() + t * depth;
        for (Index c = 0; c < inputs; ++c) row[c] = attention_bf16_round(in[c]);
        if (inputs < depth) row[inputs] = 0.0f;
      }
    }
  }

  // The weights W [n, inputs] = w [n, inputs] (a key tile; row stride `stride`), packed and
  // flushed, zero-padded to whole panels and pairs. Row by row: each row's pairs are read in
  // order and land 16 pairs apart (one panel group a pair). requires: depth set for `inputs`.
  void set_weights_rows(const BFloat16* w, Index n, Index inputs, Index stride) {
    TESSERA_ASSERT(depth == round_up(inputs, bf16_group));
    const Index even_inputs = inputs - inputs % bf16_group;
    for (Index r0 = 0; r0 < round_up(n, panel_rows); r0 += panel_rows) {
      std::uint16_t* panel = packed.data() + r0 * depth;
      for (Index j = 0; j < panel_rows; ++j) {
        std::uint16_t* lane = panel + j * bf16_group;  // input c of row r0 + j: lane[c * 16 + c % 2]
        if (r0 + j >= n) {
          for (Index c = 0; c < depth; c += bf16_group) lane[c * panel_rows] = lane[c * panel_rows + 1] = 0;
          continue;
        }
        const BFloat16* row = w + (r0 + j) * stride;
        for (Index c = 0; c < even_inputs; c += bf16_group) {
          lane[c * panel_rows] = bits_of(row[c]);
          lane[c * panel_rows + 1] = bits_of(row[c + 1]);
        }
        if (even_inputs < inputs) {
          lane[even_inputs * panel_rows] = bits_of(row[even_inputs]);
          lane[even_inputs * panel_rows + 1] = 0;
        }
      }
    }
  }

  // The weights W [n, inputs] = w^T, w [inputs, n] (a value tile; row stride `stride`),
  // packed and flushed, zero-padded. requires: depth set for `inputs`.
  void set_weights_columns(const BFloat16* w, Index n, Index inputs, Index stride) {
    TESSERA_ASSERT(depth == round_up(inputs, bf16_group));
    std::uint16_t* out = packed.data();
    for (Index r0 = 0; r0 < round_up(n, panel_rows); r0 += panel_rows) {
      const Index lanes = std::min(panel_rows, n - r0);
      for (Index c = 0; c < depth; c += bf16_group) {
        const BFloat16* even = w + c * stride + r0;  // inputs c and c + 1 of rows r0 ..
        const BFloat16* odd = even + stride;
        const bool has_odd = c + 1 < inputs;
        for (Index j = 0; j < panel_rows; ++j, out += bf16_group) {
          out[0] = j < lanes ? bits_of(even[j]) : std::uint16_t{0};
          out[1] = j < lanes && has_odd ? bits_of(odd[j]) : std::uint16_t{0};
        }
      }
    }
  }

 private:
  static std::uint16_t bits_of(BFloat16 x) {
    return flush_small_bf16(Eigen::numext::bit_cast<std::uint16_t>(x));
  }
};

// out [rows, n] (row stride out_stride) = act W^T, or out += that when accumulate, with the
// activations and weights `scratch` holds, on scratch.path; in the calling thread.
inline void bf16_tile_product(float* out, Index out_stride, Index rows, Index n,
                              const BF16TileScratch& scratch, bool accumulate) {
  BF16Tile tile;
  tile.out = out;
  tile.out_stride = out_stride;
  tile.accumulate = accumulate;
  tile.t0 = 0;
  tile.t1 = rows;
  tile.r0 = 0;
  tile.r1 = n;
  tile.weights = scratch.packed.data();
  tile.act = scratch.path == KernelPath::avx512 ? static_cast<const void*>(scratch.act_bits.data())
                                                : scratch.act_floats.data();
  tile.depth = scratch.depth;
  run_bf16_tile(tile, scratch.path);
}

}  // namespace tessera::detail
