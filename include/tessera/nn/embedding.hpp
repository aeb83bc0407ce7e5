#pragma once
// Embedding: row lookup, out[i] = weight[ids[i]] (torch.nn.functional.embedding).
// An id outside [0, V) is an error, never a clamp.
// Backward: grad.weight[ids[i]] += d_out[i] for every i (an id used twice gets both rows).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <cstdint>
#include <span>

namespace tessera::nn {

template <class Scalar>
struct Embedding {
  Matrix<Scalar> weight;  // [V, D]

  Embedding() = default;
  Embedding(Index num_embeddings, Index dim) : weight(Matrix<Scalar>::Zero(num_embeddings, dim)) {}

  Index num_embeddings() const { return weight.rows(); }
  Index dim() const { return weight.cols(); }

  // requires: every id in [0, V); out is [ids.size(), D]. ensures: out is assigned.
  // `what` names the input in the error message ("text_ids").
  void forward(MatrixRef<Scalar> out,                  // [n, D]
               std::span<const std::int64_t> ids,      // [n]
               const char* what = "ids") const {
    TESSERA_ASSERT(out.rows() == static_cast<Index>(ids.size()) && out.cols() == dim());
    for (std::size_t i = 0; i < ids.size(); ++i) {  // check all before writing any row
      check(ids[i] >= 0 && ids[i] < num_embeddings(), what, "[", i, "] = ", ids[i],
            " is out of range [0, ", num_embeddings(), ")");
    }
    for (std::size_t i = 0; i < ids.size(); ++i) {
      out.row(static_cast<Index>(i)) = weight.row(static_cast<Index>(ids[i]));
    }
  }

  // Backward of forward(out, ids), which checked the ids.
  // requires: grad has this layer's shape; d_out [ids.size(), D].
  // ensures: grad.weight is accumulated into, row after row in the order of ids.
  void backward(Embedding& grad,                       // weight [V, D]
                const ConstMatrixRef<Scalar>& d_out,   // [n, D]
                std::span<const std::int64_t> ids      // [n]
  ) const {
    TESSERA_ASSERT(d_out.rows() == static_cast<Index>(ids.size()) && d_out.cols() == dim() &&
                   grad.weight.rows() == num_embeddings() && grad.weight.cols() == dim());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      TESSERA_ASSERT(ids[i] >= 0 && ids[i] < num_embeddings());
      grad.weight.row(static_cast<Index>(ids[i])) += d_out.row(static_cast<Index>(i));
    }
  }
};

}  // namespace tessera::nn
