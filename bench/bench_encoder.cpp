// bench_encoder: whole-encoder throughput, front ends to unit embeddings (encode_batch).
//
// One small model per case (D 256, 4 layers, 4 heads, F 1024, E 256, RoPE, mean pooling,
// random weights) and one input batch built once; each iteration is one encode_batch call:
//
//   case          batch  input                                          tokens L
//   text            1    64 token ids                                        64
//   image           1    [3, 224, 224], patch 16                            196
//   audio           1    [128 mels, 1000 frames], patch_frames 4            250
//   video           1    [8, 3, 224, 224], tubelet 2 (4 steps x 196)        784
//   video_pooled    1    the same, pool_queries 4 (4 steps x 4)              16
//   mixed           8    text, image, audio, video, text+image, text+audio,
//                        image+audio, all four (video not pooled)          3608
//
// and a ViT-B/16-sized image model (D 768, 12 layers, 12 heads, F 3072, learned positions,
// cls pooling; torchvision's vit_b_16 in bench/compare_torch.py's comparison):
//
//   vit_b16         1    [3, 224, 224], patch 16, + cls                      197
//   vit_b16_batch8  8    the same image 8 times                             1576
//
// Counters: tokens/s (transformer tokens, after pooling) and samples/s, per wall-clock
// second; `tokens` is the tokens of one call. Each case runs with 1 and 2 threads
// (tessera::set_num_threads). The whole binary runs in well under a minute on two cores.
//
//   build/bench/bin/bench_encoder [--benchmark_filter=mixed] [--benchmark_min_time=0.05]

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace {

using tessera::Index;
using Encoder = tessera::MultiModalEncoder<float>;
using Sample = tessera::Sample<float>;

enum class Case { text, image, audio, video, video_pooled, mixed, vit_b16, vit_b16_batch8 };

// The config of a case: the shared small transformer plus the sections its inputs need.
nlohmann::json case_config(Case c) {
  if (c == Case::vit_b16 || c == Case::vit_b16_batch8) {
    // torchvision's vit_b_16: 224 px, patch 16, D 768, 12 layers of 12 heads, F 3072, GELU,
    // LayerNorm eps 1e-6, learned positions, a cls token that is the output.
    return {{"hidden_dim", 768}, {"num_layers", 12}, {"num_heads", 12}, {"ffn_dim", 3072},
            {"embed_dim", 768},  {"norm_eps", 1e-6},  {"position", "learned"},
            {"pooling", "cls"},  {"image", {{"size", 224}, {"patch", 16}}}};
  }
  nlohmann::json config = {{"hidden_dim", 256}, {"num_layers", 4}, {"num_heads", 4},
                           {"ffn_dim", 1024},   {"embed_dim", 256}};
  const nlohmann::json text = {{"max_tokens", 77}};
  const nlohmann::json image = {{"size", 224}, {"patch", 16}};
  const nlohmann::json audio = {{"n_mels", 128}, {"patch_frames", 4}, {"max_tokens", 512}};
  const nlohmann::json video = {{"tubelet", 2}, {"pool_queries", 0}};
  switch (c) {
    case Case::text: config["text"] = text; break;
    case Case::image: config["image"] = image; break;
    case Case::audio: config["audio"] = audio; break;
    case Case::video: config["video"] = video; break;
    case Case::video_pooled:
      config["video"] = video;
      config["video"]["pool_queries"] = 4;
      break;
    case Case::vit_b16:
    case Case::vit_b16_batch8: break;  // above
    case Case::mixed:
      config["text"] = text;
      config["image"] = image;
      config["audio"] = audio;
      config["video"] = video;
      break;
  }
  return config;
}

// Models are built once per case and shared by its thread counts and Google Benchmark's
// repeated runs (random init of the 50257 x 256 token table alone takes a fraction of a second).
const Encoder& case_model(Case c) {
  static std::map<Case, std::unique_ptr<Encoder>> models;
  auto& model = models[c];
  if (!model) {
    model = std::make_unique<Encoder>(tessera::parse_config(case_config(c), "bench config"));
    model->init_random(1234);
  }
  return *model;
}

std::vector<std::int64_t> text_ids() {  // 64 ids spread over the GPT-2 vocabulary
  std::vector<std::int64_t> ids(64);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * 7919 % 50257);
  return ids;
}

tessera::Tensor3<float> image_input() {  // [3, 224, 224]
  tessera::Tensor3<float> image(3, 224, 224);
  image.setRandom();
  return image;
}

tessera::Matrix<float> audio_input() {  // [128, 1000] -> 250 chunks
  return tessera::Matrix<float>::Random(128, 1000);
}

tessera::Tensor4<float> video_input() {  // [8, 3, 224, 224] -> 4 tubelet steps
  tessera::Tensor4<float> video(8, 3, 224, 224);
  video.setRandom();
  return video;
}

std::vector<Sample> case_batch(Case c) {
  auto make = [](bool text, bool image, bool audio, bool video) {
    Sample s;
    if (text) s.text = text_ids();
    if (image) s.image = image_input();
    if (audio) s.audio = audio_input();
    if (video) s.video = video_input();
    return s;
  };
  switch (c) {
    case Case::text: return {make(true, false, false, false)};
    case Case::image: return {make(false, true, false, false)};
    case Case::audio: return {make(false, false, true, false)};
    case Case::video:
    case Case::video_pooled: return {make(false, false, false, true)};
    case Case::vit_b16: return {make(false, true, false, false)};
    case Case::vit_b16_batch8: return std::vector<Sample>(8, make(false, true, false, false));
    case Case::mixed: break;
  }
  std::vector<Sample> batch;
  batch.push_back(make(true, false, false, false));
  batch.push_back(make(false, true, false, false));
  batch.push_back(make(false, false, true, false));
  batch.push_back(make(false, false, false, true));
  batch.push_back(make(true, true, false, false));
  batch.push_back(make(true, false, true, false));
  batch.push_back(make(false, true, true, false));
  batch.push_back(make(true, true, true, true));
  return batch;
}

// Args: threads.
void BM_encode_batch(benchmark::State& state, Case c) {
  const Encoder& model = case_model(c);
  const std::vector<Sample> batch = case_batch(c);
  const tessera::ScopedThreads threads(static_cast<int>(state.range(0)));

  // The token count of the batch, from one untimed call (it also warms the allocator).
  Index tokens = 0;
  for (const auto& encoding : model.encode_batch(std::span<const Sample>(batch)))
    tokens += encoding.hidden.rows();

  for (auto _ : state) {
    auto encodings = model.encode_batch(std::span<const Sample>(batch));
    benchmark::DoNotOptimize(encodings.front().embedding.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["samples/s"] = benchmark::Counter(
      static_cast<double>(batch.size()), benchmark::Counter::kIsIterationInvariantRate);
}

#define TESSERA_ENCODER_BENCHMARK(name)                \
  BENCHMARK_CAPTURE(BM_encode_batch, name, Case::name) \
      ->ArgNames({"threads"})                          \
      ->Arg(1)                                         \
      ->Arg(2)                                         \
      ->Unit(benchmark::kMillisecond)                  \
      ->UseRealTime()

TESSERA_ENCODER_BENCHMARK(text);
TESSERA_ENCODER_BENCHMARK(image);
TESSERA_ENCODER_BENCHMARK(audio);
TESSERA_ENCODER_BENCHMARK(video);
TESSERA_ENCODER_BENCHMARK(video_pooled);
TESSERA_ENCODER_BENCHMARK(mixed);
// ViT-B/16 takes 0.1-0.5 s a call: a few iterations are enough.
TESSERA_ENCODER_BENCHMARK(vit_b16)->MinTime(1.0);
TESSERA_ENCODER_BENCHMARK(vit_b16_batch8)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
