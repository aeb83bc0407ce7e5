// Pretrained checkpoints (include/tessera/model/pretrained.hpp, tower_model.hpp, tower.hpp):
// each directory kind, written with random weights by a PyTorch twin of its family's public
// code (tests/reference/make_clip_fixtures.py, make_imagebind_fixtures.py,
// make_torchvision_fixtures.py), loads with no conversion step and encodes text, images,
// video and audio within the tolerance below of the twin's float64 values, in one batch
// that mixes modalities and lengths. Then attention's add_bias_kv against the plain kernel,
// and every malformed directory is one tessera::Error naming the file, the tensor or the key.

#include <tessera/io/read_file.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/pipeline.hpp>

#include "pretrained_fixture.hpp"
#include "raw_bytes_check.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace tessera {
namespace test_pretrained {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using test::TempDir;
using test::error_of;
using test::imagebind_with_tokenizer;
using test::pretrained_dir;

// The issue's figure for float: embeddings and hidden states within 1e-4 of the float64
// reference (measured float32-vs-float64 differences of the twins are below 2e-6); double
// matches to rounding.
template <class Scalar>
constexpr double tolerance = sizeof(Scalar) == 8 ? 1e-9 : 1e-4;


// One case of a fixture: the sample and what the reference made of it.
template <class Scalar>
struct Case {
  std::string name;  // "text.0", ...
  Sample<Scalar> sample;
  Matrix<double> hidden;     // [L, D]
  Vector<double> embedding;  // [E]
};

template <class Scalar>
std::vector<Case<Scalar>> read_cases(const std::string& kind) {
  const auto file = SafetensorsFile::open(pretrained_dir(kind) / "cases.safetensors");
  std::vector<Case<Scalar>> cases;
  for (const char* modality : {"text", "image", "video", "audio"}) {
    for (int i = 0;; ++i) {
      const std::string name = std::string(modality) + "." + std::to_string(i);
      if (!file.contains(name + ".embedding")) break;
      Case<Scalar> c;
      c.name = name;
      c.embedding = file.read_vector<double>(name + ".embedding");
      c.hidden = file.read_matrix<double>(name + ".hidden");
      const std::string m = modality;
      if (m == "text") {
        c.sample.text = file.read<std::int64_t>(name + ".ids");
      } else if (m == "image") {
        const auto& shape = file.info(name + ".pixels").shape;
        const auto values = file.read<Scalar>(name + ".pixels");
        Tensor3<Scalar> image(shape[0], shape[1], shape[2]);
        std::copy(values.begin(), values.end(), image.data());
        c.sample.image = std::move(image);
      } else if (m == "video") {
        const auto& shape = file.info(name + ".frames").shape;
        const auto values = file.read<Scalar>(name + ".frames");
        Tensor4<Scalar> video(shape[0], shape[1], shape[2], shape[3]);
        std::copy(values.begin(), values.end(), video.data());
        c.sample.video = std::move(video);
      } else {
        c.sample.audio = file.read_matrix<Scalar>(name + ".features");
      }
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

template <class Scalar>
void expect_matches(const std::string& kind) {
  SCOPED_TRACE(kind);
  const TowerModel<Scalar> model = load_tower_model<Scalar>(pretrained_dir(kind) / "model");
  std::vector<Case<Scalar>> cases = read_cases<Scalar>(kind);
  ASSERT_GE(cases.size(), 3u);
  // One batch mixing modalities and lengths, in an order unlike the file's.
  std::mt19937 shuffle(17);
  std::shuffle(cases.begin(), cases.end(), shuffle);
  std::vector<Sample<Scalar>> batch;
  for (const auto& c : cases) batch.push_back(c.sample);
  const auto encoded = model.encode_batch(batch);
  const double tol = tolerance<Scalar>;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    EXPECT_TRUE(test::all_close(encoded[i].embedding, cases[i].embedding, tol, 0));
    EXPECT_TRUE(test::all_close(encoded[i].hidden, cases[i].hidden, tol, tol));
    // Alone, the same numbers (packing changes rounding only).
    const auto alone = model.encode(cases[i].sample);
    EXPECT_TRUE(test::all_close(alone.embedding, cases[i].embedding, tol, 0));
  }
}

class PretrainedKind : public ::testing::TestWithParam<std::string> {};

TEST_P(PretrainedKind, MatchesTheReferenceInFloat) {
  if (!fs::exists(pretrained_dir(GetParam()))) GTEST_SKIP() << "no fixture for " << GetParam();
  expect_matches<float>(GetParam());
}
TEST_P(PretrainedKind, MatchesTheReferenceInDouble) {
  if (!fs::exists(pretrained_dir(GetParam()))) GTEST_SKIP() << "no fixture for " << GetParam();
  expect_matches<double>(GetParam());
}
TEST_P(PretrainedKind, IsDetectedByItsFiles) {
  if (!fs::exists(pretrained_dir(GetParam()))) GTEST_SKIP() << "no fixture for " << GetParam();
  const ModelKind kind = detect_model_kind(pretrained_dir(GetParam()) / "model");
  const std::string expected = GetParam() == "towers_torchvision" ? "tessera_towers" : GetParam();
  EXPECT_EQ(to_string(kind), expected);
}

INSTANTIATE_TEST_SUITE_P(Kinds, PretrainedKind,
                         ::testing::Values("hf_clip", "open_clip", "imagebind",
                                           "towers_torchvision"));

// ---- add_bias_kv against the plain kernel on explicitly extended keys -----------------------

TEST(BiasKV, EqualsAttentionOverKeysWithTheBiasRowAppended) {
  const Index d = 8, heads = 2;
  nn::MultiHeadAttention<double> attn(d, heads);
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 0.5);
  for (auto* l : {&attn.q_proj, &attn.k_proj, &attn.v_proj, &attn.out_proj}) {
    l->weight = l->weight.unaryExpr([&](double) { return normal(rng); });
    l->bias = l->bias.unaryExpr([&](double) { return normal(rng); });
  }
  attn.bias_k = RowVector<double>::NullaryExpr(d, [&] { return normal(rng); });
  attn.bias_v = RowVector<double>::NullaryExpr(d, [&] { return normal(rng); });
  // Two samples packed: 3 rows (causal) and 4 rows.
  const Matrix<double> x = Matrix<double>::NullaryExpr(7, d, [&] { return normal(rng); });
  auto segments = nn::AttentionSegments::packed({0, 3, 7});
  segments.set_causal(0, 0, 3);
  Matrix<double> out(7, d);
  attn.forward(out, x, segments);

  for (int s = 0; s < 2; ++s) {
    const Index first = s == 0 ? 0 : 3, rows = s == 0 ? 3 : 4;
    const Matrix<double> xs = x.middleRows(first, rows);
    const Matrix<double> q = attn.q_proj.forward(xs);
    Matrix<double> k(rows + 1, d), v(rows + 1, d);
    k.topRows(rows) = attn.k_proj.forward(xs);
    v.topRows(rows) = attn.v_proj.forward(xs);
    k.row(rows) = attn.bias_k;
    v.row(rows) = attn.bias_v;
    nn::AttentionSegments one{{0, rows}, {0, rows + 1}, {0}, {0}, {}};
    if (s == 0) one.set_causal(0, 0, rows);  // the bias row, after the range, stays visible
    Matrix<double> ctx(rows, d);
    nn::attention_reference<double>(ctx, q, k, v, heads, one);
    const Matrix<double> expected = attn.out_proj.forward(ctx);
    EXPECT_TRUE(test::all_close(out.middleRows(first, rows), expected, 1e-12, 1e-12));
  }
}

TEST(BiasKV, RefusesTrainingAndKVCaches) {
  nn::MultiHeadAttention<double> attn(4, 2);
  attn.bias_k = RowVector<double>::Zero(4);
  attn.bias_v = RowVector<double>::Zero(4);
  nn::KVCache<double> cache;
  const Matrix<double> x = Matrix<double>::Ones(2, 4);
  Matrix<double> out(2, 4);
  EXPECT_THAT(error_of([&] { attn.forward_cached(out, x, cache, 0, 0); }),
              HasSubstr("add_bias_kv"));
}

// ---- raw inputs through the Pipeline: each family's preparation, then the model ----------------

TEST(PretrainedPipeline, EachInputIsPreparedAsTheFamilyDoesThenEncoded) {
  TempDir tmp;
  const fs::path dir = imagebind_with_tokenizer(tmp.path() / "imagebind");
  const auto p = Pipeline<float>::open(dir, {.batch_size = 2, .pretrained = {}});
  ASSERT_TRUE(p.is_pretrained());
  EXPECT_EQ(p.modalities(), (std::vector<std::string>{"text", "image", "audio", "video"}));
  const TowerModel<float>& model = p.tower_model();

  // text: [<|startoftext|>] + SimpleTokenizer's ids + [<|endoftext|>]
  const ClipBpe bpe = ClipBpe::load(dir);
  const std::vector<std::string> texts = {"a dog barking", "A photo of a cat.", "an &amp; b"};
  const Matrix<float> e = p.encode_texts(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    Sample<float> s;
    s.text = bpe.tokenize(texts[i]);
    EXPECT_EQ(s.text->front(), 49406);
    EXPECT_EQ(s.text->back(), 49407);
    EXPECT_TRUE(test::all_close(e.row(static_cast<Index>(i)).transpose(),
                                model.encode(s).embedding, 1e-6, 0));
  }

  // image: data.py's Resize(224, bicubic) + CenterCrop(224) + CLIP's mean and std
  const fs::path image = test::data_dir() / "image" / "sources" / "coffee.png";
  Sample<float> s;
  ImageConfig openai;  // CLIP's mean and std at 224
  s.image = preprocess_image(decode_image(image), image_processing_from_config(openai));
  EXPECT_TRUE(test::all_close(p.encode_images({image}).row(0).transpose(),
                              model.encode(s).embedding, 1e-6, 0));

  // audio: data.py's 3 clips of the model's mel bins and frames
  const fs::path wav = test::data_dir() / "audio" / "pipeline_kaldi.wav";
  Sample<float> a;
  ImageBindAudioOptions options;
  options.n_mels = model.tower(Modality::audio).config.height;
  options.target_length = model.tower(Modality::audio).config.width_in;
  a.audio = imagebind_audio_clips(wav, options);
  std::vector<Encoding<float>> encodings;
  const Matrix<float> audio = p.encode_audio({wav}, &encodings);
  EXPECT_EQ(encodings.front().audio_clips, 3);
  EXPECT_TRUE(test::all_close(audio.row(0).transpose(), model.encode(a).embedding, 1e-6, 0));
}

// An image's and a WAV's bytes in memory (RawInput::bytes, as tessera-serve gives them) load as
// their files do, bit for bit; text and video refuse bytes.
TEST(PretrainedPipeline, BytesInMemoryLoadAsTheirFiles) {
  TempDir tmp;
  const fs::path dir = imagebind_with_tokenizer(tmp.path() / "imagebind");
  const auto p = Pipeline<float>::open(dir);
  test::expect_bytes_load_as_their_files(
      [&](const RawInput& in) { return p.load(std::span<const RawInput>(&in, 1)); },
      {"text", "video"});
}

TEST(PretrainedPipeline, TextOverTheContextIsRefusedOrCut) {
  TempDir tmp;
  const fs::path dir = imagebind_with_tokenizer(tmp.path() / "imagebind");
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "word ";
  EXPECT_THAT(error_of([&] { Pipeline<float>::open(dir).encode_texts({long_text}); }),
              HasSubstr("more than"));
  PipelineOptions cut;
  cut.pretrained.truncate = true;
  const Matrix<float> e = Pipeline<float>::open(dir, cut).encode_texts({long_text});
  EXPECT_NEAR(e.row(0).norm(), 1.0f, 1e-5f);
}

TEST(PretrainedPipeline, OneInputPerSampleAndTheMissingTokenizerAreNamed) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  const auto p = Pipeline<float>::open(pretrained_dir("hf_clip") / "model");
  const std::vector<RawInput> two = {{"text", "a dog", {}},
                                     {"image", (test::data_dir() / "image" / "sources" / "coffee.png").string(), {}}};
  EXPECT_THAT(error_of([&] { p.encode({two}); }), HasSubstr("one input per sample"));
  EXPECT_THAT(error_of([&] { p.encode_texts({"a dog"}); }), HasSubstr("no tokenizer files"));
  EXPECT_THAT(error_of([&] { (void)p.model(); }), HasSubstr("use tower_model()"));
}

// ---- malformed directories --------------------------------------------------------------------

// A copy of a fixture's model directory to break.
fs::path copy_model(const TempDir& tmp, const std::string& kind) {
  const fs::path dir = tmp.path() / kind;
  fs::copy(pretrained_dir(kind) / "model", dir, fs::copy_options::recursive);
  return dir;
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary) << text;
}

// Rewrites a safetensors file after `edit` changed its tensors.
void edit_weights(const fs::path& file,
                  const std::function<void(std::map<std::string, TensorData>&)>& edit) {
  std::map<std::string, TensorData> tensors;
  {
    const auto in = SafetensorsFile::open(file);
    for (const auto& name : in.names()) tensors[name] = in.tensor_data(name);
  }
  edit(tensors);
  save_safetensors(file, tensors);
}

nlohmann::json read_json(const fs::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

TEST(PretrainedErrors, UnknownModelTypeIsNamed) {
  TempDir tmp;
  write_text(tmp.path() / "config.json", R"({"model_type": "bert"})");
  EXPECT_THAT(error_of([&] { load_tower_model<float>(tmp.path()); }),
              HasSubstr("model_type \"bert\" is not one tessera loads"));
}

TEST(PretrainedErrors, ADirectoryWithoutAConfigIsNamed) {
  TempDir tmp;
  EXPECT_EQ(detect_model_kind(tmp.path()), ModelKind::tessera);  // its loader names the problem
  EXPECT_THAT(error_of([&] { load_tower_model<float>(tmp.path()); }),
              HasSubstr("not a pretrained model directory"));
  EXPECT_THAT(error_of([&] { load_model<float>(tmp.path()); }), HasSubstr("config.json"));
}

TEST(PretrainedErrors, LoadModelNamesAPretrainedDirectory) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  EXPECT_THAT(error_of([&] { load_model<float>(pretrained_dir("hf_clip") / "model"); }),
              HasSubstr("holds a pretrained hf_clip model, not a tessera model: load it with "
                        "load_tower_model"));
}

TEST(PretrainedErrors, AResNetTowerIsRefusedByName) {
  if (!fs::exists(pretrained_dir("open_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "open_clip");
  auto json = read_json(dir / "open_clip_config.json");
  json["model_cfg"]["vision_cfg"]["layers"] = {3, 4, 6, 3};
  write_text(dir / "open_clip_config.json", json.dump());
  EXPECT_THAT(error_of([&] { load_tower_model<float>(dir); }), HasSubstr("ResNet"));
}

TEST(PretrainedErrors, ConfigAndWeightsThatDisagreeNameTheTensorAndBothShapes) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "hf_clip");
  auto json = read_json(dir / "config.json");
  const Index width = json["text_config"]["hidden_size"].get<Index>();
  json["text_config"]["intermediate_size"] = 2 * json["text_config"]["intermediate_size"].get<Index>();
  write_text(dir / "config.json", json.dump());
  const std::string error = error_of([&] { load_tower_model<float>(dir); });
  EXPECT_THAT(error, HasSubstr("text_model.encoder.layers.0.mlp.fc1.weight"));
  const nlohmann::json original = read_json(pretrained_dir("hf_clip") / "model" / "config.json");
  EXPECT_THAT(error, HasSubstr("expected [" + std::to_string(
                                   2 * original["text_config"]["intermediate_size"].get<Index>()) +
                               ", " + std::to_string(width) + "]"));
  EXPECT_THAT(error, HasSubstr("the text tower"));
}

TEST(PretrainedErrors, AnUnexpectedTensorIsNamed) {
  if (!fs::exists(pretrained_dir("imagebind"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "imagebind");
  edit_weights(dir / "model.safetensors", [](std::map<std::string, TensorData>& tensors) {
    tensors["modality_heads.vision.3.weight"] = tensors.at("modality_heads.vision.2.weight");
  });
  EXPECT_THAT(error_of([&] { load_tower_model<float>(dir); }),
              HasSubstr("unexpected tensor 'modality_heads.vision.3.weight'"));
}

TEST(PretrainedErrors, AMissingTensorIsNamed) {
  if (!fs::exists(pretrained_dir("imagebind"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "imagebind");
  edit_weights(dir / "model.safetensors", [](std::map<std::string, TensorData>& tensors) {
    tensors.erase("modality_trunks.audio.blocks.0.attn.bias_k");
  });
  const std::string error = error_of([&] { load_tower_model<float>(dir); });
  EXPECT_THAT(error, HasSubstr("missing tensor 'modality_trunks.audio.blocks.0.attn.bias_k'"));
  EXPECT_THAT(error, HasSubstr("the audio tower"));
}

TEST(PretrainedErrors, AConfigLargerThanItsWeightsIsRefusedBeforeAllocating) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "hf_clip");
  auto json = read_json(dir / "config.json");
  json["vision_config"]["hidden_size"] = 1 << 24;
  json["vision_config"]["intermediate_size"] = 1 << 30;
  write_text(dir / "config.json", json.dump());
  EXPECT_THAT(error_of([&] { load_tower_model<float>(dir); }),
              HasSubstr("bytes of tensors can hold"));
}

TEST(PretrainedConfig, OpenClipNormEpsIsReadAndOtherNormOptionsRefused) {
  nlohmann::json json = {{"model_cfg",
                          {{"embed_dim", 8},
                           {"vision_cfg", {{"width", 16}, {"layers", 1}, {"head_width", 8},
                                           {"patch_size", 4}, {"image_size", 8},
                                           {"norm_kwargs", {{"eps", 1e-6}}}}},
                           {"text_cfg", {{"width", 8}, {"heads", 2}, {"layers", 1}}}}}};
  const TowerModelConfig config = detail::open_clip_config(json, "open_clip_config.json");
  EXPECT_EQ(config.towers.at(Modality::image).norm_eps, 1e-6);
  EXPECT_EQ(config.towers.at(Modality::text).norm_eps, 1e-5);
  json["model_cfg"]["vision_cfg"]["norm_kwargs"] = {{"elementwise_affine", false}};
  EXPECT_THAT(error_of([&] { detail::open_clip_config(json, "open_clip_config.json"); }),
              HasSubstr("model_cfg.vision_cfg.norm_kwargs.elementwise_affine\": only the "
                        "norms' eps is supported"));
}

TEST(PretrainedErrors, AnUnknownImageBindArgumentIsNamed) {
  if (!fs::exists(pretrained_dir("imagebind"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "imagebind");
  auto json = read_json(dir / "config.json");
  json["vision_num_layers"] = 3;
  write_text(dir / "config.json", json.dump());
  EXPECT_THAT(error_of([&] { load_tower_model<float>(dir); }),
              HasSubstr("unknown key \"vision_num_layers\""));
}

TEST(PretrainedErrors, SamplesThatDoNotFitAreNamed) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  const auto model = load_tower_model<float>(pretrained_dir("hf_clip") / "model");
  const auto& text = model.tower(Modality::text).config;
  Sample<float> two;
  two.text = std::vector<std::int64_t>{1, text.eos_token_id};
  two.image = Tensor3<float>(3, 4, 4);
  EXPECT_THAT(error_of([&] { model.encode(two); }), HasSubstr("holds exactly one input"));

  Sample<float> long_text;
  long_text.text = std::vector<std::int64_t>(static_cast<std::size_t>(text.context_length + 1), 1);
  EXPECT_THAT(error_of([&] { model.encode(long_text); }),
              HasSubstr("more than the model's context length"));

  Sample<float> bad_id;
  bad_id.text = std::vector<std::int64_t>{text.vocab_size, text.eos_token_id};
  EXPECT_THAT(error_of([&] { model.encode(bad_id); }), HasSubstr("outside the vocabulary"));

  if (text.pooling == TowerPooling::eos_first) {
    Sample<float> no_end;
    no_end.text = std::vector<std::int64_t>{1, 2, 3};
    EXPECT_THAT(error_of([&] { model.encode(no_end); }), HasSubstr("has no end token"));
  }

  Sample<float> small_image;
  small_image.image = Tensor3<float>(3, 4, 4);
  small_image.image->setZero();
  EXPECT_THAT(error_of([&] { model.encode(small_image); }), HasSubstr("the model takes [3, "));

  Sample<float> audio;
  audio.audio = Matrix<float>::Zero(8, 8);
  EXPECT_THAT(error_of([&] { model.encode(audio); }), HasSubstr("has no audio tower"));
}

// ---- one read of the config: detect_model parses it, the loaders take what it found --------

const char* const fixture_kinds[] = {"hf_clip", "open_clip", "imagebind", "towers_torchvision"};

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(DetectModel, TheLoaderTakesTheConfigDetectionParsed) {
  for (const std::string kind : fixture_kinds) {
    if (!fs::exists(pretrained_dir(kind))) continue;
    SCOPED_TRACE(kind);
    TempDir tmp;
    const fs::path dir = copy_model(tmp, kind);
    ModelDirectory found = detect_model(dir);
    ASSERT_TRUE(found.config.has_value());
    EXPECT_EQ(*found.config, read_json(found.config_file));
    const TowerModelConfig expected = load_tower_model<float>(dir).config;
    write_text(found.config_file, "not JSON: the loader must not read the file again");
    EXPECT_EQ(load_tower_model<float>(std::move(found)).config, expected);
  }
}

TEST(DetectModel, TesserasOwnConfigIsParsedOnceCommentsAllowed) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "model";
  fs::copy(test::data_dir() / "encoder" / "text_image_bf16", dir, fs::copy_options::recursive);
  write_text(dir / "config.json", "// a comment, as load_config allows\n" +
                                      read_text(dir / "config.json"));
  const ModelDirectory found = detect_model(dir);
  EXPECT_EQ(found.kind, ModelKind::tessera);
  ASSERT_TRUE(found.config.has_value());
  const Config expected = load_model<float>(dir).config;
  write_text(dir / "config.json", "not JSON: the loader must not read the file again");
  EXPECT_EQ(load_model<float>(found).config, expected);
}

TEST(DetectModel, AConfigItCannotParseIsLeftToTheLoader) {
  TempDir tmp;
  // a pretrained config.json with a comment is not one (pretrained configs are strict JSON)
  write_text(tmp.path() / "config.json", "{\"model_type\": \"clip\"} // no");
  EXPECT_EQ(detect_model_kind(tmp.path()), ModelKind::tessera);
  EXPECT_THAT(error_of([&] { load_tower_model<float>(tmp.path()); }),
              HasSubstr("not a pretrained model directory"));
  // a key twice: tessera's loader names it
  write_text(tmp.path() / "config.json", R"({"hidden_dim": 8, "hidden_dim": 8})");
  EXPECT_FALSE(detect_model(tmp.path()).config.has_value());
  EXPECT_THAT(error_of([&] { load_model<float>(tmp.path()); }),
              HasSubstr("key \"hidden_dim\" appears twice in one object"));
  if (!fs::exists(pretrained_dir("open_clip"))) return;
  // an open_clip_config.json that is not JSON: load_tower_model reads it again to say why
  const fs::path dir = copy_model(tmp, "open_clip");
  write_text(dir / open_clip_config_name, "{");
  const ModelDirectory found = detect_model(dir);
  EXPECT_EQ(found.kind, ModelKind::open_clip);
  EXPECT_FALSE(found.config.has_value());
  EXPECT_THAT(error_of([&] { load_tower_model<float>(found); }),
              HasSubstr(open_clip_config_name + std::string(": not valid JSON")));
}

// ---- to_json: the native tessera_towers form, read back by towers_config -----------------------

TEST(TowersToJson, ReadsBackToAnEqualConfig) {
  for (const std::string kind : fixture_kinds) {
    if (!fs::exists(pretrained_dir(kind))) continue;
    SCOPED_TRACE(kind);
    const TowerModelConfig config = load_tower_model<float>(pretrained_dir(kind) / "model").config;
    const nlohmann::json json = to_json(config);
    EXPECT_EQ(json.at("model_type"), "tessera_towers");
    // through its text, as a config.json holds it
    const TowerModelConfig back =
        detail::towers_config(nlohmann::json::parse(json.dump()), "config.json");
    TowerModelConfig expected = config;
    if (config.family != "tessera_towers") {
      // another family's towers: the same math, named by their modality
      expected.family = "tessera_towers";
      for (const auto& [m, tower] : config.towers) expected.tower_names[m] = modality_name(m);
    }
    EXPECT_EQ(back, expected);
    EXPECT_EQ(to_json(back), json);
  }
}

TEST(TowersToJson, ItsConfigJsonLoadsTheSameModel) {
  if (!fs::exists(pretrained_dir("towers_torchvision"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "towers_torchvision");
  const TowerModel<float> model = load_tower_model<float>(dir);
  write_text(dir / "config.json", to_json(model.config).dump(2));
  const TowerModel<float> again = load_tower_model<float>(dir);
  EXPECT_EQ(again.config, model.config);
  Sample<float> image;
  const auto& c = model.tower(Modality::image).config;
  image.image = Tensor3<float>(c.channels, c.height, c.width_in);
  image.image->setConstant(0.25f);
  EXPECT_TRUE(again.encode(image).embedding == model.encode(image).embedding);
}

TEST(TowersToJson, WhatTheFormCannotSayIsRefused) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  const TowerModelConfig config =
      load_tower_model<float>(pretrained_dir("hf_clip") / "model").config;
  TowerModelConfig wide = config;  // 32 x 24 images of 8 x 8 patches: a valid tower
  wide.towers.at(Modality::image).width_in = 24;
  EXPECT_THAT(error_of([&] { to_json(wide); }), HasSubstr("image_size is square"));
  TowerModelConfig stem = config;
  stem.towers.at(Modality::image).stem_norm = true;
  EXPECT_THAT(error_of([&] { to_json(stem); }), HasSubstr("has a stem norm"));
  TowerModelConfig invalid = config;
  invalid.towers.at(Modality::text).heads = 5;
  EXPECT_THAT(error_of([&] { to_json(invalid); }), HasSubstr("not divisible by heads"));
}

}  // namespace test_pretrained
}  // namespace tessera
