#pragma once
// Parameter: a named weight tensor of a model, viewed in place (what model files are read from
// and written to, and what an optimizer walks).

#include <tessera/core/random.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tessera {

// How a fresh model's weight is initialised (init_parameters).
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

// Fills every weight of `params` by its role, in list order from one seeded stream:
// normal(0, 0.02) for matrices, embeddings and positions, norms' scales at 1, biases and
// norms' shifts 0, logit_scale ln(1/0.07). The same numbers with any standard library
// (SplitMix64). A fresh model (MultiModalEncoder::init_random, Tower::init_random).
template <class Scalar>
void init_parameters(std::span<const Parameter<Scalar>> params, std::uint64_t seed) {
  SplitMix64 rng{seed};
  for (const auto& p : params) {
    for (std::int64_t i = 0; i < p.size(); ++i) {
      switch (p.role) {
        case WeightRole::normal: p.data[i] = static_cast<Scalar>(rng.normal(0.0, 0.02)); break;
        case WeightRole::zero: p.data[i] = Scalar(0); break;
        case WeightRole::one: p.data[i] = Scalar(1); break;
        case WeightRole::logit_scale: p.data[i] = static_cast<Scalar>(2.6592600369327779); break;
      }
    }
  }
}

}  // namespace tessera
