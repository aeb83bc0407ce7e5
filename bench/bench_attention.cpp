// bench_attention: the two kernels an encoder layer spends its time in.
//
//   BM_attention_reference  nn::attention_reference on already projected q, k, v [L, H*dh],
//                           one segment over all L tokens, H = 12 heads (ViT-B/16 at L = 197).
//   BM_attention_fused      nn::attention_fused, the kernel the layer uses, on the same inputs.
//                           flops per call = 4 L^2 dh H (q k^T and P v, 2 L^2 dh each per head;
//                           the softmax is not counted).
//   BM_attention_fused_bf16 the fused kernel with k and v stored in bfloat16 (KVPrecision), the
//                           same inputs rounded; also reports its error against float storage,
//                           computed once outside the timing: max_abs_err, the largest error of
//                           an output, and rel_err, |error| / |output| (Frobenius norms).
//   BM_attention_fused_bf16_dot the same with bfloat16 dot products (KVPrecision::
//                           bfloat16_products: q and p rounded too, VDPBF16PS or its AVX2 /
//                           scalar twin, on the path detail::bf16_kernel_path() picks, shown
//                           as the label; TESSERA_CPU=avx2|scalar picks a lower one); the
//                           same error counters, against float storage.
//   BM_linear_forward       nn::Linear forward, [L, D] x [F, D]^T + bias; flops = 2 L D F.
//
// All report a GFLOPS counter and sweep the thread count set with tessera::set_num_threads.
// The attention benchmarks also report the kernel's memory, measured in a child process (this
// program run again with --peak-memory) that makes the same inputs and calls the kernel once:
// peak_MB is that process's peak resident set (inputs and output included) and work_MB what
// the kernel call added to it (the peak less that of the same process without the call).
// Long sequences take seconds a call, so they run a fixed, small number of iterations
// instead of Google Benchmark's adaptive count; L = 16384 and the fused kernel's L = 32768
// (up to a minute a call) run only with --long.
//
//   build/bench/bin/bench_attention [--long] [--benchmark_filter=fused] [--benchmark_min_time=0.05]
//   python3 bench/compare_torch.py     # the same shapes in PyTorch, side by side

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

enum class Kernel { none, reference, fused, fused_bf16, fused_bf16_dot };  // none: unknown

Kernel kernel_named(const std::string& name) {
  if (name == "reference") return Kernel::reference;
  if (name == "fused") return Kernel::fused;
  if (name == "fused_bf16") return Kernel::fused_bf16;
  if (name == "fused_bf16_dot") return Kernel::fused_bf16_dot;
  return Kernel::none;
}

// Whether `kernel` reads k and v in bfloat16.
bool stores_bfloat16(Kernel kernel) {
  return kernel == Kernel::fused_bf16 || kernel == Kernel::fused_bf16_dot;
}

// The inputs of one attention call: q, k, v and ctx [L, H*dh]. Uniform [-1, 1] entries keep
// the scores q k^T / sqrt(dh) of order 1, as after a norm. For the bfloat16 kernel, k and v
// are also held rounded to bfloat16 (k16, v16); `bfloat16_only` makes those alone, without
// the float k and v (for the memory measurement), from the same random numbers.
struct AttentionInputs {
  using Half = tessera::Matrix<tessera::BFloat16>;
  Matrix q, k, v, ctx;  // [L, H*dh]
  Half k16, v16;        // [L, H*dh] for the bfloat16 kernels
  AttentionInputs(Index length, Index head_dim, Kernel kernel, bool bfloat16_only = false)
      : q(Matrix::Random(length, attention_heads * head_dim)),
        ctx(Matrix::Zero(length, attention_heads * head_dim)) {
    const Index width = attention_heads * head_dim;
    if (stores_bfloat16(kernel) && bfloat16_only) {
      k16 = Matrix::Random(length, width).cast<tessera::BFloat16>();
      v16 = Matrix::Random(length, width).cast<tessera::BFloat16>();
      return;
    }
    k = Matrix::Random(length, width);
    v = Matrix::Random(length, width);
    if (stores_bfloat16(kernel)) {
      k16 = k.cast<tessera::BFloat16>();
      v16 = v.cast<tessera::BFloat16>();
    }
  }
  void run(Kernel kernel, Index length) { run(kernel, length, ctx); }
  void run(Kernel kernel, Index length, Matrix& out) const {
    namespace nn = tessera::nn;
    const auto segments = nn::AttentionSegments::full(length);
    switch (kernel) {
      case Kernel::reference: nn::attention_reference<float>(out, q, k, v, attention_heads, segments); break;
      case Kernel::fused: nn::attention_fused<float>(out, q, k, v, attention_heads, segments); break;
      case Kernel::fused_bf16:
        nn::attention_fused<float, tessera::BFloat16>(out, q, k16, v16, attention_heads, segments);
        break;
      case Kernel::fused_bf16_dot:
        nn::attention_fused<float, tessera::BFloat16>(out, q, k16, v16, attention_heads, segments,
                                                      nullptr, tessera::detail::bf16_kernel_path());
        break;
      case Kernel::none: break;
    }
  }
};

// The peak resident set of this process so far, in kB (VmHWM of /proc/self/status).
long peak_resident_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// The child process of peak_megabytes: --peak-memory KERNEL L dh threads CALL. Makes the
// inputs of KERNEL and, when CALL is 1, calls it once (0: the baseline). Prints its peak
// resident set in kB. (The parent cannot read it from wait4's rusage: a child started by
// posix_spawn reports the parent's peak, which it inherits until exec.)
int peak_memory_child(char** argv) {
  const Kernel kernel = kernel_named(argv[2]);
  const Index length = std::atol(argv[3]);
  const tessera::ScopedThreads threads(std::atoi(argv[5]));
  AttentionInputs inputs(length, std::atol(argv[4]), kernel, true);
  if (std::atoi(argv[6]) == 1) inputs.run(kernel, length);
  benchmark::DoNotOptimize(inputs.ctx.data());
  std::printf("%ld\n", peak_resident_kb());
  return 0;
}

// The peak resident set, in MB, of this program run as a peak_memory_child; 0 if it failed.
double peak_megabytes(const char* kernel, Index length, Index head_dim, int threads, bool call) {
  std::ostringstream command;
  command << std::filesystem::read_symlink("/proc/self/exe") << " --peak-memory " << kernel << ' '
          << length << ' ' << head_dim << ' ' << threads << ' ' << (call ? 1 : 0);
  FILE* child = popen(command.str().c_str(), "r");
  if (child == nullptr) return 0;
  long kb = 0;
  if (std::fscanf(child, "%ld", &kb) != 1) kb = 0;
  return pclose(child) == 0 ? static_cast<double>(kb) / 1024.0 : 0.0;
}

// Args: L (tokens), dh (head width), threads.
void run_attention(benchmark::State& state, const char* kernel_name) {
  const Index length = state.range(0);    // L
  const Index head_dim = state.range(1);  // dh
  const int thread_count = static_cast<int>(state.range(2));
  const Kernel kernel = kernel_named(kernel_name);
  AttentionInputs inputs(length, head_dim, kernel);
  {
    const tessera::ScopedThreads threads(thread_count);
    for (auto _ : state) {
      inputs.run(kernel, length);
      benchmark::DoNotOptimize(inputs.ctx.data());
      benchmark::ClobberMemory();
    }
  }
  const double l = static_cast<double>(length);
  state.counters["GFLOPS"] =
      gflops(4.0 * l * l * static_cast<double>(head_dim) * static_cast<double>(attention_heads));
  const double peak = peak_megabytes(kernel_name, length, head_dim, thread_count, true);
  const double baseline = peak_megabytes(kernel_name, length, head_dim, thread_count, false);
  state.counters["peak_MB"] = peak;
  state.counters["work_MB"] = peak - baseline;
  if (kernel == Kernel::fused_bf16_dot) {
    state.SetLabel(tessera::detail::kernel_path_name(tessera::detail::bf16_kernel_path()));
  }
  if (stores_bfloat16(kernel)) {  // the error of bfloat16 storage (and products), against float
    Matrix exact(inputs.ctx.rows(), inputs.ctx.cols());
    inputs.run(Kernel::fused, length, exact);
    const Matrix error = inputs.ctx - exact;
    state.counters["max_abs_err"] = error.cwiseAbs().maxCoeff();
    state.counters["rel_err"] = error.norm() / exact.norm();
  }
}

void BM_attention_reference(benchmark::State& state) { run_attention(state, "reference"); }
void BM_attention_fused(benchmark::State& state) { run_attention(state, "fused"); }
void BM_attention_fused_bf16(benchmark::State& state) { run_attention(state, "fused_bf16"); }
void BM_attention_fused_bf16_dot(benchmark::State& state) { run_attention(state, "fused_bf16_dot"); }

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
BENCHMARK(BM_attention_fused)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {197, 1024}); })
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused_bf16)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {197, 1024}); })
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused_bf16_dot)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {197, 1024}); })
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// L = 4096 takes 0.3-2 s a call (the reference kernel holds a 64 MB score block per task):
// a fixed two iterations, independent of --benchmark_min_time, keep the run short.
BENCHMARK(BM_attention_reference)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused_bf16)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_fused_bf16_dot)
    ->ArgNames({"L", "dh", "threads"})
    ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {4096}); })
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// With --long: L = 16384 for both kernels (the reference holds a 1 GB score block per task)
// and L = 32768, dh 64, for the fused ones (float and bfloat16 k, v, widened or dot products);
// one iteration each, 5-60 s a call.
void register_long_sequences() {
  for (auto* b : {benchmark::RegisterBenchmark("BM_attention_reference", BM_attention_reference),
                  benchmark::RegisterBenchmark("BM_attention_fused", BM_attention_fused)}) {
    b->ArgNames({"L", "dh", "threads"})
        ->Apply([](benchmark::internal::Benchmark* b) { attention_shapes(b, {16384}); })
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (auto* b : {benchmark::RegisterBenchmark("BM_attention_fused", BM_attention_fused),
                  benchmark::RegisterBenchmark("BM_attention_fused_bf16", BM_attention_fused_bf16),
                  benchmark::RegisterBenchmark("BM_attention_fused_bf16_dot",
                                               BM_attention_fused_bf16_dot)}) {
    b->ArgNames({"L", "dh", "threads"})
        ->Args({32768, 64, 1})
        ->Args({32768, 64, 2})
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

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
    ->ArgsProduct({{1576}, {768}, {768, 3072}, {1, 2}})
    ->Args({1576, 3072, 768, 1})
    ->Args({1576, 3072, 768, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::strcmp(argv[1], "--peak-memory") == 0) return peak_memory_child(argv);
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--long") == 0) {
      register_long_sequences();
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
