// Model directories (include/tessera/model/model_io.hpp) and the encoder's input/output files
// (include/tessera/model/sample_io.hpp): exact round trips, the checksum of model files, and
// every malformed model is a tessera::Error naming the file and the tensor.

#include <tessera/model/model_io.hpp>
#include <tessera/model/sample_io.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <limits>
#include <map>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <csignal>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#define TESSERA_TEST_FORK 1
#endif

namespace tessera {
namespace test_model_io {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

using tessera::test::TempDir;

Config small_config(const std::string& pooling = "routed") {
  return parse_config(nlohmann::json::parse(R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2,
      "ffn_dim": 32, "embed_dim": 8, "position": "learned", "pooling": ")" + pooling + R"(",
      "text": {"vocab_size": 20, "max_tokens": 6}, "image": {"size": 8, "patch": 4},
      "audio": {"n_mels": 4, "patch_frames": 2, "max_tokens": 8},
      "video": {"tubelet": 2, "pool_queries": 2}})"), "small config");
}

template <class Scalar>
void expect_same_weights(const MultiModalEncoder<Scalar>& a, const MultiModalEncoder<Scalar>& b) {
  const auto pa = a.parameters();
  const auto pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pa[i].name, pb[i].name);
    ASSERT_EQ(pa[i].shape, pb[i].shape);
    for (std::int64_t j = 0; j < pa[i].size(); ++j) {
      ASSERT_EQ(pa[i].data[j], pb[i].data[j]) << pa[i].name << " element " << j;
    }
  }
}

TEST(ModelIo, RoundTripIsExactInFloatAndDouble) {
  TempDir tmp;
  MultiModalEncoder<float> f(small_config());
  f.init_random(1);
  save_model(f, tmp.path() / "f");
  expect_same_weights(f, load_model<float>(tmp.path() / "f"));
  EXPECT_EQ(to_json(load_model<float>(tmp.path() / "f").config), to_json(f.config));

  MultiModalEncoder<double> d(small_config("cls"));
  d.init_random(2);
  save_model(d, tmp.path() / "d");  // F64 by default for double
  expect_same_weights(d, load_model<double>(tmp.path() / "d"));
}

TEST(ModelIo, HalfPrecisionFilesLoadAsTheirRoundedValues) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(3);
  for (DType dtype : {DType::F16, DType::BF16}) {
    save_model(model, tmp.path() / dtype_name(dtype), dtype);
    const auto loaded = load_model<float>(tmp.path() / dtype_name(dtype));
    const auto a = model.parameters();
    const auto b = loaded.parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      for (std::int64_t j = 0; j < a[i].size(); ++j) {
        ASSERT_NEAR(a[i].data[j], b[i].data[j], 1e-2 * std::abs(a[i].data[j]) + 1e-6)
            << dtype_name(dtype) << " " << a[i].name;
      }
    }
  }
}

TEST(ModelIo, ParametersFollowSpecNames) {
  MultiModalEncoder<float> model(small_config());
  std::set<std::string> names;
  for (const auto& p : model.parameters()) names.insert(p.name);
  for (const char* want :
       {"text.token_embed.weight", "text.pos_embed.weight", "image.patch_embed.weight",
        "image.patch_embed.bias", "image.pos_embed.weight", "audio.patch_embed.weight",
        "audio.pos_embed.weight", "video.patch_embed.weight", "video.pool.queries",
        "video.pool.pos_embed", "video.pool.norm_q.weight", "video.pool.norm_kv.bias",
        "video.pool.attn.q_proj.weight", "video.pool.attn.out_proj.bias", "modality_embed.weight",
        "layers.0.norm1.weight", "layers.1.attn.v_proj.bias", "layers.1.ffn.fc2.weight",
        "final_norm.bias", "router.weight", "router.bias", "proj.weight", "logit_scale"}) {
    EXPECT_EQ(names.count(want), 1u) << want;
  }
  EXPECT_EQ(names.count("video.pos_embed.weight"), 0u) << "never with pooled video";
  EXPECT_EQ(names.count("cls_token"), 0u) << "only with cls pooling";
}

// Saves a valid model, lets `edit` change its tensors, and expects load_model to fail with
// a message containing `message`.
void expect_load_error(const std::function<void(std::map<std::string, TensorData>&)>& edit,
                       const std::string& message) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(4);
  save_model(model, tmp.path());
  auto tensors = load_safetensors(tmp.path() / weights_file_name);
  edit(tensors);
  save_safetensors(tmp.path() / weights_file_name, tensors);
  const std::string error = test::error_of([&] { load_model<float>(tmp.path()); });
  EXPECT_THAT(error, HasSubstr(message));
  EXPECT_THAT(error, HasSubstr("model.safetensors"));
}

TEST(ModelIo, MissingTensor) {
  expect_load_error([](auto& t) { t.erase("layers.1.ffn.fc1.bias"); },
                    "missing tensor 'layers.1.ffn.fc1.bias' of shape [32]");
}

TEST(ModelIo, UnexpectedTensor) {
  expect_load_error(
      [](auto& t) { t["cls_token"] = TensorData::from_matrix(Matrix<float>::Zero(1, 16)); },
      "unexpected tensor 'cls_token'");
}

TEST(ModelIo, WrongShape) {
  expect_load_error(
      [](auto& t) { t["proj.weight"] = TensorData::from_matrix(Matrix<float>::Zero(16, 8)); },
      "tensor 'proj.weight' has shape [16, 8], expected [8, 16]");
  expect_load_error(
      [](auto& t) {
        t["image.patch_embed.weight"] = TensorData::from_matrix(Matrix<float>::Zero(16, 47));
      },
      "expected [16, 48] or [16, 3, 4, 4]");
}

TEST(ModelIo, IntegerDtype) {
  expect_load_error(
      [](auto& t) { t["logit_scale"] = TensorData::from_scalar(std::int32_t{3}); },
      "tensor 'logit_scale' has dtype I32, expected F32, F16, BF16 or F64");
}

TEST(ModelIo, NonFiniteWeight) {
  expect_load_error(
      [](auto& t) {
        Matrix<float> w = Matrix<float>::Zero(20, 16);
        w(3, 5) = std::numeric_limits<float>::quiet_NaN();
        t["text.token_embed.weight"] = TensorData::from_matrix(w);
      },
      "tensor 'text.token_embed.weight' holds a non-finite value (nan) at flat index 53");
}

TEST(ModelIo, ConvolutionShapedPatchWeightsLoad) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(5);
  save_model(model, tmp.path());
  auto tensors = load_safetensors(tmp.path() / weights_file_name);
  tensors["image.patch_embed.weight"].shape = {16, 3, 4, 4};
  tensors["audio.patch_embed.weight"].shape = {16, 4, 2};
  tensors["video.patch_embed.weight"].shape = {16, 3, 2, 4, 4};
  save_safetensors(tmp.path() / weights_file_name, tensors);
  expect_same_weights(model, load_model<float>(tmp.path()));
}

TEST(ModelIo, DirectoryAndConfigErrors) {
  TempDir tmp;
  EXPECT_THAT(test::error_of([&] { load_model<float>(tmp.path() / "absent"); }),
              HasSubstr("is not a directory"));
  EXPECT_THROW(load_model<float>(tmp.path()), Error);  // no config.json
  std::ofstream(tmp.path() / "config.json") << R"({"hidden_dim": 30, "num_heads": 4, "text": {}})";
  EXPECT_THAT(test::error_of([&] { load_model<float>(tmp.path()); }), HasSubstr("hidden_dim"));
}

TEST(ModelIo, ParameterCountMatchesTheModelsWeights) {
  std::vector<Config> configs = {small_config("routed"), small_config("cls"), small_config("mean")};
  for (const auto& entry : fs::directory_iterator(fs::path(TESSERA_TEST_DATA_DIR) / "encoder")) {
    configs.push_back(load_config(entry.path() / config_file_name));
  }
  for (const auto& config : configs) {
    const MultiModalEncoder<float> model(config);
    std::uint64_t total = 0;
    for (const auto& p : model.parameters()) total += static_cast<std::uint64_t>(p.size());
    EXPECT_EQ(parameter_count(config), total) << to_json(config).dump();
  }
  Config huge = small_config();
  huge.hidden_dim = huge.ffn_dim = huge.num_layers = detail::config_max_integer;
  huge.num_heads = 1;
  EXPECT_EQ(parameter_count(huge), ~std::uint64_t{0});  // saturates
}

// A config.json describing more weights than model.safetensors can hold (10^6 layers here,
// about 12 GB of float weights) is refused before the model is allocated.
TEST(ModelIo, ConfigLargerThanItsWeightsIsRefusedBeforeAllocating) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  save_model(model, tmp.path());
  Config lying = small_config();
  lying.num_layers = 1'000'000;
  save_config(lying, tmp.path() / config_file_name);
  const std::string error = test::error_of([&] { load_model<float>(tmp.path()); });
  EXPECT_THAT(error, HasSubstr("model.safetensors: "));
  EXPECT_THAT(error, HasSubstr("config.json describes a model of " +
                               std::to_string(parameter_count(lying)) + " weights, more than "
                               "the file's "));
}

#ifdef TESSERA_TEST_FORK
// A save killed half-way leaves the model saved before it intact: save_model writes each
// file to a temporary beside it and renames it into place when complete. The kill is real
// and deterministic: a child process may write at most 64 KB to any file (RLIMIT_FSIZE), so
// the kernel ends it with SIGXFSZ in the middle of writing the 1.3 MB weights file.
TEST(ModelIo, InterruptedSaveLeavesTheOldModelIntact) {
  TempDir tmp;
  MultiModalEncoder<float> old_model(small_config());
  old_model.init_random(1);
  save_model(old_model, tmp.path());
  Config bigger = small_config();
  bigger.text->vocab_size = 20000;  // 20000 x 16 floats of token embeddings
  MultiModalEncoder<float> new_model(bigger);
  new_model.init_random(2);

  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    const rlimit limit{64 * 1024, 64 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      save_model(new_model, tmp.path());
    } catch (...) {
    }
    ::_exit(0);  // reached only if the save was not interrupted
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the save was not interrupted (exit status " << status << ")";
  EXPECT_EQ(WTERMSIG(status), SIGXFSZ);

  // The old model loads, bit for bit; what the child wrote is a temporary file beside it.
  expect_same_weights(old_model, load_model<float>(tmp.path()));
  EXPECT_EQ(load_config(tmp.path() / config_file_name), small_config());
  int temporaries = 0;
  for (const auto& entry : fs::directory_iterator(tmp.path())) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(std::string(weights_file_name) + ".tmp-")) {
      ++temporaries;
      EXPECT_EQ(fs::file_size(entry.path()), 64u * 1024u);  // cut where the limit struck
    }
  }
  EXPECT_EQ(temporaries, 1);
}
#endif

TEST(SampleIo, RoundTripAndErrors) {
  TempDir tmp;
  Sample<float> sample;
  sample.text = std::vector<std::int64_t>{4, 5, 6};
  sample.image = Tensor3<float>(3, 8, 8);
  sample.image->setRandom();
  sample.audio = Matrix<float>::Random(4, 7);
  sample.video = Tensor4<float>(3, 3, 8, 8);
  sample.video->setRandom();
  write_sample(tmp.path() / "in.safetensors", sample);
  const auto back = read_sample<float>(tmp.path() / "in.safetensors");
  EXPECT_EQ(*back.text, *sample.text);
  EXPECT_TRUE(*back.audio == *sample.audio);
  EXPECT_EQ(back.video->dimension(0), 3);
  EXPECT_EQ((*back.image)(2, 7, 1), (*sample.image)(2, 7, 1));

  // Custom modalities: features [n, input_dim] with or without positions [n, 3].
  Sample<float> custom;
  custom.custom["points"].features = Matrix<float>::Random(5, 6);
  custom.custom["points"].positions = Positions::Random(5, 3);
  custom.custom["sensor"].features = Matrix<float>::Random(2, 3);
  write_sample(tmp.path() / "custom.safetensors", custom);
  const auto custom_back = read_sample<float>(tmp.path() / "custom.safetensors");
  ASSERT_EQ(custom_back.custom.size(), 2u);
  EXPECT_TRUE(custom_back.custom.at("points").features == custom.custom["points"].features);
  EXPECT_TRUE(custom_back.custom.at("points").positions == custom.custom["points"].positions);
  EXPECT_TRUE(custom_back.custom.at("sensor").features == custom.custom["sensor"].features);
  EXPECT_EQ(custom_back.custom.at("sensor").positions.rows(), 0);

  auto expect_read_error = [&](std::map<std::string, TensorData> tensors, const std::string& message) {
    save_safetensors(tmp.path() / "bad.safetensors", tensors);
    const std::string error =
        test::error_of([&] { read_sample<float>(tmp.path() / "bad.safetensors"); });
    EXPECT_THAT(error, HasSubstr("bad.safetensors"));
    EXPECT_THAT(error, HasSubstr(message));
  };
  expect_read_error({{"pixels", TensorData::from_vector(std::vector<float>{1, 2})}},
                    "unexpected tensor 'pixels' of shape [2]");
  expect_read_error({{"points", TensorData::from_matrix(Matrix<std::int32_t>::Zero(2, 2))}},
                    "unexpected tensor 'points' of shape [2, 2] and dtype I32");
  expect_read_error({{"points.positions", TensorData::from_matrix(Matrix<std::int64_t>::Zero(2, 3))}},
                    "tensor 'points.positions' has no tensor 'points' of features beside it");
  expect_read_error({{"points", TensorData::from_matrix(Matrix<float>::Zero(2, 4))},
                     {"points.positions", TensorData::from_matrix(Matrix<std::int64_t>::Zero(2, 2))}},
                    "tensor 'points.positions' has shape [2, 2], expected [n, 3]");
  expect_read_error({{"points", TensorData::from_matrix(Matrix<float>::Zero(2, 4))},
                     {"points.positions", TensorData::from_matrix(Matrix<float>::Zero(2, 3))}},
                    "tensor 'points.positions' has dtype F32, expected I32 or I64");
  expect_read_error({{"image", TensorData::from_matrix(Matrix<float>::Zero(2, 2))}},
                    "tensor 'image' has shape [2, 2], expected [C, S, S]");
  expect_read_error({{"text_ids", TensorData::from_vector(std::vector<float>{1, 2})}},
                    "tensor 'text_ids' has dtype F32, expected I32 or I64");
  expect_read_error({{"audio", TensorData::from_matrix(Matrix<std::int32_t>::Zero(2, 2))}},
                    "tensor 'audio' has dtype I32, expected F32, F16, BF16 or F64");
  expect_read_error({}, "no input tensor");
}

// ---- The checksum of model.safetensors ("tessera.crc32", docs/model-files.md) ---------------

// Flips bit `bit` of byte `offset` of `file`'s data section (the bytes after the header).
void flip_data_bit(const fs::path& file, std::uint64_t offset, int bit) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  std::uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<std::uint64_t>(io.get()) << (8 * i);
  const auto at = static_cast<std::streamoff>(8 + header_size + offset);
  io.seekg(at);
  const char byte = static_cast<char>(io.get() ^ (1 << bit));
  io.seekp(at);
  io.put(byte);
  ASSERT_TRUE(io.good()) << file;
}

TEST(ModelIo, SavedModelsCarryAChecksum) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(5);
  save_model(model, tmp.path());
  const auto file = SafetensorsFile::open(tmp.path() / weights_file_name);
  EXPECT_TRUE(file.has_checksum());
  EXPECT_EQ(file.metadata().at("producer"), "tessera");
}

TEST(ModelIo, FlippedBitInTheWeightsIsRefusedNamingTheFile) {
  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(5);
  save_model(model, tmp.path());
  // a low mantissa bit: the weight stays finite and of its shape, only the checksum sees it
  flip_data_bit(tmp.path() / weights_file_name, 1000, 0);
  const std::string error = test::error_of([&] { load_model<float>(tmp.path()); });
  EXPECT_THAT(error, HasSubstr((tmp.path() / weights_file_name).string() +
                               ": checksum mismatch: metadata 'tessera.crc32' is "));
  EXPECT_THAT(error, HasSubstr(" but the contents give "));
}

TEST(ModelIo, ModelsWithoutAChecksumLoad) {
  // Files written elsewhere carry none: the fixtures written by PyTorch, and a tessera model
  // re-saved without one.
  const fs::path fixture = test::data_dir() / "encoder" / "text_image_bf16";
  EXPECT_FALSE(SafetensorsFile::open(fixture / weights_file_name).has_checksum());
  EXPECT_NO_THROW(load_model<float>(fixture));

  TempDir tmp;
  MultiModalEncoder<float> model(small_config());
  model.init_random(6);
  save_model(model, tmp.path());
  save_safetensors(tmp.path() / weights_file_name, load_safetensors(tmp.path() / weights_file_name));
  EXPECT_FALSE(SafetensorsFile::open(tmp.path() / weights_file_name).has_checksum());
  expect_same_weights(model, load_model<float>(tmp.path()));
}

}  // namespace
}  // namespace tessera
