#pragma once
// The optimizer of training: AdamW, gradient-norm clipping and the learning-rate schedule.
//
//   AdamW (torch.optim.AdamW of PyTorch 1.13 with amsgrad=False, maximize=False, foreach=False).
//   For every tensor p with gradient g, at step t = 1, 2, ... (the count after this step):
//       p <- p * (1 - lr*wd)                  only when decays(p); wd = options.weight_decay
//       m <- beta1*m + (1 - beta1)*g          first moment (exp_avg), 0 before step 1
//       v <- beta2*v + (1 - beta2)*g*g        second moment (exp_avg_sq), 0 before step 1
//       p <- p - lr/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps)
//   clip_grad_norm (torch.nn.utils.clip_grad_norm_, norm_type 2):
//       total = sqrt(sum of g^2 over every element of every gradient)
//       c = max_norm / (total + 1e-6);  if c < 1, g <- c*g for every gradient
//   LearningRateSchedule (linear warmup, then cosine decay; torch has no single class for it,
//   tests/reference/make_optimizer_fixtures.py writes it out in Python):
//       at(s) = peak * (s + 1) / warmup                          for s < warmup
//       at(s) = min + (peak - min)/2 * (1 + cos(pi*q))           otherwise,
//               q = clamp((s - warmup) / max(1, total - warmup), 0, 1)
//
// Rounding follows torch's single-tensor path: the scalar coefficients (1 - lr*wd, 1 - beta1,
// lr/(1 - beta1^t), sqrt(1 - beta2^t), eps) are computed in double and rounded to Scalar once,
// and every tensor operation rounds to Scalar, in torch's order. Everything here is serial
// and deterministic. docs/optimizer.md describes it; tests/test_optimizer.cpp checks it.

#include <tessera/core/error.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <numbers>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

// The settings of AdamW, with torch.optim.AdamW's defaults.
struct AdamWOptions {
  double lr = 1e-3;  // the rate of step() called without one; a schedule passes its own
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // applied to the tensors AdamW::decays selects
};

// The saved state of an AdamW: the step count and the moments, named
// `<param>.exp_avg` and `<param>.exp_avg_sq`, each flat [size of the param] in the param's
// row-major order (a checkpoint writes them with the param's shape).
template <class Scalar>
struct AdamWState {
  std::int64_t steps = 0;
  std::vector<std::pair<std::string, Vector<Scalar>>> tensors;
};

// The same tensors as read-only views: clip_grad_norm scales the gradients in place, then
// AdamW::step reads them.
// ensures: element i views the data of views[i], with its name and shapes.
template <class Scalar>
std::vector<Parameter<const Scalar>> read_only(std::span<const Parameter<Scalar>> views) {
  std::vector<Parameter<const Scalar>> out;
  out.reserve(views.size());
  for (const auto& v : views) out.push_back({v.name, v.data, v.shape, v.conv_shape});
  return out;
}

// AdamW over one list of tensors (the math at the top of this file). The first step fixes
// the list; every later step must get the same tensors in the same order.
template <class Scalar>
class AdamW {
 public:
  AdamWOptions options;

  // Which tensors weight decay applies to. By default those of rank >= 2 (weight matrices,
  // embeddings, conv-shaped patch weights), not biases, norm weights or scalars such as
  // logit_scale. Called on every step with a read-only view of the parameter.
  std::function<bool(const Parameter<const Scalar>&)> decays =
      [](const Parameter<const Scalar>& p) { return p.shape.size() >= 2; };

  // The state. Public so checkpoints can save and restore it exactly (or use state() and
  // load_state()); all three are empty / 0 until the first step.
  std::int64_t steps = 0;                 // steps taken (torch's state["step"] of each tensor)
  std::vector<std::string> names;         // the tensor names, in the order step() takes them
  std::vector<Vector<Scalar>> exp_avg;    // per tensor: first moment m, flat [size]
  std::vector<Vector<Scalar>> exp_avg_sq;  // per tensor: second moment v, flat [size]

  // requires: 0 <= beta1, beta2 < 1; eps, weight_decay finite and >= 0 (as torch checks them;
  //   step() checks them again, since options is public).
  explicit AdamW(const AdamWOptions& opts = {}) : options(opts) { check_options(); }

  // One AdamW step with learning rate lr, updating every params[i] in place from grads[i].
  // requires: params[i] and grads[i] have one name and one size; the names are unique; after
  //   the first step, the same names in the same order with the same sizes; every gradient
  //   finite; lr finite and >= 0.
  // ensures: steps grew by 1 and every tensor and moment is updated; or, when a requirement
  //   fails, tessera::Error naming the tensor, and nothing changed.
  void step(std::span<const Parameter<Scalar>> params,
            std::span<const Parameter<const Scalar>> grads, double lr) {
    check_step(params, grads, lr);
    if (steps == 0) start(params);
    ++steps;

    // The scalars of this step, in double as torch computes them (its step count is a float
    // tensor read back with item(), exact for any count below 2^24).
    const double t = static_cast<double>(steps);
    const double bias_correction1 = 1 - std::pow(options.beta1, t);
    const double bias_correction2 = 1 - std::pow(options.beta2, t);
    const Scalar decay_factor = static_cast<Scalar>(1 - lr * options.weight_decay);
    const Scalar beta1 = static_cast<Scalar>(options.beta1);
    const Scalar beta2 = static_cast<Scalar>(options.beta2);
    const Scalar one_minus_beta1 = static_cast<Scalar>(1 - options.beta1);
    const Scalar one_minus_beta2 = static_cast<Scalar>(1 - options.beta2);
    const Scalar bias_correction2_sqrt = static_cast<Scalar>(std::sqrt(bias_correction2));
    const Scalar eps = static_cast<Scalar>(options.eps);
    const Scalar minus_step_size = static_cast<Scalar>(-(lr / bias_correction1));

    for (std::size_t i = 0; i < params.size(); ++i) {
      const bool decayed = options.weight_decay != 0 && decays(read_only_view(params[i]));
      Scalar* p = params[i].data;         // [size], row-major
      const Scalar* g = grads[i].data;    // [size]
      Scalar* m = exp_avg[i].data();      // [size]
      Scalar* v = exp_avg_sq[i].data();   // [size]
      const std::int64_t n = params[i].size();
      for (std::int64_t j = 0; j < n; ++j) {
        // torch: param.mul_(1 - lr*wd)
        if (decayed) p[j] *= decay_factor;
        // torch: exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        m[j] *= beta1;
        m[j] += one_minus_beta1 * g[j];
        // torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v[j] *= beta2;
        v[j] += one_minus_beta2 * g[j] * g[j];
        // torch: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        const Scalar denom = std::sqrt(v[j]) / bias_correction2_sqrt + eps;
        // torch: param.addcdiv_(exp_avg, denom, value=-step_size)
        p[j] += minus_step_size * m[j] / denom;
      }
    }
  }

  // A step with the constant rate options.lr. requires / ensures: as step(params, grads, lr).
  void step(std::span<const Parameter<Scalar>> params,
            std::span<const Parameter<const Scalar>> grads) {
    step(params, grads, options.lr);
  }

  // The state to save in a checkpoint, tensors in step order: for each tensor
  // `<name>.exp_avg` then `<name>.exp_avg_sq`, each flat [size].
  // ensures: load_state(state(), params) into any AdamW with these options continues exactly.
  AdamWState<Scalar> state() const {
    AdamWState<Scalar> out;
    out.steps = steps;
    for (std::size_t i = 0; i < names.size(); ++i) {
      out.tensors.emplace_back(names[i] + ".exp_avg", exp_avg[i]);
      out.tensors.emplace_back(names[i] + ".exp_avg_sq", exp_avg_sq[i]);
    }
    return out;
  }

  // Restores a saved state for the tensors `params` (the list step() will be given). The
  // moments are looked up by name, so the saved order does not matter.
  // requires: state.steps >= 0; with steps 0, no tensors (a fresh optimizer); otherwise
  //   exactly the two moments of every param, each of the param's size, finite.
  // ensures: steps, names and moments are those of the state; or tessera::Error naming
  //   the tensor, and nothing changed. The options and decays are not part of the state.
  void load_state(const AdamWState<Scalar>& state, std::span<const Parameter<Scalar>> params) {
    check(state.steps >= 0, "AdamW::load_state: steps is ", state.steps, ", expected >= 0");
    if (state.steps == 0) {
      check(state.tensors.empty(), "AdamW::load_state: a state of step 0 has no tensors, got ",
            state.tensors.size());
      steps = 0;
      names.clear();
      exp_avg.clear();
      exp_avg_sq.clear();
      return;
    }
    std::map<std::string, const Vector<Scalar>*> by_name;
    for (const auto& [name, values] : state.tensors) {
      check(by_name.emplace(name, &values).second, "AdamW::load_state: tensor '", name,
            "' appears twice");
      check(values.allFinite(), "AdamW::load_state: tensor '", name, "' is not finite");
    }
    check(state.tensors.size() == 2 * params.size(), "AdamW::load_state: the state has ",
          state.tensors.size(), " tensors, expected 2 (exp_avg, exp_avg_sq) for each of ",
          params.size(), " parameters");
    // The saved moment `<name><suffix>` of parameter p, checked against p's size.
    auto saved = [&by_name](const Parameter<Scalar>& p, const char* suffix) {
      const std::string key = p.name + suffix;
      const auto found = by_name.find(key);
      check(found != by_name.end(), "AdamW::load_state: the state has no tensor '", key, "'");
      check(found->second->size() == p.size(), "AdamW::load_state: tensor '", key, "' has ",
            found->second->size(), " elements, expected ", p.size(), " (parameter '", p.name,
            "')");
      return *found->second;
    };
    std::vector<std::string> new_names;
    std::vector<Vector<Scalar>> new_exp_avg, new_exp_avg_sq;
    for (const auto& p : params) {
      new_names.push_back(p.name);
      new_exp_avg.push_back(saved(p, ".exp_avg"));
      new_exp_avg_sq.push_back(saved(p, ".exp_avg_sq"));
    }
    check_unique(new_names, "AdamW::load_state");
    steps = state.steps;
    names = std::move(new_names);
    exp_avg = std::move(new_exp_avg);
    exp_avg_sq = std::move(new_exp_avg_sq);
  }

 private:
  void check_options() const {
    check(options.beta1 >= 0 && options.beta1 < 1, "AdamW: beta1 is ", options.beta1,
          ", expected a value in [0, 1)");
    check(options.beta2 >= 0 && options.beta2 < 1, "AdamW: beta2 is ", options.beta2,
          ", expected a value in [0, 1)");
    check(std::isfinite(options.eps) && options.eps >= 0, "AdamW: eps is ", options.eps,
          ", expected finite and >= 0");
    check(std::isfinite(options.weight_decay) && options.weight_decay >= 0,
          "AdamW: weight_decay is ", options.weight_decay, ", expected finite and >= 0");
  }

  static Parameter<const Scalar> read_only_view(const Parameter<Scalar>& p) {
    return {p.name, p.data, p.shape, p.conv_shape};
  }

  static void check_unique(const std::vector<std::string>& list, const char* where) {
    std::set<std::string> seen;
    for (const auto& name : list) {
      check(seen.insert(name).second, where, ": tensor '", name, "' appears twice");
    }
  }

  // Every requirement of step(), checked before anything is changed.
  void check_step(std::span<const Parameter<Scalar>> params,
                  std::span<const Parameter<const Scalar>> grads, double lr) const {
    check_options();
    check(std::isfinite(lr) && lr >= 0, "AdamW::step: lr is ", lr, ", expected finite and >= 0");
    check(options.weight_decay == 0 || static_cast<bool>(decays),
          "AdamW::step: decays is empty, expected a function choosing the decayed tensors");
    check(params.size() == grads.size(), "AdamW::step: ", params.size(), " parameters but ",
          grads.size(), " gradients");
    if (steps > 0) {
      // The public state must be whole (it may have been set by hand).
      check(exp_avg.size() == names.size() && exp_avg_sq.size() == names.size(),
            "AdamW::step: the state holds ", names.size(), " names, ", exp_avg.size(),
            " exp_avg and ", exp_avg_sq.size(), " exp_avg_sq");
      check(params.size() == names.size(), "AdamW::step: ", params.size(),
            " parameters, but the previous steps had ", names.size());
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      const auto& g = grads[i];
      check(p.name == g.name, "AdamW::step: parameter ", i, " is '", p.name,
            "' but gradient ", i, " is '", g.name, "'");
      check(p.size() == g.size(), "AdamW::step: parameter '", p.name, "' has ", p.size(),
            " elements but its gradient has ", g.size());
      if (steps > 0) {
        check(p.name == names[i], "AdamW::step: parameter ", i, " is '", p.name,
              "', but the previous steps had '", names[i], "' there");
        check(p.size() == exp_avg[i].size() && p.size() == exp_avg_sq[i].size(),
              "AdamW::step: parameter '", p.name, "' has ", p.size(),
              " elements, but the previous steps had ", exp_avg[i].size());
      }
      for (std::int64_t j = 0; j < g.size(); ++j) {
        check(std::isfinite(g.data[j]), "AdamW::step: the gradient of '", g.name,
              "' holds ", g.data[j], " at element ", j);
      }
    }
    if (steps == 0) {
      std::vector<std::string> list;
      for (const auto& p : params) list.push_back(p.name);
      check_unique(list, "AdamW::step");
    }
  }

  // The first step: zero moments for every tensor.
  void start(std::span<const Parameter<Scalar>> params) {
    names.clear();
    exp_avg.clear();
    exp_avg_sq.clear();
    for (const auto& p : params) {
      names.push_back(p.name);
      exp_avg.push_back(Vector<Scalar>::Zero(static_cast<Index>(p.size())));
      exp_avg_sq.push_back(Vector<Scalar>::Zero(static_cast<Index>(p.size())));
    }
  }
};

// Scales the gradients so that their joint L2 norm is at most max_norm, as
// torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2) does, and returns the norm before
// scaling. The squares are summed in double over all elements at once; torch takes the norm
// of the per-tensor norms, which agrees up to rounding of the last bits.
// requires: max_norm finite and > 0; the total norm finite.
// ensures: when max_norm / (total + 1e-6) < 1, every element of every gradient is multiplied
//   by that coefficient (rounded to Scalar); otherwise the gradients are untouched. A
//   non-finite total throws tessera::Error and scales nothing.
template <class Scalar>
double clip_grad_norm(std::span<const Parameter<Scalar>> grads, double max_norm) {
  check(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm: max_norm is ", max_norm,
        ", expected finite and > 0");
  double sum_of_squares = 0;
  for (const auto& g : grads) {
    for (std::int64_t j = 0; j < g.size(); ++j) {
      const double x = static_cast<double>(g.data[j]);
      sum_of_squares += x * x;
    }
  }
  const double total = std::sqrt(sum_of_squares);
  if (!std::isfinite(total)) {
    // Name the first tensor that holds a non-finite value (an overflow of the sum names none).
    for (const auto& g : grads) {
      for (std::int64_t j = 0; j < g.size(); ++j) {
        check(std::isfinite(g.data[j]), "clip_grad_norm: the gradient of '", g.name,
              "' holds ", g.data[j], " at element ", j);
      }
    }
    fail("clip_grad_norm: the total gradient norm is ", total);
  }
  const double coefficient = max_norm / (total + 1e-6);
  if (coefficient < 1) {
    const Scalar c = static_cast<Scalar>(coefficient);
    for (const auto& g : grads) {
      for (std::int64_t j = 0; j < g.size(); ++j) g.data[j] *= c;
    }
  }
  return total;
}

// The learning rate of each step: a linear warmup to peak_lr, then a cosine decay to min_lr.
struct LearningRateSchedule {
  double peak_lr;
  std::int64_t warmup_steps;  // steps 0 .. warmup_steps-1 ramp up; 0 for no warmup
  std::int64_t total_steps;   // the cosine reaches min_lr at this step and stays there (when
                              // total_steps == warmup_steps: peak_lr here, min_lr after it)
  double min_lr = 0;

  // The rate of step `step` (0-based: the first step is 0):
  //   step < warmup_steps:  peak_lr * (step + 1) / warmup_steps   (so step warmup-1 is at peak)
  //   otherwise:            min_lr + 0.5*(peak_lr - min_lr)*(1 + cos(pi*q)), with
  //     q = clamp((step - warmup_steps) / max(1, total_steps - warmup_steps), 0, 1)
  // requires: peak_lr finite and > 0; 0 <= min_lr <= peak_lr; 0 <= warmup_steps <= total_steps;
  //   total_steps >= 1; step >= 0.
  // ensures: a value in [min_lr, peak_lr] (warmup: in (0, peak_lr]); tessera::Error otherwise.
  double at(std::int64_t step) const {
    check(std::isfinite(peak_lr) && peak_lr > 0, "LearningRateSchedule: peak_lr is ", peak_lr,
          ", expected finite and > 0");
    check(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= peak_lr,
          "LearningRateSchedule: min_lr is ", min_lr, ", expected in [0, peak_lr = ", peak_lr,
          "]");
    check(total_steps >= 1, "LearningRateSchedule: total_steps is ", total_steps,
          ", expected >= 1");
    check(warmup_steps >= 0 && warmup_steps <= total_steps,
          "LearningRateSchedule: warmup_steps is ", warmup_steps, ", expected in [0, ",
          "total_steps = ", total_steps, "]");
    check(step >= 0, "LearningRateSchedule::at: step is ", step, ", expected >= 0");
    if (step < warmup_steps) {
      return peak_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    }
    const std::int64_t cosine_steps = std::max<std::int64_t>(1, total_steps - warmup_steps);
    const double progress =
        static_cast<double>(step - warmup_steps) / static_cast<double>(cosine_steps);
    const double q = std::clamp(progress, 0.0, 1.0);
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + std::cos(std::numbers::pi * q));
  }
};

}  // namespace tessera
