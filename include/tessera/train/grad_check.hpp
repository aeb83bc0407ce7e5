#pragma once
// check_gradients: a layer's analytic gradients against central finite differences, in double.
//
//   numeric_i = (loss(x + h e_i) - loss(x - h e_i)) / (2 h)
//   element i passes when |analytic_i - numeric_i| <= atol + rtol |numeric_i|
//
// Every backward pass of tessera is checked with it (tests/test_grad.cpp), and a new layer can
// be: make a scalar loss of the layer's output (sum(out * R) for a fixed random R has d_out =
// R), run backward once, and hand the checker each tensor with its analytic gradient. With
// h = 1e-6 in double the central difference is exact to about 1e-9 relative for smooth
// functions, so the default tolerances catch any real mistake. A kink (relu at 0) within h of
// a checked element would fail: keep inputs away from kinks.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <span>
#include <string>

namespace tessera {

// One tensor to check: its values (perturbed in place, restored afterwards) and the
// analytic gradient of the loss with respect to them.
struct GradCheckTensor {
  std::string name;
  double* values;          // [size]
  const double* gradient;  // [size]
  Index size;
};

struct GradCheckOptions {
  double step = 1e-6;       // h
  double atol = 1e-6;
  double rtol = 1e-5;
  Index max_elements = 48;  // per tensor; larger tensors are sampled evenly (first and last included)
};

struct GradCheckReport {
  bool ok = true;
  Index checked = 0;         // elements compared
  double worst_ratio = 0;    // max |analytic - numeric| / (atol + rtol |numeric|); > 1 fails
  std::string worst;         // "name[i]: analytic a, numeric n" for that element
};

// Compares each tensor's gradient with central differences of loss(). NaN anywhere fails.
// requires: loss() computes the loss from the tensors' current values, the same way each time.
// ensures: every tensor holds its original values again.
inline GradCheckReport check_gradients(const std::function<double()>& loss,
                                       std::span<const GradCheckTensor> tensors,
                                       const GradCheckOptions& options = {}) {
  GradCheckReport report;
  for (const auto& t : tensors) {
    const Index count = std::min(t.size, options.max_elements);
    for (Index j = 0; j < count; ++j) {
      const Index i = count == t.size ? j : (count > 1 ? j * (t.size - 1) / (count - 1) : 0);
      const double original = t.values[i];
      t.values[i] = original + options.step;
      const double plus = loss();
      t.values[i] = original - options.step;
      const double minus = loss();
      t.values[i] = original;
      const double numeric = (plus - minus) / (2 * options.step);
      const double analytic = t.gradient[i];
      const double ratio = std::abs(analytic - numeric) / (options.atol + options.rtol * std::abs(numeric));
      ++report.checked;
      if (!(ratio <= report.worst_ratio) || !std::isfinite(ratio)) {  // NaN counts as worst
        report.worst_ratio = std::isfinite(ratio) ? ratio : std::numeric_limits<double>::infinity();
        std::ostringstream where;
        where << t.name << "[" << i << "]: analytic " << analytic << ", numeric " << numeric;
        report.worst = where.str();
      }
    }
  }
  report.ok = report.worst_ratio <= 1.0;
  return report;
}

}  // namespace tessera
