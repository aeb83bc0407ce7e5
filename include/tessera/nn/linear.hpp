#pragma once
// Linear: y = x W^T + b (torch.nn.functional.linear).

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
    detail::matmul_transposed<Scalar>(out, in, weight, has_bias() ? &bias : nullptr);
  }

  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& in) const {  // [L, in] -> [L, out]
    Matrix<Scalar> out(in.rows(), out_features());
    forward(out, in);
    return out;
  }
};

}  // namespace tessera::nn
