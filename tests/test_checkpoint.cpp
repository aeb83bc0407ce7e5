// The checksum of training checkpoints (train/checkpoint.hpp): every checkpoint carries
// "tessera.crc32", and load_checkpoint refuses one whose contents do not match it or that has
// none. (Round trips and the other checkpoint errors are in test_train.cpp.)

#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/optimizer.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

namespace tessera {
namespace test_checkpoint {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

Config small_config() {
  return parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 30, "max_tokens": 8}})"),
      "test config");
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::uint64_t header_size(const std::string& file) {
  std::uint64_t size = 0;
  for (int i = 7; i >= 0; --i) size = size << 8 | static_cast<unsigned char>(file[static_cast<std::size_t>(i)]);
  return size;
}

// A model with some AdamW state, saved as a checkpoint at step 3 in `dir`/run.ckpt.
struct Saved {
  MultiModalEncoder<float> model{small_config()};
  AdamW<float> optimizer;
  fs::path file;

  explicit Saved(const test::TempDir& dir) : file(dir / "run.ckpt") {
    model.init_random(4);
    AdamWState<float> state;
    state.steps = 3;
    for (const auto& p : model.parameters()) {
      state.tensors.emplace_back(p.name + ".exp_avg", Vector<float>::Constant(p.size(), 0.01f));
      state.tensors.emplace_back(p.name + ".exp_avg_sq", Vector<float>::Constant(p.size(), 1e-4f));
    }
    optimizer.load_state(state, model.parameters());
    save_checkpoint(file, model, optimizer, {3, {{"losses", "1.5,1.25,1.0"}}});
  }
};

// load_checkpoint's error on `file`; the model, optimizer and position must be untouched.
std::string resume_error(const fs::path& file) {
  MultiModalEncoder<float> model(small_config());
  const MultiModalEncoder<float> fresh = model;
  AdamW<float> optimizer;
  TrainingPosition position{7, {}};
  const std::string error =
      test::error_of([&] { load_checkpoint(file, model, optimizer, position); });
  EXPECT_EQ(position.step, 7);
  EXPECT_EQ(optimizer.steps, 0);
  const auto now = model.parameters();
  const auto before = fresh.parameters();
  for (std::size_t i = 0; i < now.size(); ++i) {
    EXPECT_TRUE(std::equal(now[i].data, now[i].data + now[i].size(), before[i].data)) << now[i].name;
  }
  EXPECT_THAT(error, ::testing::Not(HasSubstr("\n")));
  return error;
}

TEST(CheckpointChecksum, SavedCheckpointsCarryOneAndLoad) {
  const test::TempDir dir;
  const Saved saved(dir);
  EXPECT_TRUE(open_checkpoint(saved.file).has_checksum());
  MultiModalEncoder<float> model(small_config());
  AdamW<float> optimizer;
  TrainingPosition position;
  load_checkpoint(saved.file, model, optimizer, position);
  EXPECT_EQ(position.step, 3);
  EXPECT_EQ(position.user.at("losses"), "1.5,1.25,1.0");
  EXPECT_EQ(optimizer.steps, 3);
}

TEST(CheckpointChecksum, FlippedBitInTheDataIsRefusedNamingTheFile) {
  const test::TempDir dir;
  const Saved saved(dir);
  const std::string good = read_bytes(saved.file);
  // every 97th byte of the data section, each bit in turn: weights and moments alike
  for (std::size_t at = 8 + header_size(good), n = 0; at < good.size(); at += 97, ++n) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ (1 << (n % 8)));
    write_bytes(saved.file, bad);
    EXPECT_THAT(resume_error(saved.file),
                HasSubstr(saved.file.string() + ": checksum mismatch: metadata 'tessera.crc32' is "))
        << "byte " << at;
  }
}

TEST(CheckpointChecksum, FlippedBitInTheMetadataIsRefused) {
  // "step":"3" -> "2" is one bit, and would resume the run at the wrong step.
  const test::TempDir dir;
  const Saved saved(dir);
  std::string bad = read_bytes(saved.file);
  const auto at = bad.find(R"("step":"3")");
  ASSERT_NE(at, std::string::npos);
  bad[at + 8] = '2';
  write_bytes(saved.file, bad);
  EXPECT_THAT(resume_error(saved.file), HasSubstr(saved.file.string() + ": checksum mismatch"));
}

TEST(CheckpointChecksum, CheckpointWithoutAChecksumIsRefused) {
  const test::TempDir dir;
  const Saved saved(dir);
  // the same tensors and metadata, written without the checksum (as an older tessera did)
  const auto in = SafetensorsFile::open(saved.file);
  save_safetensors(saved.file, load_safetensors(saved.file), in.metadata());
  ASSERT_FALSE(SafetensorsFile::open(saved.file).has_checksum());
  const std::string error = resume_error(saved.file);
  EXPECT_THAT(error, HasSubstr(saved.file.string() + ": no checksum (metadata 'tessera.crc32')"));
  EXPECT_THAT(error, HasSubstr("tessera writes one into every checkpoint"));
  EXPECT_THAT(test::error_of([&] { (void)open_checkpoint(saved.file); }),
              HasSubstr("no checksum"));
}

TEST(CheckpointChecksum, OpenCheckpointRefusesOtherFiles) {
  const test::TempDir dir;
  const Saved saved(dir);
  save_model(saved.model, dir / "model");  // has a checksum, but is not a checkpoint
  EXPECT_THAT(test::error_of([&] { (void)open_checkpoint(dir / "model" / "model.safetensors"); }),
              HasSubstr("model.safetensors: not a tessera checkpoint (format 'pt', expected "
                        "'tessera-checkpoint')"));
  save_safetensors(dir / "plain.safetensors", {{"w", TensorData::from_scalar(1.0f)}});
  EXPECT_THAT(test::error_of([&] { (void)open_checkpoint(dir / "plain.safetensors"); }),
              HasSubstr("plain.safetensors: not a tessera checkpoint (no metadata 'format')"));
}

}  // namespace test_checkpoint
}  // namespace tessera
