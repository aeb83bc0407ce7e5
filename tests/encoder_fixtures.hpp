#pragma once
// The batches of the encoder fixtures (tests/data/encoder/<variant>/input.<i>.safetensors),
// shared by test_encoder.cpp and test_grad.cpp.

#include <tessera/model/encoder.hpp>
#include <tessera/model/sample_io.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace tessera::test {

// input.0.safetensors, input.1.safetensors, ... of a variant's directory, in order.
template <class Scalar>
std::vector<Sample<Scalar>> read_inputs(const std::filesystem::path& dir) {
  std::vector<Sample<Scalar>> batch;
  for (int i = 0; std::filesystem::exists(dir / ("input." + std::to_string(i) + ".safetensors")); ++i) {
    batch.push_back(read_sample<Scalar>(dir / ("input." + std::to_string(i) + ".safetensors")));
  }
  return batch;
}

}  // namespace tessera::test
