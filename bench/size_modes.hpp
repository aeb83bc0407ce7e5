#pragma once
// What bench_encoder and bench_pretrained share for their quantized cases: the label naming a
// case's format and kernel path, and the size modes (bench/compare_quantized.py runs
// them): `--write-models DIR` saves one model in fp32, int8 and bf16 and prints the weights'
// bytes as held in memory; `--load-and-encode MODEL_DIR THREADS` loads one model directory,
// encodes one batch and prints the process's resident memory at each stage. Otherwise the
// program runs its Google Benchmarks.

#include <tessera/core/parallel.hpp>
#include <tessera/detail/cpu.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/nn/linear.hpp>

#include <benchmark/benchmark.h>

#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace tessera::bench {

// "f32 sgemm" (OpenBLAS) or "f32 eigen", or the format and the kernel path its products take
// ("int8 avx512").
inline std::string format_label(nn::WeightFormat format) {
  switch (format) {
    case nn::WeightFormat::int8: return std::string("int8 ") + detail::kernel_path_name(detail::int8_kernel_path());
    case nn::WeightFormat::bf16: return std::string("bf16 ") + detail::kernel_path_name(detail::bf16_kernel_path());
    case nn::WeightFormat::f32: break;
  }
#ifdef TESSERA_BLAS_PRODUCTS
  return "f32 sgemm";
#else
  return "f32 eigen";
#endif
}

// A field of /proc/self/status ("VmRSS:", "VmHWM:"), in kB; -1 when absent.
inline long status_kb(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field));
  }
  return -1;
}

// --write-models DIR: `fp32` and its int8 and bf16 copies (quantize_model) saved by
// save(model, out) as DIR/<name>-<format>, one JSON line each with the weights' bytes as held
// in memory (quantize_model's summary; fp32's is its bytes_before).
template <class Model, class Save>
int write_models(const std::filesystem::path& dir, const char* name, const Model& fp32, Save save) {
  const auto write = [&](const Model& model, nn::WeightFormat format, std::uint64_t bytes) {
    const std::filesystem::path out = dir / (std::string(name) + "-" + nn::to_string(format));
    save(model, out);
    std::printf("{\"model\": \"%s\", \"format\": \"%s\", \"dir\": \"%s\", \"weight_bytes\": %llu}\n", name,
                nn::to_string(format), out.string().c_str(), static_cast<unsigned long long>(bytes));
  };
  std::uint64_t fp32_bytes = 0;
  for (const nn::WeightFormat format : {nn::WeightFormat::int8, nn::WeightFormat::bf16}) {
    Model model = fp32;  // the same fp32 weights, quantized
    const QuantizeSummary summary = quantize_model(model, {format, {}});
    fp32_bytes = summary.bytes_before;
    write(model, format, summary.bytes_after);
  }
  write(fp32, nn::WeightFormat::f32, fp32_bytes);
  return 0;
}

// --load-and-encode: resident memory before, at the peak of load() and after it (trimmed),
// at the peak of encode(model) and after it (trimmed), as one JSON line.
template <class Load, class Encode>
int load_and_encode(int threads, Load load, Encode encode) {
  const long start = status_kb("VmRSS:");
  const ScopedThreads scoped(threads);
  const auto model = load();
  const long load_peak = status_kb("VmHWM:");
  malloc_trim(0);
  const long loaded = status_kb("VmRSS:");
  const auto encodings = encode(model);
  benchmark::DoNotOptimize(encodings.data());
  const long peak = status_kb("VmHWM:");
  malloc_trim(0);
  std::printf("{\"start_kB\": %ld, \"load_peak_kB\": %ld, \"loaded_kB\": %ld, \"peak_kB\": %ld, "
              "\"after_kB\": %ld}\n",
              start, load_peak, loaded, peak, status_kb("VmRSS:"));
  return 0;
}

// main: the size modes when asked for, else the benchmarks.
template <class WriteModels, class LoadAndEncode>
int main_with_size_modes(int argc, char** argv, WriteModels write_models_to, LoadAndEncode load_and_encode_dir) {
  if (argc == 3 && std::strcmp(argv[1], "--write-models") == 0) return write_models_to(std::filesystem::path(argv[2]));
  if (argc == 4 && std::strcmp(argv[1], "--load-and-encode") == 0) {
    return load_and_encode_dir(std::filesystem::path(argv[2]), std::atoi(argv[3]));
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace tessera::bench
