#pragma once
// The AVX2 kernels of the int8 and bfloat16 products (AVX2 and FMA, the path nearly every x86-64
// machine of the last ten years runs), compiled whatever the build's -march (function target
// attributes) and run only where the CPU has them (detail/cpu.hpp). x86-64 only.
//
// Both read the packed panels of quantized_tile.hpp: a group of a panel is two ymm registers
// (rows 0-7 and 8-15 of the panel). A block of T tokens x one panel keeps its 2T sums in ymm
// registers for the whole inner dimension (T = 4 for int8, 6 for bfloat16: see below).
//
// int8 (ggml's trick). AVX2 has no int8 dot product into int32; VPMADDUBSW multiplies unsigned
// bytes by signed bytes and adds adjacent pairs into int16, with saturation. Its unsigned
// operand is |a| (the token's group, broadcast; int8_matmul stores the tokens' |a| beside a
// when it quantizes them, since a VPABSB a step was a tenth of the kernel's vector
// instructions and cost it 20 %) and its signed one w with a's signs (VPSIGNB(w, a): -w where
// a < 0, 0 where a = 0), so each product is |a| * sign(a) w = a w.
// Since |a|, |w| <= 127, a pair sum is at most 2 * 127 * 127 = 32258 < 32767: it never
// saturates. VPMADDWD against ones adds the int16 pairs into int32 lanes, one per row, each the
// exact sum of that row's 4 products; the block adds those into its sums. Four instructions per
// 32 multiply-adds (sign, maddubs, madd, add), two of them multiplies, where VNNI takes one per
// 64; the kernel is bound by both its vector ALUs and its multiply ports.
//
// bfloat16. A group is 8 rows x 2 bfloat16 per ymm register, each 32-bit lane holding one row's
// pair (even input in the low half, odd one in the high half); masking the low half off gives
// the odd input as a float, shifting left by 16 the even one. The activations are floats
// already rounded to bfloat16. Each lane then takes an FMA with the odd input's product and one
// with the even one's, in that order: the products are exact in float, so each FMA rounds just
// as VDPBF16PS's addition does (see quantized_kernels_avx512.hpp), and the paths agree bit for
// bit.

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <tessera/detail/quantized_tile.hpp>

#include <immintrin.h>

#include <cstdint>

#define TESSERA_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace tessera::detail {

// Tokens a block: int8 runs as fast with 3 to 6 (bench_quantized), 4 keeps every value in a
// register; the bfloat16 kernel gains from 6 (its widened weights are reused by more tokens).
inline constexpr int avx2_int8_tokens = 4;
inline constexpr int avx2_bf16_tokens = 6;

// The int8 block of T tokens from t and the panel at row r, over the whole depth.
template <int T>
TESSERA_TARGET_AVX2 void int8_block_avx2(const Int8Tile& tile, Index t, Index r) {
  const Index depth = tile.depth;
  const std::int8_t* w = tile.weights + r * depth;  // panel r / 16
  const std::int8_t* x = tile.act + t * depth;
  const std::int8_t* xa = tile.act_abs + t * depth;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i sum[T][2];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) sum[i][0] = sum[i][1] = _mm256_setzero_si256();
  for (Index k = 0; k < depth; k += int8_group) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + k * panel_rows));
    const __m256i w1 =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(w + k * panel_rows + 32));
#pragma GCC unroll 8
    for (int i = 0; i < T; ++i) {
      const __m256i a = _mm256_set1_epi32(load_group(x + i * depth + k));
      const __m256i a_abs = _mm256_set1_epi32(load_group(xa + i * depth + k));
      const __m256i p0 = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(w0, a));
      const __m256i p1 = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(w1, a));
      sum[i][0] = _mm256_add_epi32(sum[i][0], _mm256_madd_epi16(p0, ones));
      sum[i][1] = _mm256_add_epi32(sum[i][1], _mm256_madd_epi16(p1, ones));
    }
  }
  // The sums leave their registers for memory in one unrolled pass: an epilogue indexing
  // sum[i][h] in a loop would make GCC keep the array in memory throughout (a spill a step).
  alignas(32) std::int32_t sums[T][panel_rows];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums[i]), sum[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums[i] + 8), sum[i][1]);
  }
  // epilogue: fma(float(sum), s_t * scale, base), as on every path
  const bool full = r + panel_rows <= tile.r1;
  for (int i = 0; i < T; ++i) {
    const float s = tile.act_scale[t + i];
    float* out = tile.out + (t + i) * tile.out_stride + r;
    if (full) {
      for (int h = 0; h < 2; ++h) {
        const __m256 scale = _mm256_mul_ps(_mm256_set1_ps(s), _mm256_loadu_ps(tile.scale + r + 8 * h));
        __m256 base = _mm256_setzero_ps();
        if (tile.accumulate) base = _mm256_loadu_ps(out + 8 * h);
        if (tile.bias != nullptr) {
          const __m256 bias = _mm256_loadu_ps(tile.bias + r + 8 * h);
          base = tile.accumulate ? _mm256_add_ps(base, bias) : bias;
        }
        _mm256_storeu_ps(out + 8 * h,
                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_load_si256(
                                             reinterpret_cast<const __m256i*>(sums[i] + 8 * h))),
                                         scale, base));
      }
    } else {  // the last, partial panel: the same arithmetic one output at a time
      for (Index j = 0; j < tile.r1 - r; ++j) {
        out[j] = int8_output(sums[i][j], s, tile.scale[r + j], tile.base(t + i, r + j));
      }
    }
  }
}

// The bfloat16 block of T tokens from t and the panel at row r, over the whole depth.
template <int T>
TESSERA_TARGET_AVX2 void bf16_block_avx2(const BF16Tile& tile, Index t, Index r) {
  const Index depth = tile.depth;
  const std::uint16_t* w = tile.weights + r * depth;  // panel r / 16
  const float* x = static_cast<const float*>(tile.act) + t * depth;
  const __m256i high = _mm256_set1_epi32(static_cast<std::int32_t>(0xffff0000u));
  __m256 sum[T][2];
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) sum[i][0] = sum[i][1] = _mm256_setzero_ps();
  for (Index k = 0; k < depth; k += bf16_group) {
    __m256 odd[2], even[2];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i pairs =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(w + k * panel_rows + 16 * h));
      odd[h] = _mm256_castsi256_ps(_mm256_and_si256(pairs, high));
      even[h] = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    }
#pragma GCC unroll 8
    for (int i = 0; i < T; ++i) {
      const __m256 a_odd = _mm256_broadcast_ss(x + i * depth + k + 1);
      const __m256 a_even = _mm256_broadcast_ss(x + i * depth + k);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        sum[i][h] = _mm256_fmadd_ps(a_odd, odd[h], sum[i][h]);
        sum[i][h] = _mm256_fmadd_ps(a_even, even[h], sum[i][h]);
      }
    }
  }
  alignas(32) float sums[T][panel_rows];  // out of the registers in one pass (see above)
#pragma GCC unroll 8
  for (int i = 0; i < T; ++i) {
    _mm256_store_ps(sums[i], sum[i][0]);
    _mm256_store_ps(sums[i] + 8, sum[i][1]);
  }
  const bool full = r + panel_rows <= tile.r1;
  const bool has_base = tile.accumulate || tile.bias != nullptr;
  for (int i = 0; i < T; ++i) {
    float* out = tile.out + (t + i) * tile.out_stride + r;
    if (full) {
      for (int h = 0; h < 2; ++h) {
        __m256 y = _mm256_load_ps(sums[i] + 8 * h);
        if (has_base) {
          __m256 base = _mm256_setzero_ps();
          if (tile.accumulate) base = _mm256_loadu_ps(out + 8 * h);
          if (tile.bias != nullptr) {
            const __m256 bias = _mm256_loadu_ps(tile.bias + r + 8 * h);
            base = tile.accumulate ? _mm256_add_ps(base, bias) : bias;
          }
          y = _mm256_add_ps(base, y);
        }
        _mm256_storeu_ps(out + 8 * h, y);
      }
    } else {
      for (Index j = 0; j < tile.r1 - r; ++j) {
        out[j] = bf16_output(sums[i][j], tile, t + i, r + j);
      }
    }
  }
}

// The kernels as run_tile (quantized_tile.hpp) takes them.
struct Int8Avx2 {
  static constexpr int tokens = avx2_int8_tokens, panels = 1;
  template <int T, int V>
  static void block(const Int8Tile& tile, Index t, Index r) { int8_block_avx2<T>(tile, t, r); }
};
struct BF16Avx2 {
  static constexpr int tokens = avx2_bf16_tokens, panels = 1;
  template <int T, int V>
  static void block(const BF16Tile& tile, Index t, Index r) { bf16_block_avx2<T>(tile, t, r); }
};

}  // namespace tessera::detail

#endif  // __x86_64__
