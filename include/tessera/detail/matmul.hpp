#pragma once
// Thread-count-independent matrix products.
//
// out = op(a) op(b) (+ bias), op being the transpose or not (a Linear layer's a b^T, and its
// backward pass's d_out W and d_out^T x), is cut into tiles of the output: its rows and its
// columns are each cut
// into equal parts of at most matmul_tile_max (matmul_tile_extent; a ViT-B/16 image's
// [197, 768] projection makes two tiles, the [1576, 3072] FFN of a batch of 8 makes 24).
// OpenMP hands the tiles to threads, and each tile is one single-threaded product with its
// own cache blocking inside:
//
// - through OpenBLAS's cblas_?gemm when tessera was configured with it (TESSERA_HAS_OPENBLAS;
//   1.3-1.5x Eigen's speed on one core of an AVX2 machine, bench_attention's
//   BM_linear_forward). OpenBLAS is told to use one thread (openblas_set_num_threads(1), a
//   process-wide setting, at the first product): its own thread pool next to OpenMP's would
//   fight it for the cores;
// - through Eigen otherwise (and for other scalar types).
//
// gemm() is that single-threaded product on its own, for kernels that tile their own work
// (the fused attention's score and value products). A tile always sums over the whole inner
// dimension in one call, so a weight gradient (a sum over the L rows of a batch) is not split
// between threads either.
//
// The tiles depend on the product's shape alone, never on the number of threads, so every output element is computed by
// the same instructions whatever thread computes it, and results are bitwise identical for
// 1 and N threads. Called from inside a parallel region (per sample, per head), the loop runs
// in the calling thread.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <type_traits>

// TESSERA_EIGEN_PRODUCTS, when defined (alike in every translation unit of a program),
// computes the products with Eigen even where tessera was configured with OpenBLAS: tessera's
// tests build the layers, the attention kernels and the encoder both ways.
#if defined(TESSERA_HAS_OPENBLAS) && !defined(TESSERA_EIGEN_PRODUCTS)
#define TESSERA_BLAS_PRODUCTS 1
#include <cblas.h>
#endif

namespace tessera::detail {

inline constexpr Index matmul_tile_max = 512;   // the largest tile extent
inline constexpr Index matmul_tile_align = 16;  // tile extents are multiples of this

// The extent of the tiles that cut `total` rows (or columns) into equal parts of at most
// matmul_tile_max, rounded up to a multiple of matmul_tile_align (the last part is shorter).
inline Index matmul_tile_extent(Index total) {
  if (total <= matmul_tile_max) return std::max<Index>(total, 1);
  const Index parts = (total + matmul_tile_max - 1) / matmul_tile_max;
  const Index even = (total + parts - 1) / parts;
  return (even + matmul_tile_align - 1) / matmul_tile_align * matmul_tile_align;
}

// Whether matmul<Scalar> computes its tiles with OpenBLAS.
template <class Scalar>
inline constexpr bool matmul_uses_blas =
#ifdef TESSERA_BLAS_PRODUCTS
    std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;
#else
    false;
#endif

// The operand of a product as it enters it: x^T when transposed, else x (an Eigen expression).
template <bool transposed, class X>
auto operand(const X& x) {
  if constexpr (transposed) {
    return x.transpose();
  } else {
    return x.derived();
  }
}

// out [m, n] = op(a) * op(b) (+ out when accumulate), in the calling thread: op(a) is a^T for
// a [k, m] (transposed_a) or a itself for a [m, k]; op(b) is b^T for b [n, k] (transposed_b)
// or b itself for b [k, n]. All three are row-major blocks with unit inner stride (any outer
// stride). Through cblas_?gemm when matmul_uses_blas<Scalar>, through Eigen otherwise.
template <bool transposed_a, bool transposed_b, class Out, class A, class B>
void gemm(Out&& out, const A& a, const B& b, bool accumulate) {
  const Index inner = transposed_a ? a.rows() : a.cols();
  TESSERA_ASSERT(out.rows() == (transposed_a ? a.cols() : a.rows()) &&
                 out.cols() == (transposed_b ? b.rows() : b.cols()) &&
                 inner == (transposed_b ? b.cols() : b.rows()));
#ifdef TESSERA_BLAS_PRODUCTS
  using Scalar = typename std::decay_t<A>::Scalar;
  if constexpr (matmul_uses_blas<Scalar>) {
    static const bool single_threaded = [] {
      openblas_set_num_threads(1);  // tessera's own threads call it; see above
      return true;
    }();
    (void)single_threaded;
    if (out.rows() == 0 || out.cols() == 0) return;
    if (inner == 0) {  // an empty sum (BLAS wants k >= 1)
      if (!accumulate) out.setZero();
      return;
    }
    const auto m = static_cast<blasint>(out.rows()), n = static_cast<blasint>(out.cols()),
               k = static_cast<blasint>(inner);
    const auto lda = static_cast<blasint>(a.outerStride()),
               ldb = static_cast<blasint>(b.outerStride()),
               ldc = static_cast<blasint>(out.outerStride());
    const auto op_a = transposed_a ? CblasTrans : CblasNoTrans;
    const auto op_b = transposed_b ? CblasTrans : CblasNoTrans;
    const Scalar beta = accumulate ? Scalar(1) : Scalar(0);
    if constexpr (std::is_same_v<Scalar, float>) {
      cblas_sgemm(CblasRowMajor, op_a, op_b, m, n, k, 1.0f, a.data(), lda, b.data(), ldb,
                  beta, out.data(), ldc);
    } else {
      cblas_dgemm(CblasRowMajor, op_a, op_b, m, n, k, 1.0, a.data(), lda, b.data(), ldb,
                  beta, out.data(), ldc);
    }
    return;
  }
#endif
  if (accumulate) {
    out.noalias() += operand<transposed_a>(a) * operand<transposed_b>(b);
  } else {
    out.noalias() = operand<transposed_a>(a) * operand<transposed_b>(b);
  }
}

// out [M, N] = op(a) * op(b) (+ out when accumulate) (+ bias [N] on every row when given),
// op as in gemm, in tiles spread over threads. a Linear layer's forward is
// matmul<false, true>(y, x, W, false, &b); its backward d_x = matmul<false, false>(d_y, W) and
// d_W += matmul<true, false>(d_y, x).
template <bool transposed_a, bool transposed_b, class Scalar>
void matmul(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& a,
            const ConstMatrixRef<Scalar>& b, bool accumulate = false,
            const Vector<Scalar>* bias = nullptr) {
  const Index rows = out.rows(), cols = out.cols();
  TESSERA_ASSERT(rows == (transposed_a ? a.cols() : a.rows()) &&
                 cols == (transposed_b ? b.rows() : b.cols()));
  const Index tile_rows = matmul_tile_extent(rows), tile_cols = matmul_tile_extent(cols);
  const Index row_tiles = (rows + tile_rows - 1) / tile_rows;
  const Index col_tiles = (cols + tile_cols - 1) / tile_cols;
  const Index tiles = row_tiles * col_tiles;
#pragma omp parallel for schedule(static) if (tiles > 1)
  for (Index tile = 0; tile < tiles; ++tile) {
    // column tiles inner: neighbouring tiles share their rows of op(a)
    const Index r0 = (tile / col_tiles) * tile_rows;
    const Index c0 = (tile % col_tiles) * tile_cols;
    const Index nr = std::min(tile_rows, rows - r0);
    const Index nc = std::min(tile_cols, cols - c0);
    auto block = out.block(r0, c0, nr, nc);
    const auto a_part = [&] {
      if constexpr (transposed_a) return a.middleCols(r0, nr); else return a.middleRows(r0, nr);
    }();
    const auto b_part = [&] {
      if constexpr (transposed_b) return b.middleRows(c0, nc); else return b.middleCols(c0, nc);
    }();
    gemm<transposed_a, transposed_b>(block, a_part, b_part, accumulate);
    if (bias != nullptr) block.rowwise() += bias->segment(c0, nc).transpose();
  }
}

}  // namespace tessera::detail
