#pragma once
// FeedForward: the position-wise MLP of a transformer block (SPEC 3).
//
//   gelu | gelu_tanh | quick_gelu | relu:  y = fc2(act(fc1 x))          (both with bias)
//   swiglu:                                y = down(silu(gate x) * up x)  (no biases;
//                                          Shazeer 2020, "GLU Variants Improve Transformer")
//
// Forward saves `hidden` = fc1 x (resp. gate x and up x), the pre-activation values.

#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/nn/activation.hpp>
#include <tessera/nn/linear.hpp>

namespace tessera::nn {

template <class Scalar>
struct FeedForward {
  Activation activation = Activation::gelu;
  Linear<Scalar> fc1;   // [F, D] with bias   (non-gated)
  Linear<Scalar> fc2;   // [D, F] with bias   (non-gated)
  Linear<Scalar> gate;  // [F, D] no bias     (swiglu)
  Linear<Scalar> up;    // [F, D] no bias     (swiglu)
  Linear<Scalar> down;  // [D, F] no bias     (swiglu)

  struct Saved {
    Matrix<Scalar> hidden;  // [L, F] fc1 x, or gate x for swiglu
    Matrix<Scalar> up;      // [L, F] up x (swiglu only)
  };

  FeedForward() = default;
  FeedForward(Activation act, Index dim, Index ffn_dim) : activation(act) {
    if (gated()) {
      gate = Linear<Scalar>(dim, ffn_dim, false);
      up = Linear<Scalar>(dim, ffn_dim, false);
      down = Linear<Scalar>(ffn_dim, dim, false);
    } else {
      fc1 = Linear<Scalar>(dim, ffn_dim, true);
      fc2 = Linear<Scalar>(ffn_dim, dim, true);
    }
  }

  bool gated() const { return activation == Activation::swiglu; }
  Index dim() const { return gated() ? gate.in_features() : fc1.in_features(); }
  Index ffn_dim() const { return gated() ? gate.out_features() : fc1.out_features(); }

  // requires: in.cols() == dim(); out is [L, D]. ensures: out is assigned.
  void forward(MatrixRef<Scalar> out,             // [L, D]
               const ConstMatrixRef<Scalar>& in,  // [L, D]
               Saved* saved = nullptr) const {
    Matrix<Scalar> act(in.rows(), ffn_dim());  // [L, F]
    if (gated()) {
      Matrix<Scalar> up_x(in.rows(), ffn_dim());  // [L, F]
      gate.forward(act, in);
      up.forward(up_x, in);
      if (saved != nullptr) {
        saved->hidden = act;
        saved->up = up_x;
      }
      activate<Scalar>(Activation::swiglu, act);
      act.array() *= up_x.array();
      down.forward(out, act);
    } else {
      fc1.forward(act, in);
      if (saved != nullptr) saved->hidden = act;
      activate<Scalar>(activation, act);
      fc2.forward(out, act);
    }
  }
};

}  // namespace tessera::nn
