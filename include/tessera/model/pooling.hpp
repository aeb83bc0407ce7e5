#pragma once
// Pooling of SPEC 3: one sample's final hidden states [L, D] to one vector p [D], with its
// backward pass.
//
//   mean:    p = mean over the L tokens
//   cls:     p = the first token's state (the cls token)
//   routed:  p_m = mean of modality m's tokens (m present); g = router(mean_m p_m);
//            w = softmax of g over the present modalities; p = sum_m w_m p_m
//
// Backward (routed), with d_w_j = d_p . p_j:
//   d_g_j = w_j (d_w_j - sum_i w_i d_w_i);  d_router_j += d_g_j (mean of means), d_bias_j += d_g_j
//   d_mean_of_means = router^T d_g;  d_p_j = w_j d_p + d_mean_of_means / n;  each of modality
//   j's tokens gets d_p_j / count_j.

#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/nn/linear.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace tessera {

// What routed pooling computes on the way (pool_forward fills it; pool_backward reuses it).
template <class Scalar>
struct RoutedPooling {
  std::vector<ModalityId> present;       // the modalities present
  std::vector<Index> counts;             // their token counts
  std::vector<RowVector<Scalar>> means;  // p_m, each [D]
  RowVector<Scalar> mean_of_means;       // [D]
  std::vector<Scalar> weights;           // w_m
};

// Pools `hidden` [L, D], whose token r has modality modality[r].
// Routed pooling uses `router` [4 + custom, D] and fills `routed` when given; `routing`, when
// given, gets each modality's weight ([4 + custom], 0 where absent; only for routed pooling).
template <class Scalar>
RowVector<Scalar> pool_forward(PoolingKind kind,
                               const Matrix<Scalar>& hidden,  // [L, D]
                               const std::vector<ModalityId>& modality,  // [L]
                               const nn::Linear<Scalar>& router,  // [4 + custom, D]
                               // [4 + custom]
                               std::type_identity_t<Vector<Scalar>>* routing = nullptr,
                               std::type_identity_t<RoutedPooling<Scalar>>* routed = nullptr) {
  switch (kind) {
    case PoolingKind::mean: return hidden.colwise().mean();
    case PoolingKind::cls: return hidden.row(0);
    case PoolingKind::routed: break;
  }
  RoutedPooling<Scalar> local;
  RoutedPooling<Scalar>& r = routed != nullptr ? *routed : local;
  r = RoutedPooling<Scalar>{};
  const int count_modalities = static_cast<int>(router.weight.rows());
  for (int index = 0; index < count_modalities; ++index) {
    const ModalityId m = ModalityId::from_index(index);
    RowVector<Scalar> sum = RowVector<Scalar>::Zero(hidden.cols());
    Index count = 0;
    for (Index row = 0; row < hidden.rows(); ++row) {
      if (modality[static_cast<std::size_t>(row)] == m) {
        sum += hidden.row(row);
        ++count;
      }
    }
    if (count == 0) continue;
    r.means.push_back(sum / static_cast<Scalar>(count));
    r.present.push_back(m);
    r.counts.push_back(count);
  }
  r.mean_of_means = RowVector<Scalar>::Zero(hidden.cols());
  for (const auto& p : r.means) r.mean_of_means += p;
  r.mean_of_means /= static_cast<Scalar>(r.means.size());
  const Vector<Scalar> logits =
      router.weight * r.mean_of_means.transpose() + router.bias;  // [4 + custom]
  Scalar max_logit = -std::numeric_limits<Scalar>::infinity();
  for (ModalityId m : r.present) max_logit = std::max(max_logit, logits[m.index()]);
  Scalar total = 0;
  for (ModalityId m : r.present) {
    r.weights.push_back(std::exp(logits[m.index()] - max_logit));
    total += r.weights.back();
  }
  for (auto& w : r.weights) w /= total;

  if (routing != nullptr) *routing = Vector<Scalar>::Zero(count_modalities);
  RowVector<Scalar> pooled = RowVector<Scalar>::Zero(hidden.cols());
  for (std::size_t j = 0; j < r.present.size(); ++j) {
    if (routing != nullptr) (*routing)[r.present[j].index()] = r.weights[j];
    pooled += r.weights[j] * r.means[j];
  }
  return pooled;
}

// Backward of pool_forward: d_hidden [L, D] += the gradient reaching the hidden states from
// d_p [D]; grad_router accumulates the router's (routed pooling, whose `routed` is what
// pool_forward filled for the same hidden states).
// ensures: d_hidden and grad_router are added to, never assigned.
template <class Scalar>
void pool_backward(PoolingKind kind,
                   MatrixRef<Scalar> d_hidden,          // [L, D]
                   nn::Linear<Scalar>& grad_router,     // [4 + custom, D]
                   const RowVector<Scalar>& d_p,        // [D]
                   const std::vector<ModalityId>& modality,  // [L]
                   const nn::Linear<Scalar>& router,    // [4 + custom, D]
                   const RoutedPooling<Scalar>& r) {
  switch (kind) {
    case PoolingKind::mean:
      d_hidden.rowwise() += d_p / static_cast<Scalar>(d_hidden.rows());
      return;
    case PoolingKind::cls:
      d_hidden.row(0) += d_p;
      return;
    case PoolingKind::routed: break;
  }
  const std::size_t n = r.present.size();
  Scalar weighted = 0;
  std::vector<Scalar> d_w(n);
  for (std::size_t j = 0; j < n; ++j) {
    d_w[j] = d_p.dot(r.means[j]);
    weighted += r.weights[j] * d_w[j];
  }
  RowVector<Scalar> d_mean_of_means = RowVector<Scalar>::Zero(d_hidden.cols());
  for (std::size_t j = 0; j < n; ++j) {
    const Scalar d_logit = r.weights[j] * (d_w[j] - weighted);
    const int row = r.present[j].index();
    grad_router.weight.row(row) += d_logit * r.mean_of_means;
    grad_router.bias[row] += d_logit;
    d_mean_of_means += d_logit * router.weight.row(row);
  }
  for (std::size_t j = 0; j < n; ++j) {
    const RowVector<Scalar> d_mean =
        (r.weights[j] * d_p + d_mean_of_means / static_cast<Scalar>(n)) /
        static_cast<Scalar>(r.counts[j]);
    for (Index row = 0; row < d_hidden.rows(); ++row) {
      if (modality[static_cast<std::size_t>(row)] == r.present[j]) d_hidden.row(row) += d_mean;
    }
  }
}

}  // namespace tessera
