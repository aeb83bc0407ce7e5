#pragma once
// The AVX-512 kernels of the int8 (VNNI) and bfloat16 (BF16) products, compiled whatever the
// build's -march (function target attributes) and run only where the CPU has them
// (detail/cpu.hpp). x86-64 only; elsewhere this header declares nothing.
//
// Both kernels are register-blocked alike: a block of T = 6 tokens x V = 4 panels (64 output
// rows) keeps its 24 sums in 24 of the 32 zmm registers for the whole inner dimension; a step
// loads one group of each of the 4 panels (64 bytes each, lane j = row j of the panel) and, per
// token, broadcasts that token's group (4 bytes) and adds its products into the 4 sums of the
// token: 24 VPDPBUSD or VDPBF16PS for 4 loads and 6 broadcasts. A tile is walked panel
// block by panel block, tokens inside, so the panels' 64 x depth weights stay in L2 while all
// the tile's tokens go past them.
//
// int8 with VNNI. VPDPBUSD multiplies unsigned bytes by signed bytes, 4 pairs into one int32
// lane, without saturation. The activations q in [-127, 127] are stored shifted, u = q + 128
// in [1, 255] (their sign bit flipped), so the lane sums sum_c (q_c + 128) w_c
// = sum_c q_c w_c + 128 sum_c w_c; the second term, 128 times the row's sum of weights, is
// precomputed per row (Int8Rows' offset sums) and subtracted. Every step is exact in int32
// for in <= 65536 (|u w| <= 255 * 127).
//
// bfloat16. VDPBF16PS adds into each float lane the product of the odd elements of the pair,
// then that of the even ones (Intel's pseudo-code), each product exact in float (8 x 8
// significant bits) and each addition rounded to nearest even, with denormal inputs and
// results flushed to zero. The AVX2 and scalar kernels make the same additions in the same
// order, so all paths agree bit for bit while no product or partial sum is denormal.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <tessera/detail/quantized_tile.hpp>

#include <immintrin.h>

#include <cstdint>

#define TESSERA_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define TESSERA_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace tessera::detail {

inline constexpr int avx512_block_tokens = 6;  // T
inline constexpr int avx512_block_panels = 4;  // V

// The int8 block of T tokens from t and V panels from row r, over the whole depth.
template <int T, int V>
TESSERA_TARGET_AVX512_VNNI void int8_block_avx512(const Int8Tile& tile, Index t, Index r) {
  const Index depth = tile.depth;
  const std::int8_t* w = tile.weights + r * depth;  // panel r / 16
  const std::int8_t* x = tile.act + t * depth;
  __m512i sum[T][V];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) sum[i][v] = _mm512_setzero_si512();
  }
  for (Index k = 0; k < depth; k += int8_group) {
    __m512i wv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      wv[v] = _mm512_load_si512(w + v * panel_rows * depth + k * panel_rows);
    }
#pragma GCC unroll 8
    for (int i = 0; i < T; ++i) {
      const __m512i xi = _mm512_set1_epi32(load_group(x + i * depth + k));
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) sum[i][v] = _mm512_dpbusd_epi32(sum[i][v], xi, wv[v]);
    }
  }
  // The sums leave their registers for memory in one unrolled pass: an epilogue indexing
  // sum[i][v] in a loop would make GCC keep the array in memory throughout (a spill a step).
  alignas(64) std::int32_t sums[T][V][panel_rows];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_store_si512(sums[i][v], sum[i][v]);
  }
  // epilogue: sum - 128 * sum_c w, then fma(float(sum), s_t * scale, base)
  for (int v = 0; v < V; ++v) {
    const Index row = r + v * panel_rows;
    const __m512i offset = _mm512_loadu_si512(tile.offset_sums + row);
    const bool full = row + panel_rows <= tile.r1;
    for (int i = 0; i < T; ++i) {
      const __m512i exact = _mm512_sub_epi32(_mm512_load_si512(sums[i][v]), offset);
      const float s = tile.act_scale[t + i];
      float* out = tile.out + (t + i) * tile.out_stride + row;
      if (full) {
        const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(s), _mm512_loadu_ps(tile.scale + row));
        __m512 base = _mm512_setzero_ps();
        if (tile.accumulate) base = _mm512_loadu_ps(out);
        if (tile.bias != nullptr) {
          const __m512 bias = _mm512_loadu_ps(tile.bias + row);
          base = tile.accumulate ? _mm512_add_ps(base, bias) : bias;
        }
        // (maskz_cvtepi32_ps with every lane: cvtepi32_ps's undefined source draws GCC 12's
        // false -Wmaybe-uninitialized from its own header)
        const __m512 sum_float = _mm512_maskz_cvtepi32_ps(0xffff, exact);
        _mm512_storeu_ps(out, _mm512_fmadd_ps(sum_float, scale, base));
      } else {  // the last, partial panel: the same arithmetic one output at a time
        alignas(64) std::int32_t exact_sums[panel_rows];
        _mm512_store_si512(exact_sums, exact);
        for (Index j = 0; j < tile.r1 - row; ++j) {
          out[j] = int8_output(exact_sums[j], s, tile.scale[row + j], tile.base(t + i, row + j));
        }
      }
    }
  }
}

// The bfloat16 block of T tokens from t and V panels from row r, over the whole depth.
template <int T, int V>
TESSERA_TARGET_AVX512_BF16 void bf16_block_avx512(const BF16Tile& tile, Index t, Index r) {
  const Index depth = tile.depth;
  const std::uint16_t* w = tile.weights + r * depth;  // panel r / 16
  const std::uint16_t* x = static_cast<const std::uint16_t*>(tile.act) + t * depth;
  __m512 sum[T][V];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) sum[i][v] = _mm512_setzero_ps();
  }
  for (Index k = 0; k < depth; k += bf16_group) {
    __m512bh wv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      wv[v] = (__m512bh)_mm512_load_si512(w + v * panel_rows * depth + k * panel_rows);
    }
#pragma GCC unroll 8
    for (int i = 0; i < T; ++i) {
      const __m512bh xi = (__m512bh)_mm512_set1_epi32(load_group(x + i * depth + k));
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) sum[i][v] = _mm512_dpbf16_ps(sum[i][v], xi, wv[v]);
    }
  }
  alignas(64) float sums[T][V][panel_rows];  // out of the registers in one pass (see above)
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) _mm512_store_ps(sums[i][v], sum[i][v]);
  }
  for (int v = 0; v < V; ++v) {
    const Index row = r + v * panel_rows;
    const bool full = row + panel_rows <= tile.r1;
    const bool has_base = tile.accumulate || tile.bias != nullptr;
    for (int i = 0; i < T; ++i) {
      float* out = tile.out + (t + i) * tile.out_stride + row;
      if (full) {
        __m512 y = _mm512_load_ps(sums[i][v]);
        if (has_base) {
          __m512 base = _mm512_setzero_ps();
          if (tile.accumulate) base = _mm512_loadu_ps(out);
          if (tile.bias != nullptr) {
            const __m512 bias = _mm512_loadu_ps(tile.bias + row);
            base = tile.accumulate ? _mm512_add_ps(base, bias) : bias;
          }
          y = _mm512_add_ps(base, y);
        }
        _mm512_storeu_ps(out, y);
      } else {
        for (Index j = 0; j < tile.r1 - row; ++j) {
          out[j] = bf16_output(sums[i][v][j], tile, t + i, row + j);
        }
      }
    }
  }
}

// The kernels as run_tile (quantized_tile.hpp) takes them.
struct Int8Avx512 {
  static constexpr int tokens = avx512_block_tokens, panels = avx512_block_panels;
  template <int T, int V>
  static void block(const Int8Tile& tile, Index t, Index r) { int8_block_avx512<T, V>(tile, t, r); }
};
struct BF16Avx512 {
  static constexpr int tokens = avx512_block_tokens, panels = avx512_block_panels;
  template <int T, int V>
  static void block(const BF16Tile& tile, Index t, Index r) { bf16_block_avx512<T, V>(tile, t, r); }
};

}  // namespace tessera::detail

#endif  // __x86_64__
