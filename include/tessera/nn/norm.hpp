#pragma once
// Norm: LayerNorm or RMSNorm over the last dimension, chosen at run time (SPEC 3).
//
//   layernorm: y = (x - mean(x)) / sqrt(var(x) + eps) * w + b     (biased variance;
//              torch.nn.functional.layer_norm)
//   rmsnorm:   y = x / sqrt(mean(x^2) + eps) * w                   (no bias)
//
// Forward saves, per row, `mean` (0 for rmsnorm) and `rstd` = 1 / sqrt(var + eps) (resp.
// 1 / sqrt(mean(x^2) + eps)): what the backward pass needs besides the input.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>

#include <cmath>

namespace tessera::nn {

template <class Scalar>
struct Norm {
  NormKind kind = NormKind::layernorm;
  Scalar eps = Scalar(1e-5);
  Vector<Scalar> weight;  // [D]
  Vector<Scalar> bias;    // [D] for layernorm, empty for rmsnorm

  struct Saved {
    Vector<Scalar> mean;  // [L]
    Vector<Scalar> rstd;  // [L]
  };

  Norm() = default;
  Norm(NormKind norm_kind, Index dim, Scalar epsilon)
      : kind(norm_kind),
        eps(epsilon),
        weight(Vector<Scalar>::Ones(dim)),
        bias(norm_kind == NormKind::layernorm ? Vector<Scalar>::Zero(dim) : Vector<Scalar>()) {}

  Index dim() const { return weight.size(); }

  // requires: in.cols() == dim(); out has in's shape (out may alias in).
  // ensures: out is assigned; saved (when given) holds mean and rstd per row.
  void forward(MatrixRef<Scalar> out,              // [L, D]
               const ConstMatrixRef<Scalar>& in,   // [L, D]
               Saved* saved = nullptr) const {
    TESSERA_ASSERT(in.cols() == dim() && out.rows() == in.rows() && out.cols() == in.cols());
    const Index rows = in.rows();
    if (saved != nullptr) {
      saved->mean.resize(rows);
      saved->rstd.resize(rows);
    }
#pragma omp parallel for schedule(static) if (rows >= 256)
    for (Index r = 0; r < rows; ++r) {
      const auto x = in.row(r);
      Scalar mean = 0;
      Scalar rstd;
      if (kind == NormKind::layernorm) {
        mean = x.mean();
        rstd = Scalar(1) / std::sqrt((x.array() - mean).square().mean() + eps);
        out.row(r) = ((x.array() - mean) * rstd * weight.transpose().array() +
                      bias.transpose().array()).matrix();
      } else {
        rstd = Scalar(1) / std::sqrt(x.array().square().mean() + eps);
        out.row(r) = (x.array() * rstd * weight.transpose().array()).matrix();
      }
      if (saved != nullptr) {
        saved->mean[r] = mean;
        saved->rstd[r] = rstd;
      }
    }
  }

  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& in) const {
    Matrix<Scalar> out(in.rows(), in.cols());
    forward(out, in);
    return out;
  }
};

}  // namespace tessera::nn
