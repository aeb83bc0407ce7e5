// The front-end interface and registry (include/tessera/tokenize/front_end.hpp) and
// FrontEnds (include/tessera/tokenize/files.hpp): the built-in front ends from the process
// registry, a user modality registered from outside, and the errors of each.

#include <tessera/io/read_file.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/front_end.hpp>

#include "raw_bytes_check.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tessera {
namespace test_front_end {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Config config_of(const std::string& json) {
  return parse_config(nlohmann::json::parse(json), "test config");
}

// A user modality: a text file of numbers, `input_dim` per line, one token per line.
class NumbersFrontEnd : public FrontEnd {
 public:
  explicit NumbersFrontEnd(const FrontEndContext& c)
      : input_dim_(c.config.find_custom(c.modality)->input_dim) {}

  void load(const RawInput& in, Sample<float>& sample, StageTimes& times) const override {
    check_options(in, {"scale"});
    const double scale = in.options.contains("scale") ? in.options.at("scale") : 1.0;
    std::vector<double> values = timed(times.decode, [&] {
      std::ifstream file(in.value);
      check(file.is_open(), in.value, ": cannot open");
      std::vector<double> read;
      for (double v; file >> v;) read.push_back(v);
      return read;
    });
    const auto rows = static_cast<Index>(values.size()) / input_dim_;
    check(rows > 0 && rows * input_dim_ == static_cast<Index>(values.size()), in.value,
          ": expected rows of ", input_dim_, " numbers");
    CustomInput<float> out;
    out.features.resize(rows, input_dim_);
    for (Index i = 0; i < out.features.size(); ++i) {
      out.features.data()[i] = static_cast<float>(values[static_cast<std::size_t>(i)] * scale);
    }
    sample.custom[in.modality] = std::move(out);
  }

 private:
  Index input_dim_;
};

FrontEndFactory numbers_factory() {
  return [](const FrontEndContext& c) { return std::make_unique<NumbersFrontEnd>(c); };
}

TEST(FrontEndRegistry, AddContainsMakeAndReplace) {
  FrontEndRegistry registry;
  EXPECT_TRUE(registry.modalities().empty());
  const Config config = config_of(R"({"custom_modalities": [{"name": "numbers", "input_dim": 2}]})");
  EXPECT_EQ(registry.make("numbers", config, "."), nullptr);

  registry.add("numbers", numbers_factory());
  registry.add("alpha", numbers_factory());
  EXPECT_TRUE(registry.contains("numbers"));
  EXPECT_FALSE(registry.contains("letters"));
  EXPECT_THAT(registry.modalities(), ElementsAre("alpha", "numbers"));
  EXPECT_NE(registry.make("numbers", config, "."), nullptr);

  int made = 0;  // a second add replaces the first factory
  registry.add("numbers", [&made](const FrontEndContext& c) {
    ++made;
    return std::make_unique<NumbersFrontEnd>(c);
  });
  (void)registry.make("numbers", config, ".");
  EXPECT_EQ(made, 1);

  EXPECT_THAT(test::error_of([&] { registry.add("empty", FrontEndFactory()); }),
              HasSubstr("the factory of 'empty' is empty"));
  registry.add("broken", [](const FrontEndContext&) { return std::unique_ptr<FrontEnd>(); });
  EXPECT_THAT(test::error_of([&] { (void)registry.make("broken", config, "."); }),
              HasSubstr("the front-end factory of 'broken' returned no front end"));
}

TEST(FrontEndRegistry, ProcessRegistryHoldsTheBuiltInFrontEnds) {
  for (const char* m : {"text", "image", "audio", "video"}) {
    EXPECT_TRUE(front_end_registry().contains(m)) << m;
  }
  // A built-in front end is not made for a model without its section.
  const Config text_only = config_of(R"({"text": {}})");
  EXPECT_THAT(test::error_of([&] { (void)front_end_registry().make("image", text_only, "."); }),
              HasSubstr("cannot make the image front end: the model has no image section"));
}

TEST(FrontEndRegistry, CheckOptionsNamesTheUnknownOption) {
  RawInput in{"video", "clip.y4m", {{"fps", 3.0}}};
  EXPECT_THAT(test::error_of([&] { check_options(in, {"images_fps"}); }),
              HasSubstr("video input clip.y4m: unknown option 'fps' (known: images_fps)"));
  in.options = {{"images_fps", 3.0}};
  EXPECT_NO_THROW(check_options(in, {"images_fps"}));
  EXPECT_THAT(test::error_of([&] { check_options(in, {}); }),
              HasSubstr("this front end takes no options"));
}

TEST(SampleFiles, InputsListsEveryGivenInputInModalityOrder) {
  SampleFiles files;
  files.custom["numbers"] = "n.txt";
  files.video = "clip.y4m";
  files.video_images_fps = 12;
  files.text = "hello";
  const auto inputs = files.inputs();
  ASSERT_EQ(inputs.size(), 3u);
  EXPECT_EQ(inputs[0].modality, "text");
  EXPECT_EQ(inputs[0].value, "hello");
  EXPECT_EQ(inputs[1].modality, "video");
  EXPECT_EQ(inputs[1].options.at("images_fps"), 12);
  EXPECT_EQ(inputs[2].modality, "numbers");
  EXPECT_EQ(inputs[2].value, "n.txt");
}

class FrontEndsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::string> captions = {"a red square", "a rising tone", "numbers"};
    train_bpe(captions, 280).save(dir.path());
    config = config_of(R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32,
        "embed_dim": 8, "pooling": "routed", "text": {"vocab_size": 280, "max_tokens": 16},
        "image": {"size": 32, "patch": 8}, "audio": {"n_mels": 16},
        "custom_modalities": [{"name": "numbers", "input_dim": 3, "max_tokens": 8}]})");
    std::ofstream(dir.path() / "n.txt") << "1 2 3\n4 5 6\n";
    registry.add("numbers", numbers_factory());
  }

  test::TempDir dir;
  Config config;
  FrontEndRegistry registry;  // the process registry's built-ins, plus "numbers"
  FrontEndsTest() {
    for (const char* m : {"text", "image", "audio", "video"}) {
      registry.add(m, [m](const FrontEndContext& c) { return front_end_registry().make(m, c.config, c.model_dir); });
    }
  }
};

TEST_F(FrontEndsTest, BuiltInAndUserModalitiesMakeOneSample) {
  const FrontEnds front(config, dir.path(), registry);
  EXPECT_TRUE(front.can_load("text"));
  EXPECT_TRUE(front.can_load("numbers"));
  EXPECT_FALSE(front.can_load("video"));  // not a modality of the model

  std::vector<RawInput> inputs = {
      {"text", "a red square", {}},
      {"image", (test::data_dir() / "image" / "sources" / "coffee.png").string(), {}},
      {"audio", (test::data_dir() / "audio" / "pipeline_kaldi.wav").string(), {}},
      {"numbers", (dir.path() / "n.txt").string(), {{"scale", 0.5}}}};
  StageTimes times;
  const Sample<float> sample = front.load(inputs, &times);
  ASSERT_TRUE(sample.text && sample.image && sample.audio);
  EXPECT_EQ(sample.image->dimension(1), 32);
  ASSERT_EQ(sample.custom.count("numbers"), 1u);
  EXPECT_EQ(sample.custom.at("numbers").features.rows(), 2);
  EXPECT_EQ(sample.custom.at("numbers").features(1, 2), 3.0f);
  EXPECT_GT(times.decode, 0.0);
  EXPECT_GT(times.preprocess, 0.0);

  MultiModalEncoder<float> model(config);
  model.init_random(1);
  const auto encoding = model.encode(sample);
  EXPECT_NEAR(encoding.embedding.norm(), 1.0f, 1e-5f);
  EXPECT_EQ(encoding.modality.back(), ModalityId::custom(0));
  ASSERT_EQ(encoding.routing.size(), 5);
  EXPECT_GT(encoding.routing[4], 0.0f);

  // The same through SampleFiles and the process registry, once "numbers" is registered.
  SampleFiles files;
  files.text = "a rising tone";
  files.custom["numbers"] = (dir.path() / "n.txt").string();
  EXPECT_EQ(FrontEnds(config, dir.path(), registry).load(files).custom.at("numbers").features(0, 0), 1.0f);
}

// An image's and a WAV's bytes in memory (RawInput::bytes) load as their files do, bit for bit;
// text refuses bytes, and broken bytes are named by the input's value.
TEST_F(FrontEndsTest, BytesInMemoryLoadAsTheirFiles) {
  const FrontEnds front(config, dir.path(), registry);
  test::expect_bytes_load_as_their_files(
      [&](const RawInput& in) { return front.load(std::vector<RawInput>{in}); }, {"text"});
}

TEST_F(FrontEndsTest, ErrorsNameTheModalityAndTheInput) {
  const FrontEnds front(config, dir.path(), registry);
  auto error = [&](std::vector<RawInput> inputs) {
    return test::error_of([&] { (void)front.load(inputs); });
  };
  EXPECT_THAT(error({}), HasSubstr("FrontEnds::load: no input"));
  EXPECT_THAT(error({{"video", "clip.y4m", {}}}),
              HasSubstr("the model has no video modality, but video input was given"));
  EXPECT_THAT(error({{"lidar", "scan.txt", {}}}), HasSubstr("the model has no lidar modality"));
  EXPECT_THAT(error({{"text", "a", {}}, {"text", "b", {}}}),
              HasSubstr("two text inputs for one sample"));
  EXPECT_THAT(error({{"numbers", (dir.path() / "missing.txt").string(), {}}}),
              HasSubstr("missing.txt: cannot open"));
  EXPECT_THAT(error({{"numbers", (dir.path() / "n.txt").string(), {{"offset", 1.0}}}}),
              HasSubstr("unknown option 'offset' (known: scale)"));
  EXPECT_THAT(error({{"image", (dir.path() / "missing.png").string(), {}}}),
              HasSubstr("missing.png"));
  EXPECT_THAT(test::error_of([&] { (void)front.load(SampleFiles{}); }),
              HasSubstr("no input (text, image, audio, video or custom)"));

  // A model modality without a registered front end: an error when input for it is given.
  FrontEndRegistry empty;
  const FrontEnds bare(config, dir.path(), empty);
  EXPECT_FALSE(bare.can_load("numbers"));
  EXPECT_THAT(test::error_of([&] { (void)bare.load(std::vector<RawInput>{{"numbers", "n.txt", {}}}); }),
              HasSubstr("no front end is registered for the model's modality 'numbers'"));
}

TEST_F(FrontEndsTest, TextNeedsTheTokenizerFiles) {
  test::TempDir no_files;
  const FrontEnds front(config, no_files.path(), registry);
  EXPECT_THAT(test::error_of([&] { (void)front.load(std::vector<RawInput>{{"text", "hi", {}}}); }),
              HasSubstr("text input needs the tokenizer files vocab.json + merges.txt"));
}

}  // namespace
}  // namespace tessera
