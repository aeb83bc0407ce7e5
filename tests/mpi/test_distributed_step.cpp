// train/distributed_step.hpp: a data-parallel step over the ranks of the run equals the single
// process's step on the same global batch, and every rank ends with the same weights bit for
// bit. Built into tessera_mpi_tests, so ctest runs it under `mpirun -np 1`, `-np 2`, `-np 3`
// and without mpirun (tests/mpi/CMakeLists.txt).
//
// Every rank knows the whole batch (the draws are a function of the step), takes its share as
// tessera-train does (rank_share_plan), loads its views, and trains; the reference is the
// single process's grad_cache_step / contrastive_step on the whole batch, computed on every
// rank. EXPECT, not ASSERT, around collectives: a rank leaving a test early would skip a
// collective the others wait in.

#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/distributed_step.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/loader.hpp>
#include <tessera/train/step.hpp>

#include "../test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace tessera::test_distributed_step {

using tessera::test::error_of;

Config step_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "pooling": "routed",
          "text": {"vocab_size": 30, "max_tokens": 8}, "image": {"size": 8, "patch": 4},
          "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 8}})"),
      "test config");
}

// Item i's view of modality m: a function of (i, m) alone, so every rank makes the same one.
template <class Scalar>
Sample<Scalar> view_of(std::size_t item, Modality m) {
  Sample<Scalar> sample;
  const auto i = static_cast<int>(item);
  if (m == Modality::text) {
    std::vector<std::int64_t> ids;
    for (int j = 0; j < 2 + i % 5; ++j) ids.push_back((7 * i + 5 * j + 1) % 30);
    sample.text = ids;
  } else if (m == Modality::image) {
    Tensor3<Scalar> image(3, 8, 8);
    for (Index k = 0; k < image.size(); ++k) {
      image.data()[k] = static_cast<Scalar>(std::sin(0.37 * static_cast<double>(k + 11 * i)));
    }
    sample.image = image;
  } else {
    Matrix<Scalar> audio(4, 2 * (1 + i % 3));  // 2, 4, 6 frames
    for (Index k = 0; k < audio.size(); ++k) {
      audio.data()[k] = static_cast<Scalar>(std::cos(0.53 * static_cast<double>(k + 7 * i)));
    }
    sample.audio = audio;
  }
  return sample;
}

// Step s's batch of draws, grouped by kind as PairSampler gives them: text-image,
// text-audio, image-audio (kinds 0, 1, 3), 11 pairs in all.
std::vector<PairDraw> draws_of(std::int64_t step) {
  std::vector<PairDraw> draws;
  const auto s = static_cast<std::size_t>(step);
  for (std::size_t i = 0; i < 5; ++i) draws.push_back({(3 * s + i) % 17, 0});
  for (std::size_t i = 0; i < 4; ++i) draws.push_back({(5 * s + 2 * i) % 13, 1});
  for (std::size_t i = 0; i < 2; ++i) draws.push_back({(s + 4 * i) % 11, 3});
  return draws;
}

// draws_of as a loader's plan.
LoaderPlan<PairDraw> plan_of_draws() {
  return {[](BatchPosition position) { return draws_of(position.step); }, 0};
}

// Draws a "bad item" leaves out: the loader drops them on whichever rank drew them.
bool is_bad(const PairDraw& draw) { return draw.kind == 1 && draw.item == 7; }

template <class Scalar>
MultiModalEncoder<Scalar> start_model() {
  MultiModalEncoder<Scalar> model(step_config());
  model.init_random(5);
  for (auto& p : model.parameters()) {  // larger weights: InfoNCE with work to do
    if (p.role == WeightRole::normal) {
      for (Index j = 0; j < p.size(); ++j) p.data[j] *= Scalar(10);
    }
  }
  model.logit_scale = Scalar(2);
  return model;
}

template <class Scalar>
std::vector<Scalar> weights_of(MultiModalEncoder<Scalar>& model) {
  return pack_parameters(model.parameters());
}

// Every rank's values have rank 0's bits.
template <class Scalar>
::testing::AssertionResult same_on_every_rank(const Communicator& communicator,
                                              const std::vector<Scalar>& values) {
  Matrix<Scalar> mine(1, static_cast<Index>(values.size()));
  std::copy(values.begin(), values.end(), mine.data());
  const auto all = communicator.all_gather_rows(mine);
  for (int r = 1; r < communicator.size(); ++r) {
    if (std::memcmp(all.rows.row(r).data(), all.rows.row(0).data(),
                    values.size() * sizeof(Scalar)) != 0) {
      return ::testing::AssertionFailure() << "rank " << r << "'s values differ from rank 0's";
    }
  }
  return ::testing::AssertionSuccess();
}

// One rank's side of a step: its share of the plan's batch (bad items left out), the global
// batch's layout and its samples.
struct RankBatch {
  std::vector<Sample<float>> samples;
  DistributedPairBatch batch;
};

RankBatch rank_batch(const Communicator& communicator, std::int64_t step) {
  const LoaderPlan<PairDraw> plan =
      rank_share_plan(plan_of_draws(), communicator.rank(), communicator.size());
  std::vector<PairDraw> loaded;
  for (const PairDraw& draw : plan.batch({0, step})) {
    if (!is_bad(draw)) loaded.push_back(draw);
  }
  RankBatch out;
  out.batch = distributed_pair_batch(communicator, loaded);
  for (const PairDraw& draw : loaded) {
    const auto [a, b] = pair_kinds[static_cast<std::size_t>(draw.kind)];
    out.samples.push_back(view_of<float>(draw.item, a));
    out.samples.push_back(view_of<float>(draw.item, b));
  }
  return out;
}

// The single process's batch of the same step: every draw, bad ones left out, pair_batch().
void whole_batch(std::int64_t step, std::vector<Sample<float>>& samples,
                 std::vector<PairGroup>& groups) {
  std::vector<PairDraw> kept;
  for (const PairDraw& draw : draws_of(step)) {
    if (!is_bad(draw)) kept.push_back(draw);
  }
  pair_batch<float>(kept, [](std::size_t item, Modality m) { return view_of<float>(item, m); },
                    samples, groups);
}

TEST(DistributedStep, RankSharePlansPartitionEveryBatch) {
  for (int size : {1, 2, 3, 5, 12, 13}) {
    for (std::int64_t step : {0, 3}) {
      std::vector<PairDraw> joined;
      for (int rank = 0; rank < size; ++rank) {
        const auto share = rank_share_plan(plan_of_draws(), rank, size);
        for (const PairDraw& d : share.batch({0, step})) joined.push_back(d);
      }
      const auto whole = draws_of(step);
      ASSERT_EQ(joined.size(), whole.size()) << size << " ranks";
      for (std::size_t i = 0; i < whole.size(); ++i) {
        EXPECT_EQ(joined[i].item, whole[i].item);
        EXPECT_EQ(joined[i].kind, whole[i].kind);
      }
    }
  }
  EXPECT_NE(error_of([] { rank_share_plan(plan_of_draws(), 2, 2); })
                .find("0 <= rank < size"),
            std::string::npos);
}

TEST(DistributedStep, PairBatchLayoutIsPairBatchs) {
  const auto draws = draws_of(2);
  std::vector<Sample<float>> samples;
  std::vector<PairGroup> groups;
  pair_batch<float>(draws, [](std::size_t item, Modality m) { return view_of<float>(item, m); },
                    samples, groups);
  const PairBatchLayout layout = pair_batch_layout(draws);
  EXPECT_EQ(layout.samples, static_cast<Index>(samples.size()));
  ASSERT_EQ(layout.groups.size(), groups.size());
  for (std::size_t g = 0; g < groups.size(); ++g) {
    EXPECT_EQ(layout.groups[g].a_first, groups[g].a_first);
    EXPECT_EQ(layout.groups[g].b_first, groups[g].b_first);
    EXPECT_EQ(layout.groups[g].count, groups[g].count);
    EXPECT_EQ(layout.groups[g].weight, groups[g].weight);
  }
  for (std::size_t i = 0; i < draws.size(); ++i) {
    const auto [a, b] = pair_kinds[static_cast<std::size_t>(draws[i].kind)];
    const auto& first = samples[static_cast<std::size_t>(layout.rows[i][0])];
    const auto& second = samples[static_cast<std::size_t>(layout.rows[i][1])];
    EXPECT_EQ(first.text.has_value(), a == Modality::text) << "draw " << i;
    EXPECT_EQ(second.audio.has_value(), b == Modality::audio) << "draw " << i;
  }
}

// The global batch seen from every rank is the single process's: the same groups, and the
// rows of all ranks' samples hold the same views.
TEST(DistributedStep, TheRanksBatchesMakeTheWholeBatch) {
  const Communicator communicator = Communicator::world();
  const RankBatch mine = rank_batch(communicator, 4);
  std::vector<Sample<float>> samples;
  std::vector<PairGroup> groups;
  whole_batch(4, samples, groups);
  EXPECT_EQ(mine.batch.samples, static_cast<Index>(samples.size()));
  ASSERT_EQ(mine.batch.groups.size(), groups.size());
  for (std::size_t g = 0; g < groups.size(); ++g) {
    EXPECT_EQ(mine.batch.groups[g].a_first, groups[g].a_first);
    EXPECT_EQ(mine.batch.groups[g].count, groups[g].count);
    EXPECT_EQ(mine.batch.groups[g].weight, groups[g].weight);
  }
  ASSERT_EQ(mine.batch.rows.size(), mine.samples.size());
  for (std::size_t i = 0; i < mine.samples.size(); ++i) {
    const Sample<float>& want = samples[static_cast<std::size_t>(mine.batch.rows[i])];
    EXPECT_EQ(mine.samples[i].text, want.text) << "local sample " << i;
    EXPECT_EQ(mine.samples[i].audio.has_value(), want.audio.has_value()) << "local sample " << i;
  }
}

// With one rank the step is grad_cache_step() bit for bit (the single-process Communicator,
// and under `mpirun -np 1` the MPI world of one).
TEST(DistributedStep, OneRankIsGradCacheStepBitForBit) {
  std::vector<Communicator> ones{Communicator::single_process()};
  if (Communicator::world().size() == 1) ones.push_back(Communicator::world());
  for (const Communicator& one : ones) {
    for (const Index micro_batch : {3, 100}) {
      MultiModalEncoder<float> want = start_model<float>(), got = want;
      MultiModalEncoder<float> grad_want(want.config), grad_got(want.config);
      AdamW<float> opt_want, opt_got;
      EncoderTrace<float> trace;
      for (std::int64_t step = 0; step < 3; ++step) {
        std::vector<Sample<float>> samples;
        std::vector<PairGroup> groups;
        whole_batch(step, samples, groups);
        std::vector<Index> rows(samples.size());
        for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<Index>(i);
        const StepStats a = grad_cache_step<float>(want, grad_want, opt_want, samples, groups,
                                                   micro_batch, 1e-2, 1.0, trace);
        const StepStats b = distributed_contrastive_step<float>(
            got, grad_got, opt_got, samples, rows, groups, one, micro_batch, 1e-2, 1.0, trace);
        EXPECT_EQ(a.loss, b.loss);
        EXPECT_EQ(a.grad_norm, b.grad_norm);
      }
      EXPECT_TRUE(weights_of(got) == weights_of(want))
          << "micro_batch " << micro_batch << (one.uses_mpi() ? ", MPI world of one" : "");
    }
  }
}

// N ranks against the single process (contrastive_step on the whole batch) on the same global
// batches, six AdamW steps at lr 1e-3: the weights within 1e-5 relative in norm, over all of
// them and per tensor, and the same bits on every rank. Rank shares of 22 - 2 samples (a bad
// item) on 2 or 3 ranks; micro-batches of 3 on each rank, and each rank's whole share.
// Measured: 3e-7 to 5e-7 over all weights (1, 2 and 3 ranks).
// Per element the comparison would be meaningless for one kind of tensor: the attention's key
// bias adds q.b to every score of a query's row, which softmax ignores, so its gradient is 0
// but for rounding, and AdamW divides it by its own root mean square, turning rounding noise
// into steps of about lr in either direction (measured: 1e-4 to 6e-4 apart relative in norm,
// with 1 rank as with 3). Those are left out of the per-tensor check and kept in the total.
TEST(DistributedStep, RanksEqualTheSingleProcessAndEachOther) {
  const Communicator communicator = Communicator::world();
  for (const Index micro_batch : {Index(3), Index(0)}) {
    MultiModalEncoder<float> single = start_model<float>(), ranked = single;
    MultiModalEncoder<float> grad_single(single.config), grad_ranked(single.config);
    AdamW<float> opt_single, opt_ranked;
    EncoderTrace<float> trace;
    double loss_difference = 0;
    for (std::int64_t step = 0; step < 6; ++step) {
      std::vector<Sample<float>> samples;
      std::vector<PairGroup> groups;
      whole_batch(step, samples, groups);
      const StepStats want =
          contrastive_step<float>(single, grad_single, opt_single, samples, groups, 1e-3, 1.0, trace);
      const RankBatch mine = rank_batch(communicator, step);
      const StepStats got = distributed_contrastive_step<float>(
          ranked, grad_ranked, opt_ranked, mine.samples, mine.batch.rows, mine.batch.groups,
          communicator, micro_batch, 1e-3, 1.0, trace);
      loss_difference = std::max(loss_difference, std::abs(got.loss - want.loss) / want.loss);
    }
    // ||ranked - single|| / ||single||, over all weights and per tensor
    const auto a = ranked.parameters(), b = single.parameters();
    double all_difference = 0, all_norm = 0;
    for (std::size_t k = 0; k < a.size(); ++k) {
      double difference = 0, norm = 0;
      for (Index j = 0; j < a[k].size(); ++j) {
        const double d = static_cast<double>(a[k].data[j]) - static_cast<double>(b[k].data[j]);
        difference += d * d;
        norm += static_cast<double>(b[k].data[j]) * static_cast<double>(b[k].data[j]);
      }
      all_difference += difference;
      all_norm += norm;
      if (a[k].name.ends_with("k_proj.bias")) continue;  // rounding noise (the file's comment)
      EXPECT_LE(std::sqrt(difference), 1e-5 * std::sqrt(norm))
          << a[k].name << ", " << communicator.size() << " ranks, micro_batch " << micro_batch;
    }
    EXPECT_LT(std::sqrt(all_difference / all_norm), 1e-5)
        << communicator.size() << " ranks, micro_batch " << micro_batch;
    EXPECT_LT(loss_difference, 1e-5);
    EXPECT_TRUE(same_on_every_rank(communicator, weights_of(ranked))) << "micro_batch " << micro_batch;
  }
}

// Ranks passing other groups, or rows that do not cover the global batch, are a
// tessera::Error on every rank.
TEST(DistributedStep, MismatchedGroupsAndRowsAreAnErrorOnEveryRank) {
  const Communicator communicator = Communicator::world();
  MultiModalEncoder<float> model = start_model<float>(), grad(model.config);
  AdamW<float> optimizer;
  EncoderTrace<float> trace;
  RankBatch mine = rank_batch(communicator, 1);
  if (communicator.size() > 1) {
    std::vector<PairGroup> groups = mine.batch.groups;
    if (communicator.rank() == 1) groups[0].weight += 0.25;
    EXPECT_NE(error_of([&] {
                distributed_contrastive_step<float>(model, grad, optimizer, mine.samples,
                                                    mine.batch.rows, groups, communicator, 0,
                                                    1e-2, 1.0, trace);
              }).find("other pair groups"),
              std::string::npos);
  }
  std::vector<Index> rows = mine.batch.rows;
  if (communicator.rank() == 0) rows[0] = rows[1];  // two samples on one row
  EXPECT_NE(error_of([&] {
              distributed_contrastive_step<float>(model, grad, optimizer, mine.samples, rows,
                                                  mine.batch.groups, communicator, 0, 1e-2, 1.0,
                                                  trace);
            }).find("taken by exactly one sample"),
            std::string::npos);
}

}  // namespace tessera::test_distributed_step
