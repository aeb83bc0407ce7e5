#pragma once
// Parameter: a named weight tensor of a model, viewed in place (what model files are read from
// and written to, and what an optimizer walks).

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// How a fresh model's weight is initialised (MultiModalEncoder::init_random).
enum class WeightRole {
  normal,       // normal(0, 0.02): projections, embeddings, positions, queries, the cls token
  zero,         // 0: biases and the norms' shifts
  one,          // 1: the norms' scales
  logit_scale,  // ln(1/0.07), CLIP's initial temperature
};

// A named weight: a view of its storage in the PyTorch layout.
template <class T>  // Scalar or const Scalar
struct Parameter {
  std::string name;                    // the SPEC 4 tensor name
  T* data;                             // row-major, shape's product elements
  std::vector<std::int64_t> shape;     // SPEC 4 shape ({} for a scalar)
  std::vector<std::int64_t> conv_shape;  // the accepted convolution shape of a patch embed, or {}
  WeightRole role = WeightRole::normal;  // how init_random fills it

  std::int64_t size() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

}  // namespace tessera
