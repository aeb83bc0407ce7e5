#pragma once
// Which vector instructions the quantized kernels may use, chosen at run time.
//
// The int8 and bfloat16 kernels (detail/quantized_matmul.hpp) are compiled for every path
// whatever the build's -march: each vector kernel is a function with its own
// __attribute__((target(...))), and the path is chosen when the program runs, from what the
// CPU reports (__builtin_cpu_supports, which also checks that the operating system saves the
// AVX-512 registers). So one binary built for the x86-64 baseline still runs AVX-512 VNNI
// where the CPU has it. Other architectures have the scalar path only.
//
//   path     int8 needs                          bfloat16 needs
//   scalar   nothing                             nothing
//   avx2     AVX2, FMA                           AVX2, FMA
//   avx512   AVX-512 F, BW, VL and VNNI          AVX-512 F, BW, VL and BF16
//
// The environment variable TESSERA_CPU=scalar|avx2|avx512 asks for a lower path than the best
// one (to compare them, or to reproduce another machine's numbers: every path gives the same
// bits, see quantized_matmul.hpp). It is read once, at the first product.

#include <tessera/core/error.hpp>

#include <array>
#include <cstdlib>
#include <string>
#include <string_view>

namespace tessera::detail {

enum class KernelPath { scalar, avx2, avx512 };  // in increasing order of width

inline constexpr std::array<KernelPath, 3> kernel_paths = {KernelPath::scalar, KernelPath::avx2,
                                                           KernelPath::avx512};

// "scalar", "avx2" or "avx512": the names TESSERA_CPU takes.
inline const char* kernel_path_name(KernelPath path) {
  switch (path) {
    case KernelPath::scalar: return "scalar";
    case KernelPath::avx2: return "avx2";
    case KernelPath::avx512: return "avx512";
  }
  return "unknown";
}

// The instruction-set extensions the kernels look for, as the CPU reports them.
struct CpuFeatures {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false;

  // "avx2 fma avx512f ..." (those present), or "none of avx2, fma, avx512f, ..."
  std::string list() const {
    std::string out;
    const auto add = [&](bool present, const char* name) {
      if (!present) return;
      if (!out.empty()) out += ' ';
      out += name;
    };
    add(avx2, "avx2");
    add(fma, "fma");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512vnni, "avx512vnni");
    add(avx512bf16, "avx512bf16");
    return out.empty() ? "none of avx2, fma, avx512f/bw/vl/vnni/bf16" : out;
  }
};

// This CPU's features (read once).
inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
    f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
    return f;
  }();
  return features;
}

// Whether the CPU with `f` can run that int8 (bfloat16) path.
inline bool supports_int8(const CpuFeatures& f, KernelPath path) {
  switch (path) {
    case KernelPath::scalar: return true;
    case KernelPath::avx2: return f.avx2 && f.fma;
    case KernelPath::avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
  }
  return false;
}
inline bool supports_bf16(const CpuFeatures& f, KernelPath path) {
  switch (path) {
    case KernelPath::scalar: return true;
    case KernelPath::avx2: return f.avx2 && f.fma;
    case KernelPath::avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16;
  }
  return false;
}

// Whether this CPU can run that int8 (bfloat16) path.
inline bool cpu_supports_int8(KernelPath path) { return supports_int8(cpu_features(), path); }
inline bool cpu_supports_bf16(KernelPath path) { return supports_bf16(cpu_features(), path); }

// The path a product of `kind` ("int8" or "bf16") takes, for a CPU whose best path for it is
// `best`, given TESSERA_CPU's value `requested` (nullptr or empty: not set). Throws
// tessera::Error naming TESSERA_CPU, the value and what the CPU has when the name is unknown
// or the path is above `best`. `cpu` is what the message says the CPU has.
inline KernelPath choose_kernel_path(const char* requested, KernelPath best,
                                     std::string_view kind, const std::string& cpu) {
  if (requested == nullptr || *requested == '\0') return best;
  const std::string_view name = requested;
  for (const KernelPath path : kernel_paths) {
    if (name != kernel_path_name(path)) continue;
    check(path <= best, "TESSERA_CPU=", name, ": this CPU has no ", kind, " ", name,
          " path (its best is ", kernel_path_name(best), "; it has ", cpu, ")");
    return path;
  }
  fail("TESSERA_CPU=", name, ": expected scalar, avx2 or avx512 (this CPU's best ", kind,
       " path is ", kernel_path_name(best), "; it has ", cpu, ")");
}

// The best int8 (bfloat16) path this CPU has.
inline KernelPath best_int8_path() {
  return cpu_supports_int8(KernelPath::avx512) ? KernelPath::avx512
         : cpu_supports_int8(KernelPath::avx2) ? KernelPath::avx2
                                               : KernelPath::scalar;
}
inline KernelPath best_bf16_path() {
  return cpu_supports_bf16(KernelPath::avx512) ? KernelPath::avx512
         : cpu_supports_bf16(KernelPath::avx2) ? KernelPath::avx2
                                               : KernelPath::scalar;
}

// The path int8 (bfloat16) products take by default: the best this CPU has, or the lower one
// TESSERA_CPU asks for (read once; an invalid value throws at every call).
inline KernelPath int8_kernel_path() {
  static const KernelPath path = choose_kernel_path(std::getenv("TESSERA_CPU"), best_int8_path(),
                                                    "int8", cpu_features().list());
  return path;
}
inline KernelPath bf16_kernel_path() {
  static const KernelPath path = choose_kernel_path(std::getenv("TESSERA_CPU"), best_bf16_path(),
                                                    "bf16", cpu_features().list());
  return path;
}

}  // namespace tessera::detail
