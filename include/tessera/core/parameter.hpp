#pragma once
// Parameter: a named weight tensor of a model, viewed in place (what model files are read from
// and written to, and what an optimizer walks).

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// A named weight: a view of its storage in the PyTorch layout.
template <class T>  // Scalar or const Scalar
struct Parameter {
  std::string name;                    // the SPEC 4 tensor name
  T* data;                             // row-major, shape's product elements
  std::vector<std::int64_t> shape;     // SPEC 4 shape ({} for a scalar)
  std::vector<std::int64_t> conv_shape;  // the accepted convolution shape of a patch embed, or {}

  std::int64_t size() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

}  // namespace tessera
