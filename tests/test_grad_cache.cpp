// GradCache (train/grad_cache.hpp): the gradient of a contrastive batch computed micro-batch
// by micro-batch equals contrastive_gradients() on the whole batch, for any split, in double
// to 1e-12 and in float to float rounding; the three pieces compose as a data-parallel step
// would use them; the result does not depend on the number of threads; the trace holds one
// micro-batch.

#include <tessera/core/parallel.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace tessera {
namespace test_grad_cache {

using ::testing::HasSubstr;

// Gradients of one batch computed two ways agree to |a - r| <= atol + rtol |r|, where the
// micro-batches change only the order of the sums (products over fewer rows, contributions
// added micro-batch by micro-batch). Measured on this batch, whose gradients reach 1: at most
// 8e-16 apart in double, 5e-7 in float (a few float ulps of the largest); the losses 3e-16
// and 2e-7 apart relative. The tolerances are about 10x those.
template <class Scalar>
struct SplitTolerance;
template <>
struct SplitTolerance<double> {
  static constexpr double atol = 1e-14, rtol = 1e-11, loss_rtol = 1e-14;
};
template <>
struct SplitTolerance<float> {
  static constexpr double atol = 5e-6, rtol = 1e-4, loss_rtol = 2e-6;
};

Config grad_cache_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "pooling": "routed",
          "text": {"vocab_size": 30, "max_tokens": 8}, "image": {"size": 8, "patch": 4},
          "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 8}})"),
      "test config");
}

// 14 samples: texts 0-4, images 5-9, audios 10-12, and 13 a caption with its image (several
// modalities in one sample). Lengths vary, so micro-batches hold different token counts.
template <class Scalar>
std::vector<Sample<Scalar>> grad_cache_batch() {
  std::srand(7);
  std::vector<Sample<Scalar>> batch(14);
  for (int i = 0; i < 5; ++i) {
    std::vector<std::int64_t> ids;
    for (int j = 0; j < 2 + i; ++j) ids.push_back((3 * i + 5 * j + 1) % 30);
    batch[static_cast<std::size_t>(i)].text = ids;
  }
  for (int i = 5; i < 10; ++i) {
    Tensor3<Scalar> image(3, 8, 8);
    image.setRandom();
    batch[static_cast<std::size_t>(i)].image = image;
  }
  for (int i = 10; i < 13; ++i) {
    Matrix<Scalar> audio = Matrix<Scalar>::Random(4, 2 * (i - 8));  // 4, 6, 8 frames
    batch[static_cast<std::size_t>(i)].audio = audio;
  }
  batch[13].text = std::vector<std::int64_t>{4, 9, 16};
  batch[13].image = batch[5].image;
  return batch;
}

// Three groups: captions-images (5 pairs), captions-audios (3 pairs, the first captions again)
// and images-(caption with image) overlapping runs, weighted unevenly.
const std::vector<PairGroup> groups{{0, 5, 5, 0.5}, {0, 10, 3, 0.3}, {9, 12, 2, 0.2}};

template <class Scalar>
MultiModalEncoder<Scalar> trained_like_model() {
  MultiModalEncoder<Scalar> model(grad_cache_config());
  model.init_random(21);
  // weights of 0.02 make every embedding nearly alike; larger ones give InfoNCE real work
  for (auto& p : model.parameters()) {
    if (p.role == WeightRole::normal) {
      for (Index j = 0; j < p.size(); ++j) p.data[j] *= Scalar(15);
    }
  }
  model.logit_scale = Scalar(2);
  return model;
}

// Every gradient of `got` against `want`, within SplitTolerance.
template <class Scalar>
void expect_same_gradients(MultiModalEncoder<Scalar>& got, MultiModalEncoder<Scalar>& want,
                           const std::string& what) {
  const auto a = got.parameters(), b = want.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const Eigen::Map<const RowVector<Scalar>> x(a[i].data, a[i].size()), y(b[i].data, b[i].size());
    EXPECT_TRUE(test::all_close(x, y, SplitTolerance<Scalar>::atol, SplitTolerance<Scalar>::rtol))
        << what << ": " << a[i].name;
  }
}

template <class Scalar>
void check_every_split_equals_the_whole_batch() {
  const MultiModalEncoder<Scalar> model = trained_like_model<Scalar>();
  const auto batch = grad_cache_batch<Scalar>();
  MultiModalEncoder<Scalar> whole(model.config);
  whole.set_zero();
  EncoderTrace<Scalar> trace;
  const StepStats expected = contrastive_gradients<Scalar>(model, whole, batch, groups, trace);
  ASSERT_GT(expected.loss, 0.5) << "a loss with work to do";

  // 1: every sample alone; 3, 4, 5: uneven last micro-batches; 14 and more: the whole batch
  for (const Index micro_batch : {1, 3, 4, 5, 14, 100}) {
    MultiModalEncoder<Scalar> grad(model.config);
    grad.set_zero();
    const StepStats got = grad_cache_gradients<Scalar>(model, grad, batch, groups, micro_batch, trace);
    const std::string what = "micro_batch " + std::to_string(micro_batch);
    EXPECT_NEAR(got.loss, expected.loss, SplitTolerance<Scalar>::loss_rtol * expected.loss) << what;
    ASSERT_EQ(got.group_loss.size(), groups.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
      EXPECT_NEAR(got.group_loss[g], expected.group_loss[g],
                  SplitTolerance<Scalar>::loss_rtol * expected.group_loss[g]) << what;
    }
    expect_same_gradients<Scalar>(grad, whole, what);
  }
}

TEST(GradCache, EverySplitGivesTheWholeBatchsGradientInDouble) {
  check_every_split_equals_the_whole_batch<double>();
}

TEST(GradCache, EverySplitGivesTheWholeBatchsGradientInFloat) {
  check_every_split_equals_the_whole_batch<float>();
}

// What the test above would catch: plain gradient accumulation (contrastive_gradients per
// micro-batch, each InfoNCE over its own pairs) is another gradient.
TEST(GradCache, PlainAccumulationIsNotTheWholeBatchsGradient) {
  const MultiModalEncoder<double> model = trained_like_model<double>();
  const auto batch = grad_cache_batch<double>();
  MultiModalEncoder<double> whole(model.config), halves(model.config);
  whole.set_zero();
  halves.set_zero();
  EncoderTrace<double> trace;
  contrastive_gradients<double>(model, whole, batch, groups, trace);
  // captions 0-1 with images 5-6, then captions 2-4 with images 7-9
  const std::vector<PairGroup> first{{0, 5, 2, 0.2}}, second{{2, 7, 3, 0.3}};
  contrastive_gradients<double>(model, halves, batch, first, trace);
  contrastive_gradients<double>(model, halves, batch, second, trace);
  MultiModalEncoder<double> pairs_only(model.config);
  pairs_only.set_zero();
  const std::vector<PairGroup> all{{0, 5, 5, 0.5}};
  contrastive_gradients<double>(model, pairs_only, batch, all, trace);
  // not rounding: a difference of a tenth of the gradient's scale
  const Matrix<double> difference = halves.proj.weight - pairs_only.proj.weight;
  EXPECT_GT(difference.cwiseAbs().maxCoeff(), 0.1 * pairs_only.proj.weight.cwiseAbs().maxCoeff());
}

// The pieces as a data-parallel step uses them: two "ranks" each embed their half, the halves
// are gathered, each rank runs the loss on everything and keeps its rows' gradients for its
// own backward; the weight gradients summed (logit_scale's taken once) are the whole batch's.
TEST(GradCache, ThePiecesComposeAsRanksWouldUseThem) {
  const MultiModalEncoder<double> model = trained_like_model<double>();
  const auto batch = grad_cache_batch<double>();
  MultiModalEncoder<double> whole(model.config);
  whole.set_zero();
  EncoderTrace<double> trace;
  const StepStats expected = contrastive_gradients<double>(model, whole, batch, groups, trace);

  const std::span<const Sample<double>> all(batch);
  const std::array<std::span<const Sample<double>>, 2> ranks{all.first(6), all.subspan(6)};
  Matrix<double> gathered(14, model.config.embed_dim);  // [N, E] the "all-gather"
  gathered.topRows(6) = grad_cache_embed<double>(model, ranks[0], 4);
  gathered.bottomRows(8) = grad_cache_embed<double>(model, ranks[1], 3);

  MultiModalEncoder<double> sum(model.config);
  sum.set_zero();
  Index row = 0;
  for (int r = 0; r < 2; ++r) {
    Matrix<double> d_embeddings;
    double d_logit_scale = 0;
    const StepStats stats = contrastive_loss_gradients<double>(d_embeddings, d_logit_scale,
                                                               gathered, model.logit_scale, groups);
    EXPECT_NEAR(stats.loss, expected.loss, SplitTolerance<double>::loss_rtol * expected.loss);
    const auto rows = static_cast<Index>(ranks[static_cast<std::size_t>(r)].size());
    MultiModalEncoder<double> local(model.config);
    local.set_zero();
    grad_cache_backward<double>(model, local, ranks[static_cast<std::size_t>(r)],
                                d_embeddings.middleRows(row, rows), 2, trace);
    EXPECT_EQ(local.logit_scale, 0.0) << "the encoder's backward leaves logit_scale alone";
    if (r == 0) local.logit_scale = d_logit_scale;
    auto to = sum.parameters();
    const auto from = local.parameters();
    for (std::size_t i = 0; i < to.size(); ++i) {
      for (Index j = 0; j < to[i].size(); ++j) to[i].data[j] += from[i].data[j];
    }
    row += rows;
  }
  expect_same_gradients<double>(sum, whole, "two ranks");
}

// Bit for bit the same gradients with 1 and 2 threads: every gradient element is written by
// one task in a fixed order (core/parallel.hpp), micro-batches added in batch order.
TEST(GradCache, OneAndTwoThreadsGiveTheSameBits) {
  const MultiModalEncoder<float> model = trained_like_model<float>();
  const auto batch = grad_cache_batch<float>();
  std::array<MultiModalEncoder<float>, 2> grads{MultiModalEncoder<float>(model.config),
                                                MultiModalEncoder<float>(model.config)};
  std::array<StepStats, 2> stats;
  for (int threads = 1; threads <= 2; ++threads) {
    const ScopedThreads scoped(threads);
    auto& grad = grads[static_cast<std::size_t>(threads - 1)];
    grad.set_zero();
    EncoderTrace<float> trace;
    stats[static_cast<std::size_t>(threads - 1)] =
        grad_cache_gradients<float>(model, grad, batch, groups, 4, trace);
  }
  EXPECT_EQ(stats[0].loss, stats[1].loss);
  const auto a = grads[0].parameters(), b = grads[1].parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(std::equal(a[i].data, a[i].data + a[i].size(), b[i].data)) << a[i].name;
  }
}

// The trace holds one micro-batch: with 16 alike captions in micro-batches of 4, a quarter of
// the whole batch's; and the memory estimate says so.
TEST(GradCache, TheTraceHoldsOneMicroBatch) {
  const MultiModalEncoder<float> model = trained_like_model<float>();
  std::vector<Sample<float>> batch(16);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    batch[i].text = std::vector<std::int64_t>{static_cast<std::int64_t>(i), 3, 5, 7};
  }
  const std::vector<PairGroup> pairs{{0, 8, 8, 1.0}};
  MultiModalEncoder<float> grad(model.config);
  grad.set_zero();
  EncoderTrace<float> trace;
  contrastive_gradients<float>(model, grad, batch, pairs, trace);
  const auto whole = static_cast<double>(trace.transformer_bytes());
  grad_cache_gradients<float>(model, grad, batch, pairs, 4, trace);
  const auto micro = static_cast<double>(trace.transformer_bytes());
  EXPECT_GT(whole, 0);
  EXPECT_NEAR(micro / whole, 0.25, 1e-9) << whole << " bytes against " << micro;
  EXPECT_LT(grad_cache_step_bytes<float>(model.config, 16, 4 * 4, 8),
            0.35 * contrastive_step_bytes<float>(model.config, 16, 16 * 4, 8));
}

// grad_cache_step is contrastive_step on the whole batch: the same losses and weights after a
// few AdamW steps, to float rounding.
TEST(GradCache, StepsFollowTheWholeBatchsSteps) {
  MultiModalEncoder<float> whole = trained_like_model<float>(), cached = whole;
  MultiModalEncoder<float> grad(whole.config);
  AdamW<float> whole_optimizer, cached_optimizer;
  const auto batch = grad_cache_batch<float>();
  EncoderTrace<float> trace;
  for (int step = 0; step < 4; ++step) {
    const StepStats a = contrastive_step<float>(whole, grad, whole_optimizer, batch, groups,
                                                1e-3, 1.0, trace);
    const StepStats b = grad_cache_step<float>(cached, grad, cached_optimizer, batch, groups, 3,
                                               1e-3, 1.0, trace);
    EXPECT_NEAR(a.loss, b.loss, 1e-5 * a.loss) << "step " << step;
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-4 * a.grad_norm) << "step " << step;
  }
  const auto x = whole.parameters(), y = cached.parameters();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const Eigen::Map<const RowVector<float>> p(x[i].data, x[i].size()), q(y[i].data, y[i].size());
    // AdamW's update divides by sqrt(v): a gradient near 0 can turn a rounding difference into
    // up to lr; 4 steps of lr 1e-3
    EXPECT_TRUE(test::all_close(p, q, 4e-3, 0)) << x[i].name;
  }
}

// With activation checkpointing (the trace's option, kept across micro-batches) the same bits:
// checkpointing recomputes each layer exactly.
TEST(GradCache, CombinesWithActivationCheckpointing) {
  const MultiModalEncoder<double> model = trained_like_model<double>();
  const auto batch = grad_cache_batch<double>();
  MultiModalEncoder<double> plain(model.config), checkpointed(model.config);
  plain.set_zero();
  checkpointed.set_zero();
  EncoderTrace<double> trace;
  grad_cache_gradients<double>(model, plain, batch, groups, 5, trace);
  trace.options.checkpoint_layers = true;
  grad_cache_gradients<double>(model, checkpointed, batch, groups, 5, trace);
  EXPECT_TRUE(trace.options.checkpoint_layers);
  EXPECT_TRUE(trace.layers.empty()) << "the last micro-batch's trace was checkpointed";
  const auto a = plain.parameters(), b = checkpointed.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(std::equal(a[i].data, a[i].data + a[i].size(), b[i].data)) << a[i].name;
  }
}

TEST(GradCache, BadArgumentsAreErrorsBeforeAnyWork) {
  const MultiModalEncoder<float> model = trained_like_model<float>();
  MultiModalEncoder<float> grad(model.config);
  grad.set_zero();
  auto batch = grad_cache_batch<float>();
  EncoderTrace<float> trace;
  EXPECT_THAT(test::error_of([&] { grad_cache_gradients<float>(model, grad, batch, groups, 0, trace); }),
              HasSubstr("micro_batch is 0, expected at least 1"));
  const std::vector<PairGroup> outside{{0, 10, 5, 1.0}};
  EXPECT_THAT(test::error_of([&] { grad_cache_gradients<float>(model, grad, batch, outside, 4, trace); }),
              HasSubstr("group 0 (pairs 0 and 10, count 5) does not fit a batch of 14 samples"));
  EXPECT_THAT(test::error_of([&] { grad_cache_embed<float>(model, {}, 4); }),
              HasSubstr("the batch is empty"));
  EXPECT_THAT(test::error_of([&] {
                grad_cache_backward<float>(model, grad, batch, Matrix<float>::Zero(13, 8), 4, trace);
              }),
              HasSubstr("d_embeddings is [13, 8], expected [14, 8]"));
  // audio longer than audio.max_tokens: refused by index in the whole batch, as the training
  // forward refuses it, not split into clips by the untraced forward
  batch[11].audio = Matrix<float>::Random(4, 40);
  EXPECT_THAT(test::error_of([&] { grad_cache_gradients<float>(model, grad, batch, groups, 4, trace); }),
              HasSubstr("sample 11: audio of 40 frames makes 20 tokens, more than audio.max_tokens = 8"));
  for (const auto& p : grad.parameters()) {
    for (Index j = 0; j < p.size(); ++j) ASSERT_EQ(p.data[j], 0.0f) << p.name << ": touched";
  }
}

}  // namespace test_grad_cache
}  // namespace tessera
