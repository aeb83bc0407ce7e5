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
    AttentionSegments segments;
    for (Index k = 0; k <= steps; ++k) {
      segments.query_offsets.push_back(k * nq);
      segments.key_offsets.push_back(k * np);
    }
    segments.causal_begin.assign(static_cast<std::size_t>(steps), 0);
    segments.causal_end.assign(static_cast<std::size_t>(steps), 0);
    attn.forward_cross(out, s.normed_q, s.normed_kv, segments, nullptr, nullptr, &s.attn);
    for (Index k = 0; k < steps; ++k) out.middleRows(k * nq, nq) += queries;
  }
};

}  // namespace tessera::nn
