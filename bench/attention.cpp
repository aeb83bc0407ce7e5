// bench_attention: the two kernels an encoder layer spends its time in.
//
//   BM_attention_reference  nn::attention_reference on already projected q, k, v [L, H*dh],
//                           one segment over all L tokens, H = 12 heads (ViT-B/16 at L = 197).
//                           flops per call = 4 L^2 dh H (q k^T and P v, 2 L^2 dh each per head;
//                           the softmax is not counted).
//   BM_linear_forward       nn::Linear forward, [L, D] x [F, D]^T + bias; flops = 2 L D F.
//
// Both report a GFLOPS counter and sweep the thread count set with tessera::set_num_threads.
// The whole binary runs in well under a minute on two cores: an L = 4096 attention call
// takes about a second on one core, so those shapes run a fixed, small number of iterations
// instead of Google Benchmark's adaptive count.
//
//   build/dev/bin/bench_attention [--benchmark_filter=attention] [--benchmark_min_time=0.05]

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

namespace {

using tessera::Index;
using Matrix = tessera::Matrix<float>;

constexpr Index attention_heads = 12;  // H

// A GFLOPS counter from the flops of one iteration: Google Benchmark multiplies by the
// iteration count and divides by the elapsed time.
benchmark::Counter gflops(double flops_per_iteration) {
  return benchmark::Counter(flops_per_iteration / 1e9,
                            benchmark::Counter::kIsIterationInvariantRate);
}

using Kernel = void (*)(tessera::MatrixRef<float>, const tessera::ConstMatrixRef<float>&,
                        const tessera::ConstMatrixRef<float>&, const tessera::ConstMatrixRef<float>&,
                        Index, const tessera::nn::AttentionSegments&);

// Args: L (tokens), dh (head width), threads.
void run_attention(benchmark::State& state, Kernel kernel) {
  const Index length = state.range(0);  // L
  const Index head_dim = state.range(1);  // dh
  const tessera::ScopedThreads threads(static_cast<int>(state.range(2)));
  const Index width = attention_heads * head_dim;  // H*dh

  // Uniform [-1, 1] entries keep the scores q k^T / sqrt(dh) of order 1, as after a norm.
  const Matrix q = Matrix::Random(length, width);  // [L, H*dh]
  const Matrix k = Matrix::Random(length, width);  // [L, H*dh]
  const Matrix v = Matrix::Random(length, width);  // [L, H*dh]
  Matrix ctx(length, width);                       // [L, H*dh]
  const auto segments = tessera::nn::AttentionSegments::full(length);

  for (auto _ : state) {
    kernel(ctx, q, k, v, attention_heads, segments);
    benchmark::DoNotOptimize(ctx.data());
    benchmark::ClobberMemory();
  }
  const double l = static_cast<double>(length);
  state.counters["GFLOPS"] =
      gflops(4.0 * l * l * static_cast<double>(head_dim) * static_cast<double>(attention_heads));
}

void BM_attention_reference(benchmark::State& state) {
  run_attention(state, &tessera::nn::attention_reference<float>);
}
void BM_attention_fused(benchmark::State& state) {
  run_attention(state, &tessera::nn::attention_fused<float>);
}

// Sequence lengths: a ViT-B/16 image (196 patches + cls), then long mixed sequences.
void attention_shapes(benchmark::internal::Benchmark* b, std::initializer_list<Index> lengths) {
  for (Index length : lengths)
    for (Index head_dim : {64, 128})
      for (int threads : {1, 2}) b->Args({length, head_dim, threads});
}

BENCHMARK(BM_attention_reference)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {197, 1024}); })
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// L = 4096 materializes a 64 MB score block per head and task and takes 0.3-2 s a call:
// a fixed two iterations (independent of --benchmark_min_time) keep the run short.
BENCHMARK(BM_attention_reference)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK(BM_attention_fused)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {197, 1024}); })
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Args: L (rows), D (in features), F (out features), threads.
void BM_linear_forward(benchmark::State& state) {
  const Index rows = state.range(0);    // L
  const Index in = state.range(1);      // D
  const Index out = state.range(2);     // F
  const tessera::ScopedThreads threads(static_cast<int>(state.range(3)));

  tessera::nn::Linear<float> linear(in, out, true);
  linear.weight = Matrix::Random(out, in) * 0.02f;  // [F, D]
  linear.bias.setRandom();                          // [F]
  const Matrix x = Matrix::Random(rows, in);        // [L, D]
  Matrix y(rows, out);                              // [L, F]

  for (auto _ : state) {
    linear.forward(y, x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = gflops(2.0 * static_cast<double>(rows) * static_cast<double>(in) *
                                    static_cast<double>(out));
}

// The attention projections (D -> D) and the FFN's first layer (D -> 4D) of a D = 768 model.
BENCHMARK(BM_linear_forward)
    ->ArgNames({"L", "D", "F", "threads"})
    ->ArgsProduct({{1024}, {768}, {768, 3072}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
