// bench_grad_cache: GradCache's time and memory against the whole-batch step.
//
// bench_train's model (D 256, 4 layers, 4 heads, F 1024, E 256; texts of 32 ids, images of
// 64 px in patches of 8: 64 tokens) and one batch of P caption-image pairs (2P samples, one
// InfoNCE group). One iteration is one whole step:
//
//   micro:0    tessera::contrastive_step on the whole batch (one traced forward, one backward)
//   micro:M    tessera::grad_cache_step with micro-batches of M samples (train/grad_cache.hpp):
//              an untraced forward of the batch, the loss, then per micro-batch a traced
//              forward and a backward
//
// Counters: samples/s (2P per step) and peak_MiB, the growth of the process's resident set
// while the case runs above what it held before (Linux: freed heap trimmed, then the
// high-water mark VmHWM reset through /proc/self/clear_refs and read from /proc/self/status;
// 0 where that is not available), measured after one step outside the timing (which allocates
// AdamW's state) with the trace emptied: the trace, the layers' working buffers, the
// embeddings and the logits, what differs between the cases.
//
//   build/bench/bin/bench_grad_cache [--benchmark_filter=pairs:64] [--benchmark_min_time=2x]

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

using tessera::Index;

constexpr Index text_tokens = 32;

tessera::Config grad_cache_config() {
  const nlohmann::json config = {
      {"hidden_dim", 256}, {"num_layers", 4}, {"num_heads", 4}, {"ffn_dim", 1024},
      {"embed_dim", 256}, {"position", "learned"}, {"pooling", "mean"},
      {"text", {{"vocab_size", 1024}, {"max_tokens", text_tokens}}},
      {"image", {{"size", 64}, {"patch", 8}}}};
  return tessera::parse_config(config, "bench_grad_cache config");
}

// P texts, then their P images.
std::vector<tessera::Sample<float>> pair_samples(Index pairs) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int64_t> id(0, 1023);
  std::vector<tessera::Sample<float>> batch(static_cast<std::size_t>(2 * pairs));
  for (Index i = 0; i < pairs; ++i) {
    std::vector<std::int64_t> ids(text_tokens);
    for (auto& x : ids) x = id(rng);
    batch[static_cast<std::size_t>(i)].text = ids;
    tessera::Tensor3<float> image(3, 64, 64);
    image.setRandom();
    batch[static_cast<std::size_t>(pairs + i)].image = image;
  }
  return batch;
}

// The value in kB of `key` ("VmRSS:", "VmHWM:") in /proc/self/status, or -1.
double status_kib(const std::string& key) {
  std::ifstream status("/proc/self/status");
  std::string word;
  while (status >> word) {
    if (word == key) {
      double kib = -1;
      status >> kib;
      return kib;
    }
  }
  return -1;
}

// Returns freed heap to the system and resets the high-water mark to the current resident set;
// false where Linux's clear_refs is not available.
bool reset_peak_rss() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

// Args: P (pairs), M (micro-batch; 0 the whole batch), threads.
void BM_grad_cache_step(benchmark::State& state) {
  const Index pairs = state.range(0), micro_batch = state.range(1);
  const tessera::ScopedThreads threads(static_cast<int>(state.range(2)));
  const tessera::Config config = grad_cache_config();
  tessera::MultiModalEncoder<float> model(config), grad(config);
  model.init_random(1);
  const auto batch = pair_samples(pairs);
  tessera::AdamW<float> optimizer({.lr = 1e-4, .weight_decay = 0.1});
  tessera::EncoderTrace<float> trace;
  const tessera::PairGroup pairs_group{0, pairs, pairs, 1.0};
  const std::span groups(&pairs_group, 1);
  const auto step = [&] {
    return micro_batch == 0
               ? tessera::contrastive_step<float>(model, grad, optimizer, batch, groups, 1e-4,
                                                  1.0, trace)
               : tessera::grad_cache_step<float>(model, grad, optimizer, batch, groups,
                                                 micro_batch, 1e-4, 1.0, trace);
  };
  step();  // AdamW's state is allocated by the first step: outside the measured peak
  trace = tessera::EncoderTrace<float>{};
  const bool measured = reset_peak_rss();
  const double before = status_kib("VmRSS:");
  double loss = 0;
  for (auto _ : state) {
    loss = step().loss;
    benchmark::DoNotOptimize(loss);
  }
  const double peak = status_kib("VmHWM:");
  state.counters["samples/s"] = benchmark::Counter(static_cast<double>(state.iterations() * 2 * pairs),
                                                   benchmark::Counter::kIsRate);
  state.counters["peak_MiB"] = measured && peak > 0 ? (peak - before) / 1024 : 0;
}

BENCHMARK(BM_grad_cache_step)
    ->ArgNames({"pairs", "micro", "threads"})
    ->ArgsProduct({{64}, {0, 128, 32, 8}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
