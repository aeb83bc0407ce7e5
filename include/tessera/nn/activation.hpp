#pragma once
// Element-wise activations of SPEC 3, each the PyTorch function named beside it.

#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>

#include <unsupported/Eigen/SpecialFunctions>

#include <algorithm>
#include <cmath>

namespace tessera::nn {

// gelu (erf form): x * Phi(x)                     torch.nn.functional.gelu
template <class Scalar>
Scalar gelu(Scalar x) {
  return Scalar(0.5) * x * (Scalar(1) + std::erf(x * Scalar(0.70710678118654752440)));
}

// gelu, tanh approximation                        gelu(approximate="tanh")
template <class Scalar>
Scalar gelu_tanh(Scalar x) {
  const Scalar k = Scalar(0.79788456080286535588);  // sqrt(2/pi)
  return Scalar(0.5) * x * (Scalar(1) + std::tanh(k * (x + Scalar(0.044715) * x * x * x)));
}

template <class Scalar>
Scalar sigmoid(Scalar x) {
  return Scalar(1) / (Scalar(1) + std::exp(-x));
}

// quick_gelu: x * sigmoid(1.702 x)                 (OpenAI CLIP)
template <class Scalar>
Scalar quick_gelu(Scalar x) {
  return x * sigmoid(Scalar(1.702) * x);
}

template <class Scalar>
Scalar relu(Scalar x) {
  return x > Scalar(0) ? x : Scalar(0);
}

// silu: x * sigmoid(x)                            torch.nn.functional.silu (SwiGLU's gate)
template <class Scalar>
Scalar silu(Scalar x) {
  return x * sigmoid(x);
}

// Applies `activation` to every element in place: the functions above, written as Eigen
// array expressions so that they are vectorized (Eigen's packet erf, tanh and exp for float;
// its scalar ones elsewhere), over blocks of rows spread over threads. An element's result
// depends on its place in its row only, never on the thread count.
template <class Scalar>
void activate(Activation activation, MatrixRef<Scalar> x) {
  auto apply = [&x](auto f) {  // f(array) -> the activated array, an expression
    constexpr Index block = 16;
    const Index rows = x.rows(), blocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(static) if (rows >= 64)
    for (Index b = 0; b < blocks; ++b) {
      auto a = x.middleRows(b * block, std::min(block, rows - b * block)).array();
      a = f(a);
    }
  };
  const Scalar half(0.5), one(1);
  switch (activation) {
    case Activation::gelu:
      apply([&](const auto& a) { return half * a * (one + (a * Scalar(0.70710678118654752440)).erf()); });
      break;
    case Activation::gelu_tanh:
      apply([&](const auto& a) {
        const Scalar k(0.79788456080286535588);  // sqrt(2/pi)
        return half * a * (one + (k * (a + Scalar(0.044715) * a * a * a)).tanh());
      });
      break;
    case Activation::quick_gelu:
      apply([&](const auto& a) { return a * (one / (one + (Scalar(-1.702) * a).exp())); });
      break;
    case Activation::relu: apply([](const auto& a) { return a.max(Scalar(0)); }); break;
    case Activation::swiglu:  // silu
      apply([&](const auto& a) { return a * (one / (one + (-a).exp())); });
      break;
  }
}

}  // namespace tessera::nn
