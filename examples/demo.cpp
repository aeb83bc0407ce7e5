// tessera-demo: the library's main job end to end, on generated inputs.
//
//   tessera-demo [--out DIR] [--threads N]
//
// Builds a small four-modality model (random weights: tessera has no training yet, so the
// similarities printed are those of an untrained model), saves it as a model directory,
// loads it back, writes four generated samples as inputs files in the tessera-encode format,
// encodes them as one packed batch, and prints each embedding's first values and the cosine
// similarity of every pair. DIR (default tessera-demo) then holds model/ and sample_*.safetensors,
// ready for `tessera-encode --model DIR/model --inputs DIR/sample_0.safetensors ...`.

#include <tessera/tessera.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

tessera::Config demo_config() {
  return tessera::parse_config(nlohmann::json::parse(R"({
    "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 256, "embed_dim": 32,
    "activation": "gelu", "norm": "layernorm", "position": "rope", "pooling": "mean",
    "text":  {"vocab_size": 512, "max_tokens": 32},
    "image": {"size": 32, "patch": 8},
    "audio": {"n_mels": 16, "patch_frames": 4, "max_tokens": 64},
    "video": {"tubelet": 2, "pool_queries": 4, "max_tokens": 256}
  })"), "demo config");
}

// A diagonal color gradient, [3, S, S].
tessera::Tensor3<float> gradient_image(tessera::Index size) {
  tessera::Tensor3<float> image(3, size, size);
  for (tessera::Index c = 0; c < 3; ++c)
    for (tessera::Index y = 0; y < size; ++y)
      for (tessera::Index x = 0; x < size; ++x)
        image(c, y, x) = static_cast<float>((x + y + 7 * c) % size) / size - 0.5f;
  return image;
}

// A rising tone as log-mel-like features, [M, T].
tessera::Matrix<float> tone_features(tessera::Index mels, tessera::Index frames) {
  tessera::Matrix<float> features(mels, frames);
  for (tessera::Index m = 0; m < mels; ++m)
    for (tessera::Index t = 0; t < frames; ++t)
      features(m, t) = std::exp(-0.5f * std::pow((m - t * mels / float(frames)) / 1.5f, 2.f)) - 0.3f;
  return features;
}

// A bright square moving right on a dark background, [T, 3, S, S].
tessera::Tensor4<float> moving_square(tessera::Index frames, tessera::Index size) {
  tessera::Tensor4<float> video(frames, 3, size, size);
  video.setConstant(-1.0f);
  for (tessera::Index t = 0; t < frames; ++t)
    for (tessera::Index c = 0; c < 3; ++c)
      for (tessera::Index y = size / 4; y < size / 2; ++y)
        for (tessera::Index x = 0; x < size / 4; ++x) video(t, c, y, (x + 3 * t) % size) = 1.0f;
  return video;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::filesystem::path out = "tessera-demo";
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      tessera::check((arg == "--out" || arg == "--threads") && i + 1 < argc,
                     "usage: tessera-demo [--out DIR] [--threads N]");
      if (arg == "--out") out = argv[++i];
      else tessera::set_num_threads(std::stoi(argv[++i]));
    }

    tessera::MultiModalEncoder<float> fresh(demo_config());
    fresh.init_random(2026);
    tessera::save_model(fresh, out / "model");
    const auto model = tessera::load_model<float>(out / "model");
    std::cout << "model: " << out / "model" << " (" << model.parameters().size()
              << " tensors, D " << model.config.hidden_dim << ", E " << model.config.embed_dim
              << ", random weights)\n";

    std::vector<tessera::Sample<float>> batch(4);
    const std::vector<std::string> names = {"text", "image+audio", "video+text", "all four"};
    batch[0].text = std::vector<std::int64_t>{17, 42, 311, 7, 99};
    batch[1].image = gradient_image(32);
    batch[1].audio = tone_features(16, 30);
    batch[2].video = moving_square(5, 32);
    batch[2].text = std::vector<std::int64_t>{3, 1, 4, 1, 5, 9, 2, 6};
    batch[3] = {batch[0].text, batch[1].image, batch[1].audio, batch[2].video};
    for (std::size_t i = 0; i < batch.size(); ++i) {
      tessera::write_sample(out / ("sample_" + std::to_string(i) + ".safetensors"), batch[i]);
    }

    const auto encodings = model.encode_batch(batch);
    for (std::size_t i = 0; i < encodings.size(); ++i) {
      std::printf("%-12s %3ld tokens  e[:4] = [", names[i].c_str(),
                  static_cast<long>(encodings[i].hidden.rows()));
      for (int j = 0; j < 4; ++j) std::printf("%s%+.4f", j ? ", " : "", encodings[i].embedding[j]);
      std::printf(", ...]\n");
    }
    std::printf("\ncosine similarity\n%12s", "");
    for (const auto& name : names) std::printf(" %12s", name.c_str());
    std::printf("\n");
    for (std::size_t i = 0; i < encodings.size(); ++i) {
      std::printf("%12s", names[i].c_str());
      for (std::size_t j = 0; j < encodings.size(); ++j) {
        std::printf(" %12.4f", encodings[i].embedding.dot(encodings[j].embedding));
      }
      std::printf("\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tessera-demo: error: " << e.what() << "\n";
    return 1;
  }
}
