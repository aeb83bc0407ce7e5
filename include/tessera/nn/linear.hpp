#pragma once
// Linear: y = x W^T + b (torch.nn.functional.linear).
//
// Backward (given d_y = dLoss/dy):  d_x = d_y W,  d_W += d_y^T x,  d_b += sum over rows of d_y.
//
// Gradient convention of every layer: the gradient of an input (d_x) is assigned; the
// gradients of weights, held in a `grad` object of the layer's own type and shapes, are
// accumulated into (so micro-batches add up, and a weight used twice gets both parts).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/matmul.hpp>

namespace tessera::nn {

template <class Scalar>
struct Linear {
  Matrix<Scalar> weight;  // [out, in]
  Vector<Scalar> bias;    // [out], or empty for a layer without bias

  Linear() = default;
  Linear(Index in_features, Index out_features, bool with_bias)
      : weight(Matrix<Scalar>::Zero(out_features, in_features)),
        bias(with_bias ? Vector<Scalar>::Zero(out_features) : Vector<Scalar>()) {}

  Index in_features() const { return weight.cols(); }
  Index out_features() const { return weight.rows(); }
  bool has_bias() const { return bias.size() != 0; }

  // requires: in.cols() == in_features(); out is [in.rows(), out_features()].
  // ensures: out is assigned (not accumulated into).
  void forward(MatrixRef<Scalar> out,              // [L, out]
               const ConstMatrixRef<Scalar>& in    // [L, in]
  ) const {
    TESSERA_ASSERT(in.cols() == in_features() && out.rows() == in.rows() &&
                   out.cols() == out_features());
    detail::matmul<false, true, Scalar>(out, in, weight, false, has_bias() ? &bias : nullptr);
  }

  // out += in W^T + b: forward added to what out holds (a residual connection) in the same
  // pass over out (the bias added to it, then the product).
  // requires: as forward. ensures: out is accumulated into.
  void forward_accumulate(MatrixRef<Scalar> out,            // [L, out]
                          const ConstMatrixRef<Scalar>& in  // [L, in]
  ) const {
    TESSERA_ASSERT(in.cols() == in_features() && out.rows() == in.rows() &&
                   out.cols() == out_features());
    detail::matmul<false, true, Scalar>(out, in, weight, true, has_bias() ? &bias : nullptr);
  }

  // Backward of forward(out, in).
  // requires: grad has this layer's shapes; d_out [L, out]; in [L, in], forward's input.
  // ensures: d_in is assigned; grad.weight and grad.bias are accumulated into.
  void backward(MatrixRef<Scalar> d_in,              // [L, in]
                Linear& grad,                        // weight [out, in], bias [out]
                const ConstMatrixRef<Scalar>& d_out, // [L, out]
                const ConstMatrixRef<Scalar>& in     // [L, in]
  ) const {
    TESSERA_ASSERT(d_in.rows() == in.rows() && d_in.cols() == in_features());
    backward_weights(grad, d_out, in);
    detail::matmul<false, false, Scalar>(d_in, d_out, weight);
  }

  // The weight gradients alone, for a layer whose input needs none (patches, say).
  // ensures: grad.weight and grad.bias are accumulated into.
  void backward_weights(Linear& grad,                        // weight [out, in], bias [out]
                        const ConstMatrixRef<Scalar>& d_out, // [L, out]
                        const ConstMatrixRef<Scalar>& in     // [L, in]
  ) const {
    TESSERA_ASSERT(d_out.rows() == in.rows() && d_out.cols() == out_features() &&
                   in.cols() == in_features() && grad.weight.rows() == out_features() &&
                   grad.weight.cols() == in_features() && grad.bias.size() == bias.size());
    detail::matmul<true, false, Scalar>(grad.weight, d_out, in, true);
    if (has_bias()) grad.bias += d_out.colwise().sum().transpose();
  }

  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& in) const {  // [L, in] -> [L, out]
    Matrix<Scalar> out(in.rows(), out_features());
    forward(out, in);
    return out;
  }
};

}  // namespace tessera::nn
