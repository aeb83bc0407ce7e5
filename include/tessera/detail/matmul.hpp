#pragma once
// Thread-count-independent matrix products.
//
// out = op(a) op(b) (+ bias), op being the transpose or not (a Linear layer's a b^T, and its
// backward pass's d_out W and d_out^T x), is cut into tiles of the output: its rows and its
// columns are each cut into equal parts of at most matmul_tile_max (matmul_tile_extent; a
// ViT-B/16 image's [197, 768] projection makes two tiles, the [1576, 3072] FFN of a batch of 8
// makes 24), and when that makes an odd number of tiles above one, the longer tiles are cut
// into one more part (matmul_tiles: 32 texts of 77 tokens, [2464, 512], make 6 row tiles, not
// 5; imagebind_huge's [257, 1280] makes 4 column tiles, not 3), so that two threads, the
// commonest count, get equal shares (5 tiles on 2 threads run as 3 after 3; 6 as 3 beside 3).
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
// A bias is written into the tile first (or added to it, when accumulating) and the product
// added onto it (beta = 1): one pass over the tile where zeroing it for beta = 0 and adding
// the bias afterwards took two.
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
#include <array>
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

// The number of equal parts of at most matmul_tile_max that cut `total` rows (or columns).
inline Index matmul_tile_parts(Index total) {
  return std::max<Index>((total + matmul_tile_max - 1) / matmul_tile_max, 1);
}

// The extent of the tiles that cut `total` rows (or columns) into `parts` equal parts, rounded
// up to a multiple of matmul_tile_align (the last part is shorter; rounding can leave fewer
// parts, as for `total` at most matmul_tile_align, which stays one part).
inline Index matmul_tile_extent(Index total, Index parts) {
  if (parts <= 1 || total <= matmul_tile_align) return std::max<Index>(total, 1);
  const Index even = (total + parts - 1) / parts;
  return (even + matmul_tile_align - 1) / matmul_tile_align * matmul_tile_align;
}

// The extent of the tiles that cut `total` rows (or columns) into equal parts of at most
// matmul_tile_max, rounded up to a multiple of matmul_tile_align (the last part is shorter).
inline Index matmul_tile_extent(Index total) {
  return matmul_tile_extent(total, matmul_tile_parts(total));
}

// The tiles of an output [rows, cols]: their extents, and how many there are along each side.
struct MatmulTiles {
  Index rows = 1, cols = 1;            // a tile's extent (the last ones shorter)
  Index row_tiles = 1, col_tiles = 1;  // how many along each side

  Index count() const { return row_tiles * col_tiles; }
};

// The tiles of an output [rows, cols], from its shape alone: each side cut by
// matmul_tile_extent, and when that makes an odd number of tiles above one, the longer side
// cut into one more part (or else the other; a side of at most matmul_tile_align is never cut
// further). An even count splits evenly over 2 threads (and over 4 when it is a multiple of
// 4, as the FFN's often are). The cost is more packing: OpenBLAS copies both operands of each
// tile once, nr + nc values per inner index of a tile [nr, nc], so one more row tile copies
// op(b) once more (cols values per inner index) and one more column tile op(a) (rows values):
// [2464, 512] cut into 6 row tiles rather than 5 copies the weight [512, k] six times instead
// of five: sgemm_incopy went from 4.1 % to 6.1 % of a one-thread profile of bench_pretrained's
// 32 texts of 77 tokens (+0.8 % of the time), repaid on two threads by 3 + 3 tiles for 3 + 2.
inline MatmulTiles matmul_tiles(Index rows, Index cols) {
  const auto make = [&](Index row_parts, Index col_parts) {
    MatmulTiles t;
    t.rows = matmul_tile_extent(rows, row_parts);
    t.cols = matmul_tile_extent(cols, col_parts);
    t.row_tiles = std::max<Index>((rows + t.rows - 1) / t.rows, 1);
    t.col_tiles = std::max<Index>((cols + t.cols - 1) / t.cols, 1);
    return t;
  };
  const Index row_parts = matmul_tile_parts(rows), col_parts = matmul_tile_parts(cols);
  const MatmulTiles base = make(row_parts, col_parts);
  if (base.count() == 1 || base.count() % 2 == 0) return base;
  const MatmulTiles more_rows = make(row_parts + 1, col_parts);
  const MatmulTiles more_cols = make(row_parts, col_parts + 1);
  // one more row tile copies cols more values of op(b) per inner index, one more column tile
  // rows more of op(a): cut the longer side
  const bool rows_first = rows >= cols;
  for (const MatmulTiles& t : rows_first ? std::array{more_rows, more_cols}
                                         : std::array{more_cols, more_rows}) {
    if (t.count() % 2 == 0) return t;
  }
  return base;
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
// op as in gemm, in tiles spread over threads (matmul_tiles). a Linear layer's forward is
// matmul<false, true>(y, x, W, false, &b); its backward d_x = matmul<false, false>(d_y, W) and
// d_W += matmul<true, false>(d_y, x). With a bias, each tile is first assigned the bias rows
// (added to them when accumulating) and the product is added onto that.
template <bool transposed_a, bool transposed_b, class Scalar>
void matmul(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& a,
            const ConstMatrixRef<Scalar>& b, bool accumulate = false,
            const Vector<Scalar>* bias = nullptr) {
  const Index rows = out.rows(), cols = out.cols();
  TESSERA_ASSERT(rows == (transposed_a ? a.cols() : a.rows()) &&
                 cols == (transposed_b ? b.rows() : b.cols()));
  TESSERA_ASSERT(bias == nullptr || bias->size() == cols);
  const MatmulTiles tiling = matmul_tiles(rows, cols);
  const Index tiles = tiling.count();
#pragma omp parallel for schedule(static) if (tiles > 1)
  for (Index tile = 0; tile < tiles; ++tile) {
    // column tiles inner: neighbouring tiles share their rows of op(a)
    const Index r0 = (tile / tiling.col_tiles) * tiling.rows;
    const Index c0 = (tile % tiling.col_tiles) * tiling.cols;
    const Index nr = std::min(tiling.rows, rows - r0);
    const Index nc = std::min(tiling.cols, cols - c0);
    auto block = out.block(r0, c0, nr, nc);
    const auto a_part = [&] {
      if constexpr (transposed_a) return a.middleCols(r0, nr); else return a.middleRows(r0, nr);
    }();
    const auto b_part = [&] {
      if constexpr (transposed_b) return b.middleRows(c0, nc); else return b.middleCols(c0, nc);
    }();
    if (bias != nullptr) {
      const auto bias_row = bias->segment(c0, nc).transpose();
      if (accumulate) {
        block.rowwise() += bias_row;
      } else {
        block.rowwise() = bias_row;
      }
    }
    gemm<transposed_a, transposed_b>(block, a_part, b_part, accumulate || bias != nullptr);
  }
}

}  // namespace tessera::detail
