#pragma once
// Cross-modal retrieval accuracy: how often the best-scoring candidates of a query are
// relevant to it.
//
//   auto scores = tessera::retrieval_scores<float>(texts, images,
//       [&](Index q, Index c) { return caption[q] == caption[c]; });
//   // scores.top1, scores.top5, scores.chance_top1
//
// Candidates are ranked by dot product (the cosine similarity of tessera's unit embeddings),
// the higher first; of equal scores the lower index ranks first, so ties never flatter. A
// query hits at k when one of its k best candidates is relevant. `chance_top1` is what a
// random ranking scores at top-1 on average: the mean over queries of (relevant candidates /
// candidates). Queries with no relevant candidate count as misses (and add 0 to chance).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

namespace tessera {

struct RetrievalScores {
  Index queries = 0;
  double top1 = 0;         // the fraction of queries whose best candidate is relevant
  double top5 = 0;         // ... with a relevant candidate among the best 5
  double chance_top1 = 0;  // the expected top-1 of a random ranking
};

// requires: queries [Q, E], candidates [C, E], Q >= 1, C >= 1; relevant(q, c) -> bool.
template <class Scalar, class Relevant>
RetrievalScores retrieval_scores(const ConstMatrixRef<Scalar>& queries,     // [Q, E]
                                 const ConstMatrixRef<Scalar>& candidates,  // [C, E]
                                 Relevant&& relevant) {
  check(queries.rows() >= 1 && candidates.rows() >= 1 && queries.cols() == candidates.cols(),
        "retrieval_scores: queries are [", queries.rows(), ", ", queries.cols(),
        "] and candidates [", candidates.rows(), ", ", candidates.cols(),
        "], expected non-empty with one width");
  const Matrix<Scalar> similarity = queries * candidates.transpose();  // [Q, C]
  check(similarity.allFinite(), "retrieval_scores: an embedding holds a non-finite value");
  RetrievalScores scores;
  scores.queries = queries.rows();
  std::vector<Index> order(static_cast<std::size_t>(candidates.rows()));
  for (Index q = 0; q < queries.rows(); ++q) {
    std::iota(order.begin(), order.end(), Index{0});
    const auto k = std::min<std::size_t>(5, order.size());
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](Index a, Index b) {
                        const Scalar sa = similarity(q, a), sb = similarity(q, b);
                        return sa > sb || (sa == sb && a < b);
                      });
    bool hit = false;
    for (std::size_t r = 0; r < k; ++r) {
      if (relevant(q, order[r])) {
        hit = true;
        if (r == 0) scores.top1 += 1;
        break;
      }
    }
    if (hit) scores.top5 += 1;
    Index relevant_count = 0;
    for (Index c = 0; c < candidates.rows(); ++c) relevant_count += relevant(q, c) ? 1 : 0;
    scores.chance_top1 += static_cast<double>(relevant_count) / static_cast<double>(candidates.rows());
  }
  const auto q = static_cast<double>(queries.rows());
  scores.top1 /= q;
  scores.top5 /= q;
  scores.chance_top1 /= q;
  return scores;
}

}  // namespace tessera
