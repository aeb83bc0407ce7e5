// bench_quantized: the int8 and bfloat16 products (detail/quantized_matmul.hpp) against the
// float one they replace, on a ViT-B/16 layer's shapes.
//
//   BM_fp32   detail::matmul<false, true, float>: [L, D] x [F, D]^T + bias (OpenBLAS's sgemm
//             when tessera was configured with it, else Eigen's product).
//   BM_int8   detail::int8_matmul, the same product with the weight in int8 (and the tokens
//             quantized on the fly, counted in the time), on each kernel path.
//   BM_bf16   detail::bf16_matmul, the weight in bfloat16 (the tokens rounded on the fly).
//
//   BM_patch  nn::Linear's int8 forward on patch embeddings' shapes (one thread, the path
//             TESSERA_CPU leaves): passes 1, the patches quantized once as every other
//             product's inputs; passes 2, with the residual (nn::QuantizedInputs::with_residual,
//             as nn::PatchEmbed runs it); passes 0, the fp32 weight. CLIP ViT-B/32 [49, 3072]
//             -> 768, ViT-B/16 [196, 768] -> 768, ImageBind's audio [228, 256] -> 768.
//
// flops = 2 L D F for all (a GFLOPS counter: multiply-adds done, whatever their type).
// Shapes: L = 197 (one image) and 1576 (8 images), the FFN's D -> 4D (768 -> 3072) and
// 4D -> D (3072 -> 768), on 1 and 2 threads (tessera::set_num_threads). Paths are
// 0 scalar, 1 avx2, 2 avx512; a path this CPU lacks is skipped, saying so. The scalar path
// runs at L = 197 only (seconds a call at 1576). weight_MB is the weight's memory as held.
//
//   build/bench/bin/bench_quantized [--benchmark_filter=int8] [--benchmark_min_time=0.2]
//   OPENBLAS_CORETYPE=SkylakeX build/bench/bin/bench_quantized --benchmark_filter=fp32
//     (Debian's OpenBLAS 0.3.21 takes its AVX2 "Haswell" kernels on an AMD Zen 5; this asks
//     for its AVX-512 ones, the float product to compare the avx512 paths against)

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/detail/quantized_matmul.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

#include <string>

namespace {

using tessera::Index;
using tessera::detail::KernelPath;
using Matrix = tessera::Matrix<float>;
using Vector = tessera::Vector<float>;

benchmark::Counter gflops(double flops_per_iteration) {
  return benchmark::Counter(flops_per_iteration / 1e9,
                            benchmark::Counter::kIsIterationInvariantRate);
}

// The inputs of one product: x [L, D], a weight [F, D] of a trained layer's spread, bias [F].
struct Layer {
  Matrix x, weight, y;
  Vector bias;
  Layer(Index length, Index in, Index out)
      : x(Matrix::Random(length, in)),
        weight(Matrix::Random(out, in) * 0.02f),
        y(Matrix::Zero(length, out)),
        bias(Vector::Random(out)) {}
  double flops() const {
    return 2.0 * static_cast<double>(x.rows()) * static_cast<double>(x.cols()) *
           static_cast<double>(weight.rows());
  }
};

void BM_fp32(benchmark::State& state) {
  const tessera::ScopedThreads threads(static_cast<int>(state.range(3)));
  Layer layer(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    tessera::detail::matmul<false, true, float>(layer.y, layer.x, layer.weight, false, &layer.bias);
    benchmark::DoNotOptimize(layer.y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = gflops(layer.flops());
  state.counters["weight_MB"] = static_cast<double>(layer.weight.size()) * sizeof(float) / 1e6;
  state.SetLabel(tessera::detail::matmul_uses_blas<float> ? "openblas" : "eigen");
}

// A path this CPU lacks skips the benchmark; returns whether it does.
bool skip_missing(benchmark::State& state, KernelPath path, bool supported) {
  if (supported) return false;
  state.SkipWithError((std::string("this CPU lacks the ") + tessera::detail::kernel_path_name(path) +
                       " path (it has " + tessera::detail::cpu_features().list() + ")")
                          .c_str());
  return true;
}

void BM_int8(benchmark::State& state) {
  const auto path = static_cast<KernelPath>(state.range(4));
  if (skip_missing(state, path, tessera::detail::cpu_supports_int8(path))) return;
  const tessera::ScopedThreads threads(static_cast<int>(state.range(3)));
  Layer layer(state.range(0), state.range(1), state.range(2));
  const auto weight = tessera::detail::Int8Rows::quantize(layer.weight);
  for (auto _ : state) {
    tessera::detail::int8_matmul(layer.y, layer.x, weight, &layer.bias, false, path);
    benchmark::DoNotOptimize(layer.y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = gflops(layer.flops());
  state.counters["weight_MB"] = static_cast<double>(weight.bytes()) / 1e6;
  state.SetLabel(tessera::detail::kernel_path_name(path));
}

void BM_bf16(benchmark::State& state) {
  const auto path = static_cast<KernelPath>(state.range(4));
  if (skip_missing(state, path, tessera::detail::cpu_supports_bf16(path))) return;
  const tessera::ScopedThreads threads(static_cast<int>(state.range(3)));
  Layer layer(state.range(0), state.range(1), state.range(2));
  const auto weight = tessera::detail::BF16Rows::round(layer.weight);
  for (auto _ : state) {
    tessera::detail::bf16_matmul(layer.y, layer.x, weight, &layer.bias, false, path);
    benchmark::DoNotOptimize(layer.y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = gflops(layer.flops());
  state.counters["weight_MB"] = static_cast<double>(weight.bytes()) / 1e6;
  state.SetLabel(tessera::detail::kernel_path_name(path));
}

void BM_patch(benchmark::State& state) {
  const int passes = static_cast<int>(state.range(3));
  const tessera::ScopedThreads threads(1);
  Layer layer(state.range(0), state.range(1), state.range(2));
  tessera::nn::Linear<float> linear(state.range(1), state.range(2), true);
  linear.weight = layer.weight;
  linear.bias = layer.bias;
  if (passes > 0) linear.quantize(tessera::nn::WeightFormat::int8);
  const auto inputs = passes == 2 ? tessera::nn::QuantizedInputs::with_residual
                                  : tessera::nn::QuantizedInputs::narrowed;
  for (auto _ : state) {
    linear.forward(layer.y, layer.x, inputs);
    benchmark::DoNotOptimize(layer.y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = gflops(layer.flops());
  const std::string path = tessera::detail::kernel_path_name(tessera::detail::int8_kernel_path());
  state.SetLabel(passes == 0 ? "f32" : "int8 " + path + (passes == 2 ? " with residual" : " once"));
}

// L, D, F, threads: the FFN's two layers at one and eight images.
void layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"L", "D", "F", "threads"});
  for (const Index length : {197, 1576}) {
    for (const auto& [in, out] : {std::pair<Index, Index>{768, 3072}, {3072, 768}}) {
      for (const int threads : {1, 2}) b->Args({length, in, out, threads});
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The same with the kernel path last (scalar at L = 197, one thread, only).
void quantized_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"L", "D", "F", "threads", "path"});
  for (const Index length : {197, 1576}) {
    for (const auto& [in, out] : {std::pair<Index, Index>{768, 3072}, {3072, 768}}) {
      for (const int threads : {1, 2}) {
        for (const int path : {0, 1, 2}) {
          if (path == 0 && (length > 197 || threads > 1)) continue;
          b->Args({length, in, out, threads, path});
        }
      }
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// L, D, F, passes: patch embeddings.
void patch_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"L", "D", "F", "passes"});
  for (const auto& [length, in] : {std::pair<Index, Index>{49, 3072}, {196, 768}, {228, 256}}) {
    for (const int passes : {0, 1, 2}) b->Args({length, in, 768, passes});
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_fp32)->Apply(layer_shapes);
BENCHMARK(BM_int8)->Apply(quantized_shapes);
BENCHMARK(BM_bf16)->Apply(quantized_shapes);
BENCHMARK(BM_patch)->Apply(patch_shapes);

}  // namespace

BENCHMARK_MAIN();
