#pragma once
// Cross-modal retrieval and zero-shot classification accuracy: how often the best-scoring
// candidates of a query are relevant to it. Candidates are ranked by dot product (the cosine
// similarity of tessera's unit embeddings), the higher first.
//
// Two ways to say what is relevant:
//
// By item identity (open_clip's get_clip_metrics, src/open_clip_train/train.py): a held-out set
// of N items, each with some modalities; the relevant candidate of item i's query is item i's
// other view. For every ordered pair of modalities, over the items that have both:
//
//   auto rows = tessera::identity_retrieval<float>(modalities);  // ItemEmbeddings per modality
//   // rows[r].query, .candidate, .scores.recall_at_1 / _5 / _10, .mean_rank, .median_rank
//
// A query's rank is the number of other candidates scoring at least as high as its own (0 when
// it is strictly the best), so a tie always counts against it: ties never flatter. recall@k is
// the fraction of queries with rank < k; mean_rank and median_rank are 1-based as open_clip
// reports them (mean + 1, floor(median) + 1).
//
// Zero-shot classification (CLIP): each item has a label among K classes; the class embeddings
// are the caller's, usually zero_shot_classifier() over the label texts put through templates
// ("a photo of a {}."). top-1 / top-5 accuracy with the same pessimistic ties:
//
//   auto classes = tessera::zero_shot_classifier<float>(template_embeddings, templates);
//   auto acc = tessera::zero_shot_accuracy<float>(image_embeddings, labels, classes);
//
// By a relation (retrieval_scores, the synthetic world's attribute-matched table): any
// relevant(q, c); of equal scores the lower candidate index ranks first.
//
//   auto scores = tessera::retrieval_scores<float>(texts, images,
//       [&](Index q, Index c) { return caption[q] == caption[c]; });
//   // scores.top1, scores.top5, scores.chance_top1
//
// `chance_top1` is what a random ranking scores at top-1 on average: the mean over queries of
// (relevant candidates / candidates). Queries with no relevant candidate count as misses (and
// add 0 to chance).
//
// Every embedding value must be finite: a NaN or an infinity is a tessera::Error naming the
// modality and the item (a NaN would compare false with everything and rank anywhere).

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace tessera {

struct RetrievalScores {
  Index queries = 0;
  double top1 = 0;         // the fraction of queries whose best candidate is relevant
  double top5 = 0;         // ... with a relevant candidate among the best 5
  double chance_top1 = 0;  // the expected top-1 of a random ranking
};

// The synthetic world's relation (tessera-synth, docs/data.md): every item has four attributes,
// and a view shows some of them: text and video all four, an image no motion (a still), audio
// no position (mono). A candidate is relevant to a query when it shares the attributes that
// both views show (tessera-train's held-out table; tools/quantization_accuracy's).
inline constexpr std::array<const char*, 4> synthetic_attribute_names{"color", "shape", "position",
                                                                      "motion"};
inline constexpr std::array<std::array<bool, 4>, num_modalities> synthetic_view_shows{{
    {true, true, true, true},   // text
    {true, true, true, false},  // image
    {true, true, false, true},  // audio
    {true, true, true, true}}};  // video

// Which attributes retrieval from `query` views to `candidate` views compares: those both show.
inline std::array<bool, 4> synthetic_attributes_compared(Modality query, Modality candidate) {
  std::array<bool, 4> compared{};
  for (std::size_t k = 0; k < compared.size(); ++k) {
    compared[k] = synthetic_view_shows[modality_index(query)][k] &&
                  synthetic_view_shows[modality_index(candidate)][k];
  }
  return compared;
}

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

// ---- By item identity (open_clip's metrics) -------------------------------------------------

// What identity retrieval measured for one ordered pair of modalities.
struct IdentityRetrievalScores {
  Index queries = 0;        // the items that have both modalities (queries = candidates)
  double recall_at_1 = 0;   // the fraction of queries whose own item's view ranks first
  double recall_at_5 = 0;   // ... among the best 5
  double recall_at_10 = 0;  // ... among the best 10
  double mean_rank = 0;     // the mean 1-based rank of the own item's view
  double median_rank = 0;   // floor(median of the 0-based ranks) + 1, as open_clip reports it
};

namespace detail {

// How many similarities are computed at once: queries are taken in blocks of
// max(1, retrieval_block_values / candidates) rows, so a held-out set of 100k items needs
// 16 MB (float) for its scores, not 40 GB.
inline constexpr Index retrieval_block_values = Index{1} << 22;

// Throws unless every value of `embeddings` is finite, naming `what` and the row.
template <class Scalar>
void check_finite_rows(const ConstMatrixRef<Scalar>& embeddings, const std::string& what) {
  for (Index r = 0; r < embeddings.rows(); ++r) {
    if (!embeddings.row(r).allFinite()) {
      Index c = 0;
      while (std::isfinite(static_cast<double>(embeddings(r, c)))) ++c;
      fail(what, " row ", r, " holds a non-finite value (", embeddings(r, c), " at column ", c,
           "): the embeddings of a model that diverged, or of an input it could not encode");
    }
  }
}

// For each query row q: how many candidates other than target[q] score at least as high as
// target[q] (the pessimistic 0-based rank). queries [Q, E], candidates [C, E], target [Q].
template <class Scalar>
std::vector<Index> pessimistic_ranks(const ConstMatrixRef<Scalar>& queries,     // [Q, E]
                                     const ConstMatrixRef<Scalar>& candidates,  // [C, E]
                                     std::span<const Index> target,             // [Q]
                                     const char* what) {
  std::vector<Index> ranks(static_cast<std::size_t>(queries.rows()));
  const Index block = std::max<Index>(1, retrieval_block_values / std::max<Index>(1, candidates.rows()));
  for (Index first = 0; first < queries.rows(); first += block) {
    const Index rows = std::min(block, queries.rows() - first);
    const Matrix<Scalar> similarity = queries.middleRows(first, rows) * candidates.transpose();  // [B, C]
    check(similarity.allFinite(), what, ": a similarity of queries ", first, "..",
          first + rows - 1, " is not finite (embeddings too large to multiply: not unit vectors?)");
    for (Index r = 0; r < rows; ++r) {
      const Index t = target[static_cast<std::size_t>(first + r)];
      const Scalar own = similarity(r, t);
      Index above = 0;
      for (Index c = 0; c < similarity.cols(); ++c) above += (c != t && similarity(r, c) >= own) ? 1 : 0;
      ranks[static_cast<std::size_t>(first + r)] = above;
    }
  }
  return ranks;
}

// open_clip's summary of 0-based ranks.
inline IdentityRetrievalScores summarize_ranks(std::vector<Index> ranks) {
  IdentityRetrievalScores s;
  s.queries = static_cast<Index>(ranks.size());
  if (ranks.empty()) return s;
  const auto n = static_cast<double>(ranks.size());
  double sum = 0;
  for (const Index r : ranks) {
    sum += static_cast<double>(r);
    s.recall_at_1 += r < 1 ? 1 : 0;
    s.recall_at_5 += r < 5 ? 1 : 0;
    s.recall_at_10 += r < 10 ? 1 : 0;
  }
  s.recall_at_1 /= n;
  s.recall_at_5 /= n;
  s.recall_at_10 /= n;
  s.mean_rank = sum / n + 1;
  std::sort(ranks.begin(), ranks.end());
  const std::size_t mid = ranks.size() / 2;
  const double median = ranks.size() % 2 == 1
                            ? static_cast<double>(ranks[mid])
                            : (static_cast<double>(ranks[mid - 1]) + static_cast<double>(ranks[mid])) / 2;
  s.median_rank = std::floor(median) + 1;
  return s;
}

}  // namespace detail

// Retrieval by identity between two views of the same N items: row i of `queries` and row i
// of `candidates` are one item; each query's relevant candidate is its own item's.
// requires: queries and candidates [N, E], N >= 1, every value finite.
template <class Scalar>
IdentityRetrievalScores identity_retrieval_scores(const ConstMatrixRef<Scalar>& queries,     // [N, E]
                                                  const ConstMatrixRef<Scalar>& candidates) {  // [N, E]
  check(queries.rows() >= 1 && queries.rows() == candidates.rows() &&
            queries.cols() == candidates.cols(),
        "identity_retrieval_scores: queries are [", queries.rows(), ", ", queries.cols(),
        "] and candidates [", candidates.rows(), ", ", candidates.cols(),
        "], expected one non-empty shape (row i of both is item i)");
  detail::check_finite_rows<Scalar>(queries, "identity_retrieval_scores: queries");
  detail::check_finite_rows<Scalar>(candidates, "identity_retrieval_scores: candidates");
  std::vector<Index> target(static_cast<std::size_t>(queries.rows()));
  std::iota(target.begin(), target.end(), Index{0});
  return detail::summarize_ranks(
      detail::pessimistic_ranks<Scalar>(queries, candidates, target, "identity_retrieval_scores"));
}

// One modality's embeddings of a held-out set of N items.
template <class Scalar>
struct ItemEmbeddings {
  std::string modality;       // its name ("text", "image", a custom modality's), for the results
  Matrix<Scalar> embeddings;  // [N, E] row i: item i's embedding (rows of absent items unread)
  std::vector<bool> present;  // [N] whether item i has this modality; empty: every item has it
};

// One ordered pair of modalities' identity retrieval.
struct PairRetrieval {
  std::string query, candidate;  // the modalities' names
  IdentityRetrievalScores scores;
};

// Identity retrieval for every ordered pair of the given modalities, over the items that have
// both (the same items as queries and as candidates): for modalities a, b, c in that order, the
// rows are a->b, b->a, a->c, c->a, b->c, c->b. A pair no item has both of is left out.
// requires: every modality [N, E] with one N and one E; present empty or [N]; the present rows
// finite.
template <class Scalar>
std::vector<PairRetrieval> identity_retrieval(std::span<const ItemEmbeddings<Scalar>> modalities) {
  check(!modalities.empty(), "identity_retrieval: no modalities");
  const Index n = modalities.front().embeddings.rows(), e = modalities.front().embeddings.cols();
  for (const auto& m : modalities) {
    check(m.embeddings.rows() == n && m.embeddings.cols() == e, "identity_retrieval: modality \"",
          m.modality, "\" has embeddings [", m.embeddings.rows(), ", ", m.embeddings.cols(),
          "], expected [", n, ", ", e, "] like \"", modalities.front().modality,
          "\" (one row per item of the set)");
    check(m.present.empty() || static_cast<Index>(m.present.size()) == n,
          "identity_retrieval: modality \"", m.modality, "\" says which of ", m.present.size(),
          " items it has, expected ", n);
    for (Index i = 0; i < n; ++i) {
      if (!m.present.empty() && !m.present[static_cast<std::size_t>(i)]) continue;
      if (m.embeddings.row(i).allFinite()) continue;
      fail("identity_retrieval: modality \"", m.modality, "\", item ", i,
           ": the embedding holds a non-finite value (a model that diverged, or an input it "
           "could not encode)");
    }
  }
  const auto has = [](const ItemEmbeddings<Scalar>& m, Index i) {
    return m.present.empty() || m.present[static_cast<std::size_t>(i)];
  };
  std::vector<PairRetrieval> rows;
  for (std::size_t a = 0; a < modalities.size(); ++a) {
    for (std::size_t b = a + 1; b < modalities.size(); ++b) {
      std::vector<Index> both;
      for (Index i = 0; i < n; ++i) {
        if (has(modalities[a], i) && has(modalities[b], i)) both.push_back(i);
      }
      if (both.empty()) continue;
      const auto count = static_cast<Index>(both.size());
      Matrix<Scalar> va(count, e), vb(count, e);  // [n, E] each: the items with both
      for (Index r = 0; r < count; ++r) {
        va.row(r) = modalities[a].embeddings.row(both[static_cast<std::size_t>(r)]);
        vb.row(r) = modalities[b].embeddings.row(both[static_cast<std::size_t>(r)]);
      }
      rows.push_back({modalities[a].modality, modalities[b].modality,
                      identity_retrieval_scores<Scalar>(va, vb)});
      rows.push_back({modalities[b].modality, modalities[a].modality,
                      identity_retrieval_scores<Scalar>(vb, va)});
    }
  }
  return rows;
}

// ---- Zero-shot classification (CLIP) --------------------------------------------------------

// CLIP's zero-shot classifier (open_clip's build_zero_shot_classifier): class k's embedding is
// the normalized mean of the normalized embeddings of its T texts (its label put into each of
// T templates). template_embeddings holds them class by class: rows [k T, (k + 1) T) are class
// k's.
// requires: template_embeddings [K T, E] with K >= 1, T >= 1, rows finite and non-zero.
// ensures: returns [K, E] unit rows.
template <class Scalar>
Matrix<Scalar> zero_shot_classifier(const ConstMatrixRef<Scalar>& template_embeddings,  // [K T, E]
                                    Index templates) {
  check(templates >= 1 && template_embeddings.rows() >= templates &&
            template_embeddings.rows() % templates == 0,
        "zero_shot_classifier: ", template_embeddings.rows(),
        " text embeddings are not a whole number of classes of ", templates,
        " templates (rows [k T, (k + 1) T) are class k's)");
  const Index classes = template_embeddings.rows() / templates;
  Matrix<Scalar> out = Matrix<Scalar>::Zero(classes, template_embeddings.cols());  // [K, E]
  for (Index k = 0; k < classes; ++k) {
    for (Index t = 0; t < templates; ++t) {
      const auto row = template_embeddings.row(k * templates + t);
      const Scalar norm = row.norm();
      check(std::isfinite(static_cast<double>(norm)) && norm > Scalar(0),
            "zero_shot_classifier: the text embedding of class ", k, ", template ", t,
            " has norm ", norm, " (expected finite and non-zero)");
      out.row(k) += row / norm;
    }
    out.row(k) /= static_cast<Scalar>(templates);
    const Scalar norm = out.row(k).norm();
    check(norm > Scalar(0), "zero_shot_classifier: the templates of class ", k,
          " cancel out (their mean embedding is zero)");
    out.row(k) /= norm;
  }
  return out;
}

// What zero-shot classification measured.
struct ZeroShotAccuracy {
  Index items = 0;
  Index classes = 0;
  double top1 = 0;  // the fraction of items whose label scores highest
  double top5 = 0;  // ... among the best 5 (1 when there are 5 classes or fewer)
};

// Zero-shot accuracy of items against class embeddings: item i is right at k when fewer than
// k other classes score at least as high as its label (ties count against it).
// requires: items [N, E] and classes [K, E] with N, K >= 1, finite; labels [N] in [0, K).
template <class Scalar>
ZeroShotAccuracy zero_shot_accuracy(const ConstMatrixRef<Scalar>& items,    // [N, E]
                                    std::span<const Index> labels,          // [N]
                                    const ConstMatrixRef<Scalar>& classes) {  // [K, E]
  check(items.rows() >= 1 && classes.rows() >= 1 && items.cols() == classes.cols(),
        "zero_shot_accuracy: items are [", items.rows(), ", ", items.cols(), "] and classes [",
        classes.rows(), ", ", classes.cols(), "], expected non-empty with one width");
  check(static_cast<Index>(labels.size()) == items.rows(), "zero_shot_accuracy: ",
        labels.size(), " labels for ", items.rows(), " items, expected one per item");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    check(labels[i] >= 0 && labels[i] < classes.rows(), "zero_shot_accuracy: item ", i,
          " has label ", labels[i], ", expected a class index in [0, ", classes.rows(), ")");
  }
  detail::check_finite_rows<Scalar>(items, "zero_shot_accuracy: items");
  detail::check_finite_rows<Scalar>(classes, "zero_shot_accuracy: classes");
  const std::vector<Index> ranks =
      detail::pessimistic_ranks<Scalar>(items, classes, labels, "zero_shot_accuracy");
  ZeroShotAccuracy acc;
  acc.items = items.rows();
  acc.classes = classes.rows();
  for (const Index r : ranks) {
    acc.top1 += r < 1 ? 1 : 0;
    acc.top5 += r < 5 ? 1 : 0;
  }
  acc.top1 /= static_cast<double>(acc.items);
  acc.top5 /= static_cast<double>(acc.items);
  return acc;
}

}  // namespace tessera
