// Compares the weights of two model files (tessera-train's model.safetensors) for the mpirun
// tests of tessera-train (tests/mpi/CMakeLists.txt), or checks that a checkpoint loads:
//
//   tessera_compare_weights A.safetensors B.safetensors TOLERANCE
//       every tensor of A is in B with the same number of values, and ||A - B|| <=
//       TOLERANCE ||B|| over all weights together (one vector); prints each tensor's relative
//       difference too; exit status 0 when within, 1 otherwise
//   tessera_compare_weights --checkpoint MODEL_DIR
//       MODEL_DIR/checkpoint.safetensors loads (load_checkpoint: its checksum holds, every
//       tensor is there for MODEL_DIR/config.json's model); prints its step; exit status 0
//       (else 1, with the error)
//
// Tensor by tensor, two runs that differ by float rounding alone can be far apart: AdamW's
// first steps move every weight by about lr whatever the size of its gradient, so a bias that
// starts at 0 and whose gradient is near 0 (the attention's key bias: exactly 0 but for
// rounding) is all rounding noise. The weights as a whole are the meaningful measure.

#include <tessera/io/safetensors.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/optimizer.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

namespace {

int compare(const char* a_file, const char* b_file, double tolerance) {
  const auto a = tessera::SafetensorsFile::open(a_file);
  const auto b = tessera::SafetensorsFile::open(b_file);
  double all_difference = 0, all_norm = 0;
  for (const std::string& name : a.names()) {
    tessera::check(b.contains(name), b_file, ": no tensor ", name, " (", a_file, " has it)");
    const auto x = a.read<double>(name), y = b.read<double>(name);
    tessera::check(x.size() == y.size(), name, ": ", x.size(), " values against ", y.size());
    double difference = 0, norm = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      difference += (x[i] - y[i]) * (x[i] - y[i]);
      norm += y[i] * y[i];
    }
    all_difference += difference;
    all_norm += norm;
    if (difference > 0) {
      std::printf("%-40s %.3g relative\n", name.c_str(),
                  norm > 0 ? std::sqrt(difference / norm) : std::sqrt(difference));
    }
  }
  tessera::check(a.size() == b.size(), b_file, " has ", b.size(), " tensors, ", a_file, " ", a.size());
  const double total = all_norm > 0 ? std::sqrt(all_difference / all_norm) : std::sqrt(all_difference);
  const bool within = total <= tolerance;
  std::printf("all weights: %.3g relative (tolerance %g): %s\n", total, tolerance,
              within ? "equal within the tolerance" : "DIFFERENT");
  return within ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "--checkpoint") {
      const std::filesystem::path dir = argv[2];
      tessera::MultiModalEncoder<float> model(tessera::load_config(dir / "config.json"));
      tessera::AdamW<float> optimizer;
      tessera::TrainingPosition position;
      tessera::load_checkpoint(dir / "checkpoint.safetensors", model, optimizer, position);
      std::printf("%s: a checkpoint at step %ld that loads\n", (dir / "checkpoint.safetensors").c_str(),
                  static_cast<long>(position.step));
      return 0;
    }
    if (argc != 4) {
      std::fprintf(stderr, "usage: tessera_compare_weights A B TOLERANCE | --checkpoint FILE\n");
      return 2;
    }
    return compare(argv[1], argv[2], std::atof(argv[3]));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
