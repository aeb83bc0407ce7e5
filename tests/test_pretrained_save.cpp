// Writing a pretrained model back (include/tessera/model/pretrained_save.hpp): each fixture
// kind of tests/data/pretrained, loaded and saved unchanged, gives a weights file that is
// byte-identical to the original (F32, the F16 tensor of the ImageBind fixture, BF16 and F16
// in a hand-made file, tensors in an order that is not the names', a checksum) and a
// directory that loads to bitwise the same encodings; a changed weight reaches the file at
// the place the family stores it (packed q/k/v, a transposed projection, [1, 1, D] tokens)
// and nothing else changes; every refusal leaves nothing behind.

#include <tessera/io/read_file.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/pretrained_save.hpp>

#include "pretrained_fixture.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace tessera {
namespace test_pretrained_save {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using test::TempDir;
using test::error_of;
using test::pretrained_dir;

const char* const kinds[] = {"hf_clip", "open_clip", "imagebind", "towers_torchvision"};

std::string bytes_of(const fs::path& file) { return read_file(file, {}, ReadLimits::whole_file); }

// The names in a directory, sorted.
std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.push_back(entry.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

fs::path weights_file(const fs::path& dir) {
  return dir / (detect_model_kind(dir) == ModelKind::open_clip ? open_clip_weights_name
                                                                : weights_file_name);
}

fs::path copy_model(const TempDir& tmp, const std::string& kind) {
  const fs::path dir = tmp / (kind + "_copy");
  fs::copy(pretrained_dir(kind) / "model", dir, fs::copy_options::recursive);
  return dir;
}

// The inputs of a fixture's cases (tests/data/pretrained/<kind>/cases.safetensors).
template <class Scalar>
std::vector<Sample<Scalar>> samples_of(const std::string& kind) {
  const auto file = SafetensorsFile::open(pretrained_dir(kind) / "cases.safetensors");
  std::vector<Sample<Scalar>> out;
  for (const std::string& name : file.names()) {
    const std::string m = name.substr(0, name.find('.'));
    const auto values = [&] { return file.read<Scalar>(name); };
    Sample<Scalar> s;
    const auto& shape = file.info(name).shape;
    if (name.ends_with(".ids")) {
      s.text = file.read<std::int64_t>(name);
    } else if (name.ends_with(".pixels")) {
      Tensor3<Scalar> image(shape[0], shape[1], shape[2]);
      const auto v = values();
      std::copy(v.begin(), v.end(), image.data());
      s.image = std::move(image);
    } else if (name.ends_with(".frames")) {
      Tensor4<Scalar> video(shape[0], shape[1], shape[2], shape[3]);
      const auto v = values();
      std::copy(v.begin(), v.end(), video.data());
      s.video = std::move(video);
    } else if (name.ends_with(".features")) {
      s.audio = file.read_matrix<Scalar>(name);
    } else {
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

// Every embedding and hidden state of `model` on the fixture's inputs equals `other`'s bit
// for bit.
template <class Scalar>
void expect_same_encodings(const TowerModel<Scalar>& model, const TowerModel<Scalar>& other,
                           const std::string& kind) {
  const auto samples = samples_of<Scalar>(kind);
  ASSERT_GE(samples.size(), 2u);
  const auto a = model.encode_batch(samples);
  const auto b = other.encode_batch(samples);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    EXPECT_TRUE(a[i].embedding == b[i].embedding) << kind << " sample " << i;
    EXPECT_TRUE(a[i].hidden == b[i].hidden) << kind << " sample " << i;
  }
  EXPECT_EQ(model.logit_scale, other.logit_scale);
}

// ---- unchanged: the same bytes, the same encodings ------------------------------------------

TEST(SavePretrained, UnchangedGivesTheSameWeightsBytesAndFiles) {
  for (const std::string kind : kinds) {
    if (!fs::exists(pretrained_dir(kind))) continue;
    SCOPED_TRACE(kind);
    TempDir tmp;
    const fs::path from = pretrained_dir(kind) / "model";
    const TowerModel<float> model = load_tower_model<float>(from);
    save_tower_model(model, from, tmp / "out");
    EXPECT_EQ(entries(tmp / "out"), entries(from));
    for (const auto& name : entries(from)) {
      SCOPED_TRACE(name);
      if (kind == "towers_torchvision" && name == "config.json") {
        // written by to_json: the same config, not necessarily the same text
        EXPECT_EQ(load_tower_model<float>(tmp / "out").config, model.config);
        continue;
      }
      EXPECT_TRUE(bytes_of(tmp / "out" / name) == bytes_of(from / name));
    }
    EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"out"});  // no temporary left
    expect_same_encodings(model, load_tower_model<float>(tmp / "out"), kind);
  }
}

TEST(SavePretrained, ADoubleModelWritesTheSameBytesToo) {
  if (!fs::exists(pretrained_dir("open_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("open_clip") / "model";
  const TowerModel<double> model = load_tower_model<double>(from);
  save_tower_model(model, from, tmp / "out");
  EXPECT_TRUE(bytes_of(weights_file(tmp / "out")) == bytes_of(weights_file(from)));
  expect_same_encodings(model, load_tower_model<double>(tmp / "out"), "open_clip");
}

// A weights file as PyTorch's safetensors writes real ones: tensors ordered by dtype then
// name (not by name alone), BF16 and F16 beside F32, JSON with spaces, metadata; tessera's
// loader reads it, and the saved file is byte-identical.
TEST(SavePretrained, OtherOrdersDtypesAndSpacingAreKeptByteForByte) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "hf_clip");
  const auto original = load_safetensors(dir / weights_file_name);
  std::vector<std::pair<std::string, TensorData>> order(original.rbegin(), original.rend());
  std::size_t i = 0;
  for (auto& [name, tensor] : order) {  // every third BF16, every fifth F16, from the floats
    if (tensor.dtype != DType::F32 || name == "logit_scale") continue;
    const DType to = i % 3 == 0 ? DType::BF16 : i % 5 == 0 ? DType::F16 : DType::F32;
    ++i;
    const auto values = SafetensorsFile::from_bytes(safetensors_bytes({{name, tensor}}))
                            .read<float>(name);
    tensor = TensorData::from_vector(values, tensor.shape, to);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second.dtype) > dtype_size(b.second.dtype);
  });
  std::string header = "{\"__metadata__\": {\"format\": \"pt\"}";
  std::string data;
  for (const auto& [name, tensor] : order) {
    header += ", \"" + name + "\": {\"dtype\": \"" + dtype_name(tensor.dtype) + "\", \"shape\": [";
    for (std::size_t d = 0; d < tensor.shape.size(); ++d) {
      header += (d ? ", " : "") + std::to_string(tensor.shape[d]);
    }
    header += "], \"data_offsets\": [" + std::to_string(data.size()) + ", " +
              std::to_string(data.size() + tensor.bytes.size()) + "]}";
    data.append(reinterpret_cast<const char*>(tensor.bytes.data()), tensor.bytes.size());
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int b = 0; b < 8; ++b) file[b] = static_cast<char>((header.size() >> (8 * b)) & 0xFF);
  std::ofstream(dir / weights_file_name, std::ios::binary) << file << header << data;

  const TowerModel<float> model = load_tower_model<float>(dir);
  save_tower_model(model, dir, tmp / "out");
  EXPECT_TRUE(bytes_of(tmp / "out" / weights_file_name) == bytes_of(dir / weights_file_name));
  expect_same_encodings(model, load_tower_model<float>(tmp / "out"), "hf_clip");
}

// A file that carries tessera's checksum gets it recomputed: the saved file opens (open
// verifies it), unchanged it is byte-identical.
TEST(SavePretrained, AChecksumIsRecomputed) {
  if (!fs::exists(pretrained_dir("towers_torchvision"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "towers_torchvision");
  save_safetensors(dir / weights_file_name, load_safetensors(dir / weights_file_name),
                   {{"format", "pt"}}, Checksum::crc32);
  TowerModel<float> model = load_tower_model<float>(dir);
  save_tower_model(model, dir, tmp / "same");
  EXPECT_TRUE(bytes_of(tmp / "same" / weights_file_name) == bytes_of(dir / weights_file_name));
  model.towers.at(Modality::image).ln_post.weight(0) += 0.5f;
  save_tower_model(model, dir, tmp / "changed");
  const auto saved = SafetensorsFile::open(tmp / "changed" / weights_file_name);
  EXPECT_TRUE(saved.has_checksum());
  EXPECT_NE(saved.metadata().at(checksum_key),
            SafetensorsFile::open(dir / weights_file_name).metadata().at(checksum_key));
  EXPECT_EQ(load_tower_model<float>(tmp / "changed").towers.at(Modality::image).ln_post.weight(0),
            model.towers.at(Modality::image).ln_post.weight(0));
}

// ---- a changed weight lands where the family stores it, and nothing else changes ------------

struct Change {
  std::string kind;
  std::function<float&(TowerModel<float>&)> weight;  // the model's value to change
  std::string tensor;                                // where the file holds it
  std::function<std::size_t(const TowerModel<float>&)> index;  // its flat index there
};

std::vector<Change> changes() {
  using M = TowerModel<float>;
  const auto width = [](const M& m, Modality t) { return std::size_t(m.towers.at(t).config.width); };
  return {
      {"hf_clip", [](M& m) -> float& { return m.towers.at(Modality::text).blocks[0].attn.k_proj.weight(1, 2); },
       "text_model.encoder.layers.0.self_attn.k_proj.weight",
       [=](const M& m) { return 1 * width(m, Modality::text) + 2; }},
      {"hf_clip", [](M& m) -> float& { return m.logit_scale; }, "logit_scale",
       [](const M&) { return std::size_t{0}; }},
      // packed in_proj [3D, D]: k is rows D..2D
      {"open_clip", [](M& m) -> float& { return m.towers.at(Modality::image).blocks[1].attn.k_proj.weight(1, 2); },
       "visual.transformer.resblocks.1.attn.in_proj_weight",
       [=](const M& m) { const auto d = width(m, Modality::image); return (d + 1) * d + 2; }},
      {"open_clip", [](M& m) -> float& { return m.towers.at(Modality::text).blocks[0].attn.v_proj.bias(4); },
       "transformer.resblocks.0.attn.in_proj_bias",
       [=](const M& m) { return 2 * width(m, Modality::text) + 4; }},
      // OpenAI's projection, stored [D, E]: the model's (e, d) at d * E + e
      {"open_clip", [](M& m) -> float& { return m.towers.at(Modality::image).proj.weight(2, 3); },
       "visual.proj", [](const M& m) { return std::size_t(3 * m.embed_dim() + 2); }},
      // ImageBind's add_bias_kv token, stored [1, 1, D]
      {"imagebind", [](M& m) -> float& { return m.towers.at(Modality::audio).blocks[0].attn.bias_k(5); },
       "modality_trunks.audio.blocks.0.attn.bias_k", [](const M&) { return std::size_t{5}; }},
      // an F16 tensor (0.5 is exact in F16)
      {"imagebind", [](M& m) -> float& { return m.towers.at(Modality::text).token_embedding(3, 4); },
       "modality_preprocessors.text.token_embedding.weight",
       [=](const M& m) { return 3 * width(m, Modality::text) + 4; }},
      {"imagebind", [](M& m) -> float& { return m.towers.at(Modality::image).patch.weight(0, 1); },
       "modality_preprocessors.vision.rgbt_stem.proj.1.weight", [](const M&) { return std::size_t{1}; }},
      {"towers_torchvision", [](M& m) -> float& { return m.towers.at(Modality::image).patch.bias(2); },
       "vision.conv1.bias", [](const M&) { return std::size_t{2}; }},
  };
}

TEST(SavePretrained, AChangedWeightIsWrittenWhereTheFamilyKeepsItAndNothingElse) {
  for (const Change& change : changes()) {
    if (!fs::exists(pretrained_dir(change.kind))) continue;
    SCOPED_TRACE(change.kind + ": " + change.tensor);
    TempDir tmp;
    const fs::path from = pretrained_dir(change.kind) / "model";
    TowerModel<float> model = load_tower_model<float>(from);
    change.weight(model) = 0.5f;
    save_tower_model(model, from, tmp / "out");

    const auto before = SafetensorsFile::open(weights_file(from));
    const auto after = SafetensorsFile::open(weights_file(tmp / "out"));
    ASSERT_EQ(after.names(), before.names());
    for (const auto& name : before.names()) {
      const TensorInfo& a = before.info(name);
      const TensorInfo& b = after.info(name);
      EXPECT_EQ(b.dtype, a.dtype) << name;
      EXPECT_EQ(b.shape, a.shape) << name;
      EXPECT_EQ(std::pair(b.begin, b.end), std::pair(a.begin, a.end)) << name;
      const bool same = std::equal(a.bytes.begin(), a.bytes.end(), b.bytes.begin(), b.bytes.end());
      if (name != change.tensor) {
        EXPECT_TRUE(same) << name << " changed";
        continue;
      }
      const auto old_values = before.read<float>(name);
      const auto new_values = after.read<float>(name);
      const std::size_t at = change.index(model);
      ASSERT_LT(at, new_values.size());
      EXPECT_EQ(new_values[at], 0.5f);
      EXPECT_NE(old_values[at], 0.5f);
      for (std::size_t i = 0; i < new_values.size(); ++i) {
        if (i != at) {
          EXPECT_EQ(new_values[i], old_values[i]) << name << " at " << i;
        }
      }
    }
    const TowerModel<float> reloaded = load_tower_model<float>(tmp / "out");
    EXPECT_EQ(change.weight(const_cast<TowerModel<float>&>(reloaded)), 0.5f);
    expect_same_encodings(model, reloaded, change.kind);
  }
}

// ---- the directory's other files ------------------------------------------------------------

TEST(SavePretrained, OtherFilesAreCopiedButNotOtherCopiesOfTheWeights) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "hf_clip");
  std::ofstream(dir / "tokenizer.json") << "{}";
  std::ofstream(dir / "pytorch_model.bin") << "old weights";
  std::ofstream(dir / "model.fp16.safetensors") << "old weights";
  fs::create_directory(dir / "extra");
  std::ofstream(dir / "extra" / "notes.txt") << "kept";
  save_tower_model(load_tower_model<float>(dir), dir, tmp / "out");
  EXPECT_EQ(entries(tmp / "out"),
            (std::vector<std::string>{"config.json", "extra", "model.safetensors",
                                      "preprocessor_config.json", "tokenizer.json"}));
  EXPECT_EQ(bytes_of(tmp / "out" / "extra" / "notes.txt"), "kept");
}

// ---- refusals leave nothing behind ----------------------------------------------------------

TEST(SavePretrained, ANonFiniteWeightIsNamedAndNothingIsWritten) {
  if (!fs::exists(pretrained_dir("open_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("open_clip") / "model";
  TowerModel<float> model = load_tower_model<float>(from);
  model.towers.at(Modality::text).blocks[1].ffn.fc2.weight(0, 3) =
      std::numeric_limits<float>::quiet_NaN();
  const std::string error = error_of([&] { save_tower_model(model, from, tmp / "out"); });
  EXPECT_THAT(error, HasSubstr("transformer.resblocks.1.mlp.c_proj.weight"));
  EXPECT_THAT(error, HasSubstr("non-finite value (nan) at flat index 3"));
  EXPECT_THAT(error, HasSubstr("(the text tower)"));
  EXPECT_TRUE(fs::is_empty(tmp.path()));
  model.towers.at(Modality::text).blocks[1].ffn.fc2.weight(0, 3) = 0;
  model.logit_scale = std::numeric_limits<float>::infinity();
  EXPECT_THAT(error_of([&] { save_tower_model(model, from, tmp / "out"); }),
              HasSubstr("'logit_scale' holds a non-finite value"));
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(SavePretrained, AValueItsDtypeCannotHoldIsNamed) {
  if (!fs::exists(pretrained_dir("imagebind"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("imagebind") / "model";
  TowerModel<float> model = load_tower_model<float>(from);
  model.towers.at(Modality::text).token_embedding(0, 0) = 1e6f;  // an F16 tensor
  const std::string error = error_of([&] { save_tower_model(model, from, tmp / "out"); });
  EXPECT_THAT(error, HasSubstr("modality_preprocessors.text.token_embedding.weight"));
  EXPECT_THAT(error, HasSubstr("stored as F16"));
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(SavePretrained, TheSourceDirectoryOnlyWhenAllowed) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path dir = copy_model(tmp, "hf_clip");
  std::ofstream(dir / "pytorch_model.bin") << "left alone";
  const std::string original = bytes_of(dir / weights_file_name);
  TowerModel<float> model = load_tower_model<float>(dir);
  model.towers.at(Modality::image).ln_post.bias(1) = 0.25f;
  EXPECT_THAT(error_of([&] { save_tower_model(model, dir, dir); }), HasSubstr("overwrite_source"));
  EXPECT_THAT(error_of([&] { save_tower_model(model, dir, dir / "."); }),
              HasSubstr("overwrite_source"));
  EXPECT_THAT(error_of([&] { save_tower_model(model, dir, dir / "sub"); }),
              HasSubstr("is inside"));
  EXPECT_THAT(error_of([&] { save_tower_model(model, dir, tmp.path(), {.replace = true}); }),
              HasSubstr("holds"));
  EXPECT_TRUE(bytes_of(dir / weights_file_name) == original);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"config.json", "model.safetensors",
                                                   "preprocessor_config.json", "pytorch_model.bin"}));

  save_tower_model(model, dir, dir, {.overwrite_source = true});
  EXPECT_EQ(load_tower_model<float>(dir).towers.at(Modality::image).ln_post.bias(1), 0.25f);
  EXPECT_EQ(bytes_of(dir / "pytorch_model.bin"), "left alone");  // in place: the rest stays
  EXPECT_EQ(entries(dir).size(), 4u);
}

TEST(SavePretrained, AnExistingOutputOnlyWhenEmptyOrReplaced) {
  if (!fs::exists(pretrained_dir("open_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("open_clip") / "model";
  const TowerModel<float> model = load_tower_model<float>(from);
  fs::create_directory(tmp / "empty");
  save_tower_model(model, from, tmp / "empty");
  EXPECT_EQ(entries(tmp / "empty"), entries(from));

  fs::create_directory(tmp / "full");
  std::ofstream(tmp / "full" / "mine.txt") << "user data";
  EXPECT_THAT(error_of([&] { save_tower_model(model, from, tmp / "full"); }),
              HasSubstr("not empty; set SaveTowerModelOptions::replace"));
  EXPECT_EQ(bytes_of(tmp / "full" / "mine.txt"), "user data");
  save_tower_model(model, from, tmp / "full", {.replace = true});
  EXPECT_EQ(entries(tmp / "full"), entries(from));
  EXPECT_EQ(entries(tmp.path()), (std::vector<std::string>{"empty", "full"}));

  std::ofstream(tmp / "file") << "x";
  EXPECT_THAT(error_of([&] { save_tower_model(model, from, tmp / "file"); }),
              HasSubstr("not a directory"));
}

// merge: the model's files into a directory that keeps its own (tessera-train's MODEL_DIR).
TEST(SavePretrained, MergeKeepsTheDirectorysOtherFiles) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("hf_clip") / "model";
  TowerModel<float> model = load_tower_model<float>(from);
  fs::create_directory(tmp / "run");
  std::ofstream(tmp / "run" / "training.json") << "{}";
  save_tower_model(model, from, tmp / "run", {.merge = true});
  std::vector<std::string> expected = entries(from);
  expected.push_back("training.json");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(entries(tmp / "run"), expected);
  EXPECT_EQ(bytes_of(tmp / "run" / "training.json"), "{}");
  EXPECT_EQ(bytes_of(weights_file(tmp / "run")), bytes_of(weights_file(from)));
  // again, with a changed weight: the weights file is replaced, the other files stay
  model.logit_scale += 1;
  save_tower_model(model, from, tmp / "run", {.merge = true});
  EXPECT_EQ(entries(tmp / "run"), expected);
  EXPECT_EQ(load_tower_model<float>(tmp / "run").logit_scale, model.logit_scale);
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"run"});
}

TEST(SavePretrained, AnUnwritablePlaceLeavesNothing) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = pretrained_dir("hf_clip") / "model";
  const TowerModel<float> model = load_tower_model<float>(from);
  // A parent that is a regular file (root writes anywhere, so no permission bits), and one
  // that does not exist.
  std::ofstream(tmp / "file") << "x";
  EXPECT_THAT(error_of([&] { save_tower_model(model, from, tmp / "file" / "out"); }),
              HasSubstr("save_tower_model"));
  EXPECT_THAT(error_of([&] { save_tower_model(model, from, tmp / "missing" / "out"); }),
              HasSubstr("is not an existing directory"));
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"file"});
}

TEST(SavePretrained, AModelIsSavedOnlyIntoItsOwnKind) {
  if (!fs::exists(pretrained_dir("hf_clip")) || !fs::exists(pretrained_dir("open_clip"))) {
    GTEST_SKIP();
  }
  TempDir tmp;
  const TowerModel<float> model = load_tower_model<float>(pretrained_dir("hf_clip") / "model");
  EXPECT_THAT(error_of([&] {
                save_tower_model(model, pretrained_dir("open_clip") / "model", tmp / "out");
              }),
              HasSubstr("is not the one"));
  EXPECT_THAT(error_of([&] {
                save_tower_model(model, test::data_dir() / "encoder" / "text_image_bf16",
                                 tmp / "out");
              }),
              HasSubstr("save_model"));
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

// ---- the native form of any family, and new towers (save_towers_model, add_tower) ----------

// A tower's keys in the native form, as a TOWER.json file holds them.
nlohmann::json tower_keys(const TowerConfig& tower) {
  TowerModelConfig one;
  one.embed_dim = tower.embed_dim;
  one.towers[tower.modality] = tower;
  return to_json(one).at("towers").at(modality_name(tower.modality));
}

// Every family's model saved as a tessera_towers directory loads back as the same towers and
// embeds every case bit for bit as the original: the same math under the native names. (The
// input preparation is the front ends' matter: tessera-train checks it, --add-tower.)
TEST(SaveTowers, EveryFamilyConvertsToTheNativeFormExactly) {
  for (const std::string kind : kinds) {
    if (!fs::exists(pretrained_dir(kind))) continue;
    SCOPED_TRACE(kind);
    TempDir tmp;
    const fs::path from = pretrained_dir(kind) / "model";
    const TowerModel<float> model = load_tower_model<float>(from);
    save_towers_model(model, tmp / "out", from);
    EXPECT_EQ(detect_model_kind(tmp / "out"), ModelKind::tessera_towers);
    const TowerModel<float> native = load_tower_model<float>(tmp / "out");
    EXPECT_EQ(native.config, native_towers_config(model.config, "test"));
    EXPECT_EQ(native.config.towers, model.config.towers);
    expect_same_encodings(model, native, kind);
    // the tokenizer and preprocessor files come along, no other weights or model config
    for (const auto& name : entries(tmp / "out")) {
      EXPECT_TRUE(name == "config.json" || name == "model.safetensors" ||
                  fs::exists(from / name)) << name;
      EXPECT_NE(name, "open_clip_config.json");
      EXPECT_NE(name, "open_clip_model.safetensors");
    }
    EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"out"});
  }
}

TEST(SaveTowers, TheOutputMayNotBeTheFilesSourceOrHalfWritten) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TempDir tmp;
  const fs::path from = copy_model(tmp, "hf_clip");
  TowerModel<float> model = load_tower_model<float>(from);
  EXPECT_THAT(error_of([&] { save_towers_model(model, from, from); }), HasSubstr("or inside it"));
  EXPECT_THAT(error_of([&] { save_towers_model(model, from / "sub", from); }),
              HasSubstr("or inside it"));
  model.towers.at(Modality::image).proj.weight(0, 0) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { save_towers_model(model, tmp / "out", from); }),
              HasSubstr("image.proj.weight (the image tower) holds a non-finite value"));
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"hf_clip_copy"});
}

// An audio tower added to a CLIP model: ImageBind's by default, random from the seed (the same
// seed, the same weights), projecting into CLIP's space; the old towers untouched; saved and
// loaded back, it embeds as before.
TEST(AddTower, ANewAudioTowerJoinsACLIPModel) {
  if (!fs::exists(pretrained_dir("hf_clip")) || !fs::exists(pretrained_dir("imagebind"))) {
    GTEST_SKIP();
  }
  const fs::path from = pretrained_dir("hf_clip") / "model";
  const TowerModel<float> clip = load_tower_model<float>(from);
  const Index e = clip.config.embed_dim;
  const TowerConfig imagebind_audio = imagebind_tower(Modality::audio, e);
  EXPECT_EQ(imagebind_audio.width, 768);
  EXPECT_EQ(imagebind_audio.layers, 12);
  EXPECT_EQ(imagebind_audio.height, 128);
  EXPECT_EQ(imagebind_audio.width_in, 204);
  EXPECT_TRUE(imagebind_audio.bias_kv && imagebind_audio.stem_norm);
  EXPECT_EQ(imagebind_audio.embed_dim, e);

  // the fixture's own small audio tower, as a user's TOWER.json would give it
  const TowerModel<float> imagebind = load_tower_model<float>(pretrained_dir("imagebind") / "model");
  TowerConfig small = imagebind.config.towers.at(Modality::audio);
  const nlohmann::json keys = tower_keys(imagebind.config.towers.at(Modality::audio));
  const TowerConfig read = tower_config_from_json(keys, e, "audio.json");
  small.embed_dim = e;
  EXPECT_EQ(read, small);

  TowerModel<float> a = clip, b = clip, c = clip;
  add_tower(a, read, 7);
  add_tower(b, read, 7);
  add_tower(c, read, 8);
  EXPECT_EQ(a.config.family, "tessera_towers");
  EXPECT_EQ(a.config.towers.at(Modality::audio), read);
  const auto weights = [](const TowerModel<float>& m) {
    std::vector<float> out;
    for (const auto& p : m.parameters()) out.insert(out.end(), p.data, p.data + p.size());
    return out;
  };
  EXPECT_EQ(weights(a), weights(b));
  EXPECT_NE(weights(a), weights(c));
  const auto& tower = a.towers.at(Modality::audio);
  EXPECT_GT(tower.proj.weight.cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_TRUE((tower.ln_post.weight.array() == 1.0f).all());
  EXPECT_TRUE((tower.blocks[0].attn.bias_k.array() == 0.0f).all());
  for (const Modality m : {Modality::text, Modality::image}) {
    EXPECT_TRUE(a.towers.at(m).proj.weight == clip.towers.at(m).proj.weight);
  }

  // audio samples embed into the model's space; text and images as before
  std::vector<Sample<float>> samples = samples_of<float>("hf_clip");
  const auto before = clip.encode_batch(samples);
  for (const auto& s : samples_of<float>("imagebind")) {
    if (s.audio) samples.push_back(s);
  }
  ASSERT_GT(samples.size(), before.size());
  const auto after = a.encode_batch(samples);
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(after[i].embedding == before[i].embedding) << i;
  }
  EXPECT_EQ(after.back().embedding.size(), e);

  TempDir tmp;
  save_towers_model(a, tmp / "out", from);
  const TowerModel<float> loaded = load_tower_model<float>(tmp / "out");
  EXPECT_EQ(loaded.config, a.config);
  EXPECT_EQ(weights(loaded), weights(a));
  const auto again = loaded.encode_batch(samples);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    EXPECT_TRUE(again[i].embedding == after[i].embedding) << i;
  }
}

TEST(AddTower, WhatCannotBeAddedIsNamedAndTheModelStaysAsItWas) {
  if (!fs::exists(pretrained_dir("hf_clip"))) GTEST_SKIP();
  TowerModel<float> clip = load_tower_model<float>(pretrained_dir("hf_clip") / "model");
  const TowerModelConfig config = clip.config;
  const Index e = config.embed_dim;
  EXPECT_THAT(error_of([&] { add_tower(clip, config.towers.at(Modality::image), 1); }),
              HasSubstr("has a image tower already"));
  TowerConfig wrong = imagebind_tower(Modality::audio, e + 1);
  EXPECT_THAT(error_of([&] { add_tower(clip, wrong, 1); }), HasSubstr("projects to"));
  EXPECT_EQ(clip.config, config);
  EXPECT_EQ(clip.towers.size(), 2u);
  EXPECT_THAT(error_of([&] { imagebind_tower(Modality::text, e); }), HasSubstr("no default"));
  nlohmann::json keys = tower_keys(imagebind_tower(Modality::audio, e));
  keys["widht"] = 3;
  EXPECT_THAT(error_of([&] { tower_config_from_json(keys, e, "audio.json"); }),
              HasSubstr("audio.json: unknown key \"widht\""));
  keys.erase("widht");
  keys["heads"] = 5;
  EXPECT_THAT(error_of([&] { tower_config_from_json(keys, e, "audio.json"); }),
              HasSubstr("not divisible"));
  keys["heads"] = "twelve";
  EXPECT_THAT(error_of([&] { tower_config_from_json(keys, e, "audio.json"); }),
              HasSubstr("key \"heads\""));
}

}  // namespace test_pretrained_save
}  // namespace tessera
