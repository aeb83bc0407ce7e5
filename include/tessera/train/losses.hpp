#pragma once
// Contrastive losses of SPEC 6, and their backward passes.
//
//   InfoNCE (CLIP, Radford et al. 2021): logits = exp(logit_scale) a b^T,
//       loss = (CE(logits, arange N) + CE(logits^T, arange N)) / 2,
//       logit_scale clamped to at most ln(100)
//   binding (ImageBind, Girdhar et al. 2023): sum over the non-anchor modalities m of
//       InfoNCE(anchor, m)
//   triplet: mean over rows of max(0, d(a, p) - d(a, n) + margin), d = 1 - cosine similarity
//
// Backward (the *_backward functions, given d_loss = dTotal/dLoss): the embeddings' gradients
// are ADDED to d_a, d_b, ... (a batch's embeddings usually enter several losses), and the
// gradient with respect to logit_scale is returned.
//   InfoNCE: d_logits = d_loss / (2N) ((softmax_rows(logits) - I) + (softmax_cols(logits) - I))
//            d_a += s d_logits b,  d_b += s d_logits^T a,  d_logit_scale = s sum(d_logits * a b^T)
//            (0 when logit_scale > ln(100): the clamp passes no gradient, as torch.clamp)
//   triplet: where the hinge is >= 0 (torch.clamp's choice at 0), d cos(x, y)/dx =
//            y / (|x| |y|) - cos(x, y) x / |x|^2, times -d_loss/N for (a, p), +d_loss/N for (a, n)

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

// Backward of info_nce_loss(a, b, logit_scale).
// requires: the shapes of info_nce_loss; d_a, d_b [N, E].
// ensures: d_a and d_b are added to; returns dLoss/d logit_scale times d_loss.
template <class Scalar>
Scalar info_nce_backward(MatrixRef<Scalar> d_a,              // [N, E]
                         MatrixRef<Scalar> d_b,              // [N, E]
                         const ConstMatrixRef<Scalar>& a,    // [N, E]
                         const ConstMatrixRef<Scalar>& b,    // [N, E]
                         Scalar logit_scale, Scalar d_loss = Scalar(1)) {
  check(a.rows() == b.rows() && a.cols() == b.cols() && a.rows() > 0 &&
            d_a.rows() == a.rows() && d_a.cols() == a.cols() && d_b.rows() == b.rows() &&
            d_b.cols() == b.cols(),
        "info_nce_backward: a, b, d_a and d_b must have one non-empty shape");
  const Index n = a.rows();
  const bool clamped = logit_scale > static_cast<Scalar>(max_logit_scale);
  const Scalar scale = std::exp(std::min(logit_scale, static_cast<Scalar>(max_logit_scale)));
  const Matrix<Scalar> similarity = a * b.transpose();  // [N, N]
  const Matrix<Scalar> logits = scale * similarity;
  Matrix<Scalar> d_logits(n, n);  // [N, N]
  const Scalar half_mean = d_loss / static_cast<Scalar>(2 * n);
  for (Index i = 0; i < n; ++i) {  // the rows' cross entropy
    const Scalar m = logits.row(i).maxCoeff();
    const RowVector<Scalar> e = (logits.row(i).array() - m).exp();
    d_logits.row(i) = half_mean * e / e.sum();
  }
  for (Index j = 0; j < n; ++j) {  // the columns'
    const Scalar m = logits.col(j).maxCoeff();
    const Vector<Scalar> e = (logits.col(j).array() - m).exp();
    d_logits.col(j) += half_mean * e / e.sum();
  }
  d_logits.diagonal().array() -= 2 * half_mean;
  d_a.noalias() += scale * d_logits * b;
  d_b.noalias() += scale * d_logits.transpose() * a;
  return clamped ? Scalar(0) : scale * d_logits.cwiseProduct(similarity).sum();
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

// Backward of binding_loss(anchor, others, logit_scale).
// requires: d_others has one matrix per other, each of its shape.
// ensures: d_anchor and d_others are added to; returns dLoss/d logit_scale times d_loss.
template <class Scalar>
Scalar binding_backward(MatrixRef<Scalar> d_anchor,                 // [N, E]
                        std::vector<Matrix<Scalar>>& d_others,      // each [N, E]
                        const ConstMatrixRef<Scalar>& anchor,       // [N, E]
                        const std::vector<Matrix<Scalar>>& others,  // each [N, E]
                        Scalar logit_scale, Scalar d_loss = Scalar(1)) {
  check(d_others.size() == others.size(), "binding_backward: ", d_others.size(),
        " gradients for ", others.size(), " modalities");
  Scalar d_logit_scale = 0;
  for (std::size_t m = 0; m < others.size(); ++m) {
    d_logit_scale +=
        info_nce_backward<Scalar>(d_anchor, d_others[m], anchor, others[m], logit_scale, d_loss);
  }
  return d_logit_scale;
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

// Backward of triplet_loss(anchor, positive, negative, margin).
// requires: the shapes of triplet_loss; the gradients [N, E] each.
// ensures: d_anchor, d_positive and d_negative are added to.
template <class Scalar>
void triplet_backward(MatrixRef<Scalar> d_anchor,               // [N, E]
                      MatrixRef<Scalar> d_positive,             // [N, E]
                      MatrixRef<Scalar> d_negative,             // [N, E]
                      const ConstMatrixRef<Scalar>& anchor,     // [N, E]
                      const ConstMatrixRef<Scalar>& positive,   // [N, E]
                      const ConstMatrixRef<Scalar>& negative,   // [N, E]
                      Scalar margin, Scalar d_loss = Scalar(1)) {
  check(anchor.rows() > 0 && positive.rows() == anchor.rows() &&
            negative.rows() == anchor.rows() && positive.cols() == anchor.cols() &&
            negative.cols() == anchor.cols() && d_anchor.rows() == anchor.rows() &&
            d_positive.rows() == anchor.rows() && d_negative.rows() == anchor.rows(),
        "triplet_backward: every matrix must have the anchor's non-empty shape");
  const Scalar per_row = d_loss / static_cast<Scalar>(anchor.rows());
  // adds c * d cos(x, y)/dx to d_x and c * d cos(x, y)/dy to d_y
  auto cosine_backward = [](auto&& d_x, auto&& d_y, const auto& x, const auto& y, Scalar c) {
    const Scalar nx = x.norm(), ny = y.norm();
    const Scalar cosine = x.dot(y) / (nx * ny);
    d_x += c * (y / (nx * ny) - cosine * x / (nx * nx));
    d_y += c * (x / (nx * ny) - cosine * y / (ny * ny));
  };
  for (Index i = 0; i < anchor.rows(); ++i) {
    const auto a = anchor.row(i), p = positive.row(i), n = negative.row(i);
    const Scalar hinge = (Scalar(1) - a.dot(p) / (a.norm() * p.norm())) -
                         (Scalar(1) - a.dot(n) / (a.norm() * n.norm())) + margin;
    if (hinge < Scalar(0)) continue;
    cosine_backward(d_anchor.row(i), d_positive.row(i), a, p, -per_row);
    cosine_backward(d_anchor.row(i), d_negative.row(i), a, n, per_row);
  }
}

}  // namespace tessera
