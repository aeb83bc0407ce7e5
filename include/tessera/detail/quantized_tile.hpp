#pragma once
// What the quantized kernels share: the packed weight layout, one tile of work, and the
// epilogue that turns a tile's sums into outputs.
//
// Packed layout. A weight [out, in] is held in panels of panel_rows = 16 output rows (the last
// one padded with zero rows); inside a panel the inputs go in groups of g (g = 4 int8 values,
// the 4 bytes VPDPBUSD multiplies into one int32 lane; g = 2 bfloat16 values, the pair
// VDPBF16PS multiplies into one float lane), and a group holds its g inputs for each of the 16
// rows in turn:
//
//   panel p, group k/g:  row 16p+0: in k .. k+g-1 | row 16p+1: in k .. k+g-1 | ... | row 16p+15
//
// so one group of a panel is 64 bytes, one AVX-512 register (two AVX2 ones: rows 0-7, 8-15),
// lane j holding row 16p+j, and a panel is a contiguous stream the kernels read front to back.
// `in` is padded with zero weights to depth, a multiple of g. Element (r, c) lives at
//   (r / 16) * 16 * depth + (c / g) * 16 * g + (r % 16) * g + c % g.
//
// The activations of a call are prepared once (quantized to int8, or rounded to bfloat16) into
// a scratch matrix [L, depth] padded with zeros, which the kernels read a group at a time and
// broadcast to every lane.
//
// A tile of the output is tokens [t0, t1) x output rows [r0, r1), r0 a multiple of 16: the
// threads of a product each take whole tiles (detail::matmul_tiles), and a kernel writes each
// output of its tile once, with the epilogue below. Only tile_epilogue's arithmetic depends on
// the path's vector width, and it is written so that every path rounds alike (see there).

#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

namespace tessera::detail {

inline constexpr Index panel_rows = 16;  // output rows of a packed panel
inline constexpr Index int8_group = 4;   // inputs of an int8 group (VPDPBUSD's 4 bytes)
inline constexpr Index bf16_group = 2;   // inputs of a bfloat16 group (VDPBF16PS's pair)

// An allocator of 64-byte aligned memory: a packed panel group is one cache line, and an
// AVX-512 load of one never straddles two.
template <class T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t alignment{64};
  CacheAligned() = default;
  template <class U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, alignment); }
  template <class U>
  bool operator==(const CacheAligned<U>&) const { return true; }
};

// `count` rounded up to a multiple of `step`.
inline Index round_up(Index count, Index step) { return (count + step - 1) / step * step; }

// The offset of weight (r, c) in a packed matrix of `depth` inputs with groups of `group`.
inline Index packed_offset(Index r, Index c, Index depth, Index group) {
  return (r / panel_rows) * panel_rows * depth + (c / group) * panel_rows * group +
         (r % panel_rows) * group + c % group;
}

// Calls f(r, c, packed value) for each weight (r, c) of a packed [rows, cols] matrix, walking
// the packing front to back (no offset arithmetic per weight; the padding is skipped).
template <class T, class F>
void for_each_packed(const T* packed, Index rows, Index cols, Index depth, Index group, F&& f) {
  for (Index r0 = 0; r0 < rows; r0 += panel_rows) {
    const T* panel = packed + r0 * depth;
    const Index panel_end = std::min(rows - r0, panel_rows);
    for (Index c0 = 0; c0 < cols; c0 += group) {
      const T* values = panel + c0 * panel_rows;
      const Index group_end = std::min(cols - c0, group);
      for (Index j = 0; j < panel_end; ++j) {
        for (Index e = 0; e < group_end; ++e) f(r0 + j, c0 + e, values[j * group + e]);
      }
    }
  }
}

// 4 bytes (an int8 group, a bfloat16 pair) as one 32-bit word, to broadcast.
inline std::int32_t load_group(const void* p) {
  std::int32_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

// Where a kernel's tile writes, and what it adds: out [L, out] (row stride out_stride),
// bias [out] or null, and whether the old out is added (accumulate).
struct TileOutput {
  float* out = nullptr;
  Index out_stride = 0;
  const float* bias = nullptr;
  bool accumulate = false;
  Index t0 = 0, t1 = 0;  // tokens of the tile
  Index r0 = 0, r1 = 0;  // output rows of the tile (r0 a multiple of panel_rows)

  // What the product is added onto at (t, r): the old out (accumulate) plus the bias, in that
  // order; 0 when neither.
  float base(Index t, Index r) const {
    const float old = accumulate ? out[t * out_stride + r] : 0.0f;
    if (bias == nullptr) return old;
    return accumulate ? old + bias[r] : bias[r];
  }
};

// One tile of an int8 product: weights and activations as the kernels read them.
struct Int8Tile : TileOutput {
  const std::int8_t* weights = nullptr;      // packed panels (layout above, g = 4)
  const std::int32_t* offset_sums = nullptr;  // [panels * 16] 128 * sum_c value(r, c)
  const float* scale = nullptr;               // [out] the weight rows' scales
  const std::int8_t* act = nullptr;  // [L, depth] quantized activations (+128 for avx512)
  const std::int8_t* act_abs = nullptr;  // [L, depth] |act| (the avx2 kernel's unsigned operand)
  const float* act_scale = nullptr;  // [L] the tokens' scales s_t
  Index depth = 0;                   // in, rounded up to a multiple of 4
};

// One tile of a bfloat16 product.
struct BF16Tile : TileOutput {
  const std::uint16_t* weights = nullptr;  // packed panels (layout above, g = 2), bf16 bits
  const void* act = nullptr;  // [L, depth]: bf16 bits (avx512) or float rounded to bf16 (others)
  Index depth = 0;            // in, rounded up to a multiple of 2
};

// The int8 epilogue: out(t, r) = fma(float(sum), s_t * scale[r], base(t, r)), one rounding
// for the product and the addition. std::fma and the vector kernels' fmadd round alike
// (correctly), so every path gives the same bits; a plain a * b + c would be fused or not at
// the compiler's whim (-ffp-contract), differently in scalar and vector code.
inline float int8_output(std::int32_t sum, float token_scale, float row_scale, float base) {
  return std::fma(static_cast<float>(sum), token_scale * row_scale, base);
}

// The bfloat16 epilogue: out(t, r) = base(t, r) + sum, or the sum alone when there is no base.
inline float bf16_output(float sum, const TileOutput& tile, Index t, Index r) {
  if (!tile.accumulate && tile.bias == nullptr) return sum;
  return tile.base(t, r) + sum;
}

// Runs Kernel::block<T, V>(tile, t, r), a block of T tokens from t and V panels from row r,
// over the tile: blocks of Kernel::tokens x Kernel::panels, smaller ones at the edges (the
// compiler sees each block shape as constants: T and V fix the registers that hold the sums).
// Panel blocks outside, tokens inside: a block's panels stay in cache while the tile's tokens
// go past them.
template <class Kernel, int T, int V, class Tile>
void run_block(const Tile& tile, Index t, Index r, Index tokens, Index panels) {
  if constexpr (T > 1) {
    if (tokens < T) return run_block<Kernel, T - 1, V>(tile, t, r, tokens, panels);
  }
  if constexpr (V > 1) {
    if (panels < V) return run_block<Kernel, T, V - 1>(tile, t, r, tokens, panels);
  }
  Kernel::template block<T, V>(tile, t, r);
}

template <class Kernel, class Tile>
void run_tile(const Tile& tile) {
  constexpr Index block_rows = Kernel::panels * panel_rows;
  for (Index r = tile.r0; r < tile.r1; r += block_rows) {
    const Index panels = std::min<Index>(Kernel::panels, (tile.r1 - r + panel_rows - 1) / panel_rows);
    for (Index t = tile.t0; t < tile.t1; t += Kernel::tokens) {
      const Index tokens = std::min<Index>(Kernel::tokens, tile.t1 - t);
      run_block<Kernel, Kernel::tokens, Kernel::panels>(tile, t, r, tokens, panels);
    }
  }
}

}  // namespace tessera::detail
