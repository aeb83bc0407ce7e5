#pragma once
// GradCache: the exact gradient of a large contrastive batch in the memory of a micro-batch
// (Gao, Zhang, Han and Callan 2021, "Scaling Deep Contrastive Learning Batch Size under
// Memory Limited Setup", arXiv:2101.06983). InfoNCE couples every pair of a group with every
// other, so gradient accumulation over micro-batches changes the loss (each micro-batch's
// negatives only); GradCache keeps the loss and splits only the encoder's work:
//
//   1. e = grad_cache_embed(samples)          [N, E] micro-batch by micro-batch, no trace:
//                                             one layer's activations live at a time
//   2. loss, d_e, d_s = contrastive_loss_gradients(e, logit_scale, groups)   (train/step.hpp)
//                                             on all N embeddings: the whole batch's loss
//   3. grad_cache_backward(samples, d_e)      per micro-batch: the training forward again
//                                             (with a trace) and the encoder's backward from
//                                             its rows of d_e, added into grad
//
// Step 3 is the chain rule cut at the embeddings: dLoss/dW = sum_i (dLoss/de_i) (de_i/dW), and
// de_i/dW depends on sample i alone (samples of a packed batch never attend to each other), so
// any split of the sum over i gives the same gradient up to float rounding (the order in which
// the micro-batches' contributions are added). The encoder has no randomness (no dropout), so
// step 3's forward recomputes step 1's embeddings.
//
// Cost: one more forward of the batch (measured: 17% more CPU time at equal micro-batch size,
// won back by smaller micro-batches, whose buffers stay small; docs/training.md); memory: the
// trace of one micro-batch instead of the whole batch's, plus the embeddings and their
// gradients [N, E] and each group's logits [count, count].
//
// The three pieces are separate calls so that data parallelism can put a collective between
// them: each rank embeds its own samples (1), the embeddings of all ranks are gathered into
// one [N, E] matrix in rank order, every rank runs the loss piece on all of it (2), and each
// keeps its own rows of d_e for its backward (3); the weight gradients are then summed over
// ranks. d_logit_scale comes out the same on every rank: add it on one rank only
// (train/distributed_step.hpp does all this). grad_cache_gradients() is the three in one
// process.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_freezing.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

namespace tessera {

namespace detail {

// Throws tessera::Error unless micro_batch >= 1.
inline void check_micro_batch(Index micro_batch) {
  check(micro_batch >= 1, "grad cache: micro_batch is ", micro_batch,
        ", expected at least 1 sample per micro-batch");
}

}  // namespace detail

// Step 1: the embeddings of `samples`, encoded `micro_batch` samples at a time (the last
// micro-batch holds the rest) without a trace. Every sample is checked first as the training
// forward checks it (long audio is an error, not split into clips as encode_batch does
// without a trace), so step 3 can encode it; an error names the sample's index in `samples`.
// requires: micro_batch >= 1; samples non-empty.
// ensures: returns [N, E], row i sample i's embedding (what encode_batch(samples, trace)
// gives, up to float rounding: a micro-batch packs fewer rows into each product).
template <class Scalar>
Matrix<Scalar> grad_cache_embed(const MultiModalEncoder<Scalar>& model,
                                std::span<const Sample<Scalar>> samples, Index micro_batch) {
  detail::check_micro_batch(micro_batch);
  check(!samples.empty(), "grad cache: the batch is empty");
  for (std::size_t i = 0; i < samples.size(); ++i) {
    model.check_sample(samples[i], detail::concat("sample ", i));
  }
  const auto n = static_cast<Index>(samples.size());
  Matrix<Scalar> embeddings(n, model.config.embed_dim);  // [N, E]
  for (Index first = 0; first < n; first += micro_batch) {
    const Index count = std::min(micro_batch, n - first);
    const auto encoded = model.encode_batch(samples.subspan(static_cast<std::size_t>(first),
                                                            static_cast<std::size_t>(count)));
    for (Index i = 0; i < count; ++i) {
      embeddings.row(first + i) = encoded[static_cast<std::size_t>(i)].embedding;
    }
  }
  return embeddings;
}

// Step 3: per micro-batch of `samples` (micro_batch samples at a time, as in step 1), the
// training forward into `trace` and the encoder's backward from its rows of d_embeddings.
// `trace` is the caller's buffer, so it lives across steps; it holds one micro-batch at a
// time and the last one on return.
// requires: d_embeddings [N, E], row i the loss's gradient with respect to sample i's embedding
// (the rows contrastive_loss_gradients gave these samples); grad has model's config; model
// unchanged since step 1.
// ensures: grad's weights are added to, logit_scale excepted (step 2 gives its gradient).
template <class Scalar>
void grad_cache_backward(const MultiModalEncoder<Scalar>& model, MultiModalEncoder<Scalar>& grad,
                         std::span<const Sample<Scalar>> samples,
                         const ConstMatrixRef<Scalar>& d_embeddings,  // [N, E]
                         Index micro_batch, EncoderTrace<Scalar>& trace) {
  detail::check_micro_batch(micro_batch);
  const auto n = static_cast<Index>(samples.size());
  check(d_embeddings.rows() == n && d_embeddings.cols() == model.config.embed_dim,
        "grad cache: d_embeddings is [", d_embeddings.rows(), ", ", d_embeddings.cols(),
        "], expected [", n, ", ", model.config.embed_dim, "] (one row per sample)");
  for (Index first = 0; first < n; first += micro_batch) {
    const Index count = std::min(micro_batch, n - first);
    model.encode_batch(samples.subspan(static_cast<std::size_t>(first),
                                       static_cast<std::size_t>(count)),
                       trace);
    model.backward(grad, d_embeddings.middleRows(first, count), trace);
  }
}

// The three steps in one process: the gradient of the groups' weighted InfoNCE over the whole
// batch, as contrastive_gradients() computes it, with at most micro_batch samples traced at
// a time.
// requires: grad has model's config; micro_batch >= 1; every group inside the batch with
// count >= 1 and a finite weight (all checked before any work).
// ensures: grad's weights (logit_scale included) are added to; returns the loss and each
// group's InfoNCE (grad_norm is left 0).
template <class Scalar>
StepStats grad_cache_gradients(const MultiModalEncoder<Scalar>& model,
                               MultiModalEncoder<Scalar>& grad,
                               std::span<const Sample<Scalar>> samples,
                               std::span<const PairGroup> groups, Index micro_batch,
                               EncoderTrace<Scalar>& trace) {
  detail::check_micro_batch(micro_batch);
  detail::check_groups(groups, static_cast<Index>(samples.size()));
  const Matrix<Scalar> embeddings = grad_cache_embed<Scalar>(model, samples, micro_batch);
  Matrix<Scalar> d_embeddings;  // [N, E]
  Scalar d_logit_scale = 0;
  const StepStats stats = contrastive_loss_gradients<Scalar>(d_embeddings, d_logit_scale,
                                                             embeddings, model.logit_scale, groups);
  grad.logit_scale += d_logit_scale;
  grad_cache_backward<Scalar>(model, grad, samples, d_embeddings, micro_batch, trace);
  return stats;
}

// contrastive_step() with GradCache: set_zero, grad_cache_gradients, clipping (max_grad_norm
// > 0) and AdamW at rate lr over the weights `freezing` trains (as contrastive_step()). The
// same update as contrastive_step() on the whole batch, up to float rounding. Throws
// tessera::Error when a gradient is not finite, before the weights change.
template <class Scalar>
StepStats grad_cache_step(MultiModalEncoder<Scalar>& model, MultiModalEncoder<Scalar>& grad,
                          AdamW<Scalar>& optimizer, std::span<const Sample<Scalar>> samples,
                          std::span<const PairGroup> groups, Index micro_batch, double lr,
                          double max_grad_norm, EncoderTrace<Scalar>& trace,
                          const EncoderFreezing& freezing = {}) {
  grad.set_zero();
  StepStats stats =
      grad_cache_gradients<Scalar>(model, grad, samples, groups, micro_batch, trace);
  detail::clip_and_update<Scalar>(stats, model, grad, optimizer, lr, max_grad_norm, freezing);
  return stats;
}

// contrastive_step_bytes() for a GradCache step: the trace and one layer's gradients in
// flight are those of the largest micro-batch (`micro_batch_tokens`, the most tokens of any
// micro-batch), while the embeddings, their gradients and the logits are the whole batch's
// (`samples`, `largest_group`). Step 1's untraced forward needs less than step 3's.
template <class Scalar>
double grad_cache_step_bytes(const Config& config, Index samples, Index micro_batch_tokens,
                             Index largest_group, bool checkpoint_layers = false) {
  return contrastive_step_bytes<Scalar>(config, samples, micro_batch_tokens, largest_group,
                                        checkpoint_layers);
}

}  // namespace tessera
