#pragma once
// The model directory and files that tests/test_pipeline.cpp and the Python tests' reference
// program (python/python_reference.cpp) share: a four-modality model with seeded random
// weights, a BPE tokenizer trained on `pipeline_captions`, and two small Y4M videos.

#include <tessera/io/y4m.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tessera::test {

// Audio longer than 8 chunks (32 frames) is split into clips, as the WAV fixtures are.
inline constexpr const char* pipeline_model_config = R"({
    "hidden_dim": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64, "embed_dim": 16,
    "pooling": "routed", "text": {"vocab_size": 300, "max_tokens": 32},
    "image": {"size": 32, "patch": 8}, "audio": {"n_mels": 16, "max_tokens": 8},
    "video": {"tubelet": 2}})";

inline const std::vector<std::string> pipeline_captions = {
    "a red square moving left", "a rising tone", "a blue circle", "a falling tone in the dark",
    "a green triangle"};

// A video of a bright bar (gray level `shade`) moving right, `frames` 32 x 32 frames at 4 fps.
inline void write_moving_bar_video(const std::filesystem::path& file, Index frames, int shade) {
  Y4mHeader header;
  header.width = header.height = 32;
  header.rate_num = 4;
  Y4mWriter out(file, header);
  for (Index t = 0; t < frames; ++t) {
    Image frame(32, 32);
    for (Index y = 0; y < 32; ++y)
      for (Index x = 0; x < 32; ++x) {
        std::uint8_t* p = frame.pixel(y, x);
        p[0] = p[1] = p[2] = (x / 4 == t % 8) ? static_cast<std::uint8_t>(shade) : 16;
      }
    out.write(frame);
  }
  out.close();
}

// Writes the model (config.json, model.safetensors, vocab.json, merges.txt) into `model_dir`
// and a.y4m (8 frames) and b.y4m (12 frames) into `video_dir`.
inline void write_pipeline_fixture(const std::filesystem::path& model_dir,
                                   const std::filesystem::path& video_dir) {
  std::filesystem::create_directories(model_dir);
  train_bpe(pipeline_captions, 300).save(model_dir);
  MultiModalEncoder<float> fresh(parse_config(nlohmann::json::parse(pipeline_model_config)));
  fresh.init_random(11);
  save_model(fresh, model_dir);
  write_moving_bar_video(video_dir / "a.y4m", 8, 235);
  write_moving_bar_video(video_dir / "b.y4m", 12, 120);
}

}  // namespace tessera::test
