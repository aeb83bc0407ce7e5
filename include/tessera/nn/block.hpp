#pragma once
// TransformerBlock: the pre-norm encoder block of SPEC 3.
//
//   h   = x + Attn(Norm1(x))
//   out = h + FFN(Norm2(h))

#include <tessera/core/tensor.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/ffn.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/rope.hpp>

#include <cstddef>

namespace tessera::nn {

// The sizes and kinds of one block; the encoder fills them from its Config.
struct BlockOptions {
  Index dim = 256;      // D
  Index num_heads = 4;  // H
  Index ffn_dim = 1024;  // F
  Activation activation = Activation::gelu;
  NormKind norm = NormKind::layernorm;
  double norm_eps = 1e-5;
  WeightInit init = WeightInit::zeros;  // the linear weights: zeros, or unset for a loader
};

template <class Scalar>
struct TransformerBlock {
  Norm<Scalar> norm1;
  MultiHeadAttention<Scalar> attn;
  Norm<Scalar> norm2;
  FeedForward<Scalar> ffn;

  struct Saved {
    typename Norm<Scalar>::Saved norm1;
    Matrix<Scalar> normed1;  // [L, D] Norm1(x)
    typename MultiHeadAttention<Scalar>::Saved attn;
    Matrix<Scalar> h;        // [L, D] x + Attn(Norm1(x))
    typename Norm<Scalar>::Saved norm2;
    Matrix<Scalar> normed2;  // [L, D] Norm2(h)
    typename FeedForward<Scalar>::Saved ffn;

    // The bytes of the values held (what activation checkpointing saves per layer).
    std::size_t bytes() const {
      const Index values = norm1.mean.size() + norm1.rstd.size() + normed1.size() +
                           attn.q.size() + attn.k.size() + attn.v.size() + attn.ctx.size() +
                           attn.logsumexp.size() + h.size() + norm2.mean.size() +
                           norm2.rstd.size() + normed2.size() + ffn.hidden.size() + ffn.up.size();
      return static_cast<std::size_t>(values) * sizeof(Scalar);
    }
  };

  // The buffers the blocks of one forward call share: the first block sizes them, the others
  // reuse them. Fresh buffers per block (the [L, F] activations alone are 19 MB for 8 images
  // of 197 tokens at F = 3072) are fresh pages each time: glibc gives big freed blocks back to
  // the kernel and the next block faults them in again (21 % of a ViT-B/16 batch-8 profile).
  struct Workspace {
    Matrix<Scalar> normed;  // [L, D] Norm1(x), then Norm2(h)
    Matrix<Scalar> h;       // [L, D] x + Attn(Norm1(x))
    typename MultiHeadAttention<Scalar>::Saved attention;  // q, k, v, ctx [L, D]
    typename FeedForward<Scalar>::Workspace ffn;           // [L, F] the activations
  };

  TransformerBlock() = default;
  explicit TransformerBlock(const BlockOptions& o)
      : norm1(o.norm, o.dim, static_cast<Scalar>(o.norm_eps)),
        attn(o.dim, o.num_heads, o.init),
        norm2(o.norm, o.dim, static_cast<Scalar>(o.norm_eps)),
        ffn(o.activation, o.dim, o.ffn_dim, o.init) {}

  // requires: x [L, D]; segments cover [0, L); positions [L, 3] when rope is given.
  // ensures: out is assigned (out may alias x).
  void forward(MatrixRef<Scalar> out,             // [L, D]
               const ConstMatrixRef<Scalar>& x,   // [L, D]
               const AttentionSegments& segments,
               const Rope<Scalar>* rope = nullptr,
               const Positions* positions = nullptr,
               Saved* saved = nullptr) const {
    Workspace workspace;
    run(out, x, saved, workspace, [&](MatrixRef<Scalar> h, const ConstMatrixRef<Scalar>& normed) {
      attn.forward(h, normed, segments, rope, positions,
                   saved != nullptr ? &saved->attn : &workspace.attention);
    });
  }

  // forward keeping nothing for backward, its buffers those of `workspace` (shared by the
  // blocks of one call): the same operations in the same order, so the same values.
  // requires: as forward. ensures: out is assigned (out may alias x).
  void forward(MatrixRef<Scalar> out,             // [L, D]
               const ConstMatrixRef<Scalar>& x,   // [L, D]
               const AttentionSegments& segments, const Rope<Scalar>* rope,
               const Positions* positions, Workspace& workspace) const {
    run(out, x, nullptr, workspace, [&](MatrixRef<Scalar> h, const ConstMatrixRef<Scalar>& normed) {
      attn.forward(h, normed, segments, rope, positions, &workspace.attention);
    });
  }

  // Backward of forward(out, x, segments, rope, positions, &saved):
  //   d_h = d_out + Norm2'(FFN'(d_out)),   d_x = d_h + Norm1'(Attn'(d_h))
  // requires: grad has this layer's shapes; d_out, x [L, D]; saved from that forward.
  // ensures: d_x is assigned; grad's weights are accumulated into.
  void backward(MatrixRef<Scalar> d_x,                // [L, D]
                TransformerBlock& grad,
                const ConstMatrixRef<Scalar>& d_out,  // [L, D]
                const ConstMatrixRef<Scalar>& x,      // [L, D]
                const AttentionSegments& segments,
                const Rope<Scalar>* rope, const Positions* positions,
                const Saved& saved) const {
    const Index rows = x.rows(), cols = x.cols();
    Matrix<Scalar> d_normed(rows, cols), d_h(rows, cols);  // [L, D] each
    ffn.backward(d_normed, grad.ffn, d_out, saved.normed2, saved.ffn);
    norm2.backward(d_h, grad.norm2, d_normed, saved.h, saved.norm2);
    d_h += d_out;
    attn.backward(d_normed, grad.attn, d_h, saved.normed1, segments, rope, positions, saved.attn);
    norm1.backward(d_x, grad.norm1, d_normed, x, saved.norm1);
    d_x += d_h;
  }

  // The block for n new tokens of one sample over a KV cache of the earlier ones
  // (MultiHeadAttention::forward_cached, whose causal range this passes on).
  // requires: x [n, D]; positions [n, 3] when rope is given.
  // ensures: out is assigned (out may alias x); cache.length grew by n.
  void forward_cached(MatrixRef<Scalar> out,            // [n, D]
                      const ConstMatrixRef<Scalar>& x,  // [n, D]
                      KVCache<Scalar>& cache, Index causal_begin, Index causal_end,
                      const Rope<Scalar>* rope = nullptr,
                      const Positions* positions = nullptr) const {
    Workspace workspace;
    run(out, x, nullptr, workspace, [&](MatrixRef<Scalar> h, const ConstMatrixRef<Scalar>& normed) {
      attn.forward_cached(h, normed, cache, causal_begin, causal_end, rope, positions);
    });
  }

 private:
  // The block's steps around one attention call: attend(h, normed) assigns Attn(normed) to h.
  // With `saved`, the values backward reads are kept there (Norm1(x), h, Norm2(h), the norms'
  // and the FFN's saved values); without, the buffers of `w` hold them for this call only.
  template <class Attend>
  void run(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& x, Saved* saved, Workspace& w,
           Attend&& attend) const {
    Matrix<Scalar>& normed1 = saved != nullptr ? saved->normed1 : w.normed;  // [L, D]
    Matrix<Scalar>& h = saved != nullptr ? saved->h : w.h;                   // [L, D]
    Matrix<Scalar>& normed2 = saved != nullptr ? saved->normed2 : w.normed;  // [L, D]
    normed1.resize(x.rows(), x.cols());
    norm1.forward(normed1, x, saved != nullptr ? &saved->norm1 : nullptr);
    h.resize(x.rows(), x.cols());
    attend(h, normed1);
    h += x;
    normed2.resize(x.rows(), x.cols());
    norm2.forward(normed2, h, saved != nullptr ? &saved->norm2 : nullptr);
    ffn.forward(out, normed2, saved != nullptr ? &saved->ffn : nullptr, &w.ffn);
    out += h;
  }
};

}  // namespace tessera::nn
