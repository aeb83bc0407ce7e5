// Retrieval by item identity and zero-shot accuracy (train/retrieval.hpp) against cases
// computed by hand and against open_clip's get_clip_metrics written out (a full descending
// sort per query, the own item's position in it), on random embeddings where no two scores
// tie. The attribute-matched retrieval_scores is tested in test_train.cpp.

#include <tessera/train/retrieval.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <numeric>
#include <vector>

namespace tessera {
namespace test_retrieval {

using ::testing::HasSubstr;

constexpr float nan = std::numeric_limits<float>::quiet_NaN();

// Unit rows of a seeded random [rows, cols] matrix.
Matrix<float> unit_rows(Index rows, Index cols, unsigned seed) {
  std::srand(seed);
  Matrix<float> m = Matrix<float>::Random(rows, cols);
  m.rowwise().normalize();
  return m;
}

// open_clip's get_clip_metrics for one direction, written out: ranking = argsort(logits,
// descending); preds = where(ranking == ground_truth); mean_rank = preds.mean() + 1,
// median_rank = floor(median(preds)) + 1, R@k = mean(preds < k).
IdentityRetrievalScores open_clip_metrics(const Matrix<float>& queries, const Matrix<float>& candidates) {
  const Matrix<float> logits = queries * candidates.transpose();
  std::vector<double> preds;
  for (Index q = 0; q < logits.rows(); ++q) {
    std::vector<Index> ranking(static_cast<std::size_t>(logits.cols()));
    std::iota(ranking.begin(), ranking.end(), Index{0});
    std::stable_sort(ranking.begin(), ranking.end(),
                     [&](Index a, Index b) { return logits(q, a) > logits(q, b); });
    preds.push_back(static_cast<double>(std::find(ranking.begin(), ranking.end(), q) - ranking.begin()));
  }
  IdentityRetrievalScores s;
  s.queries = logits.rows();
  const auto n = static_cast<double>(preds.size());
  for (const double p : preds) {
    s.mean_rank += p / n;
    s.recall_at_1 += p < 1 ? 1 / n : 0;
    s.recall_at_5 += p < 5 ? 1 / n : 0;
    s.recall_at_10 += p < 10 ? 1 / n : 0;
  }
  s.mean_rank += 1;
  std::sort(preds.begin(), preds.end());
  const std::size_t mid = preds.size() / 2;
  const double median = preds.size() % 2 ? preds[mid] : (preds[mid - 1] + preds[mid]) / 2;
  s.median_rank = std::floor(median) + 1;
  return s;
}

void expect_scores(const IdentityRetrievalScores& got, const IdentityRetrievalScores& want) {
  constexpr double sums = 1e-12;  // the same counts summed in another order
  EXPECT_EQ(got.queries, want.queries);
  EXPECT_NEAR(got.recall_at_1, want.recall_at_1, sums);
  EXPECT_NEAR(got.recall_at_5, want.recall_at_5, sums);
  EXPECT_NEAR(got.recall_at_10, want.recall_at_10, sums);
  EXPECT_NEAR(got.mean_rank, want.mean_rank, sums);
  EXPECT_EQ(got.median_rank, want.median_rank);
}

// ---- By item identity -------------------------------------------------------------------------

TEST(IdentityRetrieval, RanksByHandWithATieCountedAgainstTheQuery) {
  Matrix<float> queries(4, 2), candidates(4, 2);
  candidates << 1, 0, 0, 1, -1, 0, 0, -1;
  queries << 1, 0,   // scores 1, 0, -1, 0: its own (0) first, rank 0
      1, 0.5f,       // 1, 0.5, -1, -0.5: candidate 0 above its own, rank 1
      1, 0,          // 1, 0, -1, 0: its own (2) last, rank 3
      0.6f, -0.6f;   // 0.6, -0.6, -0.6, 0.6: its own (3) ties with 0, rank 1 (not 0)
  const IdentityRetrievalScores s = identity_retrieval_scores<float>(queries, candidates);
  EXPECT_EQ(s.queries, 4);
  EXPECT_DOUBLE_EQ(s.recall_at_1, 1.0 / 4);
  EXPECT_DOUBLE_EQ(s.recall_at_5, 1.0);
  EXPECT_DOUBLE_EQ(s.recall_at_10, 1.0);
  EXPECT_DOUBLE_EQ(s.mean_rank, (0 + 1 + 3 + 1) / 4.0 + 1);
  EXPECT_DOUBLE_EQ(s.median_rank, 2);  // ranks 0 1 1 3: median 1, 1-based 2
  // one query, one candidate: rank 0
  const IdentityRetrievalScores one =
      identity_retrieval_scores<float>(queries.topRows(1), candidates.topRows(1));
  EXPECT_DOUBLE_EQ(one.recall_at_1, 1.0);
  EXPECT_DOUBLE_EQ(one.mean_rank, 1.0);
  // all scores equal: every query ranks last among N
  const Matrix<float> same = Matrix<float>::Ones(4, 2);
  const IdentityRetrievalScores tied = identity_retrieval_scores<float>(same, same);
  EXPECT_DOUBLE_EQ(tied.recall_at_1, 0.0);
  EXPECT_DOUBLE_EQ(tied.mean_rank, 4.0);
}

TEST(IdentityRetrieval, MedianAndMeanAsOpenClipReportsThem) {
  // an even count: median of 0 0 1 3 is 0.5, floored to 0, 1-based 1
  const IdentityRetrievalScores even = detail::summarize_ranks({3, 0, 1, 0});
  EXPECT_DOUBLE_EQ(even.median_rank, 1);
  EXPECT_DOUBLE_EQ(even.mean_rank, 2);
  EXPECT_DOUBLE_EQ(even.recall_at_1, 0.5);
  const IdentityRetrievalScores odd = detail::summarize_ranks({9, 0, 2, 3, 12});
  EXPECT_DOUBLE_EQ(odd.median_rank, 4);
  EXPECT_DOUBLE_EQ(odd.recall_at_5, 3.0 / 5);
  EXPECT_DOUBLE_EQ(odd.recall_at_10, 4.0 / 5);
  EXPECT_DOUBLE_EQ(odd.mean_rank, 26.0 / 5 + 1);
}

TEST(IdentityRetrieval, EqualsOpenClipsMetricsOnRandomEmbeddings) {
  // 2100 items: more than one block of scores (detail::retrieval_block_values / 2100 rows),
  // and related views (the candidates are noisy queries) so the recalls are neither 0 nor 1
  for (const Index n : {Index{37}, Index{2100}}) {
    SCOPED_TRACE(n);
    const Matrix<float> queries = unit_rows(n, 8, 5);
    Matrix<float> candidates = queries + 1.5f * unit_rows(n, 8, 6);
    candidates.rowwise().normalize();
    const IdentityRetrievalScores got = identity_retrieval_scores<float>(queries, candidates);
    expect_scores(got, open_clip_metrics(queries, candidates));
    EXPECT_GT(got.recall_at_1, 0.0);
    EXPECT_LT(got.recall_at_1, 1.0);
    EXPECT_GT(got.median_rank, 1.0) << "ranks past the first, for the median to mean something";
    // and the relation form agrees at top-1 and top-5 (no ties in random floats)
    const RetrievalScores relation =
        retrieval_scores<float>(queries, candidates, [](Index q, Index c) { return q == c; });
    EXPECT_NEAR(relation.top1, got.recall_at_1, 1e-12);
    EXPECT_NEAR(relation.top5, got.recall_at_5, 1e-12);
  }
}

TEST(IdentityRetrieval, EveryOrderedPairOverTheItemsThatHaveBoth) {
  // 6 items: text for all, image for 0-3, audio for 2-4 and item 5's audio unread (absent,
  // even as NaN); video for item 5 only, which no other modality of it shares but text
  const Index n = 6, e = 4;
  std::vector<ItemEmbeddings<float>> m(4);
  m[0] = {"text", unit_rows(n, e, 11), {}};
  m[1] = {"image", unit_rows(n, e, 12), {true, true, true, true, false, false}};
  m[2] = {"audio", unit_rows(n, e, 13), {false, false, true, true, true, false}};
  m[2].embeddings.row(5).setConstant(nan);
  m[3] = {"video", unit_rows(n, e, 14), {false, false, false, false, false, true}};
  const std::vector<PairRetrieval> rows = identity_retrieval<float>(m);
  // image-video and audio-video share no item: left out
  ASSERT_EQ(rows.size(), 8u);
  const std::vector<std::pair<std::string, std::string>> order = {
      {"text", "image"}, {"image", "text"}, {"text", "audio"}, {"audio", "text"},
      {"text", "video"}, {"video", "text"}, {"image", "audio"}, {"audio", "image"}};
  for (std::size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r].query, order[r].first) << r;
    EXPECT_EQ(rows[r].candidate, order[r].second) << r;
  }
  const auto rows_of = [&](const Matrix<float>& x, std::vector<Index> items) {
    Matrix<float> out(static_cast<Index>(items.size()), e);
    for (std::size_t i = 0; i < items.size(); ++i) out.row(static_cast<Index>(i)) = x.row(items[i]);
    return out;
  };
  const auto expect_pair = [&](const PairRetrieval& row, const Matrix<float>& q, const Matrix<float>& c) {
    SCOPED_TRACE(row.query + " -> " + row.candidate);
    expect_scores(row.scores, identity_retrieval_scores<float>(q, c));
  };
  expect_pair(rows[0], rows_of(m[0].embeddings, {0, 1, 2, 3}), rows_of(m[1].embeddings, {0, 1, 2, 3}));
  expect_pair(rows[1], rows_of(m[1].embeddings, {0, 1, 2, 3}), rows_of(m[0].embeddings, {0, 1, 2, 3}));
  expect_pair(rows[3], rows_of(m[2].embeddings, {2, 3, 4}), rows_of(m[0].embeddings, {2, 3, 4}));
  EXPECT_EQ(rows[4].scores.queries, 1);
  EXPECT_DOUBLE_EQ(rows[4].scores.recall_at_1, 1.0);
  expect_pair(rows[6], rows_of(m[1].embeddings, {2, 3}), rows_of(m[2].embeddings, {2, 3}));
}

TEST(IdentityRetrieval, NonFiniteEmbeddingsAndMismatchedShapesAreErrors) {
  Matrix<float> a = unit_rows(3, 4, 21), b = unit_rows(3, 4, 22);
  Matrix<float> bad = b;
  bad(1, 2) = nan;
  EXPECT_THAT(test::error_of([&] { identity_retrieval_scores<float>(a, bad); }),
              HasSubstr("candidates row 1 holds a non-finite value (nan at column 2)"));
  bad(1, 2) = std::numeric_limits<float>::infinity();
  EXPECT_THAT(test::error_of([&] { identity_retrieval_scores<float>(bad, a); }),
              HasSubstr("queries row 1 holds a non-finite value (inf at column 2)"));
  // finite values whose products overflow
  const Matrix<float> huge = Matrix<float>::Constant(3, 4, 1e30f);
  EXPECT_THAT(test::error_of([&] { identity_retrieval_scores<float>(huge, huge); }),
              HasSubstr("is not finite"));
  EXPECT_THAT(test::error_of([&] { identity_retrieval_scores<float>(a, b.topRows(2)); }),
              HasSubstr("expected one non-empty shape"));
  EXPECT_THAT(test::error_of([&] { identity_retrieval_scores<float>(Matrix<float>(0, 4), Matrix<float>(0, 4)); }),
              HasSubstr("expected one non-empty shape"));

  std::vector<ItemEmbeddings<float>> m(2);
  m[0] = {"text", a, {}};
  m[1] = {"image", b, {true, false, true}};
  m[1].embeddings(2, 0) = nan;
  EXPECT_THAT(test::error_of([&] { identity_retrieval<float>(m); }),
              HasSubstr("modality \"image\", item 2: the embedding holds a non-finite value"));
  m[1].present = {true, false};
  EXPECT_THAT(test::error_of([&] { identity_retrieval<float>(m); }),
              HasSubstr("modality \"image\" says which of 2 items it has, expected 3"));
  m[1] = {"image", unit_rows(3, 5, 23), {}};
  EXPECT_THAT(test::error_of([&] { identity_retrieval<float>(m); }),
              HasSubstr("modality \"image\" has embeddings [3, 5], expected [3, 4]"));
  EXPECT_THAT(test::error_of([&] { identity_retrieval<float>(std::span<const ItemEmbeddings<float>>()); }),
              HasSubstr("no modalities"));
}

// ---- Zero-shot classification -------------------------------------------------------------

TEST(ZeroShot, ClassifierIsTheNormalizedMeanOfNormalizedTemplates) {
  Matrix<float> texts(4, 2);  // two classes of two templates each
  texts << 1, 0, 0, 2,        // class 0: (1, 0) and (0, 1) once normalized
      -3, 0, -1, 0;           // class 1: (-1, 0) twice
  const Matrix<float> classes = zero_shot_classifier<float>(texts, 2);
  ASSERT_EQ(classes.rows(), 2);
  const float h = std::sqrt(0.5f);
  EXPECT_NEAR(classes(0, 0), h, 1e-7);
  EXPECT_NEAR(classes(0, 1), h, 1e-7);
  EXPECT_NEAR(classes(1, 0), -1, 1e-7);
  EXPECT_NEAR(classes(1, 1), 0, 1e-7);
  EXPECT_TRUE(zero_shot_classifier<float>(texts, 1).isApprox(texts.rowwise().normalized()));

  EXPECT_THAT(test::error_of([&] { zero_shot_classifier<float>(texts, 3); }),
              HasSubstr("4 text embeddings are not a whole number of classes of 3 templates"));
  Matrix<float> zero = texts;
  zero.row(3).setZero();
  EXPECT_THAT(test::error_of([&] { zero_shot_classifier<float>(zero, 2); }),
              HasSubstr("class 1, template 1 has norm 0"));
  zero.row(3) << nan, 0;
  EXPECT_THAT(test::error_of([&] { zero_shot_classifier<float>(zero, 2); }),
              HasSubstr("class 1, template 1 has norm nan"));
  Matrix<float> opposite(2, 2);
  opposite << 1, 0, -1, 0;
  EXPECT_THAT(test::error_of([&] { zero_shot_classifier<float>(opposite, 2); }),
              HasSubstr("cancel out"));
}

TEST(ZeroShot, TopOneAndTopFiveByHandWithTiesAgainstTheItem) {
  // seven classes along directions of the plane: class k at angle k * 30 degrees
  const Index k = 7;
  Matrix<float> classes(k, 2);
  for (Index c = 0; c < k; ++c) {
    const double angle = static_cast<double>(c) * std::numbers::pi / 6;
    classes.row(c) << static_cast<float>(std::cos(angle)), static_cast<float>(std::sin(angle));
  }
  Matrix<float> items(4, 2);
  items << 1, 0,   // class 0 closest: 0, then 1, then 2 ... its label 0 (right), label 6 (rank 6)
      1, 0,
      0, 1,        // class 3 closest, then 2 and 4 (tied), 1 and 5, 0 and 6
      1, 0;
  const std::vector<Index> labels = {0, 6, 2, 3};
  const ZeroShotAccuracy acc = zero_shot_accuracy<float>(items, labels, classes);
  EXPECT_EQ(acc.items, 4);
  EXPECT_EQ(acc.classes, 7);
  // item 0 right; item 1 has 6 classes above; item 2 ties with class 4 (rank 2: 3 and 4 at
  // least as high); item 3: classes 0, 1, 2 above class 3 (rank 3)
  EXPECT_DOUBLE_EQ(acc.top1, 1.0 / 4);
  EXPECT_DOUBLE_EQ(acc.top5, 3.0 / 4);
  // five classes or fewer: top-5 is every item
  const ZeroShotAccuracy few = zero_shot_accuracy<float>(items, std::vector<Index>{4, 0, 1, 2},
                                                         classes.topRows(5));
  EXPECT_DOUBLE_EQ(few.top5, 1.0);
  EXPECT_DOUBLE_EQ(few.top1, 1.0 / 4);
}

TEST(ZeroShot, BadLabelsAndNonFiniteEmbeddingsAreErrors) {
  const Matrix<float> classes = unit_rows(3, 4, 31);
  Matrix<float> items = unit_rows(2, 4, 32);
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(items, std::vector<Index>{0, 3}, classes); }),
              HasSubstr("item 1 has label 3, expected a class index in [0, 3)"));
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(items, std::vector<Index>{-1, 0}, classes); }),
              HasSubstr("item 0 has label -1"));
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(items, std::vector<Index>{0}, classes); }),
              HasSubstr("1 labels for 2 items"));
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(items, std::vector<Index>{0, 1}, unit_rows(3, 5, 1)); }),
              HasSubstr("expected non-empty with one width"));
  items(1, 0) = nan;
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(items, std::vector<Index>{0, 1}, classes); }),
              HasSubstr("items row 1 holds a non-finite value"));
  Matrix<float> bad_classes = classes;
  bad_classes(2, 3) = -std::numeric_limits<float>::infinity();
  EXPECT_THAT(test::error_of([&] { zero_shot_accuracy<float>(classes, std::vector<Index>{0, 1, 2}, bad_classes); }),
              HasSubstr("classes row 2 holds a non-finite value (-inf at column 3)"));
}

}  // namespace test_retrieval
}  // namespace tessera
