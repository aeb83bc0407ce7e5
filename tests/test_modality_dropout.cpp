// Modality dropout (train/modality_dropout.hpp): the anchor always stays, a sample is never
// left empty, single-modality samples are untouched, each other modality goes with
// probability p, and which go is a pure function of (seed, step, sample index, modality).

#include <tessera/model/config_json.hpp>
#include <tessera/train/modality_dropout.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace tessera {
namespace test_modality_dropout {

using ::testing::HasSubstr;

Config dropout_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 30}, "image": {"size": 8, "patch": 4},
          "audio": {"n_mels": 4}, "video": {},
          "custom_modalities": [{"name": "imu", "input_dim": 6}]})"),
      "test config");
}

// A sample with every modality of dropout_config(): text, image, audio, video and imu.
Sample<float> full_sample() {
  Sample<float> s;
  s.text = std::vector<std::int64_t>{1, 2, 3};
  s.image = Tensor3<float>(3, 8, 8);
  s.audio = Matrix<float>::Zero(4, 8);
  s.video = Tensor4<float>(2, 3, 8, 8);
  s.custom["imu"] = CustomInput<float>{Matrix<float>::Zero(5, 6), {}};
  return s;
}

// Which of the five modalities s holds, in token order.
std::vector<bool> held(const Sample<float>& s) {
  return {s.text.has_value(), s.image.has_value(), s.audio.has_value(), s.video.has_value(),
          s.custom.contains("imu")};
}

int count(const std::vector<bool>& h) {
  int n = 0;
  for (const bool b : h) n += b;
  return n;
}

TEST(ModalityDropout, TheAnchorStaysAndEachOtherModalityGoesWithProbabilityP) {
  const Config config = dropout_config();
  const ModalityDropout dropout{0.3, Modality::image, 17};
  constexpr int samples = 4000;
  std::vector<int> gone(5, 0);
  for (int i = 0; i < samples; ++i) {
    Sample<float> s = full_sample();
    const int dropped = drop_modalities<float>(config, dropout, s, 12, static_cast<std::uint64_t>(i));
    const auto h = held(s);
    ASSERT_TRUE(h[1]) << "the anchor is never dropped (sample " << i << ")";
    EXPECT_EQ(dropped, 5 - count(h));
    for (std::size_t m = 0; m < 5; ++m) gone[m] += !h[m];
  }
  // binomial(4000, 0.3): standard deviation 29; 5 of them is 145
  for (const std::size_t m : {0u, 2u, 3u, 4u}) EXPECT_NEAR(gone[m], 0.3 * samples, 145) << m;
  EXPECT_EQ(gone[1], 0);
}

TEST(ModalityDropout, NeverEmptyAndOneModalityIsNeverTouched) {
  const Config config = dropout_config();
  // p = 1, no anchor: exactly one modality stays, each of the five about as often
  const ModalityDropout all{1.0, std::nullopt, 3};
  std::vector<int> stays(5, 0);
  for (std::uint64_t i = 0; i < 1000; ++i) {
    Sample<float> s = full_sample();
    EXPECT_EQ(drop_modalities<float>(config, all, s, 0, i), 4);
    const auto h = held(s);
    ASSERT_EQ(count(h), 1) << "sample " << i;
    for (std::size_t m = 0; m < 5; ++m) stays[m] += h[m];
  }
  for (const int n : stays) EXPECT_NEAR(n, 200, 60);  // binomial(1000, 0.2): sd 12.6
  // p = 1 with an anchor: only the anchor stays
  Sample<float> s = full_sample();
  drop_modalities<float>(config, {1.0, ModalityId::custom(0), 3}, s, 0, 0);
  EXPECT_EQ(held(s), (std::vector<bool>{false, false, false, false, true}));
  // a sample of one modality, the anchor or not, is never changed
  for (std::uint64_t i = 0; i < 50; ++i) {
    Sample<float> audio_only;
    audio_only.audio = Matrix<float>::Zero(4, 8);
    EXPECT_EQ(drop_modalities<float>(config, {1.0, Modality::image, 3}, audio_only, 5, i), 0);
    EXPECT_TRUE(audio_only.audio.has_value());
  }
  // p = 0 changes nothing
  Sample<float> kept = full_sample();
  EXPECT_EQ(drop_modalities<float>(config, {0.0, Modality::text, 3}, kept, 9, 9), 0);
  EXPECT_EQ(count(held(kept)), 5);
}

TEST(ModalityDropout, APureFunctionOfSeedStepIndexAndModality) {
  const Config config = dropout_config();
  const ModalityDropout dropout{0.5, Modality::text, 8};
  std::vector<Sample<float>> batch(12, full_sample());
  drop_modalities<float>(config, dropout, std::span(batch), 40);
  // the same samples one by one, in reverse order: the same result
  for (std::size_t i = batch.size(); i-- > 0;) {
    Sample<float> s = full_sample();
    drop_modalities<float>(config, dropout, s, 40, i);
    EXPECT_EQ(held(s), held(batch[i])) << "sample " << i;
  }
  // a part of the batch given its first index: the same as in the whole batch
  std::vector<Sample<float>> part(5, full_sample());
  drop_modalities<float>(config, dropout, std::span(part), 40, 7);
  for (std::size_t i = 0; i < part.size(); ++i) EXPECT_EQ(held(part[i]), held(batch[7 + i]));
  // a modality's fate does not depend on the others the sample holds (no rescue: anchor held)
  for (std::uint64_t i = 0; i < 12; ++i) {
    Sample<float> text_audio;
    text_audio.text = full_sample().text;
    text_audio.audio = full_sample().audio;
    drop_modalities<float>(config, dropout, text_audio, 40, i);
    EXPECT_EQ(text_audio.audio.has_value(), batch[i].audio.has_value()) << "sample " << i;
  }
  // another step or seed: other draws
  int differ_step = 0, differ_seed = 0;
  for (std::uint64_t i = 0; i < 12; ++i) {
    Sample<float> a = full_sample(), b = full_sample();
    drop_modalities<float>(config, dropout, a, 41, i);
    drop_modalities<float>(config, {0.5, Modality::text, 9}, b, 40, i);
    differ_step += held(a) != held(batch[i]);
    differ_seed += held(b) != held(batch[i]);
  }
  EXPECT_GT(differ_step, 0);
  EXPECT_GT(differ_seed, 0);
}

TEST(ModalityDropout, BadOptionsAndSamplesAreErrors) {
  const Config config = dropout_config();
  Sample<float> s = full_sample();
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(config, {1.5, std::nullopt, 0}, s, 0, 0); }),
              HasSubstr("modality dropout: probability 1.5 is outside [0, 1]"));
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(config, {std::nan(""), std::nullopt, 0}, s, 0, 0); }),
              HasSubstr("is outside [0, 1]"));
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(config, {0.5, ModalityId::custom(3), 0}, s, 0, 0); }),
              HasSubstr("the anchor (modality 7) is not a modality of the model"));
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(config, {0.5, ModalityId::cls(), 0}, s, 0, 0); }),
              HasSubstr("the anchor (modality -1) is not a modality of the model"));
  s.custom["gps"] = CustomInput<float>{Matrix<float>::Zero(1, 2), {}};
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(config, {0.5, std::nullopt, 0}, s, 0, 4); }),
              HasSubstr("sample 4 has custom input 'gps' but the model has no such modality"));
  EXPECT_EQ(count(held(s)), 5) << "an error changes nothing";

  EXPECT_EQ(modality_by_name(config, "video"), ModalityId(Modality::video));
  EXPECT_EQ(modality_by_name(config, "imu"), ModalityId::custom(0));
  Config no_video = config;
  no_video.video.reset();
  EXPECT_THAT(test::error_of([&] { modality_by_name(no_video, "video"); }),
              HasSubstr("modality 'video' is not a modality of the model (it has text, image, "
                        "audio, imu)"));
  Sample<float> with_video = full_sample();
  EXPECT_THAT(test::error_of([&] { drop_modalities<float>(no_video, {0.5, Modality::video, 0}, with_video, 0, 0); }),
              HasSubstr("the anchor (modality 3) is not a modality of the model"));
}

}  // namespace test_modality_dropout
}  // namespace tessera
