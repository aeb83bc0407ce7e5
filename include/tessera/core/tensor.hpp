#pragma once
// Matrix and tensor types used throughout tessera.
//
// Activations [L, D] and weights [out, in] are row-major Eigen matrices: the PyTorch layout,
// so a safetensors tensor maps onto them directly. Inputs of rank 3 and 4 (an image [C, S, S],
// a video [T, C, S, S]) are row-major Eigen tensors.

// tessera threads its own loops (core/parallel.hpp); Eigen must not thread a product on
// its own, or results would depend on the thread count. The CMake target defines this too.
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <cstdint>

namespace tessera {

using Index = Eigen::Index;

template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

// Mutable and read-only views of a row-major matrix or of a block of one.
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;
template <class Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;

template <class Scalar>
using Tensor3 = Eigen::Tensor<Scalar, 3, Eigen::RowMajor>;  // e.g. an image [C, S, S]
template <class Scalar>
using Tensor4 = Eigen::Tensor<Scalar, 4, Eigen::RowMajor>;  // e.g. a video [T, C, S, S]

// bfloat16: 8 exponent and 8 significant bits in 2 bytes, rounded to nearest even from float
// (Eigen's type). tessera can store attention keys and values in it (nn::KVPrecision).
using BFloat16 = Eigen::bfloat16;

// One (t, y, x) position per token, the axes of multi-axis RoPE (SPEC 2).
using Positions = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 3, Eigen::RowMajor>;  // [L, 3]

}  // namespace tessera
