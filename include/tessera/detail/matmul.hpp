#pragma once
// Thread-count-independent matrix products.
//
// Large products are split into fixed blocks of rows, each computed by one single-threaded
// Eigen product; OpenMP hands the blocks to threads. Because the blocks do not depend on the
// number of threads, every output element is computed by the same instructions whatever the
// thread count, and results are bitwise identical for 1 and N threads. Called from inside a
// parallel region (per sample, per head), the loop runs in the calling thread.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>

namespace tessera::detail {

inline constexpr Index matmul_row_block = 64;

// out [L, N] = a [L, K] * b [N, K]^T (+ bias [N] on every row when given): a Linear layer.
template <class Scalar>
void matmul_transposed(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& a,
                       const ConstMatrixRef<Scalar>& b, const Vector<Scalar>* bias = nullptr) {
  TESSERA_ASSERT(out.rows() == a.rows() && out.cols() == b.rows() && a.cols() == b.cols());
  const Index rows = a.rows();
  const Index blocks = (rows + matmul_row_block - 1) / matmul_row_block;
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (Index block = 0; block < blocks; ++block) {
    const Index begin = block * matmul_row_block;
    const Index count = std::min(matmul_row_block, rows - begin);
    auto out_rows = out.middleRows(begin, count);
    out_rows.noalias() = a.middleRows(begin, count) * b.transpose();
    if (bias != nullptr) out_rows.rowwise() += bias->transpose();
  }
}

}  // namespace tessera::detail
