#pragma once
// One contrastive fine-tuning step of a pretrained TowerModel (CLIP, open_clip, ImageBind,
// tessera_towers; model/tower_model.hpp), contrastive_step's (train/step.hpp) counterpart:
//
//   encode_batch(samples, freezing, trace)   frozen towers: the plain forward, nothing kept
//   loss = sum_g weight_g InfoNCE(a_g, b_g)  contrastive_loss_gradients (SPEC 6)
//   backward                                 the trained towers' (grad += ...); logit_scale's
//                                            when it trains
//   clip_grad_norm(max_grad_norm)            when max_grad_norm > 0, over the trained weights
//   AdamW.step(lr)                           over the trained weights only
//
// The freezing is the gradient holder's (TowerGradients::freezing): frozen parts get no
// gradient memory, no trace, no backward and no optimizer state (the optimizer sees only
// TowerModel::parameters(freezing)). Each sample holds one input (TowerModel::encode_batch).
//
// ImageBind-style binding (SPEC 6): with the anchor tower frozen (`--freeze image`) and pair
// groups (anchor_i, other_i) per other modality, weight 1 each, the loss is
// sum_m InfoNCE(anchor, m) and only the other towers (and logit_scale, unless frozen) learn.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/tower_trace.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include <limits>
#include <span>
#include <vector>

namespace tessera {

// The forward and backward of the groups' weighted InfoNCE over `samples`: the training
// forward with a trace of the trained towers, contrastive_loss_gradients, the trained towers'
// backward. For gradient accumulation (several calls between grad.set_zero() and the step).
// requires: grad for model's config; every group inside the batch with count >= 1, weights
//   finite (checked before any work).
// ensures: grad's trained weights (logit_scale when it trains) are added to; returns the loss
//   and each group's InfoNCE (grad_norm left 0).
template <class Scalar>
StepStats tower_contrastive_gradients(const TowerModel<Scalar>& model, TowerGradients<Scalar>& grad,
                                      std::span<const Sample<Scalar>> samples,
                                      std::span<const PairGroup> groups,
                                      TowerModelTrace<Scalar>& trace) {
  const auto n = static_cast<Index>(samples.size());
  detail::check_groups(groups, n);
  const auto encoded = model.encode_batch(samples, grad.freezing, trace);
  Matrix<Scalar> embeddings(n, model.embed_dim());  // [N, E]
  for (Index i = 0; i < n; ++i) embeddings.row(i) = encoded[static_cast<std::size_t>(i)].embedding;

  Matrix<Scalar> d_embeddings;  // [N, E]
  Scalar d_logit_scale = 0;
  const StepStats stats = contrastive_loss_gradients<Scalar>(d_embeddings, d_logit_scale,
                                                             embeddings, model.logit_scale, groups);
  if (grad.freezing.logit_scale) grad.logit_scale += d_logit_scale;
  model.backward(grad, d_embeddings, trace);
  return stats;
}

// One whole step: grad.set_zero(), tower_contrastive_gradients, clipping (max_grad_norm > 0)
// and AdamW at rate lr on the weights grad.freezing trains. `grad` and `trace` are the
// caller's, so their buffers live across steps.
// Throws tessera::Error when a gradient is not finite (clip_grad_norm names it), before the
// weights change.
template <class Scalar>
StepStats tower_step(TowerModel<Scalar>& model, TowerGradients<Scalar>& grad,
                     AdamW<Scalar>& optimizer, std::span<const Sample<Scalar>> samples,
                     std::span<const PairGroup> groups, double lr, double max_grad_norm,
                     TowerModelTrace<Scalar>& trace) {
  grad.set_zero();
  StepStats stats = tower_contrastive_gradients<Scalar>(model, grad, samples, groups, trace);
  detail::clip_and_update<Scalar>(stats, model.parameters(grad.freezing), grad.parameters(),
                                  optimizer, lr, max_grad_norm);
  return stats;
}

}  // namespace tessera
