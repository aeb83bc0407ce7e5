#pragma once
// Element-wise activations of SPEC 3, each the PyTorch function named beside it.

#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>

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

// Applies `activation` to every element in place. swiglu's element-wise part is silu.
template <class Scalar>
void activate(Activation activation, MatrixRef<Scalar> x) {
  auto apply = [&x](auto f) {
    const Index rows = x.rows();
#pragma omp parallel for schedule(static) if (rows >= 64)
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < x.cols(); ++c) x(r, c) = f(x(r, c));
    }
  };
  switch (activation) {
    case Activation::gelu: apply(gelu<Scalar>); break;
    case Activation::gelu_tanh: apply(gelu_tanh<Scalar>); break;
    case Activation::quick_gelu: apply(quick_gelu<Scalar>); break;
    case Activation::relu: apply(relu<Scalar>); break;
    case Activation::swiglu: apply(silu<Scalar>); break;
  }
}

}  // namespace tessera::nn
