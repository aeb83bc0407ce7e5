// The training loop's pieces: checkpoints (train/checkpoint.hpp) and the modality-balanced
// pair sampler (train/sampler.hpp).

#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/retrieval.hpp>
#include <tessera/train/sampler.hpp>
#include <tessera/train/step.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tessera {
namespace test_train {

using ::testing::HasSubstr;

// ---- Checkpoints ----------------------------------------------------------------------------

Config small_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 30, "max_tokens": 8}, "image": {"size": 8, "patch": 4}})"),
      "test config");
}

// Four caption-image pairs: texts then images.
std::vector<Sample<float>> pair_batch() {
  std::srand(3);
  std::vector<Sample<float>> batch(8);
  for (int i = 0; i < 4; ++i) {
    batch[static_cast<std::size_t>(i)].text = std::vector<std::int64_t>{i, 2 * i + 1, 29 - i};
    Tensor3<float> image(3, 8, 8);
    image.setRandom();
    batch[static_cast<std::size_t>(4 + i)].image = image;
  }
  return batch;
}

// One InfoNCE step on pair_batch(); returns the loss.
float train_step(MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad,
                 AdamW<float>& optimizer, const std::vector<Sample<float>>& batch) {
  EncoderTrace<float> trace;
  const PairGroup pairs{0, 4, 4, 1.0};
  return static_cast<float>(contrastive_step<float>(model, grad, optimizer, batch,
                                                    std::span(&pairs, 1), 3e-3, 1.0, trace)
                                .loss);
}

TEST(Checkpoint, ResumedTrainingEqualsUninterruptedTraining) {
  const test::TempDir dir;
  const auto batch = pair_batch();
  const AdamWOptions options{.lr = 3e-3, .weight_decay = 0.05};

  MultiModalEncoder<float> straight(small_config()), grad(small_config());
  straight.init_random(9);
  AdamW<float> straight_optimizer(options);
  std::vector<float> straight_losses;
  for (int step = 0; step < 6; ++step) {
    straight_losses.push_back(train_step(straight, grad, straight_optimizer, batch));
  }

  MultiModalEncoder<float> first(small_config());
  first.init_random(9);
  AdamW<float> first_optimizer(options);
  for (int step = 0; step < 3; ++step) train_step(first, grad, first_optimizer, batch);
  save_checkpoint(dir / "run.ckpt", first, first_optimizer, {3, {{"sampler", "seed 5"}}});

  MultiModalEncoder<float> resumed(small_config());  // fresh: zero weights, no optimizer state
  AdamW<float> resumed_optimizer(options);
  TrainingPosition position;
  load_checkpoint(dir / "run.ckpt", resumed, resumed_optimizer, position);
  EXPECT_EQ(position.step, 3);
  EXPECT_EQ(position.user.at("sampler"), "seed 5");
  EXPECT_EQ(resumed_optimizer.steps, 3);
  std::vector<float> resumed_losses;
  for (int step = 3; step < 6; ++step) {
    resumed_losses.push_back(train_step(resumed, grad, resumed_optimizer, batch));
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed_losses[static_cast<std::size_t>(i)], straight_losses[static_cast<std::size_t>(3 + i)]);
  const auto a = straight.parameters(), b = resumed.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(std::equal(a[i].data, a[i].data + a[i].size(), b[i].data)) << a[i].name;
  }
  EXPECT_LT(straight_losses.back(), straight_losses.front()) << "it trains";
}

TEST(Checkpoint, ErrorsLeaveEverythingAsItWas) {
  const test::TempDir dir;
  MultiModalEncoder<float> model(small_config()), grad(small_config());
  model.init_random(1);
  AdamW<float> optimizer;
  train_step(model, grad, optimizer, pair_batch());
  save_checkpoint(dir / "run.ckpt", model, optimizer, {1, {}});
  std::ifstream in(dir / "run.ckpt", std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  // A diverged model is refused, and the previous checkpoint stays.
  MultiModalEncoder<float> diverged = model;
  diverged.layers[1].ffn.fc2.weight(2, 3) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(test::error_of([&] { save_checkpoint(dir / "run.ckpt", diverged, optimizer, {2, {}}); }),
              HasSubstr("weight 'layers.1.ffn.fc2.weight' holds a non-finite value"));
  std::ifstream again(dir / "run.ckpt", std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  EXPECT_EQ(before, after);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()), 1) << "no temporary left";

  // Loading into another config, or as double, or a file that is not a checkpoint: errors
  // that change nothing.
  Config other = small_config();
  other.ffn_dim = 48;
  MultiModalEncoder<float> wrong(other);
  AdamW<float> untouched;
  TrainingPosition position{7, {}};
  EXPECT_THAT(test::error_of([&] { load_checkpoint(dir / "run.ckpt", wrong, untouched, position); }),
              HasSubstr("config differs"));
  EXPECT_EQ(position.step, 7);
  EXPECT_EQ(untouched.steps, 0);
  MultiModalEncoder<double> as_double(small_config());
  AdamW<double> double_optimizer;
  EXPECT_THAT(test::error_of([&] { load_checkpoint(dir / "run.ckpt", as_double, double_optimizer, position); }),
              HasSubstr("written for float, read as double"));
  save_model(model, dir / "model");
  EXPECT_THAT(test::error_of([&] { load_checkpoint(dir / "model" / "model.safetensors", model, optimizer, position); }),
              HasSubstr("not a tessera checkpoint"));
  EXPECT_THAT(test::error_of([&] { load_checkpoint(dir / "missing.ckpt", model, optimizer, position); }),
              HasSubstr("missing.ckpt"));
}

// ---- The training step ---------------------------------------------------------------------

// contrastive_gradients against the loop written out: the weighted InfoNCE of each group,
// the embeddings' gradients added where a sample serves in two groups, the encoder's backward.
TEST(ContrastiveStep, GroupsAreWeightedInfoNcesOverTheirRuns) {
  MultiModalEncoder<float> model(small_config()), grad(small_config()), expected_grad(small_config());
  model.init_random(4);
  model.logit_scale = 1.5f;
  const auto batch = pair_batch();  // 4 texts, then 4 images
  // texts 0-3 with images 4-7, and texts 1-2 with texts 2-3 (overlapping runs)
  const std::vector<PairGroup> groups{{0, 4, 4, 0.75}, {1, 2, 2, 0.25}};
  EncoderTrace<float> trace;
  grad.set_zero();
  const StepStats stats = contrastive_gradients<float>(model, grad, batch, groups, trace);

  EncoderTrace<float> expected_trace;
  const auto encoded = model.encode_batch(batch, expected_trace);
  Matrix<float> e(8, model.config.embed_dim);
  for (Index i = 0; i < 8; ++i) e.row(i) = encoded[static_cast<std::size_t>(i)].embedding;
  Matrix<float> d_e = Matrix<float>::Zero(8, model.config.embed_dim);
  double loss = 0;
  expected_grad.set_zero();
  for (const PairGroup& g : groups) {
    const Matrix<float> a = e.middleRows(g.a_first, g.count), b = e.middleRows(g.b_first, g.count);
    const float l = info_nce_loss<float>(a, b, model.logit_scale);
    loss += g.weight * l;
    Matrix<float> d_a = Matrix<float>::Zero(g.count, e.cols()), d_b = d_a;
    expected_grad.logit_scale += info_nce_backward<float>(d_a, d_b, a, b, model.logit_scale,
                                                          static_cast<float>(g.weight));
    d_e.middleRows(g.a_first, g.count) += d_a;
    d_e.middleRows(g.b_first, g.count) += d_b;
  }
  model.backward(expected_grad, d_e, expected_trace);

  EXPECT_NEAR(stats.loss, loss, 1e-6);
  ASSERT_EQ(stats.group_loss.size(), 2u);
  EXPECT_NEAR(0.75 * stats.group_loss[0] + 0.25 * stats.group_loss[1], stats.loss, 1e-6);
  const auto got = grad.parameters(), want = expected_grad.parameters();
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(std::equal(got[i].data, got[i].data + got[i].size(), want[i].data)) << got[i].name;
  }
  EXPECT_NE(grad.logit_scale, 0.0f);
}

TEST(ContrastiveStep, StepsLowerTheLossAndReportTheGradientNorm) {
  MultiModalEncoder<float> model(small_config()), grad(small_config());
  model.init_random(2);
  AdamW<float> optimizer;
  const auto batch = pair_batch();
  const PairGroup pairs{0, 4, 4, 1.0};
  EncoderTrace<float> trace;
  std::vector<StepStats> steps;
  for (int i = 0; i < 8; ++i) {
    steps.push_back(contrastive_step<float>(model, grad, optimizer, batch, std::span(&pairs, 1),
                                            3e-3, 0.0, trace));
  }
  EXPECT_LT(steps.back().loss, steps.front().loss);
  EXPECT_GT(steps.front().grad_norm, 0);
  // the norm is measured before clipping, and the gradients left clipped
  grad.set_zero();
  contrastive_gradients<float>(model, grad, batch, std::span(&pairs, 1), trace);
  double norm = 0;
  for (const auto& p : grad.parameters()) {
    for (Index j = 0; j < p.size(); ++j) norm += static_cast<double>(p.data[j]) * p.data[j];
  }
  const StepStats clipped = contrastive_step<float>(model, grad, optimizer, batch,
                                                    std::span(&pairs, 1), 3e-3, 1e-3, trace);
  EXPECT_NEAR(clipped.grad_norm, std::sqrt(norm), 1e-4 * std::sqrt(norm));
  double after = 0;
  for (const auto& p : grad.parameters()) {
    for (Index j = 0; j < p.size(); ++j) after += static_cast<double>(p.data[j]) * p.data[j];
  }
  EXPECT_NEAR(std::sqrt(after), 1e-3, 1e-6);
}

TEST(ContrastiveStep, MemoryEstimateCountsTokensLayersAndTheLogits) {
  Config config = small_config();
  config.hidden_dim = 8;
  config.ffn_dim = 16;
  config.num_layers = 2;
  config.embed_dim = 4;
  // 10 tokens x (2 layers x (7 D + 2 F) + 3 D + 8 D + 2 F) + 4 x 3^2 + 2 x 2 samples x E
  const double values = 10 * (2 * (56 + 32) + 24 + 64 + 32) + 4 * 9 + 2 * 2 * 4;
  EXPECT_EQ(contrastive_step_bytes<float>(config, 2, 10, 3), 4 * values);
  EXPECT_EQ(contrastive_step_bytes<double>(config, 2, 10, 3), 8 * values);
  // a batch far beyond memory is told in bytes, not allocated: 2e5 pairs, 1e7 tokens
  EXPECT_GT(contrastive_step_bytes<float>(config, 200000, 10000000, 100000), 4e10);
}

TEST(ContrastiveStep, GroupsOutsideTheBatchAreErrorsBeforeAnyWork) {
  MultiModalEncoder<float> model(small_config()), grad(small_config());
  model.init_random(2);
  const auto batch = pair_batch();
  EncoderTrace<float> trace;
  const std::vector<PairGroup> outside{{0, 4, 5, 1.0}};
  EXPECT_THAT(test::error_of([&] { contrastive_gradients<float>(model, grad, batch, outside, trace); }),
              HasSubstr("group 0 (pairs 0 and 4, count 5) does not fit a batch of 8 samples"));
  const std::vector<PairGroup> nan_weight{{0, 4, 4, std::nan("")}};
  EXPECT_THAT(test::error_of([&] { contrastive_gradients<float>(model, grad, batch, nan_weight, trace); }),
              HasSubstr("group 0 has weight nan"));
  EXPECT_THAT(test::error_of([&] { contrastive_gradients<float>(model, grad, batch, {}, trace); }),
              HasSubstr("no pair groups"));
}

TEST(ContrastiveStep, PairBatchLaysOutEachKindsFirstViewsThenSecondViews) {
  SamplerStage stage;
  stage.weights = {2, 0, 1, 0, 0, 1};  // 8 pairs: 4 text-image, 2 text-video, 2 audio-video
  const std::vector<ModalitySet> items(5, ModalitySet{true, true, true, true});
  const PairSampler sampler(items, 8, 3, {stage});
  const auto draws = sampler.batch(2);
  std::vector<Sample<float>> samples;
  std::vector<PairGroup> groups;
  // each view a one-id text that says its item and modality
  pair_batch<float>(draws, [](std::size_t item, Modality m) {
    Sample<float> s;
    s.text = std::vector<std::int64_t>{static_cast<std::int64_t>(10 * item + modality_index(m))};
    return s;
  }, samples, groups);
  ASSERT_EQ(samples.size(), 16u);
  ASSERT_EQ(groups.size(), 3u);
  const std::vector<std::array<Index, 3>> layout{{0, 4, 4}, {8, 10, 2}, {12, 14, 2}};
  const std::vector<double> weights{0.5, 0.25, 0.25};
  std::size_t d = 0;
  for (std::size_t g = 0; g < 3; ++g) {
    EXPECT_EQ(groups[g].a_first, layout[g][0]);
    EXPECT_EQ(groups[g].b_first, layout[g][1]);
    EXPECT_EQ(groups[g].count, layout[g][2]);
    EXPECT_DOUBLE_EQ(groups[g].weight, weights[g]);
    for (Index i = 0; i < groups[g].count; ++i, ++d) {
      const auto [a, b] = pair_kinds[static_cast<std::size_t>(draws[d].kind)];
      const auto item = static_cast<std::int64_t>(10 * draws[d].item);
      EXPECT_EQ(samples[static_cast<std::size_t>(groups[g].a_first + i)].text->front(),
                item + static_cast<std::int64_t>(modality_index(a)));
      EXPECT_EQ(samples[static_cast<std::size_t>(groups[g].b_first + i)].text->front(),
                item + static_cast<std::int64_t>(modality_index(b)));
    }
  }
}

// ---- Retrieval ------------------------------------------------------------------------------

TEST(Retrieval, TopKAndChanceWithTiesRankedByIndex) {
  // queries and candidates on the unit circle; query 0 wants candidates 0 and 3, query 1
  // candidates 1 and 4, query 2 candidate 2
  Matrix<float> queries(3, 2), candidates(6, 2);
  queries << 1, 0, 0, 1, -1, 0;
  candidates << 1, 0,    // 0: relevant to q0, its best
      0, 1,              // 1: relevant to q1, its best
      0.6f, 0.8f,        // 2: relevant to q2, far from it
      1, 0,              // 3: relevant to q0 too (a tie with 0)
      0, 1,              // 4: q1's tie, ranked after 1
      -1, 0;             // 5: q2's best, not relevant to it
  const auto relevant = [](Index q, Index c) { return c % 3 == q && c != 5; };
  const RetrievalScores s = retrieval_scores<float>(queries, candidates, relevant);
  EXPECT_EQ(s.queries, 3);
  EXPECT_DOUBLE_EQ(s.top1, 2.0 / 3);   // q0 and q1 hit at once; q2's best (5) is not relevant
  EXPECT_DOUBLE_EQ(s.top5, 3.0 / 3);   // q2 finds 2 among its five best
  EXPECT_DOUBLE_EQ(s.chance_top1, (2.0 / 6 + 2.0 / 6 + 1.0 / 6) / 3);
  // ties never flatter: with candidate 0 made irrelevant, q0's tie (0 before 3) is a miss
  const RetrievalScores strict = retrieval_scores<float>(queries, candidates,
      [](Index q, Index c) { return c % 3 == q && c != 5 && c != 0; });
  EXPECT_DOUBLE_EQ(strict.top1, 1.0 / 3);
  Matrix<float> bad = queries;
  bad(1, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(test::error_of([&] { retrieval_scores<float>(bad, candidates, relevant); }),
              HasSubstr("non-finite"));
  EXPECT_THAT(test::error_of([&] { retrieval_scores<float>(queries, Matrix<float>(2, 3), relevant); }),
              HasSubstr("expected non-empty with one width"));
}

// ---- The pair sampler -----------------------------------------------------------------------

// 12 items: 0-5 have all four modalities, 6-8 text and image only, 9-11 audio and video only.
std::vector<ModalitySet> sampler_items() {
  std::vector<ModalitySet> items(6, ModalitySet{true, true, true, true});
  for (int i = 0; i < 3; ++i) items.push_back({true, true, false, false});
  for (int i = 0; i < 3; ++i) items.push_back({false, false, true, true});
  return items;
}

TEST(PairSampler, EveryBatchHoldsEachKindInItsProportion) {
  SamplerStage stage;
  stage.weights = {2, 1, 1, 1, 1, 0};  // 12 pairs: 4, 2, 2, 2, 2, 0
  const std::vector<ModalitySet> items = sampler_items();
  const PairSampler sampler(items, 12, 7, {stage});
  for (std::int64_t step = 0; step < 20; ++step) {
    std::array<int, pair_kind_count> seen{};
    for (const PairDraw& d : sampler.batch(step)) {
      ++seen[static_cast<std::size_t>(d.kind)];
      const auto [a, b] = pair_kinds[static_cast<std::size_t>(d.kind)];
      const ModalitySet& has = items[d.item];
      EXPECT_TRUE(has[modality_index(a)] && has[modality_index(b)]);
    }
    EXPECT_EQ(seen, (std::array<int, pair_kind_count>{4, 2, 2, 2, 2, 0})) << "step " << step;
  }
}

TEST(PairSampler, EachEpochDrawsEveryItemOnceAndBatchesArePureFunctionsOfTheStep) {
  const PairSampler sampler(sampler_items(), 6, 11, PairSampler::uniform());  // 1 pair per kind
  // text-image has 9 items: steps 0-8 are one epoch of them, 9-17 the next.
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<std::size_t> drawn;
    for (std::int64_t step = 9 * epoch; step < 9 * (epoch + 1); ++step) {
      drawn.insert(sampler.batch(step).front().item);
    }
    EXPECT_EQ(drawn, (std::multiset<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8})) << "epoch " << epoch;
  }
  const PairSampler same(sampler_items(), 6, 11, PairSampler::uniform());
  const PairSampler other_seed(sampler_items(), 6, 12, PairSampler::uniform());
  bool differs = false;
  for (std::int64_t step : {0, 5, 40, 3}) {  // any order: no hidden state
    const auto a = sampler.batch(step), b = same.batch(step), c = other_seed.batch(step);
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].item, b[i].item);
      differs |= a[i].item != c[i].item;
    }
  }
  EXPECT_TRUE(differs) << "another seed, other batches";
}

TEST(PairSampler, ProgressiveCurriculum) {
  const PairSampler sampler(sampler_items(), 6, 1, PairSampler::progressive(10, 20));
  EXPECT_EQ(sampler.counts(0), (std::array<Index, pair_kind_count>{6, 0, 0, 0, 0, 0}));
  EXPECT_EQ(sampler.counts(9), (std::array<Index, pair_kind_count>{6, 0, 0, 0, 0, 0}));
  EXPECT_EQ(sampler.counts(10), (std::array<Index, pair_kind_count>{2, 2, 2, 0, 0, 0}));
  EXPECT_EQ(sampler.counts(25), (std::array<Index, pair_kind_count>{1, 1, 1, 1, 1, 1}));
  // the text-image stream continues across stages: steps 0-9 drew 60, step 10 draws 2 more
  const PairSampler only_text_image(sampler_items(), 6, 1, {SamplerStage{0, {1, 0, 0, 0, 0, 0}}});
  std::vector<std::size_t> stream;
  for (std::int64_t step = 0; step < 11; ++step) {
    for (const auto& d : only_text_image.batch(step)) stream.push_back(d.item);
  }
  const auto at_ten = sampler.batch(10);
  EXPECT_EQ(at_ten[0].item, stream[60]);
  EXPECT_EQ(at_ten[1].item, stream[61]);
}

TEST(PairSampler, AKindsShareOfABatchIsNoMoreThanItsItems) {
  // sampler_items(): 9 text-image and 9 audio-video items, 6 of each other kind. Uniform, 37
  // pairs are 7 + 6 + 6 + 6 + 6 + 6 (the extra pair to the first kind); 38 would give
  // text-audio 7 pairs of its 6 items.
  const std::vector<ModalitySet> items = sampler_items();
  EXPECT_EQ(PairSampler::max_pairs_per_batch(items, PairSampler::uniform()), 37);
  EXPECT_EQ(PairSampler(items, 37, 1, PairSampler::uniform()).counts(0),
            (std::array<Index, pair_kind_count>{7, 6, 6, 6, 6, 6}));
  const std::string error = test::error_of([&] { PairSampler(items, 38, 1, PairSampler::uniform()); });
  EXPECT_THAT(error, HasSubstr("38 pairs per batch give stage 0 7 text-audio pairs per batch, but "
                               "only 6 items have both modalities"));
  EXPECT_THAT(error, HasSubstr("at most 37 pairs per batch fit these items"));
  // progressive: text-image alone first (9 items), then three kinds (19: 7 + 6 + 6)
  EXPECT_EQ(PairSampler::max_pairs_per_batch(items, PairSampler::progressive(10, 20)), 9);
  EXPECT_THAT(test::error_of([&] { PairSampler(items, 10, 1, PairSampler::progressive(10, 20)); }),
              HasSubstr("10 text-image pairs per batch, but only 9 items"));
  // far beyond the data, refused as fast, before anything is drawn
  EXPECT_THAT(test::error_of([&] { PairSampler(items, 100000000, 1, PairSampler::uniform()); }),
              HasSubstr("at most 37 pairs"));
  EXPECT_EQ(PairSampler::max_pairs_per_batch({}, PairSampler::uniform()), 0);
}

TEST(PairSampler, HardNegativesComeInRunsOfOneGroupAndEachEpochStillDrawsEveryItemOnce) {
  // 40 text-image items in 4 groups of 10 (group = i % 4); runs of 3: per group 3 + 3 + 3 + 1
  std::vector<ModalitySet> items(40, ModalitySet{true, true, false, false});
  SamplerGroups groups{{}, 3};
  for (std::size_t i = 0; i < items.size(); ++i) groups.group.push_back(i % 4);
  SamplerStage text_image{0, {1, 0, 0, 0, 0, 0}};
  const PairSampler sampler(items, 8, 5, {text_image}, groups);
  std::vector<std::size_t> stream;  // two epochs, 5 batches each
  for (std::int64_t step = 0; step < 10; ++step) {
    for (const PairDraw& d : sampler.batch(step)) stream.push_back(d.item);
  }
  for (int epoch = 0; epoch < 2; ++epoch) {
    const auto first = stream.begin() + 40 * epoch;
    std::vector<std::size_t> drawn(first, first + 40);
    std::sort(drawn.begin(), drawn.end());
    for (std::size_t i = 0; i < 40; ++i) EXPECT_EQ(drawn[i], i) << "epoch " << epoch;
    // a group's 10 items are 4 runs, so they lie in at most 4 stretches of the epoch
    std::array<int, 4> stretches{};
    for (std::size_t i = 0; i < 40; ++i) {
      const std::size_t g = first[static_cast<std::ptrdiff_t>(i)] % 4;
      if (i == 0 || first[static_cast<std::ptrdiff_t>(i) - 1] % 4 != g) ++stretches[g];
    }
    for (const int n : stretches) EXPECT_LE(n, 4) << "epoch " << epoch;
  }
  // same-group neighbours in the first epoch: at least 2 + 2 + 2 + 0 inside each group's runs
  int alike = 0;
  for (std::size_t i = 0; i + 1 < 40; ++i) alike += stream[i] % 4 == stream[i + 1] % 4;
  EXPECT_GE(alike, 24);
  // the plain sampler rarely puts two of one group side by side
  const PairSampler plain(items, 8, 5, {text_image});
  std::vector<std::size_t> shuffled;
  for (std::int64_t step = 0; step < 5; ++step) {
    for (const PairDraw& d : plain.batch(step)) shuffled.push_back(d.item);
  }
  int plain_alike = 0;
  for (std::size_t i = 0; i + 1 < 40; ++i) plain_alike += shuffled[i] % 4 == shuffled[i + 1] % 4;
  EXPECT_LT(plain_alike, alike);
  // a kind left out of groups.kinds keeps the plain shuffle
  SamplerGroups other_kinds = groups;
  other_kinds.kinds = {false, true, true, true, true, true};
  const PairSampler ungrouped(items, 8, 5, {text_image}, other_kinds);
  for (std::int64_t step = 0; step < 5; ++step) {
    const auto a = ungrouped.batch(step), b = plain.batch(step);
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].item, b[i].item);
  }
  // pure function of the step, as without groups
  const PairSampler again(items, 8, 5, {text_image}, groups);
  EXPECT_EQ(again.batch(7)[3].item, sampler.batch(7)[3].item);
  EXPECT_THAT(test::error_of([&] { PairSampler(items, 8, 5, {text_image}, SamplerGroups{{0, 1}, 2, {}}); }),
              HasSubstr("2 groups for 40 items"));
  EXPECT_THAT(test::error_of([&] { PairSampler(items, 8, 5, {text_image}, SamplerGroups{{}, 0, {}}); }),
              HasSubstr("run_length is 0"));
}

TEST(PairSampler, PossibleOnlyDropsKindsNoItemHas) {
  const std::vector<ModalitySet> text_image_only(4, ModalitySet{true, true, false, false});
  const auto stages = PairSampler::possible_only(PairSampler::progressive(10, 20), text_image_only);
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[1].from, 10);
  for (const auto& stage : stages) {
    EXPECT_EQ(stage.weights, (std::array<double, pair_kind_count>{1, 0, 0, 0, 0, 0}));
  }
  const PairSampler sampler(text_image_only, 4, 1, stages);
  EXPECT_EQ(sampler.counts(25), (std::array<Index, pair_kind_count>{4, 0, 0, 0, 0, 0}));
  // kinds some item has keep their weights
  EXPECT_EQ(PairSampler::possible_only(PairSampler::uniform(), sampler_items())[0].weights,
            PairSampler::uniform()[0].weights);
}

TEST(PairSampler, BadArgumentsAreErrors) {
  SamplerStage audio_video;
  audio_video.weights = {0, 0, 0, 0, 0, 1};
  std::vector<ModalitySet> text_image_only(4, ModalitySet{true, true, false, false});
  EXPECT_THAT(test::error_of([&] { PairSampler(text_image_only, 4, 1, {audio_video}); }),
              HasSubstr("wants audio-video pairs but no item has both modalities"));
  EXPECT_THAT(test::error_of([&] { PairSampler(sampler_items(), 0, 1, PairSampler::uniform()); }),
              HasSubstr("pairs_per_batch is 0"));
  EXPECT_THAT(test::error_of([&] { PairSampler(sampler_items(), 4, 1, {SamplerStage{}}); }),
              HasSubstr("has no weight > 0"));
  EXPECT_THAT(test::error_of([&] { PairSampler::progressive(10, 5); }), HasSubstr("expected 0 < 10 < 5"));
  const PairSampler sampler(sampler_items(), 4, 1, PairSampler::uniform());
  EXPECT_THAT(test::error_of([&] { sampler.batch(-1); }), HasSubstr("step -1 < 0"));
}

}  // namespace
}  // namespace tessera
