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
// The ViT-B/16 cases also run quantized (docs/quantization.md "Speed and size"): the same
// random fp32 model, quantized in memory by quantize_model, every linear and patch weight int8
// (vit_b16_int8, vit_b16_batch8_int8) or bfloat16 (..._bf16). Their label names the format and
// the kernel path that ran ("int8 avx512"; TESSERA_CPU=avx2 asks for the AVX2 one), the fp32
// cases' "f32 sgemm" (OpenBLAS; "f32 eigen" without it).
//
// Counters: tokens/s (transformer tokens, after pooling) and samples/s, per wall-clock
// second; `tokens` is the tokens of one call. Each case runs with 1 and 2 threads
// (tessera::set_num_threads). The whole binary runs in well under a minute on two cores.
//
//   build/bench/bin/bench_encoder [--benchmark_filter=mixed] [--benchmark_min_time=0.05]
//   TESSERA_CPU=avx2 build/bench/bin/bench_encoder --benchmark_filter='_(int8|bf16)/'
//
// Two more modes, for the size comparison of bench/compare_quantized.py (no benchmarks run):
//
//   bench_encoder --write-models DIR    saves the ViT-B/16-sized model (random, seed 1234) as
//                                       DIR/vit_b16-{f32,int8,bf16} (save_model) and prints
//                                       one JSON line per format: the weights' bytes in memory
//   bench_encoder --load-and-encode MODEL_DIR THREADS
//                                       load_model, then one encode_batch of one image; prints
//                                       a JSON line of resident memory in kB (/proc/self/status):
//                                       start (the program alone), load_peak (VmHWM after
//                                       loading), loaded (VmRSS after loading and malloc_trim),
//                                       peak (VmHWM after the call), after (VmRSS after it and
//                                       malloc_trim)

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

#include "size_modes.hpp"
#include <nlohmann/json.hpp>


#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

using tessera::Index;
using Encoder = tessera::MultiModalEncoder<float>;
using Sample = tessera::Sample<float>;
using tessera::nn::WeightFormat;

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

// The random model of a case (seed 1234), in `format`: fp32, or quantized from the same fp32
// weights by quantize_model.
std::unique_ptr<Encoder> make_model(Case c, WeightFormat format) {
  auto model = std::make_unique<Encoder>(tessera::parse_config(case_config(c), "bench config"));
  model->init_random(1234);
  if (format != WeightFormat::f32) tessera::quantize_model(*model, {format, {}});
  return model;
}

// Models are built once per case and format and shared by its thread counts and Google
// Benchmark's repeated runs (random init of the 50257 x 256 token table alone takes a fraction
// of a second).
const Encoder& case_model(Case c, WeightFormat format) {
  static std::map<std::pair<Case, WeightFormat>, std::unique_ptr<Encoder>> models;
  auto& model = models[{c, format}];
  if (!model) model = make_model(c, format);
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
void BM_encode_batch(benchmark::State& state, Case c, WeightFormat format) {
  const Encoder& model = case_model(c, format);
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
  state.SetLabel(tessera::bench::format_label(format));
}

#define TESSERA_ENCODER_BENCHMARK_AS(name, c, format)    \
  BENCHMARK_CAPTURE(BM_encode_batch, name, c, format)    \
      ->ArgNames({"threads"})                            \
      ->Arg(1)                                           \
      ->Arg(2)                                           \
      ->Unit(benchmark::kMillisecond)                    \
      ->UseRealTime()
#define TESSERA_ENCODER_BENCHMARK(name) \
  TESSERA_ENCODER_BENCHMARK_AS(name, Case::name, WeightFormat::f32)

TESSERA_ENCODER_BENCHMARK(text);
TESSERA_ENCODER_BENCHMARK(image);
TESSERA_ENCODER_BENCHMARK(audio);
TESSERA_ENCODER_BENCHMARK(video);
TESSERA_ENCODER_BENCHMARK(video_pooled);
TESSERA_ENCODER_BENCHMARK(mixed);
// ViT-B/16 takes 0.1-0.5 s a call: a few iterations are enough.
TESSERA_ENCODER_BENCHMARK(vit_b16)->MinTime(1.0);
TESSERA_ENCODER_BENCHMARK(vit_b16_batch8)->Iterations(3);
TESSERA_ENCODER_BENCHMARK_AS(vit_b16_int8, Case::vit_b16, WeightFormat::int8)->MinTime(1.0);
TESSERA_ENCODER_BENCHMARK_AS(vit_b16_batch8_int8, Case::vit_b16_batch8, WeightFormat::int8)
    ->Iterations(3);
TESSERA_ENCODER_BENCHMARK_AS(vit_b16_bf16, Case::vit_b16, WeightFormat::bf16)->MinTime(1.0);
TESSERA_ENCODER_BENCHMARK_AS(vit_b16_batch8_bf16, Case::vit_b16_batch8, WeightFormat::bf16)
    ->Iterations(3);

}  // namespace

// The size modes (bench/size_modes.hpp, bench/compare_quantized.py), else the benchmarks.
int main(int argc, char** argv) {
  const auto save = [](const Encoder& model, const std::filesystem::path& out) {
    tessera::save_model(model, out);
  };
  const auto encode = [](const Encoder& model) {
    const std::vector<Sample> batch = case_batch(Case::vit_b16);
    return model.encode_batch(std::span<const Sample>(batch));
  };
  return tessera::bench::main_with_size_modes(
      argc, argv,
      [&](const std::filesystem::path& dir) {
        const auto fp32 = make_model(Case::vit_b16, WeightFormat::f32);
        return tessera::bench::write_models(dir, "vit_b16", *fp32, save);
      },
      [&](const std::filesystem::path& dir, int threads) {
        return tessera::bench::load_and_encode(threads, [&] { return tessera::load_model<float>(dir); },
                                               encode);
      });
}
