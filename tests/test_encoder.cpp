// MultiModalEncoder (include/tessera/model/encoder.hpp) against whole-model PyTorch fixtures:
// every variant of tests/data/encoder, in float and double, plus batching, thread-count
// determinism and input errors.

#include <tessera/core/parallel.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/sample_io.hpp>

#include "encoder_fixtures.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace tessera {
namespace test_encoder {

using ::testing::HasSubstr;

std::vector<std::string> variants() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(test::data_dir() / "encoder")) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

using test::read_inputs;

class EncoderFixture : public ::testing::TestWithParam<std::string> {
 protected:
  template <class Scalar>
  void check_variant() {
    const auto dir = test::data_dir() / "encoder" / GetParam();
    const auto model = load_model<Scalar>(dir);
    const auto batch = read_inputs<Scalar>(dir);
    ASSERT_FALSE(batch.empty());
    const auto encodings = model.encode_batch(batch);
    const test::Fixture expected("encoder/" + GetParam() + "/expected.safetensors");
    const Matrix<double> embeddings = expected.matrix<double>("embeddings");
    ASSERT_EQ(embeddings.rows(), static_cast<Index>(encodings.size()));
    for (std::size_t i = 0; i < encodings.size(); ++i) {
      const std::string n = std::to_string(i);
      SCOPED_TRACE("sample " + n);
      EXPECT_TRUE(test::close_to_reference<Scalar>(encodings[i].embedding.transpose(),
                                                   embeddings.row(static_cast<Index>(i))));
      if constexpr (std::is_same_v<Scalar, float>) {  // the SPEC's promise, stated plainly
        EXPECT_LT((encodings[i].embedding.template cast<double>().transpose() -
                   embeddings.row(static_cast<Index>(i))).cwiseAbs().maxCoeff(), 1e-4);
      }
      EXPECT_TRUE(test::close_to_reference<Scalar>(encodings[i].hidden,
                                                   expected.matrix<double>("hidden." + n)));
      if (expected.has("routing." + n)) {  // the only check of "softmax over present modalities"
        EXPECT_TRUE(test::close_to_reference<Scalar>(encodings[i].routing,
                                                     expected.vector<double>("routing." + n)));
      }
      const auto positions = expected.ints("positions." + n);
      const auto modality = expected.ints("modality." + n);
      ASSERT_EQ(encodings[i].positions.rows() * 3, static_cast<Index>(positions.size()));
      for (Index r = 0; r < encodings[i].positions.rows(); ++r) {
        for (int a = 0; a < 3; ++a) {
          EXPECT_EQ(encodings[i].positions(r, a), positions[static_cast<std::size_t>(r * 3 + a)])
              << "token " << r << " axis " << a;
        }
        // The fixtures number modalities as SPEC 2 does: -1 the cls token, 4 + k custom.
        const auto spec_index = modality[static_cast<std::size_t>(r)];
        const ModalityId expected_modality =
            spec_index < 0 ? ModalityId::cls() : ModalityId::from_index(static_cast<int>(spec_index));
        EXPECT_EQ(encodings[i].modality[static_cast<std::size_t>(r)], expected_modality)
            << "token " << r;
      }
    }
  }
};

TEST_P(EncoderFixture, MatchesPyTorchInFloat) { check_variant<float>(); }
TEST_P(EncoderFixture, MatchesPyTorchInDouble) { check_variant<double>(); }

TEST_P(EncoderFixture, BatchEqualsSamplesOneByOne) {
  const auto dir = test::data_dir() / "encoder" / GetParam();
  const auto model = load_model<double>(dir);
  const auto batch = read_inputs<double>(dir);
  const auto together = model.encode_batch(batch);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto alone = model.encode(batch[i]);
    EXPECT_TRUE(test::close_to_reference<double>(alone.embedding, together[i].embedding)) << i;
    EXPECT_TRUE(test::close_to_reference<double>(alone.hidden, together[i].hidden)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, EncoderFixture, ::testing::ValuesIn(variants()),
                         [](const auto& info) { return info.param; });

TEST(Encoder, FixturesCoverTheSpec) {
  // The variants together must cover every option the issue names.
  std::set<std::string> seen;
  for (const auto& name : variants()) {
    const Config c = load_config(test::data_dir() / "encoder" / name / "config.json");
    seen.insert(std::string("activation:") + to_string(c.activation));
    seen.insert(std::string("norm:") + to_string(c.norm));
    seen.insert(std::string("position:") + to_string(c.position));
    seen.insert(std::string("pooling:") + to_string(c.pooling));
    if (c.text && c.text->causal) seen.insert("causal");
    if (c.video) seen.insert(c.video->pool_queries > 0 ? "video pooled" : "video unpooled");
    if (c.rope_sections) seen.insert("rope_sections");
    if (c.custom.size() >= 2) seen.insert("two custom modalities");
    // Which modality mixes the samples hold (a video model also has an image section, for
    // its frame geometry, so single modalities are a property of samples, not configs).
    std::set<std::string> mixes;
    const auto batch = read_inputs<float>(test::data_dir() / "encoder" / name);
    for (const auto& sample : batch) {
      std::string mix;
      if (sample.text) mix += "text ";
      if (sample.image) mix += "image ";
      if (sample.audio) mix += "audio ";
      if (sample.video) mix += "video ";
      for (const auto& [name, in] : sample.custom) {
        mix += "custom ";
        seen.insert(in.positions.rows() > 0 ? "custom positions given" : "custom sequence");
        if (c.pooling == PoolingKind::routed) seen.insert("custom routed");
        if (c.position == PositionKind::learned) seen.insert("custom learned");
      }
      mixes.insert(mix);
      if (mix.find(' ') == mix.size() - 1) seen.insert("only " + mix.substr(0, mix.size() - 1));
      if (mix == "text image audio video ") seen.insert("all four");
    }
    if (batch.size() >= 4 && mixes.size() >= 4) seen.insert("mixed batch");
  }
  for (const char* want :
       {"activation:gelu", "activation:gelu_tanh", "activation:quick_gelu", "activation:relu",
        "activation:swiglu", "norm:layernorm", "norm:rmsnorm", "position:rope",
        "position:learned", "pooling:mean", "pooling:cls", "pooling:routed", "causal",
        "video pooled", "video unpooled", "rope_sections", "all four", "only text", "only image",
        "only audio", "only video", "mixed batch", "two custom modalities", "only custom",
        "custom positions given", "custom sequence", "custom routed", "custom learned"}) {
    EXPECT_EQ(seen.count(want), 1u) << "no fixture covers " << want;
  }
}

// A model big enough that products span several parallel row blocks.
MultiModalEncoder<float> random_model(const std::string& extra = "") {
  const std::string text = R"({"hidden_dim": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 128,
    "embed_dim": 32, "pooling": "routed", "text": {"vocab_size": 100, "max_tokens": 40, "causal": true},
    "image": {"size": 32, "patch": 4}, "audio": {"n_mels": 8, "patch_frames": 2},
    "video": {"tubelet": 2, "pool_queries": 3}})";
  MultiModalEncoder<float> model(parse_config(nlohmann::json::parse(text), "test config"));
  model.init_random(7);
  (void)extra;
  return model;
}

std::vector<Sample<float>> random_batch() {
  std::vector<Sample<float>> batch(3);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 37; ++i) ids.push_back((i * 13) % 100);
  batch[0].text = ids;
  batch[0].image = Tensor3<float>(3, 32, 32);
  batch[0].image->setRandom();
  batch[1].audio = Matrix<float>::Random(8, 51);
  batch[1].video = Tensor4<float>(5, 3, 32, 32);
  batch[1].video->setRandom();
  batch[2] = {ids, batch[0].image, batch[1].audio, batch[1].video, {}};
  return batch;
}

TEST(Encoder, BitwiseIdenticalForOneAndTwoThreads) {
  const auto model = random_model();
  const auto batch = random_batch();
  std::vector<Encoding<float>> one, two;
  {
    ScopedThreads threads(1);
    one = model.encode_batch(batch);
  }
  {
    ScopedThreads threads(2);
    two = model.encode_batch(batch);
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    EXPECT_TRUE(one[i].hidden == two[i].hidden) << "sample " << i;
    EXPECT_TRUE(one[i].embedding == two[i].embedding) << "sample " << i;
  }
}

TEST(Encoder, LongAudioIsSplitIntoClipsWhoseEmbeddingsAreAveraged) {
  // SPEC 5.3: more than audio.max_tokens chunks -> consecutive clips that fit, each encoded,
  // the embeddings averaged and re-normalized, and the result says so.
  MultiModalEncoder<double> model(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 10, "max_tokens": 4},
          "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 3}})")));
  model.init_random(11);
  Sample<double> long_audio;
  long_audio.text = std::vector<std::int64_t>{1, 2};
  long_audio.audio = Matrix<double>::Random(4, 15);  // 8 chunks of 2 frames: clips of 6, 6, 3 frames
  std::vector<std::string> warnings;
  auto previous = set_warning_handler([&](const std::string& m) { warnings.push_back(m); });
  const auto encodings = model.encode_batch(std::vector{long_audio, long_audio});
  set_warning_handler(previous);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_THAT(warnings[0], HasSubstr("split into 3 clips"));

  Vector<double> sum = Vector<double>::Zero(8);
  for (Index first : {0, 6, 12}) {
    Sample<double> clip = long_audio;
    clip.audio = long_audio.audio->middleCols(first, std::min<Index>(6, 15 - first));
    sum += model.encode(clip).embedding;
  }
  for (const auto& e : encodings) {
    EXPECT_EQ(e.audio_clips, 3);
    EXPECT_TRUE(test::close_to_reference<double>(e.embedding, sum.normalized()));
    EXPECT_EQ(e.hidden.rows(), 2 + 3) << "the first clip's tokens: 2 text + 3 audio";
  }
  Sample<double> short_audio = long_audio;
  short_audio.audio = long_audio.audio->leftCols(6);
  EXPECT_EQ(model.encode(short_audio).audio_clips, 1);
}

TEST(Encoder, EmbeddingsAreUnitVectors) {
  const auto model = random_model();
  for (const auto& e : model.encode_batch(random_batch())) {
    EXPECT_NEAR(e.embedding.norm(), 1.0f, 1e-5f);
    EXPECT_EQ(e.embedding.size(), 32);
  }
}

TEST(Encoder, Bfloat16KeysAndValuesStayCloseToFloat) {
  auto model = random_model();
  const auto batch = random_batch();
  const auto full = model.encode_batch(batch);
  model.set_kv_precision(nn::KVPrecision::bfloat16);
  EXPECT_EQ(model.kv_precision(), nn::KVPrecision::bfloat16);
  const auto half = model.encode_batch(batch);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const double hidden_error = (half[i].hidden - full[i].hidden).cwiseAbs().maxCoeff();
    const double cosine = half[i].embedding.dot(full[i].embedding);
    EXPECT_GT(hidden_error, 0.0) << "sample " << i << ": bfloat16 changed nothing?";
    EXPECT_LT(hidden_error, 1e-2) << "sample " << i;
    EXPECT_GT(cosine, 1 - 1e-4) << "sample " << i;
  }
}

void expect_error(const std::function<void()>& action, const std::string& message) {
  EXPECT_THAT(test::error_of(action), HasSubstr(message));
}

// ---- Incremental encoding (encode_append, a KV cache) ----------------------------------------

MultiModalEncoder<double> causal_text_model(const std::string& position, const std::string& pooling) {
  MultiModalEncoder<double> model(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64, "embed_dim": 16,
          "position": ")" + position + R"(", "pooling": ")" + pooling + R"(",
          "text": {"vocab_size": 50, "max_tokens": 16, "causal": true},
          "image": {"size": 8, "patch": 4}})")));
  model.init_random(5);
  return model;
}

Sample<double> text_sample(const std::vector<std::int64_t>& ids) {
  Sample<double> s;
  s.text = ids;
  return s;
}

TEST(EncodeAppend, CausalTextInPartsEqualsTheWholeTextAtOnce) {
  const std::vector<std::int64_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32};
  for (const std::string position : {"rope", "learned"}) {
    for (const std::string pooling : {"mean", "routed"}) {
      SCOPED_TRACE(position + ", " + pooling);
      const auto model = causal_text_model(position, pooling);
      const Encoding<double> whole = model.encode(text_sample(ids));
      EncoderCache<double> cache;
      Encoding<double> got;
      std::size_t at = 0;
      for (const std::size_t n : {5, 1, 6}) {
        got = model.encode_append(
            cache, text_sample({ids.begin() + static_cast<std::ptrdiff_t>(at),
                                ids.begin() + static_cast<std::ptrdiff_t>(at + n)}));
        at += n;
        EXPECT_EQ(cache.size(), static_cast<Index>(at));
        // what is there so far is the encoding of the text so far, at once
        const Encoding<double> prefix =
            model.encode(text_sample({ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(at)}));
        EXPECT_TRUE(test::all_close(got.hidden, prefix.hidden, 1e-12, 0));
      }
      EXPECT_TRUE(test::all_close(got.hidden, whole.hidden, 1e-12, 0));
      EXPECT_TRUE(test::all_close(got.embedding, whole.embedding, 1e-12, 0));
      EXPECT_TRUE(got.positions == whole.positions);
      EXPECT_EQ(got.modality, whole.modality);
      EXPECT_TRUE(cache.encoding.embedding == got.embedding);
      for (const auto& layer : cache.layers) EXPECT_EQ(layer.length, 12);
    }
  }
}

TEST(EncodeAppend, StreamingPartsContinueThePositionsOfTheWholeSample) {
  // Text, then an image: the image tokens see the text's cached keys, the text does not see
  // the image (in the whole sample it would), so only the layout is the whole sample's.
  for (const std::string pooling : {"mean", "cls"}) {
    SCOPED_TRACE(pooling);
    const auto model = causal_text_model("rope", pooling);
    Sample<double> whole = text_sample({1, 2, 3});
    whole.image = Tensor3<double>(3, 8, 8);
    whole.image->setRandom();
    Sample<double> picture;
    picture.image = whole.image;
    EncoderCache<double> cache;
    const Encoding<double> first = model.encode_append(cache, text_sample({1, 2, 3}));
    const Encoding<double> text_alone = model.encode(text_sample({1, 2, 3}));
    EXPECT_TRUE(first.hidden == text_alone.hidden);
    EXPECT_TRUE(first.embedding == text_alone.embedding);
    const Encoding<double> both = model.encode_append(cache, picture);
    const Encoding<double> at_once = model.encode(whole);
    EXPECT_TRUE(both.positions == at_once.positions);
    EXPECT_EQ(both.modality, at_once.modality);
    EXPECT_TRUE(both.hidden.topRows(first.hidden.rows()) == first.hidden)
        << "the earlier tokens keep their states";
    EXPECT_NEAR(both.embedding.norm(), 1.0, 1e-12);
  }
}

TEST(EncodeAppend, BitwiseIdenticalForOneAndTwoThreads) {
  const auto model = random_model();
  const auto batch = random_batch();
  std::vector<Encoding<float>> results;
  for (const int count : {1, 2}) {
    ScopedThreads threads(count);
    EncoderCache<float> cache;
    for (const auto& part : batch) results.push_back(model.encode_append(cache, part));
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    EXPECT_TRUE(results[i].hidden == results[batch.size() + i].hidden) << "part " << i;
    EXPECT_TRUE(results[i].embedding == results[batch.size() + i].embedding) << "part " << i;
  }
}

TEST(EncodeAppend, Bfloat16CacheEqualsTheBfloat16EncodingOfTheWholeText) {
  const std::vector<std::int64_t> ids = {3, 14, 15, 9, 26, 5, 35, 8, 9, 7};
  auto model = causal_text_model("rope", "mean");
  model.set_kv_precision(nn::KVPrecision::bfloat16);
  const Encoding<double> whole = model.encode(text_sample(ids));
  EncoderCache<double> cache;
  model.encode_append(cache, text_sample({ids.begin(), ids.begin() + 4}));
  const Encoding<double> got = model.encode_append(cache, text_sample({ids.begin() + 4, ids.end()}));
  EXPECT_TRUE(test::all_close(got.hidden, whole.hidden, 1e-12, 0));
  for (const auto& layer : cache.layers) {
    EXPECT_EQ(layer.precision, nn::KVPrecision::bfloat16);
    EXPECT_EQ(layer.k.size(), 0) << "no native copy is kept";
  }
}

TEST(EncodeAppend, BadPartsAreErrorsThatLeaveTheCacheAsItWas) {
  const auto model = causal_text_model("learned", "mean");
  EncoderCache<double> cache;
  model.encode_append(cache, text_sample({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  const EncoderCache<double> before = cache;
  auto unchanged = [&] {
    EXPECT_EQ(cache.size(), before.size());
    EXPECT_TRUE(cache.encoding.hidden == before.encoding.hidden);
    EXPECT_EQ(cache.cursor.counts, before.cursor.counts);
    EXPECT_EQ(cache.cursor.offset, before.cursor.offset);
    for (std::size_t l = 0; l < cache.layers.size(); ++l)
      EXPECT_EQ(cache.layers[l].length, before.layers[l].length);
  };
  expect_error([&] { model.encode_append(cache, text_sample({1, 2, 3, 4, 5, 6, 7})); },
               "text would reach token 17, past its 16 learned positions");
  unchanged();
  expect_error([&] { model.encode_append(cache, text_sample({1, 50})); }, "text id 50");
  unchanged();
  expect_error([&] { model.encode_append(cache, Sample<double>{}); }, "has no input");
  unchanged();
  Sample<double> picture;
  picture.image = Tensor3<double>(3, 8, 8);
  picture.image->setConstant(std::numeric_limits<double>::quiet_NaN());
  expect_error([&] { model.encode_append(cache, picture); }, "image holds a non-finite value");
  unchanged();
  MultiModalEncoder<double> wider(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 50, "max_tokens": 16}})")));
  expect_error([&] { wider.encode_append(cache, text_sample({1})); },
               "the cache holds 2 layers of width 32, this model has 2 of width 16");
  unchanged();
  // the cache still works after the errors
  const auto next = model.encode_append(cache, text_sample({11, 12}));
  EXPECT_EQ(next.hidden.rows(), 12);
}

TEST(Encoder, BadInputsAreErrorsNamingTheProblem) {
  const auto model = random_model();
  Sample<float> s;
  expect_error([&] { model.encode(s); }, "sample 0 has no input");
  expect_error([&] { model.encode_batch({}); }, "the batch is empty");

  s.text = std::vector<std::int64_t>{1, 2, 100};
  expect_error([&] { model.encode(s); }, "text id 100 at position 2 is out of range [0, 100)");
  s.text = std::vector<std::int64_t>{-1};
  expect_error([&] { model.encode(s); }, "text id -1 at position 0 is out of range");
  s.text = std::vector<std::int64_t>(41, 1);
  expect_error([&] { model.encode(s); }, "text has 41 tokens, more than text.max_tokens = 40");
  s.text = std::vector<std::int64_t>{};
  expect_error([&] { model.encode(s); }, "text has no tokens");
  s.text.reset();

  s.image = Tensor3<float>(3, 16, 16);
  s.image->setZero();
  expect_error([&] { model.encode(s); }, "image has shape [3, 16, 16], expected [3, 32, 32]");
  s.image = Tensor3<float>(3, 32, 32);
  s.image->setZero();
  (*s.image)(1, 2, 3) = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { model.encode(s); }, "image holds a non-finite value");
  s.image.reset();

  s.audio = Matrix<float>::Zero(7, 10);
  expect_error([&] { model.encode(s); }, "audio has shape [7, 10], expected [8, T]");
  s.audio = Matrix<float>::Zero(8, 4);
  (*s.audio)(0, 3) = std::numeric_limits<float>::infinity();
  expect_error([&] { model.encode(s); }, "audio holds a non-finite value");
  s.audio.reset();

  s.video = Tensor4<float>(0, 3, 32, 32);
  expect_error([&] { model.encode(s); }, "expected [T, 3, 32, 32] with T >= 1");

  // A sample with a modality the model lacks.
  MultiModalEncoder<float> text_only(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 10, "max_tokens": 4}})")));
  Sample<float> image_sample;
  image_sample.image = Tensor3<float>(3, 224, 224);
  expect_error([&] { text_only.encode(image_sample); },
               "sample 0 has image input but the model has no image modality");

  // The failing sample is named in a batch, and nothing is computed.
  std::vector<Sample<float>> batch = random_batch();
  batch[2].text = std::vector<std::int64_t>{5, 500};
  expect_error([&] { model.encode_batch(batch); }, "sample 2: text id 500");
}

TEST(Encoder, BadCustomInputsAreErrorsNamingTheProblem) {
  MultiModalEncoder<float> model(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 10, "max_tokens": 4},
          "custom_modalities": [{"name": "points", "input_dim": 6, "max_tokens": 5}]})")));
  model.init_random(3);
  Sample<float> s;
  s.custom["points"].features = Matrix<float>::Ones(3, 6);
  EXPECT_EQ(model.encode(s).modality, std::vector<ModalityId>(3, ModalityId::custom(0)));

  s.custom["lidar"].features = Matrix<float>::Ones(3, 6);
  expect_error([&] { model.encode(s); },
               "sample 0 has input for modality 'lidar' but the model has no such custom "
               "modality (it has: points)");
  s.custom.erase("lidar");
  s.custom["points"].features = Matrix<float>::Ones(3, 5);
  expect_error([&] { model.encode(s); }, "sample 0: points features have shape [3, 5], expected [n, 6]");
  s.custom["points"].features = Matrix<float>::Ones(0, 6);
  expect_error([&] { model.encode(s); }, "expected [n, 6] with n >= 1");
  s.custom["points"].features = Matrix<float>::Ones(6, 6);
  expect_error([&] { model.encode(s); }, "points has 6 tokens, more than its max_tokens = 5");
  s.custom["points"].features = Matrix<float>::Ones(2, 6);
  s.custom["points"].features(1, 4) = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { model.encode(s); }, "points holds a non-finite value (nan) at flat index 10");
  s.custom["points"].features(1, 4) = 0;
  s.custom["points"].positions = Positions::Zero(3, 3);
  expect_error([&] { model.encode(s); }, "points has 3 positions for 2 tokens");
  s.custom["points"].positions = Positions::Zero(2, 3);
  s.custom["points"].positions(1, 2) = -1;
  expect_error([&] { model.encode(s); }, "points position (0, 0, -1) of token 1 is outside [0, ");

  // Custom positions: the given offsets after the running offset, which then moves past them.
  Sample<float> mixed;
  mixed.text = std::vector<std::int64_t>{1, 2};
  mixed.custom["points"].features = Matrix<float>::Ones(2, 6);
  mixed.custom["points"].positions = Positions::Zero(2, 3);
  mixed.custom["points"].positions.row(1) << 3, 0, 7;
  const auto enc = model.encode(mixed);
  Positions expected(4, 3);
  expected << 0, 0, 0, 1, 1, 1, 2, 2, 2, 5, 2, 9;
  EXPECT_TRUE(enc.positions == expected) << enc.positions;
  EXPECT_EQ(enc.modality, (std::vector<ModalityId>{Modality::text, Modality::text,
                                                   ModalityId::custom(0), ModalityId::custom(0)}));
}

// init_random goes by each tensor's role in the weight table (model/weights.hpp), not by its
// name: a custom modality called "normals" gets a random projection, not one of ones (as it
// did when a name containing "norm" meant a norm's scale).
TEST(Encoder, InitRandomGoesByRoleNotByName) {
  MultiModalEncoder<float> model(parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "pooling": "routed", "text": {"vocab_size": 10, "max_tokens": 4},
          "custom_modalities": [{"name": "normals", "input_dim": 6}]})")));
  model.init_random(5);
  const auto& projection = model.custom_patch_embed[0].proj.weight;  // [D, input_dim]
  EXPECT_GT(projection.cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_NE(projection.minCoeff(), projection.maxCoeff()) << "normals.patch_embed.weight is constant";
  EXPECT_TRUE(model.custom_patch_embed[0].proj.bias.isZero());
  for (const auto& layer : model.layers) {
    EXPECT_TRUE(layer.norm1.weight.isOnes());
    EXPECT_TRUE(layer.norm1.bias.isZero());
    EXPECT_TRUE(layer.attn.q_proj.bias.isZero());
  }
  EXPECT_TRUE(model.final_norm.weight.isOnes());
  EXPECT_TRUE(model.router.bias.isZero());
  EXPECT_FLOAT_EQ(model.logit_scale, 2.6592600369327779f);
  // Every parameter has exactly one role, and the roles cover what init_random fills.
  std::map<WeightRole, int> roles;
  for (const auto& p : model.parameters()) ++roles[p.role];
  EXPECT_EQ(roles[WeightRole::logit_scale], 1);
  EXPECT_GT(roles[WeightRole::one], 0);
  EXPECT_GT(roles[WeightRole::zero], 0);
  EXPECT_GT(roles[WeightRole::normal], 0);
}

}  // namespace
}  // namespace tessera
