#pragma once
// The attention kernels of SPEC 3 on already projected q, k, v, forward and backward:
// attention_fused, which the layer uses (tiled, never holding the [Lq, Lk] scores), and
// attention_reference (plain: materialized scores), kept for the tests and as the benchmarks'
// baseline. Both apply the mask an AttentionSegments describes (nn/attention_mask.hpp).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/attention_bf16.hpp>
#include <tessera/detail/bfloat16.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/nn/attention_mask.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

namespace tessera::nn {

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
// With bfloat16 k and v and Scalar float, `bf16_products` (a path of detail/cpu.hpp, e.g.
// detail::bf16_kernel_path()) runs the two products as bfloat16 dot products instead
// (KVPrecision::bfloat16_products; detail/attention_bf16.hpp): q (scaled) and the softmax's
// exponentials p are rounded to bfloat16 (p before its row sum is taken, so the output stays
// a weighted mean of the values with weights that sum to 1), and each product is summed in
// float, per key tile, in VDPBF16PS's pair order; the same bits on every path and thread count.
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
                     Matrix<Scalar>* logsumexp = nullptr,  // [Lq, H]
                     std::optional<detail::KernelPath> bf16_products = std::nullopt) {
  constexpr bool convert = !std::is_same_v<KV, Scalar>;
  static_assert(!convert || std::is_same_v<KV, BFloat16>, "k and v: Scalar or BFloat16");
  // bfloat16 products need bfloat16 k and v, and sum in float: Scalar float only
  constexpr bool can_dot = convert && std::is_same_v<Scalar, float>;
  check(can_dot || !bf16_products, "attention: bfloat16 products (KVPrecision::bfloat16_products) "
        "need float attention with bfloat16 keys and values; use KVPrecision::bfloat16");
  const bool dot = can_dot && bf16_products.has_value();
  const detail::KernelPath path = bf16_products.value_or(detail::KernelPath::scalar);
  check(!dot || detail::cpu_supports_bf16(path), "attention: the bfloat16 ",
        detail::kernel_path_name(path), " path is not supported by this CPU (it has ",
        detail::cpu_features().list(), ")");
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
    Matrix<Scalar> k_tile(convert && !dot ? tile_keys : 0, dh);  // [512, dh] k converted
    Matrix<Scalar> v_tile(convert && !dot ? tile_keys : 0, dh);  // [512, dh] v converted
    // bfloat16 products only: q [64, dh] with k [512, dh]; p [64, 512] with v^T [dh, 512]
    std::optional<detail::BF16TileScratch> q_k, p_v;
    if (dot) {
      q_k.emplace(path, tile_rows, tile_keys, dh);
      p_v.emplace(path, tile_rows, dh, tile_keys);
    }
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
      if constexpr (can_dot) {
        if (dot) q_k->set_activations(q_tile.data(), rows, dh, dh);
      }
      for (Index j0 = k0; j0 < k1; j0 += tile_keys) {
        const Index keys = std::min(tile_keys, k1 - j0);
        // Every (row, key) pair of the tile is masked: skip it.
        if (all_rows_causal && j0 >= cb && j0 + keys <= ce && j0 > a0 + rows - 1) continue;
        auto p = scores.topLeftCorner(rows, keys);
        if (dot) {
          if constexpr (can_dot) {
            q_k->set_weights_rows(k.data() + j0 * k.outerStride() + h * dh, keys, dh,
                                  k.outerStride());
            detail::bf16_tile_product(p.data(), tile_keys, rows, keys, *q_k, false);
          }
        } else if constexpr (convert) {
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
          if constexpr (can_dot) {
            if (dot) row = row.unaryExpr([](float x) { return detail::attention_bf16_round(x); });
          }
          row_sum[r] = row_sum[r] * rescale + row.sum();
          out.row(r) *= rescale;
          row_max[r] = new_max;
        }
        if (dot) {
          if constexpr (can_dot) {
            p_v->set_activations(p.data(), rows, keys, tile_keys);
            p_v->set_weights_columns(v.data() + j0 * v.outerStride() + h * dh, dh, keys,
                                     v.outerStride());
            detail::bf16_tile_product(out.data(), dh, rows, dh, *p_v, true);
          }
        } else if constexpr (convert) {
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

}  // namespace tessera::nn
