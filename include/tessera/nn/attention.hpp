#pragma once
// Multi-head attention (SPEC 3), for self attention over a packed batch and for cross
// attention (the video pooler's learned queries).
//
//   q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv      (RoPE on q and k when given)
//   per head h:  P_h = softmax(q_h k_h^T / sqrt(dh) + mask),   ctx_h = P_h v_h
//   out = concat_h(ctx_h) Wo^T + bo
//
// A packed batch holds several samples back to back without padding; AttentionSegments says
// which rows of q see which rows of k (a sample only attends to itself), and which range of
// each sample is causal text (a text token does not see later text tokens; every other pair
// is allowed: the mixed causal/bidirectional mask). Two kernels compute it: attention_fused,
// which the layer uses (tiled, never holding the [Lq, Lk] scores), and attention_reference
// (plain: materialized scores), kept for the tests and as the benchmarks' baseline.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/bfloat16.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/rope.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace tessera::nn {

// Which queries see which keys. Segment s pairs query rows [query_offsets[s], query_offsets[s+1])
// with key rows [key_offsets[s], key_offsets[s+1]). Within a segment, rows in the causal range
// [causal_begin[s], causal_end[s]) (absolute key-row indices; an empty range when the segment
// has no causal part) do not see causal rows after them. Query row i stands at key row
// i + query_shift[s] for that rule: 0 in self attention (query row i is key row i), the
// cache's length when new tokens attend to a KV cache followed by their own keys. An empty
// query_shift means 0 for every segment.
struct AttentionSegments {
  std::vector<Index> query_offsets;  // [N+1]
  std::vector<Index> key_offsets;    // [N+1]
  std::vector<Index> causal_begin;   // [N]
  std::vector<Index> causal_end;     // [N]
  std::vector<Index> query_shift;    // [N] or empty

  Index size() const { return static_cast<Index>(query_offsets.size()) - 1; }
  Index shift(std::size_t s) const { return query_shift.empty() ? 0 : query_shift[s]; }

  // One segment where all `length` tokens see each other.
  static AttentionSegments full(Index length) { return full(length, length); }
  // One segment of `queries` query rows seeing all `keys` key rows.
  static AttentionSegments full(Index queries, Index keys) {
    return AttentionSegments{{0, queries}, {0, keys}, {0}, {0}, {}};
  }
  // Self attention over samples packed back to back: offsets [N+1]; no causal part.
  static AttentionSegments packed(const std::vector<Index>& offsets) {
    const std::size_t n = offsets.size() - 1;
    return AttentionSegments{offsets, offsets, std::vector<Index>(n, 0), std::vector<Index>(n, 0), {}};
  }

  // Adds a causal range [begin, end) to segment s (self attention only).
  void set_causal(Index s, Index begin, Index end) {
    causal_begin[static_cast<std::size_t>(s)] = begin;
    causal_end[static_cast<std::size_t>(s)] = end;
  }
};

// The attention of SPEC 3 on already projected q, k, v: for each segment and head,
// ctx = softmax(q k^T / sqrt(dh) + mask) v. Materializes one [nq, nk] score block per task.
// requires: q, ctx [Lq, H*dh]; k, v [Lk, H*dh]; segments within those rows.
// ensures: the rows of ctx covered by segments are assigned.
template <class Scalar>
void attention_reference(MatrixRef<Scalar> ctx,              // [Lq, H*dh]
                         const ConstMatrixRef<Scalar>& q,    // [Lq, H*dh]
                         const ConstMatrixRef<Scalar>& k,    // [Lk, H*dh]
                         const ConstMatrixRef<Scalar>& v,    // [Lk, H*dh]
                         Index heads, const AttentionSegments& segments) {
  TESSERA_ASSERT(q.cols() % heads == 0 && k.cols() == q.cols() && v.cols() == q.cols());
  const Index dh = q.cols() / heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(dh));
  const Index tasks = segments.size() * heads;
#pragma omp parallel for schedule(dynamic)
  for (Index task = 0; task < tasks; ++task) {
    const auto s = static_cast<std::size_t>(task / heads);
    const Index h = task % heads;
    const Index q0 = segments.query_offsets[s], nq = segments.query_offsets[s + 1] - q0;
    const Index k0 = segments.key_offsets[s], nk = segments.key_offsets[s + 1] - k0;
    if (nq == 0 || nk == 0) continue;
    Matrix<Scalar> probs(nq, nk);  // [nq, nk] scores, then probabilities
    probs.noalias() = q.block(q0, h * dh, nq, dh) * k.block(k0, h * dh, nk, dh).transpose();
    probs *= scale;
    const Index cb = segments.causal_begin[s], ce = segments.causal_end[s];
    const Index a0 = q0 + segments.shift(s);  // the key row the first query stands at
    for (Index a = std::max(cb, a0); a < std::min(ce, a0 + nq); ++a) {
      // the query at key row a (causal text) does not see causal keys j > a
      for (Index j = std::max(a + 1, k0); j < std::min(ce, k0 + nk); ++j) {
        probs(a - a0, j - k0) = -std::numeric_limits<Scalar>::infinity();
      }
    }
    for (Index i = 0; i < nq; ++i) {
      auto row = probs.row(i);
      row.array() = (row.array() - row.maxCoeff()).exp();
      row /= row.sum();
    }
    ctx.block(q0, h * dh, nq, dh).noalias() = probs * v.block(k0, h * dh, nk, dh);
  }
}

// The fused kernel's tiles: a task is one (head, segment, tile of attention_query_tile
// queries); it walks the segment's keys attention_key_tile at a time.
inline constexpr Index attention_query_tile = 64;
inline constexpr Index attention_key_tile = 512;

// The same attention as attention_reference, fused and tiled (the FlashAttention algorithm,
// Dao et al. 2022): for each query tile it walks the key tiles once, keeping for each query
// row the running maximum m of its scores, the running sum l of exp(score - m) and the
// running weighted sum of values o, rescaled whenever m grows (the online softmax). The
// [nq, nk] scores are never materialized: a thread holds one [64, 512] score tile, so memory
// is O(tile) per thread, whatever L. Key tiles that the causal mask hides entirely are
// skipped. Tasks are independent and each is computed by the same code whatever thread runs
// it, so the result does not depend on the thread count. The result differs from
// attention_reference only by rounding (q is scaled before the product, and the softmax's
// sum is accumulated tile by tile).
// k and v may be stored in bfloat16 instead of Scalar (KV = BFloat16, see KVPrecision);
// each key tile is then converted to Scalar in a per-thread buffer before its products, so
// the result equals this kernel's on k and v converted to Scalar beforehand, bit for bit.
// requires: q, ctx [Lq, H*dh]; k, v [Lk, H*dh]; segments within those rows.
// ensures: the rows of ctx covered by segments are assigned.
template <class Scalar, class KV = Scalar>
void attention_fused(MatrixRef<Scalar> ctx,              // [Lq, H*dh]
                     const ConstMatrixRef<Scalar>& q,    // [Lq, H*dh]
                     const ConstMatrixRef<std::type_identity_t<KV>>& k,  // [Lk, H*dh]
                     const ConstMatrixRef<std::type_identity_t<KV>>& v,  // [Lk, H*dh]
                     Index heads, const AttentionSegments& segments) {
  constexpr bool convert = !std::is_same_v<KV, Scalar>;
  static_assert(!convert || std::is_same_v<KV, BFloat16>, "k and v: Scalar or BFloat16");
  TESSERA_ASSERT(q.cols() % heads == 0 && k.cols() == q.cols() && v.cols() == q.cols());
  constexpr Index tile_rows = attention_query_tile, tile_keys = attention_key_tile;
  constexpr Scalar minus_infinity = -std::numeric_limits<Scalar>::infinity();
  const Index dh = q.cols() / heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(dh));

  // first_tile[s]: the index of segment s's first query tile among all segments' tiles.
  const auto segment_count = static_cast<std::size_t>(segments.size());
  std::vector<Index> first_tile(segment_count + 1, 0);
  for (std::size_t s = 0; s < segment_count; ++s) {
    const Index nq = segments.query_offsets[s + 1] - segments.query_offsets[s];
    const Index nk = segments.key_offsets[s + 1] - segments.key_offsets[s];
    first_tile[s + 1] = first_tile[s] + (nk > 0 ? (nq + tile_rows - 1) / tile_rows : 0);
  }
  const Index tiles = first_tile.back();
  const Index tasks = tiles * heads;

#pragma omp parallel if (tasks > 1)
  {
    Matrix<Scalar> q_tile(tile_rows, dh);          // [64, dh] the tile's queries, scaled
    Matrix<Scalar> scores(tile_rows, tile_keys);   // [64, 512] scores, then exp(score - m)
    Matrix<Scalar> out(tile_rows, dh);             // [64, dh] o: sum of exp(score - m) v
    Vector<Scalar> row_max(tile_rows);             // [64] m
    Vector<Scalar> row_sum(tile_rows);             // [64] l
    Matrix<Scalar> k_tile(convert ? tile_keys : 0, dh);  // [512, dh] k converted (convert only)
    Matrix<Scalar> v_tile(convert ? tile_keys : 0, dh);  // [512, dh] v converted (convert only)
#pragma omp for schedule(dynamic)
    for (Index task = 0; task < tasks; ++task) {
      // Heads outer, tiles inner: threads working at the same time share a head's k and v.
      const Index h = task / tiles, tile = task % tiles;
      const auto s = static_cast<std::size_t>(
          std::upper_bound(first_tile.begin(), first_tile.end(), tile) - first_tile.begin() - 1);
      const Index i0 = segments.query_offsets[s] + (tile - first_tile[s]) * tile_rows;
      const Index rows = std::min(tile_rows, segments.query_offsets[s + 1] - i0);
      const Index k0 = segments.key_offsets[s], k1 = segments.key_offsets[s + 1];
      const Index cb = segments.causal_begin[s], ce = segments.causal_end[s];
      const Index a0 = i0 + segments.shift(s);  // the key row the tile's first query stands at
      // the tile's causal queries, at key rows [ci0, ci1): they do not see causal keys after them
      const Index ci0 = std::max(a0, cb), ci1 = std::min(a0 + rows, ce);
      const bool all_rows_causal = ci0 == a0 && ci1 == a0 + rows;

      q_tile.topRows(rows) = q.block(i0, h * dh, rows, dh) * scale;
      row_max.head(rows).setConstant(minus_infinity);
      row_sum.head(rows).setZero();
      out.topRows(rows).setZero();
      for (Index j0 = k0; j0 < k1; j0 += tile_keys) {
        const Index keys = std::min(tile_keys, k1 - j0);
        // Every (row, key) pair of the tile is masked: skip it.
        if (all_rows_causal && j0 >= cb && j0 + keys <= ce && j0 > a0 + rows - 1) continue;
        auto p = scores.topLeftCorner(rows, keys);
        if constexpr (convert) {
          detail::widen(k_tile.topRows(keys), k.block(j0, h * dh, keys, dh));
          detail::gemm<true>(p, q_tile.topRows(rows), k_tile.topRows(keys), false);
        } else {
          detail::gemm<true>(p, q_tile.topRows(rows), k.block(j0, h * dh, keys, dh), false);
        }
        for (Index a = ci0; a < ci1; ++a) {
          for (Index j = std::max(a + 1, std::max(j0, cb)); j < std::min(ce, j0 + keys); ++j) {
            p(a - a0, j - j0) = minus_infinity;
          }
        }
        // The online softmax, row by row (each row a contiguous, vectorized run).
        for (Index r = 0; r < rows; ++r) {
          auto row = p.row(r);
          const Scalar new_max = std::max(row_max[r], row.maxCoeff());
          if (new_max == minus_infinity) {  // every key so far hidden from this row
            row.setZero();
            continue;
          }
          const Scalar rescale = std::exp(row_max[r] - new_max);  // 0 for the first keys
          row.array() = (row.array() - new_max).exp();
          row_sum[r] = row_sum[r] * rescale + row.sum();
          out.row(r) *= rescale;
          row_max[r] = new_max;
        }
        if constexpr (convert) {
          detail::widen(v_tile.topRows(keys), v.block(j0, h * dh, keys, dh));
          detail::gemm<false>(out.topRows(rows), p, v_tile.topRows(keys), true);
        } else {
          detail::gemm<false>(out.topRows(rows), p, v.block(j0, h * dh, keys, dh), true);
        }
      }
      ctx.block(i0, h * dh, rows, dh) =
          out.topRows(rows).array().colwise() / row_sum.head(rows).array();
    }
  }
}

// How an attention layer stores the keys and values its kernel reads: in the layer's own
// Scalar (native), or in bfloat16 (8 bits of mantissa: half the memory of float, and half
// the bytes the kernel streams per key tile). With bfloat16, k and v are rounded to nearest
// even after projection and RoPE, and converted back to Scalar tile by tile for the
// products (exact: every bfloat16 is a float); q, the scores, the softmax and the
// accumulation stay in Scalar. docs/encoder.md gives the error this costs against float.
enum class KVPrecision { native, bfloat16 };

// The keys and values of the tokens encoded so far, for incremental encoding: new tokens
// attend to them without recomputing them. Stored in Scalar or in bfloat16 (`precision`,
// fixed by the first append). Rows grow by doubling, so appending n tokens to a cache of Lc
// costs O(n) amortized copies, not O(Lc).
template <class Scalar>
struct KVCache {
  KVPrecision precision = KVPrecision::native;
  Matrix<Scalar> k, v;      // native: [capacity, D], rows [0, length) the keys (after RoPE) and values
  Matrix<BFloat16> k16, v16;  // bfloat16: the same, rounded to bfloat16
  Index length = 0;         // Lc

  Index width() const { return precision == KVPrecision::native ? k.cols() : k16.cols(); }  // D

  // Calls f(keys [Lc, D], values [Lc, D]) on the cached rows, in their stored type.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (precision == KVPrecision::bfloat16) {
      return f(k16.topRows(length), v16.topRows(length));
    }
    return f(k.topRows(length), v.topRows(length));
  }

  // Appends n rows; an empty cache takes `as` for its precision.
  // requires: new_k, new_v [n, D] (D fixed by the first append).
  void append(const ConstMatrixRef<Scalar>& new_k, const ConstMatrixRef<Scalar>& new_v,
              KVPrecision as = KVPrecision::native) {
    if (length == 0) precision = as;
    if (precision == KVPrecision::bfloat16) {
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

template <class Scalar>
struct MultiHeadAttention {
  Index heads = 1;  // H
  Linear<Scalar> q_proj;    // [D, D] with bias
  Linear<Scalar> k_proj;    // [D, D] with bias
  Linear<Scalar> v_proj;    // [D, D] with bias
  Linear<Scalar> out_proj;  // [D, D] with bias
  KVPrecision kv_precision = KVPrecision::native;  // a setting, not a weight

  struct Saved {
    Matrix<Scalar> q;    // [Lq, D] after RoPE
    Matrix<Scalar> k;    // [Lk, D] after RoPE
    Matrix<Scalar> v;    // [Lk, D]
    Matrix<Scalar> ctx;  // [Lq, D] heads concatenated, before out_proj
  };

  MultiHeadAttention() = default;
  MultiHeadAttention(Index dim, Index num_heads)
      : heads(num_heads),
        q_proj(dim, dim, true),
        k_proj(dim, dim, true),
        v_proj(dim, dim, true),
        out_proj(dim, dim, true) {
    check(num_heads > 0 && dim % num_heads == 0, "attention: dim ", dim,
          " is not divisible by heads ", num_heads);
  }

  Index dim() const { return q_proj.in_features(); }
  Index head_dim() const { return dim() / heads; }

  // Self attention: queries, keys and values all come from x. RoPE (when rope is given)
  // rotates q and k by positions [L, 3].
  // requires: x [L, D]; segments.query_offsets == key_offsets cover [0, L).
  // ensures: out is assigned.
  void forward(MatrixRef<Scalar> out,                  // [L, D]
               const ConstMatrixRef<Scalar>& x,        // [L, D]
               const AttentionSegments& segments,
               const Rope<Scalar>* rope = nullptr,
               const Positions* positions = nullptr,
               Saved* saved = nullptr) const {
    forward_cross(out, x, x, segments, rope, positions, saved);
  }

  // Cross attention: queries from x_q, keys and values from x_kv (no RoPE unless given,
  // in which case positions index the rows of both: self attention).
  void forward_cross(MatrixRef<Scalar> out,                 // [Lq, D]
                     const ConstMatrixRef<Scalar>& x_q,     // [Lq, D]
                     const ConstMatrixRef<Scalar>& x_kv,    // [Lk, D]
                     const AttentionSegments& segments,
                     const Rope<Scalar>* rope = nullptr,
                     const Positions* positions = nullptr,
                     Saved* saved = nullptr) const {
    Saved local;
    Saved& s = saved != nullptr ? *saved : local;
    project(s, x_q, x_kv, rope, positions);
    if (kv_precision == KVPrecision::bfloat16) {
      const Matrix<BFloat16> k16 = s.k.template cast<BFloat16>();  // [Lk, D]
      const Matrix<BFloat16> v16 = s.v.template cast<BFloat16>();  // [Lk, D]
      attention_fused<Scalar, BFloat16>(s.ctx, s.q, k16, v16, heads, segments);
    } else {
      attention_fused<Scalar>(s.ctx, s.q, s.k, s.v, heads, segments);
    }
    out_proj.forward(out, s.ctx);
  }

  // Incremental self attention: x holds n new tokens of one sample. Their keys and values
  // (after RoPE) are appended to the cache, then each new token attends to every cached
  // token and to the new ones, except that within the causal range [causal_begin,
  // causal_end) of key rows (cache rows first, then new token i at row Lc + i; an empty range
  // for none) a token does not see later ones. The cached tokens are not recomputed. An empty
  // cache takes this layer's kv_precision; a started one keeps its own.
  // requires: x [n, D]; positions [n, 3] (the new tokens') when rope is given.
  // ensures: out is assigned; cache.length grew by n.
  void forward_cached(MatrixRef<Scalar> out,               // [n, D]
                      const ConstMatrixRef<Scalar>& x,     // [n, D]
                      KVCache<Scalar>& cache,              // [Lc, D] -> [Lc + n, D]
                      Index causal_begin, Index causal_end,
                      const Rope<Scalar>* rope = nullptr,
                      const Positions* positions = nullptr) const {
    const Index n = x.rows(), past = cache.length;
    Saved s;
    project(s, x, x, rope, positions);
    cache.append(s.k, s.v, kv_precision);
    const AttentionSegments segments{{0, n}, {0, past + n}, {causal_begin}, {causal_end}, {past}};
    cache.visit([&](const auto& keys, const auto& values) {
      using KV = typename std::decay_t<decltype(keys)>::Scalar;
      attention_fused<Scalar, KV>(s.ctx, s.q, keys, values, heads, segments);
    });
    out_proj.forward(out, s.ctx);
  }

 private:
  // s.q, s.k, s.v: the projections of x_q and x_kv, q and k rotated when rope is given;
  // s.ctx sized for the kernel.
  void project(Saved& s, const ConstMatrixRef<Scalar>& x_q, const ConstMatrixRef<Scalar>& x_kv,
               const Rope<Scalar>* rope, const Positions* positions) const {
    s.q.resize(x_q.rows(), dim());
    s.k.resize(x_kv.rows(), dim());
    s.v.resize(x_kv.rows(), dim());
    s.ctx.resize(x_q.rows(), dim());
    q_proj.forward(s.q, x_q);
    k_proj.forward(s.k, x_kv);
    v_proj.forward(s.v, x_kv);
    if (rope != nullptr) {
      TESSERA_ASSERT(positions != nullptr && positions->rows() == x_q.rows() &&
                     x_q.rows() == x_kv.rows());
      rope->forward(s.q, *positions);
      rope->forward(s.k, *positions);
    }
  }
};

}  // namespace tessera::nn
