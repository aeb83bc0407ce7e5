// Training the pretrained towers (issue 18, fine-tuning): the attention's add_bias_kv backward
// against torch.nn.MultiheadAttention, every weight's gradient of every tower kind against the
// PyTorch twins' autograd (tests/reference/make_tower_grad_fixtures.py: hf_clip text + image
// and video, open_clip, ImageBind's image anchor with audio and text), the traced forward
// bitwise equal to the plain one, freezing (no gradient, trace or optimizer state for frozen
// parts; frozen weights unchanged; LiT moves only the projections), tower_step lowering the
// loss, and the gradients bitwise the same on one and two threads.

#include <tessera/core/parallel.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/tower_freezing.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/train/grad_check.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/tower_step.hpp>

#include "pretrained_fixture.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace tessera {
namespace test_tower_backward {

using ::testing::HasSubstr;
using test::error_of;
using test::pretrained_dir;
using M = Matrix<double>;
using V = Vector<double>;

// Gradients against the float64 twin: the same math in another order, through two blocks and
// InfoNCE; every fixture passed at a tenth of these (1e-14 + 1e-11 |ref|).
constexpr double grad_atol = 1e-13, grad_rtol = 1e-10;
// Losses and embeddings against the twin (O(1) values; they agree to about 1e-15).
constexpr double value_atol = 1e-12;
// What weight gradients hold before backward, which must accumulate onto it.
constexpr double accumulated_start = 0.375;

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// Sample `name` ("text.0", "image.1", "video.0", "audio.1") of a pretrained fixture's cases.
template <class Scalar>
Sample<Scalar> read_sample(const SafetensorsFile& file, const std::string& name) {
  Sample<Scalar> s;
  const std::string m = name.substr(0, name.find('.'));
  if (m == "text") {
    s.text = file.read<std::int64_t>(name + ".ids");
  } else if (m == "image") {
    const auto& shape = file.info(name + ".pixels").shape;
    const auto values = file.read<Scalar>(name + ".pixels");
    Tensor3<Scalar> image(shape[0], shape[1], shape[2]);
    std::copy(values.begin(), values.end(), image.data());
    s.image = std::move(image);
  } else if (m == "video") {
    const auto& shape = file.info(name + ".frames").shape;
    const auto values = file.read<Scalar>(name + ".frames");
    Tensor4<Scalar> video(shape[0], shape[1], shape[2], shape[3]);
    std::copy(values.begin(), values.end(), video.data());
    s.video = std::move(video);
  } else {
    s.audio = file.read_matrix<Scalar>(name + ".features");
  }
  return s;
}

// A gradient fixture of tests/data/tower_grad with its model, batch and groups.
template <class Scalar>
struct GradCase {
  test::Fixture fixture;
  TowerModel<Scalar> model;
  std::vector<Sample<Scalar>> samples;
  std::vector<PairGroup> groups;

  explicit GradCase(const std::string& kind)
      : fixture("tower_grad/" + kind + ".safetensors"),
        model(load_tower_model<Scalar>(pretrained_dir(kind) / "model")) {
    model.logit_scale = static_cast<Scalar>(fixture.scalar<double>("logit_scale"));
    const auto cases = SafetensorsFile::open(pretrained_dir(kind) / "cases.safetensors");
    for (const auto& name : split(fixture.meta("samples"))) {
      samples.push_back(read_sample<Scalar>(cases, name));
    }
    const auto g = fixture.ints("groups");
    for (std::size_t i = 0; i + 2 < g.size(); i += 3) {
      groups.push_back({g[i], g[i + 1], g[i + 2], 1.0});
    }
  }
};

// Checks gradient `g` of parameter `name` against the fixture: whole, or its summaries
// (make_tower_grad_fixtures.py: sum, norm, weighted sum, 64 samples).
::testing::AssertionResult matches_fixture(const test::Fixture& f, const Parameter<double>& g) {
  const Eigen::Map<const V> flat(g.data, static_cast<Index>(g.size()));
  const std::string key = "grad." + g.name;
  if (f.has(key)) {
    const V expected = f.vector<double>(key);
    return test::all_close(flat, expected, grad_atol, grad_rtol);
  }
  if (!f.has(key + ".sum")) return ::testing::AssertionFailure() << "no fixture for " << g.name;
  const Index n = flat.size();
  double weighted = 0;
  for (Index j = 0; j < n; ++j) weighted += flat[j] * static_cast<double>((37 * j) % 101 - 50);
  V samples(64);
  for (Index k = 0; k < 64; ++k) samples[k] = flat[k * n / 64];
  V got(3), expected(3);
  got << flat.sum(), flat.norm(), weighted;
  expected << f.scalar<double>(key + ".sum"), f.scalar<double>(key + ".norm"),
      f.scalar<double>(key + ".weighted");
  // the sums round at most n times the largest term (weights up to 50), at double's 1.1e-16
  const double sum_atol = 1e-15 * static_cast<double>(n) * 50 * flat.cwiseAbs().maxCoeff();
  auto summary = test::all_close(got, expected, grad_atol + sum_atol, grad_rtol);
  if (!summary) return summary << " (sum, norm, weighted sum)";
  return test::all_close(samples, f.vector<double>(key + ".sample"), grad_atol, grad_rtol);
}

// ---- the attention layer: add_bias_kv backward against torch.nn.MultiheadAttention ------------

TEST(TowerBackward, AttentionBiasKvAgainstTorch) {
  const test::Fixture f("tower_grad/attention_bias_kv.safetensors");
  const M x = f.matrix<double>("x"), d_out = f.matrix<double>("d_out");
  const Index d = x.cols();
  nn::MultiHeadAttention<double> attn(d, std::stoi(f.meta("heads")));
  // the layer's four projections, by name
  const auto linears = [](nn::MultiHeadAttention<double>& a) {
    return std::vector<std::pair<std::string, nn::Linear<double>*>>{
        {"q_proj", &a.q_proj}, {"k_proj", &a.k_proj}, {"v_proj", &a.v_proj},
        {"out_proj", &a.out_proj}};
  };
  for (auto [name, linear] : linears(attn)) {
    linear->weight = f.matrix<double>(name + ".weight");
    linear->bias = f.vector<double>(name + ".bias");
  }
  attn.bias_k = f.vector<double>("bias_k").transpose();
  attn.bias_v = f.vector<double>("bias_v").transpose();
  // two samples packed back to back, the second causal (the metadata's lengths)
  const auto lengths = split(f.meta("lengths"));
  ASSERT_EQ(lengths.size(), 2u);
  const Index first = std::stoi(lengths[0]), second = std::stoi(lengths[1]);
  auto segments = nn::AttentionSegments::packed({0, first, first + second});
  segments.set_causal(1, first, first + second);

  M y(x.rows(), d);
  nn::MultiHeadAttention<double>::Saved saved;
  attn.forward(y, x, segments, nullptr, nullptr, &saved);
  EXPECT_TRUE(test::all_close(y, f.matrix<double>("y"), grad_atol, grad_rtol));

  nn::MultiHeadAttention<double> grad = attn;  // this layer's shapes, pre-filled
  for (auto [name, l] : linears(grad)) {
    l->weight.setConstant(accumulated_start);
    l->bias.setConstant(accumulated_start);
  }
  grad.bias_k.setConstant(accumulated_start);
  grad.bias_v.setConstant(accumulated_start);
  M d_x = M::Constant(x.rows(), d, std::nan(""));
  attn.backward(d_x, grad, d_out, x, segments, nullptr, nullptr, saved);
  EXPECT_TRUE(test::all_close(d_x, f.matrix<double>("d_x"), grad_atol, grad_rtol)) << "d_x";
  const auto accumulated = [](const auto& g) { return (g.array() - accumulated_start).matrix(); };
  for (auto [name, l] : linears(grad)) {
    EXPECT_TRUE(test::all_close(accumulated(l->weight),
                                f.matrix<double>("grad." + name + ".weight"), grad_atol, grad_rtol))
        << name;
    EXPECT_TRUE(test::all_close(accumulated(l->bias), f.vector<double>("grad." + name + ".bias"),
                                grad_atol, grad_rtol))
        << name;
  }
  EXPECT_TRUE(test::all_close(accumulated(grad.bias_k).transpose(), f.vector<double>("grad.bias_k"),
                              grad_atol, grad_rtol));
  EXPECT_TRUE(test::all_close(accumulated(grad.bias_v).transpose(), f.vector<double>("grad.bias_v"),
                              grad_atol, grad_rtol));

  // a gradient without bias_k is refused, naming the tensors
  nn::MultiHeadAttention<double> no_bias = grad;
  no_bias.bias_k.resize(0);
  EXPECT_THAT(error_of([&] {
                attn.backward(d_x, no_bias, d_out, x, segments, nullptr, nullptr, saved);
              }),
              HasSubstr("bias_k"));
}

// ---- every weight of every tower kind against the twins ---------------------------------------

class TowerGradFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(TowerGradFixture, EveryWeightAgainstTorch) {
  GradCase<double> c(GetParam());
  const TowerFreezing all;  // everything trains
  TowerGradients<double> grad(c.model.config, all);
  TowerModelTrace<double> trace;
  const StepStats stats =
      tower_contrastive_gradients<double>(c.model, grad, c.samples, c.groups, trace);
  EXPECT_NEAR(stats.loss, c.fixture.scalar<double>("loss"), value_atol);
  EXPECT_NEAR(grad.logit_scale, c.fixture.scalar<double>("d_logit_scale"), value_atol);

  // every parameter of the model has its gradient in the fixture, in the same order
  const auto params = grad.parameters();
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.name);
  EXPECT_EQ(names, split(c.fixture.meta("names")));
  const auto model_params = c.model.parameters();
  ASSERT_EQ(model_params.size(), params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(model_params[i].name, params[i].name);
    EXPECT_EQ(model_params[i].shape, params[i].shape);
    if (params[i].name == "logit_scale") continue;
    EXPECT_TRUE(matches_fixture(c.fixture, params[i])) << params[i].name;
  }
}

TEST_P(TowerGradFixture, TracedForwardIsThePlainForward) {
  GradCase<double> c(GetParam());
  const auto plain = c.model.encode_batch(c.samples);
  const M embeddings = c.fixture.matrix<double>("embeddings");
  for (const auto& freezing : {TowerFreezing{}, parse_tower_freezing("backbones", "test"),
                               parse_tower_freezing("image", "test")}) {
    TowerModelTrace<double> trace;
    const auto traced = c.model.encode_batch(c.samples, freezing, trace);
    ASSERT_EQ(traced.size(), plain.size());
    for (std::size_t i = 0; i < plain.size(); ++i) {
      EXPECT_TRUE(traced[i].embedding == plain[i].embedding) << "sample " << i;
      EXPECT_TRUE(traced[i].hidden == plain[i].hidden) << "sample " << i;
      EXPECT_TRUE(test::all_close(plain[i].embedding.transpose(),
                                  embeddings.row(static_cast<Index>(i)), value_atol, 0));
    }
  }
}

// A tower whose projection alone trains gets the full run's projection gradient; one frozen
// gets nothing; the others' gradients do not change.
TEST_P(TowerGradFixture, FreezingKeepsTheTrainedGradients) {
  GradCase<double> c(GetParam());
  const TowerFreezing freezing = parse_tower_freezing("image,text.backbone,logit_scale", "test");
  TowerGradients<double> grad(c.model.config, freezing);
  EXPECT_EQ(grad.towers.count(Modality::image), 0u);
  TowerModelTrace<double> trace;
  tower_contrastive_gradients<double>(c.model, grad, c.samples, c.groups, trace);
  EXPECT_EQ(trace.towers.count(Modality::image), 0u);
  const auto params = grad.parameters();
  const auto model_params = c.model.parameters(freezing);
  ASSERT_EQ(params.size(), model_params.size());
  std::size_t text_params = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].name;
    EXPECT_EQ(model_params[i].name, name);
    EXPECT_EQ(name.rfind("image.", 0), std::string::npos) << name;
    EXPECT_NE(name, "logit_scale");
    if (name.rfind("text.", 0) == 0) {
      ++text_params;
      EXPECT_EQ(name.rfind("text.proj.", 0), 0u) << name;
    }
    EXPECT_TRUE(matches_fixture(c.fixture, params[i])) << name;
  }
  EXPECT_EQ(text_params, 1u);  // text.proj.weight: no family here has a projection bias
  // the projection-only text tower's trace: the pooled rows, not the blocks
  const auto& text = trace.towers.at(Modality::text).trace;
  EXPECT_TRUE(text.layers.empty() && text.layer_inputs.empty() && text.clips.empty());
  EXPECT_EQ(text.bytes(), static_cast<std::size_t>(text.pooled.size() + text.embeddings.size() +
                                                   text.norms.size()) * sizeof(double));
}

INSTANTIATE_TEST_SUITE_P(Kinds, TowerGradFixture,
                         ::testing::Values("hf_clip", "open_clip", "imagebind"));

// ---- the options no fixture family has, against finite differences --------------------------

// A tiny model with every tower option at once: text with ln_pre, first-eos pooling and a
// projection bias; an image tower of 2-frame clips (video) with a patch bias; audio with
// overlapping patches, a stem norm, add_bias_kv and 2 clips.
TowerModel<double> every_option_model() {
  TowerModelConfig c;
  c.family = "test";
  c.embed_dim = 5;
  c.video = true;
  c.video_clip_frames = 2;
  TowerConfig base;
  base.width = 8;
  base.layers = 2;
  base.heads = 2;
  base.ffn_dim = 12;
  base.embed_dim = 5;
  base.proj_bias = true;
  base.pre_norm = true;
  TowerConfig text = base;
  text.modality = Modality::text;
  text.activation = Activation::gelu_tanh;
  text.causal = true;
  text.pooling = TowerPooling::eos_first;
  text.eos_token_id = 5;
  text.vocab_size = 11;
  text.context_length = 7;
  text.cls_token = false;
  TowerConfig image = base;
  image.modality = Modality::image;
  image.activation = Activation::quick_gelu;
  image.height = image.width_in = 8;
  image.kernel = image.stride = 4;
  image.clip_frames = 2;
  image.conv_bias = true;
  TowerConfig audio = base;
  audio.modality = Modality::audio;
  audio.pre_norm = false;
  audio.channels = 1;
  audio.height = 7;
  audio.width_in = 10;
  audio.kernel = 4;
  audio.stride = 3;
  audio.conv_bias = true;
  audio.stem_norm = true;
  audio.bias_kv = true;
  c.towers = {{Modality::text, text}, {Modality::image, image}, {Modality::audio, audio}};
  TowerModel<double> model(c, "test");
  std::mt19937 gen(18);
  std::normal_distribution<double> normal(0, 1);
  for (auto& p : model.parameters()) {
    for (std::int64_t i = 0; i < p.size(); ++i) {
      const double z = normal(gen);
      p.data[i] = p.role == WeightRole::one ? 1 + 0.1 * z : p.role == WeightRole::zero ? 0.1 * z
                                                                                      : 0.4 * z;
    }
  }
  model.logit_scale = 1.0;
  return model;
}

TEST(TowerBackward, EveryOptionAgainstFiniteDifferences) {
  TowerModel<double> model = every_option_model();
  std::mt19937 gen(7);
  std::normal_distribution<double> normal(0, 1);
  std::vector<Sample<double>> samples(6);
  samples[0].text = std::vector<std::int64_t>{1, 9, 5};        // pooled at the first 5
  samples[1].text = std::vector<std::int64_t>{2, 10, 5, 3, 5};
  Tensor3<double> image(3, 8, 8);
  Tensor4<double> video(3, 3, 8, 8);  // 2 clips, the last frame repeated
  for (Index i = 0; i < image.size(); ++i) image.data()[i] = normal(gen);
  for (Index i = 0; i < video.size(); ++i) video.data()[i] = normal(gen);
  samples[2].image = image;
  samples[3].video = video;
  samples[4].audio = M::NullaryExpr(7, 10, [&] { return normal(gen); });
  samples[5].audio = M::NullaryExpr(7, 20, [&] { return normal(gen); });  // 2 clips
  const std::vector<PairGroup> groups{{0, 2, 2, 1.0}, {2, 4, 2, 1.0}};

  TowerGradients<double> grad(model.config, TowerFreezing{});
  TowerModelTrace<double> trace;
  tower_contrastive_gradients<double>(model, grad, samples, groups, trace);
  const auto loss = [&] {
    const auto encoded = model.encode_batch(samples);
    M e(static_cast<Index>(encoded.size()), model.embed_dim());
    for (std::size_t i = 0; i < encoded.size(); ++i) {
      e.row(static_cast<Index>(i)) = encoded[i].embedding;
    }
    double total = 0;
    for (const auto& g : groups) {
      total += info_nce_loss<double>(e.middleRows(g.a_first, g.count),
                                     e.middleRows(g.b_first, g.count), model.logit_scale);
    }
    return total;
  };
  std::vector<GradCheckTensor> tensors;
  const auto values = model.parameters();
  const auto grads = grad.parameters();
  ASSERT_EQ(values.size(), grads.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    tensors.push_back({values[i].name, values[i].data, grads[i].data, values[i].size()});
  }
  const GradCheckReport report = check_gradients(loss, tensors);
  EXPECT_TRUE(report.ok) << report.worst << " (ratio " << report.worst_ratio << ")";
  EXPECT_GT(report.checked, 1000);
}

// ---- freezing: memory, optimizer state, what moves ---------------------------------------------

TEST(TowerBackward, FrozenPartsHoldNoMemoryAndDoNotMove) {
  GradCase<double> c("imagebind");
  // ImageBind-style binding: audio (and text) learn against the frozen image anchor
  const TowerFreezing freezing = parse_tower_freezing("image", "test");
  TowerGradients<double> grad(c.model.config, freezing);
  TowerGradients<double> everything(c.model.config, TowerFreezing{});
  std::size_t image_values = 0;
  const auto& image = c.model.towers.at(Modality::image);
  for (const auto& p : image.parameters("image.", TowerTraining::whole)) {
    image_values += static_cast<std::size_t>(p.size());
  }
  EXPECT_EQ(grad.bytes() + image_values * sizeof(double), everything.bytes());

  const TowerModel<double> before = c.model;
  AdamW<double> optimizer(AdamWOptions{.lr = 1e-3});
  TowerModelTrace<double> trace;
  std::vector<double> losses;
  for (int step = 0; step < 4; ++step) {
    losses.push_back(tower_step<double>(c.model, grad, optimizer, c.samples, c.groups, 1e-3, 1.0,
                                        trace).loss);
  }
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_EQ(optimizer.names.size(), c.model.parameters(freezing).size());
  for (const auto& name : optimizer.names) EXPECT_EQ(name.rfind("image.", 0), std::string::npos);
  // the image tower is bitwise what it was, every other tower moved
  const auto now = c.model.parameters();
  const auto then = before.parameters();
  for (std::size_t i = 0; i < now.size(); ++i) {
    const Eigen::Map<const V> a(now[i].data, now[i].size()), b(then[i].data, then[i].size());
    if (now[i].name.rfind("image.", 0) == 0) {
      EXPECT_TRUE(a == b) << now[i].name;
    } else if (now[i].name.find("proj.weight") != std::string::npos) {
      EXPECT_FALSE(a == b) << now[i].name;
    }
  }
}

TEST(TowerBackward, LitMovesOnlyTheProjections) {
  GradCase<double> c("hf_clip");
  const TowerFreezing lit = parse_tower_freezing("backbones,logit_scale", "test");
  TowerGradients<double> grad(c.model.config, lit);
  const std::size_t projections = c.model.config.towers.at(Modality::text).embed_dim *
                                  (c.model.config.towers.at(Modality::text).width +
                                   c.model.config.towers.at(Modality::image).width);
  EXPECT_EQ(grad.bytes(), projections * sizeof(double));
  const TowerModel<double> before = c.model;
  AdamW<double> optimizer;
  TowerModelTrace<double> trace;
  const auto step = [&] {
    return tower_step<double>(c.model, grad, optimizer, c.samples, c.groups, 1e-2, 0, trace).loss;
  };
  const double first = step();
  double last = first;
  for (int i = 0; i < 3; ++i) last = step();
  EXPECT_LT(last, first);
  EXPECT_EQ(c.model.logit_scale, before.logit_scale);
  const auto now = c.model.parameters();
  const auto then = before.parameters();
  for (std::size_t i = 0; i < now.size(); ++i) {
    const Eigen::Map<const V> a(now[i].data, now[i].size()), b(then[i].data, then[i].size());
    const bool projection = now[i].name == "text.proj.weight" || now[i].name == "image.proj.weight";
    EXPECT_EQ(a == b, !projection) << now[i].name;
  }
}

TEST(TowerBackward, FreezingSpecs) {
  const TowerFreezing lit = parse_tower_freezing("image", "--freeze");
  EXPECT_EQ(lit.of(Modality::image), TowerTraining::frozen);
  EXPECT_EQ(lit.of(Modality::video), TowerTraining::frozen);
  EXPECT_EQ(lit.of(Modality::text), TowerTraining::whole);
  EXPECT_TRUE(lit.logit_scale);
  const TowerFreezing heads = parse_tower_freezing("backbones,audio,logit_scale", "--freeze");
  EXPECT_EQ(heads.of(Modality::text), TowerTraining::projection);
  EXPECT_EQ(heads.of(Modality::audio), TowerTraining::frozen);
  EXPECT_FALSE(heads.logit_scale);
  EXPECT_EQ(parse_tower_freezing("video.backbone", "x").of(Modality::image),
            TowerTraining::projection);
  EXPECT_EQ(parse_tower_freezing("", "x"), TowerFreezing{});
  EXPECT_THAT(error_of([] { parse_tower_freezing("image,depth", "--freeze"); }),
              HasSubstr("--freeze: cannot freeze \"depth\""));
  EXPECT_THAT(error_of([] { parse_tower_freezing("image.head", "--freeze"); }),
              HasSubstr("\"image.head\""));

  const auto model = load_tower_model<float>(pretrained_dir("hf_clip") / "model");
  const auto gradients = [&](const char* spec) {
    TowerGradients<float>(model.config, parse_tower_freezing(spec, "x"));
  };
  EXPECT_THAT(error_of([&] { gradients("audio"); }), HasSubstr("no audio tower to freeze"));
  EXPECT_THAT(error_of([&] { gradients("towers,logit_scale"); }), HasSubstr("nothing to train"));
  // only logit_scale trains: no tower gradient at all
  TowerGradients<float> scale_only(model.config, parse_tower_freezing("towers", "x"));
  EXPECT_TRUE(scale_only.towers.empty());
  ASSERT_EQ(scale_only.parameters().size(), 1u);
  EXPECT_EQ(scale_only.parameters()[0].name, "logit_scale");
}

// A trace and a gradient holder that disagree are refused, naming the tower.
TEST(TowerBackward, MismatchedGradientsAreRefused) {
  GradCase<double> c("open_clip");
  TowerModelTrace<double> trace;
  c.model.encode_batch(c.samples, TowerFreezing{}, trace);
  TowerGradients<double> lit(c.model.config, parse_tower_freezing("backbones", "x"));
  const M d = M::Zero(static_cast<Index>(c.samples.size()), c.model.embed_dim());
  EXPECT_THAT(error_of([&] { c.model.backward(lit, d, trace); }),
              HasSubstr("tower trains whole in the trace, but grad holds projection of it"));
  TowerGradients<double> all(c.model.config, TowerFreezing{});
  EXPECT_THAT(error_of([&] { c.model.backward(all, M::Zero(2, c.model.embed_dim()), trace); }),
              HasSubstr("one row per sample"));
}

// ---- determinism ------------------------------------------------------------------------------

TEST(TowerBackward, GradientsDoNotDependOnThreads) {
  GradCase<double> c("imagebind");
  std::vector<std::vector<double>> runs;
  for (int threads : {1, 2}) {
    ScopedThreads scoped(threads);
    TowerGradients<double> grad(c.model.config, TowerFreezing{});
    TowerModelTrace<double> trace;
    tower_contrastive_gradients<double>(c.model, grad, c.samples, c.groups, trace);
    std::vector<double> all;
    for (const auto& p : grad.parameters()) all.insert(all.end(), p.data, p.data + p.size());
    runs.push_back(std::move(all));
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "1 vs 2 threads";
}

// float trains too (what tessera-train runs): the loss goes down on the CLIP fixture
TEST(TowerBackward, FloatStepsLowerTheLoss) {
  GradCase<float> c("open_clip");
  TowerGradients<float> grad(c.model.config, parse_tower_freezing("image", "x"));
  AdamW<float> optimizer;
  TowerModelTrace<float> trace;
  const auto step = [&] {
    return tower_step<float>(c.model, grad, optimizer, c.samples, c.groups, 1e-3, 1.0, trace).loss;
  };
  const double first = step();
  double last = first;
  for (int i = 0; i < 4; ++i) last = step();
  EXPECT_LT(last, first);
}

}  // namespace test_tower_backward
}  // namespace tessera
