// The optimizer of include/tessera/train/optimizer.hpp: AdamW, clip_grad_norm and the
// learning-rate schedule against torch.optim.AdamW and torch.nn.utils.clip_grad_norm_, the
// checks made before a step changes anything, and a bitwise-exact state round trip.
// Fixture: tests/reference/make_optimizer_fixtures.py -> tests/data/train/adamw.safetensors.

#include <tessera/train/optimizer.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace tessera {
namespace test_optimizer {

using ::testing::HasSubstr;

// Tolerances of the fixture comparison (|a - r| <= atol + rtol*|r|). Double follows torch's
// float64 run to rounding; float is checked against torch's float32 run of the same inputs
// (tight) and against the float64 run (loose: float32 rounding over ten steps).
constexpr double double_atol = 1e-13, double_rtol = 1e-12;
constexpr double float_vs_torch_float_atol = 1e-7, float_vs_torch_float_rtol = 1e-6;
constexpr double float_vs_double_atol = 1e-6, float_vs_double_rtol = 1e-5;

// Named tensors that own their storage, like a model's weights or gradients.
template <class Scalar>
struct Tensors {
  std::vector<std::string> names;
  std::vector<std::vector<std::int64_t>> shapes;
  std::vector<Vector<Scalar>> values;  // each flat [size], row-major

  void add(std::string name, std::vector<std::int64_t> shape, Vector<Scalar> value) {
    names.push_back(std::move(name));
    shapes.push_back(std::move(shape));
    values.push_back(std::move(value));
  }
  std::vector<Parameter<Scalar>> views() {
    std::vector<Parameter<Scalar>> out;
    for (std::size_t i = 0; i < names.size(); ++i) {
      out.push_back({names[i], values[i].data(), shapes[i], {}});
    }
    return out;
  }
  std::vector<Parameter<const Scalar>> const_views() const {
    std::vector<Parameter<const Scalar>> out;
    for (std::size_t i = 0; i < names.size(); ++i) {
      out.push_back({names[i], values[i].data(), shapes[i], {}});
    }
    return out;
  }
};

// The fixture's tensors `<prefix><name>` for every parameter name, in step order.
template <class Scalar>
Tensors<Scalar> read_tensors(const test::Fixture& f, const std::string& prefix) {
  Tensors<Scalar> out;
  std::string list = f.meta("params");
  for (std::size_t begin = 0; begin <= list.size();) {
    const std::size_t end = std::min(list.find(',', begin), list.size());
    const std::string name = list.substr(begin, end - begin);
    out.add(name, f.file.info(prefix + name).shape, f.vector<Scalar>(prefix + name));
    begin = end + 1;
  }
  return out;
}

test::Fixture adamw_fixture() { return test::Fixture("train/adamw.safetensors"); }

AdamWOptions fixture_options(const test::Fixture& f) {
  AdamWOptions options;
  options.beta1 = std::stod(f.meta("beta1"));
  options.beta2 = std::stod(f.meta("beta2"));
  options.eps = std::stod(f.meta("eps"));
  options.weight_decay = std::stod(f.meta("weight_decay"));
  return options;
}

LearningRateSchedule fixture_schedule(const test::Fixture& f) {
  return {std::stod(f.meta("peak_lr")), std::stoll(f.meta("warmup_steps")),
          std::stoll(f.meta("total_steps")), std::stod(f.meta("min_lr"))};
}

// Small tensors of three ranks with fixed values (row-major).
template <class Scalar>
Tensors<Scalar> small_params() {
  Tensors<Scalar> t;
  Vector<Scalar> w(6), b(3), s(1);
  w << Scalar(0.5), Scalar(-0.25), Scalar(0.125), Scalar(1), Scalar(-1.5), Scalar(0.75);
  b << Scalar(0.1), Scalar(-0.2), Scalar(0.3);
  s << Scalar(2.5);
  t.add("layer.weight", {2, 3}, w);
  t.add("layer.bias", {3}, b);
  t.add("logit_scale", {}, s);
  return t;
}

// Gradients for small_params, different at every step.
template <class Scalar>
Tensors<Scalar> small_grads(int step) {
  Tensors<Scalar> g = small_params<Scalar>();
  for (auto& v : g.values) {
    for (Index j = 0; j < v.size(); ++j) {
      v[j] = static_cast<Scalar>(std::sin(1.7 * (step + 1) + 0.9 * static_cast<double>(j)));
    }
  }
  return g;
}

template <class Scalar>
bool bitwise_equal(const Tensors<Scalar>& a, const Tensors<Scalar>& b) {
  if (a.values.size() != b.values.size()) return false;
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    if (a.values[i].size() != b.values[i].size()) return false;
    for (Index j = 0; j < a.values[i].size(); ++j) {
      // == is bitwise for these finite values (no NaN, and no -0 where +0 was expected)
      if (!(a.values[i][j] == b.values[i][j]) ||
          std::signbit(a.values[i][j]) != std::signbit(b.values[i][j])) {
        return false;
      }
    }
  }
  return true;
}

template <class Scalar>
class OptimizerTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptimizerTest, Scalars);

// Ten steps of clip_grad_norm then AdamW with the schedule's rate, as the fixture ran them
// (torch's two groups, weight decay 0.1 on proj.weight only, are the default `decays`).
TYPED_TEST(OptimizerTest, MatchesTorchAdamWWithClippingAndSchedule) {
  using Scalar = TypeParam;
  const test::Fixture f = adamw_fixture();
  const int steps = std::stoi(f.meta("steps"));
  const double max_norm = std::stod(f.meta("max_norm"));
  const LearningRateSchedule schedule = fixture_schedule(f);
  const Vector<double> lr = f.vector<double>("lr");
  const Vector<double> total_norm = f.vector<double>("total_norm");
  const Vector<double> total_norm_f32 = f.vector<double>("f32.total_norm");

  Tensors<Scalar> params = read_tensors<Scalar>(f, "initial.");
  AdamW<Scalar> optimizer(fixture_options(f));
  int clipped = 0;
  for (int k = 0; k < steps; ++k) {
    SCOPED_TRACE("step " + std::to_string(k));
    Tensors<Scalar> grads = read_tensors<Scalar>(f, "grad." + std::to_string(k) + ".");
    const auto grad_views = grads.views();
    const double norm = clip_grad_norm<Scalar>(grad_views, max_norm);
    clipped += norm > max_norm ? 1 : 0;
    EXPECT_DOUBLE_EQ(schedule.at(k), lr[k]);
    optimizer.step(params.views(), read_only<Scalar>(grad_views), schedule.at(k));
    EXPECT_EQ(optimizer.steps, k + 1);

    const std::string after = "after." + std::to_string(k) + ".";
    const Tensors<double> expected = read_tensors<double>(f, after);
    if constexpr (std::is_same_v<Scalar, double>) {
      EXPECT_NEAR(norm, total_norm[k], double_atol + double_rtol * total_norm[k]);
      for (std::size_t i = 0; i < expected.names.size(); ++i) {
        EXPECT_TRUE(test::all_close(params.values[i], expected.values[i], double_atol,
                                    double_rtol))
            << after << expected.names[i];
      }
    } else {
      EXPECT_NEAR(norm, total_norm_f32[k], 1e-6 * total_norm_f32[k]);
      const Tensors<double> expected_f32 = read_tensors<double>(f, "f32." + after);
      for (std::size_t i = 0; i < expected.names.size(); ++i) {
        EXPECT_TRUE(test::all_close(params.values[i], expected_f32.values[i],
                                    float_vs_torch_float_atol, float_vs_torch_float_rtol))
            << "f32." << after << expected.names[i];
        EXPECT_TRUE(test::all_close(params.values[i], expected.values[i], float_vs_double_atol,
                                    float_vs_double_rtol))
            << after << expected.names[i];
      }
    }
  }
  // The fixture clips some steps and not others, so both branches were compared.
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, steps);
}

TYPED_TEST(OptimizerTest, StartedAdamWRefusesAnotherTensorList) {
  using Scalar = TypeParam;
  Tensors<Scalar> params = small_params<Scalar>();
  const Tensors<Scalar> grads = small_grads<Scalar>(0);
  AdamW<Scalar> optimizer;
  optimizer.step(params.views(), grads.const_views(), 1e-3);

  // One tensor fewer.
  {
    auto p = params.views();
    auto g = grads.const_views();
    p.pop_back();
    g.pop_back();
    EXPECT_THAT(test::error_of([&] { optimizer.step(p, g, 1e-3); }),
                HasSubstr("2 parameters, but the previous steps had 3"));
  }
  // Another name in one place (the same name in params and grads).
  {
    auto p = params.views();
    auto g = grads.const_views();
    p[1].name = g[1].name = "other.bias";
    EXPECT_THAT(test::error_of([&] { optimizer.step(p, g, 1e-3); }),
                HasSubstr("'other.bias', but the previous steps had 'layer.bias'"));
  }
  // Another size.
  {
    Tensors<Scalar> p2 = params, g2 = grads;
    p2.values[1].resize(4);
    p2.values[1].setZero();
    p2.shapes[1] = {4};
    g2.values[1] = Vector<Scalar>::Ones(4);
    g2.shapes[1] = {4};
    EXPECT_THAT(test::error_of([&] { optimizer.step(p2.views(), g2.const_views(), 1e-3); }),
                HasSubstr("'layer.bias' has 4 elements, but the previous steps had 3"));
  }
  // params and grads that do not match each other.
  {
    auto g = grads.const_views();
    std::swap(g[0], g[1]);
    EXPECT_THAT(test::error_of([&] { optimizer.step(params.views(), g, 1e-3); }),
                HasSubstr("parameter 0 is 'layer.weight' but gradient 0 is 'layer.bias'"));
  }
  EXPECT_EQ(optimizer.steps, 1);
}

TYPED_TEST(OptimizerTest, FirstStepChecksTheLists) {
  using Scalar = TypeParam;
  Tensors<Scalar> params = small_params<Scalar>();
  Tensors<Scalar> grads = small_grads<Scalar>(0);
  AdamW<Scalar> optimizer;
  auto g = grads.const_views();
  g.pop_back();
  EXPECT_THAT(test::error_of([&] { optimizer.step(params.views(), g, 1e-3); }),
              HasSubstr("3 parameters but 2 gradients"));
  grads.values[2] = Vector<Scalar>::Ones(2);
  grads.shapes[2] = {2};
  EXPECT_THAT(test::error_of([&] { optimizer.step(params.views(), grads.const_views(), 1e-3); }),
              HasSubstr("'logit_scale' has 1 elements but its gradient has 2"));
  Tensors<Scalar> twice = small_params<Scalar>();
  twice.names[1] = twice.names[0];
  const Tensors<Scalar> twice_grads = [&] {
    Tensors<Scalar> t = small_grads<Scalar>(0);
    t.names[1] = t.names[0];
    return t;
  }();
  EXPECT_THAT(
      test::error_of([&] { optimizer.step(twice.views(), twice_grads.const_views(), 1e-3); }),
      HasSubstr("'layer.weight' appears twice"));
  EXPECT_THAT(test::error_of([&] {
                optimizer.step(params.views(), small_grads<Scalar>(0).const_views(), -1.0);
              }),
              HasSubstr("lr is -1"));
  EXPECT_EQ(optimizer.steps, 0);
  EXPECT_TRUE(optimizer.exp_avg.empty());
  EXPECT_THROW(AdamW<Scalar>(AdamWOptions{.beta2 = 1.0}), Error);
  EXPECT_THROW(AdamW<Scalar>(AdamWOptions{.weight_decay = -0.1}), Error);
}

TYPED_TEST(OptimizerTest, NonFiniteGradientChangesNothing) {
  using Scalar = TypeParam;
  Tensors<Scalar> params = small_params<Scalar>();
  AdamW<Scalar> optimizer;
  optimizer.step(params.views(), small_grads<Scalar>(0).const_views(), 1e-2);
  const Tensors<Scalar> params_before = params;
  const AdamWState<Scalar> state_before = optimizer.state();

  for (const Scalar bad : {std::numeric_limits<Scalar>::quiet_NaN(),
                           std::numeric_limits<Scalar>::infinity()}) {
    Tensors<Scalar> grads = small_grads<Scalar>(1);
    grads.values[1][2] = bad;  // the last element of the second tensor: the first is valid
    EXPECT_THAT(test::error_of([&] { optimizer.step(params.views(), grads.const_views(), 1e-2); }),
                HasSubstr("the gradient of 'layer.bias' holds"));
    EXPECT_TRUE(bitwise_equal(params, params_before));
    EXPECT_EQ(optimizer.steps, 1);
    const AdamWState<Scalar> state = optimizer.state();
    for (std::size_t i = 0; i < state.tensors.size(); ++i) {
      EXPECT_EQ(state.tensors[i].second, state_before.tensors[i].second) << state.tensors[i].first;
    }
  }
}

TYPED_TEST(OptimizerTest, DecayFollowsDecays) {
  using Scalar = TypeParam;
  // With zero gradients the moments stay 0, so only the decay moves a tensor.
  Tensors<Scalar> params = small_params<Scalar>();
  Tensors<Scalar> grads = small_params<Scalar>();
  for (auto& v : grads.values) v.setZero();
  const Tensors<Scalar> before = params;
  AdamW<Scalar> optimizer(AdamWOptions{.weight_decay = 0.5});
  optimizer.step(params.views(), grads.const_views(), 0.1);
  const Scalar factor = static_cast<Scalar>(1 - 0.1 * 0.5);
  EXPECT_EQ(params.values[0], (before.values[0] * factor).eval());  // rank 2: decayed
  EXPECT_EQ(params.values[1], before.values[1]);                    // rank 1: not
  EXPECT_EQ(params.values[2], before.values[2]);                    // rank 0: not

  optimizer.decays = [](const Parameter<const Scalar>& p) { return p.name == "logit_scale"; };
  optimizer.step(params.views(), grads.const_views(), 0.1);
  EXPECT_EQ(params.values[0], (before.values[0] * factor).eval());
  EXPECT_EQ(params.values[2], (before.values[2] * factor).eval());
}

TYPED_TEST(OptimizerTest, StateRoundTripContinuesBitwise) {
  using Scalar = TypeParam;
  const AdamWOptions options{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-6,
                             .weight_decay = 0.1};
  const LearningRateSchedule schedule{1e-2, 2, 6};

  Tensors<Scalar> straight = small_params<Scalar>();
  AdamW<Scalar> a(options);
  for (int k = 0; k < 6; ++k) {
    a.step(straight.views(), small_grads<Scalar>(k).const_views(), schedule.at(k));
  }

  Tensors<Scalar> resumed = small_params<Scalar>();
  AdamWState<Scalar> saved;
  {
    AdamW<Scalar> b(options);
    for (int k = 0; k < 3; ++k) {
      b.step(resumed.views(), small_grads<Scalar>(k).const_views(), schedule.at(k));
    }
    saved = b.state();
  }
  ASSERT_EQ(saved.steps, 3);
  ASSERT_EQ(saved.tensors.size(), 6u);
  EXPECT_EQ(saved.tensors[0].first, "layer.weight.exp_avg");
  EXPECT_EQ(saved.tensors[1].first, "layer.weight.exp_avg_sq");
  // A checkpoint may hand the tensors back in another order (safetensors sorts by name).
  std::reverse(saved.tensors.begin(), saved.tensors.end());

  AdamW<Scalar> c(options);
  c.load_state(saved, resumed.views());
  EXPECT_EQ(c.steps, 3);
  for (int k = 3; k < 6; ++k) {
    c.step(resumed.views(), small_grads<Scalar>(k).const_views(), schedule.at(k));
  }
  EXPECT_TRUE(bitwise_equal(resumed, straight));
  EXPECT_EQ(c.steps, a.steps);
  for (std::size_t i = 0; i < a.exp_avg.size(); ++i) {
    EXPECT_EQ(c.exp_avg[i], a.exp_avg[i]);
    EXPECT_EQ(c.exp_avg_sq[i], a.exp_avg_sq[i]);
  }
}

TYPED_TEST(OptimizerTest, LoadStateChecksTheTensors) {
  using Scalar = TypeParam;
  Tensors<Scalar> params = small_params<Scalar>();
  AdamW<Scalar> a;
  a.step(params.views(), small_grads<Scalar>(0).const_views(), 1e-3);
  const AdamWState<Scalar> good = a.state();

  AdamW<Scalar> b;
  AdamWState<Scalar> missing = good;
  missing.tensors.pop_back();
  EXPECT_THAT(test::error_of([&] { b.load_state(missing, params.views()); }),
              HasSubstr("the state has 5 tensors, expected 2"));
  AdamWState<Scalar> renamed = good;
  renamed.tensors[5].first = "other.exp_avg_sq";
  EXPECT_THAT(test::error_of([&] { b.load_state(renamed, params.views()); }),
              HasSubstr("no tensor 'logit_scale.exp_avg_sq'"));
  AdamWState<Scalar> resized = good;
  resized.tensors[2].second = Vector<Scalar>::Zero(5);
  EXPECT_THAT(test::error_of([&] { b.load_state(resized, params.views()); }),
              HasSubstr("'layer.bias.exp_avg' has 5 elements, expected 3"));
  AdamWState<Scalar> negative = good;
  negative.steps = -1;
  EXPECT_THROW(b.load_state(negative, params.views()), Error);
  EXPECT_EQ(b.steps, 0);
  EXPECT_TRUE(b.names.empty());
}

TYPED_TEST(OptimizerTest, ClipBelowTheThresholdLeavesGradientsUntouched) {
  using Scalar = TypeParam;
  Tensors<Scalar> grads = small_grads<Scalar>(0);
  double squares = 0;
  for (const auto& v : grads.values) squares += v.template cast<double>().squaredNorm();
  const double norm = std::sqrt(squares);

  const Tensors<Scalar> before = grads;
  EXPECT_NEAR(clip_grad_norm<Scalar>(grads.views(), norm * 1.5), norm, 1e-6 * norm);
  EXPECT_TRUE(bitwise_equal(grads, before));

  // Above the threshold: every element scaled by max_norm / (norm + 1e-6).
  const double max_norm = norm / 4;
  clip_grad_norm<Scalar>(grads.views(), max_norm);
  const Scalar c = static_cast<Scalar>(max_norm / (norm + 1e-6));
  for (std::size_t i = 0; i < grads.values.size(); ++i) {
    EXPECT_EQ(grads.values[i], (before.values[i] * c).eval()) << grads.names[i];
  }
}

TYPED_TEST(OptimizerTest, ClipRefusesANonFiniteNorm) {
  using Scalar = TypeParam;
  Tensors<Scalar> grads = small_grads<Scalar>(0);
  grads.values[2][0] = std::numeric_limits<Scalar>::infinity();
  const Tensors<Scalar> before = grads;
  EXPECT_THAT(test::error_of([&] { clip_grad_norm<Scalar>(grads.views(), 1e-3); }),
              HasSubstr("the gradient of 'logit_scale' holds inf"));
  grads.values[2][0] = std::numeric_limits<Scalar>::quiet_NaN();
  EXPECT_THROW(clip_grad_norm<Scalar>(grads.views(), 1e-3), Error);
  grads.values[2][0] = 0;
  for (std::size_t i = 0; i < 2; ++i) EXPECT_EQ(grads.values[i], before.values[i]);
  EXPECT_THROW(clip_grad_norm<Scalar>(grads.views(), 0.0), Error);
}

TEST(LearningRateSchedule, WarmupPeakAndEnd) {
  const LearningRateSchedule s{1e-2, 3, 10, 1e-4};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-2 / 3);
  EXPECT_DOUBLE_EQ(s.at(1), 2e-2 / 3);
  EXPECT_DOUBLE_EQ(s.at(2), 1e-2);  // the last warmup step reaches the peak
  EXPECT_DOUBLE_EQ(s.at(3), 1e-2);  // the cosine starts at the peak
  // Half way through the cosine (step 3 + 3.5 is not a step; use a schedule with 4 steps).
  const LearningRateSchedule half{1e-2, 2, 6, 0};
  EXPECT_DOUBLE_EQ(half.at(4), 0.5e-2);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-4);  // total_steps: min_lr
  EXPECT_DOUBLE_EQ(s.at(1000), 1e-4);
  for (std::int64_t k = 3; k < 10; ++k) EXPECT_LT(s.at(k + 1), s.at(k));
  // No warmup: step 0 is the peak.
  EXPECT_DOUBLE_EQ((LearningRateSchedule{1e-3, 0, 5}).at(0), 1e-3);
  // warmup == total: no cosine steps; the peak through step total (q = 0 there, as the
  // denominator is max(1, 0) = 1), min_lr from step total + 1.
  const LearningRateSchedule no_decay{1e-3, 4, 4};
  EXPECT_DOUBLE_EQ(no_decay.at(3), 1e-3);
  EXPECT_DOUBLE_EQ(no_decay.at(4), 1e-3);
  EXPECT_DOUBLE_EQ(no_decay.at(5), 0.0);
}

TEST(LearningRateSchedule, MatchesTheFixture) {
  const test::Fixture f = adamw_fixture();
  const LearningRateSchedule s = fixture_schedule(f);
  const Vector<double> lr = f.vector<double>("lr");
  for (Index k = 0; k < lr.size(); ++k) EXPECT_DOUBLE_EQ(s.at(k), lr[k]) << "step " << k;
}

TEST(LearningRateSchedule, ArgumentErrors) {
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, 11, 10}).at(0); }),
              HasSubstr("warmup_steps is 11"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, -1, 10}).at(0); }),
              HasSubstr("warmup_steps is -1"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, 0, 0}).at(0); }),
              HasSubstr("total_steps is 0"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{-1e-3, 1, 10}).at(0); }),
              HasSubstr("peak_lr is -0.001"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, 1, 10, 1e-2}).at(0); }),
              HasSubstr("min_lr is 0.01"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, 1, 10, -1e-5}).at(0); }),
              HasSubstr("min_lr is -1e-05"));
  EXPECT_THAT(test::error_of([] { (LearningRateSchedule{1e-3, 1, 10}).at(-1); }),
              HasSubstr("step is -1"));
}

}  // namespace
}  // namespace tessera
