// Zero-shot classification and the search index of a folder (include/tessera/search_index.hpp):
// zero_shot_probabilities against the softmax written out in double, the label list and its
// templates, ranking and search orders (ties in column and path order), the index file's round
// trip and every malformed table refused with a tessera::Error naming the file, then
// update_search_index on a small folder with the ImageBind fixture: built, reused unchanged, a
// touched file embedded again alone, a removed one dropped, a corrupt one recorded and not
// retried, and each embedding equal to what the Pipeline gives for the same file.

#include <gtest/gtest.h>

#if !defined(TESSERA_HAS_ICU) || !defined(TESSERA_HAS_STB)
// search_index.hpp embeds through the Pipeline, whose text and image front ends need them.
TEST(SearchIndex, NeedsIcuAndStb) {
  GTEST_SKIP() << "tessera was configured without ICU or stb: search_index.hpp is not built";
}
#else

#include <tessera/io/y4m.hpp>
#include <tessera/search_index.hpp>

#include "pretrained_fixture.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace tessera {
namespace test_search_index {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using test::TempDir;
using test::error_of;
using test::imagebind_with_tokenizer;
using test::pretrained_dir;

// The Pipeline packs a batch's samples differently from one modality's batch; the embeddings
// then differ by float rounding only (test_pretrained.cpp measures the same).
constexpr double same_embedding = 1e-6;

// ---- zero_shot_probabilities ------------------------------------------------------------------

// The formula written out in double: cos = a.b / (|a| |b|), p = exp(s cos) / sum exp(s cos).
struct Expected {
  Matrix<double> cosines, probabilities;
};
Expected softmax_written_out(const Matrix<double>& inputs, const Matrix<double>& texts,
                             double logit_scale) {
  Expected out{Matrix<double>(inputs.rows(), texts.rows()),
               Matrix<double>(inputs.rows(), texts.rows())};
  for (Index n = 0; n < inputs.rows(); ++n) {
    double sum = 0;
    for (Index k = 0; k < texts.rows(); ++k) {
      double dot = 0, a = 0, b = 0;
      for (Index e = 0; e < inputs.cols(); ++e) {
        dot += inputs(n, e) * texts(k, e);
        a += inputs(n, e) * inputs(n, e);
        b += texts(k, e) * texts(k, e);
      }
      out.cosines(n, k) = dot / std::sqrt(a * b);
      out.probabilities(n, k) = std::exp(std::exp(logit_scale) * out.cosines(n, k));
      sum += out.probabilities(n, k);
    }
    out.probabilities.row(n) /= sum;
  }
  return out;
}

Matrix<double> random_rows(Index rows, Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0, 1);
  Matrix<double> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
  return m;
}

TEST(ZeroShot, ProbabilitiesAreTheSoftmaxOfTheScaledCosines) {
  // Rows of any norm (the function normalises), CLIP's logit scale ln 100 and others.
  const Matrix<double> inputs = random_rows(3, 5, 1) * 3.0;
  const Matrix<double> texts = random_rows(4, 5, 2) * 0.5;
  for (const double logit_scale : {std::log(100.0), 0.0, -1.0, 2.5}) {
    SCOPED_TRACE(logit_scale);
    const Expected want = softmax_written_out(inputs, texts, logit_scale);
    const auto got = zero_shot_probabilities(inputs, texts, logit_scale);
    EXPECT_TRUE(test::all_close(got.cosines, want.cosines, 1e-14, 0));
    EXPECT_TRUE(test::all_close(got.probabilities, want.probabilities, 1e-14, 1e-12));
    for (Index n = 0; n < got.probabilities.rows(); ++n) {
      EXPECT_NEAR(got.probabilities.row(n).sum(), 1.0, 1e-14);
    }
    // float: the same to float rounding
    const auto f = zero_shot_probabilities<float>(inputs.cast<float>(), texts.cast<float>(),
                                                  static_cast<float>(logit_scale));
    EXPECT_TRUE(test::all_close(f.probabilities, want.probabilities, 1e-5, 1e-4));
    for (Index n = 0; n < f.probabilities.rows(); ++n) {
      EXPECT_NEAR(f.probabilities.row(n).sum(), 1.0f, 1e-6f);
    }
  }
}

TEST(ZeroShot, LargeScaledLogitsDoNotOverflow) {
  // exp(50) * cos is far beyond exp's range: the softmax subtracts the row's largest first.
  Matrix<double> inputs(1, 2);
  inputs << 1, 0;
  Matrix<double> texts(3, 2);
  texts << 1, 0, 0, 1, -1, 0;
  const auto got = zero_shot_probabilities(inputs, texts, 50.0);
  EXPECT_EQ(got.probabilities(0, 0), 1.0);
  EXPECT_EQ(got.probabilities(0, 1), 0.0);
  EXPECT_EQ(got.probabilities(0, 2), 0.0);
  const auto f = zero_shot_probabilities<float>(inputs.cast<float>(), texts.cast<float>(), 50.0f);
  EXPECT_EQ(f.probabilities(0, 0), 1.0f);
}

TEST(ZeroShot, TiedLabelsShareTheProbabilityAndOneLabelIsCertain) {
  const Matrix<double> inputs = random_rows(2, 4, 3);
  Matrix<double> texts = random_rows(3, 4, 4);
  // the same direction, another length: the same cosine. A power of two scales every step of
  // the normalisation exactly, so the tie is exact in floating point too (a factor of 7 left
  // the cosines a few ulps apart, which exp(100 cos) turns into 30 ulps of probability,
  // depending on how the compiler contracted the products)
  texts.row(2) = texts.row(0) * 8.0;
  const auto got = zero_shot_probabilities(inputs, texts, std::log(100.0));
  for (Index n = 0; n < 2; ++n) {
    EXPECT_DOUBLE_EQ(got.cosines(n, 0), got.cosines(n, 2));
    EXPECT_DOUBLE_EQ(got.probabilities(n, 0), got.probabilities(n, 2));
  }
  // every label the same: 1/K each
  const Matrix<double> same = texts.row(1).replicate(4, 1);
  const auto uniform = zero_shot_probabilities(inputs, same, std::log(100.0));
  EXPECT_TRUE(test::all_close(uniform.probabilities, Matrix<double>::Constant(2, 4, 0.25), 1e-15, 0));
  // one label: probability 1 whatever the cosine
  const auto one = zero_shot_probabilities(inputs, Matrix<double>(texts.row(1)), std::log(100.0));
  EXPECT_EQ(one.probabilities, Matrix<double>::Ones(2, 1));
}

TEST(ZeroShot, MismatchedWidthsZeroRowsAndAnInfiniteScaleAreErrors) {
  const Matrix<double> inputs = random_rows(2, 4, 5);
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(inputs, random_rows(3, 5, 6), 0.0); }),
              HasSubstr("inputs have 4 values per row, texts 5"));
  Matrix<double> zero_text = random_rows(3, 4, 6);
  zero_text.row(1).setZero();
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(inputs, zero_text, 0.0); }),
              HasSubstr("text row 1 has norm 0"));
  Matrix<double> nan_input = inputs;
  nan_input(1, 2) = NAN;
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(nan_input, Matrix<double>(zero_text.topRows(1)), 0.0); }),
              HasSubstr("input row 1 has norm"));
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(inputs, inputs, double(INFINITY)); }),
              HasSubstr("logit_scale is inf"));
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(inputs, inputs, double(NAN)); }),
              HasSubstr("logit_scale is nan"));
}

// A finite logit_scale whose exp overflows Scalar (above 88.7 in float) made every probability
// NaN, silently, before it was refused.
TEST(ZeroShot, ALogitScaleWhoseExpOverflowsIsAnError) {
  const Matrix<float> inputs = random_rows(2, 4, 7).cast<float>();
  EXPECT_THAT(error_of([&] { zero_shot_probabilities(inputs, inputs, 100.0f); }),
              HasSubstr("logit_scale 100 is too large"));
}

// ---- labels and templates ---------------------------------------------------------------------

TEST(Labels, AreSplitAtCommasAndTrimmed) {
  EXPECT_EQ(parse_labels(" dog, cat,car \t"), (std::vector<std::string>{"dog", "cat", "car"}));
  EXPECT_EQ(parse_labels("red square,\n a  tone\r\n"),
            (std::vector<std::string>{"red square", "a  tone"}));  // inner spaces kept
  EXPECT_EQ(parse_labels("dog"), (std::vector<std::string>{"dog"}));
  EXPECT_EQ(parse_labels("Dog,dog"), (std::vector<std::string>{"Dog", "dog"}));  // case counts
  EXPECT_EQ(check_labels({"  a b ", "c"}), (std::vector<std::string>{"a b", "c"}));
  EXPECT_EQ(parse_labels("caf\xc3\xa9, \xe4\xb8\xad"),
            (std::vector<std::string>{"caf\xc3\xa9", "\xe4\xb8\xad"}));
}

TEST(Labels, EmptyAndRepeatedLabelsAreErrors) {
  EXPECT_THAT(error_of([] { check_labels({}); }), HasSubstr("labels: none given"));
  EXPECT_THAT(error_of([] { parse_labels(""); }), HasSubstr("labels: label 1 of 1 is empty"));
  EXPECT_THAT(error_of([] { parse_labels("dog, ,cat"); }), HasSubstr("label 2 of 3 is empty"));
  EXPECT_THAT(error_of([] { parse_labels("dog,"); }), HasSubstr("label 2 of 2 is empty"));
  EXPECT_THAT(error_of([] { parse_labels(" \t "); }), HasSubstr("label 1 of 1 is empty"));
  EXPECT_THAT(error_of([] { parse_labels("dog,cat, dog "); }),
              HasSubstr("labels: \"dog\" is given twice"));
  EXPECT_THAT(error_of([] { check_labels({"a", "b", "a"}); }), HasSubstr("\"a\" is given twice"));
}

TEST(Labels, MoreThanTheLimitIsAnError) {
  const ZeroShotLimits three{.max_labels = 3};
  EXPECT_EQ(parse_labels("a,b,c", three).size(), 3u);
  EXPECT_THAT(error_of([&] { parse_labels("a,b,c,d", three); }),
              HasSubstr("labels: more than 3 (ZeroShotLimits::max_labels)"));
  EXPECT_THAT(error_of([&] { check_labels({"a", "b", "c", "d"}, three); }),
              HasSubstr("labels: 4 given, more than 3 (ZeroShotLimits::max_labels)"));
  // the count is refused before the labels are looked at, and the split stops there
  EXPECT_THAT(error_of([&] { parse_labels(std::string(1'000'000, ','), three); }),
              HasSubstr("more than 3"));
  EXPECT_EQ(ZeroShotLimits{}.max_labels, 100000u);
}

TEST(Labels, TemplatesPutTheLabelAtEveryBraces) {
  const std::vector<std::string> labels = {"dog", "red car"};
  EXPECT_EQ(label_texts(labels, default_label_template),
            (std::vector<std::string>{"a photo of a dog.", "a photo of a red car."}));
  EXPECT_EQ(label_texts(labels, "{} or not {}?"),
            (std::vector<std::string>{"dog or not dog?", "red car or not red car?"}));
  EXPECT_EQ(label_texts(labels, "{}"), labels);
  EXPECT_EQ(label_texts(labels, "{}{}"), (std::vector<std::string>{"dogdog", "red carred car"}));
  EXPECT_EQ(label_texts({"x"}, "{ } {{}} {"), (std::vector<std::string>{"{ } {x} {"}));
  // a label holding "{}" is put in once, not expanded again
  EXPECT_EQ(label_texts({"a{}b"}, "<{}>"), (std::vector<std::string>{"<a{}b>"}));
  EXPECT_TRUE(label_texts({}, "{}").empty());
}

TEST(Labels, ATemplateWithoutBracesIsAnError) {
  EXPECT_THAT(error_of([] { label_texts({"dog"}, "a photo"); }),
              HasSubstr("template \"a photo\" has no \"{}\" where the label goes"));
  EXPECT_THAT(error_of([] { label_texts({"dog"}, "{ }"); }), HasSubstr("has no \"{}\""));
  EXPECT_THAT(error_of([] { label_texts({"dog"}, ""); }), HasSubstr("template \"\" has no"));
}

// ---- ranking and search -----------------------------------------------------------------------

TEST(Ranking, LargestFirstTiesInColumnOrderAtMostTop) {
  Vector<float> row(5);
  row << 0.1f, 0.5f, 0.3f, 0.5f, -1.0f;
  EXPECT_EQ(ranking(row, 5), (std::vector<Index>{1, 3, 2, 0, 4}));
  EXPECT_EQ(ranking(row, 2), (std::vector<Index>{1, 3}));
  EXPECT_EQ(ranking(row, 100), (std::vector<Index>{1, 3, 2, 0, 4}));
  EXPECT_TRUE(ranking(row, 0).empty());
  // a matrix row (classification's probabilities)
  Matrix<double> p(2, 3);
  p << 0.2, 0.2, 0.6, 0.5, 0.25, 0.25;
  EXPECT_EQ(ranking(p.row(0), 3), (std::vector<Index>{2, 0, 1}));
  EXPECT_EQ(ranking(p.row(1), 3), (std::vector<Index>{0, 1, 2}));
  EXPECT_TRUE(ranking(Vector<float>(), 3).empty());
}

// An index of five files over E = 3 (unit rows; two rows equal for a tie).
SearchIndex small_index() {
  SearchIndex index;
  index.model.dir = "models/x";
  index.model.files = {{"config.json", {123, 1'700'000'000'123'456'789}},
                       {"model.safetensors", {std::uint64_t{1} << 40, -5}}};
  index.files = {{"a.png", Modality::image, {10, 1}},
                 {"b.wav", Modality::audio, {20, 2}},
                 {"c/d.y4m", Modality::video, {30, 3}},
                 {"c/e.png", Modality::image, {40, 4}},
                 {"f.jpg", Modality::image, {50, 5}}};
  index.embeddings.resize(5, 3);
  index.embeddings << 1, 0, 0,  //
      0, 1, 0,                  //
      0.6f, 0.8f, 0,            //
      0, 0, 1,                  //
      0.6f, 0.8f, 0;
  index.failed = {{{"bad.png", Modality::image, {7, 8}}, "bad.png: unsupported image format"}};
  return index;
}

TEST(Search, BestFirstTiesInPathOrderAtMostTop) {
  const SearchIndex index = small_index();
  Vector<float> query(3);
  query << 0, 1, 0;
  const auto hits = search(index, query, 10);
  ASSERT_EQ(hits.size(), 5u);
  const std::vector<std::string> order = {"b.wav", "c/d.y4m", "f.jpg", "a.png", "c/e.png"};
  const std::vector<float> scores = {1.0f, 0.8f, 0.8f, 0.0f, 0.0f};
  for (std::size_t i = 0; i < hits.size(); ++i) {
    EXPECT_EQ(hits[i].path, order[i]) << i;
    EXPECT_EQ(hits[i].score, scores[i]) << i;
  }
  EXPECT_EQ(hits[0].modality, Modality::audio);
  EXPECT_EQ(hits[1].modality, Modality::video);
  ASSERT_EQ(search(index, query, 2).size(), 2u);
  EXPECT_EQ(search(index, query, 2)[1].path, "c/d.y4m");
  EXPECT_TRUE(search(index, query, 0).empty());
  // a double query is the same
  EXPECT_EQ(search(index, Vector<double>(query.cast<double>()), 1)[0].path, "b.wav");
}

TEST(Search, AnEmptyIndexFindsNothingAndAWrongWidthIsAnError) {
  SearchIndex empty;
  EXPECT_TRUE(search(empty, Vector<float>::Ones(7), 3).empty());
  EXPECT_THAT(error_of([] { search(small_index(), Vector<float>::Ones(2), 3); }),
              HasSubstr("search: the query has 2 values, the index's embeddings 3"));
}

// ---- the index file ---------------------------------------------------------------------------

void expect_same_index(const SearchIndex& a, const SearchIndex& b) {
  EXPECT_EQ(a.model.dir, b.model.dir);
  EXPECT_EQ(a.model.files, b.model.files);
  EXPECT_EQ(a.files, b.files);
  EXPECT_EQ(a.embeddings.rows(), b.embeddings.rows());
  EXPECT_EQ(a.embeddings.cols(), b.embeddings.cols());
  EXPECT_EQ(a.embeddings, b.embeddings);  // bit for bit: F32 stored as F32
  ASSERT_EQ(a.failed.size(), b.failed.size());
  for (std::size_t i = 0; i < a.failed.size(); ++i) {
    EXPECT_EQ(a.failed[i].file, b.failed[i].file);
    EXPECT_EQ(a.failed[i].error, b.failed[i].error);
  }
}

TEST(IndexFile, WrittenThenReadIsTheSame) {
  TempDir tmp;
  SearchIndex index = small_index();
  index.files[0].path = "a caf\xc3\xa9/\xe4\xb8\xad \"quoted\" \\.png";  // UTF-8, JSON escapes
  index.files[1].stamp = {std::uint64_t{1} << 62, std::numeric_limits<std::int64_t>::min()};
  index.model.files["tokenizer \xc3\xa9.json"] = {0, std::numeric_limits<std::int64_t>::max()};
  const fs::path file = tmp / "index.safetensors";
  write_search_index(file, index);
  EXPECT_TRUE(is_search_index(file));
  expect_same_index(read_search_index(file), index);
  // as search_index.hpp says: one tensor, the four entries and a checksum
  const auto st = SafetensorsFile::open(file);
  EXPECT_TRUE(st.has_checksum());
  EXPECT_EQ(st.info("embeddings").dtype, DType::F32);
  EXPECT_EQ(st.info("embeddings").shape, (std::vector<std::int64_t>{5, 3}));
  EXPECT_EQ(st.metadata().at("tessera.index.version"), "1");
  const auto files = nlohmann::json::parse(st.metadata().at("tessera.index.files"));
  EXPECT_EQ(files[2], (nlohmann::json{{"path", "c/d.y4m"}, {"modality", "video"},
                                      {"size", 30}, {"mtime_ns", 3}}));
  const auto model = nlohmann::json::parse(st.metadata().at("tessera.index.model"));
  EXPECT_EQ(model["dir"], "models/x");
  EXPECT_EQ(model["files"]["config.json"]["mtime_ns"], 1'700'000'000'123'456'789);
  const auto failed = nlohmann::json::parse(st.metadata().at("tessera.index.failed"));
  EXPECT_EQ(failed[0]["error"], "bad.png: unsupported image format");

  // written again over the old one (atomically): the new contents
  index.files.pop_back();
  index.embeddings.conservativeResize(4, 3);
  index.failed.clear();
  write_search_index(file, index);
  expect_same_index(read_search_index(file), index);
}

TEST(IndexFile, AnEmptyIndexKeepsItsWidth) {
  TempDir tmp;
  SearchIndex index;
  index.model.dir = "m";
  index.embeddings.resize(0, 16);
  write_search_index(tmp / "i.safetensors", index);
  const SearchIndex back = read_search_index(tmp / "i.safetensors");
  EXPECT_TRUE(back.files.empty());
  EXPECT_TRUE(back.failed.empty());
  EXPECT_EQ(back.embeddings.rows(), 0);
  EXPECT_EQ(back.embeddings.cols(), 16);
}

TEST(IndexFile, FilesAndEmbeddingsThatDisagreeAreNotWritten) {
  TempDir tmp;
  SearchIndex index = small_index();
  index.files.pop_back();
  EXPECT_THAT(error_of([&] { write_search_index(tmp / "i.safetensors", index); }),
              HasSubstr("i.safetensors: the index has 4 files but 5 embeddings"));
  EXPECT_FALSE(fs::exists(tmp / "i.safetensors"));
}

TEST(IndexFile, OtherFilesAreNotIndexes) {
  TempDir tmp;
  // a model's weights, a safetensors file with other metadata, text, nothing, a directory
  const fs::path weights = test::data_dir() / "pretrained" / "imagebind" / "model" / "model.safetensors";
  if (fs::exists(weights)) {
    EXPECT_FALSE(is_search_index(weights));
  }
  save_safetensors(tmp / "pt.safetensors",
                   {{"embeddings", TensorData::from_vector(std::vector<float>{1, 0}, {1, 2})}},
                   {{"format", "pt"}});
  EXPECT_FALSE(is_search_index(tmp / "pt.safetensors"));
  std::ofstream(tmp / "text.safetensors") << "tessera.index.version";
  EXPECT_FALSE(is_search_index(tmp / "text.safetensors"));
  EXPECT_FALSE(is_search_index(tmp / "missing.safetensors"));
  EXPECT_FALSE(is_search_index(tmp.path()));
  EXPECT_THAT(error_of([&] { read_search_index(tmp / "pt.safetensors"); }),
              HasSubstr("pt.safetensors: not a tessera search index (no metadata "
                        "\"tessera.index.version\")"));
  EXPECT_THAT(error_of([&] { read_search_index(tmp / "missing.safetensors"); }),
              HasSubstr("missing.safetensors"));
  // a damaged index: its checksum no longer matches, so it is not one
  write_search_index(tmp / "i.safetensors", small_index());
  {
    std::fstream f(tmp / "i.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_FALSE(is_search_index(tmp / "i.safetensors"));
  EXPECT_THAT(error_of([&] { read_search_index(tmp / "i.safetensors"); }),
              HasSubstr("i.safetensors"));
}

// An index file written by hand: small_index()'s metadata with `edit` applied, and an
// embeddings tensor of `shape` (default: the index's own).
using Metadata = std::map<std::string, std::string>;
fs::path index_with(const TempDir& tmp, const std::function<void(Metadata&)>& edit,
                    std::vector<std::int64_t> shape = {5, 3}) {
  const fs::path valid = tmp / "valid.safetensors";
  write_search_index(valid, small_index());
  Metadata metadata = SafetensorsFile::open(valid).metadata();
  metadata.erase(checksum_key);
  edit(metadata);
  std::int64_t count = 1;
  for (const std::int64_t d : shape) count *= d;
  const fs::path file = tmp / "edited.safetensors";
  save_safetensors(file,
                   {{"embeddings", TensorData::from_vector(
                                       std::vector<float>(static_cast<std::size_t>(count), 0.5f),
                                       std::move(shape))}},
                   metadata, Checksum::crc32);
  return file;
}

// The files table of small_index() with entry `i`'s `key` set to `value`.
std::function<void(Metadata&)> set_file(std::size_t i, const std::string& key, nlohmann::json value) {
  return [=](Metadata& m) {
    auto files = nlohmann::json::parse(m.at("tessera.index.files"));
    files[i][key] = value;
    m["tessera.index.files"] = files.dump();
  };
}

// The message of read_search_index on `file`, which must name it.
std::string read_error(const fs::path& file) {
  const std::string message = error_of([&] { read_search_index(file); });
  EXPECT_THAT(message, HasSubstr(file.string()));
  return message;
}

TEST(IndexFile, TheHandWrittenCopyOfAValidIndexReads) {
  TempDir tmp;  // so that the malformed cases below differ from a valid file only as they say
  const SearchIndex back = read_search_index(index_with(tmp, [](Metadata&) {}));
  EXPECT_EQ(back.files, small_index().files);
  EXPECT_EQ(back.embeddings, Matrix<float>::Constant(5, 3, 0.5f));
}

TEST(IndexFile, AnotherVersionOrMissingEntriesAreNamed) {
  TempDir tmp;
  const fs::path v2 = index_with(tmp, [](Metadata& m) { m["tessera.index.version"] = "2"; });
  EXPECT_TRUE(is_search_index(v2));  // an index, of another version
  EXPECT_THAT(read_error(v2), HasSubstr("a search index of version 2, this tessera reads version 1"));
  for (const char* key : {"tessera.index.model", "tessera.index.files", "tessera.index.failed"}) {
    SCOPED_TRACE(key);
    EXPECT_THAT(read_error(index_with(tmp, [&](Metadata& m) { m.erase(key); })),
                HasSubstr(std::string("metadata \"") + key + "\" is missing"));
    EXPECT_THAT(read_error(index_with(tmp, [&](Metadata& m) { m[key] = "[{\"path\": "; })),
                HasSubstr(std::string("metadata \"") + key + "\" is not JSON"));
  }
  EXPECT_FALSE(is_search_index(index_with(tmp, [](Metadata& m) { m.erase("tessera.index.version"); })));
}

TEST(IndexFile, TablesOfTheWrongShapeAreNamed) {
  TempDir tmp;
  const auto malformed = [&](const std::function<void(Metadata&)>& edit) {
    return read_error(index_with(tmp, edit));
  };
  const std::string what = "the index's tables are malformed";
  EXPECT_THAT(malformed(set_file(1, "size", "20")), HasSubstr(what));
  EXPECT_THAT(malformed(set_file(1, "mtime_ns", nullptr)), HasSubstr(what));
  EXPECT_THAT(malformed(set_file(2, "path", 7)), HasSubstr(what));
  EXPECT_THAT(malformed(set_file(0, "modality", "smell")),
              HasSubstr(what + ": unknown modality \"smell\""));
  EXPECT_THAT(malformed([](Metadata& m) {
                auto files = nlohmann::json::parse(m.at("tessera.index.files"));
                files[3].erase("path");
                m["tessera.index.files"] = files.dump();
              }),
              HasSubstr(what));
  EXPECT_THAT(malformed([](Metadata& m) { m["tessera.index.files"] = "[1, 2, 3, 4, 5]"; }),
              HasSubstr(what));
  EXPECT_THAT(malformed([](Metadata& m) { m["tessera.index.model"] = R"({"files": {}})"; }),
              HasSubstr(what));
  EXPECT_THAT(malformed([](Metadata& m) { m["tessera.index.model"] = R"({"dir": 3, "files": {}})"; }),
              HasSubstr(what));
  EXPECT_THAT(malformed([](Metadata& m) {
                m["tessera.index.model"] = R"({"dir": "m", "files": {"config.json": {"size": 1}}})";
              }),
              HasSubstr(what));
  EXPECT_THAT(malformed([](Metadata& m) {  // a failure without its error
                m["tessera.index.failed"] =
                    R"([{"path": "x.png", "modality": "image", "size": 1, "mtime_ns": 2}])";
              }),
              HasSubstr(what));
}

TEST(IndexFile, RowsThatDisagreeWithTheFileTableAreNamed) {
  TempDir tmp;
  EXPECT_THAT(read_error(index_with(tmp, [](Metadata&) {}, {4, 3})),
              HasSubstr("tensor 'embeddings' has shape [4, 3], expected [5, E] (one row per file "
                        "of \"tessera.index.files\")"));
  EXPECT_THAT(read_error(index_with(tmp, [](Metadata&) {}, {15})),
              HasSubstr("has shape [15], expected [5, E]"));
  EXPECT_THAT(read_error(index_with(tmp, [](Metadata&) {}, {5, 3, 1})),
              HasSubstr("expected [5, E]"));
  // no embeddings tensor at all
  const fs::path none = tmp / "none.safetensors";
  Metadata metadata = SafetensorsFile::open(index_with(tmp, [](Metadata&) {})).metadata();
  metadata.erase(checksum_key);
  save_safetensors(none, {{"other", TensorData::from_vector(std::vector<float>{1})}}, metadata);
  EXPECT_THAT(read_error(none), HasSubstr("embeddings"));
}

// Paths that leave the folder, empty ones and paths given twice were read without complaint,
// and search() returned them as hits, before read_search_index checked them.
TEST(IndexFile, PathsOutsideTheFolderEmptyOrGivenTwiceAreNamed) {
  TempDir tmp;
  for (const char* path : {"../x.png", "/etc/x.png", "a/../../x.png", "", "a/./b.png", "a//b.png"}) {
    SCOPED_TRACE(path);
    EXPECT_THAT(read_error(index_with(tmp, set_file(0, "path", path))),
                HasSubstr("is not a relative path inside the folder"));
  }
  EXPECT_THAT(read_error(index_with(tmp, set_file(1, "path", "a.png"))), HasSubstr("given twice"));
  EXPECT_THAT(read_error(index_with(tmp, set_file(0, "path", "z.png"))), HasSubstr("out of order"));
}

// Numbers and tables of the wrong JSON kind were converted instead of refused (-1 read as
// 2^64 - 1; 1e300 as an integer was undefined behaviour, which fuzz_search_index hit).
TEST(IndexFile, NumbersAndTablesOfTheWrongKindAreNamed) {
  TempDir tmp;
  EXPECT_THAT(read_error(index_with(tmp, set_file(1, "size", -1))), HasSubstr("\"size\" is -1"));
  EXPECT_THAT(read_error(index_with(tmp, set_file(1, "size", 1.5))), HasSubstr("\"size\" is 1.5"));
  EXPECT_THAT(read_error(index_with(tmp, set_file(1, "mtime_ns", 1e300))),
              HasSubstr("\"mtime_ns\" is 1e+300"));
  for (const char* table : {"{}", "\"x\"", "null"}) {
    SCOPED_TRACE(table);
    EXPECT_THAT(read_error(index_with(tmp, [&](Metadata& m) { m["tessera.index.files"] = table; },
                                      {0, 3})),
                HasSubstr("the index's tables are malformed"));
  }
}

// ---- update_search_index on a folder ----------------------------------------------------------

// A Y4M video of `frames` 20 x 16 frames at 10 fps, a bright square moving over a gradient.
void write_video(const fs::path& file, Index frames) {
  Y4mHeader header;
  header.width = 20;
  header.height = 16;
  header.rate_num = 10;
  header.colorspace = Y4mColorspace::c444;
  Y4mWriter out(file, header);
  for (Index i = 0; i < frames; ++i) {
    Image f;
    f.width = header.width;
    f.height = header.height;
    f.rgb.resize(static_cast<std::size_t>(f.width * f.height * 3));
    for (Index y = 0; y < f.height; ++y) {
      for (Index x = 0; x < f.width; ++x) {
        const bool inside = x >= i && x < i + 6 && y >= 4 && y < 10;
        std::uint8_t* p = f.pixel(y, x);
        p[0] = inside ? 230 : static_cast<std::uint8_t>(10 * x);
        p[1] = inside ? 60 : static_cast<std::uint8_t>(12 * y);
        p[2] = 90;
      }
    }
    out.write(f);
  }
  out.close();
}

// The model directory and a folder of files to index, shared by the tests of one suite (the
// model is opened once):
//   image.ppm, gray.png, sub/noise.png    images
//   sub/short.wav, long.wav               audio (0.7 s at 16 kHz, 5.3 s at 8 kHz)
//   clip.y4m                              a video of 6 frames
//   broken.png                            not an image: fails, recorded
//   notes.txt                             of no modality: skipped
//   .hidden.png, .cache/x.png             names starting with '.': not looked at
class UpdateSearchIndex : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(pretrained_dir("imagebind"))) return;
    tmp_ = new TempDir;
    model_dir_ = imagebind_with_tokenizer(tmp_->path() / "model");
    PipelineOptions options;
    options.batch_size = 4;  // batches that mix modalities, and more than one of them
    pipeline_ = new Pipeline<float>(Pipeline<float>::open(model_dir_, options));
  }
  static void TearDownTestSuite() {
    delete pipeline_;
    delete tmp_;
    pipeline_ = nullptr;
    tmp_ = nullptr;
  }
  void SetUp() override {
    if (pipeline_ == nullptr) GTEST_SKIP() << "no ImageBind fixture";
    folder_ = here_.path() / "files";
    const fs::path images = test::data_dir() / "image" / "sources";
    const fs::path audio = test::data_dir() / "audio" / "imagebind";
    fs::create_directories(folder_ / "sub");
    fs::create_directories(folder_ / ".cache");
    fs::copy_file(images / "image.ppm", folder_ / "image.ppm");
    fs::copy_file(images / "gray.png", folder_ / "gray.png");
    fs::copy_file(images / "noise_small.png", folder_ / "sub" / "noise.png");
    fs::copy_file(images / "noise_small.png", folder_ / ".hidden.png");
    fs::copy_file(images / "noise_small.png", folder_ / ".cache" / "x.png");
    fs::copy_file(audio / "short_0p7s_16k.wav", folder_ / "sub" / "short.wav");
    fs::copy_file(audio / "long_5p3s_8k.wav", folder_ / "long.wav");
    write_video(folder_ / "clip.y4m", 6);
    std::ofstream(folder_ / "broken.png", std::ios::binary) << "not a PNG at all";
    std::ofstream(folder_ / "notes.txt") << "a note";
  }

  const Pipeline<float>& pipeline() const { return *pipeline_; }
  SearchIndex update(SearchIndexUpdate* report, const fs::path& index_file = {},
                     const SearchIndexLimits& limits = {}) const {
    return update_search_index(pipeline(), folder_, index_file, report, limits);
  }
  // What the Pipeline gives for one file of the folder, alone.
  Vector<float> embedding_of(const std::string& path, Modality m) const {
    const std::vector<fs::path> file = {folder_ / path};
    switch (m) {
      case Modality::audio: return pipeline().encode_audio(file).row(0).transpose();
      case Modality::video: return pipeline().encode_videos(file).row(0).transpose();
      default: return pipeline().encode_images(file).row(0).transpose();
    }
  }
  void expect_embeddings_of_the_files(const SearchIndex& index) const {
    ASSERT_EQ(index.embeddings.rows(), static_cast<Index>(index.files.size()));
    for (std::size_t i = 0; i < index.files.size(); ++i) {
      SCOPED_TRACE(index.files[i].path);
      EXPECT_TRUE(test::all_close(index.embeddings.row(static_cast<Index>(i)).transpose(),
                                  embedding_of(index.files[i].path, index.files[i].modality),
                                  same_embedding, 0));
    }
  }
  // Moves a file's modification time 10 s on: changed, to the index.
  void touch(const std::string& path) const {
    const fs::path file = folder_ / path;
    fs::last_write_time(file, fs::last_write_time(file) + std::chrono::seconds(10));
  }
  fs::path index_file() const { return folder_ / default_index_name; }

  static inline TempDir* tmp_ = nullptr;
  static inline fs::path model_dir_;
  static inline Pipeline<float>* pipeline_ = nullptr;
  TempDir here_;
  fs::path folder_;
};

const std::vector<std::string> indexed = {"clip.y4m", "gray.png", "image.ppm", "long.wav",
                                          "sub/noise.png", "sub/short.wav"};

std::vector<std::string> paths_of(const SearchIndex& index) {
  std::vector<std::string> paths;
  for (const IndexedFile& f : index.files) paths.push_back(f.path);
  return paths;
}

TEST_F(UpdateSearchIndex, BuildsReusesAndKeepsUpToDate) {
  // built: every file embedded, the broken one recorded with its error and reported at once
  SearchIndexUpdate r;
  std::vector<std::string> told;
  const SearchIndex built = update_search_index(
      pipeline(), folder_, {}, &r, {},
      [&](const FailedFile& f) { told.push_back(f.file.path); });
  EXPECT_EQ(paths_of(built), indexed);
  EXPECT_EQ(built.files[0].modality, Modality::video);
  EXPECT_EQ(built.files[3].modality, Modality::audio);
  EXPECT_EQ(built.files[4].modality, Modality::image);
  EXPECT_EQ(built.files[2].stamp, file_stamp(folder_ / "image.ppm"));
  EXPECT_EQ(r.files, 6u);
  EXPECT_EQ(r.embedded, 6u);
  EXPECT_EQ(r.reused, 0u);
  EXPECT_EQ(r.dropped, 0u);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.failed_before, 0u);
  EXPECT_EQ(r.skipped, 1u);  // notes.txt
  EXPECT_EQ(r.rebuilt, "");
  EXPECT_TRUE(r.written);
  EXPECT_EQ(told, (std::vector<std::string>{"broken.png"}));
  ASSERT_EQ(built.failed.size(), 1u);
  EXPECT_EQ(built.failed[0].file.path, "broken.png");
  EXPECT_THAT(built.failed[0].error, HasSubstr((folder_ / "broken.png").string()));
  EXPECT_THAT(built.failed[0].error, HasSubstr("unsupported image format"));
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].error, built.failed[0].error);
  EXPECT_EQ(built.model.dir, model_dir_.string());
  EXPECT_EQ(built.model.files, model_identity(model_dir_).files);
  expect_embeddings_of_the_files(built);
  for (Index i = 0; i < built.embeddings.rows(); ++i) {
    EXPECT_NEAR(built.embeddings.row(i).norm(), 1.0f, 1e-5f);
  }
  // the file holds what was returned
  ASSERT_TRUE(is_search_index(index_file()));
  expect_same_index(read_search_index(index_file()), built);

  // reused: nothing embedded, nothing written, the failure not retried
  const FileStamp written = file_stamp(index_file());
  const SearchIndex reused = update(&r);
  EXPECT_EQ(r.reused, 6u);
  EXPECT_EQ(r.embedded, 0u);
  EXPECT_EQ(r.failed, 0u);
  EXPECT_EQ(r.failed_before, 1u);
  EXPECT_EQ(r.dropped, 0u);
  EXPECT_TRUE(r.failures.empty());
  EXPECT_FALSE(r.written);
  EXPECT_EQ(file_stamp(index_file()), written);
  expect_same_index(reused, built);

  // a file touched: it alone embedded again (to the same numbers: its bytes are the same)
  touch("sub/noise.png");
  const SearchIndex touched = update(&r);
  EXPECT_EQ(r.embedded, 1u);
  EXPECT_EQ(r.reused, 5u);
  EXPECT_EQ(r.failed_before, 1u);
  EXPECT_TRUE(r.written);
  EXPECT_EQ(paths_of(touched), indexed);
  EXPECT_EQ(touched.files[4].stamp, file_stamp(folder_ / "sub" / "noise.png"));
  EXPECT_NE(touched.files[4].stamp, built.files[4].stamp);
  EXPECT_TRUE(test::all_close(touched.embeddings, built.embeddings, same_embedding, 0));
  expect_same_index(read_search_index(index_file()), touched);

  // a file changed in content: embedded again, to its new embedding
  fs::remove(folder_ / "gray.png");
  fs::copy_file(test::data_dir() / "image" / "sources" / "lines.png", folder_ / "gray.png");
  touch("gray.png");  // a different mtime even on a coarse clock
  const SearchIndex changed = update(&r);
  EXPECT_EQ(r.embedded, 1u);
  EXPECT_EQ(r.reused, 5u);
  expect_embeddings_of_the_files(changed);
  EXPECT_FALSE(test::all_close(changed.embeddings.row(1), built.embeddings.row(1), 1e-3, 0));

  // a file removed: dropped
  fs::remove(folder_ / "long.wav");
  const SearchIndex removed = update(&r);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_EQ(r.embedded, 0u);
  EXPECT_EQ(r.reused, 5u);
  EXPECT_EQ(r.files, 5u);
  EXPECT_TRUE(r.written);
  EXPECT_EQ(paths_of(removed),
            (std::vector<std::string>{"clip.y4m", "gray.png", "image.ppm", "sub/noise.png",
                                      "sub/short.wav"}));
  expect_embeddings_of_the_files(removed);
  expect_same_index(read_search_index(index_file()), removed);

  // the broken file mended: embedded, and no longer a failure
  fs::remove(folder_ / "broken.png");
  fs::copy_file(test::data_dir() / "image" / "sources" / "bilevel.png", folder_ / "broken.png");
  const SearchIndex mended = update(&r);
  EXPECT_EQ(r.embedded, 1u);
  EXPECT_EQ(r.failed, 0u);
  EXPECT_EQ(r.failed_before, 0u);
  EXPECT_TRUE(mended.failed.empty());
  EXPECT_EQ(paths_of(mended).front(), "broken.png");
  expect_embeddings_of_the_files(mended);

  // a file that was embedded and now fails: its row dropped, recorded as failed
  std::ofstream(folder_ / "image.ppm", std::ios::binary | std::ios::trunc) << "P6\n2 2\n255\n";
  touch("image.ppm");
  const SearchIndex broken = update(&r);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.dropped, 1u);
  ASSERT_EQ(broken.failed.size(), 1u);
  EXPECT_EQ(broken.failed[0].file.path, "image.ppm");
  EXPECT_EQ(broken.files.size(), 5u);  // broken.png in, image.ppm out
}

TEST_F(UpdateSearchIndex, SearchFindsAFileByItsOwnEmbeddingAndByText) {
  const SearchIndex index = update(nullptr);
  const auto hits = search(index, embedding_of("sub/short.wav", Modality::audio), 3);
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0].path, "sub/short.wav");
  EXPECT_EQ(hits[0].modality, Modality::audio);
  EXPECT_NEAR(hits[0].score, 1.0f, 1e-5f);
  EXPECT_GE(hits[0].score, hits[1].score);
  EXPECT_GE(hits[1].score, hits[2].score);
  // a text query: scores are the cosines with the text's embedding
  const Vector<float> text = pipeline().encode_texts({"a red square"}).row(0).transpose();
  const auto by_text = search(index, text, 10);
  ASSERT_EQ(by_text.size(), 6u);
  for (const SearchHit& h : by_text) {
    const auto i = static_cast<Index>(std::find(indexed.begin(), indexed.end(), h.path) - indexed.begin());
    EXPECT_NEAR(h.score, index.embeddings.row(i).dot(text.transpose()), 1e-6f) << h.path;
  }
}

TEST_F(UpdateSearchIndex, AnotherModelOrVersionRebuildsTheIndex) {
  SearchIndexUpdate r;
  update(&r);
  // the model's files change (a newer mtime on config.json): everything embedded again
  const fs::path config = model_dir_ / "config.json";
  const auto before = fs::last_write_time(config);
  fs::last_write_time(config, before + std::chrono::seconds(10));
  const SearchIndex again = update(&r);
  fs::last_write_time(config, before);
  EXPECT_EQ(r.rebuilt, "the model's files differ from those the index was made with");
  EXPECT_EQ(r.embedded, 6u);
  EXPECT_EQ(r.reused, 0u);
  EXPECT_EQ(r.failed, 1u);  // the failure is tried again with the new model
  EXPECT_TRUE(r.written);
  expect_embeddings_of_the_files(again);

  // an index of another version: rebuilt, saying why
  const SafetensorsFile file = SafetensorsFile::open(index_file());
  Metadata metadata = file.metadata();
  metadata["tessera.index.version"] = "0";
  save_safetensors(index_file(),
                   {{"embeddings", TensorData::from_vector(file.read<float>("embeddings"),
                                                           file.info("embeddings").shape)}},
                   metadata, Checksum::crc32);
  update(&r);
  EXPECT_THAT(r.rebuilt, HasSubstr("a search index of version 0"));
  EXPECT_EQ(r.embedded, 6u);
  EXPECT_EQ(SafetensorsFile::open(index_file()).metadata().at("tessera.index.version"), "1");
}

TEST_F(UpdateSearchIndex, AnIndexFileElsewhereAndOneThatIsNotAnIndex) {
  SearchIndexUpdate r;
  const fs::path elsewhere = here_ / "elsewhere.safetensors";
  const SearchIndex index = update(&r, elsewhere);
  EXPECT_TRUE(is_search_index(elsewhere));
  EXPECT_FALSE(fs::exists(index_file()));
  EXPECT_EQ(r.embedded, 6u);
  update(&r, elsewhere);
  EXPECT_EQ(r.reused, 6u);

  // an existing file that is not an index is refused, and left as it was
  const fs::path other = here_ / "other.safetensors";
  save_safetensors(other, {{"w", TensorData::from_vector(std::vector<float>{1, 2})}});
  const std::string bytes_before = [&] {
    std::ifstream in(other, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  EXPECT_THAT(error_of([&] { update(&r, other); }),
              HasSubstr(other.string() + ": exists and is not a tessera search index"));
  std::ifstream in(other, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes_before);
}

TEST_F(UpdateSearchIndex, AMissingFolderAndTooManyFilesAreNamed) {
  const fs::path missing = here_ / "no-such-folder";
  EXPECT_THAT(error_of([&] { update_search_index(pipeline(), missing); }),
              HasSubstr(missing.string() + ": no such directory (the folder to index)"));
  EXPECT_THAT(error_of([&] { update_search_index(pipeline(), folder_ / "notes.txt"); }),
              HasSubstr("notes.txt: not a directory"));
  // 7 files to index: the 6 and broken.png (the limit counts what the walk finds)
  EXPECT_THAT(error_of([&] { update(nullptr, {}, {.max_files = 6}); }),
              HasSubstr(folder_.string() + ": more than 6 files to index "
                                           "(SearchIndexLimits::max_files)"));
  EXPECT_FALSE(fs::exists(index_file()));
  EXPECT_EQ(update(nullptr, {}, {.max_files = 7}).files.size(), 6u);
}

TEST_F(UpdateSearchIndex, ScanFolderKeepsTheModalitiesTheModelTakes) {
  std::size_t skipped = 0;
  const auto images = scan_folder(folder_, {Modality::image}, {}, &skipped);
  std::vector<std::string> paths;
  for (const IndexedFile& f : images) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"broken.png", "gray.png", "image.ppm", "sub/noise.png"}));
  EXPECT_EQ(skipped, 4u);  // two WAVs, the video, notes.txt
  EXPECT_EQ(file_modality("a/B.JPEG"), Modality::image);
  EXPECT_EQ(file_modality("x.Wav"), Modality::audio);
  EXPECT_EQ(file_modality("x.y4m"), Modality::video);
  EXPECT_EQ(file_modality("x.txt"), std::nullopt);
  EXPECT_EQ(file_modality("wav"), std::nullopt);
}

// A file name that is not UTF-8 was stored with U+FFFD in it, never matched its file again, and
// was embedded on every run; it is now kept exactly ("path_hex").
TEST_F(UpdateSearchIndex, AFileNameThatIsNotUtf8IsReusedNotEmbeddedEveryRun) {
  fs::copy_file(folder_ / "image.ppm", folder_ / "caf\xe9.ppm");
  SearchIndexUpdate r;
  update(&r);
  EXPECT_EQ(r.embedded, 7u);
  const SearchIndex again = update(&r);
  EXPECT_EQ(r.embedded, 0u);
  EXPECT_EQ(r.reused, 7u);
  EXPECT_FALSE(r.written);
  EXPECT_EQ(again.files[0].path, "caf\xe9.ppm");  // sorted by bytes: before "clip.y4m"
}

}  // namespace test_search_index
}  // namespace tessera

#endif  // TESSERA_HAS_ICU && TESSERA_HAS_STB
