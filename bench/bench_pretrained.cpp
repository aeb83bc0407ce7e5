// bench_pretrained: the towers of the published pretrained models (model/tower.hpp) at their
// real sizes, with random weights built in memory (no files), through TowerModel::encode_batch
// (front end to unit embeddings; float). The towers:
//
//   CLIP ViT-B/32 image     D 768, 12 layers, 12 heads, F 3072, patch 32 on 224 px (50
//                           tokens), ln_pre, quick_gelu, E 512
//   CLIP ViT-B/32 text      D 512, 12 layers, 8 heads, F 2048, context 77, causal, V 49408,
//                           quick_gelu, pooled at the largest id, E 512
//   imagebind_huge vision   D 1280, 32 layers, 16 heads, F 5120, Conv3d kernel (2, 14, 14) on a
//                           2-frame clip (an image repeated: 257 tokens), ln_pre, GELU, E 1024
//   imagebind_huge audio    D 768, 12 layers, 12 heads, F 3072, add_bias_kv, Conv2d kernel 16
//                           stride 10 on [1, 128, 204] (229 tokens), stem LayerNorm, GELU, E 1024
//
// and the cases (one call of encode_batch each):
//
//   case                   batch  input                                           tokens
//   clip_b32_image           1    one image [3, 224, 224]                             50
//   clip_b32_image_batch8    8    the same image 8 times                             400
//   clip_b32_text_ctx77     32    32 texts of 77 ids (the full context)             2464
//   clip_b32_text_len20     32    32 texts of 8 + (7 i mod 25) ids: 8 to 32, mean    628
//                                 19.6 (a caption of 6-30 BPE tokens, start and end)
//   imagebind_vision         1    one image [3, 224, 224]                            257
//   imagebind_audio          1    features [128, 3 x 204]: 3 clips, as ImageBind     687
//                                 feeds one audio file
//
// CLIP's image tower also runs quantized (docs/quantization.md "Speed and size"): the same
// random fp32 model, quantized in memory by quantize_model, every linear and patch weight int8
// (clip_b32_image_int8, clip_b32_image_batch8_int8) or bfloat16 (..._bf16). Their label names
// the format and the kernel path that ran ("int8 avx512"; TESSERA_CPU=avx2 asks for the AVX2
// one), the fp32 cases' "f32 sgemm" (OpenBLAS; "f32 eigen" without it).
//
// tessera packs texts without padding: clip_b32_text_len20 runs 628 tokens where CLIP's own
// code (and bench/compare_torch.py's reference) pads every text to 77, i.e. 2464.
//
// Counters: items/s (texts, images or audio files per wall-clock second), tokens/s
// (transformer tokens run), GFLOPS (the multiply-adds of the tokens tessera runs, x2: stem,
// q/k/v/out projections, scores and values (over the keys a token sees), FFN, pooled head);
// `tokens` and `GFLOP` are those of one call. Each case runs with 1 and 2 threads
// (tessera::set_num_threads); bench/compare_torch.py --sections pretrained runs the same
// shapes in PyTorch. The whole binary takes a few minutes on two cores (imagebind_vision is
// about 335 GFLOP a call; its weights take 2.5 GB).
//
//   build/bench/bin/bench_pretrained [--benchmark_filter=clip_b32_image]
//   TESSERA_CPU=avx2 build/bench/bin/bench_pretrained --benchmark_filter='_(int8|bf16)/'
//
// Two more modes, for the size comparison of bench/compare_quantized.py (no benchmarks run):
//
//   bench_pretrained --write-models DIR   saves the CLIP ViT-B/32 image tower (random, seed
//                                         1234) as DIR/clip_b32_image-{f32,int8,bf16}
//                                         (save_towers_model) and prints one JSON line per
//                                         format: the weights' bytes in memory
//   bench_pretrained --load-and-encode MODEL_DIR THREADS
//                                         load_tower_model, then one encode_batch of one
//                                         image; prints a JSON line of resident memory in kB
//                                         (/proc/self/status): start, load_peak (VmHWM after
//                                         loading), loaded (VmRSS after loading and
//                                         malloc_trim), peak (VmHWM after the call), after

#include <tessera/core/modality.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/tower.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/pretrained_save.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

#include "size_modes.hpp"


#include <cmath>
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
using tessera::Modality;
using Model = tessera::TowerModel<float>;
using Sample = tessera::Sample<float>;
using tessera::nn::WeightFormat;

enum class Case {
  clip_b32_image,
  clip_b32_image_batch8,
  clip_b32_text_ctx77,
  clip_b32_text_len20,
  imagebind_vision,
  imagebind_audio
};

// OpenAI CLIP ViT-B/32 (clip/model.py build_model on ViT-B-32.pt): vision width 768, 12 layers
// of 12 heads, patch 32 on 224 px, ln_pre, QuickGELU; text width 512, 12 layers of 8 heads,
// context 77, vocabulary 49408, causal; both project to 512; LayerNorm eps 1e-5.
tessera::TowerConfig clip_b32_image() {
  tessera::TowerConfig t;
  t.modality = Modality::image;
  t.width = 768;
  t.layers = 12;
  t.heads = 12;
  t.ffn_dim = 3072;
  t.embed_dim = 512;
  t.activation = tessera::Activation::quick_gelu;
  t.pre_norm = true;
  t.height = t.width_in = 224;
  t.kernel = t.stride = 32;
  return t;
}

tessera::TowerConfig clip_b32_text() {
  tessera::TowerConfig t;
  t.modality = Modality::text;
  t.width = 512;
  t.layers = 12;
  t.heads = 8;
  t.ffn_dim = 2048;
  t.embed_dim = 512;
  t.activation = tessera::Activation::quick_gelu;
  t.causal = true;
  t.pooling = tessera::TowerPooling::eot_argmax;
  t.cls_token = false;
  t.vocab_size = 49408;
  t.context_length = 77;
  return t;
}

// imagebind_huge (imagebind_model.py imagebind_huge and ImageBindModel's defaults): vision
// trunk width 1280, 32 blocks of 16 heads, Conv3d kernel (2, 14, 14), pre-transformer
// LayerNorm; audio trunk width 768, 12 blocks of 12 heads, add_bias_kv, Conv2d kernel 16
// stride 10 on [1, 128, 204] with a LayerNorm stem; MLP ratio 4, GELU, eps 1e-6; out 1024.
tessera::TowerConfig imagebind_trunk(Index width, Index layers, Index heads) {
  tessera::TowerConfig t;
  t.width = width;
  t.layers = layers;
  t.heads = heads;
  t.ffn_dim = 4 * width;
  t.embed_dim = 1024;
  t.activation = tessera::Activation::gelu;
  t.norm_eps = 1e-6;
  return t;
}

tessera::TowerConfig imagebind_vision() {
  tessera::TowerConfig t = imagebind_trunk(1280, 32, 16);
  t.modality = Modality::image;
  t.height = t.width_in = 224;
  t.kernel = t.stride = 14;
  t.clip_frames = 2;
  t.pre_norm = true;
  return t;
}

tessera::TowerConfig imagebind_audio() {
  tessera::TowerConfig t = imagebind_trunk(768, 12, 12);
  t.modality = Modality::audio;
  t.channels = 1;
  t.height = 128;
  t.width_in = 204;
  t.kernel = 16;
  t.stride = 10;
  t.stem_norm = true;
  t.bias_kv = true;
  return t;
}

tessera::TowerConfig case_tower(Case c) {
  switch (c) {
    case Case::clip_b32_image:
    case Case::clip_b32_image_batch8: return clip_b32_image();
    case Case::clip_b32_text_ctx77:
    case Case::clip_b32_text_len20: return clip_b32_text();
    case Case::imagebind_vision: return imagebind_vision();
    case Case::imagebind_audio: break;
  }
  return imagebind_audio();
}

// Fills values with uniform numbers of mean `mean` and standard deviation `std` (a splitmix64
// stream: the 630 M weights of imagebind_vision take a second, where std::normal_distribution
// would take tens).
template <class Values>
void fill(Values&& values, double std, double mean, std::uint64_t& state) {
  const double half_width = std * std::sqrt(3.0);
  for (Index i = 0; i < values.size(); ++i) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;  // [0, 1)
    values.data()[i] = static_cast<float>(mean + (2 * u - 1) * half_width);
  }
}

// Random weights at scales that keep activations O(1) (tests/reference/README.md "How values
// are made"): linear ~ 1/sqrt(in), biases .05, norm weights 1 +- .1, embeddings .2.
void init_random(tessera::Tower<float>& tower, std::uint64_t seed) {
  std::uint64_t s = seed;
  const auto linear = [&](tessera::nn::Linear<float>& l) {
    fill(l.weight, 1.0 / std::sqrt(static_cast<double>(l.in_features())), 0.0, s);
    fill(l.bias, 0.05, 0.0, s);
  };
  const auto norm = [&](tessera::nn::Norm<float>& n) {
    fill(n.weight, 0.1, 1.0, s);
    fill(n.bias, 0.05, 0.0, s);
  };
  fill(tower.token_embedding, 0.2, 0.0, s);
  linear(tower.patch);
  norm(tower.stem_norm);
  fill(tower.class_embedding, 0.2, 0.0, s);
  fill(tower.positional_embedding, 0.2, 0.0, s);
  norm(tower.ln_pre);
  for (auto& b : tower.blocks) {
    norm(b.norm1);
    linear(b.attn.q_proj);
    linear(b.attn.k_proj);
    linear(b.attn.v_proj);
    linear(b.attn.out_proj);
    fill(b.attn.bias_k, 0.2, 0.0, s);
    fill(b.attn.bias_v, 0.2, 0.0, s);
    norm(b.norm2);
    linear(b.ffn.fc1);
    linear(b.ffn.fc2);
  }
  norm(tower.ln_post);
  linear(tower.proj);
}

// The random model of a case's tower (seed 1234), fp32, or quantized from the same fp32
// weights by quantize_model.
std::unique_ptr<Model> make_model(Case key, WeightFormat format) {
  const tessera::TowerConfig tower = case_tower(key);
  tessera::TowerModelConfig config;
  config.family = "bench";
  config.embed_dim = tower.embed_dim;
  const Modality m = tower.modality;
  config.towers[m] = tower;
  auto model = std::make_unique<Model>(config, "bench_pretrained");
  init_random(model->towers.at(m), 1234);
  if (format != WeightFormat::f32) tessera::quantize_model(*model, {format, {}});
  return model;
}

// Models are built once per tower and format and shared by the cases and thread counts that
// use it.
const Model& case_model(Case c, WeightFormat format) {
  static std::map<std::pair<Case, WeightFormat>, std::unique_ptr<Model>> models;
  const Case key = c == Case::clip_b32_image_batch8 ? Case::clip_b32_image
                   : c == Case::clip_b32_text_len20 ? Case::clip_b32_text_ctx77
                                                     : c;
  auto& model = models[{key, format}];
  if (!model) model = make_model(key, format);
  return *model;
}

// A CLIP text of n ids: the start token 49406, n - 2 ids below it, the end token 49407 (the
// largest id, which eot_argmax pools).
std::vector<std::int64_t> clip_text(Index n, Index seed) {
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
  ids.front() = 49406;
  for (Index i = 1; i + 1 < n; ++i) {
    ids[static_cast<std::size_t>(i)] = (seed * 7919 + i * 104729) % 49406;
  }
  ids.back() = 49407;
  return ids;
}

// Text lengths 8 + (7 i mod 25): 8 to 32, mean 19.6 (a caption of 6 to 30 BPE tokens, plus
// the start and end tokens).
Index short_text_length(Index i) { return 8 + (i * 7) % 25; }

std::vector<Sample> case_batch(Case c) {
  std::vector<Sample> batch;
  switch (c) {
    case Case::clip_b32_image:
    case Case::clip_b32_image_batch8:
    case Case::imagebind_vision: {
      Sample s;
      s.image = tessera::Tensor3<float>(3, 224, 224);
      s.image->setRandom();  // [-1, 1], the range of normalised pixels
      batch.assign(c == Case::clip_b32_image_batch8 ? 8 : 1, s);
      break;
    }
    case Case::clip_b32_text_ctx77:
    case Case::clip_b32_text_len20:
      for (Index i = 0; i < 32; ++i) {
        Sample s;
        s.text = clip_text(c == Case::clip_b32_text_ctx77 ? 77 : short_text_length(i), i);
        batch.push_back(std::move(s));
      }
      break;
    case Case::imagebind_audio: {
      Sample s;
      s.audio = tessera::Matrix<float>::Random(128, 3 * 204);  // 3 clips of 204 frames
      batch.push_back(std::move(s));
      break;
    }
  }
  return batch;
}

// Multiply-adds x 2 of one call, over the tokens tessera runs (each sample's clips).
double call_flops(const tessera::TowerConfig& t, const std::vector<Index>& clip_tokens) {
  const double d = static_cast<double>(t.width), f = static_cast<double>(t.ffn_dim);
  double flops = 0;
  for (const Index n_index : clip_tokens) {
    const double n = static_cast<double>(n_index);
    // keys seen per query, summed over the clip's queries (causal: 1 + 2 + ... + n)
    const double keys = t.causal ? n * (n + 1) / 2 : n * (n + (t.bias_kv ? 1 : 0));
    const double per_layer = n * (4 * d * d + 2 * d * f) + 2 * keys * d;
    flops += 2 * static_cast<double>(t.layers) * per_layer;
    if (!t.is_text()) flops += 2 * (n - 1) * static_cast<double>(t.patch_dim()) * d;
    flops += 2 * d * static_cast<double>(t.embed_dim);
  }
  return flops;
}

// Args: threads.
void BM_pretrained(benchmark::State& state, Case c, WeightFormat format) {
  const Model& model = case_model(c, format);
  const std::vector<Sample> batch = case_batch(c);
  const tessera::ScopedThreads threads(static_cast<int>(state.range(0)));

  // The tokens of each clip, from one untimed call (which also warms the allocator).
  const auto encoded = model.encode_batch(std::span<const Sample>(batch));
  std::vector<Index> clip_tokens;
  for (const auto& e : encoded) {
    for (int clip = 0; clip < e.audio_clips; ++clip) clip_tokens.push_back(e.hidden.rows());
  }
  double tokens = 0;
  for (const Index n : clip_tokens) tokens += static_cast<double>(n);
  const double flops = call_flops(case_tower(c), clip_tokens);

  for (auto _ : state) {
    auto encodings = model.encode_batch(std::span<const Sample>(batch));
    benchmark::DoNotOptimize(encodings.front().embedding.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens"] = tokens;
  state.counters["GFLOP"] = flops / 1e9;
  state.counters["items/s"] = benchmark::Counter(static_cast<double>(batch.size()),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] =
      benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPS"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(tessera::bench::format_label(format));
}

#define TESSERA_PRETRAINED_BENCHMARK_AS(name, c, format) \
  BENCHMARK_CAPTURE(BM_pretrained, name, c, format)      \
      ->ArgNames({"threads"})                            \
      ->Arg(1)                                           \
      ->Arg(2)                                           \
      ->Unit(benchmark::kMillisecond)                    \
      ->UseRealTime()
#define TESSERA_PRETRAINED_BENCHMARK(name) \
  TESSERA_PRETRAINED_BENCHMARK_AS(name, Case::name, WeightFormat::f32)

// A call takes 0.1 s (one ViT-B/32 image) to 5 s (imagebind_vision on one thread).
TESSERA_PRETRAINED_BENCHMARK(clip_b32_image)->MinTime(1.0);
TESSERA_PRETRAINED_BENCHMARK(clip_b32_image_batch8)->Iterations(3);
TESSERA_PRETRAINED_BENCHMARK(clip_b32_text_ctx77)->Iterations(2);
TESSERA_PRETRAINED_BENCHMARK(clip_b32_text_len20)->Iterations(3);
TESSERA_PRETRAINED_BENCHMARK(imagebind_vision)->Iterations(2);
TESSERA_PRETRAINED_BENCHMARK(imagebind_audio)->Iterations(2);
TESSERA_PRETRAINED_BENCHMARK_AS(clip_b32_image_int8, Case::clip_b32_image, WeightFormat::int8)
    ->MinTime(1.0);
TESSERA_PRETRAINED_BENCHMARK_AS(clip_b32_image_batch8_int8, Case::clip_b32_image_batch8,
                                WeightFormat::int8)
    ->Iterations(3);
TESSERA_PRETRAINED_BENCHMARK_AS(clip_b32_image_bf16, Case::clip_b32_image, WeightFormat::bf16)
    ->MinTime(1.0);
TESSERA_PRETRAINED_BENCHMARK_AS(clip_b32_image_batch8_bf16, Case::clip_b32_image_batch8,
                                WeightFormat::bf16)
    ->Iterations(3);

}  // namespace

// The size modes (bench/size_modes.hpp, bench/compare_quantized.py), else the benchmarks.
int main(int argc, char** argv) {
  const auto save = [](const Model& model, const std::filesystem::path& out) {
    tessera::SaveTowerModelOptions replace;
    replace.replace = true;  // a second run writes over the first
    tessera::save_towers_model(model, out, {}, replace);
  };
  const auto encode = [](const Model& model) {
    const std::vector<Sample> batch = case_batch(Case::clip_b32_image);
    return model.encode_batch(std::span<const Sample>(batch));
  };
  return tessera::bench::main_with_size_modes(
      argc, argv,
      [&](const std::filesystem::path& dir) {
        const auto fp32 = make_model(Case::clip_b32_image, WeightFormat::f32);
        return tessera::bench::write_models(dir, "clip_b32_image", *fp32, save);
      },
      [&](const std::filesystem::path& dir, int threads) {
        return tessera::bench::load_and_encode(
            threads, [&] { return tessera::load_tower_model<float>(dir); }, encode);
      });
}
