// Tests of tessera/model/config.hpp, config_json.hpp and config_check.hpp: SPEC 1 defaults,
// the modality-presence rule, every enum, one test per error class (each message names the
// key), and round trips through JSON and files.

#include <tessera/model/config.hpp>
#include <tessera/model/config_check.hpp>
#include <tessera/model/config_json.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace test_config {

using nlohmann::json;
using tessera::Config;
using tessera::Modality;
using tessera::ModalityId;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

using tessera::test::TempDir;

using tessera::test::error_of;

// The error of parsing `text` (a JSON document) as a config.
std::string parse_error(const std::string& text) {
  return error_of([&] { (void)tessera::parse_config(json::parse(text)); });
}

Config parse(const std::string& text) { return tessera::parse_config(json::parse(text)); }

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good());
}

// The SPEC 1 example, comments included.
const char* const spec_example = R"({
  "hidden_dim": 256, "num_layers": 4, "num_heads": 4, "ffn_dim": 1024,
  "embed_dim": 256,
  "activation": "gelu",          // gelu (erf) | gelu_tanh | quick_gelu | relu | swiglu
  "norm": "layernorm",           // layernorm | rmsnorm
  "norm_eps": 1e-5,
  "position": "rope",            // rope | learned
  "rope_theta": 10000.0,
  "rope_sections": null,         // [t, y, x] rotation pairs per axis, sum = dh/2; null = default below
  "pooling": "mean",             // mean | cls | routed
  "text":  { "tokenizer": "gpt2_bpe", "vocab_size": 50257, "max_tokens": 77, "causal": false },
  "image": { "size": 224, "patch": 16, "channels": 3,
             "mean": [0.48145466, 0.4578275, 0.40821073],
             "std":  [0.26862954, 0.26130258, 0.27577711] },
  "audio": { "sample_rate": 16000, "features": "kaldi_fbank", "n_mels": 128,
             "patch_frames": 4, "max_tokens": 512, "feature_mean": -4.268, "feature_std": 9.138 },
  "video": { "fps": 1.0, "tubelet": 2, "pool_queries": 0, "max_tokens": 4096 }
}
)";

// ---------------------------------------------------------------------------------------------
// Defaults and modality presence

TEST(Config, DefaultsMatchSpec) {
  const Config c = parse(R"({"text": {}})");
  EXPECT_EQ(c.hidden_dim, 256);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.ffn_dim, 1024);
  EXPECT_EQ(c.embed_dim, 256);
  EXPECT_EQ(c.activation, tessera::Activation::gelu);
  EXPECT_EQ(c.norm, tessera::NormKind::layernorm);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.position, tessera::PositionKind::rope);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.rope_sections.has_value());
  EXPECT_EQ(c.pooling, tessera::PoolingKind::mean);
  ASSERT_TRUE(c.text.has_value());
  EXPECT_EQ(c.text->tokenizer, "gpt2_bpe");
  EXPECT_EQ(c.text->vocab_size, 50257);
  EXPECT_EQ(c.text->max_tokens, 77);
  EXPECT_FALSE(c.text->causal);
  EXPECT_FALSE(c.image || c.audio || c.video);
  EXPECT_EQ(c.head_dim(), 64);
}

TEST(Config, SpecExampleWithCommentsLoads) {
  TempDir dir;
  const fs::path path = dir / "config.json";
  write_text(path, spec_example);
  const Config c = tessera::load_config(path);
  Config expected;
  expected.text.emplace();
  expected.image.emplace();
  expected.audio.emplace();
  expected.video.emplace();
  EXPECT_EQ(c, expected);
  EXPECT_EQ(c.image->size, 224);
  EXPECT_EQ(c.image->num_patches(), 196);
  EXPECT_EQ(c.image->patch_dim(), 768);
  EXPECT_EQ(c.audio->n_mels, 128);
  EXPECT_EQ(c.audio->features, "kaldi_fbank");
  EXPECT_EQ(c.audio->feature_mean, -4.268);
  EXPECT_EQ(c.audio->patch_dim(), 512);
  EXPECT_EQ(c.video->fps, 1.0);
  EXPECT_EQ(c.video->max_tokens, 4096);
}

TEST(Config, ModalityPresentExactlyWhenSectionPresentAndNotNull) {
  const Config c = parse(R"({"text": null, "image": {}, "audio": {"n_mels": 80}})");
  EXPECT_FALSE(c.has(Modality::text));
  EXPECT_TRUE(c.has(Modality::image));
  EXPECT_TRUE(c.has(Modality::audio));
  EXPECT_FALSE(c.has(Modality::video));
  EXPECT_EQ(*c.image, tessera::ImageConfig{});
  EXPECT_EQ(c.audio->n_mels, 80);
  EXPECT_EQ(c.audio->patch_frames, 4);
}

TEST(Config, AtLeastOneModality) {
  EXPECT_THAT(parse_error("{}"),
              HasSubstr("config.json: at least one modality (text, image, audio, video or "
                        "custom_modalities) is required"));
  EXPECT_THAT(parse_error(R"({"text": null, "image": null, "audio": null, "video": null})"),
              HasSubstr("at least one modality"));
}

TEST(Config, SectionMustBeObjectOrNull) {
  EXPECT_THAT(parse_error(R"({"text": 5})"),
              HasSubstr("config.json: key \"text\": expected an object or null, got 5"));
  EXPECT_THAT(parse_error(R"({"video": []})"),
              HasSubstr("key \"video\": expected an object or null"));
}

TEST(Config, TopLevelMustBeObject) {
  EXPECT_THAT(parse_error("[1]"),
              HasSubstr("config.json: expected a JSON object at the top level, got [1]"));
}

// ---------------------------------------------------------------------------------------------
// Enums

TEST(Config, EveryEnumValueParses) {
  using tessera::Activation;
  for (Activation a : {Activation::gelu, Activation::gelu_tanh, Activation::quick_gelu,
                       Activation::relu, Activation::swiglu}) {
    const Config c =
        parse(std::string(R"({"text": {}, "activation": ")") + tessera::to_string(a) + "\"}");
    EXPECT_EQ(c.activation, a);
  }
  using tessera::NormKind;
  for (NormKind n : {NormKind::layernorm, NormKind::rmsnorm}) {
    EXPECT_EQ(parse(std::string(R"({"text": {}, "norm": ")") + tessera::to_string(n) + "\"}").norm,
              n);
  }
  using tessera::PositionKind;
  for (PositionKind p : {PositionKind::rope, PositionKind::learned}) {
    EXPECT_EQ(parse(std::string(R"({"text": {}, "position": ")") + tessera::to_string(p) + "\"}")
                  .position,
              p);
  }
  using tessera::PoolingKind;
  for (PoolingKind p : {PoolingKind::mean, PoolingKind::cls, PoolingKind::routed}) {
    EXPECT_EQ(
        parse(std::string(R"({"text": {}, "pooling": ")") + tessera::to_string(p) + "\"}").pooling,
        p);
  }
  for (const char* tokenizer : {"gpt2_bpe", "clip_bpe"}) {
    EXPECT_EQ(
        parse(std::string(R"({"text": {"tokenizer": ")") + tokenizer + "\"}}").text->tokenizer,
        tokenizer);
  }
  for (const char* features : {"kaldi_fbank", "whisper_logmel"}) {
    EXPECT_EQ(parse(std::string(R"({"audio": {"features": ")") + features + "\"}}").audio->features,
              features);
  }
}

TEST(Config, UnknownEnumValueListsTheChoices) {
  EXPECT_THAT(parse_error(R"({"text": {}, "activation": "silu"})"),
              HasSubstr("config.json: key \"activation\": expected one of gelu, gelu_tanh, "
                        "quick_gelu, relu, swiglu, got \"silu\""));
  EXPECT_THAT(parse_error(R"({"text": {}, "norm": 1})"),
              HasSubstr("key \"norm\": expected one of layernorm, rmsnorm, got 1"));
  EXPECT_THAT(parse_error(R"({"text": {}, "position": "alibi"})"),
              HasSubstr("key \"position\": expected one of rope, learned"));
  EXPECT_THAT(parse_error(R"({"text": {}, "pooling": "max"})"),
              HasSubstr("key \"pooling\": expected one of mean, cls, routed"));
  EXPECT_THAT(parse_error(R"({"text": {"tokenizer": "sentencepiece"}})"),
              HasSubstr("key \"text.tokenizer\": expected one of gpt2_bpe, clip_bpe"));
  EXPECT_THAT(parse_error(R"({"audio": {"features": "mfcc"}})"),
              HasSubstr("key \"audio.features\": expected one of kaldi_fbank, whisper_logmel"));
}

// ---------------------------------------------------------------------------------------------
// Types

TEST(Config, UnknownKeyIsNamedWithItsPath) {
  EXPECT_THAT(parse_error(R"({"text": {"vocab": 10}})"),
              HasSubstr("config.json: unknown key \"text.vocab\""));
  EXPECT_THAT(parse_error(R"({"text": {}, "hidden": 10})"), HasSubstr("unknown key \"hidden\""));
  EXPECT_THAT(parse_error(R"({"image": {"mean_": [0]}})"),
              HasSubstr("unknown key \"image.mean_\""));
  EXPECT_THAT(parse_error(R"({"audio": {"sr": 1}})"), HasSubstr("unknown key \"audio.sr\""));
  EXPECT_THAT(parse_error(R"({"video": {"frames": 1}})"),
              HasSubstr("unknown key \"video.frames\""));
}

TEST(Config, IntegersMustBeJsonIntegers) {
  EXPECT_EQ(parse_error(R"({"image": {"patch": "16"}})"),
            "config.json: key \"image.patch\": expected a positive integer, got \"16\"");
  EXPECT_THAT(parse_error(R"({"image": {"patch": 16.5}})"),
              HasSubstr("key \"image.patch\": expected a positive integer, got 16.5"));
  EXPECT_THAT(parse_error(R"({"image": {"patch": 16.0}})"),
              HasSubstr("key \"image.patch\": expected a positive integer, got 16.0"));
  EXPECT_THAT(parse_error(R"({"text": {}, "num_layers": true})"),
              HasSubstr("key \"num_layers\": expected a positive integer, got true"));
  EXPECT_THAT(parse_error(R"({"video": {"pool_queries": null}})"),
              HasSubstr("key \"video.pool_queries\": expected a non-negative integer, got null"));
  EXPECT_THAT(
      parse_error(R"({"text": {}, "hidden_dim": 18446744073709551615})"),
      HasSubstr("key \"hidden_dim\": expected a positive integer, got 18446744073709551615"));
}

TEST(Config, IntegerRanges) {
  EXPECT_EQ(parse_error(R"({"text": {}, "hidden_dim": 0})"),
            "config.json: key \"hidden_dim\": expected a positive integer, got 0");
  EXPECT_THAT(parse_error(R"({"text": {"vocab_size": -3}})"),
              HasSubstr("key \"text.vocab_size\": expected a positive integer, got -3"));
  EXPECT_THAT(
      parse_error(R"({"text": {}, "ffn_dim": 4294967296})"),
      HasSubstr("key \"ffn_dim\": 4294967296 is larger than the supported maximum 2147483647"));
  for (const char* key : {"num_layers", "num_heads", "ffn_dim", "embed_dim"}) {
    EXPECT_THAT(parse_error(std::string(R"({"text": {}, ")") + key + "\": 0}"),
                HasSubstr(std::string("key \"") + key + "\": expected a positive integer, got 0"));
  }
}

TEST(Config, NumbersAcceptIntegersButNotOtherTypes) {
  const Config c = parse(R"({"text": {}, "rope_theta": 500000, "norm_eps": 1e-6})");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.norm_eps, 1e-6);
  EXPECT_EQ(parse(R"({"video": {"fps": 2}})").video->fps, 2.0);
  EXPECT_THAT(parse_error(R"({"text": {}, "rope_theta": "1e4"})"),
              HasSubstr("key \"rope_theta\": expected a positive number, got \"1e4\""));
  EXPECT_THAT(parse_error(R"({"text": {}, "norm_eps": false})"),
              HasSubstr("key \"norm_eps\": expected a positive number, got false"));
  EXPECT_THAT(parse_error(R"({"audio": {"feature_mean": "x"}})"),
              HasSubstr("key \"audio.feature_mean\": expected a number, got \"x\""));
}

TEST(Config, BooleansMustBeBooleans) {
  EXPECT_TRUE(parse(R"({"text": {"causal": true}})").text->causal);
  EXPECT_THAT(parse_error(R"({"text": {"causal": 1}})"),
              HasSubstr("key \"text.causal\": expected true or false, got 1"));
}

TEST(Config, ArraysOfNumbers) {
  EXPECT_THAT(parse_error(R"({"image": {"mean": 0.5}})"),
              HasSubstr("key \"image.mean\": expected an array of numbers, got 0.5"));
  EXPECT_THAT(parse_error(R"({"image": {"std": [0.5, "0.5", 0.5]}})"),
              HasSubstr("key \"image.std\": expected an array of numbers"));
}

// ---------------------------------------------------------------------------------------------
// Values and cross-key constraints

TEST(Config, PositiveNumbers) {
  EXPECT_THAT(parse_error(R"({"text": {}, "norm_eps": 0})"),
              HasSubstr("key \"norm_eps\": expected a positive number, got 0"));
  EXPECT_THAT(parse_error(R"({"text": {}, "rope_theta": -1.5})"),
              HasSubstr("key \"rope_theta\": expected a positive number, got -1.5"));
  EXPECT_THAT(parse_error(R"({"video": {"fps": 0}})"),
              HasSubstr("key \"video.fps\": expected a positive number, got 0"));
  EXPECT_THAT(parse_error(R"({"audio": {"feature_std": 0.0}})"),
              HasSubstr("key \"audio.feature_std\": expected a positive number, got 0"));
  Config nan_config;
  nan_config.text.emplace();
  nan_config.norm_eps = std::nan("");
  EXPECT_THAT(error_of([&] { tessera::validate(nan_config); }),
              HasSubstr("config: key \"norm_eps\": expected a positive number, got nan"));
}

TEST(Config, HiddenDimDivisibleByHeads) {
  EXPECT_THAT(parse_error(R"({"text": {}, "hidden_dim": 256, "num_heads": 3})"),
              HasSubstr("config.json: key \"num_heads\": hidden_dim 256 is not divisible by "
                        "num_heads 3"));
}

TEST(Config, HeadDimMustBeEvenForRope) {
  EXPECT_THAT(parse_error(R"({"text": {}, "hidden_dim": 12, "num_heads": 4})"),
              HasSubstr("key \"num_heads\": RoPE needs an even head_dim, but hidden_dim / "
                        "num_heads = 3"));
  EXPECT_EQ(
      parse(R"({"text": {}, "hidden_dim": 12, "num_heads": 4, "position": "learned"})").head_dim(),
      3);
}

TEST(Config, RopeSections) {
  const Config given = parse(R"({"text": {}, "rope_sections": [16, 8, 8]})");
  ASSERT_TRUE(given.rope_sections.has_value());
  EXPECT_EQ(given.rope_axis_pairs(), (std::array<tessera::Index, 3>{16, 8, 8}));
  EXPECT_FALSE(parse(R"({"text": {}, "rope_sections": null})").rope_sections.has_value());
  EXPECT_THAT(
      parse_error(R"({"text": {}, "rope_sections": [8, 12, 10]})"),
      HasSubstr("key \"rope_sections\": [8, 12, 10] sums to 30, expected head_dim / 2 = 32"));
  EXPECT_THAT(parse_error(R"({"text": {}, "rope_sections": [40, -4, -4]})"),
              HasSubstr("key \"rope_sections\": expected a non-negative integer, got -4"));
  for (const char* bad :
       {"[16, 16]", "[16, 8, 8, 0]", "[16, 8, 8.0]", "\"default\"", "[16, 8, true]"}) {
    EXPECT_THAT(parse_error(std::string(R"({"text": {}, "rope_sections": )") + bad + "}"),
                HasSubstr("key \"rope_sections\": expected null or an array of three non-negative "
                          "integers [t, y, x]"))
        << bad;
  }
}

TEST(Config, DefaultRopeAxisPairs) {
  Config c;
  EXPECT_EQ(c.rope_axis_pairs(), (std::array<tessera::Index, 3>{8, 12, 12}));  // dh = 64
  c.hidden_dim = 128;  // dh = 32: 16 pairs, floor(48 / 8) = 6
  EXPECT_EQ(c.rope_axis_pairs(), (std::array<tessera::Index, 3>{4, 6, 6}));
  c.hidden_dim = 8;  // dh = 2: one pair, all on t
  EXPECT_EQ(c.rope_axis_pairs(), (std::array<tessera::Index, 3>{1, 0, 0}));
  c.hidden_dim = 40;  // dh = 10: 5 pairs, floor(15 / 8) = 1
  EXPECT_EQ(c.rope_axis_pairs(), (std::array<tessera::Index, 3>{3, 1, 1}));
}

TEST(Config, ImageSizeDivisibleByPatch) {
  EXPECT_THAT(parse_error(R"({"image": {"size": 225, "patch": 16}})"),
              HasSubstr("config.json: key \"image.size\": 225 is not divisible by image.patch 16"));
  EXPECT_THAT(parse_error(R"({"image": {"size": 8, "patch": 16}})"),
              HasSubstr("key \"image.size\": 8 is not divisible by image.patch 16"));
}

TEST(Config, MeanAndStdHaveOneValuePerChannel) {
  EXPECT_THAT(parse_error(R"({"image": {"mean": [0.5, 0.5]}})"),
              HasSubstr("key \"image.mean\": expected 3 values (one per channel), got 2"));
  EXPECT_THAT(parse_error(R"({"image": {"channels": 1}})"),
              HasSubstr("key \"image.mean\": expected 1 values (one per channel), got 3"));
  EXPECT_THAT(parse_error(R"({"image": {"channels": 1, "mean": [0.5], "std": [0.5, 0.5]}})"),
              HasSubstr("key \"image.std\": expected 1 values (one per channel), got 2"));
  const Config gray = parse(R"({"image": {"channels": 1, "mean": [0.5], "std": [0.25]}})");
  EXPECT_EQ(gray.image->patch_dim(), 256);
}

TEST(Config, StdMustBePositive) {
  EXPECT_THAT(parse_error(R"({"image": {"std": [0.5, 0, 0.5]}})"),
              HasSubstr("key \"image.std\": expected a positive number, got 0"));
}

TEST(Config, AudioValues) {
  EXPECT_THAT(parse_error(R"({"audio": {"n_mels": 0}})"),
              HasSubstr("key \"audio.n_mels\": expected a positive integer, got 0"));
  EXPECT_THAT(parse_error(R"({"audio": {"sample_rate": -16000}})"),
              HasSubstr("key \"audio.sample_rate\": expected a positive integer"));
  EXPECT_THAT(parse_error(R"({"audio": {"sample_rate": 999}})"),
              HasSubstr("key \"audio.sample_rate\": expected a rate from 1000 to 768000 Hz "
                        "(WavLimits), got 999"));
  EXPECT_THAT(parse_error(R"({"audio": {"sample_rate": 768001}})"),
              HasSubstr("got 768001"));
  EXPECT_THAT(parse_error(R"({"audio": {"max_tokens": 0}})"),
              HasSubstr("key \"audio.max_tokens\": expected a positive integer, got 0"));
  EXPECT_EQ(parse(R"({"audio": {"feature_mean": -100}})").audio->feature_mean, -100.0);
}

TEST(Config, VideoValues) {
  EXPECT_THAT(parse_error(R"({"video": {"tubelet": 0}})"),
              HasSubstr("key \"video.tubelet\": expected a positive integer, got 0"));
  EXPECT_THAT(parse_error(R"({"video": {"pool_queries": -1}})"),
              HasSubstr("key \"video.pool_queries\": expected a non-negative integer, got -1"));
  EXPECT_THAT(parse_error(R"({"video": {"max_tokens": 0}})"),
              HasSubstr("key \"video.max_tokens\": expected a positive integer, got 0"));
  EXPECT_EQ(parse(R"({"video": {"pool_queries": 4}})").video->pool_queries, 4);
}

TEST(Config, TextValues) {
  EXPECT_THAT(parse_error(R"({"text": {"max_tokens": 0}})"),
              HasSubstr("key \"text.max_tokens\": expected a positive integer, got 0"));
  EXPECT_THAT(parse_error(R"({"text": {"tokenizer": "clip_bpe", "max_tokens": 1}})"),
              HasSubstr("key \"text.max_tokens\": clip_bpe needs at least 2 tokens"));
}

TEST(Config, DerivedSizesMustNotOverflow) {
  EXPECT_THAT(parse_error(R"({"image": {"size": 2000000000, "patch": 1000000000}})"),
              HasSubstr("key \"image.patch\": channels * patch * patch is larger than the "
                        "supported maximum"));
  EXPECT_THAT(parse_error(R"({"audio": {"n_mels": 100000, "patch_frames": 100000}})"),
              HasSubstr("key \"audio.patch_frames\": n_mels * patch_frames is larger"));
}

TEST(Config, VideoWithoutImageUsesImageDefaultsForFrames) {
  const Config c = parse(R"({"video": {"tubelet": 4}})");
  EXPECT_FALSE(c.has(Modality::image));
  EXPECT_EQ(c.frame_geometry(), tessera::ImageConfig{});
  EXPECT_EQ(c.video_patch_dim(), 3 * 4 * 16 * 16);
  const Config with_image = parse(R"({"image": {"size": 64, "patch": 8, "channels": 1,
                                       "mean": [0.5], "std": [0.5]}, "video": {}})");
  EXPECT_EQ(with_image.frame_geometry().patch, 8);
  EXPECT_EQ(with_image.video_patch_dim(), 1 * 2 * 8 * 8);
  EXPECT_THAT(error_of([] { (void)parse(R"({"text": {}})").video_patch_dim(); }),
              HasSubstr("the config has no video section"));
}

TEST(Config, ValidateNamesItsSource) {
  Config c;
  c.text.emplace();
  EXPECT_NO_THROW(tessera::validate(c));
  c.num_heads = 5;
  EXPECT_THAT(
      error_of([&] { tessera::validate(c, "my model"); }),
      HasSubstr("my model: key \"num_heads\": hidden_dim 256 is not divisible by num_heads 5"));
  c = Config{};
  c.audio.emplace();
  c.audio->features = "mfcc";
  EXPECT_THAT(
      error_of([&] { tessera::validate(c); }),
      HasSubstr("config: key \"audio.features\": expected one of kaldi_fbank, whisper_logmel"));
}

// ---------------------------------------------------------------------------------------------
// JSON and file round trips

Config unusual_config() {
  Config c;
  c.hidden_dim = 96;
  c.num_layers = 2;
  c.num_heads = 3;
  c.ffn_dim = 200;
  c.embed_dim = 48;
  c.activation = tessera::Activation::swiglu;
  c.norm = tessera::NormKind::rmsnorm;
  c.norm_eps = 1e-6;
  c.position = tessera::PositionKind::learned;
  c.rope_theta = 1234.5678901234567;
  c.rope_sections = std::array<tessera::Index, 3>{4, 6, 6};
  c.pooling = tessera::PoolingKind::routed;
  c.text = tessera::TextConfig{"clip_bpe", 49408, 33, true};
  c.image = tessera::ImageConfig{32, 8, 2, {0.1, 0.2}, {0.3, 0.4000000000000001}};
  c.video = tessera::VideoConfig{2.5, 3, 4, 123};
  return c;
}

TEST(Config, CustomModalities) {
  const Config c = parse(R"({"text": {}, "custom_modalities": [
      {"name": "point_cloud", "input_dim": 99, "max_tokens": 64, "options": {"points": 32}},
      {"name": "imu", "input_dim": 6}]})");
  ASSERT_EQ(c.custom.size(), 2u);
  EXPECT_EQ(c.custom[0].name, "point_cloud");
  EXPECT_EQ(c.custom[0].input_dim, 99);
  EXPECT_EQ(c.custom[0].max_tokens, 64);
  EXPECT_EQ(c.custom[0].options, json({{"points", 32}}));
  EXPECT_EQ(c.custom[1].max_tokens, 512);  // default
  EXPECT_TRUE(c.custom[1].options.is_object() && c.custom[1].options.empty());
  EXPECT_EQ(c.modality_count(), 6);
  EXPECT_EQ(c.find_custom("imu"), &c.custom[1]);
  EXPECT_EQ(c.find_custom("text"), nullptr);
  EXPECT_EQ(c.modality_label(Modality::text), "text");
  EXPECT_EQ(c.modality_label(ModalityId::custom(1)), "imu");
  EXPECT_EQ(c.modality_label(ModalityId::from_index(5)), "imu");
  EXPECT_EQ(c.modality_label(ModalityId::cls()), "cls");
  EXPECT_EQ(tessera::parse_config(tessera::to_json(c)), c);

  // A custom modality alone is a model.
  EXPECT_EQ(parse(R"({"custom_modalities": [{"name": "imu", "input_dim": 6}]})").modality_count(), 5);
  EXPECT_TRUE(parse(R"({"text": {}, "custom_modalities": null})").custom.empty());
  EXPECT_TRUE(parse(R"({"text": {}, "custom_modalities": []})").custom.empty());

  auto error = [](const std::string& list) {
    return parse_error(R"({"text": {}, "custom_modalities": )" + list + "}");
  };
  EXPECT_THAT(error(R"({"name": "imu"})"),
              HasSubstr("key \"custom_modalities\": expected a list of objects or null"));
  EXPECT_THAT(error(R"([3])"), HasSubstr("key \"custom_modalities[0]\": expected an object, got 3"));
  EXPECT_THAT(error(R"([{"input_dim": 3}])"),
              HasSubstr("key \"custom_modalities[0].name\": expected the modality's name as a string"));
  EXPECT_THAT(error(R"([{"name": "imu"}])"),
              HasSubstr("key \"custom_modalities[0].input_dim\": is required"));
  EXPECT_THAT(error(R"([{"name": "imu", "input_dim": 0}])"),
              HasSubstr("key \"custom_modalities[0].input_dim\": expected a positive integer, got 0"));
  EXPECT_THAT(error(R"([{"name": "imu", "input_dim": 6, "max_tokens": 2.5}])"),
              HasSubstr("key \"custom_modalities[0].max_tokens\": expected a positive integer"));
  EXPECT_THAT(error(R"([{"name": "imu", "input_dim": 6, "rate": 100}])"),
              HasSubstr("unknown key \"custom_modalities[0].rate\""));
  EXPECT_THAT(error(R"([{"name": "imu", "input_dim": 6, "options": [1]}])"),
              HasSubstr("key \"custom_modalities[0].options\": expected an object"));
  EXPECT_THAT(error(R"([{"name": "Point Cloud", "input_dim": 6}])"),
              HasSubstr("key \"custom_modalities[0].name\": \"Point Cloud\" is not a modality name"));
  EXPECT_THAT(error(R"([{"name": "image", "input_dim": 6}])"),
              HasSubstr("\"image\" is reserved"));
  EXPECT_THAT(error(R"([{"name": "text_ids", "input_dim": 6}])"), HasSubstr("is reserved"));
  EXPECT_THAT(error(R"([{"name": "imu", "input_dim": 6}, {"name": "imu", "input_dim": 3}])"),
              HasSubstr("key \"custom_modalities[1].name\": \"imu\" is already the name of "
                        "custom_modalities[0]"));
}

TEST(Config, JsonRoundTrip) {
  const Config c = unusual_config();
  const json j = tessera::to_json(c);
  EXPECT_EQ(tessera::parse_config(j), c);
  EXPECT_EQ(tessera::parse_config(json::parse(j.dump())), c);
  for (const char* key : {"hidden_dim", "num_layers", "num_heads", "ffn_dim", "embed_dim",
                          "activation", "norm", "norm_eps", "position", "rope_theta",
                          "rope_sections", "pooling", "text", "image", "video"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_FALSE(j.contains("audio"));  // absent modality, not written
  EXPECT_EQ(j["rope_sections"], json({4, 6, 6}));

  Config defaults;
  defaults.audio.emplace();
  const json d = tessera::to_json(defaults);
  EXPECT_TRUE(d["rope_sections"].is_null());
  EXPECT_EQ(d["audio"]["features"], "kaldi_fbank");
  EXPECT_EQ(tessera::parse_config(d), defaults);
}

TEST(Config, FileRoundTrip) {
  TempDir dir;
  const fs::path path = dir / "config.json";
  const Config c = unusual_config();
  tessera::save_config(c, path);
  EXPECT_EQ(tessera::load_config(path), c);
  Config audio_only;
  audio_only.audio.emplace();
  tessera::save_config(audio_only, path);  // replaces
  EXPECT_EQ(tessera::load_config(path).audio, tessera::AudioConfig{});
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1);  // no temporary left behind
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("\n  \"hidden_dim\": 256"));  // pretty-printed
}

TEST(Config, SaveRejectsInvalidConfig) {
  TempDir dir;
  const fs::path path = dir / "config.json";
  Config c;  // no modality
  EXPECT_THAT(error_of([&] { tessera::save_config(c, path); }),
              HasSubstr(path.string() + ": at least one modality"));
  EXPECT_FALSE(fs::exists(path));
  c.text.emplace();
  EXPECT_THAT(error_of([&] { tessera::save_config(c, dir / "missing" / "config.json"); }),
              HasSubstr("config.json: cannot open"));
}

TEST(Config, LoadErrorsNameThePath) {
  TempDir dir;
  const fs::path missing = dir / "nope.json";
  EXPECT_THAT(error_of([&] { (void)tessera::load_config(missing); }),
              HasSubstr(missing.string() + ": cannot open: No such file or directory"));
  const fs::path broken = dir / "broken.json";
  write_text(broken, R"({"text": {}, )");
  EXPECT_THAT(error_of([&] { (void)tessera::load_config(broken); }),
              HasSubstr(broken.string() + ": not valid JSON: [json.exception.parse_error"));
  const fs::path duplicated = dir / "duplicated.json";
  write_text(duplicated, R"({"text": {}, "hidden_dim": 64, "hidden_dim": 128})");
  EXPECT_THAT(error_of([&] { (void)tessera::load_config(duplicated); }),
              HasSubstr(duplicated.string() + ": key \"hidden_dim\" appears twice in one object"));
  const fs::path invalid = dir / "invalid.json";
  write_text(invalid, R"({"text": {"vocab": 1}} /* trailing comment */)");
  EXPECT_THAT(error_of([&] { (void)tessera::load_config(invalid); }),
              HasSubstr(invalid.string() + ": unknown key \"text.vocab\""));
}

}  // namespace
