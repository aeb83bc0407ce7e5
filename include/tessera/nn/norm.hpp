#pragma once
// Norm: LayerNorm or RMSNorm over the last dimension, chosen at run time (SPEC 3).
//
//   layernorm: y = (x - mean(x)) / sqrt(var(x) + eps) * w + b     (biased variance;
//              torch.nn.functional.layer_norm)
//   rmsnorm:   y = x / sqrt(mean(x^2) + eps) * w                   (no bias)
//
// Forward saves, per row, `mean` (0 for rmsnorm) and `rstd` = 1 / sqrt(var + eps) (resp.
// 1 / sqrt(mean(x^2) + eps)): what the backward pass needs besides the input.
//
// Backward, per row, with xhat = (x - mean) rstd (rmsnorm: x rstd) and d_xhat = d_y * w:
//   layernorm: d_x = rstd (d_xhat - mean(d_xhat) - xhat mean(d_xhat * xhat))
//   rmsnorm:   d_x = rstd (d_xhat - xhat mean(d_xhat * xhat))
//   d_w += sum over rows of d_y * xhat,   d_b += sum over rows of d_y

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <cmath>

namespace tessera {

// Which normalization a norm layer computes (config key "norm").
enum class NormKind { layernorm, rmsnorm };
inline constexpr NormKind norm_kinds[] = {NormKind::layernorm, NormKind::rmsnorm};

inline const char* to_string(NormKind n) {
  switch (n) {
    case NormKind::layernorm: return "layernorm";
    case NormKind::rmsnorm: return "rmsnorm";
  }
  return "unknown";
}

}  // namespace tessera

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

  // Backward of forward(out, in, &saved).
  // requires: grad has this layer's shapes; d_out, in [L, D]; saved from that forward.
  // ensures: d_in is assigned (d_in may alias d_out); grad.weight and grad.bias are
  // accumulated into.
  void backward(MatrixRef<Scalar> d_in,               // [L, D]
                Norm& grad,                           // weight [D], bias [D] or empty
                const ConstMatrixRef<Scalar>& d_out,  // [L, D]
                const ConstMatrixRef<Scalar>& in,     // [L, D]
                const Saved& saved) const {
    TESSERA_ASSERT(in.cols() == dim() && d_out.rows() == in.rows() && d_out.cols() == dim() &&
                   d_in.rows() == in.rows() && d_in.cols() == dim() &&
                   saved.rstd.size() == in.rows() && grad.weight.size() == dim() &&
                   grad.bias.size() == bias.size());
    const Index rows = in.rows();
    const bool layer = kind == NormKind::layernorm;
    Matrix<Scalar> xhat(rows, dim());  // [L, D]
    for (Index r = 0; r < rows; ++r) {
      xhat.row(r) = (in.row(r).array() - saved.mean[r]) * saved.rstd[r];
    }
    // The weight gradients first: d_in may overwrite d_out below.
    grad.weight += (d_out.array() * xhat.array()).colwise().sum().matrix().transpose();
    if (layer) grad.bias += d_out.colwise().sum().transpose();
#pragma omp parallel for schedule(static) if (rows >= 256)
    for (Index r = 0; r < rows; ++r) {
      const RowVector<Scalar> d_xhat = d_out.row(r).cwiseProduct(weight.transpose());  // [D]
      const Scalar mean_dot = d_xhat.dot(xhat.row(r)) / static_cast<Scalar>(dim());
      const Scalar mean_d = layer ? d_xhat.mean() : Scalar(0);
      d_in.row(r) = saved.rstd[r] * (d_xhat.array() - mean_d - xhat.row(r).array() * mean_dot).matrix();
    }
  }

  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& in) const {
    Matrix<Scalar> out(in.rows(), in.cols());
    forward(out, in);
    return out;
  }
};

}  // namespace tessera::nn
