// bench_distributed: training throughput of one data-parallel step (train/distributed_step.hpp)
// against one process, for bench/compare_distributed.py. Not a Google Benchmark: every rank
// must run the same number of steps (each step is a collective), so the steps are counted,
// not timed into a count.
//
// bench_train's small CLIP-like model (D 256, 4 layers, 4 heads, F 1024, E 256; texts of 32
// ids and images of 64 px, patch 8) and one global batch of P caption-image pairs. One
// process runs contrastive_step on the whole batch (what tessera-train runs); under mpirun
// each rank takes its share of the pairs (rank_share) and runs distributed_contrastive_step
// (its whole share at once). Prints one JSON line on rank 0:
//   {"ranks": R, "threads": T, "pairs": P, "steps": S, "step_ms": ..., "samples_per_s": ...}
//
//   build/bench/bin/bench_distributed [--pairs 64] [--steps 10] [--warmup 2]
//   mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1 build/bench/bin/bench_distributed

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/distributed_step.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/step.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <vector>

namespace {

using tessera::Index;

tessera::Config bench_config() {
  const nlohmann::json config = {
      {"hidden_dim", 256}, {"num_layers", 4}, {"num_heads", 4}, {"ffn_dim", 1024},
      {"embed_dim", 256}, {"position", "learned"}, {"pooling", "mean"},
      {"text", {{"vocab_size", 1024}, {"max_tokens", 32}}},
      {"image", {{"size", 64}, {"patch", 8}}}};
  return tessera::parse_config(config, "bench_distributed config");
}

// Pair i's text (i < P) or image (i >= P): the same on every rank, whatever its share.
tessera::Sample<float> sample_of(Index i, Index pairs, const tessera::Config& config) {
  std::mt19937 rng(static_cast<unsigned>(7 + i));
  tessera::Sample<float> sample;
  if (i < pairs) {
    std::uniform_int_distribution<std::int64_t> id(0, config.text->vocab_size - 1);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(config.text->max_tokens));
    for (auto& x : ids) x = id(rng);
    sample.text = ids;
  } else {
    std::uniform_real_distribution<float> value(-1, 1);
    tessera::Tensor3<float> image(3, config.image->size, config.image->size);
    for (Index k = 0; k < image.size(); ++k) image.data()[k] = value(rng);
    sample.image = image;
  }
  return sample;
}

int run(int argc, char** argv) {
  Index pairs = 64, steps = 10, warmup = 2;
  for (int a = 1; a + 1 < argc; a += 2) {
    const std::string name = argv[a];
    const Index value = std::atoll(argv[a + 1]);
    if (name == "--pairs") pairs = value;
    else if (name == "--steps") steps = value;
    else if (name == "--warmup") warmup = value;
    else tessera::fail("bench_distributed: unknown option ", name);
  }
  tessera::check(pairs >= 1 && steps >= 1 && warmup >= 0, "bench_distributed: bad sizes");
  const tessera::Communicator world = tessera::Communicator::world();
  const tessera::Config config = bench_config();
  tessera::MultiModalEncoder<float> model(config), grad(config);
  model.init_random(1);
  tessera::AdamW<float> optimizer({.lr = 1e-4, .weight_decay = 0.1});
  tessera::EncoderTrace<float> trace;
  const tessera::PairGroup group{0, pairs, pairs, 1.0};

  // this rank's pairs: their texts, then their images, at their rows of the global batch
  const tessera::RankShare share = world.share_of(pairs);
  std::vector<tessera::Sample<float>> samples;
  std::vector<Index> rows;
  for (const Index offset : {Index(0), pairs}) {
    for (Index i = share.first; i < share.first + share.count; ++i) {
      samples.push_back(sample_of(offset + i, pairs, config));
      rows.push_back(offset + i);
    }
  }
  const auto step = [&] {
    if (world.size() == 1) {
      return tessera::contrastive_step<float>(model, grad, optimizer, samples,
                                              std::span(&group, 1), 1e-4, 1.0, trace);
    }
    return tessera::distributed_contrastive_step<float>(model, grad, optimizer, samples, rows,
                                                        std::span(&group, 1), world, 0, 1e-4,
                                                        1.0, trace);
  };
  for (Index s = 0; s < warmup; ++s) step();
  world.barrier();
  const auto start = std::chrono::steady_clock::now();
  double loss = 0;
  for (Index s = 0; s < steps; ++s) loss = step().loss;
  world.barrier();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (world.rank() == 0) {
    const nlohmann::json result = {{"ranks", world.size()},
                                   {"threads", tessera::num_threads()},
                                   {"pairs", pairs},
                                   {"steps", steps},
                                   {"step_ms", 1000 * seconds / static_cast<double>(steps)},
                                   {"samples_per_s", static_cast<double>(2 * pairs * steps) / seconds},
                                   {"loss", loss}};
    std::printf("%s\n", result.dump().c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_distributed: error: %s\n", e.what());
    return 1;
  }
}
