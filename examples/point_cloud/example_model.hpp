#pragma once
// The model tessera-point-cloud --init writes: text and a `point_cloud` custom modality, random
// weights (so the similarities are those of an untrained model), and a BPE tokenizer trained on
// a dozen shape captions.

#include "point_cloud.hpp"

#include <tessera/tokenize/bpe_trainer.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace point_cloud {

// A fresh model with text and point clouds: 16 points per token (input_dim 3 + 3 * 16), at
// most 32 tokens per cloud on an 8^3 position grid.
inline void write_example_model(const std::filesystem::path& dir) {
  const std::vector<std::string> captions = {
      "a sphere",          "a cube",           "a flat disc",         "a long thin rod",
      "a hollow cylinder", "a cone",           "a small ball",        "a box with sharp corners",
      "a torus like a ring", "a pyramid",      "a plane of points",   "a round shell of points"};
  const auto tokenizer = tessera::train_bpe(captions, 300);

  constexpr int group_size = 16;
  nlohmann::json json = nlohmann::json::parse(R"({
    "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 128, "embed_dim": 32,
    "pooling": "routed",
    "text": {"max_tokens": 32}
  })");
  json["text"]["vocab_size"] = tokenizer.vocab.size();
  json["custom_modalities"] = nlohmann::json::array({nlohmann::json{
      {"name", "point_cloud"},
      {"input_dim", 3 + 3 * group_size},  // a token: its center, then each member relative to it
      {"max_tokens", 64},
      {"options", {{"group_size", group_size}, {"num_groups", 32}, {"grid", 8}}}}});
  const tessera::Config config = tessera::parse_config(json, "tessera-point-cloud config");
  read_options(config.custom.at(0));  // the options fit input_dim

  tessera::MultiModalEncoder<float> model(config);
  model.init_random(2026);
  tessera::save_model(model, dir);
  tokenizer.save(dir);
  std::printf("wrote %s: config.json, model.safetensors (%zu tensors, random weights), "
              "vocab.json + merges.txt (%zu tokens)\n",
              dir.string().c_str(), model.parameters().size(), tokenizer.vocab.size());
}

}  // namespace point_cloud
