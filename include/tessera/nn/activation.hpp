#pragma once
// Element-wise activations of SPEC 3, each the PyTorch function named beside it, and their
// derivatives for the backward pass (activate_backward):
//   gelu       f' = Phi(x) + x phi(x)                          (phi the normal density)
//   gelu_tanh  f' = (1 + t)/2 + x (1 - t^2) k (1 + 3 c x^2)/2  (t = tanh(k (x + c x^3)))
//   quick_gelu f' = s + 1.702 x s (1 - s)                      (s = sigmoid(1.702 x))
//   relu       f' = 1 for x > 0, else 0                        (PyTorch's choice at 0)
//   silu       f' = s (1 + x (1 - s))                          (s = sigmoid(x))

#include <tessera/core/tensor.hpp>

#include <unsupported/Eigen/SpecialFunctions>

#include <algorithm>
#include <cmath>

namespace tessera {

// A transformer's feed-forward activation (config key "activation"; nn/ffn.hpp).
enum class Activation { gelu, gelu_tanh, quick_gelu, relu, swiglu };
inline constexpr Activation activation_kinds[] = {Activation::gelu, Activation::gelu_tanh,
                                                  Activation::quick_gelu, Activation::relu,
                                                  Activation::swiglu};

inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_tanh";
    case Activation::quick_gelu: return "quick_gelu";
    case Activation::relu: return "relu";
    case Activation::swiglu: return "swiglu";
  }
  return "unknown";
}

}  // namespace tessera

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

// The element-wise work of activate and activate_backward: f(first row, rows) on blocks of 16
// rows, spread over threads (an element's result never depends on the thread count).
template <class F>
void for_row_blocks(Index rows, F&& f) {
  constexpr Index block = 16;
  const Index blocks = (rows + block - 1) / block;
#pragma omp parallel for schedule(static) if (rows >= 64)
  for (Index b = 0; b < blocks; ++b) f(b * block, std::min(block, rows - b * block));
}

// Applies `activation` to every element in place: the functions above, written as Eigen
// array expressions so that they are vectorized (Eigen's packet erf, tanh and exp for float;
// its scalar ones elsewhere), over blocks of rows spread over threads (for_row_blocks).
template <class Scalar>
void activate(Activation activation, MatrixRef<Scalar> x) {
  auto apply = [&x](auto f) {  // f(array) -> the activated array, an expression
    for_row_blocks(x.rows(), [&](Index r0, Index n) {
      auto a = x.middleRows(r0, n).array();
      a = f(a);
    });
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

// Backward of activate(activation, x): d *= f'(x), element by element.
// requires: d and x of one shape; x the values activate was given (before activation).
// ensures: d holds the gradient with respect to x.
template <class Scalar>
void activate_backward(Activation activation,
                       MatrixRef<Scalar> d,                // [L, F] d_out in, d_x out
                       const ConstMatrixRef<Scalar>& x) {  // [L, F]
  TESSERA_ASSERT(d.rows() == x.rows() && d.cols() == x.cols());
  // times_derivative(d, a): d *= f'(a) on one block of rows (arrays).
  auto apply = [&](auto times_derivative) {
    for_row_blocks(x.rows(), [&](Index r0, Index n) {
      auto d_block = d.middleRows(r0, n).array();
      times_derivative(d_block, x.middleRows(r0, n).array());
    });
  };
  using Values = Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Scalar half(0.5), one(1);
  switch (activation) {
    case Activation::gelu:
      apply([&](auto& d_block, const auto& a) {
        const Scalar inv_sqrt2(0.70710678118654752440), inv_sqrt_2pi(0.39894228040143267794);
        d_block *= half * (one + (a * inv_sqrt2).erf()) + a * inv_sqrt_2pi * (Scalar(-0.5) * a * a).exp();
      });
      break;
    case Activation::gelu_tanh:
      apply([&](auto& d_block, const auto& a) {
        const Scalar k(0.79788456080286535588), c(0.044715);  // sqrt(2/pi)
        const Values t = (k * (a + c * a * a * a)).tanh();
        d_block *= half * (one + t) + half * a * (one - t * t) * k * (one + Scalar(3) * c * a * a);
      });
      break;
    case Activation::quick_gelu:
      apply([&](auto& d_block, const auto& a) {
        const Values s = one / (one + (Scalar(-1.702) * a).exp());
        d_block *= s + Scalar(1.702) * a * s * (one - s);
      });
      break;
    case Activation::relu:
      apply([](auto& d_block, const auto& a) { d_block *= (a > Scalar(0)).template cast<Scalar>(); });
      break;
    case Activation::swiglu:  // silu
      apply([&](auto& d_block, const auto& a) {
        const Values s = one / (one + (-a).exp());
        d_block *= s * (one + a * (one - s));
      });
      break;
  }
}

}  // namespace tessera::nn
