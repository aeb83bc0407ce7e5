// The training loop's pieces: checkpoints (train/checkpoint.hpp) and the modality-balanced
// pair sampler (train/sampler.hpp).

#include <tessera/model/config.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/sampler.hpp>

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
namespace {

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
  const auto encoded = model.encode_batch(batch, trace);
  Matrix<float> e(8, model.config.embed_dim);
  for (Index i = 0; i < 8; ++i) e.row(i) = encoded[static_cast<std::size_t>(i)].embedding;
  const float loss = info_nce_loss<float>(e.topRows(4), e.bottomRows(4), model.logit_scale);
  Matrix<float> d_e = Matrix<float>::Zero(8, model.config.embed_dim);
  grad.set_zero();
  grad.logit_scale = info_nce_backward<float>(d_e.topRows(4), d_e.bottomRows(4), e.topRows(4),
                                              e.bottomRows(4), model.logit_scale);
  model.backward(grad, d_e, trace);
  auto grads = grad.parameters();
  clip_grad_norm<float>(grads, 1.0);
  optimizer.step(model.parameters(), read_only<float>(grads), 3e-3);
  return loss;
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
      EXPECT_TRUE(has[static_cast<std::size_t>(a)] && has[static_cast<std::size_t>(b)]);
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
