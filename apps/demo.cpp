// tessera-demo: the library's main job end to end, on generated inputs.
//
//   tessera-demo [--out DIR] [--threads N]
//
// Builds a small four-modality model (random weights, so the similarities printed are those
// of an untrained model; tessera-train trains one) with a BPE tokenizer trained on a
// few captions, saves it as a model directory, loads it back, writes four generated samples
// as inputs files in the tessera-encode format, encodes them as one packed batch, and prints
// each embedding's first values and the cosine similarity of every pair. It also writes raw
// files (square.ppm, tone.wav, moving.y4m) for the front ends. DIR (default tessera-demo)
// then holds model/, sample_*.safetensors and the raw files, ready for
//   tessera-encode --model DIR/model --inputs DIR/sample_0.safetensors ...
//   tessera-encode --model DIR/model --text "a red square" --image DIR/square.ppm ...
// Exit statuses and errors as every program's (cli.hpp, docs/programs.md).

#include <tessera/tessera.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>

#include "cli.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
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

// The raw files of the demo: an 8-bit PPM image, a WAV tone and a Y4M video.
void write_raw_files(const std::filesystem::path& dir) {
  const tessera::Index size = 48;
  tessera::Image square(size, size);
  for (tessera::Index y = 0; y < size; ++y)
    for (tessera::Index x = 0; x < size; ++x) {
      const bool inside = x >= 12 && x < 36 && y >= 12 && y < 36;
      std::uint8_t* p = square.pixel(y, x);
      p[0] = inside ? 220 : 30;
      p[1] = inside ? 40 : 30;
      p[2] = inside ? 40 : 60;
    }
  std::ofstream ppm(dir / "square.ppm", std::ios::binary);
  ppm << "P6\n" << size << " " << size << "\n255\n";
  ppm.write(reinterpret_cast<const char*>(square.rgb.data()),
            static_cast<std::streamsize>(square.rgb.size()));
  tessera::check(ppm.good(), dir / "square.ppm", ": cannot write");

  tessera::Matrix<float> tone(1, 16000);  // 1 s of 440 Hz at 16 kHz
  for (tessera::Index i = 0; i < tone.cols(); ++i)
    tone(0, i) = 0.5f * static_cast<float>(std::sin(2 * 3.14159265358979 * 440 * i / 16000.0));
  tessera::write_wav(dir / "tone.wav", tone, 16000);

  tessera::Y4mHeader header;
  header.width = size;
  header.height = size;
  header.rate_num = 2;  // 2 frames per second: the model samples at 1 fps
  tessera::Y4mWriter video(dir / "moving.y4m", header);
  for (int t = 0; t < 8; ++t) {
    tessera::Image frame(size, size);
    for (tessera::Index y = 0; y < size; ++y)
      for (tessera::Index x = 0; x < size; ++x) {
        const bool inside = y >= 16 && y < 32 && (x - 4 * t + size) % size < 16;
        std::uint8_t* p = frame.pixel(y, x);
        p[0] = p[1] = p[2] = inside ? 235 : 16;
      }
    video.write(frame);
  }
  video.close();
}

}  // namespace

int main(int argc, char** argv) {
  namespace apps = tessera::apps;
  CLI::App app("Build a small four-modality model with random weights and a BPE tokenizer, write it "
               "with four samples and raw files (square.ppm, tone.wav, moving.y4m), and encode them.",
               "tessera-demo");
  apps::set_conventions(app);
  std::filesystem::path out = "tessera-demo";
  int threads = 0;
  app.add_option("--out", out, "the directory to write")->type_name("DIR");
  apps::add_threads_option(app, threads);
  return apps::run(app, argc, argv, [&] {
    if (threads > 0) tessera::set_num_threads(threads);
    apps::Processing now("--out " + out.string(), out.string());  // everything is written there

    // A byte-level BPE tokenizer trained on a few captions; the model's vocabulary is its size.
    const std::vector<std::string> captions = {
        "a red square", "a red circle moving left", "a blue square moving right",
        "a green triangle", "a rising tone", "a chord of three tones", "a white bar moving right"};
    const auto tokenizer = tessera::train_bpe(captions, 300);
    tessera::Config config = demo_config();
    config.text->vocab_size = static_cast<tessera::Index>(tokenizer.vocab.size());
    tessera::MultiModalEncoder<float> fresh(config);
    fresh.init_random(2026);
    tessera::save_model(fresh, out / "model");
    tokenizer.save(out / "model");
    write_raw_files(out);
    const auto model = tessera::load_model<float>(out / "model");
    std::cout << "model: " << out / "model" << " (" << model.parameters().size()
              << " tensors, D " << model.config.hidden_dim << ", E " << model.config.embed_dim
              << ", random weights)\n";

    std::vector<tessera::Sample<float>> batch(4);
    const std::vector<std::string> names = {"text", "image+audio", "video+text", "all four"};
    batch[0].text = std::vector<std::int64_t>{17, 42, 211, 7, 99};
    batch[1].image = gradient_image(32);
    batch[1].audio = tone_features(16, 30);
    batch[2].video = moving_square(5, 32);
    batch[2].text = std::vector<std::int64_t>{3, 1, 4, 1, 5, 9, 2, 6};
    batch[3] = {batch[0].text, batch[1].image, batch[1].audio, batch[2].video, {}};
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
  });
}
