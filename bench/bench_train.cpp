// bench_train: training throughput, one whole step per iteration.
//
// A small CLIP-like model (D 256, 4 layers, 4 heads, F 1024, E 256, GELU, LayerNorm, learned
// positions, mean pooling; text with V 1024 and images of 64 px, patch 8) and one batch of P
// caption-image pairs: P texts of 32 ids and their P images (64 patches each), packed into
// one batch of 2P samples. One step is tessera::contrastive_step (train/step.hpp):
//
//   encode_batch(batch, trace)         the training forward
//   InfoNCE(texts, images)             and its backward (info_nce_backward)
//   backward(grad, d_embeddings)       every weight's gradient
//   clip_grad_norm(1.0), AdamW.step    the update
//
// Counters: samples/s (2P per step) and pairs/s, per wall-clock second, for P 16 and 64, on
// 1 and 2 threads. bench/compare_torch.py runs the same model and step in PyTorch
// (nn.TransformerEncoderLayer, norm_first, torch.optim.AdamW) and prints the ratio.
//
// BM_checkpointing: the same step with and without activation checkpointing per layer
// (EncoderTrace::Options::checkpoint_layers), on the small model above (P 16) and on a
// ViT-B/16-sized one (D 768, 12 layers, 12 heads, F 3072, E 512; 77-id captions and 224 px
// images, patch 16: 196 patches; P 4, 1092 tokens a step). Counters: samples/s, trace_MB (what
// the trace holds for the transformer after the forward, EncoderTrace::transformer_bytes) and
// peak_RSS_MB (the process's peak resident memory so far: run one case per process, with
// --benchmark_filter, for it to be that case's).
//
//   build/bench/bin/bench_train [--benchmark_filter=pairs:16] [--benchmark_min_time=0.5]
//   build/bench/bin/bench_train --benchmark_filter='BM_checkpointing/model:1/.*/checkpoint:1/'

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <cstdint>
#include <random>
#include <vector>

namespace {

using tessera::Index;

constexpr Index text_tokens = 32;

tessera::Config train_config() {
  const nlohmann::json config = {
      {"hidden_dim", 256}, {"num_layers", 4}, {"num_heads", 4}, {"ffn_dim", 1024},
      {"embed_dim", 256}, {"position", "learned"}, {"pooling", "mean"},
      {"text", {{"vocab_size", 1024}, {"max_tokens", text_tokens}}},
      {"image", {{"size", 64}, {"patch", 8}}}};
  return tessera::parse_config(config, "bench_train config");
}

// ViT-B/16's transformer and sizes (CLIP ViT-B/16's image tower; its text tower is
// narrower), one tower for both modalities as tessera's encoder has it.
tessera::Config vit_b16_config() {
  const nlohmann::json config = {
      {"hidden_dim", 768}, {"num_layers", 12}, {"num_heads", 12}, {"ffn_dim", 3072},
      {"embed_dim", 512}, {"position", "learned"}, {"pooling", "mean"},
      {"text", {{"vocab_size", 49408}, {"max_tokens", 77}}},
      {"image", {{"size", 224}, {"patch", 16}}}};
  return tessera::parse_config(config, "bench_train ViT-B/16 config");
}

// P texts, then their P images: texts of the config's max_tokens ids, images of its size.
std::vector<tessera::Sample<float>> train_batch(Index pairs,
                                                const tessera::Config& config = train_config()) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int64_t> id(0, config.text->vocab_size - 1);
  const Index tokens = config.text->max_tokens, size = config.image->size;
  std::vector<tessera::Sample<float>> batch(static_cast<std::size_t>(2 * pairs));
  for (Index i = 0; i < pairs; ++i) {
    std::vector<std::int64_t> ids(static_cast<std::size_t>(tokens));
    for (auto& x : ids) x = id(rng);
    batch[static_cast<std::size_t>(i)].text = ids;
    tessera::Tensor3<float> image(3, size, size);
    image.setRandom();
    batch[static_cast<std::size_t>(pairs + i)].image = image;
  }
  return batch;
}

// Args: P (pairs), threads.
void BM_train_step(benchmark::State& state) {
  const Index pairs = state.range(0);
  const tessera::ScopedThreads threads(static_cast<int>(state.range(1)));
  const tessera::Config config = train_config();
  tessera::MultiModalEncoder<float> model(config), grad(config);
  model.init_random(1);
  const auto batch = train_batch(pairs);
  tessera::AdamW<float> optimizer({.lr = 1e-4, .weight_decay = 0.1});
  tessera::EncoderTrace<float> trace;
  const tessera::PairGroup pairs_group{0, pairs, pairs, 1.0};
  double loss = 0;
  for (auto _ : state) {
    loss = tessera::contrastive_step<float>(model, grad, optimizer, batch,
                                            std::span(&pairs_group, 1), 1e-4, 1.0, trace)
               .loss;
    benchmark::DoNotOptimize(loss);
  }
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(2 * pairs),
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(pairs),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["loss"] = loss;
}

BENCHMARK(BM_train_step)
    ->ArgNames({"pairs", "threads"})
    ->ArgsProduct({{16, 64}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Args: model (0 the small one above, 1 ViT-B/16-sized), P (pairs), threads, checkpoint (0, 1).
void BM_checkpointing(benchmark::State& state) {
  const tessera::Config config = state.range(0) == 0 ? train_config() : vit_b16_config();
  const Index pairs = state.range(1);
  const tessera::ScopedThreads threads(static_cast<int>(state.range(2)));
  tessera::MultiModalEncoder<float> model(config), grad(config);
  model.init_random(1);
  const auto batch = train_batch(pairs, config);
  tessera::AdamW<float> optimizer({.lr = 1e-4, .weight_decay = 0.1});
  tessera::EncoderTrace<float> trace;
  trace.options.checkpoint_layers = state.range(3) != 0;
  const tessera::PairGroup pairs_group{0, pairs, pairs, 1.0};
  double loss = 0;
  for (auto _ : state) {
    loss = tessera::contrastive_step<float>(model, grad, optimizer, batch,
                                            std::span(&pairs_group, 1), 1e-4, 1.0, trace)
               .loss;
    benchmark::DoNotOptimize(loss);
  }
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(2 * pairs),
                                                   benchmark::Counter::kIsIterationInvariantRate);
  state.counters["trace_MB"] = static_cast<double>(trace.transformer_bytes()) / 1e6;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_RSS_MB"] = static_cast<double>(usage.ru_maxrss) / 1e3;  // ru_maxrss: KB
  state.counters["loss"] = loss;
}

BENCHMARK(BM_checkpointing)
    ->ArgNames({"model", "pairs", "threads", "checkpoint"})
    ->ArgsProduct({{0}, {16}, {1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_checkpointing)
    ->ArgNames({"model", "pairs", "threads", "checkpoint"})
    ->ArgsProduct({{1}, {4}, {1, 2}, {0, 1}})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
