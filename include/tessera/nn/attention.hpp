#pragma once
// Multi-head attention (SPEC 3), for self attention over a packed batch and for cross
// attention (the video pooler's learned queries).
//
//   q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv      (RoPE on q and k when given)
//   per head h:  P_h = softmax(q_h k_h^T / sqrt(dh) + mask),   ctx_h = P_h v_h
//   out = concat_h(ctx_h) Wo^T + bo
//
// With bias_k and bias_v (torch.nn.MultiheadAttention's add_bias_kv, which ImageBind's audio,
// depth, thermal and IMU trunks use), each sample's keys and values gain one more row after
// its own, bias_k and bias_v, that every query of the sample sees (causal ones included,
// as PyTorch pads the mask with a zero column). Backward gives bias_k and bias_v the sums of
// the gradients at the appended rows (each sample's own row: the same learned vector).
//
// A packed batch holds several samples back to back without padding; AttentionSegments says
// which rows of q see which rows of k (a sample only attends to itself), and which range of
// each sample is causal text (a text token does not see later text tokens; every other pair
// is allowed: the mixed causal/bidirectional mask). Two kernels compute it: attention_fused,
// which the layer uses (tiled, never holding the [Lq, Lk] scores), and attention_reference
// (plain: materialized scores), kept for the tests and as the benchmarks' baseline.
//
// The pieces: the mask description in nn/attention_mask.hpp, the kernels in
// nn/attention_kernel.hpp, the KV cache and KVPrecision in nn/kv_cache.hpp; this header holds
// the layer and includes them all.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/nn/attention_kernel.hpp>
#include <tessera/nn/attention_mask.hpp>
#include <tessera/nn/kv_cache.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/rope.hpp>

#include <optional>
#include <type_traits>

namespace tessera::nn {

template <class Scalar>
struct MultiHeadAttention {
  Index heads = 1;  // H
  Linear<Scalar> q_proj;    // [D, D] with bias
  Linear<Scalar> k_proj;    // [D, D] with bias
  Linear<Scalar> v_proj;    // [D, D] with bias
  Linear<Scalar> out_proj;  // [D, D] with bias
  RowVector<Scalar> bias_k;  // [D] the learned extra key (add_bias_kv), or empty
  RowVector<Scalar> bias_v;  // [D] the learned extra value, or empty with bias_k
  KVPrecision kv_precision = KVPrecision::native;  // a setting, not a weight

  struct Saved {
    Matrix<Scalar> q;    // [Lq, D] after RoPE
    Matrix<Scalar> k;    // [Lk, D] after RoPE
    Matrix<Scalar> v;    // [Lk, D]
    Matrix<Scalar> ctx;  // [Lq, D] heads concatenated, before out_proj
    Matrix<Scalar> logsumexp;  // [Lq, H] per row and head, for the backward pass
  };

  MultiHeadAttention() = default;
  MultiHeadAttention(Index dim, Index num_heads, WeightInit init = WeightInit::zeros)
      : heads(num_heads),
        q_proj(dim, dim, true, init),
        k_proj(dim, dim, true, init),
        v_proj(dim, dim, true, init),
        out_proj(dim, dim, true, init) {
    check(num_heads > 0 && dim % num_heads == 0, "attention: dim ", dim,
          " is not divisible by heads ", num_heads);
  }

  Index dim() const { return q_proj.in_features(); }
  Index head_dim() const { return dim() / heads; }
  bool has_bias_kv() const { return bias_k.size() != 0; }

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
    const AttentionSegments* mask = &segments;
    AttentionSegments with_bias;
    if (has_bias_kv()) {
      with_bias = append_bias_kv(s.k, s.v, segments);
      mask = &with_bias;
    }
    if (stores_bfloat16(kv_precision)) {
      const Matrix<BFloat16> k16 = s.k.template cast<BFloat16>();  // [Lk, D]
      const Matrix<BFloat16> v16 = s.v.template cast<BFloat16>();  // [Lk, D]
      attention_fused<Scalar, BFloat16>(s.ctx, s.q, k16, v16, heads, *mask, logsumexp,
                                        bf16_products(kv_precision));
    } else {
      attention_fused<Scalar>(s.ctx, s.q, s.k, s.v, heads, *mask, logsumexp);
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
  // requires: grad has this layer's shapes (bias_k and bias_v too); d_out [Lq, D]; x_q, x_kv
  //   and saved from forward.
  // ensures: d_x_q and d_x_kv are assigned; grad's weights (bias_k, bias_v) are accumulated into.
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
    // With add_bias_kv, saved.k and saved.v hold the appended rows (forward's append_bias_kv):
    // the kernel's backward runs over them, then bias_kv_backward folds them away.
    const Index appended = has_bias_kv() ? segments.size() : 0;
    TESSERA_ASSERT(saved.logsumexp.rows() == x_q.rows() &&
                   saved.k.rows() == x_kv.rows() + appended);
    Matrix<Scalar> d_ctx(x_q.rows(), dim());                 // [Lq, D]
    out_proj.backward(d_ctx, grad.out_proj, d_out, saved.ctx);
    Matrix<Scalar> d_q(x_q.rows(), dim());                   // [Lq, D]
    Matrix<Scalar> d_k(saved.k.rows(), dim()), d_v(saved.k.rows(), dim());  // [Lk (+ N), D]
    const AttentionSegments* mask = &segments;
    AttentionSegments with_bias;
    if (has_bias_kv()) {
      with_bias = bias_kv_segments(segments);
      mask = &with_bias;
    }
    attention_fused_backward<Scalar>(d_q, d_k, d_v, d_ctx, saved.q, saved.k, saved.v, saved.ctx,
                                     saved.logsumexp, heads, *mask);
    if (has_bias_kv()) bias_kv_backward(grad, d_k, d_v, segments);
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
    check(!has_bias_kv(), "attention: incremental encoding (a KV cache) does not support "
          "add_bias_kv (bias_k, bias_v)");
    const Index n = x.rows(), past = cache.length;
    Saved s;
    project(s, x, x, rope, positions);
    cache.append(s.k, s.v, kv_precision);
    const AttentionSegments segments{{0, n}, {0, past + n}, {causal_begin}, {causal_end}, {past}};
    cache.visit([&](const auto& keys, const auto& values) {
      using KV = typename std::decay_t<decltype(keys)>::Scalar;
      attention_fused<Scalar, KV>(s.ctx, s.q, keys, values, heads, segments, nullptr,
                                  bf16_products(cache.precision));
    });
    out_proj.forward(out, s.ctx);
  }

 private:
  // The kernel's bfloat16-products argument for `precision`: the CPU's bf16 path (or the one
  // TESSERA_CPU asks for) with bfloat16_products, none otherwise.
  static std::optional<detail::KernelPath> bf16_products(KVPrecision precision) {
    if (precision != KVPrecision::bfloat16_products) return std::nullopt;
    return detail::bf16_kernel_path();
  }

  // add_bias_kv's mask: the segments over key rows where each of the N segments' keys is
  // followed by its bias row (segment s's keys move down by s rows, and so do the key rows
  // its queries stand at and its causal range, which the bias row follows, so every query
  // sees it).
  static AttentionSegments bias_kv_segments(const AttentionSegments& segments) {
    const auto n = static_cast<std::size_t>(segments.size());
    AttentionSegments out = segments;
    out.query_shift.assign(n, 0);
    for (std::size_t s = 0; s < n; ++s) {
      const auto moved = static_cast<Index>(s);
      out.key_offsets[s] = segments.key_offsets[s] + moved;
      out.query_shift[s] = segments.shift(s) + moved;
      if (segments.causal_end[s] > segments.causal_begin[s]) {
        out.causal_begin[s] += moved;
        out.causal_end[s] += moved;
      }
    }
    out.key_offsets[n] = segments.key_offsets[n] + static_cast<Index>(n);
    return out;
  }

  // add_bias_kv: k, v [Lk, D] -> [Lk + N, D] with bias_k, bias_v after each of the N
  // segments' keys; returns the segments over the new key rows (bias_kv_segments).
  AttentionSegments append_bias_kv(Matrix<Scalar>& k,  // [Lk, D] -> [Lk + N, D]
                                   Matrix<Scalar>& v,  // [Lk, D] -> [Lk + N, D]
                                   const AttentionSegments& segments) const {
    check(bias_k.size() == dim() && bias_v.size() == dim(), "attention: bias_k and bias_v "
          "have ", bias_k.size(), " and ", bias_v.size(), " values, expected ", dim());
    const auto n = static_cast<std::size_t>(segments.size());
    Matrix<Scalar> k2(k.rows() + static_cast<Index>(n), k.cols());
    Matrix<Scalar> v2(v.rows() + static_cast<Index>(n), v.cols());
    Index written = 0;
    for (std::size_t s = 0; s < n; ++s) {
      const Index k0 = segments.key_offsets[s], nk = segments.key_offsets[s + 1] - k0;
      TESSERA_ASSERT(k0 + static_cast<Index>(s) == written);
      k2.middleRows(written, nk) = k.middleRows(k0, nk);
      v2.middleRows(written, nk) = v.middleRows(k0, nk);
      k2.row(written + nk) = bias_k;
      v2.row(written + nk) = bias_v;
      written += nk + 1;
    }
    k.swap(k2);
    v.swap(v2);
    return bias_kv_segments(segments);
  }

  // Backward of append_bias_kv: d_k, d_v [Lk + N, D] -> [Lk, D], the appended rows' gradients
  // summed into grad.bias_k and grad.bias_v (one learned row that every segment appends), in
  // segment order (deterministic).
  void bias_kv_backward(MultiHeadAttention& grad,
                        Matrix<Scalar>& d_k,  // [Lk + N, D] -> [Lk, D]
                        Matrix<Scalar>& d_v,  // [Lk + N, D] -> [Lk, D]
                        const AttentionSegments& segments) const {
    check(grad.bias_k.size() == dim() && grad.bias_v.size() == dim(), "attention backward: "
          "the gradient's bias_k and bias_v have ", grad.bias_k.size(), " and ",
          grad.bias_v.size(), " values, expected ", dim());
    const auto n = static_cast<std::size_t>(segments.size());
    Matrix<Scalar> k(d_k.rows() - static_cast<Index>(n), d_k.cols());  // [Lk, D]
    Matrix<Scalar> v(d_v.rows() - static_cast<Index>(n), d_v.cols());  // [Lk, D]
    for (std::size_t s = 0; s < n; ++s) {
      const Index k0 = segments.key_offsets[s], nk = segments.key_offsets[s + 1] - k0;
      const Index from = k0 + static_cast<Index>(s);  // where forward moved the segment's keys
      k.middleRows(k0, nk) = d_k.middleRows(from, nk);
      v.middleRows(k0, nk) = d_v.middleRows(from, nk);
      grad.bias_k += d_k.row(from + nk);
      grad.bias_v += d_v.row(from + nk);
    }
    d_k.swap(k);
    d_v.swap(v);
  }

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
