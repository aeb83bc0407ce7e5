#pragma once
// Contrastive losses of SPEC 6 (values; gradients come with training).
//
//   InfoNCE (CLIP, Radford et al. 2021): logits = exp(logit_scale) a b^T,
//       loss = (CE(logits, arange N) + CE(logits^T, arange N)) / 2,
//       logit_scale clamped to at most ln(100)
//   binding (ImageBind, Girdhar et al. 2023): sum over the non-anchor modalities m of
//       InfoNCE(anchor, m)
//   triplet: mean over rows of max(0, d(a, p) - d(a, n) + margin), d = 1 - cosine similarity

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <cmath>
#include <vector>

namespace tessera {

// The initial logit_scale, ln(1/0.07), and its upper clamp, ln(100).
inline constexpr double initial_logit_scale = 2.6592600369327779;  // ln(1/0.07)
inline constexpr double max_logit_scale = 4.6051701859880914;      // ln(100)

namespace detail {

// Mean over rows of the cross-entropy of logits [N, N] with targets 0..N-1 (row i's target
// is column i), computed with a stable log-sum-exp.
template <class Scalar>
Scalar diagonal_cross_entropy(const Matrix<Scalar>& logits) {  // [N, N]
  Scalar total = 0;
  for (Index i = 0; i < logits.rows(); ++i) {
    const Scalar m = logits.row(i).maxCoeff();
    const Scalar lse = m + std::log((logits.row(i).array() - m).exp().sum());
    total += lse - logits(i, i);
  }
  return total / static_cast<Scalar>(logits.rows());
}

}  // namespace detail

// requires: a, b [N, E] with N >= 1 (rows are expected to be unit vectors; not enforced).
template <class Scalar>
Scalar info_nce_loss(const ConstMatrixRef<Scalar>& a,  // [N, E]
                     const ConstMatrixRef<Scalar>& b,  // [N, E]
                     Scalar logit_scale) {
  check(a.rows() == b.rows() && a.cols() == b.cols() && a.rows() > 0,
        "info_nce_loss: a is [", a.rows(), ", ", a.cols(), "] and b is [", b.rows(), ", ",
        b.cols(), "], expected two equal non-empty shapes");
  const Scalar scale = std::exp(std::min(logit_scale, static_cast<Scalar>(max_logit_scale)));
  const Matrix<Scalar> logits = scale * (a * b.transpose());  // [N, N]
  return (detail::diagonal_cross_entropy<Scalar>(logits) +
          detail::diagonal_cross_entropy<Scalar>(logits.transpose())) /
         Scalar(2);
}

// requires: every matrix of `others` has the anchor's shape.
template <class Scalar>
Scalar binding_loss(const ConstMatrixRef<Scalar>& anchor,     // [N, E]
                    const std::vector<Matrix<Scalar>>& others,  // each [N, E]
                    Scalar logit_scale) {
  Scalar total = 0;
  for (const auto& other : others) total += info_nce_loss<Scalar>(anchor, other, logit_scale);
  return total;
}

template <class Scalar>
Scalar triplet_loss(const ConstMatrixRef<Scalar>& anchor,    // [N, E]
                    const ConstMatrixRef<Scalar>& positive,  // [N, E]
                    const ConstMatrixRef<Scalar>& negative,  // [N, E]
                    Scalar margin) {
  check(anchor.rows() > 0 && positive.rows() == anchor.rows() &&
            negative.rows() == anchor.rows() && positive.cols() == anchor.cols() &&
            negative.cols() == anchor.cols(),
        "triplet_loss: anchor, positive and negative must have one non-empty shape");
  auto distance = [](const auto& x, const auto& y) {
    return Scalar(1) - x.dot(y) / (x.norm() * y.norm());
  };
  Scalar total = 0;
  for (Index i = 0; i < anchor.rows(); ++i) {
    const Scalar d = distance(anchor.row(i), positive.row(i)) -
                     distance(anchor.row(i), negative.row(i)) + margin;
    total += std::max(d, Scalar(0));
  }
  return total / static_cast<Scalar>(anchor.rows());
}

}  // namespace tessera
