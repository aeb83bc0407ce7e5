// Freezing parts of tessera's own encoder (model/encoder_freezing.hpp): the --freeze grammar,
// which weights each item freezes, validate's refusals; and the three step functions with a
// freezing: the frozen weights keep their bits, and the trained ones take exactly the step
// AdamW takes when handed the trained list by hand, with the norm clipped over the trained
// gradients alone; a checkpoint of the trained list resumes exactly.

#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_freezing.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/distributed_step.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tessera {
namespace test_encoder_freezing {

using ::testing::HasSubstr;
using test::error_of;

// ---- The grammar -----------------------------------------------------------------------------

EncoderFreezing parts(std::set<EncoderPart> p) { return EncoderFreezing{std::move(p)}; }

TEST(EncoderFreezing, ParsesEveryItemInAnyOrder) {
  EXPECT_EQ(parse_encoder_freezing("", "--freeze"), EncoderFreezing{});
  for (const EncoderPart p : encoder_parts) {
    EXPECT_EQ(parse_encoder_freezing(to_string(p), "--freeze"), parts({p})) << to_string(p);
  }
  EXPECT_EQ(parse_encoder_freezing("backbone", "--freeze"), parts({EncoderPart::trunk}));
  EXPECT_EQ(parse_encoder_freezing("trunk,text,logit_scale", "--freeze"),
            parts({EncoderPart::text, EncoderPart::trunk, EncoderPart::logit_scale}));
  EXPECT_EQ(parse_encoder_freezing("logit_scale,text,backbone,trunk", "--freeze"),
            parse_encoder_freezing("trunk,text,logit_scale", "--freeze"));
}

TEST(EncoderFreezing, RefusesUnknownItemsNamingThemAndTheChoices) {
  const std::string depth = error_of([] { parse_encoder_freezing("text,depth", "--freeze"); });
  EXPECT_THAT(depth, HasSubstr("--freeze: cannot freeze \"depth\" of tessera's encoder"));
  for (const EncoderPart p : encoder_parts) EXPECT_THAT(depth, HasSubstr(to_string(p)));
  EXPECT_THAT(depth, HasSubstr("backbone"));
  // the projection always trains; a tower model's items are not this grammar's
  EXPECT_THAT(error_of([] { parse_encoder_freezing("proj", "x"); }), HasSubstr("\"proj\""));
  EXPECT_THAT(error_of([] { parse_encoder_freezing("image.backbone", "x"); }),
              HasSubstr("\"image.backbone\""));
  EXPECT_THAT(error_of([] { parse_encoder_freezing("towers", "x"); }), HasSubstr("\"towers\""));
  EXPECT_THAT(error_of([] { parse_encoder_freezing("text,", "x"); }), HasSubstr("\"\""));
  EXPECT_THAT(error_of([] { parse_encoder_freezing("Text", "x"); }), HasSubstr("\"Text\""));
}

// ---- Which weights each item freezes ----------------------------------------------------------

// Every kind of weight: four modalities with learned positions, pooled video, a custom
// modality, routed pooling; one layer keeps the lists short.
Config every_weight_config(const char* pooling) {
  return parse_config(nlohmann::json::parse(std::string(
      R"({"hidden_dim": 8, "num_layers": 1, "num_heads": 2, "ffn_dim": 16, "embed_dim": 4,
          "position": "learned", "pooling": ")") + pooling + R"(",
          "text": {"vocab_size": 10, "max_tokens": 4}, "image": {"size": 8, "patch": 4},
          "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 4},
          "video": {"tubelet": 2, "pool_queries": 2, "max_tokens": 8},
          "custom_modalities": [{"name": "depth", "input_dim": 3, "max_tokens": 4}]})"),
      "test config");
}

std::vector<std::string> names_of(const Config& c) {
  std::vector<std::string> out;
  for (const auto& p : MultiModalEncoder<float>(c).parameters()) out.push_back(p.name);
  return out;
}

// The weights of `c` that `spec` freezes, and those whose name passes `pick`.
std::set<std::string> frozen_by(const Config& c, const char* spec) {
  const EncoderFreezing f = parse_encoder_freezing(spec, "test");
  std::set<std::string> out;
  for (const auto& name : names_of(c)) {
    if (f.frozen(name)) out.insert(name);
  }
  return out;
}
std::set<std::string> picked(const Config& c, const std::function<bool(const std::string&)>& pick) {
  std::set<std::string> out;
  for (const auto& name : names_of(c)) {
    if (pick(name)) out.insert(name);
  }
  return out;
}
bool starts(const std::string& name, const std::string& prefix) { return name.rfind(prefix, 0) == 0; }

TEST(EncoderFreezing, EachItemFreezesItsWeights) {
  const Config c = every_weight_config("routed");
  EXPECT_EQ(frozen_by(c, ""), std::set<std::string>{});
  EXPECT_EQ(frozen_by(c, "text"),
            (std::set<std::string>{"text.token_embed.weight", "text.pos_embed.weight"}));
  EXPECT_EQ(frozen_by(c, "image"),
            (std::set<std::string>{"image.patch_embed.weight", "image.patch_embed.bias",
                                   "image.pos_embed.weight"}));
  EXPECT_EQ(frozen_by(c, "audio"),
            (std::set<std::string>{"audio.patch_embed.weight", "audio.patch_embed.bias",
                                   "audio.pos_embed.weight"}));
  // video: its patch embedding and its whole pooler (queries, positions, norms, attention)
  const auto video = frozen_by(c, "video");
  EXPECT_EQ(video, picked(c, [](const std::string& n) { return starts(n, "video."); }));
  for (const char* name : {"video.patch_embed.weight", "video.pool.queries", "video.pool.pos_embed",
                           "video.pool.norm_kv.bias", "video.pool.attn.out_proj.weight"}) {
    EXPECT_EQ(video.count(name), 1u) << name;
  }
  const auto trunk = frozen_by(c, "trunk");
  EXPECT_EQ(trunk, picked(c, [](const std::string& n) {
              return starts(n, "layers.") || starts(n, "final_norm.") || starts(n, "router.") ||
                     n == "modality_embed.weight";
            }));
  for (const char* name : {"layers.0.attn.q_proj.weight", "layers.0.ffn.fc2.bias",
                           "final_norm.weight", "router.weight", "router.bias"}) {
    EXPECT_EQ(trunk.count(name), 1u) << name;
  }
  EXPECT_EQ(frozen_by(every_weight_config("cls"), "backbone").count("cls_token"), 1u);
  // backbones: the custom modality's inputs too; only proj and logit_scale train
  EXPECT_EQ(frozen_by(c, "backbones"), picked(c, [](const std::string& n) {
              return n != "proj.weight" && n != "logit_scale";
            }));
  EXPECT_EQ(frozen_by(c, "backbones").count("depth.patch_embed.weight"), 1u);
  EXPECT_EQ(frozen_by(c, "logit_scale"), std::set<std::string>{"logit_scale"});
  EXPECT_EQ(frozen_by(c, "backbones,logit_scale"),
            picked(c, [](const std::string& n) { return n != "proj.weight"; }));
  // every item together leaves the projection (and the custom inputs, but for backbones)
  EXPECT_EQ(frozen_by(c, "text,image,audio,video,trunk,logit_scale"),
            picked(c, [](const std::string& n) { return n != "proj.weight" && !starts(n, "depth."); }));
}

TEST(EncoderFreezing, TrainedKeepsTheOrderOfTheRest) {
  MultiModalEncoder<float> model(every_weight_config("routed"));
  const EncoderFreezing trunk = parse_encoder_freezing("trunk", "test");
  const auto all = model.parameters();
  const auto kept = trained(model.parameters(), trunk);
  const auto kept_const = trained(std::as_const(model).parameters(), trunk);
  std::vector<std::string> want;
  for (const auto& p : all) {
    if (!trunk.frozen(p.name)) want.push_back(p.name);
  }
  ASSERT_EQ(kept.size(), want.size());
  ASSERT_EQ(kept_const.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(kept[i].name, want[i]);
    EXPECT_EQ(kept_const[i].data, kept[i].data) << want[i];
  }
  EXPECT_EQ(trained(model.parameters(), EncoderFreezing{}).size(), all.size());
}

TEST(EncoderFreezing, ValidateRefusesAModalityTheModelLacks) {
  const Config c = parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 8, "num_layers": 1, "num_heads": 2, "ffn_dim": 16, "embed_dim": 4,
          "text": {"vocab_size": 10, "max_tokens": 4}, "image": {"size": 8, "patch": 4},
          "custom_modalities": [{"name": "depth", "input_dim": 3}]})"),
      "test config");
  const auto check = [&c](const char* spec) {
    validate(parse_encoder_freezing(spec, "--freeze"), c, std::string("--freeze ") + spec);
  };
  EXPECT_THAT(error_of([&] { check("text,audio"); }),
              HasSubstr("--freeze text,audio: the model has no audio inputs to freeze (its "
                        "modalities: text, image, depth)"));
  EXPECT_THAT(error_of([&] { check("video"); }), HasSubstr("no video inputs to freeze"));
  // backbones names no modality: it freezes whichever the model has
  for (const char* fine : {"", "text", "image,trunk", "backbones", "backbones,logit_scale,text"}) {
    check(fine);
  }
  // proj.weight always trains, so no list leaves nothing to train
  EXPECT_FALSE(parse_encoder_freezing("text,image,trunk,backbones,logit_scale", "x")
                   .frozen("proj.weight"));
}

// ---- The steps ---------------------------------------------------------------------------------

Config step_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "pooling": "routed",
          "text": {"vocab_size": 30, "max_tokens": 8}, "image": {"size": 8, "patch": 4},
          "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 8}})"),
      "test config");
}

// 10 samples: captions 0-3, images 4-7, audios 8-9.
std::vector<Sample<float>> step_batch() {
  std::srand(11);
  std::vector<Sample<float>> batch(10);
  for (int i = 0; i < 4; ++i) {
    batch[static_cast<std::size_t>(i)].text =
        std::vector<std::int64_t>{(3 * i + 1) % 30, (5 * i + 2) % 30, (7 * i + 3) % 30};
    Tensor3<float> image(3, 8, 8);
    image.setRandom();
    batch[static_cast<std::size_t>(4 + i)].image = image;
  }
  for (int i = 8; i < 10; ++i) {
    batch[static_cast<std::size_t>(i)].audio = Matrix<float>::Random(4, 2 * (i - 6));
  }
  return batch;
}

// captions-images, and captions-audios (the first captions again)
const std::vector<PairGroup> step_groups{{0, 4, 4, 0.7}, {0, 8, 2, 0.3}};

// Weights 15 times init_random's, so InfoNCE has work to do and the gradients are large.
MultiModalEncoder<float> start_model() {
  MultiModalEncoder<float> model(step_config());
  model.init_random(5);
  for (auto& p : model.parameters()) {
    if (p.role == WeightRole::normal) {
      for (Index j = 0; j < p.size(); ++j) p.data[j] *= 15.0f;
    }
  }
  model.logit_scale = 2.0f;
  return model;
}

constexpr double lr = 1e-2;
constexpr double max_grad_norm = 0.05;  // below every norm of these steps: clipping scales

template <class A, class B>  // float or const float
bool same_bits(const Parameter<A>& a, const Parameter<B>& b) {
  return a.size() == b.size() && std::equal(a.data, a.data + a.size(), b.data);
}

// The root of the sum of squares in double, element by element (clip_grad_norm's order).
double norm_of(const std::vector<Parameter<float>>& grads) {
  double sum = 0;
  for (const auto& g : grads) {
    for (std::int64_t j = 0; j < g.size(); ++j) sum += static_cast<double>(g.data[j]) * g.data[j];
  }
  return std::sqrt(sum);
}

using Gradients = std::function<StepStats(const MultiModalEncoder<float>& model,
                                          MultiModalEncoder<float>& grad)>;
using Step = std::function<StepStats(MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad,
                                     AdamW<float>& optimizer, const EncoderFreezing& freezing)>;

// Two steps of `step` with `trunk` frozen against two steps by hand: `gradients`, then the
// norm clipped over the trained gradients and AdamW given the trained lists.
void check_step_with_frozen_trunk(const Step& step, const Gradients& gradients) {
  const EncoderFreezing freezing = parse_encoder_freezing("trunk", "test");
  const MultiModalEncoder<float> start = start_model();
  MultiModalEncoder<float> model = start, by_hand = start;
  MultiModalEncoder<float> grad(start.config), grad_by_hand(start.config);
  AdamW<float> optimizer, optimizer_by_hand;
  for (int s = 0; s < 2; ++s) {
    const StepStats got = step(model, grad, optimizer, freezing);

    grad_by_hand.set_zero();
    const StepStats want = gradients(by_hand, grad_by_hand);
    const auto params = trained(by_hand.parameters(), freezing);
    const auto grads = trained(grad_by_hand.parameters(), freezing);
    const double trained_norm = norm_of(grads);
    EXPECT_EQ(got.loss, want.loss) << "step " << s;
    EXPECT_EQ(got.grad_norm, trained_norm) << "step " << s << ": the norm of the trained gradients";
    EXPECT_LT(got.grad_norm, norm_of(grad_by_hand.parameters())) << "the frozen ones are left out";
    EXPECT_GT(got.grad_norm, max_grad_norm) << "clipping scales";
    clip_grad_norm<float>(grads, max_grad_norm);
    optimizer_by_hand.step(params, read_only<float>(std::span<const Parameter<float>>(grads)), lr);
  }
  const auto now = model.parameters(), hand = by_hand.parameters();
  const auto then = start.parameters();
  std::size_t trained_count = 0;
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (freezing.frozen(now[i].name)) {
      EXPECT_TRUE(same_bits(now[i], then[i])) << now[i].name << " is frozen";
    } else {
      ++trained_count;
      EXPECT_TRUE(same_bits(now[i], hand[i])) << now[i].name;
      EXPECT_FALSE(same_bits(now[i], then[i])) << now[i].name << " trains";
    }
  }
  EXPECT_GT(trained_count, 0u);
  EXPECT_LT(trained_count, now.size());
  // AdamW keeps state for the trained weights alone, in their order
  EXPECT_EQ(optimizer.names, optimizer_by_hand.names);
  EXPECT_EQ(optimizer.names.size(), trained_count);
}

TEST(EncoderFreezing, ContrastiveStepLeavesTheFrozenTrunkAndStepsTheRest) {
  const auto batch = step_batch();
  EncoderTrace<float> trace;
  check_step_with_frozen_trunk(
      [&](MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad, AdamW<float>& optimizer,
          const EncoderFreezing& freezing) {
        return contrastive_step<float>(model, grad, optimizer, batch, step_groups, lr,
                                       max_grad_norm, trace, freezing);
      },
      [&](const MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad) {
        return contrastive_gradients<float>(model, grad, batch, step_groups, trace);
      });
}

TEST(EncoderFreezing, GradCacheStepLeavesTheFrozenTrunkAndStepsTheRest) {
  const auto batch = step_batch();
  EncoderTrace<float> trace;
  constexpr Index micro_batch = 3;
  check_step_with_frozen_trunk(
      [&](MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad, AdamW<float>& optimizer,
          const EncoderFreezing& freezing) {
        return grad_cache_step<float>(model, grad, optimizer, batch, step_groups, micro_batch, lr,
                                      max_grad_norm, trace, freezing);
      },
      [&](const MultiModalEncoder<float>& model, MultiModalEncoder<float>& grad) {
        return grad_cache_gradients<float>(model, grad, batch, step_groups, micro_batch, trace);
      });
}

// With one rank the data-parallel step is grad_cache_step bit for bit, freezing included.
TEST(EncoderFreezing, OneRankDistributedStepIsGradCacheStepWithTheFreezing) {
  const auto batch = step_batch();
  std::vector<Index> rows(batch.size());
  for (std::size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<Index>(i);
  const EncoderFreezing freezing = parse_encoder_freezing("image,trunk,logit_scale", "test");
  const MultiModalEncoder<float> start = start_model();
  MultiModalEncoder<float> want = start, got = start;
  MultiModalEncoder<float> grad(start.config);
  AdamW<float> opt_want, opt_got;
  EncoderTrace<float> trace;
  for (int s = 0; s < 2; ++s) {
    const StepStats a = grad_cache_step<float>(want, grad, opt_want, batch, step_groups, 4, lr,
                                               max_grad_norm, trace, freezing);
    const StepStats b = distributed_contrastive_step<float>(
        got, grad, opt_got, batch, rows, step_groups, Communicator::single_process(), 4, lr,
        max_grad_norm, trace, freezing);
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(a.grad_norm, b.grad_norm);
  }
  const auto x = want.parameters(), y = got.parameters();
  const auto then = start.parameters();
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(same_bits(x[i], y[i])) << x[i].name;
    if (freezing.frozen(x[i].name)) {
      EXPECT_TRUE(same_bits(y[i], then[i])) << x[i].name << " is frozen";
    }
  }
  EXPECT_EQ(got.logit_scale, start.logit_scale);
  EXPECT_EQ(opt_got.names, opt_want.names);
}

// A run that saves the trained list (weights and AdamW's moments) and resumes from it, the
// frozen weights coming from the model it started from, equals the uninterrupted run.
TEST(EncoderFreezing, CheckpointOfTheTrainedListResumesExactly) {
  const test::TempDir dir;
  const auto batch = step_batch();
  const EncoderFreezing freezing = parse_encoder_freezing("text,trunk,logit_scale", "test");
  const MultiModalEncoder<float> start = start_model();
  const nlohmann::json config = to_json(start.config);
  EncoderTrace<float> trace;
  MultiModalEncoder<float> grad(start.config);
  const auto step = [&](MultiModalEncoder<float>& model, AdamW<float>& optimizer) {
    return contrastive_step<float>(model, grad, optimizer, batch, step_groups, lr, max_grad_norm,
                                   trace, freezing).loss;
  };

  MultiModalEncoder<float> straight = start;
  AdamW<float> straight_optimizer;
  std::vector<double> straight_losses;
  for (int s = 0; s < 4; ++s) straight_losses.push_back(step(straight, straight_optimizer));

  MultiModalEncoder<float> first = start;
  AdamW<float> first_optimizer;
  for (int s = 0; s < 2; ++s) step(first, first_optimizer);
  const auto saved = trained(std::as_const(first).parameters(), freezing);
  save_checkpoint<float>(dir / "run.ckpt", saved, config, first_optimizer, {2, {}});
  EXPECT_EQ(first_optimizer.state().tensors.size(), 2 * saved.size()) << "moments of the trained";

  // the whole model's list is refused: the checkpoint holds no moments for the frozen weights
  MultiModalEncoder<float> resumed = start;
  AdamW<float> resumed_optimizer;
  TrainingPosition position;
  EXPECT_THAT(error_of([&] {
                load_checkpoint<float>(dir / "run.ckpt", resumed, resumed_optimizer, position);
              }),
              HasSubstr("missing tensor 'model.text.token_embed.weight'"));
  load_checkpoint<float>(dir / "run.ckpt", trained(resumed.parameters(), freezing), config,
                         resumed_optimizer, position);
  EXPECT_EQ(position.step, 2);
  for (int s = 2; s < 4; ++s) {
    EXPECT_EQ(step(resumed, resumed_optimizer), straight_losses[static_cast<std::size_t>(s)])
        << "step " << s;
  }
  const auto a = straight.parameters(), b = resumed.parameters();
  const auto then = start.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bits(a[i], b[i])) << a[i].name;
    EXPECT_EQ(same_bits(a[i], then[i]), freezing.frozen(a[i].name)) << a[i].name;
  }
  EXPECT_LT(straight_losses.back(), straight_losses.front()) << "it trains";
}

}  // namespace test_encoder_freezing
}  // namespace tessera
