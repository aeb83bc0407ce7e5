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

// The tiles of `extent` rows that cut each segment's queries (of_queries) or keys: entry s is
// the index of segment s's first tile among all segments' tiles, entry N their count.
// Segments without keys (resp. queries) get no tiles: nothing to compute there.
inline std::vector<Index> attention_tiles(const AttentionSegments& segments, Index extent,
                                          bool of_queries) {
  const auto count = static_cast<std::size_t>(segments.size());
  std::vector<Index> first(count + 1, 0);
  for (std::size_t s = 0; s < count; ++s) {
    const Index nq = segments.query_offsets[s + 1] - segments.query_offsets[s];
    const Index nk = segments.key_offsets[s + 1] - segments.key_offsets[s];
    const Index rows = of_queries ? nq : nk, other = of_queries ? nk : nq;
    first[s + 1] = first[s] + (other > 0 ? (rows + extent - 1) / extent : 0);
  }
  return first;
}

// The segment that tile `tile` belongs to, given attention_tiles' first-tile table.
inline std::size_t segment_of_tile(const std::vector<Index>& first, Index tile) {
  return static_cast<std::size_t>(std::upper_bound(first.begin(), first.end(), tile) -
                                  first.begin() - 1);
}

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
// With `logsumexp` [Lq, H] given, it also writes each row's log(sum_j exp(score_j)) per head:
// what attention_fused_backward needs to recompute the probabilities.
// requires: q, ctx [Lq, H*dh]; k, v [Lk, H*dh]; segments within those rows.
// ensures: the rows of ctx (and of logsumexp) covered by segments are assigned.
template <class Scalar, class KV = Scalar>
void attention_fused(MatrixRef<Scalar> ctx,              // [Lq, H*dh]
                     const ConstMatrixRef<Scalar>& q,    // [Lq, H*dh]
                     const ConstMatrixRef<std::type_identity_t<KV>>& k,  // [Lk, H*dh]
                     const ConstMatrixRef<std::type_identity_t<KV>>& v,  // [Lk, H*dh]
                     Index heads, const AttentionSegments& segments,
                     Matrix<Scalar>* logsumexp = nullptr) {  // [Lq, H]
  constexpr bool convert = !std::is_same_v<KV, Scalar>;
  static_assert(!convert || std::is_same_v<KV, BFloat16>, "k and v: Scalar or BFloat16");
  TESSERA_ASSERT(q.cols() % heads == 0 && k.cols() == q.cols() && v.cols() == q.cols());
  TESSERA_ASSERT(logsumexp == nullptr ||
                 (logsumexp->rows() == q.rows() && logsumexp->cols() == heads));
  constexpr Index tile_rows = attention_query_tile, tile_keys = attention_key_tile;
  constexpr Scalar minus_infinity = -std::numeric_limits<Scalar>::infinity();
  const Index dh = q.cols() / heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(dh));

  // first_tile[s]: the index of segment s's first query tile among all segments' tiles.
  const std::vector<Index> first_tile = attention_tiles(segments, tile_rows, true);
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
      const std::size_t s = segment_of_tile(first_tile, tile);
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
          detail::gemm<false, true>(p, q_tile.topRows(rows), k_tile.topRows(keys), false);
        } else {
          detail::gemm<false, true>(p, q_tile.topRows(rows), k.block(j0, h * dh, keys, dh), false);
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
          detail::gemm<false, false>(out.topRows(rows), p, v_tile.topRows(keys), true);
        } else {
          detail::gemm<false, false>(out.topRows(rows), p, v.block(j0, h * dh, keys, dh), true);
        }
      }
      ctx.block(i0, h * dh, rows, dh) =
          out.topRows(rows).array().colwise() / row_sum.head(rows).array();
      if (logsumexp != nullptr) {
        logsumexp->col(h).segment(i0, rows) =
            row_max.head(rows).array() + row_sum.head(rows).array().log();
      }
    }
  }
}

// ---- Backward ------------------------------------------------------------------------------
//
// With S = q k^T / sqrt(dh) + mask, P = softmax(S) row by row and ctx = P v, per head:
//   d_v = P^T d_ctx,   d_P = d_ctx v^T,   d_S = P * (d_P - rowsum(d_ctx * ctx)),
//   d_q = d_S k / sqrt(dh),   d_k = d_S^T q / sqrt(dh)
// (rowsum(d_P * P) = rowsum(d_ctx * ctx): the FlashAttention-2 form, Dao 2023).

// The backward pass of attention_reference, materializing P per (segment, head) as it does.
// requires: the shapes of attention_reference; d_ctx [Lq, H*dh].
// ensures: d_q, d_k, d_v are assigned (rows outside every segment: zero).
template <class Scalar>
void attention_reference_backward(MatrixRef<Scalar> d_q,                // [Lq, H*dh]
                                  MatrixRef<Scalar> d_k,                // [Lk, H*dh]
                                  MatrixRef<Scalar> d_v,                // [Lk, H*dh]
                                  const ConstMatrixRef<Scalar>& d_ctx,  // [Lq, H*dh]
                                  const ConstMatrixRef<Scalar>& q,      // [Lq, H*dh]
                                  const ConstMatrixRef<Scalar>& k,      // [Lk, H*dh]
                                  const ConstMatrixRef<Scalar>& v,      // [Lk, H*dh]
                                  Index heads, const AttentionSegments& segments) {
  TESSERA_ASSERT(q.cols() % heads == 0 && k.cols() == q.cols() && v.cols() == q.cols());
  const Index dh = q.cols() / heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(dh));
  d_q.setZero();
  d_k.setZero();
  d_v.setZero();
  const Index tasks = segments.size() * heads;
#pragma omp parallel for schedule(dynamic)
  for (Index task = 0; task < tasks; ++task) {
    const auto s = static_cast<std::size_t>(task / heads);
    const Index h = task % heads;
    const Index q0 = segments.query_offsets[s], nq = segments.query_offsets[s + 1] - q0;
    const Index k0 = segments.key_offsets[s], nk = segments.key_offsets[s + 1] - k0;
    if (nq == 0 || nk == 0) continue;
    const auto q_h = q.block(q0, h * dh, nq, dh), k_h = k.block(k0, h * dh, nk, dh);
    const auto v_h = v.block(k0, h * dh, nk, dh), d_ctx_h = d_ctx.block(q0, h * dh, nq, dh);
    // forward, again: P
    Matrix<Scalar> probs(nq, nk);  // [nq, nk]
    probs.noalias() = q_h * k_h.transpose();
    probs *= scale;
    const Index cb = segments.causal_begin[s], ce = segments.causal_end[s];
    const Index a0 = q0 + segments.shift(s);
    for (Index a = std::max(cb, a0); a < std::min(ce, a0 + nq); ++a) {
      for (Index j = std::max(a + 1, k0); j < std::min(ce, k0 + nk); ++j) {
        probs(a - a0, j - k0) = -std::numeric_limits<Scalar>::infinity();
      }
    }
    for (Index i = 0; i < nq; ++i) {
      auto row = probs.row(i);
      row.array() = (row.array() - row.maxCoeff()).exp();
      row /= row.sum();
    }
    // and back
    d_v.block(k0, h * dh, nk, dh).noalias() = probs.transpose() * d_ctx_h;
    Matrix<Scalar> d_s = d_ctx_h * v_h.transpose();  // [nq, nk] d_P, then d_S
    for (Index i = 0; i < nq; ++i) {
      const Scalar row_dot = d_s.row(i).dot(probs.row(i));
      d_s.row(i) = probs.row(i).cwiseProduct((d_s.row(i).array() - row_dot).matrix());
    }
    d_q.block(q0, h * dh, nq, dh).noalias() = scale * d_s * k_h;
    d_k.block(k0, h * dh, nk, dh).noalias() = scale * d_s.transpose() * q_h;
  }
}

// The backward pass of attention_fused, without an [Lq, Lk] buffer: the probabilities are
// recomputed tile by tile from q, k and the forward's logsumexp, P = exp(S - logsumexp).
// Two passes keep every gradient element written by one task, so the result does not depend
// on the thread count: tasks over (head, tile of attention_query_tile keys) accumulate d_k and
// d_v over all of the segment's queries, attention_key_tile at a time; tasks over (head, tile
// of attention_query_tile queries) accumulate d_q over the keys. The scores are computed
// twice (the price of owning every write), so backward costs about 2.5x the forward's flops.
// requires: the shapes of attention_fused; ctx and logsumexp [Lq, H] from attention_fused on
// these q, k, v, segments; d_ctx [Lq, H*dh].
// ensures: d_q, d_k, d_v are assigned (rows outside every segment: zero).
template <class Scalar>
void attention_fused_backward(MatrixRef<Scalar> d_q,                    // [Lq, H*dh]
                              MatrixRef<Scalar> d_k,                    // [Lk, H*dh]
                              MatrixRef<Scalar> d_v,                    // [Lk, H*dh]
                              const ConstMatrixRef<Scalar>& d_ctx,      // [Lq, H*dh]
                              const ConstMatrixRef<Scalar>& q,          // [Lq, H*dh]
                              const ConstMatrixRef<Scalar>& k,          // [Lk, H*dh]
                              const ConstMatrixRef<Scalar>& v,          // [Lk, H*dh]
                              const ConstMatrixRef<Scalar>& ctx,        // [Lq, H*dh]
                              const ConstMatrixRef<Scalar>& logsumexp,  // [Lq, H]
                              Index heads, const AttentionSegments& segments) {
  TESSERA_ASSERT(q.cols() % heads == 0 && k.cols() == q.cols() && v.cols() == q.cols());
  TESSERA_ASSERT(logsumexp.rows() == q.rows() && logsumexp.cols() == heads);
  constexpr Index owned = attention_query_tile, walked = attention_key_tile;
  constexpr Scalar minus_infinity = -std::numeric_limits<Scalar>::infinity();
  const Index dh = q.cols() / heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(dh));
  d_q.setZero();
  d_k.setZero();
  d_v.setZero();

  // delta [Lq, H] = rowsum(d_ctx * ctx) per head: rowsum(d_P * P).
  Matrix<Scalar> delta(q.rows(), heads);
  for (Index h = 0; h < heads; ++h) {
    delta.col(h) = d_ctx.middleCols(h * dh, dh).cwiseProduct(ctx.middleCols(h * dh, dh)).rowwise().sum();
  }

  // p [nq, nk] = P for queries [i0, i0 + nq) and keys [j0, j0 + nk) of segment s, head h,
  // from q_scaled = those queries' q / sqrt(dh); false when the mask hides every pair.
  auto probabilities = [&](auto&& p, std::size_t s, Index h, Index i0, Index nq, Index j0,
                           Index nk, const auto& q_scaled) {
    const Index cb = segments.causal_begin[s], ce = segments.causal_end[s];
    const Index a0 = i0 + segments.shift(s);  // the key row the first query stands at
    const Index ci0 = std::max(a0, cb), ci1 = std::min(a0 + nq, ce);
    const bool all_rows_causal = ci0 == a0 && ci1 == a0 + nq;
    if (all_rows_causal && j0 >= cb && j0 + nk <= ce && j0 > a0 + nq - 1) return false;
    detail::gemm<false, true>(p, q_scaled, k.block(j0, h * dh, nk, dh), false);
    for (Index a = ci0; a < ci1; ++a) {
      for (Index j = std::max(a + 1, std::max(j0, cb)); j < std::min(ce, j0 + nk); ++j) {
        p(a - a0, j - j0) = minus_infinity;
      }
    }
    p = (p.array().colwise() - logsumexp.col(h).segment(i0, nq).array()).exp().matrix();
    return true;
  };
  // d_s [nq, nk] = d_S = P * (d_ctx v^T - delta) for the same tile, from its p.
  auto score_gradients = [&](auto&& d_s, const auto& p, Index h, Index i0, Index nq, Index j0,
                             Index nk) {
    detail::gemm<false, true>(d_s, d_ctx.block(i0, h * dh, nq, dh), v.block(j0, h * dh, nk, dh),
                              false);
    d_s = p.cwiseProduct((d_s.array().colwise() - delta.col(h).segment(i0, nq).array()).matrix());
  };

  // Pass 1: d_k and d_v, a tile of keys per task.
  {
    const std::vector<Index> first = attention_tiles(segments, owned, false);
    const Index tiles = first.back(), tasks = tiles * heads;
#pragma omp parallel if (tasks > 1)
    {
      Matrix<Scalar> q_scaled(walked, dh), p(walked, owned), d_s(walked, owned);
#pragma omp for schedule(dynamic)
      for (Index task = 0; task < tasks; ++task) {
        const Index h = task / tiles, tile = task % tiles;
        const std::size_t s = segment_of_tile(first, tile);
        const Index j0 = segments.key_offsets[s] + (tile - first[s]) * owned;
        const Index nk = std::min(owned, segments.key_offsets[s + 1] - j0);
        auto d_k_tile = d_k.block(j0, h * dh, nk, dh);
        auto d_v_tile = d_v.block(j0, h * dh, nk, dh);
        for (Index i0 = segments.query_offsets[s]; i0 < segments.query_offsets[s + 1]; i0 += walked) {
          const Index nq = std::min(walked, segments.query_offsets[s + 1] - i0);
          q_scaled.topRows(nq) = q.block(i0, h * dh, nq, dh) * scale;
          auto p_tile = p.topLeftCorner(nq, nk);
          if (!probabilities(p_tile, s, h, i0, nq, j0, nk, q_scaled.topRows(nq))) continue;
          detail::gemm<true, false>(d_v_tile, p_tile, d_ctx.block(i0, h * dh, nq, dh), true);
          auto d_s_tile = d_s.topLeftCorner(nq, nk);
          score_gradients(d_s_tile, p_tile, h, i0, nq, j0, nk);
          detail::gemm<true, false>(d_k_tile, d_s_tile, q_scaled.topRows(nq), true);
        }
      }
    }
  }

  // Pass 2: d_q, a tile of queries per task.
  {
    const std::vector<Index> first = attention_tiles(segments, owned, true);
    const Index tiles = first.back(), tasks = tiles * heads;
#pragma omp parallel if (tasks > 1)
    {
      Matrix<Scalar> q_scaled(owned, dh), p(owned, walked), d_s(owned, walked);
#pragma omp for schedule(dynamic)
      for (Index task = 0; task < tasks; ++task) {
        const Index h = task / tiles, tile = task % tiles;
        const std::size_t s = segment_of_tile(first, tile);
        const Index i0 = segments.query_offsets[s] + (tile - first[s]) * owned;
        const Index nq = std::min(owned, segments.query_offsets[s + 1] - i0);
        q_scaled.topRows(nq) = q.block(i0, h * dh, nq, dh) * scale;
        auto d_q_tile = d_q.block(i0, h * dh, nq, dh);
        for (Index j0 = segments.key_offsets[s]; j0 < segments.key_offsets[s + 1]; j0 += walked) {
          const Index nk = std::min(walked, segments.key_offsets[s + 1] - j0);
          auto p_tile = p.topLeftCorner(nq, nk);
          if (!probabilities(p_tile, s, h, i0, nq, j0, nk, q_scaled.topRows(nq))) continue;
          auto d_s_tile = d_s.topLeftCorner(nq, nk);
          score_gradients(d_s_tile, p_tile, h, i0, nq, j0, nk);
          detail::gemm<false, false>(d_q_tile, d_s_tile, k.block(j0, h * dh, nk, dh), true);
        }
        d_q_tile *= scale;
      }
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
    Matrix<Scalar> logsumexp;  // [Lq, H] per row and head, for the backward pass
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
    Matrix<Scalar>* logsumexp = saved != nullptr ? &s.logsumexp : nullptr;
    if (logsumexp != nullptr) logsumexp->resize(x_q.rows(), heads);
    if (kv_precision == KVPrecision::bfloat16) {
      const Matrix<BFloat16> k16 = s.k.template cast<BFloat16>();  // [Lk, D]
      const Matrix<BFloat16> v16 = s.v.template cast<BFloat16>();  // [Lk, D]
      attention_fused<Scalar, BFloat16>(s.ctx, s.q, k16, v16, heads, segments, logsumexp);
    } else {
      attention_fused<Scalar>(s.ctx, s.q, s.k, s.v, heads, segments, logsumexp);
    }
    out_proj.forward(out, s.ctx);
  }

  // Backward of forward(out, x, segments, rope, positions, &saved): self attention, so the
  // gradients reaching x through q, k and v add up.
  // requires: grad has this layer's shapes; d_out, x [L, D]; saved from that forward.
  // ensures: d_x is assigned; grad's weights are accumulated into.
  void backward(MatrixRef<Scalar> d_x,                // [L, D]
                MultiHeadAttention& grad,
                const ConstMatrixRef<Scalar>& d_out,  // [L, D]
                const ConstMatrixRef<Scalar>& x,      // [L, D]
                const AttentionSegments& segments,
                const Rope<Scalar>* rope, const Positions* positions,
                const Saved& saved) const {
    Matrix<Scalar> d_kv(x.rows(), dim());  // [L, D]
    backward_cross(d_x, d_kv, grad, d_out, x, x, segments, rope, positions, saved);
    d_x += d_kv;
  }

  // Backward of forward_cross(out, x_q, x_kv, segments, rope, positions, &saved), through the
  // fused kernel's backward (no [Lq, Lk] buffer). Needs kv_precision native: the gradient of a
  // bfloat16 rounding is not defined, so training keeps k and v in Scalar.
  // requires: grad has this layer's shapes; d_out [Lq, D]; x_q, x_kv and saved from forward.
  // ensures: d_x_q and d_x_kv are assigned; grad's weights are accumulated into.
  void backward_cross(MatrixRef<Scalar> d_x_q,               // [Lq, D]
                      MatrixRef<Scalar> d_x_kv,              // [Lk, D]
                      MultiHeadAttention& grad,
                      const ConstMatrixRef<Scalar>& d_out,   // [Lq, D]
                      const ConstMatrixRef<Scalar>& x_q,     // [Lq, D]
                      const ConstMatrixRef<Scalar>& x_kv,    // [Lk, D]
                      const AttentionSegments& segments,
                      const Rope<Scalar>* rope, const Positions* positions,
                      const Saved& saved) const {
    check(kv_precision == KVPrecision::native,
          "attention backward: keys and values were stored in bfloat16; train with "
          "KVPrecision::native");
    TESSERA_ASSERT(saved.logsumexp.rows() == x_q.rows() && saved.k.rows() == x_kv.rows());
    Matrix<Scalar> d_ctx(x_q.rows(), dim());                 // [Lq, D]
    out_proj.backward(d_ctx, grad.out_proj, d_out, saved.ctx);
    Matrix<Scalar> d_q(x_q.rows(), dim());                   // [Lq, D]
    Matrix<Scalar> d_k(x_kv.rows(), dim()), d_v(x_kv.rows(), dim());  // [Lk, D]
    attention_fused_backward<Scalar>(d_q, d_k, d_v, d_ctx, saved.q, saved.k, saved.v, saved.ctx,
                                     saved.logsumexp, heads, segments);
    if (rope != nullptr) {
      TESSERA_ASSERT(positions != nullptr);
      rope->backward(d_q, *positions);
      rope->backward(d_k, *positions);
    }
    q_proj.backward(d_x_q, grad.q_proj, d_q, x_q);
    k_proj.backward(d_x_kv, grad.k_proj, d_k, x_kv);
    Matrix<Scalar> d_from_v(x_kv.rows(), dim());             // [Lk, D]
    v_proj.backward(d_from_v, grad.v_proj, d_v, x_kv);
    d_x_kv += d_from_v;
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
