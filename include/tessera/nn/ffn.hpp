#pragma once
// FeedForward: the position-wise MLP of a transformer block (SPEC 3).
//
//   gelu | gelu_tanh | quick_gelu | relu:  y = fc2(act(fc1 x))          (both with bias)
//   swiglu:                                y = down(silu(gate x) * up x)  (no biases;
//                                          Shazeer 2020, "GLU Variants Improve Transformer")
//
// Forward saves `hidden` = fc1 x (resp. gate x and up x), the pre-activation values; backward
// recomputes the activation from them:
//   d_a = fc2^T-backward(d_y);  d_hidden = d_a * act'(hidden);  d_x = fc1-backward(d_hidden)
//   swiglu: a = silu(g) * u;  d_u = d_a * silu(g);  d_g = d_a * u * silu'(g);
//           d_x = d_g W_gate + d_u W_up

#include <tessera/core/tensor.hpp>
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

  // Buffers a caller keeps across calls (the blocks of one encoder call), so the [L, F]
  // activations are not fresh pages each time (nn::TransformerBlock::Workspace says why).
  struct Workspace {
    Matrix<Scalar> act;   // [L, F] the activations
    Matrix<Scalar> up_x;  // [L, F] up x (swiglu only)
  };

  FeedForward() = default;
  FeedForward(Activation act, Index dim, Index ffn_dim, WeightInit init = WeightInit::zeros)
      : activation(act) {
    if (gated()) {
      gate = Linear<Scalar>(dim, ffn_dim, false, init);
      up = Linear<Scalar>(dim, ffn_dim, false, init);
      down = Linear<Scalar>(ffn_dim, dim, false, init);
    } else {
      fc1 = Linear<Scalar>(dim, ffn_dim, true, init);
      fc2 = Linear<Scalar>(ffn_dim, dim, true, init);
    }
  }

  bool gated() const { return activation == Activation::swiglu; }
  Index dim() const { return gated() ? gate.in_features() : fc1.in_features(); }
  Index ffn_dim() const { return gated() ? gate.out_features() : fc1.out_features(); }

  // requires: in.cols() == dim(); out is [L, D]. ensures: out is assigned; with `workspace`
  // given, its buffers hold the activations (the same values, no allocation once sized).
  void forward(MatrixRef<Scalar> out,             // [L, D]
               const ConstMatrixRef<Scalar>& in,  // [L, D]
               Saved* saved = nullptr, Workspace* workspace = nullptr) const {
    Workspace local;
    Workspace& w = workspace != nullptr ? *workspace : local;
    Matrix<Scalar>& act = w.act;  // [L, F]
    act.resize(in.rows(), ffn_dim());
    if (gated()) {
      Matrix<Scalar>& up_x = w.up_x;  // [L, F]
      up_x.resize(in.rows(), ffn_dim());
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

  // Backward of forward(out, in, &saved).
  // requires: grad has this layer's shapes; d_out [L, D]; in [L, D] and saved from forward.
  // ensures: d_in is assigned; grad's weights are accumulated into.
  void backward(MatrixRef<Scalar> d_in,               // [L, D]
                FeedForward& grad,
                const ConstMatrixRef<Scalar>& d_out,  // [L, D]
                const ConstMatrixRef<Scalar>& in,     // [L, D]
                const Saved& saved) const {
    const Index rows = in.rows();
    Matrix<Scalar> act = saved.hidden;           // [L, F] recomputed activation
    Matrix<Scalar> d_act(rows, ffn_dim());       // [L, F]
    if (gated()) {
      activate<Scalar>(Activation::swiglu, act);  // silu(g)
      const Matrix<Scalar> product = act.cwiseProduct(saved.up);  // [L, F] down's input
      down.backward(d_act, grad.down, d_out, product);
      Matrix<Scalar> d_up = d_act.cwiseProduct(act);               // [L, F]
      d_act.array() *= saved.up.array();                          // d silu(g)
      activate_backward<Scalar>(Activation::swiglu, d_act, saved.hidden);  // d g
      Matrix<Scalar> d_from_up(rows, dim());                      // [L, D]
      up.backward(d_from_up, grad.up, d_up, in);
      gate.backward(d_in, grad.gate, d_act, in);
      d_in += d_from_up;
    } else {
      activate<Scalar>(activation, act);
      fc2.backward(d_act, grad.fc2, d_out, act);
      activate_backward<Scalar>(activation, d_act, saved.hidden);
      fc1.backward(d_in, grad.fc1, d_act, in);
    }
  }
};

}  // namespace tessera::nn
