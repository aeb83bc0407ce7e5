// tessera::Pipeline (include/tessera/pipeline.hpp): a model directory's encoder and front ends
// in one object. Its embeddings equal, bit for bit, what FrontEnds + encode_batch give for the
// same files in the same batches; the thread count does not change a bit; another batch size
// changes them by rounding only; bad input throws tessera::Error naming the sample and the
// file.

#include <tessera/core/parallel.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/pipeline.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/files.hpp>

#include "pipeline_fixture.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tessera {
namespace test_pipeline {

using ::testing::HasSubstr;

const std::vector<std::string>& captions = test::pipeline_captions;

std::string image(const char* name) { return (test::data_dir() / "image" / "sources" / name).string(); }
std::string audio(const char* name) { return (test::data_dir() / "audio" / name).string(); }

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() {
    test::write_pipeline_fixture(dir.path(), dir.path());
    previous_handler = set_warning_handler([](const std::string&) {});  // long audio warns
  }
  ~PipelineTest() override { set_warning_handler(previous_handler); }

  // Seven samples mixing every modality, one of each alone among them.
  std::vector<std::vector<RawInput>> mixed_samples() const {
    return {{{"text", captions[0], {}}},
            {{"image", image("coffee.png"), {}}},
            {{"audio", audio("pipeline_kaldi.wav"), {}}},
            {{"video", (dir / "a.y4m").string(), {}}},
            {{"text", captions[1], {}}, {"image", image("chelsea.jpg"), {}}},
            {{"text", captions[3], {}}, {"audio", audio("pipeline_whisper.wav"), {}}},
            {{"image", image("gray.png"), {}}, {"video", (dir / "b.y4m").string(), {}}}};
  }

  test::TempDir dir;
  WarningHandler previous_handler;
};

// How far another batching may move an embedding's entries (unit vectors of 16 floats through
// 2 layers: a few float epsilons).
constexpr double rounding_atol = 1e-6;

// Every row of `a` equals the same row of `b` bit for bit; names the first that does not.
::testing::AssertionResult same_bits(const Matrix<float>& a, const Matrix<float>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shape [" << a.rows() << ", " << a.cols()
                                         << "] != [" << b.rows() << ", " << b.cols() << "]";
  }
  for (Index r = 0; r < a.rows(); ++r) {
    if (a.row(r) != b.row(r)) {
      return ::testing::AssertionFailure() << "row " << r << " differs, largest difference "
                                           << (a.row(r) - b.row(r)).cwiseAbs().maxCoeff();
    }
  }
  return ::testing::AssertionSuccess();
}

TEST_F(PipelineTest, EqualsFrontEndsAndEncodeBatchBitForBit) {
  // batches of 3 over 7 samples: samples 0-2, 3-5 and 6
  const auto samples = mixed_samples();
  std::vector<Encoding<float>> encodings;
  const Matrix<float> embeddings =
      Pipeline<float>::open(dir.path(), {.batch_size = 3, .pretrained = {}}).encode(samples, &encodings);

  const auto model = load_model<float>(dir.path());
  const FrontEnds front(model.config, dir.path());
  std::vector<Encoding<float>> expected;
  for (std::size_t first = 0; first < samples.size(); first += 3) {
    std::vector<Sample<float>> batch;
    for (std::size_t i = first; i < std::min(first + 3, samples.size()); ++i) {
      batch.push_back(front.load(samples[i]));
    }
    for (auto& e : model.encode_batch(batch)) expected.push_back(std::move(e));
  }

  ASSERT_EQ(embeddings.rows(), static_cast<Index>(samples.size()));
  ASSERT_EQ(embeddings.cols(), model.config.embed_dim);
  ASSERT_EQ(encodings.size(), samples.size());
  for (std::size_t i = 0; i < samples.size(); ++i) {
    EXPECT_TRUE(embeddings.row(static_cast<Index>(i)) == expected[i].embedding.transpose()) << "sample " << i;
    EXPECT_TRUE(encodings[i].hidden == expected[i].hidden) << "sample " << i;
    EXPECT_EQ(encodings[i].modality, expected[i].modality) << "sample " << i;
    EXPECT_EQ(encodings[i].audio_clips, expected[i].audio_clips) << "sample " << i;
  }
  EXPECT_GT(encodings[2].audio_clips, 1);  // the long-audio route is part of the test
}

// A sample's rows enter the packed batch's matrix products beside the other samples' rows, and
// a product's rounding depends on its row count (OpenBLAS picks its kernels by shape): like
// encode_batch against encode, another batch size changes the embeddings by rounding only.
// The same batch size gives the same bits on every call.
TEST_F(PipelineTest, BatchSizeChangesRoundingOnly) {
  const auto samples = mixed_samples();
  const Matrix<float> one_batch = Pipeline<float>::open(dir.path()).encode(samples);
  for (std::size_t batch_size : {1, 2, 3}) {
    const auto p = Pipeline<float>::open(dir.path(), {.batch_size = batch_size, .pretrained = {}});
    const Matrix<float> batched = p.encode(samples);
    EXPECT_TRUE(test::all_close(batched, one_batch, rounding_atol, 0)) << "batch_size " << batch_size;
    EXPECT_TRUE(same_bits(p.encode(samples), batched)) << "batch_size " << batch_size;
  }
}

TEST_F(PipelineTest, ThreadCountDoesNotChangeABit) {
  const auto samples = mixed_samples();
  Matrix<float> one_thread;
  {
    ScopedThreads one(1);
    one_thread = Pipeline<float>::open(dir.path(), {.batch_size = 4, .threads = 1, .pretrained = {}})
                     .encode(samples);
  }
  ScopedThreads two(2);
  EXPECT_TRUE(same_bits(
      Pipeline<float>::open(dir.path(), {.batch_size = 4, .threads = 2, .pretrained = {}}).encode(samples),
      one_thread));
  EXPECT_TRUE(same_bits(
      Pipeline<float>::open(dir.path(), {.batch_size = 4, .pretrained = {}}).encode(samples), one_thread));
}

TEST_F(PipelineTest, OneModalityListsEqualTheGeneralForm) {
  // batches of 1 here, so that each sample can be compared with its own encoding
  const auto p = Pipeline<float>::open(dir.path(), {.batch_size = 1, .pretrained = {}});
  std::vector<std::vector<RawInput>> texts;
  for (const auto& c : captions) texts.push_back({{"text", c, {}}});
  EXPECT_TRUE(same_bits(p.encode_texts(captions), p.encode(texts)));

  const std::vector<std::filesystem::path> images = {image("coffee.png"), image("chelsea.jpg"),
                                                     image("gray.png")};
  const Matrix<float> by_images = p.encode_images(images);
  for (Index i = 0; i < 3; ++i) {
    const std::vector<std::vector<RawInput>> one = {{{"image", images[static_cast<std::size_t>(i)].string(), {}}}};
    EXPECT_TRUE(by_images.row(i) == p.encode(one).row(0)) << "image " << i;
  }
  const Matrix<float> by_audio = p.encode_audio({audio("pipeline_kaldi.wav")});
  EXPECT_TRUE(same_bits(by_audio, p.encode({{{"audio", audio("pipeline_kaldi.wav"), {}}}})));
  const Matrix<float> by_video = p.encode_videos({dir / "a.y4m", dir / "b.y4m"});
  EXPECT_TRUE(same_bits(by_video.bottomRows(1), p.encode({{{"video", (dir / "b.y4m").string(), {}}}})));

  // SampleFiles and preprocessed Samples take the same route.
  SampleFiles files;
  files.text = captions[2];
  files.image = image("coffee.png");
  const std::vector<SampleFiles> file_samples = {files};
  const Matrix<float> by_files = p.encode_files(file_samples);
  const std::vector<Sample<float>> loaded = {p.front_ends().load(files)};
  EXPECT_TRUE(same_bits(by_files, p.encode_samples(loaded)));
  EXPECT_TRUE(same_bits(by_files, p.encode({{{"text", captions[2], {}}, {"image", image("coffee.png"), {}}}})));

  // Unit-norm rows, and no sample at all gives [0, E].
  EXPECT_NEAR(by_images.row(0).norm(), 1.0f, 1e-5f);
  const Matrix<float> none = p.encode_texts({});
  EXPECT_EQ(none.rows(), 0);
  EXPECT_EQ(none.cols(), p.embed_dim());
}

TEST_F(PipelineTest, DoubleModelsConvertTheFrontEndsOutput) {
  const auto samples = mixed_samples();
  const Matrix<double> embeddings =
      Pipeline<double>::open(dir.path(), {.batch_size = 3, .pretrained = {}}).encode(samples);

  const auto model = load_model<double>(dir.path());
  const FrontEnds front(model.config, dir.path());
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const Sample<float> s = front.load(samples[i]);
    Sample<double> d;
    d.text = s.text;
    if (s.image) d.image = Tensor3<double>(s.image->cast<double>());
    if (s.audio) d.audio = s.audio->cast<double>();
    if (s.video) d.video = Tensor4<double>(s.video->cast<double>());
    const Vector<double> expected = model.encode(d).embedding;
    // the same computation batched differently: equal to double rounding
    EXPECT_TRUE(test::all_close(embeddings.row(static_cast<Index>(i)).transpose(), expected,
                                test::Tolerance<double>::atol, test::Tolerance<double>::rtol))
        << "sample " << i;
  }
  const Matrix<float> in_float = Pipeline<float>::open(dir.path()).encode(samples);
  EXPECT_TRUE(test::close_to_reference<float>(in_float, embeddings));
}

TEST_F(PipelineTest, BadInputNamesTheSampleAndTheFile) {
  const auto p = Pipeline<float>::open(dir.path(), {.batch_size = 2, .pretrained = {}});
  const std::string missing = (dir / "no-such-image.png").string();

  std::string message = test::error_of([&] {
    p.encode_images({image("coffee.png"), image("gray.png"), image("chelsea.jpg"), missing});
  });
  EXPECT_THAT(message, HasSubstr("sample 3"));
  EXPECT_THAT(message, HasSubstr(missing));

  // A file that is not what its modality reads.
  message = test::error_of([&] { p.encode_audio({audio("pipeline_kaldi.wav"), image("gray.png")}); });
  EXPECT_THAT(message, HasSubstr("sample 1"));
  EXPECT_THAT(message, HasSubstr(image("gray.png")));

  // Preprocessed samples are checked against the model, named by their index in the list.
  std::vector<Sample<float>> preprocessed(5);
  for (auto& s : preprocessed) s.text = std::vector<std::int64_t>{1, 2, 3};
  preprocessed[4].text = std::vector<std::int64_t>{1, 300};
  message = test::error_of([&] { p.encode_samples(preprocessed); });
  EXPECT_THAT(message, HasSubstr("sample 4"));
  EXPECT_THAT(message, HasSubstr("text id 300"));

  // A modality the model does not have.
  {
    const test::TempDir text_only;
    MultiModalEncoder<float> m(parse_config(nlohmann::json::parse(R"({
        "hidden_dim": 32, "num_layers": 1, "num_heads": 4, "ffn_dim": 64, "embed_dim": 16,
        "text": {"vocab_size": 300, "max_tokens": 32}})")));
    m.init_random(3);
    save_model(m, text_only.path());
    train_bpe(captions, 300).save(text_only.path());
    const auto texts = Pipeline<float>::open(text_only.path());
    message = test::error_of([&] { texts.encode_images({image("gray.png")}); });
    EXPECT_THAT(message, HasSubstr("sample 0"));
    EXPECT_THAT(message, HasSubstr("no image modality"));
  }

  // A model directory that is not one.
  message = test::error_of([&] { Pipeline<float>::open(dir / "missing-model"); });
  EXPECT_THAT(message, HasSubstr("missing-model"));
  message = test::error_of(
      [&] { Pipeline<float>::open(dir.path(), {.batch_size = 0, .pretrained = {}}); });
  EXPECT_THAT(message, HasSubstr("batch_size"));
}

}  // namespace test_pipeline
}  // namespace tessera
