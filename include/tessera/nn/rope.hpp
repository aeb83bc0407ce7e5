#pragma once
// Rope: multi-axis rotary position embedding (SPEC 2; M-RoPE of Qwen2-VL, "rotate_half" form).
//
// Each head of q or k is rotated in dh/2 pairs (i, i + dh/2). Pair i turns by
// angle = pos[axis(i)] * theta^(-2i/dh), where axis(i) is t for i < s_t, y for
// s_t <= i < s_t + s_y, x otherwise:
//   out_i = x_i cos - x_{i+dh/2} sin,   out_{i+dh/2} = x_{i+dh/2} cos + x_i sin.
// Angles are computed in double whatever Scalar is, so float loses nothing to the angle.
// Backward: the rotation is orthogonal, so d_x is d_out rotated by the opposite angles.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <array>
#include <cmath>
#include <vector>

namespace tessera::nn {

template <class Scalar>
struct Rope {
  Index head_dim = 0;                  // dh (even)
  double theta = 10000.0;
  std::array<Index, 3> sections{};     // rotation pairs per axis [t, y, x], sum = dh/2

  Rope() = default;
  Rope(Index dh, double rope_theta, std::array<Index, 3> axis_pairs)
      : head_dim(dh), theta(rope_theta), sections(axis_pairs) {
    check(dh % 2 == 0, "rope: head_dim ", dh, " is not even");
    check(sections[0] + sections[1] + sections[2] == dh / 2, "rope: sections [", sections[0],
          ", ", sections[1], ", ", sections[2], "] do not sum to head_dim/2 = ", dh / 2);
  }

  // The axis (0 = t, 1 = y, 2 = x) of rotation pair i.
  int axis_of_pair(Index i) const {
    if (i < sections[0]) return 0;
    if (i < sections[0] + sections[1]) return 1;
    return 2;
  }

  double inv_freq(Index i) const {
    return std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  }

  // Rotates every head of x in place.
  // requires: x.cols() is a multiple of dh; positions.rows() == x.rows().
  void forward(MatrixRef<Scalar> x,          // [L, H*dh], rotated in place
               const Positions& positions    // [L, 3] (t, y, x)
  ) const {
    rotate(x, positions, 1.0);
  }

  // Backward of forward: d (d_out in, d_x out) rotated back, in place.
  void backward(MatrixRef<Scalar> d,         // [L, H*dh]
                const Positions& positions   // [L, 3] (t, y, x)
  ) const {
    rotate(d, positions, -1.0);
  }

 private:
  // Rotates every head of x by direction * the positions' angles.
  void rotate(MatrixRef<Scalar> x, const Positions& positions, double direction) const {
    TESSERA_ASSERT(x.cols() % head_dim == 0 && positions.rows() == x.rows());
    const Index half = head_dim / 2;
    const Index heads = x.cols() / head_dim;
    std::vector<double> freq(static_cast<std::size_t>(half));
    for (Index i = 0; i < half; ++i) freq[static_cast<std::size_t>(i)] = inv_freq(i);
    const Index rows = x.rows();
#pragma omp parallel for schedule(static) if (rows >= 64)
    for (Index r = 0; r < rows; ++r) {
      for (Index i = 0; i < half; ++i) {
        const double angle = direction * static_cast<double>(positions(r, axis_of_pair(i))) *
                             freq[static_cast<std::size_t>(i)];
        const Scalar c = static_cast<Scalar>(std::cos(angle));
        const Scalar s = static_cast<Scalar>(std::sin(angle));
        for (Index h = 0; h < heads; ++h) {
          Scalar& a = x(r, h * head_dim + i);
          Scalar& b = x(r, h * head_dim + i + half);
          const Scalar a0 = a;
          a = a0 * c - b * s;
          b = b * c + a0 * s;
        }
      }
    }
  }
};

}  // namespace tessera::nn
