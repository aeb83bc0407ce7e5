#pragma once
// One contrastive training step, the loop body of tessera-train, bench_train and the tests:
//
//   encode_batch(samples, trace)             the training forward over the packed batch
//   loss = sum_g weight_g InfoNCE(a_g, b_g)  one InfoNCE per group of pairs (SPEC 6)
//   backward                                 the losses', then the encoder's (grad += ...)
//   clip_grad_norm(max_grad_norm)            when max_grad_norm > 0, over the trained weights
//   AdamW.step(lr)                           over the trained weights: every one, or those an
//                                            EncoderFreezing leaves (model/encoder_freezing.hpp)
//
// A group is `count` pairs whose two views sit in two runs of the batch: sample a_first + i
// and sample b_first + i are pair i (a caption and its image, say). The other pairs of a group
// are its negatives, as in CLIP; pairs of different groups (text-image and audio-video, say)
// never meet in one loss. Groups may share samples and need not cover the batch.
//
// pair_batch() lays out a PairSampler batch this way: per pair kind, its pairs' first views,
// then their second views, one group per kind weighted by its share of the pairs.
//
// contrastive_gradients() is the forward and backward alone, adding to a gradient model, for
// gradient accumulation (several calls between set_zero() and the optimizer's step; InfoNCE's
// negatives then come from each micro-batch, so the sum is not the large batch's gradient).
// For the large batch's exact gradient in a micro-batch's memory, see train/grad_cache.hpp
// (GradCache), built on contrastive_loss_gradients(), the loss piece on embeddings alone.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_freezing.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/sampler.hpp>

#include <array>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

namespace tessera {

// Pairs (samples[a_first + i], samples[b_first + i]) for i in [0, count), in one InfoNCE.
struct PairGroup {
  Index a_first = 0;
  Index b_first = 0;
  Index count = 0;
  double weight = 1.0;  // the group's InfoNCE is multiplied by this in the total loss
};

// The samples and groups of `draws` (a PairSampler batch, grouped by kind), each view taken
// from view(item, Modality) -> const Sample<Scalar>&.
// ensures: samples and groups are replaced; group g's weight is its pairs / all pairs.
template <class Scalar, class View>
void pair_batch(std::span<const PairDraw> draws, View&& view, std::vector<Sample<Scalar>>& samples,
                std::vector<PairGroup>& groups) {
  samples.clear();
  groups.clear();
  for (std::size_t first = 0; first < draws.size();) {
    std::size_t end = first;
    while (end < draws.size() && draws[end].kind == draws[first].kind) ++end;
    const auto [a, b] = pair_kinds[static_cast<std::size_t>(draws[first].kind)];
    const auto start = static_cast<Index>(samples.size());
    for (std::size_t i = first; i < end; ++i) samples.push_back(view(draws[i].item, a));
    for (std::size_t i = first; i < end; ++i) samples.push_back(view(draws[i].item, b));
    const auto count = static_cast<Index>(end - first);
    groups.push_back({start, start + count, count,
                      static_cast<double>(count) / static_cast<double>(draws.size())});
    first = end;
  }
}

// Where pair_batch() puts each draw's two views, without the views: rows[i] = {the row of
// draws[i]'s first view, the row of its second} in a batch of `samples` = 2 x draws rows, and
// the groups pair_batch() gives. A data-parallel step (train/distributed_step.hpp) places the
// rows each rank embedded with it.
struct PairBatchLayout {
  std::vector<std::array<Index, 2>> rows;  // [draws]
  std::vector<PairGroup> groups;
  Index samples = 0;
};

inline PairBatchLayout pair_batch_layout(std::span<const PairDraw> draws) {
  PairBatchLayout layout;
  layout.rows.resize(draws.size());
  for (std::size_t first = 0; first < draws.size();) {
    std::size_t end = first;
    while (end < draws.size() && draws[end].kind == draws[first].kind) ++end;
    const auto count = static_cast<Index>(end - first);
    const Index start = layout.samples;
    for (std::size_t i = first; i < end; ++i) {
      const auto j = static_cast<Index>(i - first);
      layout.rows[i] = {start + j, start + count + j};
    }
    layout.groups.push_back({start, start + count, count,
                             static_cast<double>(count) / static_cast<double>(draws.size())});
    layout.samples += 2 * count;
    first = end;
  }
  return layout;
}

// An estimate of the memory, in bytes, that contrastive_step() allocates for a batch of
// `samples` samples holding `tokens` tokens in all, whose largest pair group has
// `largest_group` pairs:
//   per token and layer, what the trace keeps for backward: the layer's input, the two norms'
//     outputs, the attention's q, k, v and context (7 D), the feed-forward's hidden values
//     (2 F, gate and up for SwiGLU); and per token the embedding and the final norm (3 D);
//   one layer's gradients in flight during backward (8 D + 2 F per token);
//   per group, InfoNCE's logits, probabilities and their gradient ([count, count], x 4);
//   the embeddings and their gradient ([N, E], x 2).
// With checkpoint_layers (EncoderTrace::Options), the trace keeps only each layer's input
// (D per token and layer) and backward holds one layer's recomputed values (7 D + 2 F per
// token) at a time.
// The batch's own samples (the front ends' output, copied into the batch) are the caller's to
// add. An estimate to refuse a batch that cannot fit before allocating it (measured within a
// factor of 2 of the peak, docs/programs.md), not a plan.
template <class Scalar>
double contrastive_step_bytes(const Config& config, Index samples, Index tokens, Index largest_group,
                              bool checkpoint_layers = false) {
  const auto d = static_cast<double>(config.hidden_dim), f = static_cast<double>(config.ffn_dim);
  const auto t = static_cast<double>(tokens), g = static_cast<double>(largest_group);
  const auto layers = static_cast<double>(config.num_layers);
  const double trace = checkpoint_layers ? t * layers * d + t * (7 * d + 2 * f)
                                         : t * layers * (7 * d + 2 * f);
  const double values = trace + t * 3 * d + t * (8 * d + 2 * f) + 4 * g * g +
                        2 * static_cast<double>(samples) * static_cast<double>(config.embed_dim);
  return values * sizeof(Scalar);
}

// What a step measured.
struct StepStats {
  double loss = 0;                  // sum over groups of weight * InfoNCE
  std::vector<double> group_loss;   // [groups] each group's InfoNCE (unweighted)
  double grad_norm = 0;             // the global gradient norm before clipping
};

namespace detail {

// Throws tessera::Error unless groups is non-empty, every group lies inside a batch of n
// samples with count >= 1, and every weight is finite.
inline void check_groups(std::span<const PairGroup> groups, Index n) {
  check(!groups.empty(), "contrastive step: no pair groups");
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const PairGroup& group = groups[g];
    check(group.count >= 1 && group.a_first >= 0 && group.b_first >= 0 &&
              group.a_first + group.count <= n && group.b_first + group.count <= n,
          "contrastive step: group ", g, " (pairs ", group.a_first, " and ", group.b_first,
          ", count ", group.count, ") does not fit a batch of ", n, " samples");
    check(std::isfinite(group.weight), "contrastive step: group ", g, " has weight ",
          group.weight);
  }
}

}  // namespace detail

// The loss piece of a step: the groups' weighted InfoNCE on a batch's embeddings, and its
// gradients with respect to every embedding and to logit_scale. It sees embeddings only, so
// it serves however they were made: one traced forward (contrastive_gradients), GradCache's
// micro-batches (train/grad_cache.hpp), or every rank's rows gathered into one matrix.
//   loss = sum_g weight_g InfoNCE(e[a_g run], e[b_g run], logit_scale)
// requires: embeddings [N, E]; every group inside [0, N) with count >= 1, weights finite
// (checked: tessera::Error).
// ensures: d_embeddings is resized to [N, E] and assigned (rows in no group are 0);
// d_logit_scale is assigned; returns the loss and each group's InfoNCE (grad_norm 0).
template <class Scalar>
StepStats contrastive_loss_gradients(Matrix<Scalar>& d_embeddings,              // [N, E]
                                     Scalar& d_logit_scale,
                                     const ConstMatrixRef<Scalar>& embeddings,  // [N, E]
                                     Scalar logit_scale, std::span<const PairGroup> groups) {
  detail::check_groups(groups, embeddings.rows());
  const Index width = embeddings.cols();
  StepStats stats;
  d_embeddings = Matrix<Scalar>::Zero(embeddings.rows(), width);
  d_logit_scale = 0;
  for (const PairGroup& group : groups) {
    const auto a = embeddings.middleRows(group.a_first, group.count);
    const auto b = embeddings.middleRows(group.b_first, group.count);
    const Scalar loss = info_nce_loss<Scalar>(a, b, logit_scale);
    stats.group_loss.push_back(static_cast<double>(loss));
    stats.loss += group.weight * static_cast<double>(loss);
    // the two runs may overlap (a sample in both views), so each side gets its own buffer
    Matrix<Scalar> d_a = Matrix<Scalar>::Zero(group.count, width), d_b = d_a;
    d_logit_scale += info_nce_backward<Scalar>(d_a, d_b, a, b, logit_scale,
                                               static_cast<Scalar>(group.weight));
    d_embeddings.middleRows(group.a_first, group.count) += d_a;
    d_embeddings.middleRows(group.b_first, group.count) += d_b;
  }
  return stats;
}

// The forward and backward of the groups' weighted InfoNCE over `samples`: the training
// forward with a trace, contrastive_loss_gradients, the encoder's backward.
// requires: grad has model's config; every group inside the batch with count >= 1; weights
// finite (checked before any work).
// ensures: grad's weights (logit_scale included) are added to; returns the loss and each
// group's InfoNCE (grad_norm is left 0).
template <class Scalar>
StepStats contrastive_gradients(const MultiModalEncoder<Scalar>& model,
                                MultiModalEncoder<Scalar>& grad,
                                std::span<const Sample<Scalar>> samples,
                                std::span<const PairGroup> groups, EncoderTrace<Scalar>& trace) {
  const auto n = static_cast<Index>(samples.size());
  detail::check_groups(groups, n);
  const auto encoded = model.encode_batch(samples, trace);
  Matrix<Scalar> embeddings(n, model.config.embed_dim);  // [N, E]
  for (Index i = 0; i < n; ++i) embeddings.row(i) = encoded[static_cast<std::size_t>(i)].embedding;

  Matrix<Scalar> d_embeddings;  // [N, E]
  Scalar d_logit_scale = 0;
  const StepStats stats = contrastive_loss_gradients<Scalar>(d_embeddings, d_logit_scale,
                                                             embeddings, model.logit_scale, groups);
  grad.logit_scale += d_logit_scale;
  model.backward(grad, d_embeddings, trace);
  return stats;
}

namespace detail {

// The end of a step once `grads` hold the batch's gradients of the weights `params` (the
// same tensors, in one order): the global norm (every gradient checked finite), clipping when
// max_grad_norm > 0, and AdamW at rate lr; sets grad_norm. The lists are a model's trained
// weights: all of tessera's own encoder, a fine-tuned tower model's unfrozen ones.
template <class Scalar>
void clip_and_update(StepStats& stats, std::span<const Parameter<Scalar>> params,
                     std::vector<Parameter<Scalar>> grads, AdamW<Scalar>& optimizer, double lr,
                     double max_grad_norm) {
  // an infinite max_norm measures the norm (and checks every gradient is finite) without scaling
  stats.grad_norm = clip_grad_norm<Scalar>(
      grads, max_grad_norm > 0 ? max_grad_norm : std::numeric_limits<double>::max());
  optimizer.step(params, read_only<Scalar>(grads), lr);
}

// The encoder's weights that `freezing` trains, and their gradients in grad (the same
// names in the same order): the frozen ones stay as they are, their gradients (computed, since
// the trunk is shared) enter neither the norm nor AdamW, which keeps no state for them.
template <class Scalar>
void clip_and_update(StepStats& stats, MultiModalEncoder<Scalar>& model,
                     MultiModalEncoder<Scalar>& grad, AdamW<Scalar>& optimizer, double lr,
                     double max_grad_norm, const EncoderFreezing& freezing) {
  clip_and_update<Scalar>(stats, trained(model.parameters(), freezing),
                          trained(grad.parameters(), freezing), optimizer, lr, max_grad_norm);
}

}  // namespace detail

// One whole step: set_zero, contrastive_gradients, clipping (max_grad_norm > 0) and AdamW at
// rate lr over the weights `freezing` trains (model/encoder_freezing.hpp; by default every
// one): the frozen weights keep their bits, and the norm clipped (stats.grad_norm) and AdamW's
// state are the trained weights' alone. The optimizer must see one freezing on every step.
// `grad` and `trace` are the caller's, so their buffers live across steps.
// Throws tessera::Error when a gradient is not finite (clip_grad_norm names it), before the
// weights change.
template <class Scalar>
StepStats contrastive_step(MultiModalEncoder<Scalar>& model, MultiModalEncoder<Scalar>& grad,
                           AdamW<Scalar>& optimizer, std::span<const Sample<Scalar>> samples,
                           std::span<const PairGroup> groups, double lr, double max_grad_norm,
                           EncoderTrace<Scalar>& trace, const EncoderFreezing& freezing = {}) {
  grad.set_zero();
  StepStats stats = contrastive_gradients<Scalar>(model, grad, samples, groups, trace);
  detail::clip_and_update<Scalar>(stats, model, grad, optimizer, lr, max_grad_norm, freezing);
  return stats;
}

}  // namespace tessera
