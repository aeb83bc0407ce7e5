#pragma once
// AttentionPool: compresses each video time step's patch tokens to Nq learned-query tokens
// (SPEC 2, video pooling; the Perceiver-resampler / Q-Former idea).
//
//   keys_k = tokens_k + pos_embed                        tokens_k: the Np patch tokens of step k
//   out_k  = Q + Attn(norm_q(Q), norm_kv(keys_k))        H heads, no RoPE, no mask
//
// All steps go through one attention call: step k is segment k, its Nq query rows seeing its
// Np key rows.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/norm.hpp>

namespace tessera::nn {

template <class Scalar>
struct AttentionPool {
  Matrix<Scalar> queries;    // [Nq, D]
  Matrix<Scalar> pos_embed;  // [Np, D] one per patch within a step
  Norm<Scalar> norm_q;
  Norm<Scalar> norm_kv;
  MultiHeadAttention<Scalar> attn;

  struct Saved {
    Matrix<Scalar> keys;       // [K*Np, D] tokens + pos_embed
    typename Norm<Scalar>::Saved norm_kv;
    Matrix<Scalar> normed_kv;  // [K*Np, D]
    typename Norm<Scalar>::Saved norm_q;
    Matrix<Scalar> normed_q;   // [K*Nq, D] norm_q(Q), repeated per step
    typename MultiHeadAttention<Scalar>::Saved attn;
  };

  AttentionPool() = default;
  AttentionPool(Index num_queries, Index patches_per_step, Index dim, Index heads, NormKind norm,
                Scalar eps)
      : queries(Matrix<Scalar>::Zero(num_queries, dim)),
        pos_embed(Matrix<Scalar>::Zero(patches_per_step, dim)),
        norm_q(norm, dim, eps),
        norm_kv(norm, dim, eps),
        attn(dim, heads) {}

  Index num_queries() const { return queries.rows(); }
  Index patches_per_step() const { return pos_embed.rows(); }

  // requires: tokens.rows() is a multiple of Np. ensures: out [K*Nq, D] is assigned.
  void forward(MatrixRef<Scalar> out,                 // [K*Nq, D]
               const ConstMatrixRef<Scalar>& tokens,  // [K*Np, D]
               Saved* saved = nullptr) const {
    const Index np = patches_per_step(), nq = num_queries();
    TESSERA_ASSERT(np > 0 && tokens.rows() % np == 0);
    const Index steps = tokens.rows() / np;
    TESSERA_ASSERT(out.rows() == steps * nq && out.cols() == tokens.cols());
    Saved local;
    Saved& s = saved != nullptr ? *saved : local;
    s.keys = tokens;
    for (Index k = 0; k < steps; ++k) s.keys.middleRows(k * np, np) += pos_embed;
    s.normed_kv.resize(s.keys.rows(), s.keys.cols());
    norm_kv.forward(s.normed_kv, s.keys, &s.norm_kv);
    Matrix<Scalar> normed(nq, queries.cols());  // [Nq, D]
    norm_q.forward(normed, queries, &s.norm_q);
    s.normed_q.resize(steps * nq, queries.cols());
    for (Index k = 0; k < steps; ++k) s.normed_q.middleRows(k * nq, nq) = normed;
    attn.forward_cross(out, s.normed_q, s.normed_kv, segments_of(steps), nullptr, nullptr, &s.attn);
    for (Index k = 0; k < steps; ++k) out.middleRows(k * nq, nq) += queries;
  }

  // Backward of forward(out, tokens, &saved): the queries, pos_embed and norms get the sums
  // over the steps that share them.
  // requires: grad has this layer's shapes; d_out [K*Nq, D]; saved from that forward.
  // ensures: d_tokens is assigned; grad's weights are accumulated into.
  void backward(MatrixRef<Scalar> d_tokens,           // [K*Np, D]
                AttentionPool& grad,
                const ConstMatrixRef<Scalar>& d_out,  // [K*Nq, D]
                const Saved& saved) const {
    const Index np = patches_per_step(), nq = num_queries();
    const Index steps = saved.keys.rows() / np, dim = queries.cols();
    TESSERA_ASSERT(d_out.rows() == steps * nq && d_tokens.rows() == steps * np);
    Matrix<Scalar> d_normed_q(steps * nq, dim), d_normed_kv(steps * np, dim);
    attn.backward_cross(d_normed_q, d_normed_kv, grad.attn, d_out, saved.normed_q,
                        saved.normed_kv, segments_of(steps), nullptr, nullptr, saved.attn);
    Matrix<Scalar> d_normed = Matrix<Scalar>::Zero(nq, dim);  // [Nq, D] summed over steps
    for (Index k = 0; k < steps; ++k) {
      grad.queries += d_out.middleRows(k * nq, nq);
      d_normed += d_normed_q.middleRows(k * nq, nq);
    }
    Matrix<Scalar> d_queries(nq, dim);  // [Nq, D]
    norm_q.backward(d_queries, grad.norm_q, d_normed, queries, saved.norm_q);
    grad.queries += d_queries;
    norm_kv.backward(d_tokens, grad.norm_kv, d_normed_kv, saved.keys, saved.norm_kv);
    for (Index k = 0; k < steps; ++k) grad.pos_embed += d_tokens.middleRows(k * np, np);
  }

 private:
  // K steps: step k's Nq queries attend to its Np keys only.
  AttentionSegments segments_of(Index steps) const {
    AttentionSegments segments;
    for (Index k = 0; k <= steps; ++k) {
      segments.query_offsets.push_back(k * num_queries());
      segments.key_offsets.push_back(k * patches_per_step());
    }
    segments.causal_begin.assign(static_cast<std::size_t>(steps), 0);
    segments.causal_end.assign(static_cast<std::size_t>(steps), 0);
    return segments;
  }
};

}  // namespace tessera::nn
