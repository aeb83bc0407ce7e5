#pragma once
// One data-parallel contrastive step across the ranks of a Communicator (train/distributed.hpp):
// the global batch is split across ranks, and the update equals the single process's on the
// whole batch (grad_cache_step) to float rounding, with the same bits on every rank.
//
//   1. each rank embeds its own samples: with micro_batch 0 (or at least its n_r) one training
//      forward with a trace, kept for step 4; else grad_cache_embed, no trace   [n_r, E]
//   2. all_gather_rows: every rank's embeddings, and the row of the global batch each belongs
//      to; placed into the global batch's order                                [N, E]
//   3. contrastive_loss_gradients on all N rows with the global groups: every rank computes
//      the same whole loss and every embedding's gradient (the same bits everywhere, since the
//      gathered rows are), and keeps its own rows of d_embeddings
//   4. the encoder's backward from those rows, on step 1's trace (one pass), or
//      grad_cache_backward per micro-batch (the weight gradients of its share); d_logit_scale
//      added on rank 0 only (every rank computed the same one)
//   5. all_reduce_sum of every trained gradient (model/encoder_freezing.hpp) in one flat
//      buffer, added in rank order
//   6. clip_and_update, as the single process: identical gradients give identical weights
//
// The loss is the global InfoNCE (each rank's samples meet every other rank's as negatives), as
// open_clip's gather_with_grad; computing it whole on every rank (O(N^2 E), small beside the
// towers) gives each rank its embeddings' gradients without a second exchange
// (docs/training.md, "Communication per step").
//
// With one rank (Communicator::single_process(), or an MPI world of one) the step is
// grad_cache_step() bit for bit: the collectives are the identity and every sum is in the same
// order. With P ranks the weight gradients are summed in another order (per rank, then over
// ranks), and micro-batches pack other rows, so the weights equal the single process's to
// float rounding (tests/mpi/test_distributed_step.cpp: 1e-5 relative after several steps).
//
// Every rank must call the step with the same groups and the same N (its own samples may be
// none); a rank's bad input (a sample the model cannot encode) throws there, and its non-zero
// exit ends every rank (distributed.hpp's exit handler).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_freezing.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/sampler.hpp>
#include <tessera/train/step.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace tessera {

// A PairSampler batch split across ranks, from one rank's side: the global batch's groups as
// pair_batch() lays out the draws of every rank in rank order, and where this rank's samples
// go in it.
struct DistributedPairBatch {
  std::vector<PairGroup> groups;  // over the global batch of `samples` rows
  std::vector<Index> rows;        // [2 x local draws]: local draw i's views at rows[2i], rows[2i+1]
  Index samples = 0;              // N, the global batch's samples
  std::vector<PairDraw> draws;    // every rank's draws, in rank order (the global batch's)
};

// The global batch of a data-parallel step, from every rank's draws: each rank passes the
// draws it loaded (its share of the plan's batch, rank_share_plan, with its bad items left
// out), and all are gathered in rank order. Since the shares are contiguous runs of the plan's
// batch in rank order, the gathered draws are the batch the single process trains on the same
// step (with the same items left out), and the groups are pair_batch()'s for it.
// The caller's local samples are, for its draw i, the first view then the second (2 per
// draw), at rows[2i] and rows[2i + 1] of the global batch.
// requires: every rank calls it (a collective).
inline DistributedPairBatch distributed_pair_batch(const Communicator& communicator,
                                                   std::span<const PairDraw> local_draws) {
  Matrix<std::int64_t> mine(static_cast<Index>(local_draws.size()), 2);  // [k_r, 2] item, kind
  for (std::size_t i = 0; i < local_draws.size(); ++i) {
    mine(static_cast<Index>(i), 0) = static_cast<std::int64_t>(local_draws[i].item);
    mine(static_cast<Index>(i), 1) = local_draws[i].kind;
  }
  const GatheredRows<std::int64_t> all = communicator.all_gather_rows(mine);
  DistributedPairBatch batch;
  batch.draws.resize(static_cast<std::size_t>(all.rows.rows()));
  for (Index i = 0; i < all.rows.rows(); ++i) {
    batch.draws[static_cast<std::size_t>(i)] = {static_cast<std::size_t>(all.rows(i, 0)),
                                                static_cast<int>(all.rows(i, 1))};
  }
  const PairBatchLayout layout = pair_batch_layout(batch.draws);
  batch.groups = layout.groups;
  batch.samples = layout.samples;
  const Index offset = all.offsets[static_cast<std::size_t>(communicator.rank())];
  batch.rows.reserve(2 * local_draws.size());
  for (std::size_t i = 0; i < local_draws.size(); ++i) {
    const auto& rows = layout.rows[static_cast<std::size_t>(offset) + i];
    batch.rows.push_back(rows[0]);
    batch.rows.push_back(rows[1]);
  }
  return batch;
}

namespace detail {

// A fingerprint of the groups (FNV-1a over their fields), for checking that every rank passes
// the same ones without sending them all.
inline std::int64_t groups_fingerprint(std::span<const PairGroup> groups) {
  std::uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](std::uint64_t value) {
    for (int byte = 0; byte < 8; ++byte) {
      hash ^= (value >> (8 * byte)) & 0xFF;
      hash *= 1099511628211ull;
    }
  };
  for (const PairGroup& g : groups) {
    mix(static_cast<std::uint64_t>(g.a_first));
    mix(static_cast<std::uint64_t>(g.b_first));
    mix(static_cast<std::uint64_t>(g.count));
    std::uint64_t weight = 0;
    std::memcpy(&weight, &g.weight, sizeof weight);
    mix(weight);
  }
  return static_cast<std::int64_t>(hash);
}

}  // namespace detail

// The gradient part of a data-parallel step (steps 1-5 of the file's comment): grad's weights
// are added to, then summed over ranks, so every rank's grad holds the global batch's gradient
// (the same bits on every rank).
//   local_samples [n_r]: this rank's samples; local_rows [n_r]: the row of the global batch
//   each belongs to (every row of [0, N) taken by exactly one rank); groups: over the global
//   batch (the same on every rank); micro_batch: samples traced at a time on this rank
//   (0: all of its samples at once).
// freezing: only the gradients of the weights it trains are summed over ranks (less to send);
//   a frozen weight's gradient stays this rank's share, which no step reads.
// requires: every rank calls it (collectives) with one freezing; grad has model's config; model
// the same on every rank (checked: the ranks' rows, N and groups; a rank's samples as
// grad_cache_embed checks them).
// ensures: returns the global loss and each group's InfoNCE, the same on every rank.
template <class Scalar>
StepStats distributed_contrastive_gradients(const MultiModalEncoder<Scalar>& model,
                                            MultiModalEncoder<Scalar>& grad,
                                            std::span<const Sample<Scalar>> local_samples,
                                            std::span<const Index> local_rows,
                                            std::span<const PairGroup> groups,
                                            const Communicator& communicator, Index micro_batch,
                                            EncoderTrace<Scalar>& trace,
                                            const EncoderFreezing& freezing = {}) {
  const auto n = static_cast<Index>(local_samples.size());
  check(micro_batch >= 0, "distributed step: micro_batch is ", micro_batch,
        ", expected 0 (this rank's samples at once) or more");
  check(static_cast<Index>(local_rows.size()) == n, "distributed step: ", local_rows.size(),
        " rows for ", n, " local samples (one row of the global batch per sample)");
  const Index micro = micro_batch > 0 ? micro_batch : std::max<Index>(1, n);
  const Index width = model.config.embed_dim;
  // All of this rank's samples in one micro-batch: one traced forward serves the embeddings
  // and the backward (GradCache's second forward would recompute the same trace).
  const bool one_pass = n > 0 && micro >= n;

  // 1. this rank's embeddings
  Matrix<Scalar> local(0, width);
  if (one_pass) {
    for (std::size_t i = 0; i < local_samples.size(); ++i) {
      model.check_sample(local_samples[i], detail::concat("sample ", i));
    }
    const auto encoded = model.encode_batch(local_samples, trace);
    local.resize(n, width);
    for (Index i = 0; i < n; ++i) local.row(i) = encoded[static_cast<std::size_t>(i)].embedding;
  } else if (n > 0) {
    local = grad_cache_embed<Scalar>(model, local_samples, micro);
  }

  // 2. every rank's, with their rows; the first two entries of rank r's index column are its
  // groups' count and fingerprint, so ranks passing other groups are an error on every rank
  Matrix<std::int64_t> index(n + 2, 1);
  index(0, 0) = static_cast<std::int64_t>(groups.size());
  index(1, 0) = detail::groups_fingerprint(groups);
  for (Index i = 0; i < n; ++i) index(i + 2, 0) = local_rows[static_cast<std::size_t>(i)];
  const GatheredRows<std::int64_t> indices = communicator.all_gather_rows(index);
  const GatheredRows<Scalar> gathered = communicator.all_gather_rows(local);
  const Index total = gathered.rows.rows();
  std::vector<char> taken(static_cast<std::size_t>(total), 0);
  Matrix<Scalar> embeddings(total, width);  // [N, E] in the global batch's order
  for (int r = 0; r < communicator.size(); ++r) {
    const auto rr = static_cast<std::size_t>(r);
    const Index first = indices.offsets[rr];
    check(indices.rows(first, 0) == index(0, 0) && indices.rows(first + 1, 0) == index(1, 0),
          "distributed step: rank ", r, " passes other pair groups than rank ",
          communicator.rank(), " (", indices.rows(first, 0), " groups against ", index(0, 0),
          "): every rank must pass the global batch's groups");
    for (Index i = gathered.offsets[rr]; i < gathered.offsets[rr + 1]; ++i) {
      const std::int64_t row = indices.rows(first + 2 + (i - gathered.offsets[rr]), 0);
      check(row >= 0 && row < total && !taken[static_cast<std::size_t>(row)],
            "distributed step: rank ", r, " gives its sample ", i - gathered.offsets[rr],
            " row ", row, " of a global batch of ", total,
            " samples; every row must be taken by exactly one sample of one rank");
      taken[static_cast<std::size_t>(row)] = 1;
      embeddings.row(row) = gathered.rows.row(i);
    }
  }

  // 3. the whole batch's loss and gradients, the same on every rank; this rank's rows
  Matrix<Scalar> d_embeddings;  // [N, E]
  Scalar d_logit_scale = 0;
  const StepStats stats = contrastive_loss_gradients<Scalar>(d_embeddings, d_logit_scale,
                                                             embeddings, model.logit_scale, groups);
  Matrix<Scalar> d_local(n, width);  // [n_r, E]
  for (Index i = 0; i < n; ++i) d_local.row(i) = d_embeddings.row(local_rows[static_cast<std::size_t>(i)]);

  // 4. this rank's share of the weight gradients; logit_scale's once over all ranks
  if (communicator.rank() == 0) grad.logit_scale += d_logit_scale;
  if (one_pass) {
    model.backward(grad, d_local, trace);
  } else if (n > 0) {
    grad_cache_backward<Scalar>(model, grad, local_samples, d_local, micro, trace);
  }

  // 5. summed over ranks in rank order, one flat buffer (the trained weights' gradients)
  all_reduce_sum_parameters(communicator, trained(grad.parameters(), freezing));
  return stats;
}

// A whole data-parallel step: set_zero, distributed_contrastive_gradients, clipping
// (max_grad_norm > 0) and AdamW at rate lr over the weights `freezing` trains (as
// contrastive_step()) on every rank, which all end with the same weights (bit for bit). With
// one rank: grad_cache_step() on the same samples and freezing, bit for bit. Throws
// tessera::Error when a gradient is not finite (on every rank alike), before the weights change.
template <class Scalar>
StepStats distributed_contrastive_step(MultiModalEncoder<Scalar>& model,
                                       MultiModalEncoder<Scalar>& grad, AdamW<Scalar>& optimizer,
                                       std::span<const Sample<Scalar>> local_samples,
                                       std::span<const Index> local_rows,
                                       std::span<const PairGroup> groups,
                                       const Communicator& communicator, Index micro_batch,
                                       double lr, double max_grad_norm,
                                       EncoderTrace<Scalar>& trace,
                                       const EncoderFreezing& freezing = {}) {
  grad.set_zero();
  StepStats stats = distributed_contrastive_gradients<Scalar>(
      model, grad, local_samples, local_rows, groups, communicator, micro_batch, trace, freezing);
  detail::clip_and_update<Scalar>(stats, model, grad, optimizer, lr, max_grad_norm, freezing);
  return stats;
}

}  // namespace tessera
